"""Chunked, resumable ``Dataset.map(batched=True)`` over an engine.

One mechanism for every LLM stage (synthesis, answer generation, references, translation, judging):

* the input is cut into chunks of ``chunk_size`` rows; each chunk is mapped with ``Dataset.map(batched=True)``
  and written to ``work_dir/<stage>/<key>.parquet`` as soon as it finishes (temporary name, then a move);
* a chunk's key hashes the stage fingerprint (model, revision, template hash, sampling settings, seed...) and
  the chunk's input content, so a rerun of a finished stage makes zero generations and a change to any of those
  recomputes;
* a process killed mid-run (even by SIGKILL) loses only the engine calls it had in flight. One call at a time
  (:func:`in_flight_batches` is 1), a chunk is one ``map``: the kill loses the chunk being computed. With several
  calls in flight (an engine that takes concurrent calls), each finished call (``batch_size`` rows) of a chunk not
  yet complete is written at once as a *piece file* next to the chunk file
  (``<chunk>.parquet.piece-<first row>-<rows>``, with a hash of the retried rows and their attempts for a retry), so
  the kill loses the calls in flight (``in_flight_batches x batch_size`` rows), plus any finished call whose piece
  was not yet written (they are written one at a time, as they come back); the rerun reads the pieces back, checked
  like chunks (a damaged one is moved aside and computed again), computes only the missing ones, and deletes the
  piece files once the chunk file is written;
* every stored chunk is verified when it is read back: it must parse, carry the checksum and row count written
  with it, and (for 1:1 stages) have the input chunk's row count and ids; (for n->m stages) ids drawn from the
  input's. A damaged chunk (truncated, zero-byte, bit-flipped, short) is moved aside with a warning naming it and
  recomputed (:func:`read_verified`, also usable by other caches);
* rows whose new ``*_status`` column holds a failure (``unparsed``, ``empty``, ``error``, ``too_long``...) are
  stored with that status, counted in :class:`StageStats`, and recomputed on the next run (``retry_failed``), up
  to ``max_attempts`` attempts per row (recorded in the chunk file's metadata);
* a local ``work_dir`` is locked for the duration of the stage (:class:`xl_suite.safety.DirLock`): a second process
  gets an error naming the first, instead of both writing the same chunks (the commands also lock their output folder
  and work dir for the whole run, :func:`xl_suite.safety.lock_folders`);
* :func:`check_failure_rate` turns a run's failed rows into a warning line or, above ``--max-error-rate``, a
  :class:`~xl_suite.errors.FailureRateError` (CLI exit 3) once everything is written.
* ``new_fingerprint`` is always set, so datasets never hashes the engine (an unhashable LLM would make it fall
  back to a random fingerprint and recompute everything).

``work_dir`` is any fsspec URL (local path, ``memory://``, ``s3://`` with ``storage_options``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from xl_suite.errors import InvalidArgumentError
from xl_suite.fingerprint import content_hash, stable_hash
from xl_suite.safety import DirLock, quarantine, unique_temp_path
from xl_suite.status import FAILED, first_failure, is_failed


logger = logging.getLogger(__name__)

__all__ = [
    "StageStats",
    "run_stage",
    "content_hash",
    "read_verified",
    "failed_rows",
    "in_flight_batches",
    "failure_counts",
    "check_failure_rate",
    "check_error_rate_value",
    "FAILURE_STATUSES",
    "DEFAULT_MAX_ERROR_RATE",
]

#: Status values that mark a row as a failure, not a result: stored, counted, and retried on the next run
#: (:data:`xl_suite.status.FAILED`, under its older name).
FAILURE_STATUSES = FAILED
#: Columns that identify a row, checked when a chunk is read back (the first one present is used).
ID_COLUMNS = ("id", "cache_key", "seed_id", "item_index")
#: Default share of failed rows above which a command exits non-zero (``--max-error-rate``).
DEFAULT_MAX_ERROR_RATE = 0.05
_META_ROWS = b"xl_suite.rows"
_META_SHA = b"xl_suite.sha256"
_META_ATTEMPTS = b"xl_suite.attempts"


@dataclass
class StageStats:
    """What a stage did: rows in/out, chunks computed vs reused, time."""

    stage: str
    rows_in: int = 0
    rows_out: int = 0
    chunks_total: int = 0
    chunks_computed: int = 0
    chunks_reused: int = 0
    chunks_damaged: int = 0
    rows_failed: int = 0
    rows_retried: int = 0
    rows_computed: int = 0
    seconds: float = 0.0
    failed_by_status: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    #: Keyed runs (``run_stage(key_column=...)``): rows read from the store, and the keys not read from it (computed,
    #: or read back from pieces of a killed run). Not part of :meth:`to_dict`.
    rows_reused: int = 0
    keys_computed: set = field(default_factory=set, repr=False)

    def to_dict(self) -> dict:
        """Plain dict for summaries."""
        return {
            k: getattr(self, k)
            for k in (
                "stage",
                "rows_in",
                "rows_out",
                "chunks_total",
                "chunks_computed",
                "chunks_reused",
                "chunks_damaged",
                "rows_failed",
                "rows_retried",
                "rows_computed",
                "seconds",
                "failed_by_status",
            )
        } | self.extra


def storage(work_dir: str, storage_options: dict | None = None):
    """``(filesystem, root path)`` of a work dir given as any fsspec URL."""
    import fsspec

    return fsspec.core.url_to_fs(str(work_dir), **(storage_options or {}))


def _table_sha(table) -> str:
    """SHA-256 of a table's data (schema without metadata + rows), as written to the chunk's metadata."""
    import pyarrow as pa

    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _id_column(*tables) -> str | None:
    for name in ID_COLUMNS:
        if all(name in t.column_names for t in tables):
            return name
    return None


def read_verified(
    fs,
    path: str,
    *,
    required: Sequence[str] = (),
    expected_rows: int | None = None,
    expected_ids: list | None = None,
    allowed_ids: Collection | None = None,
    id_column: str | None = None,
    what: str = "Chunk file",
):
    """Read a Parquet file written by xl-suite and check it; move it aside and return None when it is damaged.

    The one mechanism for every on-disk cache (stage chunks, judge annotations). Checks, in order: the file
    parses; the row count and SHA-256 recorded in its metadata match (files written before checksums existed
    have none and skip this check); the ``required`` columns are there; the row count is ``expected_rows``; the
    ``id_column`` values are ``expected_ids`` in order (1:1 stages) or all in ``allowed_ids`` (n->m stages).

    Args:
        fs: fsspec filesystem of ``path``.
        path: the file.
        required: columns the file must have.
        expected_rows: row count it must have.
        expected_ids: ids it must have, in order.
        allowed_ids: ids it may have.
        id_column: column holding the ids.
        what: how to call the file in the warning.

    Returns:
        The ``pyarrow.Table`` (its xl-suite metadata kept), or None after a warning that names the file and where
        it was moved (``<path>.corrupt``); the caller recomputes its rows.
    """
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        meta = table.schema.metadata or {}
        if _META_ROWS in meta and int(meta[_META_ROWS]) != table.num_rows:
            raise ValueError(f"{table.num_rows} rows, but {int(meta[_META_ROWS])} were written")
        if _META_SHA in meta and _table_sha(table) != meta[_META_SHA].decode():
            raise ValueError("checksum mismatch (the data changed after it was written)")
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise ValueError(f"missing columns {missing}")
        if expected_rows is not None and table.num_rows != expected_rows:
            raise ValueError(f"{table.num_rows} rows where the input chunk has {expected_rows}")
        if id_column is not None and (expected_ids is not None or allowed_ids is not None):
            if id_column not in table.column_names:
                raise ValueError(f"no {id_column!r} column")
            ids = table.column(id_column).to_pylist()
            if expected_ids is not None and ids != list(expected_ids):
                raise ValueError(f"its {id_column!r} values are not the input chunk's")
            if allowed_ids is not None and not set(ids) <= set(allowed_ids):
                raise ValueError(f"its {id_column!r} values are not drawn from the input chunk")
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError/... on truncated or garbled files
        quarantine(fs, path, f"{type(e).__name__}: {e}", what=what)
        return None
    return table


def _write_chunk(fs, path, table, attempts: list[int] | None = None, *, compliant_nested: bool = True) -> None:
    """Write ``table`` with its row count, checksum and per-row attempts in the metadata; atomic via a unique temp.

    ``compliant_nested=False`` keeps the list fields' names (``list<item>``) instead of Parquet's ``list<element>``:
    piece files are written so, so that a stored piece reads back with the schema of a computed one and a chunk put
    together from both is the same file as one computed at once.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    # The checksum is taken of the table as Parquet gives it back (the in-memory table may be a slice whose IPC
    # bytes differ from the decoded file's), so a later read of an intact file reproduces it exactly.
    sink = pa.BufferOutputStream()
    pq.write_table(table.replace_schema_metadata(None), sink, use_compliant_nested_type=compliant_nested)
    decoded = pq.read_table(pa.BufferReader(sink.getvalue()))
    meta = _own_metadata(table)
    meta.update({_META_ROWS: str(table.num_rows).encode(), _META_SHA: _table_sha(decoded).encode()})
    if attempts is not None:
        meta[_META_ATTEMPTS] = json.dumps(attempts).encode()
    table = table.replace_schema_metadata(meta)
    tmp = unique_temp_path(path)
    try:
        with fs.open(tmp, "wb") as f:
            pq.write_table(table, f, use_compliant_nested_type=compliant_nested)
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise


