"""``run_stage`` and its helpers under their original names (thin re-exports of :mod:`xl_suite.run`).

The run layer is split by job: :mod:`xl_suite.run.store` (chunk and piece files, checksums, verified reads,
quarantine), :mod:`xl_suite.run.scheduler` (plan and execute one stage run, :class:`~xl_suite.run.StageRun`) and
:mod:`xl_suite.run.policy` (failed rows, ``check_failure_rate``); see :mod:`xl_suite.run`.
"""

from xl_suite.fingerprint import content_hash
from xl_suite.run.policy import (
    DEFAULT_MAX_ERROR_RATE,
    FAILURE_STATUSES,
    check_error_rate_value,
    check_failure_rate,
    check_stage_failure_rates,
    drop_failed,
    failed_rows,
    failure_counts,
)
from xl_suite.run.scheduler import StageRun, in_flight_batches, run_stage
from xl_suite.run.stats import StageStats
from xl_suite.run.store import ID_COLUMNS, StoredRow, index_stored_rows, read_verified, storage


__all__ = [
    "StageStats",
    "StageRun",
    "run_stage",
    "content_hash",
    "read_verified",
    "failed_rows",
    "in_flight_batches",
    "failure_counts",
    "check_failure_rate",
    "check_stage_failure_rates",
    "drop_failed",
    "check_error_rate_value",
    "index_stored_rows",
    "StoredRow",
    "storage",
    "ID_COLUMNS",
    "FAILURE_STATUSES",
    "DEFAULT_MAX_ERROR_RATE",
]
