"""Reading judge replies: pure functions, no engine, no I/O (every one has runnable examples).

A pairwise verdict is ``"A"``, ``"B"`` or ``"tie"`` (:func:`parse_verdict`, also MT-Bench's ``[[A]]`` and bare
labels, never ``eval``), with a soft preference from the verdict token's log-probabilities where the backend returns
them (:func:`verdict_distribution`, :func:`soft_p_a`); a rubric reply is a dict of 1-5 scores (:func:`parse_rubric`).
Preferences are un-swapped into the model's frame by :func:`to_model_frame`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal

from xl_suite.errors import InvalidArgumentError
from xl_suite.json_repair_step import repair_json_object
from xl_suite.scoring import parse_scores, score_schema
from xl_suite.status import RowStatus


__all__ = [
    "Verdict",
    "ORDERS",
    "VERDICT_SCHEMA",
    "parse_verdict",
    "parse_verdict_with_status",
    "preference_from_verdict",
    "to_model_frame",
    "verdict_distribution",
    "soft_p_a",
    "rubric_schema",
    "parse_rubric",
]

Verdict = Literal["A", "B", "tie"]
#: The two presentation orders: the model's answer shown as A, or as B.
ORDERS: tuple[str, str] = ("model_first", "model_second")

#: JSON schema of the pairwise verdict, enforced where the backend supports structured outputs.
VERDICT_SCHEMA: dict = {
    "type": "object",
    "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}},
    "required": ["winner"],
    "additionalProperties": False,
}


_LABEL_WORDS = {"a": "A", "b": "B", "tie": "tie", "draw": "tie", "equal": "tie", "c": "tie"}
_JSON_VERDICT = re.compile(r'"(?:winner|verdict|preference|better|choice)"\s*:\s*"\s*([^"]{0,40}?)\s*"', re.IGNORECASE)
_BRACKET_VERDICT = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
_BARE_VERDICT = re.compile(
    r"^\W*(?:(?:answer|output|response|assistant|winner|verdict)\s*[:(]?\s*)?\(?([AB]|tie)\)?"
    r"(?:\s+is\s+better)?\W*$",
    re.IGNORECASE,
)


def _label(value: str) -> str | None:
    """Map a verdict value to ``"A"``, ``"B"`` or ``"tie"`` (None when it is not one).

    >>> _label("Answer B"), _label(" tie "), _label("output (a)"), _label("maybe")
    ('B', 'tie', 'A', None)
    """
    v = re.sub(r"^(?:answer|output|response|assistant)\s*", "", value.strip().lower()).strip(" ()[].")
    return _LABEL_WORDS.get(v) if v != "c" else None


def _find_verdict(text: str) -> tuple[str, int] | None:
    """The verdict label and the character offset where it starts, or None."""
    if not isinstance(text, str) or not text.strip():
        return None
    m = _JSON_VERDICT.search(text)
    if m:
        label = _label(m.group(1))
        return (label, m.start(1)) if label else None
    brackets = {"A": "A", "B": "B", "C": "tie", "TIE": "tie"}
    found = {brackets[mm.group(1).upper()] for mm in _BRACKET_VERDICT.finditer(text)}
    if found:
        if len(found) > 1:
            return None  # "[[A]] ... [[B]]": ambiguous
        return found.pop(), _BRACKET_VERDICT.search(text).start(1)
    stripped = text.strip()
    m = _BARE_VERDICT.match(stripped)
    if m:
        label = _LABEL_WORDS.get(m.group(1).lower())
        offset = len(text) - len(text.lstrip())
        return (label, offset + m.start(1)) if label else None
    return None


def parse_verdict(text: str | None) -> Verdict | None:
    """Read a pairwise verdict; None when it cannot (never guesses, never ``eval``).

    Understands the JSON object the judge template asks for (also inside other text or code fences, and with
    ``verdict``/``preference`` as key), MT-Bench's ``[[A]]``/``[[B]]``/``[[C]]`` (C is a tie), and a bare
    ``A``/``B``/``tie`` (``"Answer A"``, ``"(B)"``, ``"A is better"``). Two different bracketed verdicts are
    ambiguous: None.

    Args:
        text: the judge's raw completion.

    Returns:
        ``"A"``, ``"B"``, ``"tie"`` or None.

    >>> parse_verdict('{"winner": "A"}'), parse_verdict('```json\\n{"winner":"tie"}\\n```')
    ('A', 'tie')
    >>> parse_verdict("My final verdict is [[B]]."), parse_verdict("Answer A"), parse_verdict("[[A]] or [[B]]")
    ('B', 'A', None)
    >>> parse_verdict("I like both."), parse_verdict(""), parse_verdict(None)
    (None, None, None)
    """
    return parse_verdict_with_status(text)[0]


_VERDICT_KEYS = ("winner", "verdict", "preference", "better", "choice")


def parse_verdict_with_status(text: str | None) -> tuple[Verdict | None, RowStatus]:
    """:func:`parse_verdict` plus how the reply was read: ``"ok"``, ``"repaired"`` or ``"unparsed"``.

    When the strict reading fails, the JSON repair step (:func:`xl_suite.json_repair_step.repair_json_object`)
    recovers objects that are truncated, single-quoted or have unquoted keys, and the verdict key is read from it.

    >>> parse_verdict_with_status('{"winner": "A"}'), parse_verdict_with_status("{'winner': 'B'}")
    (('A', 'ok'), ('B', 'repaired'))
    >>> parse_verdict_with_status("{'winner': 'tie'"), parse_verdict_with_status('{"winner": "maybe"}')
    (('tie', 'repaired'), (None, 'unparsed'))
    """
    found = _find_verdict(text) if text is not None else None
    if found:
        return found[0], RowStatus.OK  # type: ignore[return-value]
    obj = repair_json_object(text)
    if obj:
        values = [v for k, v in obj.items() if str(k).strip().lower() in _VERDICT_KEYS and isinstance(v, str)]
        label = _label(values[0]) if len(values) == 1 else None
        if label is not None:
            return label, RowStatus.REPAIRED  # type: ignore[return-value]
    return None, RowStatus.UNPARSED


def preference_from_verdict(verdict: str | None) -> float | None:
    """P(answer A is better) from a discrete verdict: A = 1, B = 0, tie = 0.5, None stays None.

    >>> [preference_from_verdict(v) for v in ("A", "B", "tie", None)]
    [1.0, 0.0, 0.5, None]
    """
    return {"A": 1.0, "B": 0.0, "tie": 0.5}.get(verdict) if verdict is not None else None


def to_model_frame(p_a: float | None, order: str) -> float | None:
    """Un-swap: P(answer A better) -> P(model beats reference), given the presentation order.

    >>> to_model_frame(0.8, "model_first"), to_model_frame(0.8, "model_second"), to_model_frame(None, "model_first")
    (0.8, 0.19999999999999996, None)
    """
    if order not in ORDERS:
        raise InvalidArgumentError(f"order={order!r} is not one of {list(ORDERS)}.")
    if p_a is None:
        return None
    return p_a if order == "model_first" else 1.0 - p_a


def _token_label(token: str) -> str | None:
    """Verdict label a single token stands for (``'"A'`` -> A, ``' t'``/``'tie'`` -> tie), else None.

    >>> [_token_label(t) for t in ('"A', " B", '"t', "tie", "x", "")]
    ['A', 'B', 'tie', 'tie', None, None]
    """
    s = token.strip().strip("\"'`[](){}*:.,").strip().lower()
    if s in ("a", "b"):
        return s.upper()
    if s and "tie".startswith(s):
        return "tie"
    return None


def verdict_distribution(
    text: str, tokens: Sequence[str] | None, top_logprobs: Sequence[dict[str, float]] | None
) -> dict[str, float] | None:
    """Probabilities of the verdict labels at the verdict token, renormalised over the labels present.

    The verdict token is the generated token that covers the verdict's first character (tokens are aligned with
    the text when they join to it; otherwise the first token that is the verdict label). Its top alternatives are
    mapped to labels (``A``, ``B``, ``tie``; quotes and spaces ignored) and their probabilities summed. Returns
    None when there is no verdict, no log-probabilities, or the sampled label is not among the alternatives.

    >>> d = verdict_distribution('{"winner": "A"}', ['{"', 'winner', '":', ' "', 'A', '"}'],
    ...                          [{}, {}, {}, {}, {"A": math.log(0.6), "B": math.log(0.3), "x": -1.0}, {}])
    >>> {k: round(v, 3) for k, v in d.items()}
    {'A': 0.667, 'B': 0.333}
    >>> verdict_distribution("A", ["A"], None) is None
    True
    """
    found = _find_verdict(text)
    if found is None or not tokens or not top_logprobs or len(tokens) != len(top_logprobs):
        return None
    label, start = found
    idx = None
    if "".join(tokens) == text:
        pos = 0
        for i, tok in enumerate(tokens):
            if pos + len(tok) > start:
                idx = i
                break
            pos += len(tok)
    if idx is None or _token_label(tokens[idx]) != label:
        idx = next((i for i, tok in enumerate(tokens) if _token_label(tok) == label), None)
    if idx is None:
        return None
    mass: dict[str, float] = {}
    for tok, logprob in (top_logprobs[idx] or {}).items():
        lab = _token_label(tok)
        if lab is not None and logprob is not None and math.isfinite(logprob):
            mass[lab] = mass.get(lab, 0.0) + math.exp(logprob)
    total = sum(mass.values())
    if label not in mass or total <= 0:
        return None
    return {k: v / total for k, v in mass.items()}


def soft_p_a(dist: dict[str, float]) -> float:
    """P(answer A is better) from a verdict distribution: P(A) + P(tie)/2, clipped to [0, 1].

    >>> soft_p_a({"A": 0.6, "B": 0.2, "tie": 0.2})
    0.7
    """
    return min(1.0, max(0.0, dist.get("A", 0.0) + 0.5 * dist.get("tie", 0.0)))


def rubric_schema(dimensions: Sequence[str] | dict[str, str]) -> dict:
    """JSON schema of a rubric reply: :func:`xl_suite.scoring.score_schema` over the dimensions (the criteria).

    >>> rubric_schema(["fluency"])["properties"]["fluency"]
    {'type': 'integer', 'minimum': 1, 'maximum': 5}
    """
    return score_schema(dimensions)


def parse_rubric(text: str | None, dimensions: Sequence[str] | dict[str, str]) -> dict[str, int] | None:
    """Read 1-5 scores for every dimension of a rubric reply: :func:`xl_suite.scoring.parse_scores`.

    >>> parse_rubric("Fluency: 3\\nAccuracy: 2", ["accuracy", "fluency"])
    {'accuracy': 2, 'fluency': 3}
    """
    return parse_scores(text, dimensions)
