"""The synthesis run: seed chunks through every stage, chunk by chunk (a few at once with a concurrent engine).

:func:`synthesize` reads as its steps: for each seed chunk, for each stage, *run* it (through the resumable
:func:`xl_suite.runner.run_stage`), *record* its counts and *snapshot* its release shape; then *finish* the chunk
(duplicates, quotas, the default shape) and, at the end, *write* the files and the summary. Seed chunks go through
all stages one after the other (chunk-major), a few chunks at once when the engines take concurrent calls
(:func:`_lookahead`), so memory is bounded by a few chunks, results are written as they finish, and a killed run
loses only the engine calls in flight (finished calls are stored at once, see :func:`xl_suite.runner.run_stage`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from xl_suite.engines.base import concurrent_calls
from xl_suite.errors import InvalidArgumentError
from xl_suite.fingerprint import stable_hash
from xl_suite.languages import language_fingerprint
from xl_suite.status import is_usable
from xl_suite.synthesis.config import Stage, SynthesisConfig, default_stages, preflight, stage_fingerprint
from xl_suite.synthesis.decontamination import (
    Benchmark,
    NearDuplicateIndex,
    decontaminate_batch,
    resolve_benchmark,
)
from xl_suite.synthesis.outputs import (
    SNAPSHOT_FILES,
    ShapeWriter,
    SynthesisResult,
    append_by_language,
    fallback_schema,
    shape_table,
)
from xl_suite.synthesis.report import build_summary
from xl_suite.tables import column_values, count_status, keep_rows, normalised, to_arrow


logger = logging.getLogger(__name__)

__all__ = [
    "synthesize",
    "SynthesisPlan",
    "plan_synthesis",
    "apply_stages",
    "dedup_key",
    "select_final_rows",
    "SynthesisRun",
    "ChunkRun",
    "CountingGenerator",
]


def dedup_key(text: str) -> str:
    """Normalised form used for duplicate removal: lower case, punctuation and extra spaces removed.

    >>> dedup_key("  How do I  bake bread? ") == dedup_key("how do i bake bread")
    True
    """
    words = re.sub(r"[\W_]+", " ", text.lower()).split()
    return " ".join(words)


def apply_stages(
    batch: dict[str, list], stages: Sequence[Stage], *, engines: Mapping[str, Any], templates: Mapping[str, Any]
) -> dict[str, list]:
    """Run ``stages`` directly on one batch, with their keep filters (no chunk files, no cache).

    This is what a Ray Data actor does with each block (:mod:`xl_suite.synthesis.ray`); :func:`synthesize` runs
    the same functions through :func:`xl_suite.runner.run_stage` instead. Stage functions must accept an empty
    batch (the built-in ones do): a batch emptied by a filter still passes through the later stages.

    >>> from xl_suite.synthesis.stages import score_filter_batch
    >>> st = [Stage("mark", score_filter_batch, params={"threshold": 4.0}, keep="score_passed")]
    >>> apply_stages({"score_mean": [4.5, 2.0], "x": ["a", "b"]}, st, engines={}, templates={})
    {'score_mean': [4.5], 'x': ['a'], 'score_passed': [True]}
    """
    for stage in stages:  # an emptied batch still goes through every stage, so its columns stay the same
        kwargs = dict(stage.params)
        if stage.engine:
            kwargs.update(generator=engines[stage.engine], template=templates[stage.name], sampling=stage.sampling)
        out = stage.function(batch, **kwargs)
        batch = dict(out) if stage.reshape else {**batch, **out}
        if stage.keep:
            idx = [i for i, v in enumerate(batch[stage.keep]) if is_usable(v)]
            if len(idx) != (len(next(iter(batch.values()))) if batch else 0):
                batch = {k: [v[i] for i in idx] for k, v in batch.items()}
    return batch


class CountingGenerator:
    """Wraps a generator to count what this run actually generated (prompts, completions, tokens, seconds)."""

    def __init__(self, inner):
        self.inner = inner
        self.backend = getattr(inner, "backend", "?")
        self.model = inner.model
        self.revision = getattr(inner, "revision", None)
        self.concurrent_calls = concurrent_calls(inner)
        self.prompts = self.completions = self.prompt_tokens = self.completion_tokens = self.calls = 0
        self.seconds = 0.0
        self._lock = threading.Lock()

    def generate(self, conversations, sampling):
        t0 = time.perf_counter()
        out = self.inner.generate(conversations, sampling)
        elapsed = time.perf_counter() - t0
        with self._lock:  # calls may overlap (several batches in flight)
            self.seconds += elapsed
            self.calls += 1
            self.prompts += len(conversations)
            for cands in out:
                self.completions += len(cands)
                for c in cands:
                    self.prompt_tokens += int(getattr(c, "prompt_tokens", 0) or 0)
                    self.completion_tokens += int(getattr(c, "completion_tokens", 0) or 0)
        return out

    @property
    def in_flight_rows(self) -> int:
        return int(getattr(self.inner, "in_flight_rows", 0) or 0)

    def fingerprint(self):
        return self.inner.fingerprint()

    def supports_structured_output(self):
        return self.inner.supports_structured_output()

    def close(self):  # the caller owns the engine
        pass


def select_final_rows(
    ds, config: SynthesisConfig, *, seen: set, produced: dict, over_quota: dict, near: NearDuplicateIndex | None = None
):
    """Duplicate removal (across chunks, through ``seen``) and the per-language quota (``config.num_examples``).

    Exact duplicates (normalised instruction or response, per language) first, then near-duplicates through
    ``near`` (MinHash LSH over the rows kept so far; its ``removed`` counts them). ``seen``, ``produced``,
    ``over_quota`` and ``near`` are updated in place.

    Returns:
        (the kept Arrow rows, the number of duplicates removed).
    """
    import pyarrow as pa

    quota = config.num_examples
    langs = column_values(ds, "language")
    instr = column_values(ds, "instruction")
    resp = column_values(ds, "response")
    keep, duplicates = [], 0
    for i, (lang, ins, res) in enumerate(zip(langs, instr, resp, strict=True)):
        if config.dedup:
            keys = [
                hashlib.blake2b(f"{tag}\0{lang}\0{dedup_key(t)}".encode(), digest_size=12).digest()
                for tag, t in (("i", ins), ("r", res))
            ]
            if any(k in seen for k in keys):
                duplicates += 1
                continue
        if near is not None and not near.add(lang, [ins, res]):
            near.removed += 1
            continue
        if config.dedup:
            seen.update(keys)
        if quota is not None and produced.get(lang, 0) >= quota:
            over_quota[lang] = over_quota.get(lang, 0) + 1
            continue
        produced[lang] = produced.get(lang, 0) + 1
        keep.append(i)
    table = to_arrow(ds)
    return (table.take(pa.array(keep, pa.int64())) if len(keep) != table.num_rows else table), duplicates


@dataclass(frozen=True)
class SynthesisPlan:
    """What a synthesis run is made of, resolved once before any engine starts and passed down: the stages, their
    checked templates (:func:`~xl_suite.synthesis.config.preflight`) and the decontamination benchmark.

    Attributes:
        config: the :class:`SynthesisConfig`.
        stages: the stage list.
        templates: stage name -> loaded and checked template.
        benchmark: the prompts the decontamination stages drop pairs against (resolved once: a Hub read at most).
        custom: True when the stage list was given (not :func:`default_stages`).
    """

    config: SynthesisConfig
    stages: list = field(default_factory=list)
    templates: dict = field(default_factory=dict)
    benchmark: Benchmark | None = None
    custom: bool = False

    def for_engines(self, generator, scorer=None) -> SynthesisPlan:
        """The same plan with the default stages configured for these engines (whether the scorer enforces JSON
        schemas); templates and benchmark are kept, since only the stages' sampling settings depend on the engines."""
        if self.custom:
            return self
        return replace(self, stages=default_stages(self.config, generator, scorer, benchmark=self.benchmark))


