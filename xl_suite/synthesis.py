"""XL-Instruct synthesis: English instruction -> target-language response pairs, as a datasets-native pipeline.

**This pipeline is a reconstruction.** The paper (arXiv 2503.22973) does not say, in what we could read, which
stages, models, prompts, criteria or thresholds it used; third-party summaries call the method "iterative
backtranslation with multi-dimensional quality filtering" and name a web corpus as the seed source. The stages
below are our reasoned choice, consistent with those hints and with the release layout (``scored``, ``bestof3`` and
``default`` configs); see ``xl_suite/prompts/README.md`` ("Synthesis templates"). Stages, in order
(:func:`default_stages`):

========================  =====================================================================================
``backtranslate``         the LLM writes the English instruction a seed passage would answer (instruction
                          backtranslation); rows whose output is empty are dropped and counted.
``refine``                the LLM rewrites the passage into a high-quality English answer to that instruction.
``score``                 multi-criteria scoring (:data:`EN_CRITERIA`, integers 1-5), as JSON constrained by
                          :func:`score_schema` where the backend supports structured outputs; parsed by
                          :func:`parse_scores` (``None`` on failure: the row is kept, marked ``unparseable``,
                          counted). Output: the ``scored`` shape (``en_scored.parquet``).
``score_filter``          keeps rows whose parsed mean (or min) score reaches ``threshold``.
``expand``                one row per (pair, target language).
``respond``               ``n_candidates`` (3) sampled target-language answers per row.
``judge``                 a scorer rates each candidate (:data:`TARGET_CRITERIA`); the best mean is kept
                          (:func:`select_best`). Output: the ``bestof3`` shape (``<code>_bestof3.parquet``).
``language_check``        an offline language identifier (:mod:`xl_suite.fidelity`) checks the kept answer is in
                          the target language (``language_filter=False`` records the result without filtering).
========================  =====================================================================================

Then exact duplicates (normalised instruction or response, per language) are removed and at most
``num_examples`` pairs per language are kept: the ``default`` shape (``<code>.parquet``), loadable with
``xl_suite.load_dataset("xl-instruct-<code>", source=OUTPUT)``.

Every stage is a pure batched function ``(batch: dict[str, list], *, generator, template, sampling, **params) ->
dict[str, list]`` run through :func:`xl_suite.runner.run_stage` (chunked, resumable ``Dataset.map(batched=True)``,
fingerprinted by stage, engine fingerprint, revision, template sha, sampling JSON and seed). Seed chunks go through
all stages one after the other (chunk-major), so memory is bounded by the chunk size, results are written as they
finish, and a killed run redoes at most one chunk. Every generated row records ``<stage>_model``,
``<stage>_revision``, ``<stage>_template`` (``name@version+sha``), ``<stage>_sampling`` (JSON), ``<stage>_raw``
(raw completion(s)), ``<stage>_status`` (parse status), token counts and, for scoring stages, the scores.
An engine error (:class:`~xl_suite.generation.GenerationError`) propagates: it never becomes empty rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from xl_suite.errors import InvalidArgumentError
from xl_suite.generation import GenerationError, SamplingConfig, stable_hash
from xl_suite.languages import get_language, resolve_languages


logger = logging.getLogger(__name__)

__all__ = [
    "SYNTHESIS_VERSION",
    "EN_CRITERIA",
    "TARGET_CRITERIA",
    "SCORE_SCALE",
    "Stage",
    "SynthesisConfig",
    "SynthesisResult",
    "default_stages",
    "stage_fingerprint",
    "synthesize",
    "score_schema",
    "parse_instruction",
    "parse_response",
    "parse_scores",
    "aggregate_scores",
    "select_best",
    "dedup_key",
    "generate_checked",
    "backtranslate_batch",
    "refine_batch",
    "score_batch",
    "score_filter_batch",
    "expand_languages_batch",
    "respond_batch",
    "judge_batch",
    "language_check_batch",
    "format_summary",
    "preflight",
    "FakeSynthesisResponder",
    "apply_stages",
    "check_templates",
    "apply_template_overrides",
    "DEFAULT_STAGE_NAMES",
    "SNAPSHOT_FILES",
]

#: Bump when a built-in stage function changes its output for the same input (part of every stage fingerprint).
SYNTHESIS_VERSION = "1"
#: Integer scale of every score.
SCORE_SCALE = (1, 5)

#: Criteria of the English ``score`` stage (reconstruction: the paper's criteria are not known).
EN_CRITERIA: dict[str, str] = {
    "instruction_quality": "the instruction is clear, self-contained and something a real user would ask",
    "relevance": "the response addresses exactly what the instruction asks",
    "helpfulness": "the response is complete, informative and genuinely useful",
    "accuracy": "the response contains no factual errors, contradictions or made-up details",
    "fluency": "the response is well written, coherent and well organised",
}

#: Criteria of the ``judge`` stage that picks the best target-language candidate (reconstruction).
TARGET_CRITERIA: dict[str, str] = {
    "relevance": "the answer addresses exactly what the instruction asks",
    "helpfulness": "the answer is complete, informative and genuinely useful",
    "accuracy": "the answer is factually correct and consistent with the English reference answer",
    "fluency": "the answer reads naturally and grammatically, as a native speaker would write it",
    "target_language": "the answer is written entirely in the requested language",
}

#: Snapshot name -> file name pattern written in the output folder (``{code}`` is the language).
SNAPSHOT_FILES = {"scored": "en_scored.parquet", "bestof3": "{code}_bestof3.parquet", "default": "{code}.parquet"}

_OK = "ok"
_LABEL_RE = re.compile(r"^\s*(?:\*\*|#+\s*)?(?:instruction|question|user request|request|prompt|answer|response)"
                       r"\s*(?:\*\*)?\s*:\s*(?:\*\*)?\s*", re.IGNORECASE)
_QUOTES = [('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("`", "`")]
_TAG_RE = re.compile(r"^\s*<(instruction|response|answer)>\s*(.*?)\s*(?:</\1>\s*)?$", re.DOTALL | re.IGNORECASE)
_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


# --------------------------------------------------------------------------------------------------------------
# Pure helpers: schema, parsers, aggregation
# --------------------------------------------------------------------------------------------------------------


def score_schema(criteria: Sequence[str] | Mapping[str, str], scale: tuple[int, int] = SCORE_SCALE) -> dict:
    """JSON schema of a score object: one integer in ``scale`` per criterion, all required, nothing else.

    >>> s = score_schema(["fluency"])
    >>> s["required"], s["properties"]["fluency"]
    (['fluency'], {'type': 'integer', 'minimum': 1, 'maximum': 5})
    """
    names = list(criteria)
    return {
        "type": "object",
        "properties": {n: {"type": "integer", "minimum": scale[0], "maximum": scale[1]} for n in names},
        "required": names,
        "additionalProperties": False,
    }


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


def _json_candidates(text: str) -> list[str]:
    out = [m.group(1) for m in _FENCE_RE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        out.append(text[start : end + 1])
    return out


def parse_scores(
    text: str | None, criteria: Sequence[str] | Mapping[str, str], *, scale: tuple[int, int] = SCORE_SCALE
) -> dict[str, int] | None:
    """Parse a JSON score object; ``None`` unless every criterion has an integer score within ``scale``.

    Accepts the object inside prose or a fenced ```json block, integral floats (``4.0``) and numeric strings
    (``"4"``); extra keys are ignored. Never uses ``eval``.

    Args:
        text: raw completion.
        criteria: the required keys.
        scale: inclusive (low, high).

    Returns:
        ``{criterion: int}`` in the order of ``criteria``, or ``None``.

    >>> parse_scores('Sure! {"fluency": 4, "relevance": "5"}', ["relevance", "fluency"])
    {'relevance': 5, 'fluency': 4}
    >>> parse_scores('{"fluency": 6, "relevance": 5}', ["relevance", "fluency"]) is None
    True
    >>> parse_scores('{"fluency": 4}', ["relevance", "fluency"]) is None
    True
    >>> parse_scores("I'd give it a 4.", ["fluency"]) is None
    True
    """
    if not text:
        return None
    names = list(criteria)
    for cand in _json_candidates(str(text)):
        try:
            obj = json.loads(cand)
        except (json.JSONDecodeError, ValueError):
            continue
        if not isinstance(obj, dict):
            continue
        out: dict[str, int] = {}
        for name in names:
            value = obj.get(name)
            if isinstance(value, bool) or value is None:
                break
            if isinstance(value, str):
                value = value.strip()
                if not re.fullmatch(r"[+-]?\d+(?:\.0+)?", value):
                    break
                value = float(value)
            if not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
                break
            value = int(value)
            if not scale[0] <= value <= scale[1]:
                break
            out[name] = value
        else:
            return out
    return None


def aggregate_scores(scores: Mapping[str, int] | None, how: str = "mean") -> float:
    """Mean (or min) of a score dict; NaN for ``None`` (an unparseable score never passes a threshold).

    >>> aggregate_scores({"a": 4, "b": 5})
    4.5
    >>> aggregate_scores({"a": 4, "b": 5}, "min")
    4.0
    >>> math.isnan(aggregate_scores(None))
    True
    """
    if not scores:
        return math.nan
    values = list(scores.values())
    if how == "mean":
        return sum(values) / len(values)
    if how == "min":
        return float(min(values))
    raise InvalidArgumentError(f"Unknown score aggregate {how!r}; choose 'mean' or 'min'.")


def select_best(means: Sequence[float]) -> int:
    """Index of the highest score, the earliest on ties; -1 when no score is a number.

    >>> select_best([3.5, 4.0, 4.0])
    1
    >>> select_best([float("nan"), 2.0])
    1
    >>> select_best([float("nan")])
    -1
    """
    best, best_value = -1, -math.inf
    for i, value in enumerate(means):
        if value is None or math.isnan(value):
            continue
        if value > best_value:
            best, best_value = i, value
    return best


def dedup_key(text: str) -> str:
    """Normalised form used for duplicate removal: lower case, punctuation and extra spaces removed.

    >>> dedup_key("  How do I  bake bread? ") == dedup_key("how do i bake bread")
    True
    """
    words = re.sub(r"[\W_]+", " ", text.lower()).split()
    return " ".join(words)


# --------------------------------------------------------------------------------------------------------------
# Engine calls and provenance
# --------------------------------------------------------------------------------------------------------------


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


_ROLE_LINE = re.compile(r"^(### (?:system|user|assistant)\s*)$", re.MULTILINE)


def neutralise_markers(text: str) -> str:
    """Indent lines that look like ``### role`` markers, so inserted text (a web passage, a model's answer) cannot
    open a new chat turn when the rendered template is split into messages.

    >>> neutralise_markers("a\\n### user\\nb")
    'a\\n ### user\\nb'
    """
    return _ROLE_LINE.sub(r" \1", text) if "###" in text else text


def _completion_columns(prefix: str, results: list) -> dict[str, list]:
    """Finish reason and token counts of each row's first completion, as ``<prefix>_...`` columns."""
    return {
        f"{prefix}_finish_reason": [str(r[0].finish_reason or "") for r in results],
        f"{prefix}_prompt_tokens": [int(r[0].prompt_tokens or 0) for r in results],
        f"{prefix}_completion_tokens": [int(r[0].completion_tokens or 0) for r in results],
    }


def _render(template, **variables) -> list[dict[str, str]]:
    return template.render(**{k: neutralise_markers(v) if isinstance(v, str) else v for k, v in variables.items()})


def _criteria_list(criteria: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "description": v} for k, v in criteria.items()]


def _n_rows(batch: Mapping[str, list]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


# --------------------------------------------------------------------------------------------------------------
# Batched stage functions (pure: same batch + same engine output -> same columns)
# --------------------------------------------------------------------------------------------------------------


def backtranslate_batch(batch: dict[str, list], *, generator, template, sampling: SamplingConfig) -> dict[str, list]:
    """Instruction backtranslation: ``seed_text`` -> ``instruction`` (English).

    Adds ``instruction`` ("" when unparseable), ``backtranslate_status`` (``ok``/``empty``), the raw completion,
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
        "backtranslate_raw": texts,
        "backtranslate_status": [_OK if p else "empty" for p in parsed],
        **_completion_columns("backtranslate", results),
    }
    return out


backtranslate_batch.template_variables = ("passage",)


def refine_batch(batch: dict[str, list], *, generator, template, sampling: SamplingConfig) -> dict[str, list]:
    """Response refinement: (``instruction``, ``seed_text``) -> ``response_en``.

    Adds ``response_en`` ("" when unparseable), ``refine_status``, the raw completion, tokens and provenance.
    """
    n = _n_rows(batch)
    convs = [_render(template, instruction=i, passage=p) for i, p in zip(batch["instruction"], batch["seed_text"],
                                                                         strict=True)]
    results = generate_checked(generator, convs, sampling)
    out = _provenance("refine", n, generator, template, sampling)
    texts = [r[0].text for r in results]
    parsed = [parse_response(t) for t in texts]
    out |= {
        "response_en": [p or "" for p in parsed],
        "refine_raw": texts,
        "refine_status": [_OK if p else "empty" for p in parsed],
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

    Adds ``score_scores`` (JSON of ``{criterion: int}``, ``"null"`` when unparseable), ``score_mean`` (the
    aggregate, NaN when unparseable), ``score_status`` (``ok``/``unparseable``), the raw completion, tokens and
    provenance. Unparseable rows are kept and counted, never dropped here.
    """
    n = _n_rows(batch)
    crit = _criteria_list(criteria)
    convs = [
        _render(template, instruction=i, response=r, criteria=crit, scale_min=SCORE_SCALE[0], scale_max=SCORE_SCALE[1])
        for i, r in zip(batch["instruction"], batch["response_en"], strict=True)
    ]
    results = generate_checked(generator, convs, sampling)
    out = _provenance("score", n, generator, template, sampling)
    texts = [r[0].text for r in results]
    parsed = [parse_scores(t, criteria) for t in texts]
    out |= {
        "score_scores": [json.dumps(p) for p in parsed],
        "score_mean": [aggregate_scores(p, aggregate) for p in parsed],
        "score_raw": texts,
        "score_status": [_OK if p is not None else "unparseable" for p in parsed],
        **_completion_columns("score", results),
    }
    return out


score_batch.template_variables = ("instruction", "response", "criteria", "scale_min", "scale_max")


def score_filter_batch(batch: dict[str, list], *, threshold: float) -> dict[str, list]:
    """Mark rows whose ``score_mean`` reaches ``threshold`` (``score_passed``); unparseable scores never pass.

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
        "respond_raw": [[c.text for c in cands] for cands in results],
        "respond_status": [[_OK if p else "empty" for p in ps] for ps in parsed],
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
    and ``judge_means`` (per candidate; ``"null"``/NaN when unparseable), ``judge_raw`` and ``judge_status``
    (``ok``/``unparseable``/``empty_candidate`` per candidate), ``best_index`` (-1 when no candidate could be
    scored), ``response`` ("" then), ``judge_passed`` (a best exists and, if ``threshold`` is set, its score
    reaches it), tokens and provenance.
    """
    if sampling.n != 1:
        raise InvalidArgumentError(f"The judge stage scores each candidate once: sampling.n must be 1, got {sampling.n}.")
    n = _n_rows(batch)
    crit = _criteria_list(criteria)
    specs = {code: get_language(code) for code in set(batch["language"])}
    convs, where = [], []
    for row, cands in enumerate(batch["candidates"]):
        for j, cand in enumerate(cands):
            if cand:
                convs.append(_render(template,
                    instruction=batch["instruction"][row], reference=batch["response_en"][row], response=cand,
                    language=specs[batch["language"][row]], criteria=crit, scale_min=SCORE_SCALE[0],
                    scale_max=SCORE_SCALE[1],
                ))
                where.append((row, j))
    results = generate_checked(generator, convs, sampling)
    raw = [[""] * len(c) for c in batch["candidates"]]
    scores = [["null"] * len(c) for c in batch["candidates"]]
    means = [[math.nan] * len(c) for c in batch["candidates"]]
    status = [["empty_candidate"] * len(c) for c in batch["candidates"]]
    ptok, ctok = [0] * n, [0] * n
    for (row, j), res in zip(where, results, strict=True):
        comp = res[0]
        parsed = parse_scores(comp.text, criteria)
        raw[row][j] = comp.text
        scores[row][j] = json.dumps(parsed)
        means[row][j] = aggregate_scores(parsed, aggregate)
        status[row][j] = _OK if parsed is not None else "unparseable"
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
        "judge_passed": passed,
        "judge_prompt_tokens": ptok,
        "judge_completion_tokens": ctok,
    }
    return out


judge_batch.template_variables = ("instruction", "reference", "response", "language", "criteria", "scale_min",
                                  "scale_max")


def language_check_batch(
    batch: dict[str, list], *, enabled: bool = True, min_language_prob: float = 0.5, min_chars: int = 10
) -> dict[str, list]:
    """Offline language identification of ``response`` (:func:`xl_suite.fidelity.identify_language`).

    Adds ``language_id`` (identifier code, ``und`` when too short), ``language_prob``, ``language_ok`` (identified
    as the row's ``language`` with probability >= ``min_language_prob``), ``language_status`` (``ok``,
    ``wrong_language``, ``low_confidence`` or ``undetermined``) and ``language_passed`` (``language_ok``, or always
    True when ``enabled`` is False: the check is then recorded but does not filter).
    """
    from xl_suite.fidelity import clean_text, identify_language

    texts = [clean_text(t or "").strip() for t in batch["response"]]
    found = identify_language(texts, min_chars=min_chars) if texts else []
    targets = {code: get_language(code).langid_code for code in set(batch["language"])}
    status = []
    for (code, prob), lang in zip(found, batch["language"], strict=True):
        if code == "und":
            status.append("undetermined")
        elif code != targets[lang]:
            status.append("wrong_language")
        else:
            status.append(_OK if prob >= min_language_prob else "low_confidence")
    ok = [s == _OK for s in status]
    return {
        "language_id": [c for c, _ in found],
        "language_prob": [float(p) for _, p in found],
        "language_ok": ok,
        "language_status": status,
        "language_passed": ok if enabled else [True] * len(ok),
    }


# --------------------------------------------------------------------------------------------------------------
# Stages and configuration
# --------------------------------------------------------------------------------------------------------------

_STAGE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_SNAPSHOTS = ("scored", "bestof3")
_ENGINES = ("generator", "scorer")


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: a pure batched function plus what it needs.

    Args:
        name: unique stage name (also the folder of its chunks in the work dir); lower case, digits, ``_``.
        function: ``(batch, *, generator, template, sampling, **params) -> dict[str, list]`` for LLM stages,
            ``(batch, **params) -> dict[str, list]`` otherwise.
        template: template name or ``.jinja`` path (LLM stages only).
        sampling: decoding settings (LLM stages only).
        engine: ``"generator"`` or ``"scorer"`` (which engine the stage calls), ``None`` for non-LLM stages.
        params: extra keyword arguments; must be JSON-serialisable (they are part of the fingerprint).
        prefix: prefix of the stage's ``_status``/``_prompt_tokens``/``_completion_tokens`` columns, read for the
            summary (default: ``name``).
        keep: a column; after the stage, rows are kept where it is True or ``"ok"`` (dropped rows are counted).
        reshape: the function changes the row count and returns every column (run with ``remove_columns``).
        snapshot: ``"scored"`` or ``"bestof3"``: write the stage's kept rows in that release shape.
        version: bump when the function's behaviour changes (part of the fingerprint).
    """

    name: str
    function: Callable[..., dict]
    template: str | None = None
    sampling: SamplingConfig | None = None
    engine: str | None = None
    params: dict = field(default_factory=dict)
    prefix: str | None = None
    keep: str | None = None
    reshape: bool = False
    snapshot: str | None = None
    version: str = "1"

    def __post_init__(self):
        if not _STAGE_NAME_RE.match(self.name or ""):
            raise InvalidArgumentError(f"Invalid stage name {self.name!r}: use lower-case letters, digits and '_'.")
        if self.engine not in (None, *_ENGINES):
            raise InvalidArgumentError(f"Stage {self.name!r}: engine must be one of {list(_ENGINES)} or None, got {self.engine!r}.")
        if self.engine and (self.template is None or self.sampling is None):
            raise InvalidArgumentError(f"Stage {self.name!r} calls an engine: it needs a template and a sampling config.")
        if self.snapshot not in (None, *_SNAPSHOTS):
            raise InvalidArgumentError(f"Stage {self.name!r}: snapshot must be one of {list(_SNAPSHOTS)} or None, "
                             f"got {self.snapshot!r}.")
        try:
            json.dumps(self.params, sort_keys=True)
        except TypeError as e:
            raise InvalidArgumentError(f"Stage {self.name!r}: params must be JSON-serialisable (they are fingerprinted): {e}") from e

    @property
    def column_prefix(self) -> str:
        """Prefix of the stage's status and token columns."""
        return self.prefix or self.name


@dataclass
class SynthesisConfig:
    """Settings of a synthesis run (every field is recorded in ``summary.json``).

    Args:
        languages: target language codes (default: the paper's 8 core languages).
        num_examples: final pairs wanted per language (``None``: as many as the seeds give). When fewer survive,
            the shortfall is reported; the run never loops to make up for it.
        max_seeds: seed passages to use at most (default: ``ceil(num_examples * oversample)``, or all seeds).
        oversample: seeds per wanted example when ``max_seeds`` is not given (default 4.0).
        n_candidates: target-language candidates per pair (best-of-n; default 3).
        threshold: minimum aggregate English score (1-5) to keep a pair (default 3.5).
        aggregate: ``"mean"`` (default) or ``"min"`` over the criteria.
        target_threshold: minimum aggregate score of the best candidate (default ``None``: the best is kept).
        language_filter: drop answers not identified as the target language (default True). ``False`` keeps them
            and only records the identification (for demos with a tiny random model; the counts are reported).
        min_language_prob: minimum identifier probability for the language check (default 0.5).
        dedup: remove exact duplicates (normalised instruction or response, per language) (default True).
        max_tokens: maximum new tokens per completion, every stage (default 512).
        temperature: sampling temperature of the candidates (default 0.8; the other stages are greedy).
        top_p: nucleus mass of the candidates (default 0.95).
        seed: sampling seed (default 0).
        batch_size: rows per engine call (default 256).
        chunk_size: rows per resumable chunk (default 1024).
        templates: stage name -> template name or ``.jinja`` path, replacing the shipped template.
        criteria: criteria of the English ``score`` stage (default :data:`EN_CRITERIA`).
        target_criteria: criteria of the ``judge`` stage (default :data:`TARGET_CRITERIA`).
    """

    languages: tuple[str, ...] = ("de", "pt", "hu", "lt", "ga", "mt", "zh", "hi")
    num_examples: int | None = None
    max_seeds: int | None = None
    oversample: float = 4.0
    n_candidates: int = 3
    threshold: float = 3.5
    aggregate: str = "mean"
    target_threshold: float | None = None
    language_filter: bool = True
    min_language_prob: float = 0.5
    dedup: bool = True
    max_tokens: int = 512
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0
    batch_size: int = 256
    chunk_size: int = 1024
    templates: dict[str, str] = field(default_factory=dict)
    criteria: dict[str, str] = field(default_factory=lambda: dict(EN_CRITERIA))
    target_criteria: dict[str, str] = field(default_factory=lambda: dict(TARGET_CRITERIA))

    def __post_init__(self):
        if isinstance(self.languages, str):
            self.languages = tuple(c.strip() for c in self.languages.split(",") if c.strip())
        self.languages = tuple(s.code for s in resolve_languages(list(self.languages)))
        if self.num_examples is not None and self.num_examples < 1:
            raise InvalidArgumentError(f"num_examples must be >= 1 (or None for all), got {self.num_examples}.")
        if self.max_seeds is not None and self.max_seeds < 1:
            raise InvalidArgumentError(f"max_seeds must be >= 1 (or None), got {self.max_seeds}.")
        if self.oversample < 1:
            raise InvalidArgumentError(f"oversample must be >= 1, got {self.oversample}.")
        if self.n_candidates < 1:
            raise InvalidArgumentError(f"n_candidates must be >= 1, got {self.n_candidates}.")
        lo, hi = SCORE_SCALE
        for name in ("threshold", "target_threshold"):
            value = getattr(self, name)
            if value is not None and not lo <= value <= hi:
                raise InvalidArgumentError(f"{name} must be within the score scale {SCORE_SCALE}, got {value}.")
        if self.aggregate not in ("mean", "min"):
            raise InvalidArgumentError(f"aggregate must be 'mean' or 'min', got {self.aggregate!r}.")
        if not 0 <= self.min_language_prob <= 1:
            raise InvalidArgumentError(f"min_language_prob must be in [0, 1], got {self.min_language_prob}.")
        if self.batch_size < 1 or self.chunk_size < 1:
            raise InvalidArgumentError(f"batch_size and chunk_size must be >= 1, got {self.batch_size}, {self.chunk_size}.")
        for name in ("criteria", "target_criteria"):
            crit = getattr(self, name)
            if not crit or not all(isinstance(k, str) and k for k in crit):
                raise InvalidArgumentError(f"{name} must be a non-empty dict of criterion name -> description, got {crit!r}.")
        SamplingConfig(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)  # validates

    @property
    def seed_limit(self) -> int | None:
        """Seeds used at most: ``max_seeds``, else ``ceil(num_examples * oversample)``, else ``None`` (all)."""
        if self.max_seeds is not None:
            return self.max_seeds
        if self.num_examples is not None:
            return math.ceil(self.num_examples * self.oversample)
        return None

    def to_dict(self) -> dict:
        """JSON-serialisable dict."""
        return asdict(self)


#: Built-in stage names, in order.
DEFAULT_STAGE_NAMES = ("backtranslate", "refine", "score", "score_filter", "expand", "respond", "judge",
                       "language_check")


def default_stages(config: SynthesisConfig, generator=None, scorer=None) -> list[Stage]:
    """The reconstructed XL-Instruct stages (see the module docstring), configured from ``config``.

    ``generator``/``scorer`` are only asked whether they support structured outputs: if the scorer does, the
    scoring stages are constrained to :func:`score_schema`.

    Raises:
        ValueError: ``config.templates`` names a stage that does not exist or has no template.
    """
    scorer = scorer or generator
    structured = bool(scorer is not None and scorer.supports_structured_output())
    greedy = SamplingConfig(temperature=0.0, max_tokens=config.max_tokens, seed=config.seed)
    scoring = replace(greedy, json_schema=score_schema(config.criteria) if structured else None)
    judging = replace(greedy, json_schema=score_schema(config.target_criteria) if structured else None)
    candidates = SamplingConfig(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens,
                                n=config.n_candidates, seed=config.seed)
    stages = [
        Stage("backtranslate", backtranslate_batch, "synth_backtranslate", greedy, "generator",
              keep="backtranslate_status"),
        Stage("refine", refine_batch, "synth_refine", greedy, "generator", keep="refine_status"),
        Stage("score", score_batch, "synth_score", scoring, "scorer",
              params={"criteria": dict(config.criteria), "aggregate": config.aggregate}, snapshot="scored"),
        Stage("score_filter", score_filter_batch, params={"threshold": config.threshold}, keep="score_passed"),
        Stage("expand", expand_languages_batch, params={"languages": list(config.languages)}, reshape=True),
        Stage("respond", respond_batch, "synth_respond", candidates, "generator"),
        Stage("judge", judge_batch, "synth_judge", judging, "scorer",
              params={"criteria": dict(config.target_criteria), "aggregate": config.aggregate,
                      "threshold": config.target_threshold},
              keep="judge_passed", snapshot="bestof3"),
        Stage("language_check", language_check_batch, keep="language_passed", prefix="language",
              params={"enabled": config.language_filter, "min_language_prob": config.min_language_prob}),
    ]
    return apply_template_overrides(stages, config.templates)


def apply_template_overrides(stages: Sequence[Stage], templates: Mapping[str, str]) -> list[Stage]:
    """Replace the templates of named stages (``{"score": "my_score.jinja"}``).

    Raises:
        ValueError: a name that is not an LLM stage of ``stages``.
    """
    llm = {s.name for s in stages if s.template is not None}
    unknown = sorted(set(templates) - llm)
    if unknown:
        raise InvalidArgumentError(f"Template overrides for unknown stages {unknown}; stages with a template: {sorted(llm)}.")
    return [replace(s, template=str(templates[s.name])) if s.name in templates else s for s in stages]


def stage_fingerprint(stage: Stage, template=None, engine=None) -> str:
    """Stable hash of everything that changes a stage's output: stage name/version/function, template
    (name, version, sha), sampling JSON (seed included), params, and the engine's fingerprint and revision.
    """
    fn = f"{getattr(stage.function, '__module__', '?')}.{getattr(stage.function, '__qualname__', repr(stage.function))}"
    return stable_hash(
        "xl-suite-synthesis", SYNTHESIS_VERSION, stage.name, stage.version, fn,
        template.template_version if template is not None else None,
        stage.sampling.to_json() if stage.sampling is not None else None,
        json.dumps(stage.params, sort_keys=True),
        engine.fingerprint() if engine is not None else None,
        getattr(engine, "revision", None) if engine is not None else None,
        stage.reshape, stage.keep,
    )


_EXAMPLE_VARIABLES = {
    "passage": "An example passage about gardening.",
    "instruction": "How do I grow tomatoes?",
    "response": "Plant them in a sunny spot.",
    "reference": "Plant them in a sunny spot.",
    "criteria": _criteria_list(EN_CRITERIA),
    "scale_min": SCORE_SCALE[0],
    "scale_max": SCORE_SCALE[1],
}


def check_templates(stages: Sequence[Stage], templates: Mapping[str, Any], language: str = "de") -> None:
    """Render every LLM stage's template once with example values, before any generation.

    A template that uses a variable its stage does not pass fails here with the StrictUndefined error naming it.
    """
    for stage in stages:
        names = getattr(stage.function, "template_variables", None)
        if stage.template is None or names is None:
            continue
        values = {k: (get_language(language) if k == "language" else _EXAMPLE_VARIABLES[k]) for k in names}
        templates[stage.name].render(**values)


def apply_stages(batch: dict[str, list], stages: Sequence[Stage], *, engines: Mapping[str, Any],
                 templates: Mapping[str, Any]) -> dict[str, list]:
    """Run ``stages`` directly on one batch, with their keep filters (no chunk files, no cache).

    This is what a Ray Data actor does with each block (:mod:`xl_suite.ray_pipeline`); :func:`synthesize` runs
    the same functions through :func:`xl_suite.runner.run_stage` instead. Stage functions must accept an empty
    batch (the built-in ones do): a batch emptied by a filter still passes through the later stages.

    >>> st = [Stage("mark", score_filter_batch, params={"threshold": 4.0}, keep="score_passed")]
    >>> apply_stages({"score_mean": [4.5, 2.0], "x": ["a", "b"]}, st, engines={}, templates={})
    {'score_mean': [4.5], 'x': ['a'], 'score_passed': [True]}
    """
    for stage in stages:  # an emptied batch still goes through every stage, so its columns stay the same
        kwargs = dict(stage.params)
        if stage.engine:
            kwargs.update(generator=engines[stage.engine], template=templates[stage.name], sampling=stage.sampling)
        out = stage.function(batch, **kwargs)
        batch = dict(out) if stage.reshape else {**batch, **out}
        if stage.keep:
            idx = [i for i, v in enumerate(batch[stage.keep]) if v is True or v == _OK]
            if len(idx) != _n_rows(batch):
                batch = {k: [v[i] for i in idx] for k, v in batch.items()}
    return batch


_FAKE_ANSWERS = {
    "en": "This is a detailed answer in English that explains every important point of the question.",
    "de": "Das ist eine ausführliche Antwort auf Deutsch, die alle wichtigen Punkte der Frage erklärt.",
    "mt": "Din hija tweġiba dettaljata bil-Malti li tispjega l-punti kollha importanti tal-mistoqsija.",
    "fr": "Voici une réponse détaillée en français qui explique tous les points importants de la question.",
    "pt": "Esta é uma resposta detalhada em português que explica todos os pontos importantes da pergunta.",
    "hu": "Ez egy részletes magyar nyelvű válasz, amely elmagyarázza a kérdés minden fontos pontját.",
    "lt": "Tai išsamus atsakymas lietuvių kalba, kuris paaiškina visus svarbiausius klausimo dalykus.",
    "ga": "Is freagra mionsonraithe i nGaeilge é seo a mhíníonn na pointí tábhachtacha go léir den cheist.",
    "zh": "这是一个详细的中文回答，解释了这个问题的所有重要内容。",
    "hi": "यह हिंदी में एक विस्तृत उत्तर है जो प्रश्न के सभी महत्वपूर्ण बिंदुओं को समझाता है।",
    "fi": "Tämä on yksityiskohtainen suomenkielinen vastaus, joka selittää kysymyksen kaikki tärkeät kohdat.",
    "tr": "Bu, sorunun tüm önemli noktalarını açıklayan ayrıntılı bir Türkçe cevaptır.",
    "sw": "Hili ni jibu la kina kwa Kiswahili linaloeleza mambo yote muhimu ya swali.",
}


class FakeSynthesisResponder:
    """Deterministic replies to the shipped synthesis templates, for :class:`~xl_suite.generation.FakeGenerator`.

    Not a model: it recognises each stage's prompt and returns a canned, well-formed reply (an instruction made of
    the passage's first words, the passage as the answer, JSON scores derived from a hash of the prompt, a fixed
    sentence in the target language numbered per prompt and candidate). It makes the flow testable and
    ``xl-suite synthesize --backend fake`` runnable offline; numbers produced with it mean nothing.

    Args:
        unparseable_every: every k-th English scoring prompt (by hash) gets a reply that is not JSON (0: never).
        low_score_every: every k-th English pair (by hash) gets scores of 2, below the default threshold (0: never).

    >>> from xl_suite.generation import FakeGenerator, SamplingConfig
    >>> r = FakeSynthesisResponder()
    >>> msgs = [{"role": "system", "content": "You always write your answers in Maltese (Malti), whatever..."},
    ...         {"role": "user", "content": "Q"}]
    >>> r(msgs, 0, SamplingConfig()).startswith("Din hija")
    True
    """

    def __init__(self, unparseable_every: int = 0, low_score_every: int = 0):
        self.unparseable_every = unparseable_every
        self.low_score_every = low_score_every

    def __call__(self, messages, index: int, sampling) -> str:
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        user = messages[-1]["content"]
        h = int(hashlib.sha256(user.encode("utf-8")).hexdigest()[:8], 16)
        if "JSON" in system or sampling.json_schema:
            names = re.findall(r"^- (\w+):", user, re.MULTILINE) or ["score"]
            if "bilingual" in system:
                values = [3 + (h >> (3 * k)) % 3 for k in range(len(names))]
            else:
                if self.unparseable_every and h % self.unparseable_every == 0:
                    return "I would rate this response quite highly overall."
                low = self.low_score_every and (h // 7) % self.low_score_every == 0
                values = [2 if low else 4 + (h >> k) % 2 for k in range(len(names))]
            return json.dumps(dict(zip(names, values, strict=True)))
        passage = re.search(r"<passage>\s*(.*?)\s*</passage>", user, re.DOTALL)
        if "user requests" in system and passage:
            words = passage.group(1).split()[:10]
            return "Can you explain this: " + " ".join(words).rstrip(".,;:") + "?"
        if "in English" in system and passage:
            return "Here is a clear answer. " + passage.group(1)
        lang = re.search(r"answers in ([A-Z][\w ]*?) \(", system)
        code = "en"
        if lang:
            try:
                code = get_language(lang.group(1).lower()).code
            except ValueError:
                code = "en"
        return f"{_FAKE_ANSWERS.get(code, _FAKE_ANSWERS['en'])} ({h}-{index})"


def preflight(config: SynthesisConfig, stages: Sequence[Stage] | None = None) -> dict[str, Any]:
    """Check everything that can be checked before an engine starts; return the loaded templates.

    Loads every stage template (a missing file fails, naming it), renders each once with example values (an
    undefined variable fails, naming it), loads the offline language identifier when a ``language_check`` stage
    is present and, when the language filter is on, checks that it can recognise every target language.
    """
    from xl_suite.prompting import load_template

    stages = list(stages) if stages is not None else default_stages(config)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"Stage names must be unique, got {names}.")
    templates = {s.name: load_template(s.template) for s in stages if s.template is not None}
    check_templates(stages, templates, language=config.languages[0])
    if any(s.function is language_check_batch for s in stages):
        from xl_suite.fidelity import get_identifier

        identifier = get_identifier()
        labels = identifier.labels  # loads the identifier now: a missing install fails before any generation
        if config.language_filter:
            for code in config.languages:
                identifier.check_supported(get_language(code))
        elif any(get_language(c).langid_code not in labels for c in config.languages):
            logger.warning("The language identifier cannot recognise some of %s; their check reports "
                           "wrong_language (the filter is off).", list(config.languages))
    return templates


# --------------------------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------------------------


class _Counted:
    """Wraps a generator to count what this run actually generated (prompts, completions, tokens, seconds)."""

    def __init__(self, inner):
        self.inner = inner
        self.backend = getattr(inner, "backend", "?")
        self.model = inner.model
        self.revision = getattr(inner, "revision", None)
        self.prompts = self.completions = self.prompt_tokens = self.completion_tokens = self.calls = 0
        self.seconds = 0.0

    def generate(self, conversations, sampling):
        t0 = time.perf_counter()
        out = self.inner.generate(conversations, sampling)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        self.prompts += len(conversations)
        for cands in out:
            self.completions += len(cands)
            for c in cands:
                self.prompt_tokens += int(getattr(c, "prompt_tokens", 0) or 0)
                self.completion_tokens += int(getattr(c, "completion_tokens", 0) or 0)
        return out

    def fingerprint(self):
        return self.inner.fingerprint()

    def supports_structured_output(self):
        return self.inner.supports_structured_output()

    def close(self):  # the caller owns the engine
        pass


@dataclass
class _StageReport:
    name: str
    rows_in: int = 0
    rows_out: int = 0
    dropped: int = 0
    status: dict = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    chunks_computed: int = 0
    chunks_reused: int = 0

    def to_dict(self, counter: _Counted | None) -> dict:
        total = sum(self.status.values())
        d = {
            "stage": self.name, "rows_in": self.rows_in, "rows_out": self.rows_out, "dropped": self.dropped,
            "kept_rate": (self.rows_out / self.rows_in) if self.rows_in else None,
            "status": dict(sorted(self.status.items())),
            "parse_rate": (self.status.get(_OK, 0) / total) if total else None,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "chunks_computed": self.chunks_computed, "chunks_reused": self.chunks_reused,
            "seconds": round(self.seconds, 3),
        }
        if counter is not None:
            d["generated"] = {"calls": counter.calls, "prompts": counter.prompts, "completions": counter.completions,
                              "prompt_tokens": counter.prompt_tokens, "completion_tokens": counter.completion_tokens,
                              "engine_seconds": round(counter.seconds, 3)}
        return d


def _column(ds, name: str) -> list:
    return ds.data.column(name).to_pylist() if ds._indices is None else list(ds.with_format(None)[name])


def _arrow(ds):
    import pyarrow as pa

    if ds.num_rows == 0:
        return ds.data.table.slice(0, 0) if ds._indices is None else pa.Table.from_batches([], ds.features.arrow_schema)
    table = ds.with_format("arrow")[:]
    return table if isinstance(table, pa.Table) else pa.table(table)


def _normalised(ds):
    """One contiguous Arrow chunk per column.

    ``run_stage`` keys a chunk by the Arrow IPC bytes of its input, which depend on how the table is split into
    record batches: a stage output computed in batches and the same rows read back from Parquet would hash
    differently and the next stage would recompute on every rerun; likewise a Parquet round trip renames list
    items (``list<item>`` -> ``list<element>``). Normalising layout and schema (to the features' Arrow schema)
    makes the key depend on the content only.
    """
    import datasets

    table = _arrow(ds).combine_chunks().cast(ds.features.arrow_schema)
    return datasets.Dataset(table, fingerprint=_new_fingerprint())


def _new_fingerprint() -> str:
    """A fresh fingerprint for in-memory datasets: spares datasets from hashing (pickling) the whole table.

    Nothing is cached by these fingerprints; the maps run by ``run_stage`` get theirs from the stage fingerprint.
    """
    import uuid

    return uuid.uuid4().hex


def _keep(ds, column: str):
    values = _column(ds, column)
    idx = [i for i, v in enumerate(values) if v is True or v == _OK]
    if len(idx) == ds.num_rows:
        return ds
    return _normalised(ds.select(idx))


def _count_status(values: list, into: dict) -> None:
    for v in values:
        if isinstance(v, list):
            _count_status(v, into)
        else:
            into[str(v)] = into.get(str(v), 0) + 1


def _order(table, first: Sequence[str]):
    names = [c for c in first if c in table.column_names]
    return table.select(names + [c for c in table.column_names if c not in names])


def _shape(kind: str, table):
    """Arrange a table in a release shape: ``scored`` (English pair, ``language="en"``) or bestof3/default."""
    import pyarrow as pa

    if kind == "scored":
        if "response_en" in table.column_names:
            idx = table.column_names.index("response_en")
            table = table.rename_columns([("response" if i == idx else c) for i, c in enumerate(table.column_names)])
        if "id" not in table.column_names and "seed_id" in table.column_names:
            table = table.append_column("id", table["seed_id"])
        table = table.append_column("language", pa.array(["en"] * table.num_rows, pa.string()))
    return _order(table, ("id", "instruction", "response", "language"))


class _ShapeWriter:
    """Writes shape files incrementally (Parquet, temporary name, moved into place on close), or keeps tables in
    memory when there is no output folder."""

    def __init__(self, output: str | None, storage_options: dict | None):
        self.output = output
        self.fs = self.root = None
        if output:
            import fsspec

            self.fs, self.root = fsspec.core.url_to_fs(str(output), **(storage_options or {}))
            self.root = self.root.rstrip("/")
            self.fs.makedirs(self.root, exist_ok=True)
        self._open: dict[str, list] = {}
        self._memory: dict[str, list] = {}
        self.schemas: dict[str, Any] = {}
        self.rows: dict[str, int] = {}

    def append(self, filename: str, table) -> None:
        import pyarrow.parquet as pq

        self.rows[filename] = self.rows.get(filename, 0) + table.num_rows
        schema = self.schemas.setdefault(filename, table.schema)
        if table.schema != schema:
            try:
                table = table.select(schema.names).cast(schema)
            except (KeyError, ValueError, TypeError) as e:
                raise InvalidArgumentError(f"Rows for {filename} changed schema between chunks ({e}); a custom stage must "
                                 "return the same columns and types for every batch.") from e
        if table.num_rows == 0:
            return
        if self.fs is None:
            self._memory.setdefault(filename, []).append(table)
            return
        if filename not in self._open:
            import uuid

            final = f"{self.root}/{filename}"
            tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
            handle = self.fs.open(tmp, "wb")
            self._open[filename] = [pq.ParquetWriter(handle, schema), handle, tmp, final]
        self._open[filename][0].write_table(table)

    def close(self, expected: Sequence[str], fallback_schema) -> dict[str, str]:
        """Finish every file; files in ``expected`` without rows are written empty (with a known schema)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        for filename in expected:
            self.schemas.setdefault(filename, fallback_schema(filename))
            self.rows.setdefault(filename, 0)
        paths: dict[str, str] = {}
        for filename, schema in self.schemas.items():
            if self.fs is None:
                tables = self._memory.get(filename) or [pa.Table.from_batches([], schema)]
                self._memory[filename] = tables
                continue
            if filename not in self._open:
                tmp = f"{self.root}/{filename}.tmp-empty"
                with self.fs.open(tmp, "wb") as f:
                    pq.write_table(pa.Table.from_batches([], schema), f)
                self.fs.mv(tmp, f"{self.root}/{filename}")
            else:
                writer, handle, tmp, final = self._open.pop(filename)
                writer.close()
                handle.close()
                self.fs.mv(tmp, final)
            paths[filename] = self._url(filename)
        # partial files of an earlier run that was killed (a SIGKILL leaves its temporary files behind)
        for stale in self.fs.glob(f"{self.root}/*.parquet.tmp-*") if self.fs is not None else []:
            self.fs.rm(stale)
        return paths

    def abort(self) -> None:
        for writer, handle, tmp, _ in self._open.values():
            try:
                writer.close()
                handle.close()
                self.fs.rm(tmp)
            except Exception:  # best effort: never hide the original error
                logger.debug("could not remove %s", tmp, exc_info=True)
        self._open.clear()

    def _url(self, filename: str) -> str:
        return f"{str(self.output).rstrip('/')}/{filename}"

    def write_json(self, filename: str, obj) -> str | None:
        if self.fs is None:
            return None
        text = json.dumps(obj, indent=2, ensure_ascii=False, default=str, allow_nan=False)
        with self.fs.open(f"{self.root}/{filename}", "w", encoding="utf-8") as f:
            f.write(text + "\n")
        return self._url(filename)

    def table(self, filename: str):
        import pyarrow as pa

        return pa.concat_tables(self._memory[filename]) if filename in self._memory else None


@dataclass
class SynthesisResult:
    """What :func:`synthesize` produced.

    Attributes:
        summary: the run summary (also ``summary.json`` in the output folder).
        files: file name -> URL of every file written (``mt.parquet``, ``mt_bestof3.parquet``,
            ``en_scored.parquet``, ``summary.json``); empty without an output folder.
        output: the output folder/URL (``None``: results are kept in memory, see :meth:`dataset`).
    """

    summary: dict
    files: dict[str, str]
    output: str | None = None
    _tables: dict = field(default_factory=dict, repr=False)
    storage_options: dict | None = field(default=None, repr=False)

    def dataset(self, language: str, variant: str = "default"):
        """The rows of one language (``variant`` default/bestof3) or of ``"en"`` for ``scored``, as a Dataset."""
        import datasets
        import pyarrow.parquet as pq

        name = (SNAPSHOT_FILES["scored"] if variant == "scored"
                else SNAPSHOT_FILES[variant].format(code=get_language(language).code))
        if name in self._tables:
            return datasets.Dataset(self._tables[name])
        if name not in self.files:
            raise KeyError(f"No {variant!r} file for {language!r}; written: {sorted(self.files)}.")
        import fsspec

        with fsspec.open(self.files[name], "rb", **(self.storage_options or {})) as f:
            return datasets.Dataset(pq.read_table(f))


def _shape_of(filename: str) -> str:
    if filename == SNAPSHOT_FILES["scored"]:
        return "scored"
    return "bestof3" if filename.endswith("_bestof3.parquet") else "default"


def _fallback_schema(filename: str, known: Mapping[str, Any]):
    """Schema for a file that got no rows: that of another language's file of the same shape, else minimal."""
    import pyarrow as pa

    for name, schema in known.items():
        if _shape_of(name) == _shape_of(filename):
            return schema
    return pa.schema([(c, pa.string()) for c in ("id", "instruction", "response", "language")])


def synthesize(
    seeds,
    generator,
    config: SynthesisConfig | None = None,
    *,
    output: str | None = None,
    work_dir: str | None = None,
    storage_options: dict | None = None,
    scorer=None,
    stages: Sequence[Stage] | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    progress: bool = False,
    seed_source: str | None = None,
) -> SynthesisResult:
    """Run the synthesis pipeline over seed passages.

    Args:
        seeds: a ``datasets.Dataset`` with ``text_column`` (see :func:`xl_suite.seeds.load_seeds`).
        generator: the engine (:class:`xl_suite.generation.Generator`) for generation stages; not closed here.
        config: :class:`SynthesisConfig` (default: all defaults).
        output: folder or fsspec URL for ``<code>.parquet``, ``<code>_bestof3.parquet``, ``en_scored.parquet`` and
            ``summary.json``; ``None`` keeps the results in memory.
        work_dir: folder/URL of the resumable chunk files (default ``<output>/.xl_suite_work``; ``None`` without
            output: nothing is cached).
        storage_options: fsspec options for ``output`` and ``work_dir``.
        scorer: engine of the scoring stages (default: ``generator``).
        stages: replace the stage list (default :func:`default_stages`); see :class:`Stage`.
        text_column: seed column holding the passages.
        id_column: seed column with row ids (default ``id`` when present).
        progress: show a progress bar over the seeds.
        seed_source: recorded in the summary.

    Returns:
        A :class:`SynthesisResult`.

    Raises:
        xl_suite.seeds.SeedError: missing text column, empty seeds.
        xl_suite.prompting.TemplateError: a template that cannot be loaded or uses an undefined variable.
        xl_suite.generation.GenerationError: the engine failed (completed chunks stay cached; rerun to continue).
    """
    from xl_suite.runner import StageStats, run_stage
    from xl_suite.seeds import SeedCounts, check_text_column, iter_seed_chunks

    t_start = time.perf_counter()
    config = config or SynthesisConfig()
    check_text_column(seeds, text_column)
    stages = list(stages) if stages is not None else default_stages(config, generator, scorer)
    engines = {"generator": generator, "scorer": scorer or generator}
    templates = preflight(config, stages)
    counters = {s.name: _Counted(engines[s.engine]) for s in stages if s.engine}
    fingerprints = {s.name: stage_fingerprint(s, templates.get(s.name), engines[s.engine] if s.engine else None)
                    for s in stages}
    if work_dir is None and output is not None:
        work_dir = f"{str(output).rstrip('/')}/.xl_suite_work"
    reports = {s.name: _StageReport(s.name) for s in stages}
    run_stats = {s.name: StageStats(stage=s.name) for s in stages}
    writer = _ShapeWriter(output, storage_options)
    seed_counts = SeedCounts()
    produced = dict.fromkeys(config.languages, 0)
    over_quota = dict.fromkeys(config.languages, 0)
    seen: set[bytes] = set()
    duplicates = 0
    final_in = 0
    processed = 0
    quota = config.num_examples
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = seeds.num_rows if config.seed_limit is None else min(seeds.num_rows, config.seed_limit)
        bar = tqdm(total=total, desc="synthesize", unit="seed")
    stopped_early = False
    try:
        chunks = iter_seed_chunks(seeds, text_column=text_column, chunk_size=config.chunk_size,
                                  max_seeds=config.seed_limit, id_column=id_column, counts=seed_counts)
        for chunk in chunks:
            processed += chunk.num_rows
            ds = chunk
            for stage in stages:
                if ds.num_rows == 0:
                    break
                if bar is not None:
                    bar.set_postfix_str(stage.name)
                report = reports[stage.name]
                t0 = time.perf_counter()
                fn_kwargs = dict(stage.params)
                if stage.engine:
                    fn_kwargs.update(generator=counters[stage.name], template=templates[stage.name],
                                     sampling=stage.sampling)
                before = (run_stats[stage.name].chunks_computed, run_stats[stage.name].chunks_reused)
                out = run_stage(
                    ds, stage.function, stage=stage.name, fingerprint=fingerprints[stage.name], work_dir=work_dir,
                    fn_kwargs=fn_kwargs, batch_size=config.batch_size, chunk_size=config.chunk_size,
                    remove_columns=ds.column_names if stage.reshape else None, storage_options=storage_options,
                    desc=stage.name, stats=run_stats[stage.name],
                )
                out = _normalised(out)
                report.chunks_computed += run_stats[stage.name].chunks_computed - before[0]
                report.chunks_reused += run_stats[stage.name].chunks_reused - before[1]
                report.rows_in += ds.num_rows
                prefix = stage.column_prefix
                if f"{prefix}_status" in out.column_names:
                    _count_status(_column(out, f"{prefix}_status"), report.status)
                for attr in ("prompt_tokens", "completion_tokens"):
                    if f"{prefix}_{attr}" in out.column_names:
                        setattr(report, attr, getattr(report, attr) + sum(_column(out, f"{prefix}_{attr}")))
                if stage.keep:
                    if stage.keep not in out.column_names:
                        raise InvalidArgumentError(f"Stage {stage.name!r} keeps rows by column {stage.keep!r}, which its "
                                         f"function did not return (columns: {out.column_names}).")
                    kept = _keep(out, stage.keep)
                    report.dropped += out.num_rows - kept.num_rows
                    out = kept
                report.rows_out += out.num_rows
                report.seconds += time.perf_counter() - t0
                if stage.snapshot == "scored":
                    writer.append(SNAPSHOT_FILES["scored"], _shape("scored", _arrow(out)))
                elif stage.snapshot == "bestof3":
                    _append_by_language(writer, SNAPSHOT_FILES["bestof3"], _shape("bestof3", _arrow(out)),
                                        config.languages)
                ds = out
            else:
                final_in += ds.num_rows
                table, dups = _final_rows(ds, config, seen, produced, over_quota, quota)
                duplicates += dups
                _append_by_language(writer, SNAPSHOT_FILES["default"], _shape("default", table), config.languages)
            if bar is not None:
                bar.update(chunk.num_rows)
            if quota is not None and all(v >= quota for v in produced.values()):
                stopped_early = True
                break
        known = dict(writer.schemas)
        expected = [SNAPSHOT_FILES["default"].format(code=c) for c in config.languages]
        if any(s.snapshot == "bestof3" for s in stages):
            expected += [SNAPSHOT_FILES["bestof3"].format(code=c) for c in config.languages]
        if any(s.snapshot == "scored" for s in stages):
            expected.append(SNAPSHOT_FILES["scored"])
        files = writer.close(expected, lambda name: _fallback_schema(name, known))
    except BaseException:
        writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    summary = _summary(
        config=config, generator=generator, scorer=scorer, stages=stages, reports=reports, counters=counters,
        templates=templates, fingerprints=fingerprints, seed_counts=seed_counts, seeds_rows=seeds.num_rows,
        produced=produced, over_quota=over_quota, duplicates=duplicates, final_in=final_in, processed=processed,
        stopped_early=stopped_early, rows=writer.rows, seconds=time.perf_counter() - t_start,
        output=output, work_dir=work_dir, seed_source=seed_source, text_column=text_column,
    )
    summary = json.loads(json.dumps(summary, default=str))  # the same object as summary.json (lists, not tuples)
    summary_url = writer.write_json("summary.json", summary)
    if summary_url:
        files["summary.json"] = summary_url
    for warning in summary["warnings"]:
        logger.warning(warning)
    tables = {} if output else {name: writer.table(name) for name in writer.schemas}
    return SynthesisResult(summary=summary, files=files, output=output, _tables=tables,
                           storage_options=storage_options)


def _final_rows(ds, config: SynthesisConfig, seen: set, produced: dict, over_quota: dict, quota: int | None):
    """Duplicate removal (across chunks, via ``seen``) and the per-language quota.

    Returns:
        (kept Arrow rows, number of duplicates removed).
    """
    langs = _column(ds, "language")
    instr = _column(ds, "instruction")
    resp = _column(ds, "response")
    keep, duplicates = [], 0
    for i, (lang, ins, res) in enumerate(zip(langs, instr, resp, strict=True)):
        if config.dedup:
            keys = [hashlib.blake2b(f"{tag}\0{lang}\0{dedup_key(t)}".encode(), digest_size=12).digest()
                    for tag, t in (("i", ins), ("r", res))]
            if any(k in seen for k in keys):
                duplicates += 1
                continue
            seen.update(keys)
        if quota is not None and produced.get(lang, 0) >= quota:
            over_quota[lang] = over_quota.get(lang, 0) + 1
            continue
        produced[lang] = produced.get(lang, 0) + 1
        keep.append(i)
    import pyarrow as pa

    table = _arrow(ds)
    return (table.take(pa.array(keep, pa.int64())) if len(keep) != table.num_rows else table), duplicates


def _append_by_language(writer: _ShapeWriter, pattern: str, table, languages: Sequence[str]) -> None:
    import pyarrow.compute as pc

    for code in languages:
        part = table.filter(pc.equal(table["language"], code)) if table.num_rows else table
        writer.append(pattern.format(code=code), part)


def _summary(*, config, generator, scorer, stages, reports, counters, templates, fingerprints, seed_counts,
             seeds_rows, produced, over_quota, duplicates, final_in, processed, stopped_early, rows, seconds, output,
             work_dir,
             seed_source, text_column) -> dict:
    import xl_suite

    warnings = []
    shortfall = {}
    if config.num_examples is not None:
        for code, n in produced.items():
            if n < config.num_examples:
                shortfall[code] = config.num_examples - n
        if shortfall:
            warnings.append(
                f"--num-examples {config.num_examples}: only {produced} pairs survived from {processed} seeds "
                f"(short by {shortfall}). Use more seeds (--max-seeds), a lower --threshold, or check the stage "
                "table for where rows were dropped."
            )
    for stage in stages:
        r = reports[stage.name]
        bad = {k: v for k, v in r.status.items() if k != _OK}
        if not bad:
            continue
        n, total = sum(bad.values()), sum(r.status.values())
        if stage.engine:
            warnings.append(f"stage {stage.name}: {n} of {total} outputs could not be parsed ({bad}); they are "
                            "counted, kept in the intermediate files where the stage has one, and not used further.")
        else:
            warnings.append(f"stage {stage.name}: {n} of {total} rows failed the check ({bad})"
                            + ("." if r.dropped else "; they were kept (the check does not filter here)."))
    lang_report = reports.get("language_check")
    if lang_report is not None and not config.language_filter:
        warnings.append("The language filter is disabled (--no-language-filter): answers not identified as the "
                        "target language were kept; see language_ok in the output rows.")
    scorer = scorer or generator

    def finite(x):
        return None if isinstance(x, float) and not math.isfinite(x) else x

    return {
        "xl_suite_version": getattr(xl_suite, "__version__", "unknown"),
        "synthesis_version": SYNTHESIS_VERSION,
        "reconstruction": "Stages, prompts, criteria and thresholds are our reconstruction of XL-Instruct "
                          "(arXiv 2503.22973), not the authors' documented method.",
        "generator": {"backend": getattr(generator, "backend", "?"), "model": generator.model,
                      "revision": generator.revision, "fingerprint": generator.fingerprint()},
        "scorer": {"backend": getattr(scorer, "backend", "?"), "model": scorer.model, "revision": scorer.revision,
                   "fingerprint": scorer.fingerprint()},
        "config": {k: finite(v) for k, v in config.to_dict().items()},
        "seeds": {"source": seed_source, "text_column": text_column, "rows_available": seeds_rows,
                  "limit": config.seed_limit, **seed_counts.to_dict(), "processed": processed},
        "stages": [
            {**{k: finite(v) for k, v in reports[s.name].to_dict(counters.get(s.name)).items()},
             "template": templates[s.name].template_version if s.name in templates else None,
             "sampling": s.sampling.to_dict() if s.sampling else None, "fingerprint": fingerprints[s.name]}
            for s in stages
        ],
        "final": {"rows_in": final_in, "duplicates_removed": duplicates, "over_quota": over_quota,
                  "dedup": config.dedup, "stopped_early": stopped_early},
        "languages": {code: {"requested": config.num_examples, "produced": produced[code],
                             "shortfall": shortfall.get(code, 0)} for code in config.languages},
        "files": dict(sorted(rows.items())),
        "generated": {
            "prompts": sum(c.prompts for c in counters.values()),
            "completions": sum(c.completions for c in counters.values()),
            "prompt_tokens": sum(c.prompt_tokens for c in counters.values()),
            "completion_tokens": sum(c.completion_tokens for c in counters.values()),
        },
        "output": str(output) if output else None,
        "work_dir": str(work_dir) if work_dir else None,
        "seconds": round(seconds, 3),
        "warnings": warnings,
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """A plain-text table of a run summary: rows in/out per stage, keep and ok rates, tokens, chunks, time.

    ``ok`` is the share of a stage's outputs whose status is ``ok``: parsed, for the LLM stages; identified as the
    target language, for ``language_check``.

    >>> s = {"stages": [{"stage": "score", "rows_in": 4, "rows_out": 4, "dropped": 0, "kept_rate": 1.0,
    ...      "parse_rate": 0.75, "prompt_tokens": 10, "completion_tokens": 8, "chunks_computed": 1,
    ...      "chunks_reused": 0, "seconds": 0.5}], "languages": {"mt": {"requested": 2, "produced": 1,
    ...      "shortfall": 1}}, "generated": {"prompts": 4, "completion_tokens": 8}, "seconds": 1.0, "warnings": []}
    >>> print(format_summary(s))  # doctest: +NORMALIZE_WHITESPACE
    stage  rows_in  rows_out  kept   ok  prompt_tok  compl_tok  chunks(new/reused)  seconds
    score        4         4  100%  75%          10          8                 1/0     0.50
    language  requested  produced  shortfall
    mt                2         1          1
    generated this run: 4 prompts, 8 completion tokens; total 1.0 s
    """

    def pct(x):
        return "-" if x is None else f"{100 * x:.0f}%"

    header = ["stage", "rows_in", "rows_out", "kept", "ok", "prompt_tok", "compl_tok", "chunks(new/reused)",
              "seconds"]
    rows = [[s["stage"], str(s["rows_in"]), str(s["rows_out"]), pct(s.get("kept_rate")), pct(s.get("parse_rate")),
             str(s["prompt_tokens"]), str(s["completion_tokens"]), f"{s['chunks_computed']}/{s['chunks_reused']}",
             f"{s['seconds']:.2f}"] for s in summary["stages"]]
    lines = _table(header, rows)
    lang_rows = [[code, "-" if v["requested"] is None else str(v["requested"]), str(v["produced"]),
                  str(v["shortfall"])] for code, v in summary["languages"].items()]
    lines += _table(["language", "requested", "produced", "shortfall"], lang_rows)
    gen = summary.get("generated", {})
    lines.append(f"generated this run: {gen.get('prompts', 0)} prompts, {gen.get('completion_tokens', 0)} completion "
                 f"tokens; total {summary.get('seconds', 0):.1f} s")
    lines += [f"warning: {w}" for w in summary.get("warnings", [])]
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in [header, *rows]]
