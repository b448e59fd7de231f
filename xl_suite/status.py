"""Row statuses: the one definition of what a ``*_status`` / ``parse_status`` value may say, and which are failures.

Every stage function writes one of :class:`RowStatus`'s values into its status column; the run layer stores the
failed ones (:data:`FAILED`), counts them and retries them on the next run; the pipelines keep the usable ones
(:data:`USABLE`) as data. A ground module: it imports nothing from xl_suite.

``RowStatus`` is a ``str`` enum (``enum.StrEnum`` behaviour, kept on Python 3.10): a member *is* its value, so it
compares equal to the plain strings read back from Parquet or JSON, and ``str()``/f-strings give the value. Its
``repr`` is the value's too, so messages, logs and summaries read exactly as they did with plain strings.

>>> RowStatus.UNPARSED == "unparsed", f"{RowStatus.OK}", str(RowStatus.TOO_LONG), RowStatus.EMPTY
(True, 'ok', 'too_long', 'empty')
>>> sorted(FAILED)
['empty', 'error', 'too_long', 'unparseable', 'unparsed']
>>> "prompt_truncated" in USABLE, RowStatus("ok") is RowStatus.OK
(True, True)
"""

from __future__ import annotations

import enum


__all__ = [
    "RowStatus",
    "FAILED",
    "USABLE",
    "BACKEND_FAILED",
    "RULE_PREFIX",
    "CONTAMINATED_PREFIX",
    "is_failed",
    "is_usable",
    "is_rule",
    "first_failure",
]


class RowStatus(str, enum.Enum):
    """What became of one row (or candidate) of a stage: the values of its ``*_status``/``parse_status`` column."""

    #: A usable output.
    OK = "ok"
    #: A usable output made from a prompt the engine cut to fit its context (``truncate_prompts``, off by default):
    #: kept as data like ``ok``, never retried, counted apart.
    PROMPT_TRUNCATED = "prompt_truncated"
    #: No text (an empty or whitespace-only completion): a failure, never an answer.
    EMPTY = "empty"
    #: An LLM output that could not be parsed (a verdict, scores): a failure, counted, never used as data.
    UNPARSED = "unparsed"
    #: Legacy spelling of ``unparsed`` (score stages of older runs): read back as a failure, never written.
    UNPARSEABLE = "unparseable"
    #: The request failed after the backend's retries (this request, this time): a failure, retried next run.
    ERROR = "error"
    #: The prompt does not fit the model's context: a failure.
    TOO_LONG = "too_long"
    #: A translation that hit ``max_tokens``: kept, flagged (neither usable as is nor retried).
    TRUNCATED = "truncated"
    #: Parse outcome only (the second value of ``parse_*_with_status``): read after the JSON repair step.
    REPAIRED = "repaired"
    #: A judgment decided by rule, not by the judge (an empty answer loses): not a judge reply, never counted as one.
    RULE_EMPTY_OUTPUT = "rule:empty_output"
    #: Language check: the text is in another language than the target.
    WRONG_LANGUAGE = "wrong_language"
    #: Language check: the identifier could not tell the language (too short, no letters).
    UNDETERMINED = "undetermined"
    #: Language check: the identifier's confidence is below the threshold.
    LOW_CONFIDENCE = "low_confidence"
    #: Language check: no identifier covers the target language.
    NOT_APPLICABLE = "n/a"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __repr__(self) -> str:
        return repr(self.value)


#: Statuses that mark a row as a failure, not a result: stored with the row, counted, and retried on the next run.
FAILED: frozenset[RowStatus] = frozenset(
    {RowStatus.UNPARSED, RowStatus.UNPARSEABLE, RowStatus.EMPTY, RowStatus.ERROR, RowStatus.TOO_LONG}
)
#: Statuses of usable outputs, kept as data: ``ok`` and ``prompt_truncated``.
USABLE: frozenset[RowStatus] = frozenset({RowStatus.OK, RowStatus.PROMPT_TRUNCATED})
#: The per-row failures a backend may put in ``Completion.extra["status"]`` instead of raising for the batch.
BACKEND_FAILED: tuple[RowStatus, ...] = (RowStatus.TOO_LONG, RowStatus.ERROR)
#: Prefix of the statuses of rule-based judgments (``rule:empty_output``): not judge replies.
RULE_PREFIX = "rule:"
#: Prefix of the decontamination stage's statuses for a dropped row: ``contaminated_<column>``.
CONTAMINATED_PREFIX = "contaminated_"


def is_failed(value, failures=FAILED) -> bool:
    """True when ``value`` (a status, or a list of them: any element) is a failure.

    >>> is_failed("empty"), is_failed(["ok", "error"]), is_failed("ok"), is_failed(None)
    (True, True, False, False)
    """
    if isinstance(value, (list, tuple)):
        return any(is_failed(v, failures) for v in value)
    return isinstance(value, str) and value in failures


def first_failure(value, failures=FAILED) -> str | None:
    """The first failing status in ``value`` (a status or nested lists of them), else None.

    >>> first_failure([["ok", "unparsed"], "empty"]), first_failure("ok")
    ('unparsed', None)
    """
    if isinstance(value, (list, tuple)):
        for v in value:
            found = first_failure(v, failures)
            if found is not None:
                return found
        return None
    return str(value) if isinstance(value, str) and value in failures else None


def is_usable(value) -> bool:
    """True for a kept row: a ``True`` flag or a usable status (:data:`USABLE`).

    >>> [is_usable(v) for v in (True, "ok", "prompt_truncated", "empty", False, None)]
    [True, True, True, False, False, False]
    """
    return value is True or (isinstance(value, str) and value in USABLE)


def is_rule(value) -> bool:
    """True for the status of a judgment decided by rule (``rule:...``), not by the judge.

    >>> is_rule("rule:empty_output"), is_rule("ok"), is_rule(None)
    (True, False, False)
    """
    return isinstance(value, str) and value.startswith(RULE_PREFIX)