def plan_synthesis(
    config: SynthesisConfig,
    generator=None,
    scorer=None,
    *,
    stages: Sequence[Stage] | None = None,
    benchmark: Benchmark | None = None,
) -> SynthesisPlan:
    """Resolve a run's benchmark and stages once and check them (:func:`~xl_suite.synthesis.config.preflight`).

    ``generator``/``scorer`` are only asked whether they enforce JSON schemas (lazy engines answer without starting;
    without them the stages are unconstrained, and :meth:`SynthesisPlan.for_engines` configures them later).
    """
    if stages is None:
        if benchmark is None:
            benchmark = resolve_benchmark(config.decontaminate_against, enabled=config.decontaminate)
        stages = default_stages(config, generator, scorer, benchmark=benchmark)
        custom = False
    else:
        stages, custom = list(stages), True
        if not any(s.function is decontaminate_batch for s in stages):
            benchmark = Benchmark(enabled=False, note="the custom stage list has no decontamination stage")
        elif benchmark is None:
            benchmark = resolve_benchmark(config.decontaminate_against, enabled=config.decontaminate)
    return SynthesisPlan(config, list(stages), preflight(config, stages), benchmark, custom)


def _with_languages(fingerprint: str, languages: str) -> str:
    return stable_hash(fingerprint, languages) if languages else fingerprint


