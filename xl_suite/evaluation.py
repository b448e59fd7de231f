"""Scoring a model on XL-AlpacaEval / m-AlpacaEval: answers, references, translation, judging, tables, reports.

Every LLM stage (answers, references, m-AlpacaEval translation, pairwise and rubric judging) is a pure batched map
run through :func:`xl_suite.runner.run_stage`: chunked, resumable, fingerprinted by (model, revision, template,
sampling). :func:`evaluate_responses` turns answers into per-language tables (win rate with standard error and a
seeded bootstrap CI, discrete and length-controlled win rates, position and length bias, parse rate, rubric means,
language fidelity) and :func:`write_report` writes them as Markdown, a CSV leaderboard and a PNG plot, with the
judge's token/cost ledger.

The judge prompt, tie rule, order handling and rubric are our reconstruction (see :mod:`xl_suite.judging`); the
paper's are unknown.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xl_suite.engines.base import Generator, SamplingConfig
from xl_suite.errors import GenerationError, InvalidArgumentError, OutputExistsError, SourceNotFoundError
from xl_suite.fingerprint import stable_hash
from xl_suite.judging import JudgeConfig, judge_pairwise, score_rubric
from xl_suite.languages import get_language, resolve_languages
from xl_suite.prompting import PromptTemplate, load_template


logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ANSWER_SAMPLING",
    "DEFAULT_TRANSLATION_SAMPLING",
    "answer_batch",
    "generate_answers",
    "generate_references",
    "translate_batch",
    "english_prompts",
    "translate_prompts",
    "write_m_alpacaeval",
    "EvaluationResult",
    "evaluate_responses",
    "format_table",
    "write_report",
    "read_rows",
    "align_references",
]

#: Greedy decoding for answers and references unless the caller says otherwise (recorded on every row).
DEFAULT_ANSWER_SAMPLING = SamplingConfig(temperature=0.0, max_tokens=1024)
#: Greedy decoding for m-AlpacaEval translation.
DEFAULT_TRANSLATION_SAMPLING = SamplingConfig(temperature=0.0, max_tokens=1024)
OVERALL = "overall"

_NOTES = (
    "XL-Suite reconstructs the evaluation of Iyer et al. (2025, arXiv 2503.22973). The paper's judge prompt, "
    "position-bias handling, tie rule, wrong-language scoring and fine-grained metric set are not known: the judge "
    "template, the both-orders averaging (tie = 0.5), the rubric dimensions and the language-fidelity check used "
    "here are our choices, documented in xl_suite/prompts/README.md and xl_suite/judging.py."
)


# ---------------------------------------------------------------------------------------------------------------
# generation stages (answers, references, translation)


def _provenance(generator: Generator, template: PromptTemplate, sampling: SamplingConfig) -> dict[str, Any]:
    return {"model": generator.model, "revision": getattr(generator, "revision", None),
            "backend": getattr(generator, "backend", None), "template_version": template.template_version,
            "sampling": sampling.to_json()}


def _model_label(generator: Generator) -> str:
    rev = getattr(generator, "revision", None)
    return f"{generator.model}@{rev}" if rev else generator.model


def _complete(conversations, generator, sampling) -> list:
    completions = generator.generate(conversations, sampling) if conversations else []
    if len(completions) != len(conversations):
        raise GenerationError(f"{generator.model!r} returned {len(completions)} results for {len(conversations)} prompts.")
    return [c[0] for c in completions]


def _answer_prompts(batch, generator, template, sampling) -> tuple[list, dict[str, Any]]:
    """One engine call over the batch's ``instruction`` prompts: (completions, provenance)."""
    convs = [template.render(instruction=text) for text in batch["instruction"]]
    return _complete(convs, generator, sampling), _provenance(generator, template, sampling)


def answer_batch(batch: dict[str, list], *, generator: Generator, template: PromptTemplate,
                 sampling: SamplingConfig) -> dict[str, list]:
    """Answer a batch of benchmark prompts (``instruction`` column) with one engine call.

    Returns ``output``, ``generator`` (alpaca_eval's column: the model label) and the provenance columns
    ``model``, ``revision``, ``backend``, ``template_version``, ``sampling``, ``finish_reason``,
    ``prompt_tokens``, ``completion_tokens``.
    """
    comps, prov = _answer_prompts(batch, generator, template, sampling)
    n = len(comps)
    out = {"output": [c.text for c in comps], "generator": [_model_label(generator)] * n}
    out.update({k: [v] * n for k, v in prov.items()})
    out["finish_reason"] = [c.finish_reason for c in comps]
    out["prompt_tokens"] = [int(c.prompt_tokens or 0) for c in comps]
    out["completion_tokens"] = [int(c.completion_tokens or 0) for c in comps]
    return out


