"""Per-language scores of a model's answers: :func:`evaluate_responses` and :class:`EvaluationResult`.

Language fidelity always; with a judge, win rates with standard errors and a seeded bootstrap CI, discrete and
length-controlled win rates, position and length bias, parse rates and rubric means. The judge prompt, tie rule,
order handling and rubric are our reconstruction (see :mod:`xl_suite.evaluation.judging`); the paper's are unknown.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from xl_suite.configuration import option
from xl_suite.engines.base import Generator
from xl_suite.errors import InvalidArgumentError
from xl_suite.evaluation.judging import JudgeConfig, judge_pairwise, score_rubric
from xl_suite.languages import get_language
from xl_suite.prompting import load_template
from xl_suite.sources import DEFAULT_ALPACA_EVAL_SOURCE
from xl_suite.status import RowStatus, is_rule, is_usable


__all__ = [
    "OVERALL",
    "REPORT_LAYOUT",
    "EvaluateConfig",
    "EvaluationResult",
    "evaluate_responses",
    "evaluate_annotations",
]

OVERALL = "overall"
#: Layout of the report files, recorded in ``summary.json`` (``meta.report_layout``). 2: P(model wins) is
#: ``p_model_wins`` (was ``preference``) and our length-controlled estimator is ``lc_minimal_winrate`` (was
#: ``length_controlled_win_rate``, written to ``leaderboard.csv`` as ``length_controlled_winrate``). Reports without
#: it are layout 1; :func:`xl_suite.evaluation.report.read_report` reads both.
REPORT_LAYOUT = 2

_NOTES = (
    "XL-Suite reconstructs the evaluation of Iyer et al. (2025, arXiv 2503.22973). The paper's judge prompt, "
    "position-bias handling, tie rule, wrong-language scoring and fine-grained metric set are not known: the judge "
    "template, the both-orders averaging (tie = 0.5), the rubric dimensions and the language-fidelity check used "
    "here are our choices, documented in xl_suite/prompts/README.md and xl_suite/judging.py."
)


@dataclass
class EvaluateConfig:
    """``xl-suite evaluate``: which answers to score, against what, with which judge settings, and where to report.

    The judge engine itself is an :class:`~xl_suite.engines.spec.EngineSpec` (``--judge-model`` ...); ``order``,
    ``rubric``, ``structured_output`` and ``judge_temperature`` override the judge preset's values.
    """

    model_outputs: str | None = option(
        None,
        "answers (.jsonl/.json/.parquet file or folder) with id, language, "
        "output (and instruction), as written by xl-suite generate; or "
        "alpaca_eval's model_outputs.json or annotations.json as they are",
        required=True,
        metavar="DIR_OR_FILE",
    )
    references: str | None = option(
        None,
        "reference answers with id, language and reference (or output), or an "
        "alpaca_eval outputs file; needed with a judge",
        metavar="DIR_OR_FILE",
    )
    language: str | None = option(
        None,
        "the language of every row, for alpaca_eval files without a language "
        "column (matched to XL-AlpacaEval by instruction text and this language)",
    )
    alpaca_eval_source: str = option(
        DEFAULT_ALPACA_EVAL_SOURCE,
        "AlpacaEval's prompts (path or fsspec URL) that "
        "XL-AlpacaEval is built from; alpaca_eval files are matched against them",
        metavar="PATH_OR_URL",
    )
    output: str | None = option(None, "report folder", required=True, metavar="REPORT_DIR")
    overwrite: bool = option(
        False,
        "replace the report of another evaluation in REPORT_DIR (its files and judgment cache are deleted first); "
        "rerunning the same command resumes without it",
    )
    judge_preset: str | None = option(
        None,
        "judge preset (gpt-4o, local-vllm) or a .json/.yaml preset file; default "
        "local-vllm when --judge-model is given",
        metavar="NAME_OR_FILE",
    )
    judges: list[str] = option(
        default_factory=list,
        help="a jury member: a judge preset (gpt-4o, local-vllm, a preset file) or PRESET=MODEL; give it several "
        "times for a jury (its verdict: the mean of the judges'; each judge's win rate is reported beside it). "
        "Adding a judge to a finished evaluation judges only what is new",
        flag="--judge",
        append=True,
        metavar="PRESET[=MODEL]",
    )
    order: str | None = option(
        None,
        "both presentation orders (preset default: both) or one content-seeded random order per item",
        choices=("both", "random"),
    )
    rubric: bool = option(True, "score the answers with the 1-5 rubric judge")
    structured_output: bool = option(True, "constrain the judge's replies to their JSON schema")
    judge_temperature: float | None = option(None, "judge temperature (preset default 0.0: greedy)")
    cache_dir: str | None = option(None, "annotation cache folder or fsspec URL (default OUTPUT/annotations)")
    languages: str | None = option(None, "only these language codes (comma-separated)")
    model_name: str | None = option(None, "name of the evaluated model in the report")
    n_resamples: int = option(1000, "bootstrap resamples for the CI")
    seed: int = option(0, "bootstrap seed")
    lc_method: str = option("alpaca_eval", "length-controlled win rate fit", choices=("alpaca_eval", "mle"))
    dry_run: bool = option(
        False, "print the requests, tokens and estimated cost of the judge, then stop (no engine starts)"
    )
    tokens_per_second: float | None = option(
        None, "generated tokens per second of a local judge engine, for the engine-hours of --dry-run"
    )
    retry_failed: bool = option(
        False,
        "judge the stored unparsed judgments again even when they used all 3 attempts (a plain rerun retries only "
        "those with attempts left)",
    )
    executor: str = option(
        "local",
        "where the judge runs: local (this process) or ray (a pool of Ray actors: the running cluster, else a "
        "local Ray runtime; pip install 'xl-suite[ray]')",
        choices=("local", "ray"),
    )
    num_actors: int = option(1, "with --executor ray: judge actors (each holds its own engine)")
    num_gpus_per_actor: float = option(0.0, "with --executor ray: GPUs each actor requests (e.g. 1)")
    ray_address: str | None = option(
        None,
        "with --executor ray: the Ray cluster to join (default: the running one, found as ray.init(address='auto') "
        "finds it, else a local runtime for this run; 'local': always a local runtime)",
    )
    max_error_rate: float = option(
        0.05,
        "largest share of unparsed judgments that still exits 0; above it (or with no judgment parsed at all) the "
        "report is written and the command exits 3 (rerun to retry the unparsed judgments)",
    )

    def __post_init__(self):
        from xl_suite.costs import check_tokens_per_second
        from xl_suite.runner import check_error_rate_value

        check_error_rate_value(self.max_error_rate)
        check_tokens_per_second(self.tokens_per_second)
        if self.n_resamples < 1:
            raise InvalidArgumentError(f"n_resamples must be >= 1, got {self.n_resamples}.")
        if self.lc_method not in ("alpaca_eval", "mle"):
            raise InvalidArgumentError(f"lc_method must be 'alpaca_eval' or 'mle', got {self.lc_method!r}.")
        if self.order not in (None, "both", "random"):
            raise InvalidArgumentError(f"order must be 'both' or 'random', got {self.order!r}.")

    @classmethod
    def from_file(cls, path: str) -> EvaluateConfig:
        """Read the settings from a YAML/JSON file (unknown keys are an error)."""
        from xl_suite.configuration import from_mapping, read_config_file

        return from_mapping(cls, read_config_file(path), source=str(path))


@dataclass
class EvaluationResult:
    """What :func:`evaluate_responses` returns.

    Attributes:
        table: language code (in order of appearance) and ``"overall"`` -> metrics (see :func:`evaluate_responses`).
        per_sample: one dict per item: id, language, lengths, preference (both orders), verdicts, parse status,
            rubric scores, detected language, fidelity flags.
        judgments: every pairwise judgment row (with provenance, raw completion and parse status).
        rubric_rows: every rubric judgment row.
        ledger: judge work, cache hits, tokens and cost per stage.
        meta: settings and versions (model name, judge, preset, config, template versions, seeds, notes).
        inputs: one dict per item: ``id``, ``language``, ``instruction`` (None when not given), ``output`` and
            ``references`` (a list; empty when not given). A caller may add alpaca_eval's ``dataset``,
            ``reference_generator`` and, for judgments read from alpaca_eval, ``raw_completion``,
            ``price_per_example`` and ``time_per_example``: :func:`xl_suite.evaluation.alpaca_eval.annotation_rows`
            writes them into ``annotations.json``.
    """

    table: dict[str, dict[str, Any]]
    per_sample: list[dict[str, Any]]
    judgments: list[dict[str, Any]] = field(default_factory=list)
    rubric_rows: list[dict[str, Any]] = field(default_factory=list)
    ledger: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def judged(self) -> bool:
        """True when a judge ran (win rates present)."""
        return bool(self.meta.get("judge"))

    def format_table(self) -> str:
        """Plain-text table per language (printed by ``xl-suite evaluate``)."""
        from xl_suite.evaluation.text import format_table

        return format_table(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (table, ledger, meta)."""
        return {"table": self.table, "ledger": self.ledger, "meta": self.meta}