@dataclass
class ChunkRun:
    """What :meth:`SynthesisRun.process` did with one seed chunk.

    Attributes:
        done: ``(stage, kept rows)`` of each stage that ran, in order (what the release shapes snapshot).
        final: the rows that went through every stage, or None when the chunk stopped before (emptied, or the run
            stopped).
        stats: stage name -> this chunk's :class:`~xl_suite.run.stats.StageStats` (also merged into the run's):
            counts, statuses and the store files holding the stage's output (``stored_files``).
    """

    done: list = field(default_factory=list)
    final: Any = None
    stats: dict = field(default_factory=dict)


class SynthesisRun:
    """The state of one :func:`synthesize` call: engines, stages, per-stage reports, quotas and the writer.

    Its methods are the pipeline's steps; :func:`synthesize` calls them in order.
    """

    def __init__(
        self,
        config: SynthesisConfig,
        generator,
        scorer,
        stages: Sequence[Stage],
        *,
        output,
        work_dir,
        storage_options,
        benchmark: Benchmark | None = None,
        templates: dict | None = None,
    ):
        from xl_suite.runner import StageStats

        self.config, self.generator, self.scorer = config, generator, scorer or generator
        self.stages = list(stages)
        self.engines = {"generator": generator, "scorer": self.scorer}
        # checked once: by the plan when one was made (plan_synthesis), else here
        self.templates = templates if templates is not None else preflight(config, self.stages)
        self.counters = {s.name: CountingGenerator(self.engines[s.engine]) for s in self.stages if s.engine}
        # A target language that is not built in enters every stage's key: its definition (names, request) is
        # rendered into prompts, and a redefined language must not be served from the cache of the old one.
        languages = language_fingerprint(config.languages)
        self.fingerprints = {
            s.name: _with_languages(
                stage_fingerprint(s, self.templates.get(s.name), self.engines[s.engine] if s.engine else None),
                languages,
            )
            for s in self.stages
        }
        self.output, self.storage_options = output, storage_options
        self.work_dir = (
            work_dir if work_dir is not None or output is None else f"{str(output).rstrip('/')}/.xl_suite_work"
        )
        #: One :class:`~xl_suite.run.stats.StageStats` per stage: each run_stage call's merged in, then what the
        #: pipeline records of the stage's output (statuses, tokens, kept and dropped rows, wall time).
        self.stats = {s.name: StageStats(stage=s.name) for s in self.stages}
        self.writer = ShapeWriter(output, storage_options)
        self.produced = dict.fromkeys(config.languages, 0)
        self.over_quota = dict.fromkeys(config.languages, 0)
        self.seen: set[bytes] = set()
        self.near = NearDuplicateIndex(config.near_dedup_threshold) if config.near_dedup else None
        self.benchmark = benchmark
        self.duplicates = self.final_in = self.processed = 0
        self.stopped_early = False
        self.seed_counts = None
        self.lock = threading.Lock()
        self.stop = threading.Event()
        #: Lock a local work dir per stage; off in Ray workers, which share the work dir of one run.
        self.lock_work_dir = True
        #: Recompute stored rows with a failure status (``run_stage``'s ``retry_failed``; ``synthesize(retry_failed=)``).
        self.retry_failed = True
        # Chunks that run at once (see _lookahead): with engines that take concurrent calls, the next chunks' first
        # stages run while the current chunk's later stages finish, so no stage boundary drains the engine.
        self.lookahead = _lookahead(self.engines.values(), config.chunk_size)

    def process(self, chunk) -> ChunkRun:
        """Run every stage over one seed chunk (on a worker thread when chunks overlap).

        Returns a :class:`ChunkRun`; the caller applies it in chunk order (:meth:`snapshot`, :meth:`finish_chunk`).
        """
        from xl_suite.run.stats import StageStats

        result, ds = ChunkRun(), chunk
        for stage in self.stages:
            if ds.num_rows == 0 or self.stop.is_set():
                return result
            t0 = time.perf_counter()
            stats = StageStats(stage=stage.name)  # this chunk's; merged below (chunks may run on two threads)
            out = self.record(stage, ds.num_rows, self.run(stage, ds, stats), stats)
            stats.wall_seconds += time.perf_counter() - t0
            with self.lock:
                self.stats[stage.name].merge(stats)
            result.stats[stage.name] = stats
            result.done.append((stage, out))
            ds = out
        result.final = ds
        return result

    # -- the steps -------------------------------------------------------------------------------------------

    def run(self, stage: Stage, ds, stats=None):
        """Run one stage over one chunk through the resumable, cached ``run_stage``; its counts go to ``stats`` (a
        :class:`~xl_suite.run.stats.StageStats`), or straight into the run's when None."""
        from xl_suite.runner import StageStats, run_stage

        fn_kwargs = dict(stage.params)
        if stage.engine:
            fn_kwargs.update(
                generator=self.counters[stage.name], template=self.templates[stage.name], sampling=stage.sampling
            )
        into = stats
        stats = StageStats(stage=stage.name)  # this call's; merged below (chunks may run on two threads)
        out = run_stage(
            ds,
            stage.function,
            stage=stage.name,
            fingerprint=self.fingerprints[stage.name],
            work_dir=self.work_dir,
            fn_kwargs=fn_kwargs,
            batch_size=self.config.batch_size,
            chunk_size=self.config.chunk_size,
            remove_columns=ds.column_names if stage.reshape else None,
            storage_options=self.storage_options,
            desc=stage.name,
            stats=stats,
            lock=self.lock_work_dir,
            retry_failed=self.retry_failed,
        )
        if into is not None:
            into.merge(stats)
        else:
            with self.lock:
                self.stats[stage.name].merge(stats)
        return normalised(out)

    def record(self, stage: Stage, rows_in: int, out, stats=None):
        """Count statuses, tokens and dropped rows into ``stats`` (or the run's when None); apply the stage's keep
        filter. Returns the kept rows."""
        if stats is not None:
            return self._record(stage, rows_in, out, stats)
        with self.lock:  # counts only: the same totals whatever order chunks finish in
            return self._record(stage, rows_in, out, self.stats[stage.name])

    def _record(self, stage: Stage, rows_in: int, out, report):
        # rows_in: counted by run_stage, merged in run()
        prefix = stage.column_prefix
        if f"{prefix}_status" in out.column_names:
            count_status(column_values(out, f"{prefix}_status"), report.status)
        if f"{prefix}_repaired" in out.column_names:  # replies read only after the JSON repair step
            flags = column_values(out, f"{prefix}_repaired")
            report.json_repaired += sum(sum(f) if isinstance(f, list) else bool(f) for f in flags)
        for attr in ("prompt_tokens", "completion_tokens"):
            if f"{prefix}_{attr}" in out.column_names:
                setattr(report, attr, getattr(report, attr) + sum(column_values(out, f"{prefix}_{attr}")))
        if stage.keep:
            if stage.keep not in out.column_names:
                raise InvalidArgumentError(
                    f"Stage {stage.name!r} keeps rows by column {stage.keep!r}, which its "
                    f"function did not return (columns: {out.column_names})."
                )
            kept = keep_rows(out, stage.keep)
            report.dropped += out.num_rows - kept.num_rows
            out = kept
        report.kept += out.num_rows
        return out

    def snapshot(self, stage: Stage, out) -> None:
        """Append the stage's kept rows to its release shape file (``scored``/``bestof3``), if it has one."""
        if stage.snapshot == "scored":
            self.writer.append(SNAPSHOT_FILES["scored"], shape_table("scored", to_arrow(out)))
        elif stage.snapshot == "bestof3":
            append_by_language(
                self.writer, SNAPSHOT_FILES["bestof3"], shape_table("bestof3", to_arrow(out)), self.config.languages
            )

    def finish_chunk(self, ds) -> None:
        """Remove duplicates, apply the per-language quota and append the default shape."""
        self.final_in += ds.num_rows
        table, duplicates = select_final_rows(
            ds, self.config, seen=self.seen, produced=self.produced, over_quota=self.over_quota, near=self.near
        )
        self.duplicates += duplicates
        append_by_language(
            self.writer, SNAPSHOT_FILES["default"], shape_table("default", table), self.config.languages
        )

    def quota_reached(self) -> bool:
        """True when every language has ``num_examples`` pairs."""
        quota = self.config.num_examples
        return quota is not None and all(v >= quota for v in self.produced.values())

    def write(self) -> dict[str, str]:
        """Close the shape files (languages without rows get empty files with a known schema)."""
        known = dict(self.writer.schemas)
        languages = self.config.languages
        expected = [SNAPSHOT_FILES["default"].format(code=c) for c in languages]
        if any(s.snapshot == "bestof3" for s in self.stages):
            expected += [SNAPSHOT_FILES["bestof3"].format(code=c) for c in languages]
        if any(s.snapshot == "scored" for s in self.stages):
            expected.append(SNAPSHOT_FILES["scored"])
        return self.writer.close(expected, lambda name: fallback_schema(name, known))

    def summary(self, *, seeds_rows: int, seconds: float, seed_source: str | None, text_column: str) -> dict:
        """The summary of the finished run, as ``summary.json`` holds it (:func:`~xl_suite.synthesis.report.build_summary`)."""
        summary = build_summary(
            self, seeds_rows=seeds_rows, seconds=seconds, seed_source=seed_source, text_column=text_column
        )
        return json.loads(json.dumps(summary, default=str))  # the same object as summary.json (lists, not tuples)

    def result(self, summary: dict, files: dict[str, str]) -> SynthesisResult:
        """Write ``summary.json``, log the summary's warnings and return the :class:`SynthesisResult`."""
        summary_url = self.writer.write_json("summary.json", summary)
        if summary_url:
            files["summary.json"] = summary_url
        for warning in summary["warnings"]:
            logger.warning(warning)
        tables = {} if self.output else {name: self.writer.table(name) for name in self.writer.schemas}
        return SynthesisResult(
            summary=summary, files=files, output=self.output, _tables=tables, storage_options=self.storage_options
        )