def reference_batch(batch: dict[str, list], *, generator: Generator, template: PromptTemplate,
                    sampling: SamplingConfig) -> dict[str, list]:
    """Write reference answers into the benchmark's ``reference``/``reference_generator`` columns.

    The provenance goes, as JSON, into ``reference_provenance`` (model, revision, backend, template version,
    sampling, finish reason, token counts).
    """
    comps, prov = _answer_prompts(batch, generator, template, sampling)
    return {
        "reference": [c.text for c in comps],
        "reference_generator": [_model_label(generator)] * len(comps),
        "reference_provenance": [json.dumps({**prov, "finish_reason": c.finish_reason,
                                             "prompt_tokens": int(c.prompt_tokens or 0),
                                             "completion_tokens": int(c.completion_tokens or 0)}, sort_keys=True)
                                 for c in comps],
    }


def _stage_fingerprint(kind: str, generator: Generator, template: PromptTemplate, sampling: SamplingConfig) -> str:
    return stable_hash(kind, generator.fingerprint(), getattr(generator, "revision", None), template.template_version,
                       sampling.to_json())


def generate_answers(
    dataset,
    generator: Generator,
    *,
    sampling: SamplingConfig | None = None,
    template: str | PromptTemplate = "answer",
    work_dir: str | None = None,
    storage_options: dict | None = None,
    chunk_size: int = 256,
    batch_size: int = 64,
    stats=None,
):
    """Answer every prompt of a benchmark split (``xl-alpacaeval-*`` or ``m-alpacaeval-*``).

    Args:
        dataset: ``datasets.Dataset`` with ``id``, ``language`` and ``instruction`` columns.
        generator: the model's backend.
        sampling: decoding settings (default :data:`DEFAULT_ANSWER_SAMPLING`, greedy).
        template: answer template (default ``"answer"``: the prompt as one user turn).
        work_dir: resumable chunk folder / fsspec URL (None: in memory).
        storage_options: fsspec options for ``work_dir``.
        chunk_size: rows per resumable chunk.
        batch_size: prompts per engine call.
        stats: optional :class:`xl_suite.runner.StageStats` to fill.

    Returns:
        ``datasets.Dataset`` with ``id``, ``language``, ``instruction`` (and ``english_instruction``/``dataset``
        when present), ``output``, ``generator`` and the provenance columns of :func:`answer_batch`.
    """
    from xl_suite.runner import run_stage

    _require_columns(dataset, ("id", "language", "instruction"))
    tpl = load_template(template)
    sampling = sampling or DEFAULT_ANSWER_SAMPLING
    keep = [c for c in ("id", "language", "instruction", "english_instruction", "dataset") if c in dataset.column_names]
    ds = dataset.select_columns(keep)
    return run_stage(ds, answer_batch, stage="answers", fingerprint=_stage_fingerprint("answers", generator, tpl, sampling),
                     work_dir=work_dir, fn_kwargs={"generator": generator, "template": tpl, "sampling": sampling},
                     batch_size=batch_size, chunk_size=chunk_size, storage_options=storage_options,
                     desc=f"answers ({generator.model})", stats=stats)


def generate_references(
    dataset,
    generator: Generator,
    *,
    sampling: SamplingConfig | None = None,
    template: str | PromptTemplate = "answer",
    work_dir: str | None = None,
    storage_options: dict | None = None,
    chunk_size: int = 256,
    batch_size: int = 64,
    stats=None,
):
    """Fill a benchmark split's ``reference`` column with a reference model's answers (the paper: GPT-4o-mini).

    Same arguments as :func:`generate_answers`. Returns the benchmark split with ``reference``,
    ``reference_generator`` and ``reference_provenance`` filled; every other column is unchanged, so the result can
    be published as the benchmark's references (``xl-suite generate --as-reference --push``).
    """
    from xl_suite.runner import run_stage

    _require_columns(dataset, ("id", "language", "instruction"))
    tpl = load_template(template)
    sampling = sampling or DEFAULT_ANSWER_SAMPLING
    ds = dataset.remove_columns([c for c in ("reference", "reference_generator", "reference_provenance")
                                 if c in dataset.column_names])
    return run_stage(ds, reference_batch, stage="references",
                     fingerprint=_stage_fingerprint("references", generator, tpl, sampling), work_dir=work_dir,
                     fn_kwargs={"generator": generator, "template": tpl, "sampling": sampling},
                     batch_size=batch_size, chunk_size=chunk_size, storage_options=storage_options,
                     desc=f"references ({generator.model})", stats=stats)