def _mean(values) -> float:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else math.nan


def _as_reference_lists(references) -> tuple[list[list[str]], bool]:
    lists, multi = [], False
    for i, ref in enumerate(references):
        if isinstance(ref, str):
            lists.append([ref])
        elif isinstance(ref, Sequence) and ref and all(isinstance(r, str) for r in ref):
            lists.append(list(ref))
            multi = True
        else:
            raise InvalidArgumentError(
                f"references[{i}] must be a string or a non-empty list of strings, got {ref!r}."
            )
    return lists, multi


def evaluate_responses(
    predictions: Sequence[str],
    languages: Sequence[str] | str,
    *,
    references: Sequence[str | Sequence[str]] | None = None,
    instructions: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    judge: Generator | Sequence[Generator] | None = None,
    config: JudgeConfig | Sequence[JudgeConfig] | None = None,
    cache_dir: str | None = None,
    storage_options: dict | None = None,
    model_name: str | None = None,
    preset: str | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    lc_method: str = "alpaca_eval",
    preferences: Sequence[float | None] | None = None,
    annotator: str | None = None,
) -> EvaluationResult:
    """Score answers per language: language fidelity always; with a judge, win rates, CIs, biases and rubric.

    Args:
        predictions: the model's answers (``""`` for an empty answer; it loses by rule when judged).
        languages: target language of each answer (codes or names), or one code for all.
        references: reference answers (one string, or a list of strings per item: then the item's preference is
            the mean over its references). Needed with a judge.
        instructions: the prompts as the model saw them. Needed with a judge.
        ids: item ids (default: positions).
        judge: the judge backend; None computes language fidelity only (fast, offline). Several judges are a
            jury: each judges every pair (its verdicts kept, in its own cache), the jury's verdict on an item is the
            mean of the judges' P(model wins), and ``table`` gives each judge's win rate beside the jury's
            (``win_rate_by_judge``). The rubric is scored by the first judge.
        config: judge settings (:class:`~xl_suite.evaluation.judging.JudgeConfig`); for a jury, one for all or one
            per judge.
        cache_dir: annotation cache folder (reruns make zero judge calls); None judges in memory.
        storage_options: fsspec options for ``cache_dir``.
        model_name: the evaluated model's name, for the report.
        preset: the judge preset's name, recorded in ``meta``.
        n_resamples: bootstrap resamples for the CI.
        confidence: CI level.
        seed: bootstrap seed.
        lc_method: fit of ``lc_minimal_winrate`` (``"alpaca_eval"`` or ``"mle"``), see
            :func:`xl_suite.evaluation.metrics.length_controlled_win_rate`.
        preferences: judgments already made, instead of a judge: P(model beats reference) per item (None for an
            unparsed one), e.g. from alpaca_eval's ``annotations.json``. Needs ``references`` (for the lengths);
            the position-bias and rubric statistics are then not available.
        annotator: who made ``preferences`` (alpaca_eval's ``annotator``), for the report.

    Returns:
        :class:`EvaluationResult`. Per language and ``"overall"``, ``table`` holds ``n``, ``n_empty``,
        ``avg_model_length``, ``language_fidelity``, ``line_pass_rate``, and with a judge also ``win_rate``,
        ``standard_error``, ``ci_low``, ``ci_high``, ``discrete_win_rate``, ``n_wins``, ``n_losses``,
        ``n_draws``, ``n_unparsed`` (items without a parsed judgment), ``lc_minimal_winrate`` and
        ``lc_minimal_standard_error`` (alpaca_eval's ``length_controlled_minimal`` GLM; alpaca_eval's leaderboard
        column ``length_controlled_winrate`` is another estimator, see
        :func:`xl_suite.evaluation.alpaca_eval.add_length_controlled_v1`), ``n_judgments``,
        ``n_unparsed_judgments``, ``parse_rate``, ``prefer_first_rate``, ``order_agreement``,
        ``prefer_longer_rate``, ``length_spearman``, ``avg_reference_length``, ``rubric_<dimension>`` means and
        ``rubric_parse_rate``. ``per_sample`` and ``judgments`` carry ``p_model_wins``, P(model beats reference) in
        ``[0, 1]`` (alpaca_eval's ``preference`` is another scale, ``[1, 2]``). Statistics that cannot be computed
        (no parsed judgment in a language, too few items for the length-controlled fit) are NaN and listed in
        ``meta["warnings"]``.

    Raises:
        ValueError: inputs of different lengths, a non-string answer, an empty instruction or reference, an
            unknown language, or a judge without references/instructions.
    """
    judges, configs = _jury(judge, config)
    items = _check_inputs(predictions, languages, references, instructions, ids, judges or None, preferences)
    stats = _Statistics(n_resamples, confidence, seed, lc_method)
    result, fid = _fidelity_result(items, model_name, preset)
    judged = None
    if judges:
        judged = _judge(items, judges, configs, cache_dir, storage_options, result.meta["warnings"])
    elif preferences is not None:
        judged = _judgments_made_elsewhere(items, preferences, annotator)
    if judged is not None:
        _record_judged(result, judged, stats)
    return _with_tables(result, items, fid, judged, configs[0], stats)