def _lookahead(engines, chunk_size: int, most: int = 16) -> int:
    """Seed chunks in flight at once: 1 unless every engine takes concurrent calls; then twice the chunks that hold
    the engines' preferred number of requests in flight (``in_flight_rows``), at least 2 and at most ``most``.

    Twice (:data:`xl_suite.run.scheduler.HOLD_FACTOR`), because a chunk in flight holds requests of one stage at a
    time and ever fewer of them as that stage's shorter answers finish: it waits for its longest answer before its
    next stage starts. With only as many chunks as fill the engine, the run's last chunks went through their stages
    nearly alone, on a part-empty engine. A killed run loses at most the engine calls
    in flight, not whole chunks: each chunk's stage outputs are stored as each stage finishes, and within a stage
    each finished call as a piece file (:func:`xl_suite.run.scheduler.run_stage`).

    >>> class E:
    ...     concurrent_calls, in_flight_rows = True, 512
    >>> _lookahead([E()], 1024), _lookahead([E()], 256), _lookahead([E()], 96), _lookahead([object()], 64)
    (2, 4, 12, 1)
    """
    from xl_suite.run.scheduler import HOLD_FACTOR

    engines = [e for e in engines if e is not None]
    if not engines or not all(concurrent_calls(e) for e in engines):
        return 1
    rows = max(int(getattr(e, "in_flight_rows", 0) or 0) for e in engines)
    return min(most, max(2, HOLD_FACTOR * -(-rows // max(chunk_size, 1))))


def _in_order(items, work, lookahead: int, stop: threading.Event | None = None):
    """Yield ``(item, work(item))`` in input order, with up to ``lookahead`` items being worked on at once.

    With ``lookahead`` 1 everything runs on this thread. Otherwise each item runs on a daemon thread, so a Ctrl-C
    never waits for one. A new item starts as soon as *any* running item finishes, not only the oldest: a slow chunk
    at the head (its longest answers) never leaves the engine with fewer chunks to work on. Finished items wait, in
    memory, for the ones before them; at most ``2 * lookahead`` items are started and not yet yielded. When the
    caller stops early, ``stop`` is set and the items already started are waited for (``work`` checks ``stop``
    between its steps). The first error is raised here, in order. ``items`` is consumed on this thread only.
    """
    import queue as queue_module
    from collections import deque
    from concurrent.futures import Future

    if lookahead <= 1:
        for item in items:
            yield item, work(item)
        return

    finished: queue_module.SimpleQueue = queue_module.SimpleQueue()  # one token per item that ends

    def start(item):
        future: Future = Future()

        def target():
            try:
                future.set_result(work(item))
            except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
                future.set_exception(e)
            finally:
                finished.put(None)

        threading.Thread(target=target, name="xl-suite-chunk", daemon=True).start()
        return item, future

    started: deque = deque()  # items started and not yet yielded, in input order
    source = iter(items)
    exhausted = False
    try:
        while True:
            while not exhausted and len(started) < 2 * lookahead:
                if sum(not f.done() for _, f in started) >= lookahead:
                    break
                nxt = next(source, _END)
                if nxt is _END:
                    exhausted = True
                    break
                started.append(start(nxt))
            if not started:
                return
            item, future = started[0]
            if future.done():
                started.popleft()
                yield item, future.result()
                continue
            finished.get()  # an item ended (maybe one already seen): look again
    except GeneratorExit:  # the caller stopped early (quota reached): let started items end at a stage boundary
        if stop is not None:
            stop.set()
        for _, future in started:
            future.exception()  # waits; its error, if any, no longer matters
        raise
    except BaseException:  # an item failed: the others stop at their next stage boundary (daemons, not waited for)
        if stop is not None:
            stop.set()
        raise


_END = object()


def synthesize(
    seeds,
    generator,
    config: SynthesisConfig | None = None,
    *,
    output: str | None = None,
    work_dir: str | None = None,
    storage_options: dict | None = None,
    scorer=None,
    stages: Sequence[Stage] | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    progress: bool = False,
    seed_source: str | None = None,
    max_error_rate: float | None = None,
    retry_failed: bool = True,
    plan: SynthesisPlan | None = None,
) -> SynthesisResult:
    """Run the synthesis pipeline over seed passages.

    Args:
        seeds: a ``datasets.Dataset`` with ``text_column`` (see :func:`xl_suite.synthesis.seeds.load_seeds`).
        generator: the engine (:class:`xl_suite.engines.base.Generator`) for generation stages; not closed here.
        config: :class:`SynthesisConfig` (default: all defaults).
        output: folder or fsspec URL for ``<code>.parquet``, ``<code>_bestof3.parquet``, ``en_scored.parquet`` and
            ``summary.json``; ``None`` keeps the results in memory.
        work_dir: folder/URL of the resumable chunk files (default ``<output>/.xl_suite_work``; ``None`` without
            output: nothing is cached).
        storage_options: fsspec options for ``output`` and ``work_dir``.
        scorer: engine of the scoring stages (default: ``generator``).
        stages: replace the stage list (default :func:`default_stages`); see :class:`Stage`.
        text_column: seed column holding the passages.
        id_column: seed column with row ids (default ``id`` when present).
        progress: show a progress bar over the seeds.
        seed_source: recorded in the summary.
        max_error_rate: the largest share of failed LLM outputs (unparsed, empty, error, too long) that passes;
            above it :class:`~xl_suite.errors.FailureRateError` is raised once everything is written (its
            ``result`` holds the :class:`SynthesisResult`), within it a warning is logged. ``None`` (default):
            not checked, the failures are only counted in ``summary["failures"]`` (the check is
            :func:`~xl_suite.synthesis.report.check_failures`, as ``xl-suite synthesize --max-error-rate``).
        retry_failed: recompute the rows a stored chunk holds with a failure status (default True; a rerun
            retries them, up to 3 attempts per row). False takes the stored rows as they are.
        plan: the run's :class:`SynthesisPlan` when the caller already made it (:func:`plan_synthesis`, e.g. to
            check everything before starting engines): its benchmark and checked templates are used as they are,
            nothing is resolved or checked again. Give either ``plan`` or ``stages``.

    Returns:
        A :class:`SynthesisResult`.

    Raises:
        xl_suite.synthesis.seeds.SeedError: missing text column, empty seeds.
        xl_suite.prompting.TemplateError: a template that cannot be loaded or uses an undefined variable.
        xl_suite.errors.GenerationError: the engine failed (completed chunks stay cached; rerun to continue).
        xl_suite.errors.FailureRateError: more failed LLM outputs than ``max_error_rate`` (everything is written).
        xl_suite.errors.LockError: another process is writing ``output`` or the work dir.
    """
    from xl_suite.runner import check_error_rate_value
    from xl_suite.safety import lock_folders
    from xl_suite.synthesis.seeds import check_text_column

    t_start = time.perf_counter()
    config = config or SynthesisConfig()
    if max_error_rate is not None:
        check_error_rate_value(max_error_rate, "max_error_rate")
    check_text_column(seeds, text_column)
    if plan is not None and stages is not None:
        raise InvalidArgumentError("Give either plan= or stages= (a plan holds its stages), not both.")
    if plan is not None and plan.config != config:
        raise InvalidArgumentError("plan= was made for another SynthesisConfig; make it with plan_synthesis(config).")
    if plan is None:
        plan = plan_synthesis(config, generator, scorer, stages=stages)
    else:
        plan = plan.for_engines(generator, scorer)
    stages = plan.stages
    run = SynthesisRun(
        config,
        generator,
        scorer,
        stages,
        output=output,
        work_dir=work_dir,
        storage_options=storage_options,
        benchmark=plan.benchmark,
        templates=plan.templates,
    )
    run.retry_failed = retry_failed
    # One run per output folder and work dir, for the whole run (not only per stage): a second run on either
    # fails at once with a LockError naming this one.
    with lock_folders([output, run.work_dir], purpose="xl-suite synthesize", storage_options=storage_options):
        result = _synthesize_locked(
            run, seeds, config, stages, output, storage_options, text_column, id_column, progress, seed_source, t_start
        )
    if max_error_rate is not None:
        check_result_failures(result, max_error_rate)
    return result


def check_result_failures(result: SynthesisResult, max_error_rate: float) -> None:
    """Log the failed-output warning of a written run, or raise its FailureRateError with ``result`` attached
    (:func:`~xl_suite.synthesis.report.check_failures`)."""
    from xl_suite.errors import FailureRateError
    from xl_suite.synthesis.report import check_failures

    try:
        warning = check_failures(result.summary, max_error_rate)
    except FailureRateError as e:
        e.result = result
        raise
    if warning:
        logger.warning(warning)


def _synthesize_locked(
    run, seeds, config, stages, output, storage_options, text_column, id_column, progress, seed_source, t_start
) -> SynthesisResult:
    from xl_suite.synthesis.seeds import SeedCounts, iter_seed_chunks

    run.seed_counts = SeedCounts()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = seeds.num_rows if config.seed_limit is None else min(seeds.num_rows, config.seed_limit)
        bar = tqdm(total=total, desc="synthesize", unit="seed")
    try:
        chunks = iter_seed_chunks(
            seeds,
            text_column=text_column,
            chunk_size=config.chunk_size,
            max_seeds=config.seed_limit,
            id_column=id_column,
            counts=run.seed_counts,
        )
        for chunk, processed in _in_order(chunks, run.process, run.lookahead, run.stop):
            run.processed += chunk.num_rows
            for stage, out in processed.done:
                run.snapshot(stage, out)
            if processed.final is not None:
                run.finish_chunk(processed.final)
            if bar is not None:
                bar.update(chunk.num_rows)
            if run.quota_reached():
                run.stopped_early = True
                break
        files = run.write()
    except BaseException:
        run.writer.abort()
        raise
    finally:
        if bar is not None:
            bar.close()
    summary = run.summary(
        seeds_rows=seeds.num_rows,
        seconds=time.perf_counter() - t_start,
        seed_source=seed_source,
        text_column=text_column,
    )
    return run.result(summary, files)
