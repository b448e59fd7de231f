"""The run layer: how a stage's rows get computed, stored and judged against a failure threshold.

* :mod:`~xl_suite.run.store`: the chunk store (chunk and piece files, checksums, verified reads, quarantine, the index
  keyed by row content);
* :mod:`~xl_suite.run.scheduler`: one stage run, described by a :class:`StageRun`, planned and executed with engine
  calls in flight (:func:`run_stage`);
* :mod:`~xl_suite.run.policy`: which rows failed, and whether a run's share of failures passes its threshold;
* :mod:`~xl_suite.run.stats`: :class:`StageStats`, what a stage run did;
* :mod:`~xl_suite.run.context`: which executor computes the chunks (:mod:`xl_suite.executors` sets it).

The layers above (synthesis, evaluation, commands) use it; it uses the ground modules and the engines only.
"""

from xl_suite.run.context import current_executor, using_executor
from xl_suite.run.policy import (
    DEFAULT_MAX_ERROR_RATE,
    FAILURE_STATUSES,
    check_error_rate_value,
    check_failure_rate,
    check_stage_failure_rates,
    drop_failed,
    failed_rows,
    failure_counts,
    new_status_columns,
)
from xl_suite.run.scheduler import StageRun, execute, in_flight_batches, run_stage
from xl_suite.run.stats import StageStats
from xl_suite.run.store import ChunkStore, StoredRow, index_stored_rows, read_verified, storage


__all__ = [
    "StageRun",
    "StageStats",
    "run_stage",
    "execute",
    "in_flight_batches",
    "ChunkStore",
    "StoredRow",
    "index_stored_rows",
    "read_verified",
    "storage",
    "FAILURE_STATUSES",
    "DEFAULT_MAX_ERROR_RATE",
    "failed_rows",
    "failure_counts",
    "new_status_columns",
    "check_failure_rate",
    "check_stage_failure_rates",
    "drop_failed",
    "check_error_rate_value",
    "current_executor",
    "using_executor",
]