def translate_batch(batch: dict[str, list], *, generator: Generator, template: PromptTemplate,
                    sampling: SamplingConfig) -> dict[str, list]:
    """Translate English prompts (``english_instruction``) into each row's ``language``, one engine call.

    Returns ``instruction`` (the translation, stripped), ``translator`` (model label), ``translation_status``
    (``ok``, ``empty`` or ``truncated``: never dropped) and the provenance columns.
    """
    convs = [template.render(text=text, language=get_language(lang))
             for text, lang in zip(batch["english_instruction"], batch["language"], strict=True)]
    comps = _complete(convs, generator, sampling)
    prov = _provenance(generator, template, sampling)
    n = len(comps)
    status = ["empty" if not c.text.strip() else ("truncated" if c.finish_reason == "length" else "ok") for c in comps]
    out = {"instruction": [c.text.strip() for c in comps], "translator": [_model_label(generator)] * n,
           "translation_status": status, "raw_completion": [c.text for c in comps]}
    out.update({k: [v] * n for k, v in prov.items()})
    out["prompt_tokens"] = [int(c.prompt_tokens or 0) for c in comps]
    out["completion_tokens"] = [int(c.completion_tokens or 0) for c in comps]
    return out


def english_prompts(source: str | None = None, *, limit: int | None = None, storage_options: dict | None = None):
    """The kept English XL-AlpacaEval prompts (797 of AlpacaEval's 805) as a Dataset to translate.

    Columns: ``id`` (the same id as in every ``xl-alpacaeval-*`` config), ``english_instruction``, ``dataset``,
    ``alpaca_eval_index``.
    """
    import datasets

    from xl_suite import sources

    records = sources.read_alpaca_eval(source or sources.DEFAULT_ALPACA_EVAL_SOURCE, storage_options=storage_options)
    kept, _ = sources.filter_english_specific(records)
    if limit is not None:
        kept = kept[:limit]
    return datasets.Dataset.from_list([
        {"id": sources.prompt_id(r["instruction"]), "english_instruction": r["instruction"],
         "dataset": r.get("dataset") or "", "alpaca_eval_index": int(r["alpaca_eval_index"])} for r in kept
    ])


def translate_prompts(
    prompts,
    generator: Generator,
    languages: Sequence[str] | str,
    *,
    sampling: SamplingConfig | None = None,
    template: str | PromptTemplate = "translate_instruction",
    work_dir: str | None = None,
    storage_options: dict | None = None,
    chunk_size: int = 256,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Machine-translate English prompts into each language (m-AlpacaEval; the paper used GPT-4o).

    Args:
        prompts: Dataset with ``id`` and ``english_instruction`` (see :func:`english_prompts`).
        generator: the translation model.
        languages: target codes (list or comma-separated string; English is refused).
        sampling: decoding settings (default greedy, :data:`DEFAULT_TRANSLATION_SAMPLING`).
        template: translation template (default ``"translate_instruction"``).
        work_dir: resumable chunk folder / fsspec URL (None: in memory); one stage per language.
        storage_options: fsspec options for ``work_dir``.
        chunk_size: rows per resumable chunk.
        batch_size: prompts per engine call.

    Returns:
        code -> Dataset with ``id``, ``instruction`` (translated), ``english_instruction``, ``language``,
        ``dataset``, ``translator``, ``translation_status`` and provenance; loadable by the m-AlpacaEval builder
        once written with :func:`write_m_alpacaeval`.
    """
    from xl_suite.runner import run_stage

    _require_columns(prompts, ("id", "english_instruction"))
    specs = resolve_languages(languages)
    tpl = load_template(template)
    sampling = sampling or DEFAULT_TRANSLATION_SAMPLING
    fp = _stage_fingerprint("translate", generator, tpl, sampling)
    out = {}
    for spec in specs:
        ds = prompts.map(lambda b, code=spec.code: {"language": [code] * len(b["id"])}, batched=True,
                         new_fingerprint=stable_hash("lang", fp, spec.code), keep_in_memory=True)
        result = run_stage(ds, translate_batch, stage=f"translate-{spec.code}", fingerprint=fp, work_dir=work_dir,
                           fn_kwargs={"generator": generator, "template": tpl, "sampling": sampling},
                           batch_size=batch_size, chunk_size=chunk_size, storage_options=storage_options,
                           desc=f"translate {spec.code} ({generator.model})")
        bad = [s for s in result["translation_status"] if s != "ok"]
        if bad:
            logger.warning("%s: %d of %d translations are empty or truncated (kept, marked in translation_status).",
                           spec.code, len(bad), result.num_rows)
        out[spec.code] = result
    return out


def write_m_alpacaeval(translations: dict[str, Any], output_dir: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Write ``<code>.jsonl`` per language: the layout the m-AlpacaEval builder reads (``source=output_dir``).

    Raises:
        FileExistsError: a language file exists and ``overwrite`` is False.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for code, ds in translations.items():
        path = out / f"{code}.jsonl"
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{str(path)!r} exists; pass overwrite=True (CLI --overwrite) to replace it.")
        _write_jsonl(ds.to_list(), path)
        paths[code] = path
    return paths


def _write_jsonl(rows: list[dict], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    tmp.replace(path)


def _require_columns(dataset, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise InvalidArgumentError(f"The dataset lacks columns {missing}; it has {dataset.column_names}.")


# ---------------------------------------------------------------------------------------------------------------
# reading answer files


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a ``.jsonl``/``.json``/``.parquet`` file, or of every such file in a folder (sorted by name).

    Raises:
        FileNotFoundError: the path does not exist, or a folder holds no such file.
    """
    from xl_suite.sources import read_records

    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"{str(p)!r} does not exist.")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                       and f.suffix in (".jsonl", ".json", ".parquet"))
        if not files:
            raise SourceNotFoundError(f"{str(p)!r} holds no .jsonl/.json/.parquet file.")
    else:
        files = [p]
    rows: list[dict] = []
    for f in files:
        rows.extend(read_records(str(f)))
    return rows