def _own_metadata(table) -> dict:
    """The table's schema metadata (datasets' features) without xl-suite's checksum keys."""
    return {k: v for k, v in (table.schema.metadata or {}).items() if not k.startswith(b"xl_suite.")}


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
    from xl_suite.errors import FailureRateError

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


def _attempts_of(table) -> list[int]:
    meta = table.schema.metadata or {}
    if _META_ATTEMPTS in meta:
        try:
            values = json.loads(meta[_META_ATTEMPTS])
            if isinstance(values, list) and len(values) == table.num_rows:
                return [int(v) for v in values]
        except (ValueError, TypeError):
            pass
    return [1] * table.num_rows


def _to_table(ds):
    return ds.data.table if not ds._indices else ds.flatten_indices().data.table


def _concat(tables: list):
    """Tables of one stage's rows (stored ones from files of several runs, computed ones) as one: columns a file
    lacks (added since it was written) are null, list fields unified; the datasets features of a table that has
    every column are kept."""
    import pyarrow as pa

    combined = pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="permissive")
    meta = next((t.schema.metadata for t in tables if t.column_names == combined.column_names), None)
    return combined.combine_chunks().replace_schema_metadata(meta)


def _replace_rows(table, indices: list[int], new):
    """``table`` with rows ``indices`` replaced by the rows of ``new`` (same order), schemas unified."""
    import pyarrow as pa

    meta = _own_metadata(table)
    table = table.replace_schema_metadata(None)
    new = new.replace_schema_metadata(None)
    combined = pa.concat_tables([table, new], promote_options="permissive")
    order = list(range(table.num_rows))
    for k, i in enumerate(indices):
        order[i] = table.num_rows + k
    return combined.take(order).replace_schema_metadata(meta)


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def run_stage(
    dataset,
    function: Callable[..., dict],
    *,
    stage: str,
    fingerprint: str,
    work_dir: str | None,
    fn_kwargs: dict | None = None,
    batch_size: int = 256,
    chunk_size: int = 1024,
    remove_columns: list[str] | None = None,
    storage_options: dict | None = None,
    desc: str | None = None,
    stats: StageStats | None = None,
    retry_failed: bool = True,
    max_attempts: int = 3,
    failure_statuses: Collection[str] = FAILURE_STATUSES,
    lock: bool = True,
    concurrency: int | None = None,
    first_chunk_index: int = 0,
    key_column: str | None = None,
    required_columns: Sequence[str] = (),
):
    """Map ``function`` over ``dataset`` in resumable chunks; return the concatenated result.

    Args:
        dataset: input ``datasets.Dataset``.
        function: pure batched function ``dict[str, list] -> dict[str, list]`` (may change the row count when
            ``remove_columns`` drops the input columns).
        stage: stage name (folder name under ``work_dir``).
        fingerprint: stable hash of everything that changes the output (model, revision, template, sampling, seed).
        work_dir: folder/URL for chunk files; None computes in memory (no resume, no reuse).
        fn_kwargs: keyword arguments (the engine goes here).
        batch_size: rows per call of ``function`` (one engine call per batch: make it large).
        chunk_size: rows per resumable chunk.
        remove_columns: columns to drop (``"all"`` semantics: pass ``dataset.column_names``).
        storage_options: fsspec options for ``work_dir``.
        desc: progress-bar label.
        stats: optional :class:`StageStats` to fill.
        retry_failed: when a stored chunk of a 1:1 stage has rows whose new ``*_status`` column holds one of
            ``failure_statuses``, recompute those rows (only those) and store the chunk again. Useful when the
            backend is not deterministic (HTTP APIs, transient errors); a seeded local engine repeats itself.
        max_attempts: attempts per row, first one included (recorded in the chunk file), >= 1.
        failure_statuses: status values that are failures.
        lock: hold an exclusive lock on a local ``work_dir`` while the stage runs (re-entrant in one process).
        concurrency: engine calls (batches) kept in flight; ``None`` chooses (:func:`in_flight_batches`). With more
            than one, batches of the next chunk start while the current chunk's slowest rows finish, so the engine
            never drains at a batch or chunk boundary; each chunk is still written as soon as its last batch is done,
            and (with a ``work_dir``) each batch of a chunk not yet complete as soon as it is done, as a piece file
            that a rerun reuses: a kill loses at most the calls in flight (``concurrency x batch_size`` rows, plus a
            finished call not yet written), not whole chunks. With one, a kill loses the chunk being computed.
        first_chunk_index: number of the first chunk in the cache file names (an executor computing one chunk of a
            larger run passes its place there).
        key_column: a column whose value identifies each row's whole request (unique in ``dataset``, e.g. a hash of
            the judge and the texts judged). Then the store is keyed by row content, not by chunk: every stored row of
            the stage (any chunk file in its folder, whatever run wrote it) whose key is asked for is reused, and only
            the other rows (plus failed ones, up to ``max_attempts``) are computed, in chunks of their own. A changed
            or added item costs only its own rows. 1:1 stages only.
        required_columns: columns a stored chunk file must have to be reused in a keyed run (else it is moved aside
            and its rows computed again).

    Inside ``with xl_suite.executors.RayExecutor(...)``, the chunks still to compute go to Ray Data actors, which
    write them into ``work_dir`` (the same files); this call then reads them back as cached.

    Raises:
        InvalidArgumentError: a bad size or attempt count.
        LockError: another process holds the lock on ``work_dir``.
    """
    if (
        isinstance(chunk_size, bool)
        or isinstance(batch_size, bool)
        or not isinstance(chunk_size, int)
        or not isinstance(batch_size, int)
        or chunk_size < 1
        or batch_size < 1
    ):
        raise InvalidArgumentError(
            f"chunk_size and batch_size must be integers >= 1, got {chunk_size!r}, {batch_size!r}."
        )
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise InvalidArgumentError(f"max_attempts must be an integer >= 1, got {max_attempts!r}.")
    if not stage or "/" in stage:
        raise InvalidArgumentError(f"stage must be a non-empty name without '/', got {stage!r}.")
    if key_column is not None and key_column not in dataset.column_names:
        raise InvalidArgumentError(
            f"key_column={key_column!r} is not a column of the input; it has {dataset.column_names}."
        )
    stats = stats or StageStats(stage=stage)
    if concurrency is not None:
        in_flight_batches(fn_kwargs, chunk_size, batch_size, concurrency)  # checks it now
    window = functools.partial(in_flight_batches, fn_kwargs, chunk_size, batch_size, concurrency)

    def run(fs, root, extra, rows, stats, prior_attempts=None):
        if prior_attempts is not None:
            extra = {**extra, "prior_attempts": prior_attempts}
        return _run_chunks(
            rows,
            function,
            stage,
            fingerprint,
            fs,
            root,
            fn_kwargs,
            batch_size,
            chunk_size,
            remove_columns,
            desc,
            stats,
            retry_failed,
            max_attempts,
            failure_statuses,
            window,
            extra,
        )

    if work_dir is None:
        if key_column is not None:
            stats.keys_computed |= set(dataset.unique(key_column))
        return run(None, None, {"first_chunk_index": first_chunk_index}, dataset, stats)
    fs, root = storage(work_dir, storage_options)
    extra = {
        "first_chunk_index": first_chunk_index,
        "work_dir": work_dir,
        "storage_options": storage_options,
        "run_kwargs": {
            "batch_size": batch_size,
            "chunk_size": chunk_size,
            "remove_columns": remove_columns,
            "storage_options": storage_options,
            "retry_failed": retry_failed,
            "max_attempts": max_attempts,
            "failure_statuses": failure_statuses,
        },
    }
    with DirLock(root, purpose=f"stage {stage!r}") if lock and _is_local(fs) else contextlib.nullcontext():
        if key_column is None:
            return run(fs, root, extra, dataset, stats)
        return _run_keyed(
            dataset,
            functools.partial(run, fs, root, extra),
            fs=fs,
            folder=f"{root.rstrip('/')}/{stage}",
            stage=stage,
            key_column=key_column,
            required=required_columns,
            stats=stats,
            retry_failed=retry_failed,
            max_attempts=max_attempts,
            failures=failure_statuses,
        )


