"""Where :func:`xl_suite.runner.run_stage` computes its chunks: in this process (the default) or on Ray Data.

Inside ``with RayExecutor(num_actors=2):`` every ``run_stage`` call with a work dir hands the chunks it still needs
to a pool of Ray Data actors (``map_batches`` with an ``ActorPoolStrategy``: each idle actor gets the next chunk).
Each actor builds the stage's engine from its :class:`~xl_suite.engines.spec.EngineSpec` (the engine passed in must
be a lazy one, ``spec.lazy()``: a live engine cannot travel to other processes) and runs ``run_stage`` on its chunk,
writing the chunk file into the shared work dir under the name the local run uses. The calling process then reads
the chunks back as cached ones. So answers, references, translations and both judges run on Ray with the same code,
fingerprints, chunk files and resume as on one machine; synthesis has its own entry point,
:func:`xl_suite.synthesis.ray.synthesize_ray`, built the same way.

    import ray
    from xl_suite.engines.spec import EngineSpec
    from xl_suite.evaluation.answers import generate_answers
    from xl_suite.executors import RayExecutor

    ray.init()
    with RayExecutor(num_actors=4, ray_remote_args={"num_gpus": 1}):
        answers = generate_answers(benchmark, EngineSpec(model="my/model").lazy(), work_dir="s3://bucket/run")

Each ``run_stage`` call starts its own actor pool (and so its engines); a stage computes all of its chunks in one
call, so that is one engine start per actor and stage. The cache keys need the engine's fingerprint on the calling
process: a lazy engine reads it from its memo or, the first time, learns it from a Ray task with the actors'
resources (:meth:`RayExecutor.engine_fingerprint`), so the driver never starts an engine (it may have no GPU).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable

from xl_suite.errors import InvalidArgumentError
from xl_suite.run.context import current_executor, using_executor


__all__ = [
    "RayExecutor",
    "current_executor",
    "map_chunks",
    "chunk_tables",
    "split_chunks",
    "chunk_column",
    "chunks_per_process",
]

_CHUNK = "__xl_chunk"
#: The per-row attempts earlier runs spent, sent with the rows of a keyed run's chunks (see RayExecutor.compute).
_ATTEMPTS = "__xl_attempts"


def map_chunks(
    chunks,
    worker,
    constructor_kwargs: dict,
    *,
    num_actors: int,
    num_cpus_per_actor: float = 1,
    ray_remote_args: dict | None = None,
    until: Callable[[dict], bool] | None = None,
) -> list[dict]:
    """Hand chunks to a pool of ``worker`` actors with Ray Data; return the rows the workers return (one per chunk).

    ``chunks`` are ``(index, datasets.Dataset)`` pairs, or ``(index, datasets.Dataset, columns)`` with ``columns`` a
    dict of per-row values sent along (names starting with ``__xl_``; every chunk must give the same ones; the worker
    reads them with :func:`chunk_column`). ``worker(**constructor_kwargs)`` is built once per actor and
    called with Arrow tables holding one or more chunks (column ``__xl_chunk``; :func:`split_chunks` takes them
    apart, in the caller's schema). Every actor is up before the first chunk goes out, and each holds one chunk at a
    time, so Ray Data's pool gives the next chunk to whichever actor is idle: an even spread. Chunks go out in
    their order; rows come back as chunks finish.

    ``until(row)``, when given, sees each row as it comes back; once it returns True no further chunk is handed
    out, the actors are stopped (chunks they were on are lost, their finished chunk files stay) and the rows so far
    are returned.
    """
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    tables, schema = chunk_tables(chunks)
    context = DataContext.get_current()
    saved = (context.wait_for_min_actors_s, context.enable_progress_bars, context.print_on_execution_start)
    context.wait_for_min_actors_s = 600
    context.enable_progress_bars = context.print_on_execution_start = False
    try:
        results = ray.data.from_arrow(tables).map_batches(
            worker,
            fn_constructor_kwargs={**constructor_kwargs, "schema": schema},
            batch_size=None,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=num_actors, max_tasks_in_flight_per_actor=1),
            num_cpus=num_cpus_per_actor,
            **(ray_remote_args or {}),
        )
        rows: list[dict] = []
        batches = iter(results.iter_batches(batch_format="pyarrow", batch_size=None))
        try:
            for batch in batches:
                stop = False
                for row in batch.to_pylist():
                    rows.append(row)
                    stop = (until is not None and until(row)) or stop
                if stop:
                    break
        finally:
            close = getattr(batches, "close", None)
            if close is not None:  # at once, not when garbage collected: Ray Data then stops its executor
                close()
        return rows
    finally:
        context.wait_for_min_actors_s, context.enable_progress_bars, context.print_on_execution_start = saved


def chunk_tables(chunks) -> tuple[list, object]:
    """The Arrow tables :func:`map_chunks` hands to Ray Data (one per chunk, with its ``__xl_chunk`` index and the
    columns sent along) and the chunks' own schema (without those), which the workers cast back to."""
    tables = []
    for index, rows, *sent in chunks:
        table = rows.with_format("arrow")[:]
        table = table.append_column(_CHUNK, [[index] * table.num_rows])
        for name, values in (sent[0] if sent else {}).items():
            if not name.startswith("__xl_") or len(values) != table.num_rows:
                raise InvalidArgumentError(
                    f"Column {name!r} sent with chunk {index}: the name must start with '__xl_' and hold one value "
                    f"per row ({table.num_rows}), got {len(values)}."
                )
            table = table.append_column(name, [list(values)])
        tables.append(table)
    schema = tables[0].schema
    for name in [n for n in schema.names if n.startswith("__xl_")]:
        schema = schema.remove(schema.get_field_index(name))
    return tables, schema


def split_chunks(batch, schema):
    """Yield ``(index, datasets.Dataset)`` for each chunk in a batch from :func:`map_chunks`, cast back to the
    caller's ``schema`` (a transfer may change types or drop metadata; cache keys hash the content with it)."""
    import datasets
    import pyarrow.compute as pc

    for index in sorted(set(batch.column(_CHUNK).to_pylist())):
        table = batch.filter(pc.equal(batch.column(_CHUNK), index)).drop_columns([_CHUNK])
        yield index, datasets.Dataset(table.select(schema.names).cast(schema))


def chunk_column(batch, index: int, name: str) -> list | None:
    """The values of a column sent along with chunk ``index`` (see :func:`map_chunks`), or None when none was sent."""
    import pyarrow.compute as pc

    if name not in batch.column_names:
        return None
    return batch.filter(pc.equal(batch.column(_CHUNK), index)).column(name).to_pylist()


def chunks_per_process(stats: list[dict]) -> dict[str, int]:
    """How many chunks each worker process computed (``pid`` of the stat rows), by pid."""
    counts: dict[str, int] = {}
    for row in stats:
        counts[str(row["pid"])] = counts.get(str(row["pid"]), 0) + 1
    return dict(sorted(counts.items()))


class _EngineRef:
    """A lazy engine's spec, sent to the actors instead of the engine."""

    def __init__(self, spec):
        self.spec = spec


def _ship(value):
    from xl_suite.engines.lazy import LazyGenerator

    if isinstance(value, LazyGenerator):
        return _EngineRef(value.spec)
    if hasattr(value, "generate") and hasattr(value, "fingerprint"):
        raise InvalidArgumentError(
            f"{type(value).__name__} is a running engine, which cannot be sent to Ray workers. Pass a lazy engine "
            "built from its spec instead: EngineSpec(model=..., backend=...).lazy()."
        )
    return value


class _StageWorker:
    """Ray Data actor: runs ``run_stage`` on each chunk it gets, with engines built once from their specs."""

    def __init__(self, function, stage, fingerprint, work_dir, fn_kwargs, run_kwargs, schema):
        self.function, self.stage, self.fingerprint, self.work_dir = function, stage, fingerprint, work_dir
        self.schema = schema  # the chunks' schema as the caller had it: the cache keys hash the content with it
        import datasets  # noqa: F401 - imported before the first chunk arrives, so every actor starts equally ready

        import xl_suite.run.scheduler  # noqa: F401

        self.engines: dict[int, object] = {}
        self.fn_kwargs = {k: self._resolve(v) for k, v in fn_kwargs.items()}
        self.run_kwargs = run_kwargs

    def _resolve(self, value):
        if isinstance(value, _EngineRef):
            return self.engines.setdefault(id(value), value.spec.lazy())
        return value

    def __call__(self, batch):
        import pyarrow as pa

        from xl_suite.run.scheduler import run_stage
        from xl_suite.run.stats import StageStats

        rows = []
        with using_executor(None):  # compute here, never hand the chunk on again
            for index, chunk in split_chunks(batch, self.schema):
                stats = StageStats(self.stage)
                t0 = time.perf_counter()
                run_stage(
                    chunk,
                    self.function,
                    stage=self.stage,
                    fingerprint=self.fingerprint,
                    work_dir=self.work_dir,
                    fn_kwargs=self.fn_kwargs,
                    stats=stats,
                    lock=False,
                    first_chunk_index=index,
                    prior_attempts=chunk_column(batch, index, _ATTEMPTS),
                    **self.run_kwargs,
                )
                rows.append(
                    {
                        "chunk": index,
                        "pid": os.getpid(),
                        "seconds": time.perf_counter() - t0,
                        "chunks_computed": stats.chunks_computed,
                        "rows_retried": stats.rows_retried,
                    }
                )
        return pa.Table.from_pylist(rows)

    def __del__(self):
        for engine in getattr(self, "engines", {}).values():
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - best effort at actor exit; the reaper covers vLLM processes
                pass


#: Options of ``ray_remote_args`` that also apply to a task (the rest are actor options).
_TASK_OPTIONS = frozenset(
    {"num_gpus", "resources", "memory", "accelerator_type", "runtime_env", "scheduling_strategy", "label_selector"}
)


def _spec_fingerprint(spec) -> str:
    """In a Ray task: start ``spec``'s engine, return its fingerprint, close it."""
    engine = spec.lazy()
    try:
        return engine.fingerprint()
    finally:
        engine.close()


class RayExecutor:
    """Compute ``run_stage`` chunks on a pool of Ray Data actors inside a ``with`` block (``ray.init`` first).

    Args:
        num_actors: engine actors; Ray Data hands each idle actor the next chunk.
        num_cpus_per_actor: logical CPUs each actor requests.
        ray_remote_args: extra Ray options for the actors (``{"num_gpus": 1}``, a ``runtime_env``...).

    Attributes:
        runs: one entry per ``run_stage`` call sent to Ray: stage, chunks, chunks computed, chunks per worker process.
    """

    def __init__(self, num_actors: int = 1, *, num_cpus_per_actor: float = 1, ray_remote_args: dict | None = None):
        if isinstance(num_actors, bool) or not isinstance(num_actors, int) or num_actors < 1:
            raise InvalidArgumentError(f"num_actors must be an integer >= 1, got {num_actors!r}.")
        self.num_actors = num_actors
        self.num_cpus_per_actor = num_cpus_per_actor
        self.ray_remote_args = dict(ray_remote_args or {})
        self.runs: list[dict] = []
        self._stack = None

    def __enter__(self) -> RayExecutor:
        """Send the ``run_stage`` calls of this block to Ray; lazy engines learn a fingerprint they do not remember from
        :meth:`engine_fingerprint` (a Ray task), never by starting here."""
        from xl_suite.engines.lazy import fingerprints_from

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(using_executor(self))
        self._stack.enter_context(fingerprints_from(self.engine_fingerprint))
        return self

    def __exit__(self, *exc) -> None:
        """Back to computing in this process."""
        self._stack.close()

    def engine_fingerprint(self, spec) -> str:
        """The fingerprint of ``spec``'s engine, from a Ray task with the actors' resources (``num_gpus``...): the
        engine starts there once (a lazy engine on the driver remembers the answer), never on the driver."""
        import ray

        options = {k: v for k, v in self.ray_remote_args.items() if k in _TASK_OPTIONS}
        task = ray.remote(_spec_fingerprint).options(num_cpus=self.num_cpus_per_actor, **options)
        return ray.get(task.remote(spec))

    def compute(
        self, chunks, function, *, stage, fingerprint, work_dir, fn_kwargs, run_kwargs, prior_attempts=None
    ) -> None:
        """Compute ``chunks`` (``(index, datasets.Dataset)`` pairs) into ``work_dir`` on the actor pool.

        ``prior_attempts`` (chunk index -> attempts per row): what earlier runs already spent on the rows of a keyed
        run; they travel with the rows, and the actor's chunk file records them (plus this attempt), so the retry
        limit counts every attempt wherever it ran.
        """
        if prior_attempts:
            chunks = [(i, rows, {_ATTEMPTS: prior_attempts.get(i) or [0] * rows.num_rows}) for i, rows in chunks]
        stats = map_chunks(
            chunks,
            _StageWorker,
            {
                "function": function,
                "stage": stage,
                "fingerprint": fingerprint,
                "work_dir": work_dir,
                "fn_kwargs": {k: _ship(v) for k, v in (fn_kwargs or {}).items()},
                "run_kwargs": run_kwargs,
            },
            num_actors=self.num_actors,
            num_cpus_per_actor=self.num_cpus_per_actor,
            ray_remote_args=self.ray_remote_args,
        )
        self.runs.append(
            {
                "stage": stage,
                "chunks": len(stats),
                "chunks_computed": sum(r["chunks_computed"] for r in stats),
                "chunks_per_process": chunks_per_process(stats),
            }
        )