def align_references(model_rows: Sequence[dict], reference_rows: Sequence[dict]) -> list[dict]:
    """Pair each model answer with its reference by (``id``, ``language``).

    Model rows need ``id``, ``language`` and ``output``; reference rows ``id``, ``language`` and ``reference``
    (or ``output``, as in alpaca_eval output files). The instruction comes from the model row, else the reference
    row. Reference rows without a model answer are ignored.

    Returns:
        One dict per model row: ``id``, ``language``, ``instruction``, ``output``, ``reference``.

    Raises:
        ValueError: a missing field, a duplicate (id, language), or a model answer without a reference.

    >>> align_references([{"id": "1", "language": "de", "output": "Ja", "instruction": "Q"}],
    ...                  [{"id": "1", "language": "de", "reference": "Nein"}])
    [{'id': '1', 'language': 'de', 'instruction': 'Q', 'output': 'Ja', 'reference': 'Nein'}]
    """
    def key(row, i, what):
        missing = [k for k in ("id", "language") if row.get(k) in (None, "")]
        if missing:
            raise InvalidArgumentError(f"{what} row {i} lacks {missing}: {sorted(row)}")
        return str(row["id"]), get_language(row["language"]).code

    refs: dict[tuple[str, str], dict] = {}
    for i, r in enumerate(reference_rows):
        k = key(r, i, "reference")
        if k in refs:
            raise InvalidArgumentError(f"Duplicate reference for id={k[0]!r}, language={k[1]!r}.")
        text = r.get("reference") if r.get("reference") is not None else r.get("output")
        if text is None:
            raise InvalidArgumentError(f"reference row {i} has neither 'reference' nor 'output': {sorted(r)}")
        refs[k] = {"reference": text, "instruction": r.get("instruction")}
    out, seen, missing = [], set(), []
    for i, r in enumerate(model_rows):
        k = key(r, i, "model output")
        if k in seen:
            raise InvalidArgumentError(f"Duplicate model output for id={k[0]!r}, language={k[1]!r}.")
        seen.add(k)
        if "output" not in r:
            raise InvalidArgumentError(f"model output row {i} has no 'output': {sorted(r)}")
        if k not in refs:
            missing.append(k)
            continue
        instruction = r.get("instruction") or refs[k]["instruction"]
        out.append({"id": k[0], "language": k[1], "instruction": instruction, "output": r["output"] or "",
                    "reference": refs[k]["reference"]})
    if missing:
        raise InvalidArgumentError(f"{len(missing)} model output(s) have no reference, e.g. {missing[:3]}. Generate the "
                         "references for these prompts (xl-suite generate --as-reference) or pass the right file.")
    return out