@dataclass
class StoredRow:
    """One row of a stage's store found by its key: the file's table and row, and what its attempts were."""

    table: object  # pyarrow.Table (xl-suite metadata dropped)
    row: int
    failed: bool
    attempts: int = 1  # attempts spent on this key: the most recorded with a failed copy, or the failed copies


def index_stored_rows(
    fs,
    folder: str,
    key_column: str,
    *,
    input_columns: Collection[str] = (),
    required: Sequence[str] = (),
    failures: Collection[str] = FAILURE_STATUSES,
    what: str = "Chunk file",
) -> tuple[dict, list[str]]:
    """Index every chunk file of a stage folder by ``key_column``: the run layer's store keyed by row content.

    Each file is read with :func:`read_verified` (a damaged one, or one missing ``required`` columns, is moved aside
    and left out). A row is failed when one of its status columns (``*_status`` not in ``input_columns``) holds a
    failure. Per key, a usable row wins over failed ones, and the first usable one (files in name order) over later
    ones; a key's attempts are the largest attempt count recorded with a failed copy, or the number of failed copies
    if larger (older caches stored each retry in a file of its own).

    Returns:
        (key -> :class:`StoredRow`, the paths moved aside).
    """
    index: dict[str, StoredRow] = {}
    failed_copies: dict[str, int] = {}
    damaged: list[str] = []
    if not fs.exists(folder):
        return index, damaged
    for path in sorted(fs.glob(f"{folder}/chunk-*.parquet")):
        table = read_verified(fs, path, required=(key_column, *required), what=what)
        if table is None:
            damaged.append(path)
            continue
        attempts = _attempts_of(table)
        table = table.replace_schema_metadata(_own_metadata(table))
        status_cols = [c for c in table.column_names if c.endswith("_status") and c not in input_columns]
        bad = set(failed_rows(table, status_cols, failures)) if status_cols else set()
        for i, key in enumerate(table.column(key_column).to_pylist()):
            found = index.get(key)
            if i in bad:
                failed_copies[key] = failed_copies.get(key, 0) + 1
                if found is None:
                    index[key] = StoredRow(table, i, True, attempts[i])
                elif found.failed:
                    found.attempts = max(found.attempts, attempts[i])
            elif found is None or found.failed:
                index[key] = StoredRow(table, i, False, attempts[i])
    for key, n in failed_copies.items():
        if index[key].failed:
            index[key].attempts = max(index[key].attempts, n)
    return index, damaged


