"""The failure policy: which rows failed, and whether a run's share of failed rows passes its threshold.

Rows whose status column holds a failure (:data:`xl_suite.status.FAILED`) are stored, counted and retried by the
scheduler; :func:`check_stage_failure_rates` judges each stage of a run on its own (:func:`check_failure_rate`) and
turns its failed rows into a warning line or, above ``--max-error-rate``, a :class:`~xl_suite.errors.FailureRateError`
(CLI exit 3) once everything is written. Per stage, because a share over all stages' rows hides a stage that lost a
fifth of its rows behind the stages that lost none. Failed rows stay in the store for the retry and are counted in
the summary; they never reach an output as data (:func:`drop_failed`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

from xl_suite.errors import FailureRateError, InvalidArgumentError
from xl_suite.status import FAILED, first_failure, is_failed


__all__ = [
    "FAILURE_STATUSES",
    "DEFAULT_MAX_ERROR_RATE",
    "failed_rows",
    "failure_counts",
    "new_status_columns",
    "check_failure_rate",
    "check_stage_failure_rates",
    "check_error_rate_value",
    "drop_failed",
]

#: Status values that mark a row as a failure, not a result: stored, counted, and retried on the next run
#: (:data:`xl_suite.status.FAILED`, under its older name).
FAILURE_STATUSES = FAILED
#: Default share of failed rows above which a command exits non-zero (``--max-error-rate``).
DEFAULT_MAX_ERROR_RATE = 0.05


def new_status_columns(table, input_columns: Collection[str]) -> list[str]:
    """Status columns a stage produced (``*_status``, ``parse_status``), not carried over from its input.

    >>> import pyarrow as pa
    >>> new_status_columns(pa.table({"a_status": [1], "parse_status": [1], "x": [1]}), ["a_status"])
    ['parse_status']
    """
    return [c for c in table.column_names if c.endswith("_status") and c not in input_columns]


def failed_rows(table, status_columns: Sequence[str], failures: Collection[str] = FAILURE_STATUSES) -> list[int]:
    """Indices of the rows whose status (in any of ``status_columns``; lists: any element) is a failure.

    >>> import pyarrow as pa
    >>> failed_rows(pa.table({"a_status": ["ok", "empty", "ok"], "b_status": [["ok"], ["ok"], ["error", "ok"]]}),
    ...             ["a_status", "b_status"])
    [1, 2]
    """
    bad: set[int] = set()
    for name in status_columns:
        for i, value in enumerate(table.column(name).to_pylist()):
            if is_failed(value, failures):
                bad.add(i)
    return sorted(bad)


def failure_counts(table, status_columns: Sequence[str], failures: Collection[str] = FAILURE_STATUSES) -> dict:
    """Failed rows by status: each failed row counted once, under its first failing status.

    >>> import pyarrow as pa
    >>> failure_counts(pa.table({"s": ["ok", "empty", "unparsed", "empty"], "t": [["error"], ["ok"], ["ok"], ["ok"]]}),
    ...                ["s", "t"])
    {'error': 1, 'empty': 2, 'unparsed': 1}
    """
    counts: dict[str, int] = {}
    if not status_columns or not table.num_rows:
        return counts
    columns = [table.column(name).to_pylist() for name in status_columns]
    for values in zip(*columns, strict=True):
        status = first_failure(values, failures)
        if status is not None:
            counts[status] = counts.get(status, 0) + 1
    return counts


def check_failure_rate(
    by_status: dict[str, int],
    total: int,
    *,
    max_error_rate: float,
    what: str = "rows",
    flag: str = "--max-error-rate",
    retry: str = "rerunning the same command retries them (up to 3 attempts per row)",
) -> str | None:
    """Judge a run's failed rows against its threshold: None (none failed), a warning line, or an error.

    Call it after everything is written: the error only changes the exit code, never what was stored.

    Args:
        by_status: failed rows by status (``{"empty": 3, "unparsed": 1}``).
        total: rows of the run.
        max_error_rate: the largest share of failed rows that still passes, in [0, 1].
        what: what the rows are (``"answers"``, ``"judgments"``).
        flag: how the user changes the threshold.
        retry: what happens to the failed rows on a rerun.

    Returns:
        None when no row failed, else a one-line warning (the share is within the threshold).

    Raises:
        FailureRateError: the share of failed rows is above ``max_error_rate``.

    >>> check_failure_rate({}, 10, max_error_rate=0.05) is None
    True
    >>> print(check_failure_rate({"empty": 1}, 40, max_error_rate=0.05, what="answers"))
    1 of 40 answers failed (2.5%: empty 1), within --max-error-rate 0.05; rerunning the same command retries them (up to 3 attempts per row).
    >>> check_failure_rate({"empty": 3, "error": 1}, 40, max_error_rate=0.05, what="answers")
    Traceback (most recent call last):
    ...
    xl_suite.errors.FailureRateError: 4 of 40 answers failed (10.0%: empty 3, error 1), above --max-error-rate 0.05. Everything finished is written and the failed rows are stored with their status: rerunning the same command retries them (up to 3 attempts per row); to accept this share, pass --max-error-rate 0.1 or higher.
    """
    failed = sum(by_status.values())
    if not failed:
        return None
    share = failed / total if total else 1.0
    detail = ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))
    head = f"{failed} of {total} {what} failed ({100 * share:.1f}%: {detail})"
    if share <= max_error_rate:
        return f"{head}, within {flag} {max_error_rate:g}; {retry}."
    need = math.ceil(round(share * 100, 6)) / 100
    raise FailureRateError(
        f"{head}, above {flag} {max_error_rate:g}. Everything finished is written and the failed rows are stored "
        f"with their status: {retry}; to accept this share, pass {flag} {need:g} or higher."
    )


def check_stage_failure_rates(
    stages: Mapping[str, tuple[Mapping[str, int], int]],
    *,
    max_error_rate: float,
    what: str = "rows",
    flag: str = "--max-error-rate",
    retry: str = "rerunning the same command retries them (up to 3 attempts per row)",
) -> str | None:
    """Judge each stage's failed rows against the threshold on its own: None (none failed), a warning, or an error.

    The share is taken per stage (per engine stage of a synthesis, per config of ``generate``, per language of
    ``translate``, per judge and kind of judgment of ``evaluate``), never over all stages' rows together: a stage
    that lost 21% of its rows fails the run whatever the other stages did. Call it after everything is written.

    Args:
        stages: stage name -> (failed rows by status, rows of the stage); stages without rows are skipped.
        max_error_rate: the largest share of failed rows of one stage that still passes, in [0, 1].
        what: what the rows are (``"answers"``).
        flag: how the user changes the threshold.
        retry: what happens to the failed rows on a rerun.

    Returns:
        None when no row failed, else one warning line naming the stages with failures (all within the threshold).

    Raises:
        FailureRateError: at least one stage's share is above ``max_error_rate`` (the message names those stages).

    >>> check_stage_failure_rates({"generate": ({}, 100), "score": ({}, 80)}, max_error_rate=0.05) is None
    True
    >>> print(check_stage_failure_rates({"generate": ({"error": 1}, 100), "score": ({}, 99)}, max_error_rate=0.05))
    generate: 1 of 100 rows failed (1.0%: error 1), within --max-error-rate 0.05 per stage; rerunning the same command retries them (up to 3 attempts per row).
    >>> check_stage_failure_rates(
    ...     {"generate": ({}, 100), "backtranslate": ({"error": 21}, 100), "score": ({}, 79), "refine": ({}, 79)},
    ...     max_error_rate=0.05, what="LLM outputs")
    Traceback (most recent call last):
    ...
    xl_suite.errors.FailureRateError: backtranslate: 21 of 100 LLM outputs failed (21.0%: error 21), above --max-error-rate 0.05 (checked per stage). Everything finished is written; the failed rows are stored with their status, not written to the outputs: rerunning the same command retries them (up to 3 attempts per row); to accept this share, pass --max-error-rate 0.21 or higher.
    """
    heads, above, worst = [], [], 0.0
    for name, (by_status, total) in stages.items():
        failed = sum(by_status.values())
        if not failed:
            continue
        share = failed / total if total else 1.0
        detail = ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))
        head = f"{name}: {failed} of {total} {what} failed ({100 * share:.1f}%: {detail})"
        heads.append(head)
        if share > max_error_rate:
            above.append(head)
            worst = max(worst, share)
    if not heads:
        return None
    if not above:
        return f"{'; '.join(heads)}, within {flag} {max_error_rate:g} per stage; {retry}."
    need = math.ceil(round(worst * 100, 6)) / 100
    raise FailureRateError(
        f"{'; '.join(above)}, above {flag} {max_error_rate:g} (checked per stage). Everything finished is written; "
        f"the failed rows are stored with their status, not written to the outputs: {retry}; to accept this share, "
        f"pass {flag} {need:g} or higher."
    )


def drop_failed(dataset, status_columns: Sequence[str], failures: Collection[str] = FAILURE_STATUSES):
    """``dataset`` without its failed rows (a failure in any of ``status_columns`` that it has), for an output.

    The failed rows stay in the store, where the next run retries them; an output (a file, an export, a push) holds
    only rows that are data. Returns ``(kept, failed by status)``.

    >>> import datasets
    >>> ds = datasets.Dataset.from_dict({"output": ["Ja", "", "Nein"], "output_status": ["ok", "empty", "ok"]})
    >>> kept, failed = drop_failed(ds, ["output_status"])
    >>> list(kept["output"]), failed
    (['Ja', 'Nein'], {'empty': 1})
    """
    columns = [c for c in status_columns if c in dataset.column_names]
    if not columns or not dataset.num_rows:
        return dataset, {}
    values = [list(dataset[c]) for c in columns]
    keep, counts = [], {}
    for i, row in enumerate(zip(*values, strict=True)):
        status = first_failure(row, failures)
        if status is None:
            keep.append(i)
        else:
            counts[status] = counts.get(status, 0) + 1
    if not counts:
        return dataset, {}
    return dataset.select(keep), counts


def check_error_rate_value(value, flag: str = "--max-error-rate") -> float:
    """``value`` as a share in [0, 1], or an InvalidArgumentError naming ``flag``.

    >>> check_error_rate_value(0.1)
    0.1
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InvalidArgumentError(
            f"{flag} must be a share between 0 and 1 (0.05 = 5% of rows may fail), got {value!r}."
        )
    return float(value)