# ---------------------------------------------------------------------------------------------------------------
# evaluation


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
            raise InvalidArgumentError(f"references[{i}] must be a string or a non-empty list of strings, got {ref!r}.")
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
        config: judge settings (:class:`~xl_suite.judging.JudgeConfig`).
        cache_dir: annotation cache folder (reruns make zero judge calls); None judges in memory.
        storage_options: fsspec options for ``cache_dir``.
        model_name: the evaluated model's name, for the report.
        preset: the judge preset's name, recorded in ``meta``.
        n_resamples: bootstrap resamples for the CI.
        confidence: CI level.
        seed: bootstrap seed.
        lc_method: length-control fit (``"alpaca_eval"`` or ``"mle"``), see
            :func:`xl_suite.metrics.length_controlled_win_rate`.

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
        {"id": ids[i], "language": codes[i], "model_length": len(preds[i]), "empty": not preds[i].strip(),
         "detected_language": fid["detected_language"][i], "is_target": fid["is_target"][i],
         "line_pass": fid["line_pass"][i]} for i in range(n)
    ]
    meta: dict[str, Any] = {
        "model": model_name, "judge": None, "preset": preset, "n_items": n, "languages": list(dict.fromkeys(codes)),
        "fidelity": fid.get("config"), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "notes": _NOTES, "warnings": warnings,
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
            raise InvalidArgumentError("A judge needs references= and instructions= (the prompts as the model saw them).")
        ref_lists, multi = _as_reference_lists(references)
        pair_item = [i for i, refs in enumerate(ref_lists) for _ in refs]
        pair_refs = [r for refs in ref_lists for r in refs]
        pj = judge_pairwise([instructions[i] for i in pair_item], [preds[i] for i in pair_item], pair_refs,
                            [codes[i] for i in pair_item], judge=judge, config=config, cache_dir=cache_dir,
                            storage_options=storage_options, ids=[ids[i] for i in pair_item])
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
            warnings.append(f"{pj.ledger['corrupt_cache_files']} corrupt annotation cache file(s) were detected, "
                            "moved aside (*.corrupt) and their items judged again.")
        if config.rubric:
            rs = score_rubric(list(instructions), preds, codes, judge=judge, config=config, cache_dir=cache_dir,
                              storage_options=storage_options, ids=ids)
            rubric_rows, rubric_scores = rs.rows, rs.scores
            ledger["rubric_judge"] = rs.ledger
        meta["judge"] = {"backend": getattr(judge, "backend", None), "model": judge.model,
                         "revision": getattr(judge, "revision", None),
                         "template_version": load_template(config.template).template_version,
                         "rubric_template_version": load_template(config.rubric_template).template_version
                         if config.rubric else None,
                         "structured_output": pj.ledger["structured_output"], "config": config.to_dict()}
        meta.update({"n_resamples": n_resamples, "confidence": confidence, "seed": seed, "lc_method": lc_method,
                     "multi_reference": multi})
        by_item: dict[int, list[dict]] = {}
        for r in judgments:
            by_item.setdefault(r["item_index"], []).append(r)
        for i, row in enumerate(per_sample):
            rows_i = by_item.get(i, [])
            row.update({
                "reference_length": _mean([len(r) for r in ref_lists[i]]),
                "preference": prefs[i],
                "pref_model_first": _mean([r["preference"] for r in rows_i if r["order"] == "model_first"]),
                "pref_model_second": _mean([r["preference"] for r in rows_i if r["order"] == "model_second"]),
                "verdicts": [f"{r['order']}:{r['verdict']}" for r in rows_i],
                "parse_status": sorted({r["parse_status"] for r in rows_i}),
            })
            for k in ("pref_model_first", "pref_model_second"):
                if isinstance(row[k], float) and math.isnan(row[k]):
                    row[k] = None
            if rubric_scores is not None:
                row["rubric"] = rubric_scores[i]

    groups = {code: [i for i in range(n) if codes[i] == code] for code in dict.fromkeys(codes)}
    groups[OVERALL] = list(range(n))
    table: dict[str, dict[str, Any]] = {}
    for name, idx in groups.items():
        fid_stats = fid if name == OVERALL else fid["per_language"][name]
        row: dict[str, Any] = {
            "language": name, "n": len(idx), "n_empty": sum(per_sample[i]["empty"] for i in idx),
            "avg_model_length": _mean([len(preds[i]) for i in idx]),
            "language_fidelity": fid_stats["language_fidelity"], "line_pass_rate": fid_stats["line_pass_rate"],
        }
        if judge is not None:
            row.update(_judge_stats(name, idx, prefs, judgments, preds, ref_lists,
                                    rubric_scores, config, n_resamples=n_resamples, confidence=confidence, seed=seed,
                                    lc_method=lc_method, warnings=warnings))
        table[name] = row
    return EvaluationResult(table=table, per_sample=per_sample, judgments=judgments, rubric_rows=rubric_rows,
                            ledger=ledger, meta=meta)


def _judge_stats(name, idx, prefs, judgments, preds, ref_lists, rubric_scores, config, *,
                 n_resamples, confidence, seed, lc_method, warnings) -> dict[str, Any]:
    from xl_suite import metrics

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
        out.update({k: wr[k] for k in ("win_rate", "standard_error", "discrete_win_rate", "n_wins", "n_losses",
                                       "n_draws", "n_unparsed")})
        out.update({"ci_low": ci["low"], "ci_high": ci["high"]})
        try:
            lc = metrics.length_controlled_win_rate(p, model_len, ref_len, method=lc_method)
            out.update({"length_controlled_win_rate": lc["length_controlled_win_rate"],
                        "lc_standard_error": lc["lc_standard_error"]})
        except ValueError as e:
            out.update({"length_controlled_win_rate": nan, "lc_standard_error": nan})
            warnings.append(f"{name}: no length-controlled win rate ({e}).")
        lb = metrics.length_bias(p, model_len, ref_len)
        out.update({"prefer_longer_rate": lb["prefer_longer_rate"], "length_spearman": lb["spearman"]})
    else:
        out.update(dict.fromkeys(("win_rate", "standard_error", "discrete_win_rate", "ci_low", "ci_high",
                                  "length_controlled_win_rate", "lc_standard_error", "prefer_longer_rate",
                                  "length_spearman"), nan))
        out.update({"n_wins": 0, "n_losses": 0, "n_draws": 0, "n_unparsed": len(idx)})
        warnings.append(f"{name}: no judgment could be parsed; win rates are NaN (see the unparsed judgments).")
    # Position bias from the judge's own verdicts: rule-decided rows (empty answers) are left out.
    rows = [r for r in judgments if r["item_index"] in idx_set and not r["parse_status"].startswith("rule:")]
    by_order: dict[str, dict[int, float | None]] = {"model_first": {}, "model_second": {}}
    for r in rows:
        by_order[r["order"]][r["pair_index"]] = r["preference"]
    pairs = sorted(set(by_order["model_first"]) | set(by_order["model_second"]))
    if pairs:
        pb = metrics.position_bias([by_order["model_first"].get(j) for j in pairs],
                                   [by_order["model_second"].get(j) for j in pairs])
        out.update({"prefer_first_rate": pb["prefer_first_rate"], "order_agreement": pb["order_agreement"]})
    else:
        out.update({"prefer_first_rate": nan, "order_agreement": nan})
    n_bad = sum(r["parse_status"] != "ok" for r in rows)
    out.update({"n_judgments": len(rows), "n_unparsed_judgments": n_bad,
                "parse_rate": 100.0 * (len(rows) - n_bad) / len(rows) if rows else nan})
    if rubric_scores is not None:
        scored = [rubric_scores[i] for i in idx if rubric_scores[i] is not None]
        for dim in config.dimensions:
            out[f"rubric_{dim}"] = _mean([s[dim] for s in scored])
        out["rubric_parse_rate"] = 100.0 * len(scored) / len(idx) if idx else nan
    return out


# ---------------------------------------------------------------------------------------------------------------
# reports

_MAIN_COLUMNS = [("language", "lang"), ("n", "n"), ("win_rate", "WR"), ("standard_error", "SE"),
                 ("ci_low", "CI low"), ("ci_high", "CI high"), ("discrete_win_rate", "discrete"),
                 ("length_controlled_win_rate", "LC WR"), ("parse_rate", "parsed %"),
                 ("n_unparsed_judgments", "unparsed"), ("prefer_first_rate", "prefer 1st"),
                 ("prefer_longer_rate", "prefer longer"), ("language_fidelity", "fidelity %"),
                 ("line_pass_rate", "line pass %")]


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.{digits}f}" if abs(v) >= 1 or v == 0 else f"{v:.2f}"
    return str(v)