@dataclass
class _Items:
    """The checked inputs of :func:`evaluate_responses`."""

    preds: list[str]
    codes: list[str]
    ids: list[str]
    references: Sequence | None
    instructions: Sequence[str] | None


@dataclass
class _Judged:
    """What a judge (or judgments made elsewhere) said about the items."""

    prefs: list[float | None]
    ref_lists: list[list[str]]
    multi: bool
    judge_meta: dict[str, Any]
    judgments: list[dict] = field(default_factory=list)
    rubric_rows: list[dict] = field(default_factory=list)
    rubric_scores: list | None = None
    ledger: dict[str, Any] = field(default_factory=dict)
    by_judge: dict[str, list[float | None]] = field(default_factory=dict)  # a jury's members' item preferences


@dataclass
class _Statistics:
    """How the win-rate statistics are computed."""

    n_resamples: int
    confidence: float
    seed: int
    lc_method: str

    def meta(self, multi: bool) -> dict[str, Any]:
        return {
            "n_resamples": self.n_resamples,
            "confidence": self.confidence,
            "seed": self.seed,
            "lc_method": self.lc_method,
            "multi_reference": multi,
        }


def _check_inputs(predictions, languages, references, instructions, ids, judge, preferences) -> _Items:
    """Equal lengths, string answers, known languages, and a judge or judgments with what they need."""
    preds = list(predictions)
    n = len(preds)
    if n == 0:
        raise InvalidArgumentError("No predictions given.")
    langs = [languages] * n if isinstance(languages, str) else list(languages)
    given = {"references": references, "instructions": instructions, "ids": ids, "preferences": preferences}
    lengths = {"predictions": n, "languages": len(langs), **{k: len(v) for k, v in given.items() if v is not None}}
    if preferences is not None and judge is not None:
        raise InvalidArgumentError("Pass either judge= or preferences= (judgments already made), not both.")
    if preferences is not None and references is None:
        raise InvalidArgumentError("preferences= needs references= (the length statistics compare the answers).")
    if judge is not None and (references is None or instructions is None):
        raise InvalidArgumentError("A judge needs references= and instructions= (the prompts as the model saw them).")
    if len(set(lengths.values())) > 1:
        raise InvalidArgumentError(f"Inputs must have the same length; got {lengths}.")
    for i, p in enumerate(preds):
        if not isinstance(p, str):
            raise InvalidArgumentError(f"predictions[{i}] must be a string (use '' for an empty answer), got {p!r}.")
    return _Items(
        preds=preds,
        codes=[get_language(lang).code for lang in langs],
        ids=[str(x) for x in ids] if ids is not None else [str(i) for i in range(n)],
        references=references,
        instructions=instructions,
    )


