"""Named 1-5 scores: the one implementation used by synthesis scoring and the rubric judge.

A score reply names an integer score per criterion (a "dimension" in the judge's vocabulary: the same thing). It
is read by :func:`parse_scores` under one rule everywhere: a JSON object (alone, inside prose or in a fenced block)
or ``name: N`` pairs; names match case-insensitively; integral values (``4``, ``4.0``, ``"4"``) inside the scale
count; anything else (a missing criterion, ``4.5``, ``7``) makes the whole reply unparsed (``None``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

from xl_suite.errors import InvalidArgumentError
from xl_suite.json_repair_step import repair_json_object
from xl_suite.status import RowStatus


__all__ = [
    "SCORE_SCALE",
    "score_schema",
    "parse_scores",
    "parse_scores_with_status",
    "aggregate_scores",
    "select_best",
    "criteria_list",
]

#: Integer scale of every score.
SCORE_SCALE = (1, 5)
_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_NUMBER_RE = re.compile(r"[+-]?\d+(?:\.\d+)?")


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


def _json_candidates(text: str) -> list[str]:
    out = [m.group(1) for m in _FENCE_RE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        out.append(text[start : end + 1])
    return out


def _score_value(value, scale: tuple[int, int]) -> int | None:
    """An integral score within ``scale`` (``4``, ``4.0``, ``"4"``), else ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if not _NUMBER_RE.fullmatch(value):
            return None
        value = float(value)
    if not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        return None
    value = int(value)
    return value if scale[0] <= value <= scale[1] else None


def parse_scores(
    text: str | None, criteria: Sequence[str] | Mapping[str, str], *, scale: tuple[int, int] = SCORE_SCALE
) -> dict[str, int] | None:
    """Parse named integer scores; ``None`` unless every criterion has an integer score within ``scale``.

    Reads a JSON object first (alone, inside prose, or in a fenced ```json block), then the same object after a
    JSON repair step (:func:`xl_suite.json_repair_step.repair_json_object`: truncated, single quotes, trailing
    comma, comments, unquoted keys), then ``name: N`` pairs in prose. Names match case-insensitively; integral floats (``4.0``) and numeric strings (``"4"``) count; extra keys
    are ignored. Never uses ``eval``.

    Args:
        text: raw completion.
        criteria: the required names (a list, or a dict of name -> description).
        scale: inclusive (low, high).

    Returns:
        ``{criterion: int}`` in the order of ``criteria``, or ``None``.

    >>> parse_scores('Sure! {"fluency": 4, "relevance": "5"}', ["relevance", "fluency"])
    {'relevance': 5, 'fluency': 4}
    >>> parse_scores("Fluency: 3\\nRelevance: 2", ["relevance", "fluency"])
    {'relevance': 2, 'fluency': 3}
    >>> parse_scores('{"fluency": 6, "relevance": 5}', ["relevance", "fluency"]) is None
    True
    >>> parse_scores('{"fluency": 4}', ["relevance", "fluency"]) is None
    True
    >>> parse_scores("I'd give it a 4.", ["fluency"]) is None
    True
    >>> parse_scores("{'fluency': 4, relevance: 5,}", ["relevance", "fluency"])
    {'relevance': 5, 'fluency': 4}
    """
    return parse_scores_with_status(text, criteria, scale=scale)[0]


def _scores_from_object(obj, names: list[str], scale: tuple[int, int]) -> dict[str, int] | None:
    if not isinstance(obj, dict):
        return None
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    out: dict[str, int] = {}
    for name in names:
        value = _score_value(lowered.get(name.lower()), scale)
        if value is None:
            return None
        out[name] = value
    return out


def parse_scores_with_status(
    text: str | None, criteria: Sequence[str] | Mapping[str, str], *, scale: tuple[int, int] = SCORE_SCALE
) -> tuple[dict[str, int] | None, RowStatus]:
    """:func:`parse_scores` plus how the reply was read: ``"ok"``, ``"repaired"`` (only after JSON repair) or
    ``"unparsed"``.

    >>> parse_scores_with_status('{"fluency": 4', ["fluency"])
    ({'fluency': 4}, 'repaired')
    >>> parse_scores_with_status('{"fluency": 4}', ["fluency"])
    ({'fluency': 4}, 'ok')
    """
    if not isinstance(text, str) or not text.strip():
        return None, RowStatus.UNPARSED
    names = list(criteria)
    for cand in _json_candidates(text):
        try:
            obj = json.loads(cand)
        except (json.JSONDecodeError, ValueError):
            continue
        scores = _scores_from_object(obj, names, scale)
        if scores is not None:
            return scores, RowStatus.OK
    scores = _scores_from_object(repair_json_object(text), names, scale)
    if scores is not None:
        return scores, RowStatus.REPAIRED
    out = {}
    for name in names:  # "name: N" pairs in prose
        m = re.search(
            r'["\']?\b' + re.escape(name) + r'\b["\']?\s*[:=]\s*["\']?([+-]?\d+(?:\.\d+)?)', text, re.IGNORECASE
        )
        value = _score_value(m.group(1) if m else None, scale)
        if value is None:
            return None, RowStatus.UNPARSED
        out[name] = value
    return out, RowStatus.OK


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


def criteria_list(criteria: Mapping[str, str]) -> list[dict[str, str]]:
    """``{name: description}`` as the ``[{"name", "description"}]`` list the templates iterate over.

    >>> criteria_list({"fluency": "reads well"})
    [{'name': 'fluency', 'description': 'reads well'}]
    """
    return [{"name": k, "description": v} for k, v in criteria.items()]