def _columns(result: EvaluationResult) -> list[tuple[str, str]]:
    present = set().union(*(row.keys() for row in result.table.values()))
    cols = [(k, label) for k, label in _MAIN_COLUMNS if k in present]
    cols += [(k, k.replace("rubric_", "")) for k in sorted(present) if k.startswith("rubric_") and k != "rubric_parse_rate"]
    return cols


def format_table(result: EvaluationResult) -> str:
    """Fixed-width text table, one row per language and one for ``overall``."""
    cols = _columns(result)
    rows = [[_fmt(row.get(k)) for k, _ in cols] for row in result.table.values()]
    widths = [max(len(label), *(len(r[j]) for r in rows)) for j, (_, label) in enumerate(cols)]
    lines = ["  ".join(label.rjust(w) for (_, label), w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(out)


def _csv_columns(result: EvaluationResult) -> list[str]:
    order = ["model", "language", "n", "win_rate", "standard_error", "ci_low", "ci_high", "discrete_win_rate",
             "length_controlled_win_rate", "lc_standard_error", "n_wins", "n_losses", "n_draws", "n_unparsed",
             "n_judgments", "n_unparsed_judgments", "parse_rate", "prefer_first_rate", "order_agreement",
             "prefer_longer_rate", "length_spearman"]
    present = set().union(*(row.keys() for row in result.table.values()))
    cols = [c for c in order if c in present or c == "model"]
    cols += sorted(k for k in present if k.startswith("rubric_") and k != "rubric_parse_rate")
    cols += [c for c in ("rubric_parse_rate", "language_fidelity", "line_pass_rate", "n_empty", "avg_model_length", "avg_reference_length")
             if c in present]
    return cols


def _plot(result: EvaluationResult, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(result.table)
    x = list(range(len(names)))
    judged = result.judged
    fig = Figure(figsize=(max(6.0, 1.1 * len(names) * (2 if judged else 1)), 4.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if judged else 1, squeeze=False)[0]
    if judged:
        ax = axes[0]
        wr = [result.table[k].get("win_rate", math.nan) for k in names]
        lo = [max(0.0, w - result.table[k].get("ci_low", w)) if not math.isnan(w) else 0.0 for k, w in zip(names, wr, strict=True)]
        hi = [max(0.0, result.table[k].get("ci_high", w) - w) if not math.isnan(w) else 0.0 for k, w in zip(names, wr, strict=True)]
        colors = ["#4C72B0" if k != OVERALL else "#333333" for k in names]
        ax.bar(x, [0.0 if math.isnan(w) else w for w in wr], yerr=[lo, hi], capsize=4, color=colors)
        ax.axhline(50, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(x, names)
        ax.set_ylim(0, 100)
        ax.set_ylabel("win rate vs reference (%)")
        conf = int(round(100 * result.meta.get("confidence", 0.95)))
        ax.set_title(f"Win rate ({conf}% bootstrap CI)")
    ax = axes[-1]
    fidelity = [result.table[k].get("language_fidelity", math.nan) for k in names]
    ax.bar(x, [0.0 if math.isnan(f) else f for f in fidelity],
           color=["#55A868" if k != OVERALL else "#333333" for k in names])
    ax.set_xticks(x, names)
    ax.set_ylim(0, 100)
    ax.set_ylabel("responses in the target language (%)")
    ax.set_title("Language fidelity")
    title = result.meta.get("model") or "model"
    if judged:
        title += f" - judge: {result.meta['judge']['model']}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")


def _json_default(o):
    if isinstance(o, set):
        return sorted(o)
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


def _clean(o):
    """NaN -> None recursively (strict JSON)."""
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    return o


def write_report(result: EvaluationResult, output_dir: str | Path, *, title: str | None = None) -> dict[str, Path]:
    """Write the report folder; existing report files in it are replaced.

    Files: ``report.md`` (tables, settings, diagnostics, ledger, unparsed judgments), ``leaderboard.csv`` (one row
    per language and ``overall``), ``win_rates.png`` (win rate per language with CI bars, language fidelity beside
    it), ``summary.json``, ``per_sample.jsonl``, and with a judge ``judgments.jsonl`` and ``rubric.jsonl``.

    Returns:
        file kind -> path.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    model = result.meta.get("model") or "model"

    paths["csv"] = out / "leaderboard.csv"
    cols = _csv_columns(result)
    with paths["csv"].open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for row in result.table.values():
            w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v)
                        for k, v in {"model": model, **row}.items()})

    paths["png"] = out / "win_rates.png"
    _plot(result, paths["png"])

    paths["summary"] = out / "summary.json"
    paths["summary"].write_text(json.dumps(_clean(result.to_dict()), indent=2, ensure_ascii=False,
                                           default=_json_default), encoding="utf-8")
    paths["per_sample"] = out / "per_sample.jsonl"
    _write_jsonl([_clean(r) for r in result.per_sample], paths["per_sample"])
    if result.judged:
        paths["judgments"] = out / "judgments.jsonl"
        _write_jsonl([_clean(r) for r in result.judgments], paths["judgments"])
        if result.rubric_rows:
            paths["rubric"] = out / "rubric.jsonl"
            _write_jsonl([_clean(r) for r in result.rubric_rows], paths["rubric"])

    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(_markdown(result, title or f"XL-AlpacaEval report: {model}"), encoding="utf-8")
    return paths


def _markdown(result: EvaluationResult, title: str) -> str:
    meta = result.meta
    md = [f"# {title}", "", f"_Generated {meta.get('created')} by xl-suite {meta.get('xl_suite_version')}._", ""]
    md += ["> " + meta["notes"], ""]
    settings = [["model", str(meta.get("model") or "-")], ["items", str(meta.get("n_items"))],
                ["languages", ", ".join(meta.get("languages", []))]]
    judge = meta.get("judge")
    if judge:
        cfg = judge["config"]
        settings += [
            ["judge", f"{judge['model']} ({judge['backend']}, revision {judge['revision'] or '-'})"],
            ["preset", str(meta.get("preset") or "-")],
            ["judge template", judge["template_version"]],
            ["rubric template", str(judge.get("rubric_template_version") or "-")],
            ["orders", "both (preferences averaged)" if cfg["order"] == "both"
             else "one content-seeded random order per item, un-swapped"],
            ["decoding", f"temperature {cfg['temperature']}, max_tokens {cfg['max_tokens']}, "
                         f"logprobs {cfg['logprobs']}, JSON-schema constrained: {judge['structured_output']}"],
            ["win rate CI", f"{int(100 * meta['confidence'])}% percentile bootstrap, {meta['n_resamples']} "
                            f"resamples, seed {meta['seed']}"],
            ["length control", meta["lc_method"]],
        ]
    else:
        settings.append(["judge", "none: language fidelity only"])
    if meta.get("fidelity"):
        settings.append(["language identifier", json.dumps(meta["fidelity"], default=str)])
    md += ["## Settings", "", _markdown_table(["setting", "value"], settings), ""]
    md += ["## Results per language", "", "![Win rate and language fidelity per language](win_rates.png)", ""]
    cols = _columns(result)
    md.append(_markdown_table([label for _, label in cols],
                              [[_fmt(row.get(k)) for k, _ in cols] for row in result.table.values()]))
    md += ["", "WR: mean P(model beats reference) x 100 (tie = 50); SE: standard error; CI: bootstrap interval; "
           "discrete: wins + half the ties; LC WR: length-controlled win rate; parsed %: judgments whose verdict "
           "could be read; prefer 1st: share of decided judgments won by the answer shown first (0.5 = no position "
           "bias); prefer longer: share won by the longer answer; fidelity: responses identified as the target "
           "language; line pass: responses whose every long line is in the target language.", ""]
    if result.ledger:
        md += ["## Cost and token ledger", ""]
        keys = ["requests", "unique_requests", "judged_now", "from_cache", "rule_based", "corrupt_cache_files",
                "prompt_tokens", "completion_tokens", "cached_prompt_tokens", "cached_completion_tokens", "seconds",
                "cost_usd"]
        md.append(_markdown_table(["stage", *keys], [[stage, *[_fmt(entry.get(k), 4 if k == "cost_usd" else 1)
                                                               for k in keys]] for stage, entry in result.ledger.items()]))
        md += ["", "Tokens are those spent in this run; cached_* are the tokens once spent on the judgments read "
               "from the annotation cache. cost_usd needs prices in the preset.", ""]
    if result.judged:
        bad = [r for r in result.judgments if r["parse_status"] == "unparsed"]
        md += ["## Unparsed judgments", ""]
        if bad:
            md += [f"{len(bad)} of {len(result.judgments)} judgments could not be parsed; they are left out of the "
                   "win rates and counted above. First ones:", ""]
            md.append(_markdown_table(["id", "language", "order", "raw completion"],
                                      [[r["id"], r["language"], r["order"], repr(r["raw_completion"][:160])]
                                       for r in bad[:10]]))
            md.append("")
        else:
            md += ["None: every judgment was parsed.", ""]
        rules = sum(r["parse_status"].startswith("rule:") for r in result.judgments)
        if rules:
            md += [f"{rules} judgment(s) of empty model answers were decided by rule (an empty answer loses).", ""]
    if meta.get("warnings"):
        md += ["## Warnings", ""] + [f"- {w}" for w in meta["warnings"]] + [""]
    md += ["## Files", "", "- `leaderboard.csv`: the table above, one row per language and overall.",
           "- `per_sample.jsonl`: per item preference, verdicts, rubric scores and detected language.",
           "- `judgments.jsonl` / `rubric.jsonl`: every judgment with its provenance and raw completion.",
           "- `summary.json`: table, ledger and settings.", ""]
    return "\n".join(md)
