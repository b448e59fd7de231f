"""The JSON repair step in front of the strict reply parsers (scores, rubric, pairwise verdicts).

LLM judges often write JSON that :func:`json.loads` rejects but whose meaning is plain: a truncated object, single
quotes, a trailing comma, a ``//`` comment, unquoted keys. :func:`repair_json_object` hands such text to
``json_repair`` (a maintained library) and returns the object; the callers then apply their usual strict checks to
it (every criterion present, scores in the scale, a known verdict label) and mark the reply as repaired, so repaired
outputs are counted apart from cleanly parsed ones. Nothing is guessed: a reply with no object in it stays unparsed.
"""

from __future__ import annotations

import re


__all__ = ["repair_json_object"]

_FENCE_RE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)


def repair_json_object(text: str | None) -> dict | None:
    """The JSON object in ``text`` after repair, or None when there is none.

    Looks at fenced blocks (also unclosed ones) and at the text from the first ``{``.

    >>> repair_json_object('{"winner": "A"')
    {'winner': 'A'}
    >>> repair_json_object("Verdict: {'winner': 'B',}")
    {'winner': 'B'}
    >>> repair_json_object('{fluency: 4, // fine\\n "accuracy": 5}')
    {'fluency': 4, 'accuracy': 5}
    >>> repair_json_object("no object here") is None
    True
    """
    import json_repair

    if not isinstance(text, str) or "{" not in text:
        return None
    candidates = [m.group(1) for m in _FENCE_RE.finditer(text)]
    candidates.append(text[text.find("{") :])
    for cand in candidates:
        start = cand.find("{")
        if start == -1:
            continue
        obj = json_repair.loads(cand[start:])
        if isinstance(obj, dict) and obj:
            return obj
    return None