def _run_keyed(dataset, run, *, fs, folder, stage, key_column, required, stats, retry_failed, max_attempts, failures):
    """A keyed stage run: reuse every stored row whose key is asked for, compute the others (see ``key_column``)."""
    import datasets

    from xl_suite.tables import column_values

    t0 = time.perf_counter()
    keys = column_values(dataset, key_column)
    if not keys:
        return run(dataset, stats)
    if len(set(keys)) != len(keys):
        dupes = sorted({k for k in keys if keys.count(k) > 1})[:3]
        raise InvalidArgumentError(
            f"Stage {stage!r}: key_column {key_column!r} must be unique in the input (one row per request); "
            f"repeated: {dupes}. Drop the duplicates before the stage and copy the results back."
        )
    index, damaged = index_stored_rows(
        fs,
        folder,
        key_column,
        input_columns=dataset.column_names,
        required=required,
        failures=failures,
        what=f"Stage {stage!r} chunk",
    )
    stats.chunks_damaged += len(damaged)
    reuse, todo, retried = [], [], 0
    for i, key in enumerate(keys):
        found = index.get(key)
        if found is None:
            todo.append(i)
        elif found.failed and retry_failed and found.attempts < max_attempts:
            todo.append(i)
            retried += 1
        else:
            reuse.append(i)
    if todo:
        logger.info(
            "stage %s: %d of %d rows stored by earlier runs; computing %d (%d failed ones again)",
            stage,
            len(reuse),
            len(keys),
            len(todo),
            retried,
        )
    parts, order = [], [0] * len(keys)
    by_table: dict[int, tuple[object, list[int], list[int]]] = {}
    for i in reuse:
        found = index[keys[i]]
        entry = by_table.setdefault(id(found.table), (found.table, [], []))
        entry[1].append(found.row)
        entry[2].append(i)
    done = 0
    for table, rows, positions in by_table.values():
        parts.append(table.take(rows))
        for k, i in enumerate(positions):
            order[i] = done + k
        done += len(rows)
    sub = StageStats(stage=stage)
    if todo:
        prior = [index[keys[i]].attempts if keys[i] in index else 0 for i in todo]
        computed = run(dataset if len(todo) == len(keys) else dataset.select(todo), sub, prior)
        parts.append(_to_table(computed))
        for k, i in enumerate(todo):
            order[i] = done + k
        stats.keys_computed |= {keys[i] for i in todo}
    for name in ("chunks_total", "chunks_computed", "chunks_reused", "chunks_damaged", "rows_computed"):
        setattr(stats, name, getattr(stats, name) + getattr(sub, name))
    stats.rows_retried += retried
    stats.rows_reused += len(reuse)
    stats.rows_in += len(keys)
    table = _concat(parts).take(order) if len(parts) > 1 or order != list(range(len(order))) else parts[0]
    result = datasets.Dataset(table)
    stats.rows_out += result.num_rows
    status_cols = [c for c in table.column_names if c.endswith("_status") and c not in dataset.column_names]
    if status_cols:
        bad = failed_rows(table, status_cols, failures)
        stats.rows_failed += len(bad)
        if bad:
            for status, count in failure_counts(table.take(bad), status_cols, failures).items():
                stats.failed_by_status[status] = stats.failed_by_status.get(status, 0) + count
    stats.seconds += time.perf_counter() - t0
    return result