def _fidelity_result(items: _Items, model_name: str | None, preset: str | None) -> tuple[EvaluationResult, dict]:
    """Language fidelity per item, and the settings every report records."""
    from xl_suite import __version__
    from xl_suite.fidelity import language_fidelity

    fid = language_fidelity(items.preds, items.codes)
    per_sample: list[dict[str, Any]] = [
        {
            "id": items.ids[i],
            "language": items.codes[i],
            "model_length": len(pred),
            "empty": not pred.strip(),
            "detected_language": fid["detected_language"][i],
            "is_target": fid["is_target"][i],
            "line_pass": fid["line_pass"][i],
            "is_target_strict": fid["is_target_strict"][i],
        }
        for i, pred in enumerate(items.preds)
    ]
    meta: dict[str, Any] = {
        "model": model_name,
        "judge": None,
        "preset": preset,
        "n_items": len(items.preds),
        "languages": list(dict.fromkeys(items.codes)),
        "fidelity": fid.get("config"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "notes": _NOTES,
        "warnings": [],
        "xl_suite_version": __version__,
        "report_layout": REPORT_LAYOUT,
    }
    ref_lists = _as_reference_lists(items.references)[0] if items.references is not None else None
    inputs = [
        {
            "id": items.ids[i],
            "language": items.codes[i],
            "instruction": items.instructions[i] if items.instructions is not None else None,
            "output": pred,
            "references": ref_lists[i] if ref_lists is not None else [],
        }
        for i, pred in enumerate(items.preds)
    ]
    return EvaluationResult(table={}, per_sample=per_sample, meta=meta, inputs=inputs), fid


def _check_judge(judge) -> None:
    """A judge is an engine (a :class:`~xl_suite.engines.base.Generator`); a preset or model name is not one.

    >>> _check_judge("gpt-4o")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: judge='gpt-4o' is a name, not a judge engine: ...
    """
    if callable(getattr(judge, "generate", None)) and hasattr(judge, "model"):
        return
    if isinstance(judge, str):
        from xl_suite.evaluation.presets import list_presets

        if judge in list_presets():
            how = (
                f"judge=xl_suite.load_preset({judge!r}).build_judge(), or, with the metric, load the preset as its "
                f"config: evaluate.load('evaluate_metrics/xl_alpacaeval', {judge!r})"
            )
        else:
            how = (
                f"judge=xl_suite.load_preset('local-vllm', judge_model={judge!r}).build_judge() (a local model), or "
                "a preset's judge (presets: " + ", ".join(list_presets()) + ")"
            )
        raise InvalidArgumentError(f"judge={judge!r} is a name, not a judge engine: pass {how}.")
    raise InvalidArgumentError(
        f"judge must be a judge engine (an xl_suite generator with .generate() and .model, e.g. "
        f"xl_suite.load_preset('gpt-4o').build_judge()), got {type(judge).__name__}: {judge!r:.80}."
    )


def _jury(judge, config) -> tuple[list, list[JudgeConfig]]:
    """The judges (none, one, or a jury) and one config per judge (at least one, for the tables)."""
    if judge is None:
        judges = []
    elif isinstance(judge, Sequence) and not isinstance(judge, str):
        judges = list(judge)
    else:
        judges = [judge]
    if isinstance(config, Sequence) and not isinstance(config, str):
        configs = list(config)
        if len(configs) != len(judges):
            raise InvalidArgumentError(
                f"config= gives {len(configs)} configs for {len(judges)} judges; give one each."
            )
    else:
        configs = [config or JudgeConfig()] * max(1, len(judges))
    for j in judges:
        _check_judge(j)
    names = [j.model for j in judges]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidArgumentError(f"The jury names judge {twice[0]!r} twice; give each judge once.")
    return judges, configs


def _judge(items: _Items, judges: list, configs: list, cache_dir, storage_options, warnings: list[str]) -> _Judged:
    """Pairwise judgments of every (answer, reference) pair by each judge (the jury's verdict is their mean), and the
    rubric scores of every answer by the first judge."""
    ref_lists, multi = _as_reference_lists(items.references)
    pair_item = [i for i, refs in enumerate(ref_lists) for _ in refs]
    results = [
        _judge_pairs(items, ref_lists, pair_item, judge, config, cache_dir, storage_options, warnings)
        for judge, config in zip(judges, configs, strict=True)
    ]
    jury = len(judges) > 1
    pair_prefs = _mean_of_judges([pj.preferences for pj in results])
    judged = _Judged(
        prefs=_per_item(pair_prefs, pair_item, len(items.preds)) if multi else pair_prefs,
        ref_lists=ref_lists,
        multi=multi,
        judge_meta=_judge_meta(judges[0], configs[0], results[0].ledger["structured_output"]),
        judgments=[_item_frame(r, pair_item) for pj in results for r in pj.rows],
    )
    for judge, pj in zip(judges, results, strict=True):
        judged.ledger[f"pairwise_judge:{judge.model}" if jury else "pairwise_judge"] = pj.ledger
        if jury:
            prefs = _per_item(pj.preferences, pair_item, len(items.preds)) if multi else list(pj.preferences)
            judged.by_judge[judge.model] = prefs
    if jury:
        members = [
            _judge_meta(j, c, pj.ledger["structured_output"])
            for j, c, pj in zip(judges, configs, results, strict=True)
        ]
        judged.judge_meta = {
            **judged.judge_meta,
            "backend": "jury",
            "model": "jury: " + " + ".join(j.model for j in judges),
            "jury": members,
        }
    if configs[0].rubric:
        rs = score_rubric(
            list(items.instructions),
            items.preds,
            items.codes,
            judge=judges[0],
            config=configs[0],
            cache_dir=cache_dir,
            storage_options=storage_options,
            ids=items.ids,
        )
        judged.rubric_rows, judged.rubric_scores = rs.rows, rs.scores
        judged.ledger["rubric_judge"] = rs.ledger
    return judged


def _judge_pairs(items: _Items, ref_lists, pair_item, judge, config, cache_dir, storage_options, warnings):
    pj = judge_pairwise(
        [items.instructions[i] for i in pair_item],
        [items.preds[i] for i in pair_item],
        [r for refs in ref_lists for r in refs],
        [items.codes[i] for i in pair_item],
        judge=judge,
        config=config,
        cache_dir=cache_dir,
        storage_options=storage_options,
        ids=[items.ids[i] for i in pair_item],
    )
    if pj.ledger["corrupt_cache_files"]:
        warnings.append(
            f"{pj.ledger['corrupt_cache_files']} corrupt annotation cache file(s) of {judge.model} were detected, "
            "moved aside (*.corrupt) and their items judged again."
        )
    return pj


def _mean_of_judges(per_judge: list[Sequence[float | None]]) -> list[float | None]:
    """The jury's verdict on each pair: the mean of the judges' parsed P(model wins) (None when none parsed).

    >>> _mean_of_judges([[1.0, None, None], [0.5, 0.25, None]])
    [0.75, 0.25, None]
    """
    out: list[float | None] = []
    for values in zip(*per_judge, strict=True):
        parsed = [v for v in values if v is not None]
        out.append(sum(parsed) / len(parsed) if parsed else None)
    return out


def _item_frame(row: dict, pair_item: list[int]) -> dict:
    """A judgment row indexed by item (``pair_index`` keeps the pair)."""
    out = dict(row)
    out["pair_index"] = row["item_index"]
    out["item_index"] = pair_item[row["item_index"]]
    return out


def _per_item(pair_prefs: Sequence[float | None], pair_item: list[int], n: int) -> list[float | None]:
    """Each item's mean preference over its references (None when none is parsed)."""
    by_item: dict[int, list] = {}
    for j, it in enumerate(pair_item):
        by_item.setdefault(it, []).append(pair_prefs[j])
    means = [_mean(by_item[i]) for i in range(n)]
    return [None if math.isnan(p) else p for p in means]


def _judge_meta(judge, config: JudgeConfig, structured_output) -> dict[str, Any]:
    return {
        "backend": getattr(judge, "backend", None),
        "model": judge.model,
        "revision": getattr(judge, "revision", None),
        "template_version": load_template(config.template).template_version,
        "rubric_template_version": load_template(config.rubric_template).template_version if config.rubric else None,
        "structured_output": structured_output,
        "config": config.to_dict(),
    }


def _judgments_made_elsewhere(items: _Items, preferences, annotator: str | None) -> _Judged:
    """Preferences read from a file (e.g. alpaca_eval's annotations.json), checked to be P(model wins)."""
    ref_lists, multi = _as_reference_lists(items.references)
    prefs = [None if p is None or (isinstance(p, float) and math.isnan(p)) else float(p) for p in preferences]
    bad = [(i, p) for i, p in enumerate(prefs) if p is not None and not 0.0 <= p <= 1.0]
    if bad:
        raise InvalidArgumentError(f"preferences must be in [0, 1] (P(model beats reference)); got {bad[:3]}.")
    judge_meta = {
        "backend": "precomputed",
        "model": annotator or "unknown annotator",
        "revision": None,
        "template_version": None,
        "rubric_template_version": None,
        "structured_output": None,
        "config": None,
    }
    return _Judged(prefs=prefs, ref_lists=ref_lists, multi=multi, judge_meta=judge_meta)


def _record_judged(result: EvaluationResult, judged: _Judged, stats: _Statistics) -> None:
    """Judgments, ledger and settings into the result; each item's preference, orders and rubric into per_sample."""
    result.judgments, result.rubric_rows, result.ledger = judged.judgments, judged.rubric_rows, judged.ledger
    result.meta["judge"] = judged.judge_meta
    result.meta.update(stats.meta(judged.multi))
    result.meta["length_control"] = {
        "lc_minimal_winrate": f"alpaca_eval's length_controlled_minimal GLM (xl-suite's fit, {stats.lc_method})",
        "length_controlled_winrate": "not computed: alpaca_eval's length_controlled_v1 applies only to "
        "alpaca_eval's own annotations (weighted_alpaca_eval_gpt4_turbo against gpt4_1106_preview)",
    }
    by_item: dict[int, list[dict]] = {}
    for r in judged.judgments:
        by_item.setdefault(r["item_index"], []).append(r)
    if judged.by_judge:
        result.meta["jury"] = {"judges": list(judged.by_judge), "verdict": "mean of the judges' P(model wins)"}
    for i, row in enumerate(result.per_sample):
        row["reference_length"] = _mean([len(r) for r in judged.ref_lists[i]])
        row["p_model_wins"] = judged.prefs[i]
        if judged.by_judge:
            row["p_model_wins_by_judge"] = {name: prefs[i] for name, prefs in judged.by_judge.items()}
        if judged.judge_meta["config"] is not None:  # a judge ran here: its verdicts per order
            row.update(_order_columns(by_item.get(i, [])))
        if judged.rubric_scores is not None:
            row["rubric"] = judged.rubric_scores[i]


def _order_columns(rows: list[dict]) -> dict[str, Any]:
    """P(model wins) with the model's answer first and second, the verdicts and the parse statuses of one item."""
    out: dict[str, Any] = {}
    for order in ("model_first", "model_second"):
        mean = _mean([r["p_model_wins"] for r in rows if r["order"] == order])
        out[f"pref_{order}"] = None if math.isnan(mean) else mean
    out["verdicts"] = [f"{r['order']}:{r['verdict']}" for r in rows]
    out["parse_status"] = sorted({r["parse_status"] for r in rows})
    return out


def _with_tables(
    result: EvaluationResult, items: _Items, fid: dict, judged: _Judged | None, config: JudgeConfig, stats: _Statistics
) -> EvaluationResult:
    """One row per language (in order of appearance) and one for ``overall``."""
    groups = {code: [i for i, c in enumerate(items.codes) if c == code] for code in dict.fromkeys(items.codes)}
    groups[OVERALL] = list(range(len(items.preds)))
    for name, idx in groups.items():
        row = _fidelity_stats(name, idx, items, result.per_sample, fid)
        if judged is not None:
            row.update(_judge_stats(name, idx, items.preds, judged, config, stats, result.meta["warnings"]))
        result.table[name] = row
    return result


def _fidelity_stats(name: str, idx: list[int], items: _Items, per_sample: list[dict], fid: dict) -> dict[str, Any]:
    fid_stats = fid if name == OVERALL else fid["per_language"][name]
    return {
        "language": name,
        "n": len(idx),
        "n_empty": sum(per_sample[i]["empty"] for i in idx),
        "avg_model_length": _mean([len(items.preds[i]) for i in idx]),
        "language_fidelity": fid_stats["language_fidelity"],
        "language_fidelity_strict": fid_stats["language_fidelity_strict"],
        "fidelity_status": fid_stats.get("status", RowStatus.OK),
        "fidelity_reason": fid_stats.get("reason", ""),
        "line_pass_rate": fid_stats["line_pass_rate"],
    }


_WIN_RATE_KEYS = ("win_rate", "standard_error", "discrete_win_rate", "n_wins", "n_losses", "n_draws", "n_total")
_NAN_WITHOUT_PARSED = (
    "win_rate",
    "standard_error",
    "discrete_win_rate",
    "ci_low",
    "ci_high",
    "lc_minimal_winrate",
    "lc_minimal_standard_error",
    "prefer_longer_rate",
    "length_spearman",
)


def _judge_stats(
    name: str,
    idx: list[int],
    preds: list[str],
    judged: _Judged,
    config: JudgeConfig,
    stats: _Statistics,
    warnings: list[str],
) -> dict[str, Any]:
    """Win rates, length control and bias of one group of items, then the judge's parse and rubric statistics."""
    p = [judged.prefs[i] for i in idx]
    model_len = [len(preds[i]) for i in idx]
    ref_len = [_mean([len(r) for r in judged.ref_lists[i]]) for i in idx]
    out: dict[str, Any] = {"avg_reference_length": _mean(ref_len)}
    if any(x is not None for x in p):
        out.update(_win_rate_stats(name, p, model_len, ref_len, stats, warnings))
    else:
        out.update(dict.fromkeys(_NAN_WITHOUT_PARSED, math.nan))
        out.update({"n_wins": 0, "n_losses": 0, "n_draws": 0, "n_total": 0, "n_unparsed": len(idx)})
        warnings.append(f"{name}: no judgment could be parsed; win rates are NaN (see the unparsed judgments).")
    if judged.by_judge:  # each jury member's win rate beside the jury's
        out["win_rate_by_judge"] = {
            name: _win_rate_or_nan([prefs[i] for i in idx]) for name, prefs in judged.by_judge.items()
        }
    out.update(_judgment_stats(set(idx), p, judged.judgments))
    if judged.rubric_scores is not None:
        scored = [judged.rubric_scores[i] for i in idx if judged.rubric_scores[i] is not None]
        for dim in config.dimensions:
            out[f"rubric_{dim}"] = _mean([s[dim] for s in scored])
        out["rubric_parse_rate"] = 100.0 * len(scored) / len(idx) if idx else math.nan
    return out


def _win_rate_or_nan(p: list[float | None]) -> float:
    from xl_suite.evaluation import metrics

    return metrics.win_rate(p)["win_rate"] if any(x is not None for x in p) else math.nan


def _win_rate_stats(name, p, model_len, ref_len, stats: _Statistics, warnings: list[str]) -> dict[str, Any]:
    from xl_suite.evaluation import metrics

    wr = metrics.win_rate(p)
    ci = metrics.bootstrap_ci(p, n_resamples=stats.n_resamples, confidence=stats.confidence, seed=stats.seed)
    out: dict[str, Any] = {k: wr[k] for k in _WIN_RATE_KEYS}
    out.update({"n_unparsed": wr["n_unparsed"], "ci_low": ci["low"], "ci_high": ci["high"]})
    try:
        lc = metrics.length_controlled_win_rate(p, model_len, ref_len, method=stats.lc_method)
        out.update(
            {
                "lc_minimal_winrate": lc["length_controlled_win_rate"],
                "lc_minimal_standard_error": lc["lc_standard_error"],
            }
        )
    except ValueError as e:
        out.update({"lc_minimal_winrate": math.nan, "lc_minimal_standard_error": math.nan})
        warnings.append(f"{name}: no length-controlled win rate ({e}).")
    lb = metrics.length_bias(p, model_len, ref_len)
    out.update({"prefer_longer_rate": lb["prefer_longer_rate"], "length_spearman": lb["spearman"]})
    return out


def _judgment_stats(idx_set: set[int], p: list[float | None], judgments: list[dict]) -> dict[str, Any]:
    """Position bias from the judge's own verdicts (rule-decided rows left out) and the parse rate."""
    from xl_suite.evaluation import metrics

    rows = [r for r in judgments if r["item_index"] in idx_set and not is_rule(r["parse_status"])]
    by_order: dict[str, dict[tuple, float | None]] = {"model_first": {}, "model_second": {}}
    for r in rows:  # a jury's judges judged the same pairs: each (judge, pair) is one pair of orders
        by_order[r["order"]][(r.get("judge_model"), r["pair_index"])] = r["p_model_wins"]
    pairs = sorted(set(by_order["model_first"]) | set(by_order["model_second"]))
    out: dict[str, Any] = {"prefer_first_rate": math.nan, "order_agreement": math.nan}
    if pairs:
        pb = metrics.position_bias(
            [by_order["model_first"].get(j) for j in pairs], [by_order["model_second"].get(j) for j in pairs]
        )
        out.update({"prefer_first_rate": pb["prefer_first_rate"], "order_agreement": pb["order_agreement"]})
    if judgments:
        n_judged, n_bad = len(rows), sum(not is_usable(r["parse_status"]) for r in rows)
    else:  # judgments made elsewhere (preferences=): one per item
        n_judged, n_bad = len(p), sum(x is None for x in p)
    out.update(
        {
            "n_judgments": n_judged,
            "n_unparsed_judgments": n_bad,
            "parse_rate": 100.0 * (n_judged - n_bad) / n_judged if n_judged else math.nan,
        }
    )
    return out


def evaluate_annotations(
    rows: Sequence[dict],
    *,
    source: str,
    language: str | None = None,
    storage_options: dict | None = None,
    what: str = "the file",
    model_name: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    lc_method: str = "alpaca_eval",
    gamed_path: str | None = None,
):
    """Score alpaca_eval's ``annotations.json`` rows as ``xl-suite evaluate --model-outputs annotations.json`` does.

    The rows are matched to XL-AlpacaEval (:func:`~xl_suite.evaluation.alpaca_eval.from_annotations`), scored from
    their preferences by :func:`evaluate_responses` (no judge runs), described for alpaca_eval's files
    (:func:`~xl_suite.evaluation.alpaca_eval.describe_items`), and given alpaca_eval's ``length_controlled_v1``
    where it applies (:func:`~xl_suite.evaluation.alpaca_eval.add_length_controlled_v1`).

    Returns:
        The :class:`EvaluationResult`, with ``meta["alpaca_eval"]`` saying how many
        rows matched (and a warning about the unmatched ones).
    """
    from xl_suite.evaluation.alpaca_eval import (
        add_length_controlled_v1,
        describe_items,
        from_annotations,
        match_summary,
    )

    match = from_annotations(rows, language=language, source=source, storage_options=storage_options, what=what)
    matched = match.rows
    generators = {r.get("generator") for r in matched if r.get("generator")}
    annotators = sorted({str(r["annotator"]) for r in matched if r.get("annotator")})
    result = evaluate_responses(
        [r["output"] for r in matched],
        [r["language"] for r in matched],
        references=[r["reference"] for r in matched],
        instructions=[r["instruction"] for r in matched],
        ids=[r["id"] for r in matched],
        model_name=model_name or (generators.pop() if len(generators) == 1 else None),
        n_resamples=n_resamples,
        seed=seed,
        lc_method=lc_method,
        preferences=[r["probability"] for r in matched],
        annotator=", ".join(annotators) or None,
    )
    describe_items(result, matched)
    add_length_controlled_v1(result, matched, gamed_path=gamed_path)
    result.meta["alpaca_eval"] = match_summary(match, "annotations", what)
    if result.meta["alpaca_eval"]["warning"]:
        result.meta["warnings"].append(result.meta["alpaca_eval"]["warning"])
    return result
