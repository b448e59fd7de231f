"""The scheduler: plan and execute one stage run over the chunk store, with engine calls kept in flight.

One mechanism for every LLM stage (synthesis, answer generation, references, translation, judging). A stage run is
described by one :class:`StageRun` and executed by :func:`execute` (or :func:`run_stage`, its keyword front end):

* **plan**: the input is cut into chunks of ``chunk_size`` rows; a chunk's key hashes the stage fingerprint (model,
  revision, template hash, sampling settings, seed...), the batch size and the chunk's input content, so a rerun of a
  finished stage makes zero engine calls and a change to any of those recomputes. Stored chunks are read back verified
  (:mod:`xl_suite.run.store`); their failed rows are retried (``retry_failed``) up to ``max_attempts`` per row;
* **execute**: what is missing is cut into pieces, one per engine call (``batch_size`` rows; one row per call for an
  engine whose every request stands alone, the HTTP backend), and computed with :func:`in_flight_batches` calls in
  flight, so the engine never drains at a batch or chunk boundary. Each chunk is written as soon as its last piece is
  done; with several calls in flight, each finished piece of a chunk not yet complete is written at once as a piece
  file, so a kill (even SIGKILL) loses only the calls in flight, and the rerun reads the pieces back;
* **assemble**: the chunks in input order, with the failed rows counted by status in :class:`StageStats`.

With ``key_column`` the store is keyed by row content instead (:func:`execute` with a keyed :class:`StageRun`):
every stored row of the stage whose key is asked for is reused, whatever run and chunking wrote it.

Inside ``with xl_suite.executors.RayExecutor(...)`` the chunks still to compute go to Ray Data actors, which write them
into the same store; this process then reads them back as stored ones.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from xl_suite.errors import GenerationError, InvalidArgumentError
from xl_suite.fingerprint import content_hash, stable_hash
from xl_suite.run.context import current_executor, retry_exhausted
from xl_suite.run.policy import FAILURE_STATUSES, failed_rows, failure_counts, new_status_columns
from xl_suite.run.stats import StageStats
from xl_suite.run.store import ChunkStore, attempts_of, concat_tables, id_column, own_metadata, replace_rows


logger = logging.getLogger(__name__)

__all__ = ["StageRun", "run_stage", "execute", "in_flight_batches", "apply_batched"]


@dataclass(frozen=True)
class StageRun:
    """One stage run, described: everything :func:`run_stage` takes besides the input rows and the statistics.

    Args:
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
        retry_failed: when a stored chunk of a 1:1 stage has rows whose new ``*_status`` column holds one of
            ``failure_statuses``, recompute those rows (only those) and store the chunk again.
        max_attempts: attempts per row, first one included (recorded in the chunk file), >= 1.
        failure_statuses: status values that are failures.
        lock: hold an exclusive lock on a local ``work_dir`` while the stage runs (re-entrant in one process).
        concurrency: engine calls kept in flight; ``None`` chooses (:func:`in_flight_batches`).
        first_chunk_index: number of the first chunk in the cache file names (an executor computing one chunk of a
            larger run passes its place there).
        key_column: a column whose value identifies each row's whole request (unique in the input); the store is then
            keyed by row content (see the module docstring). 1:1 stages only.
        required_columns: columns a stored chunk file must have to be reused in a keyed run.
    """

    function: Callable[..., dict]
    stage: str
    fingerprint: str
    work_dir: str | None = None
    fn_kwargs: dict = field(default_factory=dict)
    batch_size: int = 256
    chunk_size: int = 1024
    remove_columns: list[str] | None = None
    storage_options: dict | None = None
    desc: str | None = None
    retry_failed: bool = True
    max_attempts: int = 3
    failure_statuses: Collection[str] = FAILURE_STATUSES
    lock: bool = True
    concurrency: int | None = None
    first_chunk_index: int = 0
    key_column: str | None = None
    required_columns: Sequence[str] = ()

    def __post_init__(self):
        """Check the sizes, the attempt count and the stage name."""
        sizes = (self.chunk_size, self.batch_size)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes):
            raise InvalidArgumentError(
                f"chunk_size and batch_size must be integers >= 1, got {self.chunk_size!r}, {self.batch_size!r}."
            )
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidArgumentError(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}.")
        if not self.stage or "/" in self.stage:
            raise InvalidArgumentError(f"stage must be a non-empty name without '/', got {self.stage!r}.")
        if self.concurrency is not None:
            in_flight_batches(self.fn_kwargs, self.chunk_size, self.batch_size, self.concurrency)  # checks it now
        object.__setattr__(self, "fn_kwargs", dict(self.fn_kwargs or {}))

    def window(self) -> int:
        """Engine calls to keep in flight (asked only when there is work: a lazy engine learns its size by starting)."""
        return in_flight_batches(self.fn_kwargs, self.chunk_size, self.batch_size, self.concurrency)

    def rows_per_call(self) -> int:
        """Rows per engine call when calls overlap: ``batch_size``, or 1 for an engine whose every request stands alone
        (its finished requests are then stored one by one: a kill loses only the requests in flight)."""
        engines = [v for v in self.fn_kwargs.values() if getattr(v, "independent_requests", False)]
        return 1 if engines else self.batch_size

    def run_kwargs(self) -> dict:
        """The settings an executor needs to run this stage's chunks elsewhere (keyed runs send plain chunks)."""
        return {
            "batch_size": self.batch_size,
            "chunk_size": self.chunk_size,
            "remove_columns": self.remove_columns,
            "storage_options": self.storage_options,
            "retry_failed": self.retry_failed,
            "max_attempts": self.max_attempts,
            "failure_statuses": self.failure_statuses,
        }


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
    prior_attempts: Sequence[int] | None = None,
):
    """Map ``function`` over ``dataset`` in resumable chunks; return the concatenated result.

    The keyword arguments are the fields of :class:`StageRun` (see there); ``stats`` is an optional
    :class:`StageStats` to fill; ``prior_attempts`` as in :func:`execute`. With more than one call in flight
    (``concurrency``, or an engine that takes concurrent calls), batches of the next chunk start while the current chunk's slowest rows finish; each chunk is
    still written as soon as its last batch is done, and (with a ``work_dir``) each finished call of a chunk not yet
    complete as a piece file that a rerun reuses: a kill loses at most the calls in flight, not whole chunks. With one,
    a kill loses the chunk being computed.

    Raises:
        InvalidArgumentError: a bad size, attempt count or key column.
        LockError: another process holds the lock on ``work_dir``.
    """
    run = StageRun(
        function=function,
        stage=stage,
        fingerprint=fingerprint,
        work_dir=work_dir,
        fn_kwargs=fn_kwargs or {},
        batch_size=batch_size,
        chunk_size=chunk_size,
        remove_columns=remove_columns,
        storage_options=storage_options,
        desc=desc,
        retry_failed=retry_failed,
        max_attempts=max_attempts,
        failure_statuses=failure_statuses,
        lock=lock,
        concurrency=concurrency,
        first_chunk_index=first_chunk_index,
        key_column=key_column,
        required_columns=tuple(required_columns),
    )
    return execute(run, dataset, stats, prior_attempts=prior_attempts)