@dataclass
class _Chunk:
    """One chunk of a stage run: its input, cache file and, once known, its stored or computed table."""

    index: int
    rows: object  # datasets.Dataset
    key: str
    path: str | None
    in_table: object
    table: object = None
    todo: list[int] = field(default_factory=list)  # rows of a stored table to recompute (failures)
    attempts: list[int] = field(default_factory=list)
    status_cols: list[str] | None = None
    pieces: list = field(default_factory=list)  # (first row, _Piece) still to compute
    done: dict = field(default_factory=dict)  # piece number -> computed (or stored) Arrow table
    piece_files: set | None = None  # None: pieces are not stored; else the piece files to delete with the chunk
    reused_rows: int = 0  # input rows of the pieces read back from piece files
    prior_attempts: list[int] = field(default_factory=list)  # keyed runs: attempts stored rows already had


@dataclass(frozen=True)
class _Piece:
    """Rows ``start`` to ``stop`` of what a chunk computes (one engine call), selected only when it is computed: on
    the worker thread, so a large stage's first calls do not wait for every piece of every chunk to be cut out."""

    source: object  # datasets.Dataset
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        return self.stop - self.start

    def rows(self):
        if self.start == 0 and self.stop == self.source.num_rows:
            return self.source
        return self.source.select(range(self.start, self.stop))


