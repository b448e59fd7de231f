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


__all__ = ["OVERALL", "EvaluateConfig", "EvaluationResult", "evaluate_responses"]

OVERALL = "overall"

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
    judge_preset: str | None = option(
        None,
        "judge preset (gpt-4o, local-vllm) or a .json/.yaml preset file; default "
        "local-vllm when --judge-model is given",
        metavar="NAME_OR_FILE",
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
    max_error_rate: float = option(
        0.05,
        "largest share of unparsed judgments that still exits 0; above it (or with no judgment parsed at all) the "
        "report is written and the command exits 3 (rerun to retry the unparsed judgments)",
    )

    def __post_init__(self):
        from xl_suite.runner import check_error_rate_value

        check_error_rate_value(self.max_error_rate)
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
    """

    table: dict[str, dict[str, Any]]
    per_sample: list[dict[str, Any]]
    judgments: list[dict[str, Any]] = field(default_factory=list)
    rubric_rows: list[dict[str, Any]] = field(default_factory=list)
    ledger: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        """True when a judge ran (win rates present)."""
        return bool(self.meta.get("judge"))

    def format_table(self) -> str:
        """Plain-text table per language (printed by ``xl-suite evaluate``)."""
        from xl_suite.evaluation.report import format_table

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
    judge: Generator | None = None,
    config: JudgeConfig | None = None,
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
        judge: the judge backend; None computes language fidelity only (fast, offline).
        config: judge settings (:class:`~xl_suite.evaluation.judging.JudgeConfig`).
        cache_dir: annotation cache folder (reruns make zero judge calls); None judges in memory.
        storage_options: fsspec options for ``cache_dir``.
        model_name: the evaluated model's name, for the report.
        preset: the judge preset's name, recorded in ``meta``.
        n_resamples: bootstrap resamples for the CI.
        confidence: CI level.
        seed: bootstrap seed.
        lc_method: length-control fit (``"alpaca_eval"`` or ``"mle"``), see
            :func:`xl_suite.evaluation.metrics.length_controlled_win_rate`.
        preferences: judgments already made, instead of a judge: P(model beats reference) per item (None for an
            unparsed one), e.g. from alpaca_eval's ``annotations.json``. Needs ``references`` (for the lengths);
            the position-bias and rubric statistics are then not available.
        annotator: who made ``preferences`` (alpaca_eval's ``annotator``), for the report.

    Returns:
        :class:`EvaluationResult`. Per language and ``"overall"``, ``table`` holds ``n``, ``n_empty``,
        ``avg_model_length``, ``language_fidelity``, ``line_pass_rate``, and with a judge also ``win_rate``,
        ``standard_error``, ``ci_low``, ``ci_high``, ``discrete_win_rate``, ``n_wins``, ``n_losses``,
        ``n_draws``, ``n_unparsed`` (items without a parsed judgment), ``length_controlled_win_rate``,
        ``lc_standard_error``, ``n_judgments``, ``n_unparsed_judgments``, ``parse_rate``, ``prefer_first_rate``,
        ``order_agreement``, ``prefer_longer_rate``, ``length_spearman``, ``avg_reference_length``,
        ``rubric_<dimension>`` means and ``rubric_parse_rate``. Statistics that cannot be computed (no parsed
        judgment in a language, too few items for the length-controlled fit) are NaN and listed in
        ``meta["warnings"]``.

    Raises:
        ValueError: inputs of different lengths, a non-string answer, an empty instruction or reference, an
            unknown language, or a judge without references/instructions.
    """
    from xl_suite.fidelity import language_fidelity

    preds = list(predictions)
    n = len(preds)
    if n == 0:
        raise InvalidArgumentError("No predictions given.")
    langs = [languages] * n if isinstance(languages, str) else list(languages)
    lengths = {"predictions": n, "languages": len(langs)}
    if references is not None:
        lengths["references"] = len(references)
    if instructions is not None:
        lengths["instructions"] = len(instructions)
    if ids is not None:
        lengths["ids"] = len(ids)
    if preferences is not None:
        lengths["preferences"] = len(preferences)
        if judge is not None:
            raise InvalidArgumentError("Pass either judge= or preferences= (judgments already made), not both.")
        if references is None:
            raise InvalidArgumentError("preferences= needs references= (the length statistics compare the answers).")
    if len(set(lengths.values())) > 1:
        raise InvalidArgumentError(f"Inputs must have the same length; got {lengths}.")
    for i, p in enumerate(preds):
        if not isinstance(p, str):
            raise InvalidArgumentError(f"predictions[{i}] must be a string (use '' for an empty answer), got {p!r}.")
    codes = [get_language(lang).code for lang in langs]
    ids = [str(x) for x in ids] if ids is not None else [str(i) for i in range(n)]
    config = config or JudgeConfig()
    warnings: list[str] = []

    fid = language_fidelity(preds, codes)
    per_sample: list[dict[str, Any]] = [
        {
            "id": ids[i],
            "language": codes[i],
            "model_length": len(preds[i]),
            "empty": not preds[i].strip(),
            "detected_language": fid["detected_language"][i],
            "is_target": fid["is_target"][i],
            "line_pass": fid["line_pass"][i],
            "is_target_strict": fid["is_target_strict"][i],
        }
        for i in range(n)
    ]
    meta: dict[str, Any] = {
        "model": model_name,
        "judge": None,
        "preset": preset,
        "n_items": n,
        "languages": list(dict.fromkeys(codes)),
        "fidelity": fid.get("config"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "notes": _NOTES,
        "warnings": warnings,
    }
    from xl_suite import __version__

    meta["xl_suite_version"] = __version__

    judgments: list[dict] = []
    rubric_rows: list[dict] = []
    ledger: dict[str, Any] = {}
    prefs = None
    pair_item: list[int] = []
    ref_lists: list[list[str]] = []
    rubric_scores = None
    if judge is not None:
        if references is None or instructions is None:
            raise InvalidArgumentError(
                "A judge needs references= and instructions= (the prompts as the model saw them)."
            )
        ref_lists, multi = _as_reference_lists(references)
        pair_item = [i for i, refs in enumerate(ref_lists) for _ in refs]
        pair_refs = [r for refs in ref_lists for r in refs]
        pj = judge_pairwise(
            [instructions[i] for i in pair_item],
            [preds[i] for i in pair_item],
            pair_refs,
            [codes[i] for i in pair_item],
            judge=judge,
            config=config,
            cache_dir=cache_dir,
            storage_options=storage_options,
            ids=[ids[i] for i in pair_item],
        )
        judgments = pj.rows
        for r in judgments:
            r["pair_index"] = r["item_index"]
            r["item_index"] = pair_item[r["item_index"]]
        if multi:
            pair_prefs: dict[int, list] = {}
            for j, it in enumerate(pair_item):
                pair_prefs.setdefault(it, []).append(pj.preferences[j])
            prefs = [_mean(pair_prefs[i]) for i in range(n)]
            prefs = [None if math.isnan(p) else p for p in prefs]
        else:
            prefs = list(pj.preferences)
        ledger["pairwise_judge"] = pj.ledger
        if pj.ledger["corrupt_cache_files"]:
            warnings.append(
                f"{pj.ledger['corrupt_cache_files']} corrupt annotation cache file(s) were detected, "
                "moved aside (*.corrupt) and their items judged again."
            )
        if config.rubric:
            rs = score_rubric(
                list(instructions),
                preds,
                codes,
                judge=judge,
                config=config,
                cache_dir=cache_dir,
                storage_options=storage_options,
                ids=ids,
            )
            rubric_rows, rubric_scores = rs.rows, rs.scores
            ledger["rubric_judge"] = rs.ledger
        meta["judge"] = {
            "backend": getattr(judge, "backend", None),
            "model": judge.model,
            "revision": getattr(judge, "revision", None),
            "template_version": load_template(config.template).template_version,
            "rubric_template_version": load_template(config.rubric_template).template_version
            if config.rubric
            else None,
            "structured_output": pj.ledger["structured_output"],
            "config": config.to_dict(),
        }
        meta.update(
            {
                "n_resamples": n_resamples,
                "confidence": confidence,
                "seed": seed,
                "lc_method": lc_method,
                "multi_reference": multi,
            }
        )
        by_item: dict[int, list[dict]] = {}
        for r in judgments:
            by_item.setdefault(r["item_index"], []).append(r)
        for i, row in enumerate(per_sample):
            rows_i = by_item.get(i, [])
            row.update(
                {
                    "reference_length": _mean([len(r) for r in ref_lists[i]]),
                    "preference": prefs[i],
                    "pref_model_first": _mean([r["preference"] for r in rows_i if r["order"] == "model_first"]),
                    "pref_model_second": _mean([r["preference"] for r in rows_i if r["order"] == "model_second"]),
                    "verdicts": [f"{r['order']}:{r['verdict']}" for r in rows_i],
                    "parse_status": sorted({r["parse_status"] for r in rows_i}),
                }
            )
            for k in ("pref_model_first", "pref_model_second"):
                if isinstance(row[k], float) and math.isnan(row[k]):
                    row[k] = None
            if rubric_scores is not None:
                row["rubric"] = rubric_scores[i]

    if preferences is not None:
        ref_lists, multi = _as_reference_lists(references)
        prefs = [None if p is None or (isinstance(p, float) and math.isnan(p)) else float(p) for p in preferences]
        bad = [(i, p) for i, p in enumerate(prefs) if p is not None and not 0.0 <= p <= 1.0]
        if bad:
            raise InvalidArgumentError(f"preferences must be in [0, 1] (P(model beats reference)); got {bad[:3]}.")
        meta["judge"] = {
            "backend": "precomputed",
            "model": annotator or "unknown annotator",
            "revision": None,
            "template_version": None,
            "rubric_template_version": None,
            "structured_output": None,
            "config": None,
        }
        meta.update(
            {
                "n_resamples": n_resamples,
                "confidence": confidence,
                "seed": seed,
                "lc_method": lc_method,
                "multi_reference": multi,
            }
        )
        for i, row in enumerate(per_sample):
            row.update({"reference_length": _mean([len(r) for r in ref_lists[i]]), "preference": prefs[i]})

    groups = {code: [i for i in range(n) if codes[i] == code] for code in dict.fromkeys(codes)}
    groups[OVERALL] = list(range(n))
    table: dict[str, dict[str, Any]] = {}
    for name, idx in groups.items():
        fid_stats = fid if name == OVERALL else fid["per_language"][name]
        row: dict[str, Any] = {
            "language": name,
            "n": len(idx),
            "n_empty": sum(per_sample[i]["empty"] for i in idx),
            "avg_model_length": _mean([len(preds[i]) for i in idx]),
            "language_fidelity": fid_stats["language_fidelity"],
            "language_fidelity_strict": fid_stats["language_fidelity_strict"],
            "fidelity_status": fid_stats.get("status", RowStatus.OK),
            "fidelity_reason": fid_stats.get("reason", ""),
            "line_pass_rate": fid_stats["line_pass_rate"],
        }
        if judge is not None or preferences is not None:
            row.update(
                _judge_stats(
                    name,
                    idx,
                    prefs,
                    judgments,
                    preds,
                    ref_lists,
                    rubric_scores,
                    config,
                    n_resamples=n_resamples,
                    confidence=confidence,
                    seed=seed,
                    lc_method=lc_method,
                    warnings=warnings,
                )
            )
        table[name] = row
    return EvaluationResult(
        table=table, per_sample=per_sample, judgments=judgments, rubric_rows=rubric_rows, ledger=ledger, meta=meta
    )


def _judge_stats(
    name,
    idx,
    prefs,
    judgments,
    preds,
    ref_lists,
    rubric_scores,
    config,
    *,
    n_resamples,
    confidence,
    seed,
    lc_method,
    warnings,
) -> dict[str, Any]:
    from xl_suite.evaluation import metrics

    nan = math.nan
    idx_set = set(idx)
    p = [prefs[i] for i in idx]
    model_len = [len(preds[i]) for i in idx]
    ref_len = [_mean([len(r) for r in ref_lists[i]]) for i in idx]
    out: dict[str, Any] = {"avg_reference_length": _mean(ref_len)}
    parsed = [x for x in p if x is not None]
    if parsed:
        wr = metrics.win_rate(p)
        ci = metrics.bootstrap_ci(p, n_resamples=n_resamples, confidence=confidence, seed=seed)
        out.update(
            {
                k: wr[k]
                for k in (
                    "win_rate",
                    "standard_error",
                    "discrete_win_rate",
                    "n_wins",
                    "n_losses",
                    "n_draws",
                    "n_total",
                    "n_unparsed",
                )
            }
        )
        out.update({"ci_low": ci["low"], "ci_high": ci["high"]})
        try:
            lc = metrics.length_controlled_win_rate(p, model_len, ref_len, method=lc_method)
            out.update(
                {
                    "length_controlled_win_rate": lc["length_controlled_win_rate"],
                    "lc_standard_error": lc["lc_standard_error"],
                }
            )
        except ValueError as e:
            out.update({"length_controlled_win_rate": nan, "lc_standard_error": nan})
            warnings.append(f"{name}: no length-controlled win rate ({e}).")
        lb = metrics.length_bias(p, model_len, ref_len)
        out.update({"prefer_longer_rate": lb["prefer_longer_rate"], "length_spearman": lb["spearman"]})
    else:
        out.update(
            dict.fromkeys(
                (
                    "win_rate",
                    "standard_error",
                    "discrete_win_rate",
                    "ci_low",
                    "ci_high",
                    "length_controlled_win_rate",
                    "lc_standard_error",
                    "prefer_longer_rate",
                    "length_spearman",
                ),
                nan,
            )
        )
        out.update({"n_wins": 0, "n_losses": 0, "n_draws": 0, "n_total": 0, "n_unparsed": len(idx)})
        warnings.append(f"{name}: no judgment could be parsed; win rates are NaN (see the unparsed judgments).")
    # Position bias from the judge's own verdicts: rule-decided rows (empty answers) are left out.
    rows = [r for r in judgments if r["item_index"] in idx_set and not is_rule(r["parse_status"])]
    by_order: dict[str, dict[int, float | None]] = {"model_first": {}, "model_second": {}}
    for r in rows:
        by_order[r["order"]][r["pair_index"]] = r["preference"]
    pairs = sorted(set(by_order["model_first"]) | set(by_order["model_second"]))
    if pairs:
        pb = metrics.position_bias(
            [by_order["model_first"].get(j) for j in pairs], [by_order["model_second"].get(j) for j in pairs]
        )
        out.update({"prefer_first_rate": pb["prefer_first_rate"], "order_agreement": pb["order_agreement"]})
    else:
        out.update({"prefer_first_rate": nan, "order_agreement": nan})
    if judgments:
        n_judged, n_bad = len(rows), sum(not is_usable(r["parse_status"]) for r in rows)
    else:  # judgments made elsewhere (preferences=): one per item
        n_judged, n_bad = len(p), sum(x is None for x in p)
    out.update(
        {
            "n_judgments": n_judged,
            "n_unparsed_judgments": n_bad,
            "parse_rate": 100.0 * (n_judged - n_bad) / n_judged if n_judged else nan,
        }
    )
    if rubric_scores is not None:
        scored = [rubric_scores[i] for i in idx if rubric_scores[i] is not None]
        for dim in config.dimensions:
            out[f"rubric_{dim}"] = _mean([s[dim] for s in scored])
        out["rubric_parse_rate"] = 100.0 * len(scored) / len(idx) if idx else nan
    return out