def execute(run: StageRun, dataset, stats: StageStats | None = None, *, prior_attempts: Sequence[int] | None = None):
    """Run ``run`` over ``dataset``: plan, execute, assemble (see the module docstring); return the result Dataset.

    ``prior_attempts``: the attempts earlier runs already spent on each input row (an executor computing a keyed
    run's rows elsewhere hands them on); a computed chunk's file records them plus this attempt. Not for keyed runs,
    which read them from their store.
    """
    if run.key_column is not None and run.key_column not in dataset.column_names:
        raise InvalidArgumentError(
            f"key_column={run.key_column!r} is not a column of the input; it has {dataset.column_names}."
        )
    if prior_attempts is not None and (run.key_column is not None or len(prior_attempts) != dataset.num_rows):
        raise InvalidArgumentError(
            f"prior_attempts must hold one count per input row ({dataset.num_rows}), got {len(prior_attempts)}, "
            "and a keyed run (key_column) reads them from its store: leave it out there."
        )
    stats = stats if stats is not None else StageStats(stage=run.stage)
    if run.work_dir is None:
        if run.key_column is not None:
            stats.keys_computed |= set(dataset.unique(run.key_column))
        return _run_chunks(run, dataset, None, stats)
    store = ChunkStore.open(run.work_dir, run.storage_options)
    with store.lock(f"stage {run.stage!r}") if run.lock else contextlib.nullcontext():
        if run.key_column is not None:
            return _run_keyed(run, dataset, store, stats)
        return _run_chunks(run, dataset, store, stats, list(prior_attempts) if prior_attempts is not None else None)


