"""The synthesis run on Ray Data: the same orchestration as :func:`xl_suite.synthesis.synthesize`, another executor.

Ray computes, the local pipeline assembles:

1. The driver cuts the seeds into the same chunks as the local run (:func:`xl_suite.synthesis.seeds.iter_seed_chunks`).
2. ``ray.data`` maps the chunks over a pool of engine actors (``map_batches`` with an ``ActorPoolStrategy``: Ray Data
   hands each chunk to an idle actor, so the work spreads evenly). Each actor holds its engines and a
   :class:`~xl_suite.synthesis.pipeline.SynthesisRun` and runs :meth:`~xl_suite.synthesis.pipeline.SynthesisRun.process`
   on its chunk: every stage through :func:`xl_suite.runner.run_stage`, which writes the stage's chunk files into the
   run's work dir (a shared fsspec URL on a cluster: ``s3://...``, NFS). Only per-chunk statistics travel back to
   the driver: each stage's counts (:class:`~xl_suite.run.stats.StageStats`, with the names of the store files
   holding its output) and engine calls (with a quota, also the language, instruction and response of the chunk's
   final rows).
3. The driver then assembles from the store, without running any stage again: chunk by chunk, in order, it reads
   back the stage outputs that reach a release file (the snapshot stages' and the last stage's, by the file names
   the actors sent) and hands them to the local pipeline's last steps (keep filters, release shapes, duplicate
   removal, quota), and builds ``summary.json`` from the actors' counts: the same files and summary as a local run
   (same stages, fingerprints, chunk files), streaming chunk by chunk.

So a Ray run that is killed resumes from the chunk files on the rerun (actors skip what is cached and, with an
:class:`~xl_suite.engines.spec.EngineSpec`, start no engine when nothing is left), a local rerun of a Ray run costs
zero engine calls, and the other way round. Nothing sets Hugging Face offline mode in the workers; that is the
user's choice (``runtime_env``).

Differences from the local run: none in what is written. Like the local run, the whole run holds
:func:`~xl_suite.safety.lock_folders` on ``output`` and the work dir (local paths), taken before any actor starts,
so a second ``synthesize`` or ``synthesize_ray`` on either folder fails at once with a LockError naming this one (the
actors take none). With a quota (``num_examples``) the chunks go out
in order and each returns the language, instruction and response of its rows that went through every stage; the
driver applies the local run's duplicate removal and quota (:func:`~xl_suite.synthesis.pipeline.select_final_rows`)
to the chunks finished in order and stops the actors as soon as those hold the quota. The count is exact, not an
estimate, so the assembly stops at the same chunk; what the actors were computing or had finished beyond it
(a chunk or two per actor) is wasted. ``max_error_rate=`` applies the check of ``xl-suite synthesize
--max-error-rate`` (:func:`~xl_suite.synthesis.report.check_failures`) as :func:`~xl_suite.synthesis.synthesize`
does, once everything is written; the actors retry stored failed rows (on a rerun; those that used all their attempts
too inside :func:`~xl_suite.run.context.retrying_failed`, ``--retry-failed``), the driver never does. The summary
gains an ``executor`` section (actors, chunks handed back, the chunk where the quota was reached, chunks per worker
process, what the actors generated); its timings are the actors' (a stage's ``seconds`` and engine seconds) and the
whole run's (``seconds``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from xl_suite.errors import GenerationError, InvalidArgumentError
from xl_suite.runner import DEFAULT_MAX_ERROR_RATE
from xl_suite.synthesis.config import Stage, SynthesisConfig
from xl_suite.synthesis.outputs import SynthesisResult


logger = logging.getLogger(__name__)

__all__ = ["synthesize_ray", "engine_factory", "ray_init_kwargs", "ChunkWorker"]

#: Environment a vLLM engine needs inside Ray workers on a small CPU machine (ENVIRONMENT.md section 5).
CPU_ENGINE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
_COUNTS = ("calls", "prompts", "completions", "prompt_tokens", "completion_tokens")
_FINAL_COLUMNS = ("language", "instruction", "response")


def ray_init_kwargs(num_cpus: int = 8, env: dict[str, str] | None = None) -> dict:
    """Keyword arguments for ``ray.init`` on a small CPU machine.

    ``num_cpus`` over-subscribes the logical CPUs (with 2, the actors of an LLM pipeline wait for each other), the
    dashboard is off, and workers inherit the engine environment (:data:`CPU_ENGINE_ENV`, overridable by ``env``).
    Hugging Face offline mode is not set: pass ``env={"HF_HUB_OFFLINE": "1"}`` where you want it.

    >>> ray_init_kwargs(4)["num_cpus"]
    4
    """
    env_vars = {**CPU_ENGINE_ENV, **{k: v for k, v in os.environ.items() if k in CPU_ENGINE_ENV}, **(env or {})}
    return {
        "num_cpus": num_cpus,
        "include_dashboard": False,
        "runtime_env": {"env_vars": env_vars},
        "log_to_driver": False,
    }


def engine_factory(backend: str, model: str, **kwargs) -> Callable[[], Any]:
    """A picklable factory that builds an engine inside a Ray actor (:func:`xl_suite.engines.registry.build_generator`).

    Prefer an :class:`~xl_suite.engines.spec.EngineSpec`: actors then start the engine only when a chunk needs it.

    >>> engine_factory("fake", "m")().model
    'm'
    """
    from xl_suite.engines.registry import build_generator

    return functools.partial(build_generator, backend, model, **kwargs)


def _build(engine):
    """An engine from an :class:`EngineSpec` (lazy: started by the first prompt) or a zero-argument factory."""
    from xl_suite.engines.spec import EngineSpec

    if engine is None:
        return None
    if isinstance(engine, EngineSpec):
        return engine.lazy()
    if callable(engine):
        return engine()
    raise InvalidArgumentError(f"Expected an EngineSpec or a zero-argument engine factory, got {engine!r}.")


class ChunkWorker:
    """A Ray Data actor: builds the engines once, then runs every stage over each seed chunk it is handed.

    Called with a ``pyarrow.Table`` holding one or more chunks (column ``__xl_chunk``); returns one row of statistics
    per chunk (worker process id, prompts and tokens generated, the engines' identities) and, with a quota
    (``num_examples``), the chunk's rows that went through every stage as ``final`` (JSON: their language,
    instruction and response, what the driver needs to apply the duplicate removal and the quota; ``null`` when the
    stages return no such columns).
    """

    def __init__(
        self,
        config,
        generator,
        scorer,
        stages,
        work_dir,
        storage_options,
        schema,
        benchmark=None,
        retry_exhausted=False,
    ):
        from xl_suite.synthesis.config import default_stages
        from xl_suite.synthesis.pipeline import SynthesisRun

        self.generator = _build(generator)
        self.scorer = _build(scorer) if scorer is not None else None
        # the driver resolved the benchmark once (no actor reads the Hub for it)
        stages = (
            list(stages)
            if stages is not None
            else default_stages(config, self.generator, self.scorer, benchmark=benchmark)
        )
        self.run = SynthesisRun(
            config,
            self.generator,
            self.scorer,
            stages,
            output=None,
            work_dir=work_dir,
            storage_options=storage_options,
        )
        self.run.lock_work_dir = False  # the actors of one run share its work dir; each writes its own chunks
        self.schema = schema
        #: The driver's ``--retry-failed`` (:func:`~xl_suite.run.context.retrying_failed`), which does not cross
        #: processes by itself.
        self.retry_exhausted = retry_exhausted

    def __call__(self, batch):
        import pyarrow as pa

        from xl_suite.executors import split_chunks
        from xl_suite.run.context import retrying_failed

        rows = []
        for index, chunk in split_chunks(batch, self.schema):
            before = self._generated()
            t0 = time.perf_counter()
            with retrying_failed(self.retry_exhausted):
                processed = self.run.process(chunk)
            after = self._generated()
            # Per stage that ran: this chunk's counts (with the store files holding its output, which the driver
            # reads back) and what the stage's engine generated for it.
            per_stage = {
                name: {
                    "stats": stats.to_record(),
                    "generated": {k: after[name][k] - before[name][k] for k in (*_COUNTS, "seconds")}
                    if name in after
                    else None,
                }
                for name, stats in processed.stats.items()
            }
            rows.append(
                {
                    "chunk": index,
                    "pid": os.getpid(),
                    "seconds": time.perf_counter() - t0,
                    "per_stage": json.dumps(per_stage),
                    "complete": processed.final is not None,
                    "final": json.dumps(self._final(processed.final)),
                    **{k: sum(v[k] for v in after.values()) - sum(v[k] for v in before.values()) for k in _COUNTS},
                }
            )
        identity = {
            "generator_fingerprint": self.generator.fingerprint(),
            "generator_model": self.generator.model,
            "generator_revision": getattr(self.generator, "revision", None),
            "generator_backend": getattr(self.generator, "backend", "?"),
            "generator_structured": self.generator.supports_structured_output(),
        }
        scorer = self.scorer or self.generator
        identity.update(
            scorer_fingerprint=scorer.fingerprint(),
            scorer_model=scorer.model,
            scorer_revision=getattr(scorer, "revision", None),
            scorer_backend=getattr(scorer, "backend", "?"),
            scorer_structured=scorer.supports_structured_output(),
        )
        return pa.Table.from_pylist([{**r, **identity} for r in rows])

    def _final(self, final) -> dict | None:
        """What the driver's quota watch needs of a chunk's final rows (nothing without a quota)."""
        from xl_suite.tables import column_values

        if self.run.config.num_examples is None or final is None:
            return {}
        if not set(_FINAL_COLUMNS) <= set(final.column_names):
            return None
        return {c: column_values(final, c) for c in _FINAL_COLUMNS}

    def _generated(self) -> dict[str, dict[str, float]]:
        """What each engine stage has generated so far in this actor (and the seconds its engine calls took)."""
        return {name: {k: getattr(c, k) for k in (*_COUNTS, "seconds")} for name, c in self.run.counters.items()}

    def __del__(self):
        for engine in (getattr(self, "generator", None), getattr(self, "scorer", None)):
            if engine is not None:
                try:
                    engine.close()
                except Exception:  # noqa: BLE001 - best effort at actor exit; the reaper covers vLLM processes
                    pass


class _QuotaWatch:
    """The local run's last step (duplicates, then the quota) over the chunks the actors finished, in chunk order.

    ``until`` of :func:`~xl_suite.executors.map_chunks`: True once the chunks finished in order hold the quota for
    every language. The count is exact, not an estimate: it applies
    :func:`~xl_suite.synthesis.pipeline.select_final_rows` to the same rows in the same order as the local run,
    which therefore stops at the same chunk (``reached_at``). A chunk whose final rows are unknown (``null``:
    stages without those columns) turns the watch off; every chunk is then computed.
    """

    def __init__(self, config: SynthesisConfig):
        from xl_suite.synthesis.decontamination import NearDuplicateIndex

        self.config = config
        self.seen: set[bytes] = set()
        self.produced = dict.fromkeys(config.languages, 0)
        self.over_quota = dict.fromkeys(config.languages, 0)
        self.near = NearDuplicateIndex(config.near_dedup_threshold) if config.near_dedup else None
        self.finished: dict[int, dict | None] = {}
        self.next = 0  # the first chunk not yet counted
        self.reached_at: int | None = None
        self.blind = config.num_examples is None

    def __call__(self, row: dict) -> bool:
        import datasets

        from xl_suite.synthesis.pipeline import select_final_rows

        if self.blind or self.reached_at is not None:
            return self.reached_at is not None
        self.finished[int(row["chunk"])] = json.loads(row["final"])
        while self.next in self.finished:
            final = self.finished.pop(self.next)
            if final is None:
                self.blind = True
                return False
            if final and final[_FINAL_COLUMNS[0]]:
                select_final_rows(
                    datasets.Dataset.from_dict(final),
                    self.config,
                    seen=self.seen,
                    produced=self.produced,
                    over_quota=self.over_quota,
                    near=self.near,
                )
            self.next += 1
            if all(v >= self.config.num_examples for v in self.produced.values()):  # SynthesisRun.quota_reached
                self.reached_at = self.next - 1
                return True
        return False


class _CacheOnly:
    """The driver's stand-in for an engine that ran in the actors: its identity (model, revision, fingerprint, JSON
    schema support) for the stage fingerprints and the summary; it never generates."""

    concurrent_calls = False

    def __init__(self, row: dict, prefix: str):
        self.backend = row[f"{prefix}_backend"]
        self.model = row[f"{prefix}_model"]
        self.revision = row[f"{prefix}_revision"]
        self._fingerprint = row[f"{prefix}_fingerprint"]
        self._structured = bool(row[f"{prefix}_structured"])

    def generate(self, conversations, sampling):
        if not conversations:
            return []
        raise GenerationError(
            f"{len(conversations)} prompts were not computed by the Ray workers; the driver never generates. "
            "Rerun synthesize_ray: it computes what is missing."
        )

    def fingerprint(self) -> str:
        return self._fingerprint

    def supports_structured_output(self) -> bool:
        return self._structured

    def close(self) -> None:
        pass


def synthesize_ray(
    seeds,
    generator,
    config: SynthesisConfig | None = None,
    *,
    scorer=None,
    stages: Sequence[Stage] | None = None,
    output: str | None = None,
    work_dir: str | None = None,
    storage_options: dict | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    num_actors: int = 1,
    num_cpus_per_actor: float = 1,
    ray_remote_args: dict | None = None,
    max_error_rate: float | None = DEFAULT_MAX_ERROR_RATE,
) -> SynthesisResult:
    """Run the synthesis pipeline with its engine work on a pool of Ray Data actors (``ray.init`` must have run).

    Args:
        seeds: a ``datasets.Dataset`` with ``text_column``.
        generator: the generation engine as an :class:`~xl_suite.engines.spec.EngineSpec` (started in each actor
            when a chunk needs it) or a picklable zero-argument factory (:func:`engine_factory`).
        config: :class:`~xl_suite.synthesis.SynthesisConfig`.
        scorer: the scoring engine, the same way (default: the generator's engine, shared in the actor).
        stages: replace the stage list (default :func:`~xl_suite.synthesis.default_stages`, built in the actors).
        output: folder/URL for the same files as the local pipeline.
        work_dir: the chunk cache, shared by the driver and every actor (default ``<output>/.xl_suite_work``); on a
            cluster, a URL every node can reach.
        storage_options: fsspec options for ``output`` and ``work_dir``.
        text_column: seed column with the passages.
        id_column: seed column with row ids (default ``id`` when present).
        num_actors: engine actors; Ray Data gives each idle actor the next chunk.
        num_cpus_per_actor: logical CPUs each actor requests.
        ray_remote_args: extra Ray options for the actors (``{"num_gpus": 1}``, a ``runtime_env``...).
        max_error_rate: as in :func:`~xl_suite.synthesis.synthesize` and ``xl-suite synthesize --max-error-rate``
            (default 0.05): above this share of failed LLM outputs, :class:`~xl_suite.errors.FailureRateError` once
            everything is written; ``None``: not checked.

    Returns:
        A :class:`~xl_suite.synthesis.SynthesisResult`, its summary that of the local pipeline plus ``executor``.

    Raises:
        InvalidArgumentError: neither ``output`` nor ``work_dir`` (the actors need a place to write), or bad sizes.
        LockError: another process is writing ``output`` or the work dir (checked before Ray is used).
        FailureRateError: more failed LLM outputs than ``max_error_rate`` (everything is written).
    """
    from xl_suite.runner import check_error_rate_value
    from xl_suite.safety import lock_folders
    from xl_suite.synthesis.pipeline import check_result_failures
    from xl_suite.synthesis.seeds import check_text_column

    config = config or SynthesisConfig()
    if output is None and work_dir is None:
        raise InvalidArgumentError(
            "synthesize_ray needs output= or work_dir=: the actors write each stage's chunks there and the driver "
            "reads them back (on a cluster, a URL every node can reach)."
        )
    if isinstance(num_actors, bool) or not isinstance(num_actors, int) or num_actors < 1:
        raise InvalidArgumentError(f"num_actors must be an integer >= 1, got {num_actors!r}.")
    if max_error_rate is not None:
        check_error_rate_value(max_error_rate, "max_error_rate")
    work_dir = work_dir if work_dir is not None else f"{str(output).rstrip('/')}/.xl_suite_work"
    check_text_column(seeds, text_column)
    # One run per output folder and work dir for the whole run, as the local one: a second run on either fails at
    # once, before any actor starts, with a LockError naming this one; the actors take none (they share the work dir
    # of this run).
    with lock_folders([output, work_dir], purpose="xl-suite synthesize_ray", storage_options=storage_options):
        result = _synthesize_ray_locked(
            seeds,
            generator,
            config,
            scorer=scorer,
            stages=stages,
            output=output,
            work_dir=work_dir,
            storage_options=storage_options,
            text_column=text_column,
            id_column=id_column,
            num_actors=num_actors,
            num_cpus_per_actor=num_cpus_per_actor,
            ray_remote_args=ray_remote_args,
        )
    if max_error_rate is not None:
        check_result_failures(result, max_error_rate)
    return result


def _synthesize_ray_locked(
    seeds,
    generator,
    config: SynthesisConfig,
    *,
    scorer,
    stages,
    output,
    work_dir,
    storage_options,
    text_column,
    id_column,
    num_actors,
    num_cpus_per_actor,
    ray_remote_args,
) -> SynthesisResult:
    from xl_suite.executors import chunks_per_process, map_chunks
    from xl_suite.run.context import retry_exhausted
    from xl_suite.synthesis.pipeline import plan_synthesis
    from xl_suite.synthesis.seeds import SeedCounts, iter_seed_chunks

    t_start = time.perf_counter()
    counts = SeedCounts()
    chunks, seen = [], []  # seen[i]: the seed counts when chunk i was cut (where a run stopping after it stands)
    for index, chunk in enumerate(
        iter_seed_chunks(
            seeds,
            text_column=text_column,
            chunk_size=config.chunk_size,
            max_seeds=config.seed_limit,
            id_column=id_column,
            counts=counts,
        )
    ):
        chunks.append((index, chunk))
        seen.append(counts.to_dict())
    if not chunks:
        raise InvalidArgumentError("No seed rows to synthesize from (all empty or removed as duplicates).")
    watch = _QuotaWatch(config)
    plan = plan_synthesis(config, stages=stages)  # the benchmark resolved and the templates checked once, here
    stats = map_chunks(
        chunks,
        ChunkWorker,
        {
            "config": config,
            "generator": generator,
            "scorer": scorer,
            "stages": stages,
            "work_dir": work_dir,
            "storage_options": storage_options,
            "benchmark": plan.benchmark,
            "retry_exhausted": retry_exhausted(),
        },
        num_actors=num_actors,
        num_cpus_per_actor=num_cpus_per_actor,
        ray_remote_args=ray_remote_args,
        until=None if watch.blind else watch,
    )
    ray_seconds = time.perf_counter() - t_start

    run, files = _assemble(
        plan,
        chunks,
        {int(r["chunk"]): r for r in stats},
        stats[0],
        final_counts=counts.to_dict(),
        counts_at=seen,
        output=output,
        work_dir=work_dir,
        storage_options=storage_options,
    )
    summary = run.summary(
        seeds_rows=seeds.num_rows,
        seconds=time.perf_counter() - t_start,
        seed_source=None,
        text_column=text_column,
    )
    generated = {k: sum(int(r[k]) for r in stats) for k in _COUNTS}
    summary["executor"] = {
        "name": "ray",
        "actors": num_actors,
        "chunks": len(stats),
        "seed_chunks": len(chunks),
        "quota_reached_at_chunk": watch.reached_at,
        "chunks_per_process": chunks_per_process(stats),
        "generated": generated,
        "ray_seconds": round(ray_seconds, 3),
    }
    summary["generated"] = {**summary.get("generated", {}), **generated}  # every chunk's, past the quota too
    return run.result(summary, files)


def _assemble(
    plan,
    chunks: list,
    returned: dict[int, dict],
    identity: dict,
    *,
    final_counts: dict,
    counts_at: list[dict],
    output,
    work_dir,
    storage_options,
):
    """The local run's last steps over what the actors stored, in chunk order, without running a stage again.

    For each seed chunk the actors returned, the stage outputs are read back from the store files its counts name
    (only those of stages whose rows are released: the snapshot stages and the last one), filtered by the stages'
    keep columns, and given to the pipeline's own steps (:meth:`~xl_suite.synthesis.pipeline.SynthesisRun.snapshot`,
    :meth:`~xl_suite.synthesis.pipeline.SynthesisRun.finish_chunk`, the quota); the per-stage counts are the actors'.
    Returns the :class:`~xl_suite.synthesis.pipeline.SynthesisRun` and the release files it wrote.
    """
    import datasets

    from xl_suite.run.stats import StageStats
    from xl_suite.run.store import ChunkStore
    from xl_suite.synthesis.pipeline import SynthesisRun
    from xl_suite.synthesis.seeds import SeedCounts
    from xl_suite.tables import keep_rows, normalised

    generator, scorer = _CacheOnly(identity, "generator"), _CacheOnly(identity, "scorer")
    plan = plan.for_engines(generator, scorer)  # the stages as the actors configured them for these engines
    run = SynthesisRun(
        plan.config,
        generator,
        scorer,
        plan.stages,
        output=output,
        work_dir=work_dir,
        storage_options=storage_options,
        benchmark=plan.benchmark,
        templates=plan.templates,
    )
    store = ChunkStore.open(run.work_dir, storage_options)
    last = run.stages[-1].name
    run.seed_counts = SeedCounts(**final_counts)
    try:
        for index, rows in chunks:
            row = returned.get(index)
            if row is None:
                raise GenerationError(
                    f"Seed chunk {index} was not computed by the Ray workers. Rerun synthesize_ray: it computes what "
                    "is missing."
                )
            run.processed += rows.num_rows
            per_stage = json.loads(row["per_stage"])
            for stage in run.stages:
                entry = per_stage.get(stage.name)
                if entry is None:  # the chunk was emptied before this stage
                    break
                stats = StageStats.from_record(entry["stats"])
                run.stats[stage.name].merge(stats)
                if entry["generated"] is not None:
                    counter = run.counters[stage.name]
                    for key, value in entry["generated"].items():
                        setattr(counter, key, getattr(counter, key) + value)
                released = stage.snapshot or (stage.name == last and row["complete"])
                if not released:
                    continue
                table = store.read_back(stats.stored_files, what=f"Stage {stage.name!r} chunk")
                if table is None:
                    raise GenerationError(
                        f"Stage {stage.name!r}: a chunk file of seed chunk {index} is missing or damaged in "
                        f"{run.work_dir} (see the warning above). Rerun synthesize_ray: it computes it again."
                    )
                out = normalised(datasets.Dataset(table))
                out = keep_rows(out, stage.keep) if stage.keep else out
                run.snapshot(stage, out)
                if stage.name == last and row["complete"]:
                    run.finish_chunk(out)
            if run.quota_reached():
                run.stopped_early = True
                run.seed_counts = SeedCounts(**counts_at[index])  # the local run reads no further seeds
                break
        files = run.write()
    except BaseException:
        run.writer.abort()
        raise
    return run, files
