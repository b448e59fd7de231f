"""Judging a set of answers: requests laid out once, judged through the run layer's store, combined and counted.

:func:`judge_pairwise` and :func:`score_rubric` read as named steps: lay out the requests
(:mod:`~xl_suite.evaluation.judging.requests`), judge the ones the store does not hold (:func:`judge_requests`: one
keyed :func:`xl_suite.runner.run_stage`, whose chunk files are the only store of judgments and whose
``max_attempts`` is the only retry limit), decide the empty answers by rule, then combine and count.
:func:`estimate_judging_cost` renders the same requests before any judge starts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xl_suite.engines.base import Generator, truncates_prompts
from xl_suite.errors import InvalidArgumentError
from xl_suite.evaluation.judging.batches import (
    JUDGMENT_COLUMNS,
    OPTIONAL_COLUMNS,
    RUBRIC_COLUMNS,
    judge_identity,
    pairwise_batch,
    rubric_batch,
)
from xl_suite.evaluation.judging.config import JudgeConfig
from xl_suite.evaluation.judging.requests import (
    PAIRWISE_REQUEST_COLUMNS,
    RUBRIC_REQUEST_COLUMNS,
    is_rule_decided,
    pairwise_messages,
    pairwise_requests,
    rubric_messages,
    rubric_requests,
)
from xl_suite.fingerprint import stable_hash
from xl_suite.prompting import PromptTemplate, load_template
from xl_suite.status import RowStatus


logger = logging.getLogger(__name__)

__all__ = [
    "PairwiseJudgments",
    "RubricScores",
    "judge_pairwise",
    "score_rubric",
    "estimate_judging_cost",
    "judge_requests",
    "pairwise_fingerprint",
    "rubric_fingerprint",
    "load_annotations",
]

#: Key column of a judgment: a hash of the judge's fingerprint and everything it sees (see ``requests``).
KEY = "cache_key"


@dataclass
class PairwiseJudgments:
    """Result of :func:`judge_pairwise`.

    Attributes:
        rows: one dict per judgment (item x order), with the item fields, the order, every provenance column,
            the parse status and ``cached`` (True when read from the judgment store).
        preferences: per item, P(model beats reference) after combining the orders (None: no parsed judgment).
        pref_model_first: per item, the preference judged with the model's answer first (None: not judged in
            that order, or unparsed).
        pref_model_second: the same with the model's answer second.
        ledger: requests, cache hits, engine work and tokens (see :func:`judge_pairwise`).
    """

    rows: list[dict]
    preferences: list[float | None]
    pref_model_first: list[float | None]
    pref_model_second: list[float | None]
    ledger: dict[str, Any]


@dataclass
class RubricScores:
    """Result of :func:`score_rubric`: per-item scores (None when unparsed), the rows and a ledger."""

    scores: list[dict[str, int] | None]
    rows: list[dict]
    ledger: dict[str, Any]


def _check_inputs(n: int, named: dict[str, Sequence | None]) -> None:
    for name, seq in named.items():
        if seq is not None and len(seq) != n:
            lengths = {k: len(v) for k, v in named.items() if v is not None}
            raise InvalidArgumentError(f"Inputs must have the same length; got {lengths} ({name} differs).")


def _validate_texts(values: Sequence, name: str, *, allow_empty: bool) -> None:
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise InvalidArgumentError(f"{name}[{i}] must be a string, got {type(v).__name__}: {v!r}.")
        if not allow_empty and not v.strip():
            raise InvalidArgumentError(f"{name}[{i}] is empty; every item needs a non-empty {name[:-1]}.")


def _ledger_entry(
    rows: list[dict], counts: dict, generator: Generator, config: JudgeConfig, *, rule_count: int
) -> dict:
    unique = list({r["cache_key"]: r for r in rows if r["parse_status"] != RowStatus.RULE_EMPTY_OUTPUT}.values())
    now = [r for r in unique if not r["cached"]]
    cached = [r for r in unique if r["cached"]]
    p_in = sum(r["prompt_tokens"] for r in now)
    p_out = sum(r["completion_tokens"] for r in now)
    entry = {
        "judge_backend": getattr(generator, "backend", None),
        "judge_model": generator.model,
        "judge_revision": getattr(generator, "revision", None),
        "judge_truncate_prompts": truncates_prompts(generator),
        "requests": len(rows),
        "unique_requests": counts["unique_requests"],
        "judged_now": counts["judged_now"],
        "from_cache": counts["from_cache"],
        "rule_based": rule_count,
        # parsed only after the JSON repair step (rows cached before it existed have no flag: not repaired)
        "json_repaired": sum(bool(r.get("json_repaired")) for r in unique),
        # judged from a prompt cut to the judge's context (truncate_prompts): kept, counted apart
        "prompt_truncated": sum(r["parse_status"] == RowStatus.PROMPT_TRUNCATED for r in unique),
        "corrupt_cache_files": counts["corrupt_files"],
        "prompt_tokens": p_in,
        "completion_tokens": p_out,
        "cached_prompt_tokens": sum(r["prompt_tokens"] for r in cached),
        "cached_completion_tokens": sum(r["completion_tokens"] for r in cached),
        "seconds": round(counts["seconds"], 3),
        "cost_usd": None,
    }
    if config.price_input_per_mtok is not None and config.price_output_per_mtok is not None:
        entry["cost_usd"] = (p_in * config.price_input_per_mtok + p_out * config.price_output_per_mtok) / 1e6
    return entry


def _structured(generator: Generator, config: JudgeConfig) -> bool:
    supports = getattr(generator, "supports_structured_output", None)
    return bool(config.structured_output and callable(supports) and supports())


def pairwise_fingerprint(judge: Generator, template: PromptTemplate, sampling) -> str:
    """Hash of everything that changes a pairwise verdict besides the texts: the judge, its revision, the
    template version and the sampling settings (the stage folder is ``judge-pairwise-<this>``)."""
    return stable_hash(
        "pairwise",
        judge.fingerprint(),
        getattr(judge, "revision", None),
        template.template_version,
        sampling.to_json(),
    )


def rubric_fingerprint(judge: Generator, template: PromptTemplate, sampling, dimensions: dict[str, str]) -> str:
    """The same for the rubric judge, plus its dimensions (the stage folder is ``judge-rubric-<this>``)."""
    return stable_hash(
        "rubric",
        judge.fingerprint(),
        getattr(judge, "revision", None),
        template.template_version,
        sampling.to_json(),
        dimensions,
    )


def judge_requests(
    requests: list[dict],
    function: Callable[..., dict],
    *,
    stage: str,
    fingerprint: str,
    columns: Sequence[str],
    cache_dir: str | None,
    storage_options: dict | None,
    fn_kwargs: dict,
    chunk_size: int,
    batch_size: int,
    judged_columns: Sequence[str],
) -> tuple[dict[str, dict], dict]:
    """Judge request rows through the run layer's store keyed by ``cache_key``; return key -> judged row, and counts.

    Identical requests are judged once. Every stored judgment of the stage (``cache_dir/<stage>/chunk-*.parquet``,
    whatever run wrote it) whose key is asked for is reused; the others are judged, in resumable chunks (each
    finished engine call stored at once when calls overlap), and a failed one (unparsed, empty, error) is judged again
    on the next run, up to ``run_stage``'s ``max_attempts`` attempts. Judgment caches written before this store read
    the same way: their chunk files and keys are unchanged.

    Args:
        requests: rows with at least ``columns`` (the first being ``cache_key``).
        function: the batched judge (:func:`~xl_suite.evaluation.judging.batches.pairwise_batch`, ...).
        stage: the stage folder name.
        fingerprint: the stage fingerprint.
        columns: the request columns stored with each judgment.
        cache_dir: the store's folder or fsspec URL; None judges in memory.
        storage_options: fsspec options.
        fn_kwargs: the judge and its settings, for ``function``.
        chunk_size: judgments per chunk file.
        batch_size: judgments per engine call.
        judged_columns: the columns a stored judgment must have (older optional ones aside).

    Returns:
        (cache_key -> row, counts: ``unique_requests``, ``judged_now``, ``from_cache``, ``corrupt_files``,
        ``chunks_computed``, ``seconds``, ``computed_keys``).
    """
    import datasets

    from xl_suite.runner import StageStats, run_stage

    t0 = time.perf_counter()
    unique: dict[str, dict] = {}
    for r in requests:
        unique.setdefault(r[KEY], {k: r[k] for k in columns})  # identical requests are judged once
    stats = StageStats(stage=stage)
    results: dict[str, dict] = {}
    if unique:
        result = run_stage(
            datasets.Dataset.from_list(list(unique.values())),
            function,
            stage=stage,
            fingerprint=fingerprint,
            work_dir=cache_dir,
            fn_kwargs=fn_kwargs,
            batch_size=batch_size,
            chunk_size=chunk_size,
            storage_options=storage_options,
            stats=stats,
            key_column=KEY,
            required_columns=tuple(c for c in judged_columns if c not in OPTIONAL_COLUMNS),
        )
        results = {r[KEY]: r for r in result.to_list()}
    counts = {
        "unique_requests": len(unique),
        "judged_now": stats.rows_computed,  # rows sent to the judge in this call (new ones and retried failures)
        "from_cache": len(unique) - stats.rows_computed,  # stored ones, and pieces of a killed run read back
        "corrupt_files": stats.chunks_damaged,
        "chunks_computed": stats.chunks_computed,
        "seconds": time.perf_counter() - t0,
        "computed_keys": set(stats.keys_computed),
    }
    return results, counts


def load_annotations(
    cache_dir: str | None,
    stage: str,
    *,
    storage_options: dict | None = None,
    required: Sequence[str] = (KEY,),
    failed_attempts: dict[str, int] | None = None,
) -> tuple[dict[str, dict], list[str]]:
    """The judgments a stage's store holds, by ``cache_key`` (a view of the run layer's store; nothing else reads it).

    Damaged files are moved aside (``<name>.corrupt``) with a warning. Per key, a parsed judgment wins over failed
    ones; ``failed_attempts``, when given, receives the attempts spent on each key whose stored judgment failed.

    Returns:
        (cache_key -> stored row, list of the paths moved aside).
    """
    if cache_dir is None:
        return {}, []
    from xl_suite.runner import index_stored_rows, storage

    fs, root = storage(cache_dir, storage_options)
    index, bad = index_stored_rows(
        fs,
        f"{root.rstrip('/')}/{stage}",
        KEY,
        input_columns=(*PAIRWISE_REQUEST_COLUMNS, *RUBRIC_REQUEST_COLUMNS),
        required=[c for c in required if c != KEY],
        what="Annotation cache file",
    )
    if failed_attempts is not None:
        failed_attempts.update({k: e.attempts for k, e in index.items() if e.failed})
    return {k: e.table.slice(e.row, 1).to_pylist()[0] for k, e in index.items()}, bad


def _structured_sampling(judge: Generator, config: JudgeConfig, make) -> tuple[bool, Any]:
    structured = _structured(judge, config)
    return structured, make(structured=structured)


def estimate_judging_cost(
    instructions: Sequence[str],
    model_outputs: Sequence[str],
    reference_outputs: Sequence[str],
    languages: Sequence[str],
    *,
    config: JudgeConfig,
    judge_model: str,
    price: tuple[float, float] | None = None,
) -> list:
    """What :func:`judge_pairwise` and :func:`score_rubric` would send, before any judge starts.

    Renders every prompt the judge would get, from the same request rows (both orders, or the content-seeded one);
    empty answers are decided by rule and cost nothing. Stored judgments are not subtracted: the figure is an upper
    bound for a rerun.

    Returns:
        :class:`xl_suite.costs.CostEstimate` for the pairwise judge, and for the rubric judge when it is on.
    """
    from xl_suite.costs import estimate_cost

    n = len(instructions)
    pairs = pairwise_requests(
        instructions, model_outputs, reference_outputs, languages, order=config.order, seed=config.seed
    )
    template = load_template(config.template)
    pair_convs = [pairwise_messages(template, r) for r in pairs if not is_rule_decided(r["output_model"])]
    rubric_convs = []
    if config.rubric:
        rubric_template = load_template(config.rubric_template)
        rubric_convs = [
            rubric_messages(rubric_template, r, config.dimensions)
            for r in rubric_requests(instructions, model_outputs, languages)
            if not is_rule_decided(r["output"])
        ]
    n_empty = sum(is_rule_decided(o) for o in model_outputs)
    detail = (
        f"{n} answers ({n_empty} empty, decided by rule) in {len(set(languages))} language(s) x "
        f"{2 if config.order == 'both' else 1} order(s)"
    )
    out = [
        estimate_cost(
            "pairwise judge", judge_model, pair_convs, max_tokens=config.max_tokens, price=price, detail=detail
        )
    ]
    if config.rubric:
        out.append(
            estimate_cost(
                "rubric judge",
                judge_model,
                rubric_convs,
                max_tokens=config.rubric_max_tokens,
                price=price,
                detail=f"{len(rubric_convs)} non-empty answers",
            )
        )
    return out


def judge_pairwise(
    instructions: Sequence[str],
    model_outputs: Sequence[str],
    reference_outputs: Sequence[str],
    languages: Sequence[str],
    *,
    judge: Generator,
    config: JudgeConfig | None = None,
    cache_dir: str | None = None,
    storage_options: dict | None = None,
    ids: Sequence[str] | None = None,
) -> PairwiseJudgments:
    """Judge model answers against reference answers, in both orders (or one content-seeded order).

    Args:
        instructions: the prompts as the models saw them.
        model_outputs: the evaluated model's answers (empty answers lose by rule, see the package docstring).
        reference_outputs: the reference answers (must be non-empty).
        languages: target language code (or name) of each item.
        judge: the judge backend (any :class:`~xl_suite.engines.base.Generator`).
        config: judge settings (default :class:`JudgeConfig`).
        cache_dir: judgment store folder / fsspec URL; None judges in memory (no reuse, no resume).
        storage_options: fsspec options for ``cache_dir``.
        ids: optional item ids, copied onto the rows.

    Returns:
        :class:`PairwiseJudgments`. Its ledger has ``requests`` (judgments asked for), ``unique_requests``,
        ``judged_now`` (sent to the judge in this call), ``from_cache``, ``rule_based``,
        ``corrupt_cache_files``, token counts of this call and of the cached rows, ``seconds`` and ``cost_usd``
        (when the config has prices).

    Raises:
        ValueError: inputs of different lengths, a non-string or empty instruction/reference, an unknown language.
    """
    config = config or JudgeConfig()
    n = len(model_outputs)
    _check_inputs(
        n,
        {
            "instructions": instructions,
            "model_outputs": model_outputs,
            "reference_outputs": reference_outputs,
            "languages": languages,
            "ids": ids,
        },
    )
    if n == 0:
        raise InvalidArgumentError("Nothing to judge: no model outputs given.")
    _validate_texts(instructions, "instructions", allow_empty=False)
    _validate_texts(reference_outputs, "reference_outputs", allow_empty=False)
    _validate_texts(model_outputs, "model_outputs", allow_empty=True)
    template = load_template(config.template)
    structured, sampling = _structured_sampling(judge, config, config.pairwise_sampling)
    fingerprint = pairwise_fingerprint(judge, template, sampling)

    # 1. lay out the requests; 2. judge the ones the store lacks; 3. decide empty answers by rule; 4. combine.
    rows = pairwise_requests(
        instructions,
        model_outputs,
        reference_outputs,
        languages,
        order=config.order,
        seed=config.seed,
        fingerprint=fingerprint,
        ids=ids,
    )
    results, counts = judge_requests(
        [r for r in rows if not is_rule_decided(r["output_model"])],
        pairwise_batch,
        stage=f"judge-pairwise-{fingerprint}",
        fingerprint=fingerprint,
        columns=PAIRWISE_REQUEST_COLUMNS,
        cache_dir=cache_dir,
        storage_options=storage_options,
        fn_kwargs={"generator": judge, "template": template, "sampling": sampling},
        chunk_size=config.chunk_size,
        batch_size=config.batch_size,
        judged_columns=JUDGMENT_COLUMNS,
    )
    provenance = {
        **judge_identity(judge),
        "judge_template_version": template.template_version,
        "judge_sampling": sampling.to_json(),
    }
    rule_count = 0
    for r in rows:
        if is_rule_decided(r["output_model"]):
            rule_count += 1
            r.update(_empty_answer_judgment(r, provenance))
            continue
        stored = results[r[KEY]]
        r.update({k: stored[k] if k not in OPTIONAL_COLUMNS else stored.get(k) for k in JUDGMENT_COLUMNS})
        # The store keeps P(model wins) under its first name, "preference" (caches stay valid); the rows we return
        # call it p_model_wins: alpaca_eval's "preference" is another quantity, in [1, 2].
        r["p_model_wins"] = r.pop("preference")
        r["cached"] = r[KEY] not in counts["computed_keys"]
    first: list[float | None] = [None] * n
    second: list[float | None] = [None] * n
    for r in rows:
        (first if r["order"] == "model_first" else second)[r["item_index"]] = r["p_model_wins"]
    from xl_suite.evaluation.metrics import combine_orders

    prefs = combine_orders(first, second)
    ledger = _ledger_entry(rows, counts, judge, config, rule_count=rule_count)
    ledger["order"] = config.order
    ledger["structured_output"] = structured
    logger.info(
        "pairwise judge %s: %d judgments, %d judged now, %d from cache, %d unparsed",
        judge.model,
        len(rows),
        counts["judged_now"],
        counts["from_cache"],
        sum(r["parse_status"] == RowStatus.UNPARSED for r in rows),
    )
    return PairwiseJudgments(
        rows=rows, preferences=prefs, pref_model_first=first, pref_model_second=second, ledger=ledger
    )


def _empty_answer_judgment(row: dict, provenance: dict) -> dict:
    """The judgment of an empty model answer, decided by rule: it loses to a non-empty reference, ties an empty one."""
    p = 0.5 if not row["output_reference"].strip() else 0.0
    return {
        **provenance,
        "raw_completion": "",
        "verdict": None,
        "parse_status": RowStatus.RULE_EMPTY_OUTPUT,
        "p_a": p if row["order"] == "model_first" else 1.0 - p,
        "p_model_wins": p,
        "preference_source": "rule",
        "verdict_probs": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "finish_reason": None,
        "cached": False,
    }


def score_rubric(
    instructions: Sequence[str],
    outputs: Sequence[str],
    languages: Sequence[str],
    *,
    judge: Generator,
    config: JudgeConfig | None = None,
    cache_dir: str | None = None,
    storage_options: dict | None = None,
    ids: Sequence[str] | None = None,
) -> RubricScores:
    """Score answers 1-5 on the config's rubric dimensions (stored like :func:`judge_pairwise`).

    An empty answer is not sent to the judge: it scores 1 on every dimension (``parse_status="rule:empty_output"``).
    An unparseable reply gives None for that item; it is counted, never dropped.
    """
    config = config or JudgeConfig()
    n = len(outputs)
    _check_inputs(n, {"instructions": instructions, "outputs": outputs, "languages": languages, "ids": ids})
    _validate_texts(instructions, "instructions", allow_empty=False)
    _validate_texts(outputs, "outputs", allow_empty=True)
    template = load_template(config.rubric_template)
    structured, sampling = _structured_sampling(judge, config, config.rubric_sampling)
    dims = dict(config.dimensions)
    fingerprint = rubric_fingerprint(judge, template, sampling, dims)
    rows = rubric_requests(instructions, outputs, languages, fingerprint=fingerprint, ids=ids)
    results, counts = judge_requests(
        [r for r in rows if not is_rule_decided(r["output"])],
        rubric_batch,
        stage=f"judge-rubric-{fingerprint}",
        fingerprint=fingerprint,
        columns=RUBRIC_REQUEST_COLUMNS,
        cache_dir=cache_dir,
        storage_options=storage_options,
        fn_kwargs={"generator": judge, "template": template, "sampling": sampling, "dimensions": dims},
        chunk_size=config.chunk_size,
        batch_size=config.batch_size,
        judged_columns=RUBRIC_COLUMNS,
    )
    provenance = {
        **judge_identity(judge),
        "judge_template_version": template.template_version,
        "judge_sampling": sampling.to_json(),
    }
    scores: list[dict[str, int] | None] = []
    rule_count = 0
    for r in rows:
        if is_rule_decided(r["output"]):
            rule_count += 1
            r.update(
                {
                    **provenance,
                    "raw_completion": "",
                    "parse_status": RowStatus.RULE_EMPTY_OUTPUT,
                    "scores": json.dumps(dict.fromkeys(dims, 1), sort_keys=True),
                    "prompt_tokens": 0,
                    "completion_tokens": 0,
                    "finish_reason": None,
                    "cached": False,
                }
            )
        else:
            stored = results[r[KEY]]
            r.update({k: stored[k] if k not in OPTIONAL_COLUMNS else stored.get(k) for k in RUBRIC_COLUMNS})
            r["cached"] = r[KEY] not in counts["computed_keys"]
        scores.append(json.loads(r["scores"]) if r["scores"] else None)
    ledger = _ledger_entry(rows, counts, judge, config, rule_count=rule_count)
    ledger["structured_output"] = structured
    return RubricScores(scores=scores, rows=rows, ledger=ledger)