#: A call or a chunk in flight holds its place until its longest answer is done, with ever fewer of its requests in
#: the engine meanwhile (at long-tailed lengths about half of what it held, ``benchmarks/bench_longtail.py``): the
#: scheduler's calls and synthesis' seed chunks hold this many times the requests the engine wants in flight.
HOLD_FACTOR = 2


def in_flight_batches(fn_kwargs: dict | None, chunk_size: int, batch_size: int, concurrency: int | None) -> int:
    """How many engine calls :func:`run_stage` keeps in flight.

    ``concurrency`` when given; otherwise, when an engine in ``fn_kwargs`` takes concurrent calls
    (:func:`xl_suite.engines.base.concurrent_calls`: vLLM's async engine, the HTTP backend), enough calls to hold
    a chunk and twice the engine's preferred number of requests in flight (``in_flight_rows``: twice vLLM's
    ``max_num_seqs``), at least 2; else 1 (one call at a time, chunk by chunk). Twice: :data:`HOLD_FACTOR`. For an
    engine whose requests stand
    alone (``independent_requests``: the HTTP backend) a call is one request, and this is its ``max_concurrency``:
    each finished request is then stored at once. With a work dir, a kill loses at most the calls in flight: with more than one, each finished call
    is written at once (as a piece file until its chunk is complete); with one, the chunk being computed.

    >>> in_flight_batches({}, 1024, 256, None), in_flight_batches({}, 1024, 256, 3)
    (1, 3)
    >>> class VLLMLike:
    ...     concurrent_calls, in_flight_rows = True, 256
    >>> in_flight_batches({"engine": VLLMLike()}, 64, 16, None), in_flight_batches({"engine": VLLMLike()}, 1024, 256, None)
    (32, 4)
    """
    from xl_suite.engines.base import concurrent_calls

    if concurrency is not None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be an integer >= 1 or None, got {concurrency!r}.")
        return concurrency
    engines = [v for v in (fn_kwargs or {}).values() if concurrent_calls(v)]
    if engines:
        if any(getattr(e, "independent_requests", False) for e in engines):  # one call per request
            return max(1, max(int(getattr(e, "max_concurrency", 0) or 0) for e in engines))
        rows = max([chunk_size] + [HOLD_FACTOR * int(getattr(e, "in_flight_rows", 0) or 0) for e in engines])
        return max(2, -(-rows // batch_size))
    return 1


def apply_batched(rows, function: Callable, fn_kwargs: dict, *, batch_size: int, remove_columns, fingerprint: str):
    """``rows.map(function, batched=True, ...)`` as an Arrow table, without a progress bar of its own.

    The same columns, types and features as ``Dataset.map`` (the same writer, fed the same way: each batch formatted
    by ``datasets``' Python formatter, untouched input columns kept as Arrow, the function's columns added or
    replacing, ``remove_columns`` dropped), so a chunk put together from pieces computed here is the chunk one ``map``
    computes. Used for the pieces of overlapping calls, which share one progress bar per stage instead of one bar
    each.
    """
    return _apply_to_table(
        _to_table(rows),
        rows.features,
        function,
        fn_kwargs,
        batch_size=batch_size,
        remove_columns=remove_columns,
        fingerprint=fingerprint,
    )


def _apply_to_table(table, features, function, fn_kwargs, *, batch_size, remove_columns, fingerprint):
    """:func:`apply_batched` on an Arrow table and its features. No ``Dataset`` is built per batch: one would hash
    its whole table for a fingerprint nobody reads (about a tenth of the pipeline's own CPU time at long-tailed
    lengths, on the process that also takes vLLM's outputs)."""
    import datasets
    import pyarrow as pa
    from datasets.arrow_writer import ArrowWriter
    from datasets.formatting import get_formatter

    if not table.num_rows:
        rows = datasets.Dataset(table, info=datasets.DatasetInfo(features=features), fingerprint=fingerprint)
        return _to_table(_map(rows, function, fn_kwargs, batch_size, remove_columns, fingerprint, None))
    remove = set(remove_columns or ())
    formatter = get_formatter(None, features=features)  # what Dataset.map formats its batches with
    sink = pa.BufferOutputStream()
    with ArrowWriter(features=features, stream=sink, update_features=True, fingerprint=fingerprint) as writer:
        for start in range(0, table.num_rows, batch_size):
            part = table.slice(start, batch_size)
            out = function(formatter.format_batch(part), **fn_kwargs)
            merged = {k: part.column(k) for k in part.column_names if k not in remove and k not in out}
            merged.update(out)
            writer.write_batch(merged)
        writer.finalize()
    return pa.ipc.open_stream(sink.getvalue()).read_all()


def _map(rows, function, fn_kwargs, batch_size, remove_columns, fingerprint, desc):
    return rows.map(
        function,
        batched=True,
        batch_size=batch_size,
        fn_kwargs=fn_kwargs,
        remove_columns=remove_columns,
        new_fingerprint=fingerprint,
        load_from_cache_file=False,
        keep_in_memory=True,
        desc=desc,
    )


def _to_table(ds):
    return ds.data.table if not ds._indices else ds.flatten_indices().data.table


# --------------------------------------------------------------------------------------------------------------
# chunks and pieces


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

    def table(self):
        """The piece's rows as an Arrow table: a zero-copy slice, unless the source maps its rows by an index."""
        if self.source._indices is None:
            return self.source.data.table.slice(self.start, self.num_rows)
        return _to_table(self.rows())


def _run_chunks(run: StageRun, dataset, store: ChunkStore | None, stats: StageStats, prior_attempts=None):
    """Plan, execute and assemble a (not keyed) stage run; ``prior_attempts`` are a keyed run's per-row attempts."""
    stats.rows_in += dataset.num_rows
    t0 = time.perf_counter()
    one_to_one = not run.remove_columns or not set(dataset.column_names) <= set(run.remove_columns)
    chunks = _plan(run, dataset, store, stats, one_to_one, prior_attempts)
    _compute(run, chunks, store, stats, one_to_one)
    result = _assemble(run, chunks, stats)
    stats.seconds += time.perf_counter() - t0
    logger.info(
        "stage %s: %d -> %d rows (%d chunks computed, %d reused, %d damaged; %d failed rows, %d retried)",
        run.stage,
        stats.rows_in,
        stats.rows_out,
        stats.chunks_computed,
        stats.chunks_reused,
        stats.chunks_damaged,
        stats.rows_failed,
        stats.rows_retried,
    )
    return result


def _plan(run: StageRun, dataset, store, stats, one_to_one, prior_attempts) -> list[_Chunk]:
    """What is stored and sound, what must be (re)computed."""
    if store is not None:
        store.folder(run.stage, create=True)
    n = dataset.num_rows
    chunks: list[_Chunk] = []
    for i, start in enumerate(list(range(0, n, run.chunk_size)) or [0]):
        rows = (
            dataset
            if start == 0 and n <= run.chunk_size
            else dataset.select(range(start, min(start + run.chunk_size, n)))
        )
        key = stable_hash(run.stage, run.fingerprint, content_hash(rows), run.batch_size)
        number = i + run.first_chunk_index
        path = store.chunk_path(run.stage, number, key) if store is not None else None
        c = _Chunk(number, rows, key, path, _to_table(rows))
        if prior_attempts:
            c.prior_attempts = prior_attempts[start : start + rows.num_rows]
        stats.chunks_total += 1
        if c.path and store.exists(c.path):
            c.table = _read_chunk(store, c, run.stage, one_to_one)
            if c.table is None:
                stats.chunks_damaged += 1
        if c.table is not None:
            stats.chunks_reused += 1
            c.attempts = attempts_of(c.table)
            c.status_cols = new_status_columns(c.table, c.in_table.column_names)
            bad = failed_rows(c.table, c.status_cols, run.failure_statuses) if c.status_cols else []
            c.todo = (
                [j for j in bad if c.attempts[j] < run.max_attempts or retry_exhausted()]
                if run.retry_failed and one_to_one
                else []
            )
            if c.todo:
                logger.info(
                    "stage %s chunk %d: retrying %d failed rows (attempt %d of at most %d)",
                    run.stage,
                    i,
                    len(c.todo),
                    max(c.attempts[j] for j in c.todo) + 1,
                    run.max_attempts,
                )
            c.table = c.table.replace_schema_metadata(own_metadata(c.table)) if not c.todo else c.table
        chunks.append(c)
    return chunks


def _compute(run: StageRun, chunks: list[_Chunk], store, stats, one_to_one) -> None:
    """Compute the pieces, ``window`` engine calls in flight; store each chunk as soon as its last piece is done, and
    (calls in flight, a store) each piece of a chunk not yet complete as soon as it is done: a kill then loses only
    the calls in flight, and the rerun reads the stored pieces back."""
    executor = current_executor() if store is not None else None
    if executor is not None and any(c.table is None or c.todo for c in chunks):
        _compute_elsewhere(executor, run, chunks, store, stats, one_to_one)
    todo = [(c, c.rows if c.table is None else c.rows.select(c.todo)) for c in chunks if c.table is None or c.todo]
    if not todo:
        return
    window = run.window()
    per_call = run.rows_per_call()
    # One piece per engine call when calls overlap or each request stands alone; the whole chunk (one map) otherwise.
    piecewise = window > 1 or per_call == 1
    stored_pieces = None  # piece file name -> path, listed once when pieces are stored
    for c, rows in todo:
        step = per_call if piecewise else max(rows.num_rows, 1)
        c.pieces = [(j, _Piece(rows, j, min(j + step, rows.num_rows))) for j in range(0, max(rows.num_rows, 1), step)]
        if c.path:
            if stored_pieces is None:
                stored_pieces = store.pieces(run.stage)
            if piecewise and len(c.pieces) > 1:
                _reuse_pieces(store, c, stored_pieces, run.stage, one_to_one)
                if len(c.done) == len(c.pieces):
                    _finish_chunk(store, c, stats)
            else:  # one call for the chunk: pieces an earlier, overlapped run left are deleted with the chunk file
                c.piece_files = _pieces_of(c, stored_pieces) or None
    label_total = len(chunks)

    def compute(task):
        c, k, (_, piece) = task
        label = f"{c.index + 1}/{label_total}" + (" retry" if c.table is not None else "") + (f" #{k}" if k else "")
        fingerprint = stable_hash("map", c.key, label)
        if piecewise:
            return _apply_to_table(
                piece.table(),
                piece.source.features,
                run.function,
                run.fn_kwargs,
                batch_size=run.batch_size,
                remove_columns=run.remove_columns,
                fingerprint=fingerprint,
            )
        desc = run.desc or f"{run.stage} [{label}]"
        return _to_table(
            _map(piece.rows(), run.function, run.fn_kwargs, run.batch_size, run.remove_columns, fingerprint, desc)
        )

    tasks = [(c, k, piece) for c in chunks for k, piece in enumerate(c.pieces) if k not in c.done]
    for (c, k, _piece), table in _execute(tasks, compute, window, desc=run.desc or run.stage, bar=piecewise):
        c.done[k] = table
        if len(c.done) == len(c.pieces):
            _finish_chunk(store, c, stats)
        elif piecewise and c.piece_files is not None:
            path = _piece_path(c, *c.pieces[k])
            store.write(path, table, compliant_nested=False)
            c.piece_files.add(path)


def _assemble(run: StageRun, chunks: list[_Chunk], stats: StageStats):
    """The chunks in input order, their failed rows counted."""
    import datasets

    parts = []
    for c in chunks:
        if c.status_cols is None:
            c.status_cols = new_status_columns(c.table, c.in_table.column_names)
        if c.status_cols:
            bad = failed_rows(c.table, c.status_cols, run.failure_statuses)
            if bad:
                stats.count_failures(failure_counts(c.table.take(bad), c.status_cols, run.failure_statuses))
                attempts = c.attempts if len(c.attempts) == c.table.num_rows else attempts_of(c.table)
                stats.rows_exhausted += sum(1 for j in bad if j < len(attempts) and attempts[j] >= run.max_attempts)
        parts.append(datasets.Dataset(c.table))
        if c.path:  # "<stage>/<file>": relative to the work dir, however it is reached
            stats.stored_files.append("/".join(c.path.rsplit("/", 2)[-2:]))
    result = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    stats.rows_out += result.num_rows
    return result


def _compute_elsewhere(executor, run: StageRun, chunks, store, stats, one_to_one):
    """Have ``executor`` compute the chunks still missing (or holding failed rows) into the store; read them."""
    missing = [c for c in chunks if c.table is None or c.todo]
    # A keyed run's rows carry the attempts earlier runs spent on them: the actors' chunk files record them.
    prior = {c.index: c.prior_attempts for c in missing if c.table is None and any(c.prior_attempts)}
    executor.compute(
        [(c.index, c.rows) for c in missing],
        run.function,
        stage=run.stage,
        fingerprint=run.fingerprint,
        work_dir=run.work_dir,
        fn_kwargs=run.fn_kwargs,
        run_kwargs=_elsewhere_kwargs(run),
        prior_attempts=prior or None,
    )
    for c in missing:
        retried = bool(c.todo)
        c.table = _read_chunk(store, c, run.stage, one_to_one)
        if c.table is None:
            raise GenerationError(
                f"Stage {run.stage!r}: the executor did not store chunk {c.index} ({c.path}); rerun to compute it."
            )
        c.attempts = attempts_of(c.table)
        c.table = c.table.replace_schema_metadata(own_metadata(c.table))
        c.todo, c.status_cols = [], None
        if not retried:
            stats.chunks_computed += 1


def _elsewhere_kwargs(run: StageRun) -> dict:
    """The run's settings for an executor's workers; ``--retry-failed`` (a context of this process) travels as a
    limit of attempts no stored row has reached."""
    kwargs = run.run_kwargs()
    if retry_exhausted():
        kwargs["max_attempts"] = _NO_LIMIT
    return kwargs


#: ``max_attempts`` that stands for "however many attempts a row has had" on an executor's workers.
_NO_LIMIT = 1_000_000


def _read_chunk(store: ChunkStore, c: _Chunk, stage: str, one_to_one: bool):
    ids_col = id_column(c.in_table)
    ids = c.in_table.column(ids_col).to_pylist() if ids_col else None
    if one_to_one:
        return store.read(
            c.path, expected_rows=c.rows.num_rows, expected_ids=ids, id_column=ids_col, what=f"Stage {stage!r} chunk"
        )
    return store.read(
        c.path, id_column=ids_col, allowed_ids=set(ids) if ids is not None else None, what=f"Stage {stage!r} chunk"
    )


def _piece_path(c: _Chunk, first: int, rows) -> str:
    """The piece file of rows ``first`` to ``first + len(rows)`` of what ``c`` computes, next to its chunk file.

    The name holds the chunk's key (its stage fingerprint, batch size and input content), the piece's first row and
    row count and, for a retry of a stored chunk's failed rows, a hash of the rows retried and their attempts: a piece
    of another input, chunking or retry never has the current piece's name. It does not end in ``.parquet``, so
    readers of whole stage folders never take a piece for a chunk.
    """
    name = f"{c.path}.piece-{first:06d}-{rows.num_rows}"
    if c.table is not None:
        name += "-retry-" + stable_hash("retry", c.todo, [c.attempts[j] for j in c.todo])
    return name


def _pieces_of(c: _Chunk, stored: dict[str, str]) -> set[str]:
    """The stored piece files of chunk ``c`` (current and stale ones)."""
    folder, chunk_name = c.path.rsplit("/", 1)
    return {f"{folder}/{name}" for name in stored if name.startswith(f"{chunk_name}.piece-")}


def _reuse_pieces(store: ChunkStore, c: _Chunk, stored: dict[str, str], stage: str, one_to_one: bool) -> None:
    """Fill ``c.done`` with the pieces of ``c`` stored by an earlier run (each checked: a damaged one is moved aside and
    computed again); note every piece file of the chunk, stale ones too, to delete once the chunk is written."""
    c.piece_files = _pieces_of(c, stored)
    ids_col = id_column(c.in_table)
    ids = c.in_table.column(ids_col).to_pylist() if ids_col else None
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
        table = store.read(path, id_column=ids_col, what=f"Stage {stage!r} piece", **check)
        if table is None:  # moved aside (or left in place on a read-only store): computed again below
            c.piece_files.discard(path)
            continue
        c.done[k] = table.replace_schema_metadata(own_metadata(table))
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


def _finish_chunk(store: ChunkStore | None, c: _Chunk, stats: StageStats) -> None:
    """Store a chunk whose pieces are all done, then delete its piece files."""
    _store_chunk(store, c, stats)
    if store is not None:
        store.remove(c.piece_files or ())
    c.pieces, c.done, c.piece_files = [], {}, None


def _store_chunk(store: ChunkStore | None, c: _Chunk, stats: StageStats) -> None:
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
            store.write(c.path, c.table, [p + 1 for p in first])
        stats.chunks_computed += 1
        return
    table = replace_rows(c.table, c.todo, computed)
    for j in c.todo:
        c.attempts[j] += 1
    stats.rows_retried += len(c.todo)
    stats.rows_computed += len(c.todo) - c.reused_rows
    store.write(c.path, table, c.attempts)
    c.table = table.replace_schema_metadata(own_metadata(table))
    c.status_cols = new_status_columns(c.table, c.in_table.column_names)
    c.todo = []


def _execute(tasks: list, compute: Callable, window: int, *, desc: str, bar: bool = True):
    """Yield ``(task, compute(task))``: in order on this thread when ``window`` is 1; otherwise ``window`` daemon
    threads keep that many calls in flight and results come in completion order, under one progress bar for the
    stage (shown when datasets' bars are on; nothing process-wide is changed). The first error is raised here
    (threads still running are left to finish or to fail when the engine closes; they are daemons, so they never
    hold up the process's exit, e.g. after Ctrl-C)."""
    import datasets
    from tqdm.auto import tqdm

    if window <= 1 or len(tasks) <= 1:
        progress = tqdm(
            total=len(tasks),
            desc=f"{desc} (calls)",
            disable=not bar or len(tasks) <= 1 or datasets.are_progress_bars_disabled(),
            leave=False,
        )
        with progress:
            for task in tasks:
                yield task, compute(task)
                progress.update(1)
        return

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

    progress = tqdm(
        total=len(tasks), desc=f"{desc} (calls)", disable=not bar or datasets.are_progress_bars_disabled(), leave=False
    )
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
            progress.update(1)
            yield task, value
    finally:
        stop.set()
        progress.close()


# --------------------------------------------------------------------------------------------------------------
# keyed runs: the store keyed by row content


def _run_keyed(run: StageRun, dataset, store: ChunkStore, stats: StageStats):
    """A keyed stage run: reuse every stored row whose key is asked for, compute the others (see ``key_column``)."""
    import datasets

    from xl_suite.tables import column_values

    t0 = time.perf_counter()
    keys = column_values(dataset, run.key_column)
    if not keys:
        return _run_chunks(run, dataset, store, stats)
    if len(set(keys)) != len(keys):
        seen: set = set()
        dupes = sorted({k for k in keys if k in seen or seen.add(k)})[:3]
        raise InvalidArgumentError(
            f"Stage {run.stage!r}: key_column {run.key_column!r} must be unique in the input (one row per request); "
            f"repeated: {dupes}. Drop the duplicates before the stage and copy the results back."
        )
    index, damaged = store.index(
        run.stage,
        run.key_column,
        input_columns=dataset.column_names,
        required=run.required_columns,
        failures=run.failure_statuses,
        what=f"Stage {run.stage!r} chunk",
    )
    stats.chunks_damaged += len(damaged)
    reuse, todo, retried = [], [], 0
    for i, key in enumerate(keys):
        found = index.get(key)
        if found is None:
            todo.append(i)
        elif found.failed and run.retry_failed and (found.attempts < run.max_attempts or retry_exhausted()):
            todo.append(i)
            retried += 1
        else:
            reuse.append(i)
    if todo:
        logger.info(
            "stage %s: %d of %d rows stored by earlier runs; computing %d (%d failed ones again)",
            run.stage,
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
    sub = StageStats(stage=run.stage)
    if todo:
        prior = [index[keys[i]].attempts if keys[i] in index else 0 for i in todo]
        rows = dataset if len(todo) == len(keys) else dataset.select(todo)
        parts.append(_to_table(_run_chunks(run, rows, store, sub, prior)))
        for k, i in enumerate(todo):
            order[i] = done + k
        stats.keys_computed |= {keys[i] for i in todo}
    # the chunk counts of what was computed; rows, retries and failures are counted here, over the whole result
    sub.failed_by_status.clear()
    sub.stored_files.clear()  # the output's rows come from any file of the stage: not an assembly list
    stats.merge(sub, counters=("chunks_total", "chunks_computed", "chunks_reused", "chunks_damaged", "rows_computed"))
    stats.rows_retried += retried
    stats.rows_reused += len(reuse)
    stats.rows_in += len(keys)
    table = concat_tables(parts).take(order) if len(parts) > 1 or order != list(range(len(order))) else parts[0]
    result = datasets.Dataset(table)
    stats.rows_out += result.num_rows
    status_cols = new_status_columns(table, dataset.column_names)
    bad = failed_rows(table, status_cols, run.failure_statuses) if status_cols else []
    if bad:
        stats.count_failures(failure_counts(table.take(bad), status_cols, run.failure_statuses))
    # failed rows that used all their attempts: the reused ones from the index, the computed ones from the sub-run
    stats.rows_exhausted += sub.rows_exhausted + sum(
        1 for i in reuse if index[keys[i]].failed and index[keys[i]].attempts >= run.max_attempts
    )
    stats.seconds += time.perf_counter() - t0
    return result