def in_flight_batches(fn_kwargs: dict | None, chunk_size: int, batch_size: int, concurrency: int | None) -> int:
    """How many engine calls :func:`run_stage` keeps in flight.

    ``concurrency`` when given; otherwise, when an engine in ``fn_kwargs`` takes concurrent calls
    (:func:`xl_suite.engines.base.concurrent_calls`: vLLM's request stream, the HTTP backend), enough calls to hold
    a chunk and the engine's preferred number of requests in flight (``in_flight_rows``: twice vLLM's
    ``max_num_seqs``, twice the HTTP concurrency), at least 2; else 1 (one call at a time, chunk by chunk). With a
    work dir, a kill loses at most the calls in flight: with more than one, each finished call is written at once
    (as a piece file until its chunk is complete), so this many times ``batch_size`` rows (plus a finished call
    whose piece was not yet written); with one, the chunk being computed.

    >>> in_flight_batches({}, 1024, 256, None), in_flight_batches({}, 1024, 256, 3)
    (1, 3)
    """
    from xl_suite.engines.base import concurrent_calls

    if concurrency is not None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be an integer >= 1 or None, got {concurrency!r}.")
        return concurrency
    engines = [v for v in (fn_kwargs or {}).values() if concurrent_calls(v)]
    if engines:
        rows = max([chunk_size] + [int(getattr(e, "in_flight_rows", 0) or 0) for e in engines])
        return max(2, -(-rows // batch_size))
    return 1


def _run_chunks(
    dataset,
    function,
    stage,
    fingerprint,
    fs,
    root,
    fn_kwargs,
    batch_size,
    chunk_size,
    remove_columns,
    desc,
    stats,
    retry_failed,
    max_attempts,
    failure_statuses,
    window,
    extra,
):
    import datasets

    from xl_suite.executors import current_executor

    stats.rows_in += dataset.num_rows
    t0 = time.perf_counter()
    folder = None
    if fs is not None:
        folder = f"{root.rstrip('/')}/{stage}"
        fs.makedirs(folder, exist_ok=True)
    n = dataset.num_rows
    starts = list(range(0, n, chunk_size)) or [0]
    one_to_one = not remove_columns or not set(dataset.column_names) <= set(remove_columns)

    def compute(rows, key, label):
        mapped = rows.map(
            function,
            batched=True,
            batch_size=batch_size,
            fn_kwargs=fn_kwargs or {},
            remove_columns=remove_columns,
            new_fingerprint=stable_hash("map", key, label),
            load_from_cache_file=False,
            keep_in_memory=True,
            desc=desc or f"{stage} [{label}]",
        )
        return _to_table(mapped)

    # 1. What is stored and sound, what must be (re)computed.
    chunks: list[_Chunk] = []
    for i, start in enumerate(starts):
        rows = dataset if start == 0 and n <= chunk_size else dataset.select(range(start, min(start + chunk_size, n)))
        key = stable_hash(stage, fingerprint, content_hash(rows), batch_size)
        number = i + extra["first_chunk_index"]
        path = f"{folder}/chunk-{number:05d}-{key}.parquet" if folder else None
        c = _Chunk(number, rows, key, path, _to_table(rows))
        if extra.get("prior_attempts"):
            c.prior_attempts = extra["prior_attempts"][start : start + rows.num_rows]
        stats.chunks_total += 1
        if c.path and fs.exists(c.path):
            c.table = _read_chunk(fs, c, stage, one_to_one)
            if c.table is None:
                stats.chunks_damaged += 1
        if c.table is not None:
            stats.chunks_reused += 1
            c.attempts = _attempts_of(c.table)
            c.status_cols = _new_status_columns(c.table, c.in_table)
            bad = failed_rows(c.table, c.status_cols, failure_statuses) if c.status_cols else []
            c.todo = [j for j in bad if c.attempts[j] < max_attempts] if retry_failed and one_to_one else []
            if c.todo:
                logger.info(
                    "stage %s chunk %d: retrying %d failed rows (attempt %d of at most %d)",
                    stage,
                    i,
                    len(c.todo),
                    max(c.attempts[j] for j in c.todo) + 1,
                    max_attempts,
                )
            c.table = c.table.replace_schema_metadata(_own_metadata(c.table)) if not c.todo else c.table
        chunks.append(c)

    # 2. Compute the pieces, `window` engine calls in flight; store each chunk as soon as its last piece is done,
    # and (calls in flight, work dir) each piece of a chunk not yet complete as soon as it is done: a kill then loses
    # only the calls in flight, and the rerun reads the stored pieces back.
    executor = current_executor() if fs is not None else None
    if executor is not None and any(c.table is None or c.todo for c in chunks):
        _compute_elsewhere(executor, chunks, function, stage, fingerprint, fs, fn_kwargs, extra, one_to_one, stats)
    todo = [(c, c.rows if c.table is None else c.rows.select(c.todo)) for c in chunks if c.table is None or c.todo]
    window = window() if todo else 1  # asked only when there is work: a lazy engine learns its size by starting
    stored_pieces = None  # piece file name -> path, listed once when pieces are stored
    for c, rows in todo:
        # One piece per engine call when calls overlap; the whole chunk (one map) when they do not.
        step = batch_size if window > 1 else max(rows.num_rows, 1)
        c.pieces = [(j, _Piece(rows, j, min(j + step, rows.num_rows))) for j in range(0, max(rows.num_rows, 1), step)]
        if c.path:
            if stored_pieces is None:
                stored_pieces = _list_pieces(fs, folder)
            if window > 1 and len(c.pieces) > 1:
                _reuse_pieces(fs, c, stored_pieces, stage, one_to_one)
                if len(c.done) == len(c.pieces):
                    _finish_chunk(fs, c, stats)
            else:  # one call for the chunk: pieces an earlier, overlapped run left are deleted with the chunk file
                c.piece_files = _pieces_of(c, stored_pieces) or None
    tasks = [(c, k, piece) for c in chunks for k, piece in enumerate(c.pieces) if k not in c.done]
    label_total = len(starts)
    for (c, k, _piece), table in _execute(
        tasks,
        lambda t: compute(
            t[2][1].rows(),
            t[0].key,
            f"{t[0].index + 1}/{label_total}"
            + (" retry" if t[0].table is not None else "")
            + (f" #{t[1]}" if t[1] else ""),
        ),
        window,
        desc=desc or stage,
    ):
        c.done[k] = table
        if len(c.done) == len(c.pieces):
            _finish_chunk(fs, c, stats)
        elif window > 1 and c.piece_files is not None:
            path = _piece_path(c, *c.pieces[k])
            _write_chunk(fs, path, table, compliant_nested=False)
            c.piece_files.add(path)

    # 3. Assemble in input order.
    parts = []
    for c in chunks:
        if c.status_cols is None:
            c.status_cols = _new_status_columns(c.table, c.in_table)
        if c.status_cols:
            bad = failed_rows(c.table, c.status_cols, failure_statuses)
            stats.rows_failed += len(bad)
            if bad:
                for status, count in failure_counts(c.table.take(bad), c.status_cols, failure_statuses).items():
                    stats.failed_by_status[status] = stats.failed_by_status.get(status, 0) + count
        parts.append(datasets.Dataset(c.table))
    result = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    stats.rows_out += result.num_rows
    stats.seconds += time.perf_counter() - t0
    logger.info(
        "stage %s: %d -> %d rows (%d chunks computed, %d reused, %d damaged; %d failed rows, %d retried)",
        stage,
        stats.rows_in,
        stats.rows_out,
        stats.chunks_computed,
        stats.chunks_reused,
        stats.chunks_damaged,
        stats.rows_failed,
        stats.rows_retried,
    )
    return result


def _compute_elsewhere(executor, chunks, function, stage, fingerprint, fs, fn_kwargs, extra, one_to_one, stats):
    """Have ``executor`` compute the chunks still missing (or holding failed rows) into the work dir; read them."""
    from xl_suite.errors import GenerationError

    missing = [c for c in chunks if c.table is None or c.todo]
    executor.compute(
        [(c.index, c.rows) for c in missing],
        function,
        stage=stage,
        fingerprint=fingerprint,
        work_dir=extra["work_dir"],
        fn_kwargs=fn_kwargs,
        run_kwargs=extra["run_kwargs"],
    )
    for c in missing:
        retried = bool(c.todo)
        c.table = _read_chunk(fs, c, stage, one_to_one)
        if c.table is None:
            raise GenerationError(
                f"Stage {stage!r}: the executor did not store chunk {c.index} ({c.path}); rerun to compute it."
            )
        c.attempts = _attempts_of(c.table)
        c.table = c.table.replace_schema_metadata(_own_metadata(c.table))
        c.todo, c.status_cols = [], None
        if not retried:
            stats.chunks_computed += 1


def _read_chunk(fs, c: _Chunk, stage: str, one_to_one: bool):
    if one_to_one:
        id_col = _id_column(c.in_table)
        return read_verified(
            fs,
            c.path,
            expected_rows=c.rows.num_rows,
            expected_ids=c.in_table.column(id_col).to_pylist() if id_col else None,
            id_column=id_col,
            what=f"Stage {stage!r} chunk",
        )
    out_id = _id_column(c.in_table)
    return read_verified(
        fs,
        c.path,
        id_column=out_id,
        what=f"Stage {stage!r} chunk",
        allowed_ids=set(c.in_table.column(out_id).to_pylist()) if out_id else None,
    )


def _piece_path(c: _Chunk, first: int, rows) -> str:
    """The piece file of rows ``first`` to ``first + len(rows)`` of what ``c`` computes, next to its chunk file.

    The name holds the chunk's key (its stage fingerprint, batch size and input content), the piece's first row and
    row count and, for a retry of a stored chunk's failed rows, a hash of the rows retried and their attempts: a piece
    of another input, chunking or retry never has the current piece's name. It does not end in ``.parquet``, so
    readers of whole stage folders (the judge's annotation index) never take a piece for a chunk.
    """
    name = f"{c.path}.piece-{first:06d}-{rows.num_rows}"
    if c.table is not None:
        name += "-retry-" + stable_hash("retry", c.todo, [c.attempts[j] for j in c.todo])
    return name


def _list_pieces(fs, folder: str) -> dict[str, str]:
    """Piece files in a stage folder, name -> path (quarantined ones, ``*.corrupt``, left out)."""
    found = {}
    for path in fs.glob(f"{folder}/chunk-*.piece-*"):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if ".corrupt" not in name:
            found[name] = path
    return found


def _pieces_of(c: _Chunk, stored: dict[str, str]) -> set[str]:
    """The stored piece files of chunk ``c`` (current and stale ones)."""
    folder, chunk_name = c.path.rsplit("/", 1)
    return {f"{folder}/{name}" for name in stored if name.startswith(f"{chunk_name}.piece-")}


def _reuse_pieces(fs, c: _Chunk, stored: dict[str, str], stage: str, one_to_one: bool) -> None:
    """Fill ``c.done`` with the pieces of ``c`` stored by an earlier run (each checked: a damaged one is moved aside and
    computed again); note every piece file of the chunk, stale ones too, to delete once the chunk is written."""
    c.piece_files = _pieces_of(c, stored)
    id_col = _id_column(c.in_table)
    ids = c.in_table.column(id_col).to_pylist() if id_col else None
    rows = list(range(c.rows.num_rows)) if c.table is None else c.todo
    for k, (first, piece) in enumerate(c.pieces):
        path = _piece_path(c, first, piece)
        if path not in c.piece_files:
            continue
        piece_ids = [ids[i] for i in rows[first : first + piece.num_rows]] if ids is not None else None
        check = (
            {"expected_rows": piece.num_rows, "expected_ids": piece_ids}
            if one_to_one
            else {"allowed_ids": set(piece_ids) if piece_ids is not None else None}
        )
        table = read_verified(fs, path, id_column=id_col, what=f"Stage {stage!r} piece", **check)
        if table is None:  # moved aside (or left in place on a read-only store): computed again below
            c.piece_files.discard(path)
            continue
        c.done[k] = table.replace_schema_metadata(_own_metadata(table))
        c.reused_rows += piece.num_rows
    if c.done:
        logger.info(
            "stage %s chunk %d: %d of its %d pieces (%d rows) were stored by an earlier run and are reused",
            stage,
            c.index,
            len(c.done),
            len(c.pieces),
            c.reused_rows,
        )


def _finish_chunk(fs, c: _Chunk, stats: StageStats) -> None:
    """Store a chunk whose pieces are all done, then delete its piece files."""
    _store_chunk(fs, c, stats)
    for path in sorted(c.piece_files or ()):
        with contextlib.suppress(FileNotFoundError):
            fs.rm(path)
    c.pieces, c.done, c.piece_files = [], {}, None


def _store_chunk(fs, c: _Chunk, stats: StageStats) -> None:
    """Put a chunk's computed pieces together and write its file (a fresh chunk, or a stored one with retries)."""
    import pyarrow as pa

    pieces = [c.done[k] for k in range(len(c.pieces))]
    computed = (
        pieces[0]
        if len(pieces) == 1
        else pa.concat_tables(
            [t.replace_schema_metadata(None) for t in pieces], promote_options="permissive"
        ).replace_schema_metadata(pieces[0].schema.metadata)
    )
    if c.table is None:
        c.table = computed
        stats.rows_computed += c.rows.num_rows - c.reused_rows
        if c.path:
            first = c.prior_attempts if len(c.prior_attempts) == c.table.num_rows else [0] * c.table.num_rows
            _write_chunk(fs, c.path, c.table, [p + 1 for p in first])
        stats.chunks_computed += 1
        return
    table = _replace_rows(c.table, c.todo, computed)
    for j in c.todo:
        c.attempts[j] += 1
    stats.rows_retried += len(c.todo)
    stats.rows_computed += len(c.todo) - c.reused_rows
    _write_chunk(fs, c.path, table, c.attempts)
    c.table = table.replace_schema_metadata(_own_metadata(table))
    c.status_cols = _new_status_columns(c.table, c.in_table)
    c.todo = []


def _execute(tasks: list, compute: Callable, window: int, *, desc: str):
    """Yield ``(task, compute(task))``: in order on this thread when ``window`` is 1; otherwise ``window`` daemon
    threads keep that many calls in flight and results come in completion order. The first error is raised here
    (threads still running are left to finish or to fail when the engine closes; they are daemons, so they never
    hold up the process's exit, e.g. after Ctrl-C)."""
    if window <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield task, compute(task)
        return
    import datasets

    pending: queue.SimpleQueue = queue.SimpleQueue()
    for task in tasks:
        pending.put(task)
    results: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            try:
                task = pending.get_nowait()
            except queue.Empty:
                return
            try:
                results.put((task, compute(task), None))
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                results.put((task, None, e))

    # Per-piece maps would print one bar per engine call: show one bar for the stage instead.
    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc=f"{desc} (calls)", disable=not bars_were_on, leave=False)
    threads = [
        threading.Thread(target=worker, name=f"xl-suite-{desc}-{k}", daemon=True)
        for k in range(min(window, len(tasks)))
    ]
    try:
        for t in threads:
            t.start()
        for _ in range(len(tasks)):
            task, value, error = results.get()
            if error is not None:
                raise error
            bar.update(1)
            yield task, value
    finally:
        stop.set()
        bar.close()
        if bars_were_on:
            datasets.enable_progress_bars()


def _new_status_columns(table, in_table) -> list[str]:
    """Status columns this stage produced (``*_status``/``parse_status``), not carried over from its input."""
    return [c for c in table.column_names if c.endswith("_status") and c not in in_table.column_names]
