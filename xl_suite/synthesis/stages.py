"""The built-in synthesis stages: pure batched functions (same batch + same engine output -> same columns).

Each LLM stage renders its template per row, makes one engine call for the batch (:func:`generate_checked`), parses
the completions and returns new columns with provenance (``<stage>_model``, ``_revision``, ``_template``,
``_sampling``), the raw completion (``<stage>_raw``), a parse status (``<stage>_status``) and token counts. Each
function declares the columns it reads (``inputs``) and adds (``outputs``), so a pipeline can check its wiring
before an engine starts (:func:`xl_suite.synthesis.config.check_wiring`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

from xl_suite.engines.base import SamplingConfig, raw_text, row_status
from xl_suite.errors import GenerationError, InvalidArgumentError
from xl_suite.languages import get_language
from xl_suite.prompting import neutralise_markers
from xl_suite.scoring import SCORE_SCALE, aggregate_scores, criteria_list, parse_scores_with_status, select_best
from xl_suite.status import RowStatus


__all__ = [
    "parse_instruction",
    "parse_response",
    "generate_checked",
    "backtranslate_batch",
    "refine_batch",
    "score_batch",
    "score_filter_batch",
    "expand_languages_batch",
    "respond_batch",
    "judge_batch",
    "language_check_batch",
]

_LABEL_RE = re.compile(
    r"^\s*(?:\*\*|#+\s*)?(?:instruction|question|user request|request|prompt|answer|response)"
    r"\s*(?:\*\*)?\s*:\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
_QUOTES = [('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("`", "`")]
_TAG_RE = re.compile(r"^\s*<(instruction|response|answer)>\s*(.*?)\s*(?:</\1>\s*)?$", re.DOTALL | re.IGNORECASE)


def _strip_wrapping(text: str) -> str:
    text = text.strip()
    m = _TAG_RE.match(text)
    if m:
        text = m.group(2).strip()
    text = _LABEL_RE.sub("", text, count=1).strip()
    for left, right in _QUOTES:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right) and text.count(left) <= 2:
            text = text[len(left) : len(text) - len(right)].strip()
    return text


def parse_instruction(text: str | None) -> str | None:
    """Clean a backtranslated instruction; ``None`` when nothing is left.

    Removes surrounding whitespace, a leading label (``Instruction:``, ``**Question:**``), ``<instruction>`` tags
    and wrapping quotes. Never returns an empty string.

    >>> parse_instruction('  Instruction: "How do I fix a dripping tap?"\\n')
    'How do I fix a dripping tap?'
    >>> parse_instruction("<instruction>Explain fog.</instruction>")
    'Explain fog.'
    >>> parse_instruction("   ") is None
    True
    """
    if text is None:
        return None
    out = _strip_wrapping(str(text))
    return out or None


def parse_response(text: str | None) -> str | None:
    """Clean a generated answer; ``None`` when nothing is left.

    >>> parse_response("Response: Drink water.")
    'Drink water.'
    >>> parse_response("") is None
    True
    """
    if text is None:
        return None
    text = str(text).strip()
    m = _TAG_RE.match(text)
    if m:
        text = m.group(2).strip()
    text = _LABEL_RE.sub("", text, count=1).strip()
    return text or None


def generate_checked(generator, conversations: list, sampling: SamplingConfig) -> list:
    """Call ``generator.generate`` and check its output shape; a malformed reply raises GenerationError.

    One engine call for the whole list (the batching is the engine's). An engine that returns fewer results,
    a wrong number of candidates or a completion without text is an engine error, never empty rows.
    """
    if not conversations:
        return []
    out = generator.generate(conversations, sampling)
    if len(out) != len(conversations):
        raise GenerationError(
            f"{type(generator).__name__} returned {len(out)} results for {len(conversations)} prompts."
        )
    for i, cands in enumerate(out):
        if len(cands) != sampling.n:
            raise GenerationError(f"Prompt {i}: expected {sampling.n} completions, got {len(cands)}.")
        for c in cands:
            if c is None or not isinstance(getattr(c, "text", None), str):
                raise GenerationError(f"Prompt {i}: the engine returned a completion without text: {c!r}.")
    return out


def _provenance(prefix: str, n_rows: int, generator, template, sampling: SamplingConfig) -> dict[str, list]:
    return {
        f"{prefix}_model": [str(generator.model)] * n_rows,
        f"{prefix}_revision": [str(generator.revision or "")] * n_rows,
        f"{prefix}_template": [template.template_version] * n_rows,
        f"{prefix}_sampling": [sampling.to_json()] * n_rows,
    }


def _completion_columns(prefix: str, results: list) -> dict[str, list]:
    """Finish reason and token counts of each row's first completion, as ``<prefix>_...`` columns."""
    return {
        f"{prefix}_finish_reason": [str(r[0].finish_reason or "") for r in results],
        f"{prefix}_prompt_tokens": [int(r[0].prompt_tokens or 0) for r in results],
        f"{prefix}_completion_tokens": [int(r[0].completion_tokens or 0) for r in results],
    }


def _render(template, **variables) -> list[dict[str, str]]:
    return template.render(**{k: neutralise_markers(v) if isinstance(v, str) else v for k, v in variables.items()})


def _n_rows(batch: Mapping[str, list]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def backtranslate_batch(batch: dict[str, list], *, generator, template, sampling: SamplingConfig) -> dict[str, list]:
    """Instruction backtranslation: ``seed_text`` -> ``instruction`` (English).

    Adds ``instruction`` ("" when unparsed), ``backtranslate_status`` (``ok``/``empty``), the raw completion,
    token counts and provenance columns.
    """
    n = _n_rows(batch)
    convs = [_render(template, passage=p) for p in batch["seed_text"]]
    results = generate_checked(generator, convs, sampling)
    out = _provenance("backtranslate", n, generator, template, sampling)
    texts = [r[0].text for r in results]
    parsed = [parse_instruction(t) for t in texts]
    out |= {
        "instruction": [p or "" for p in parsed],
        "backtranslate_raw": [raw_text(r[0]) for r in results],
        "backtranslate_status": [row_status(r[0], bool(p)) for r, p in zip(results, parsed, strict=True)],
        **_completion_columns("backtranslate", results),
    }
    return out


backtranslate_batch.template_variables = ("passage",)


def refine_batch(batch: dict[str, list], *, generator, template, sampling: SamplingConfig) -> dict[str, list]:
    """Response refinement: (``instruction``, ``seed_text``) -> ``response_en``.

    Adds ``response_en`` ("" when unparsed), ``refine_status``, the raw completion, tokens and provenance.
    """
    n = _n_rows(batch)
    convs = [
        _render(template, instruction=i, passage=p)
        for i, p in zip(batch["instruction"], batch["seed_text"], strict=True)
    ]
    results = generate_checked(generator, convs, sampling)
    out = _provenance("refine", n, generator, template, sampling)
    texts = [r[0].text for r in results]
    parsed = [parse_response(t) for t in texts]
    out |= {
        "response_en": [p or "" for p in parsed],
        "refine_raw": [raw_text(r[0]) for r in results],
        "refine_status": [row_status(r[0], bool(p)) for r, p in zip(results, parsed, strict=True)],
        **_completion_columns("refine", results),
    }
    return out


refine_batch.template_variables = ("instruction", "passage")


def score_batch(
    batch: dict[str, list],
    *,
    generator,
    template,
    sampling: SamplingConfig,
    criteria: Mapping[str, str],
    aggregate: str = "mean",
) -> dict[str, list]:
    """Multi-criteria scoring of (``instruction``, ``response_en``).

    Adds ``score_scores`` (JSON of ``{criterion: int}``, ``"null"`` when unparsed), ``score_mean`` (the
    aggregate, NaN when unparsed), ``score_status`` (``ok``/``unparsed``), the raw completion, tokens and
    provenance. Unparseable rows are kept and counted, never dropped here.
    """
    n = _n_rows(batch)
    crit = criteria_list(criteria)
    convs = [
        _render(template, instruction=i, response=r, criteria=crit, scale_min=SCORE_SCALE[0], scale_max=SCORE_SCALE[1])
        for i, r in zip(batch["instruction"], batch["response_en"], strict=True)
    ]
    results = generate_checked(generator, convs, sampling)
    out = _provenance("score", n, generator, template, sampling)
    texts = [r[0].text for r in results]
    read = [parse_scores_with_status(t, criteria) for t in texts]
    parsed = [p for p, _ in read]
    out |= {
        "score_repaired": [how == RowStatus.REPAIRED for _, how in read],
        "score_scores": [json.dumps(p) for p in parsed],
        "score_mean": [aggregate_scores(p, aggregate) for p in parsed],
        "score_raw": [raw_text(r[0]) for r in results],
        "score_status": [
            row_status(r[0], p is not None, RowStatus.UNPARSED) for r, p in zip(results, parsed, strict=True)
        ],
        **_completion_columns("score", results),
    }
    return out


score_batch.template_variables = ("instruction", "response", "criteria", "scale_min", "scale_max")


def score_filter_batch(batch: dict[str, list], *, threshold: float) -> dict[str, list]:
    """Mark rows whose ``score_mean`` reaches ``threshold`` (``score_passed``); unparsed scores never pass.

    >>> score_filter_batch({"score_mean": [4.2, 3.0, float("nan")]}, threshold=4.0)
    {'score_passed': [True, False, False]}
    """
    return {"score_passed": [not math.isnan(m) and m >= threshold for m in batch["score_mean"]]}


def expand_languages_batch(batch: dict[str, list], *, languages: Sequence[str]) -> dict[str, list]:
    """One row per (row, target language): adds ``language`` and ``id`` (``<seed_id>-<code>``). Changes the row
    count, so it returns every column (run with ``remove_columns``).

    >>> expand_languages_batch({"seed_id": ["s1", "s2"]}, languages=["mt", "sw"])
    {'seed_id': ['s1', 's1', 's2', 's2'], 'language': ['mt', 'sw', 'mt', 'sw'], 'id': ['s1-mt', 's1-sw', 's2-mt', 's2-sw']}
    """
    n = _n_rows(batch)
    out: dict[str, list] = {k: [v[i] for i in range(n) for _ in languages] for k, v in batch.items()}
    out["language"] = [code for _ in range(n) for code in languages]
    out["id"] = [f"{sid}-{code}" for sid in batch["seed_id"] for code in languages]
    return out


def respond_batch(batch: dict[str, list], *, generator, template, sampling: SamplingConfig) -> dict[str, list]:
    """Target-language answers: ``sampling.n`` candidates per row (best-of-n).

    Adds ``candidates`` (parsed texts, "" when empty), ``respond_raw`` and ``respond_status`` (per candidate),
    tokens, ``respond_*`` provenance and the row-level provenance of the final answer: ``model``, ``revision``,
    ``template_version`` and ``sampling``.
    """
    n = _n_rows(batch)
    specs = {code: get_language(code) for code in set(batch["language"])}
    convs = [
        _render(template, instruction=i, reference=r, language=specs[code])
        for i, r, code in zip(batch["instruction"], batch["response_en"], batch["language"], strict=True)
    ]
    results = generate_checked(generator, convs, sampling)
    out = _provenance("respond", n, generator, template, sampling)
    parsed = [[parse_response(c.text) for c in cands] for cands in results]
    out |= {
        "model": out["respond_model"],
        "revision": out["respond_revision"],
        "template_version": out["respond_template"],
        "sampling": out["respond_sampling"],
        "candidates": [[p or "" for p in ps] for ps in parsed],
        "respond_raw": [[raw_text(c) for c in cands] for cands in results],
        "respond_status": [
            [row_status(c, bool(p)) for c, p in zip(cands, ps, strict=True)]
            for cands, ps in zip(results, parsed, strict=True)
        ],
        "respond_finish_reason": [[str(c.finish_reason or "") for c in cands] for cands in results],
        "respond_prompt_tokens": [int(cands[0].prompt_tokens or 0) for cands in results],
        "respond_completion_tokens": [sum(int(c.completion_tokens or 0) for c in cands) for cands in results],
    }
    return out


respond_batch.template_variables = ("instruction", "reference", "language")


def judge_batch(
    batch: dict[str, list],
    *,
    generator,
    template,
    sampling: SamplingConfig,
    criteria: Mapping[str, str],
    aggregate: str = "mean",
    threshold: float | None = None,
) -> dict[str, list]:
    """Score every candidate and keep the best: ``response`` = ``candidates[best_index]``.

    One engine call for all non-empty candidates of the batch (``sampling.n`` must be 1). Adds ``judge_scores``
    and ``judge_means`` (per candidate; ``"null"``/NaN when unparsed), ``judge_raw`` and ``judge_status``
    (``ok``/``unparsed``/``empty_candidate`` per candidate), ``best_index`` (-1 when no candidate could be
    scored), ``response`` ("" then), ``judge_passed`` (a best exists and, if ``threshold`` is set, its score
    reaches it), tokens and provenance.
    """
    if sampling.n != 1:
        raise InvalidArgumentError(
            f"The judge stage scores each candidate once: sampling.n must be 1, got {sampling.n}."
        )
    n = _n_rows(batch)
    crit = criteria_list(criteria)
    specs = {code: get_language(code) for code in set(batch["language"])}
    convs, where = [], []
    for row, cands in enumerate(batch["candidates"]):
        for j, cand in enumerate(cands):
            if cand:
                convs.append(
                    _render(
                        template,
                        instruction=batch["instruction"][row],
                        reference=batch["response_en"][row],
                        response=cand,
                        language=specs[batch["language"][row]],
                        criteria=crit,
                        scale_min=SCORE_SCALE[0],
                        scale_max=SCORE_SCALE[1],
                    )
                )
                where.append((row, j))
    results = generate_checked(generator, convs, sampling)
    raw = [[""] * len(c) for c in batch["candidates"]]
    scores = [["null"] * len(c) for c in batch["candidates"]]
    means = [[math.nan] * len(c) for c in batch["candidates"]]
    status = [["empty_candidate"] * len(c) for c in batch["candidates"]]
    repaired = [[False] * len(c) for c in batch["candidates"]]
    ptok, ctok = [0] * n, [0] * n
    for (row, j), res in zip(where, results, strict=True):
        comp = res[0]
        parsed, how = parse_scores_with_status(comp.text, criteria)
        repaired[row][j] = how == RowStatus.REPAIRED
        raw[row][j] = raw_text(comp)
        scores[row][j] = json.dumps(parsed)
        means[row][j] = aggregate_scores(parsed, aggregate)
        status[row][j] = row_status(comp, parsed is not None, RowStatus.UNPARSED)
        ptok[row] += int(comp.prompt_tokens or 0)
        ctok[row] += int(comp.completion_tokens or 0)
    best = [select_best(m) for m in means]
    passed = [b >= 0 and (threshold is None or m[b] >= threshold) for b, m in zip(best, means, strict=True)]
    out = _provenance("judge", n, generator, template, sampling)
    out |= {
        "response": [c[b] if b >= 0 else "" for c, b in zip(batch["candidates"], best, strict=True)],
        "best_index": best,
        "best_score": [m[b] if b >= 0 else math.nan for m, b in zip(means, best, strict=True)],
        "judge_scores": scores,
        "judge_means": means,
        "judge_raw": raw,
        "judge_status": status,
        "judge_repaired": repaired,
        "judge_passed": passed,
        "judge_prompt_tokens": ptok,
        "judge_completion_tokens": ctok,
    }
    return out


judge_batch.template_variables = (
    "instruction",
    "reference",
    "response",
    "language",
    "criteria",
    "scale_min",
    "scale_max",
)


def language_check_batch(
    batch: dict[str, list], *, enabled: bool = True, min_language_prob: float = 0.5, min_chars: int = 10
) -> dict[str, list]:
    """Offline, family-aware language check of ``response`` (:func:`xl_suite.fidelity.language_check`).

    Adds ``language_id`` (identifier code, ``und`` when too short), ``language_prob``, ``language_ok`` (identified
    as the row's ``language`` with probability >= ``min_language_prob``), ``language_status`` (``ok``,
    ``wrong_language``, ``low_confidence`` or ``undetermined``) and ``language_passed`` (``language_ok``, or always
    True when ``enabled`` is False: the check is then recorded but does not filter).
    """
    from xl_suite.fidelity import language_check

    checked = language_check(batch["response"], batch["language"], min_chars=min_chars, min_prob=min_language_prob)
    ok = checked["language_ok"]
    return {**checked, "language_passed": ok if enabled else [True] * len(ok)}


backtranslate_batch.inputs = ("seed_text",)
backtranslate_batch.outputs = ("instruction", "backtranslate_status")


refine_batch.inputs = ("instruction", "seed_text")
refine_batch.outputs = ("response_en", "refine_status")


score_batch.inputs = ("instruction", "response_en")
score_batch.outputs = ("score_scores", "score_mean", "score_status")


score_filter_batch.inputs = ("score_mean",)
score_filter_batch.outputs = ("score_passed",)


expand_languages_batch.inputs = ("seed_id",)
expand_languages_batch.outputs = ("language", "id")


respond_batch.inputs = ("instruction", "response_en", "language")
respond_batch.outputs = ("candidates", "respond_status", "model", "revision", "template_version", "sampling")


judge_batch.inputs = ("instruction", "response_en", "candidates", "language")
judge_batch.outputs = ("response", "best_index", "best_score", "judge_status", "judge_passed")


language_check_batch.inputs = ("response", "language")
language_check_batch.outputs = ("language_id", "language_prob", "language_ok", "language_status", "language_passed")
