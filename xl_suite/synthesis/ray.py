"""The synthesis stages on Ray Data, for runs that outgrow one machine.

The same :class:`~xl_suite.synthesis.Stage` objects and pure batched functions as :func:`xl_suite.synthesis.synthesize`
run over ``ray.data.Dataset.map_batches``, with a **pool of engine actors** (:class:`EngineActor`): each actor
builds its engines once (from picklable factories, e.g. :func:`engine_factory`) and applies stages to blocks with
:func:`xl_suite.synthesis.apply_stages`. Data goes in with ``ray.data.from_huggingface`` and comes back as a
``datasets.Dataset``; duplicate removal, the per-language quota and the release shapes (``en_scored``,
``<code>_bestof3``, ``<code>``) are then done on the driver with the code of the local pipeline.

The stage list is cut into segments at the snapshot stages (``scored``, ``bestof3``): each segment is one
``map_batches`` whose light tasks hand each block to an engine actor (segments without an engine run as plain
tasks), and is materialized so its snapshot can be written. The actors live for the whole run, so each engine
starts once, and are closed (engine processes included) at the end.

Why not ``ray.data.llm.build_processor``: its vLLM processor (which works on CPU with the settings in
``shared/ENVIRONMENT.md`` section 5) owns prompt building and output handling through its own
``preprocess``/``postprocess`` row functions and its own engine options, so the stage functions, their parsers,
per-row provenance and the engine fingerprint would have to be duplicated there. The actor pool reuses the stage
functions as they are; :func:`ray_init_kwargs` gives the CPU settings both approaches need.

Differences from the local pipeline: no chunk cache (Ray retries failed tasks; an interrupted run starts over), and
the seeds are prepared (empty/duplicate removal, ``max_seeds``) on the driver.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from xl_suite.errors import InvalidArgumentError
from xl_suite.synthesis.config import Stage, SynthesisConfig, check_templates, default_stages
from xl_suite.synthesis.decontamination import NearDuplicateIndex
from xl_suite.synthesis.outputs import (
    SNAPSHOT_FILES,
    ShapeWriter,
    SynthesisResult,
    append_by_language,
    fallback_schema,
    shape_table,
)
from xl_suite.synthesis.pipeline import apply_stages, select_final_rows


logger = logging.getLogger(__name__)

__all__ = ["synthesize_ray", "engine_factory", "ray_init_kwargs", "split_segments", "EngineActor"]

#: Environment a vLLM engine needs inside Ray workers on a small CPU machine (ENVIRONMENT.md section 5).
CPU_ENGINE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
}


def ray_init_kwargs(num_cpus: int = 8, env: dict[str, str] | None = None) -> dict:
    """Keyword arguments for ``ray.init`` on a small CPU machine.

    ``num_cpus`` over-subscribes the logical CPUs (with 2, the actors of an LLM pipeline wait for each other), the
    dashboard is off, and workers inherit the engine environment (:data:`CPU_ENGINE_ENV`, overridable by ``env``).

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

    >>> engine_factory("fake", "m")().model
    'm'
    """
    from xl_suite.engines.registry import build_generator

    return functools.partial(build_generator, backend, model, **kwargs)


def split_segments(stages: Sequence[Stage]) -> list[list[Stage]]:
    """Cut the stage list after each snapshot stage.

    >>> from xl_suite.synthesis import default_stages, SynthesisConfig
    >>> segments = split_segments(default_stages(SynthesisConfig(languages=("mt",))))
    >>> [[s.name for s in seg] for seg in segments]  # doctest: +NORMALIZE_WHITESPACE
    [['backtranslate', 'refine', 'decontaminate', 'score'], ['score_filter', 'expand', 'respond', 'judge'],
     ['language_check', 'decontaminate_target']]
    """
    segments: list[list[Stage]] = [[]]
    for stage in stages:
        segments[-1].append(stage)
        if stage.snapshot:
            segments.append([])
    return [s for s in segments if s]


class EngineActor:
    """Holds the engines (built once from picklable factories) and applies any segment of stages to a block.

    Used as a Ray actor (``ray.remote(EngineActor)``) shared by every segment of a run, so each engine starts once
    per run, not once per segment; :meth:`close` shuts the engines down cleanly at the end.
    """

    def __init__(self, segments: Sequence[Sequence[Stage]], generator_factory=None, scorer_factory=None):
        from xl_suite.prompting import load_template

        self.segments = [list(seg) for seg in segments]
        stages = [s for seg in self.segments for s in seg]
        needs = {s.engine for s in stages if s.engine}
        self.engines: dict[str, Any] = {}
        if "generator" in needs or ("scorer" in needs and scorer_factory is None):
            if generator_factory is None:
                raise InvalidArgumentError("These stages call an engine: pass generator_factory.")
            self.engines["generator"] = generator_factory()
        if "scorer" in needs:
            self.engines["scorer"] = scorer_factory() if scorer_factory is not None else self.engines["generator"]
        self.templates = {s.name: load_template(s.template) for s in stages if s.template is not None}

    def apply(self, table, segment: int):
        """Run segment ``segment`` on a ``pyarrow.Table`` and return a ``pyarrow.Table``."""
        import pyarrow as pa

        out = apply_stages(table.to_pydict(), self.segments[segment], engines=self.engines, templates=self.templates)
        return pa.Table.from_pydict(out)

    def close(self) -> bool:
        """Shut the engines down (vLLM engine processes included)."""
        for engine in {id(e): e for e in self.engines.values()}.values():
            engine.close()
        self.engines = {}
        return True


def _forward(batch, *, actors, segment: int):
    """Ray Data task: send a block to one of the engine actors (chosen by the block's first seed) and wait."""
    import ray

    if batch.num_rows == 0:
        return batch
    actor = actors[int(batch.column("seed_index")[0].as_py()) % len(actors)]
    return ray.get(actor.apply.remote(batch, segment))


class _Structured:
    """Answers :func:`default_stages`' only question to an engine, on the driver."""

    def __init__(self, value: bool):
        self.value = value

    def supports_structured_output(self) -> bool:
        return self.value


def _plain(batch, stages):
    import pyarrow as pa

    return pa.Table.from_pydict(apply_stages(batch.to_pydict(), stages, engines={}, templates={}))


def _to_hf(ray_ds):
    """Collect a Ray dataset into a ``datasets.Dataset`` (Arrow blocks, empty ones skipped, types unified)."""
    import datasets
    import pyarrow as pa
    import ray

    tables = [t for t in ray.get(ray_ds.to_arrow_refs()) if t.num_rows]
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="default")
    return datasets.Dataset(table)


def synthesize_ray(
    seeds,
    generator_factory: Callable[[], Any],
    config: SynthesisConfig | None = None,
    *,
    scorer_factory: Callable[[], Any] | None = None,
    stages: Sequence[Stage] | None = None,
    output: str | None = None,
    storage_options: dict | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    num_actors: int = 1,
    num_cpus_per_actor: float = 1,
    ray_remote_args: dict | None = None,
    structured_outputs: bool = False,
) -> SynthesisResult:
    """Run the synthesis stages on Ray Data (``ray.init`` must have been called).

    Args:
        seeds: a ``datasets.Dataset`` with ``text_column``.
        generator_factory: builds the generation engine inside each actor (:func:`engine_factory`).
        config: :class:`~xl_suite.synthesis.SynthesisConfig`.
        scorer_factory: builds the scoring engine (default: the generator's engine, shared in the actor).
        stages: replace the stage list (default :func:`~xl_suite.synthesis.default_stages`).
        output: folder/URL for the same files as the local pipeline (``None``: kept in memory).
        storage_options: fsspec options for ``output``.
        text_column: seed column with the passages.
        id_column: seed column with row ids (default ``id`` when present).
        num_actors: engine actors (each holds its own engines), shared by every segment.
        num_cpus_per_actor: logical CPUs each actor requests.
        ray_remote_args: extra Ray options for the actors (e.g. ``{"num_gpus": 1}`` or a ``runtime_env``).
        structured_outputs: constrain the scoring stages to their JSON schema (for backends that support it, such
            as vLLM and OpenAI). The engines only exist inside the actors, so the driver cannot ask them; default
            False (the parser then reads free text).

    Returns:
        A :class:`~xl_suite.synthesis.SynthesisResult` (summary with rows in/out per segment).
    """
    import datasets
    import pyarrow as pa
    import ray

    from xl_suite.prompting import load_template
    from xl_suite.synthesis.seeds import SeedCounts, iter_seed_chunks

    t_start = time.perf_counter()
    config = config or SynthesisConfig()
    stages = list(stages) if stages is not None else default_stages(config, _Structured(structured_outputs))
    templates = {s.name: load_template(s.template) for s in stages if s.template is not None}
    check_templates(stages, templates, language=config.languages[0])
    counts = SeedCounts()
    parts = list(
        iter_seed_chunks(
            seeds,
            text_column=text_column,
            chunk_size=max(config.chunk_size, 1),
            max_seeds=config.seed_limit,
            id_column=id_column,
            counts=counts,
        )
    )
    prepared = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    prepared = prepared.add_column("seed_index", list(range(prepared.num_rows)))
    ds = ray.data.from_huggingface(prepared)
    segments = split_segments(stages)
    actors = []
    if any(s.engine for s in stages):
        remote_cls = ray.remote(num_cpus=num_cpus_per_actor, **(ray_remote_args or {}))(EngineActor)
        actors = [remote_cls.remote(segments, generator_factory, scorer_factory) for _ in range(num_actors)]
    writer = ShapeWriter(output, storage_options)
    report = []
    lang_pos = {code: i for i, code in enumerate(config.languages)}
    final = None
    try:
        rows_in = prepared.num_rows
        for index, segment in enumerate(segments):
            t0 = time.perf_counter()
            if any(s.engine for s in segment):
                ds = ds.map_batches(
                    _forward,
                    fn_kwargs={"actors": actors, "segment": index},
                    batch_size=config.batch_size,
                    batch_format="pyarrow",
                    num_cpus=0.25,
                )
            else:
                ds = ds.map_batches(
                    _plain, fn_kwargs={"stages": segment}, batch_size=config.batch_size, batch_format="pyarrow"
                )
            ds = ds.materialize()
            hf = _to_hf(ds)
            if hf is not None:  # Ray does not keep row order: restore the local pipeline's (seed, language) order
                seed_idx = hf["seed_index"][:]
                langs = hf["language"][:] if "language" in hf.column_names else [None] * hf.num_rows
                order = sorted(range(hf.num_rows), key=lambda i: (seed_idx[i], lang_pos.get(langs[i], -1)))
                hf = hf.select(order).flatten_indices()
            rows_out = hf.num_rows if hf is not None else 0
            report.append(
                {
                    "segment": [s.name for s in segment],
                    "rows_in": rows_in,
                    "rows_out": rows_out,
                    "seconds": round(time.perf_counter() - t0, 3),
                }
            )
            rows_in = rows_out
            snapshot = segment[-1].snapshot
            table = hf.with_format("arrow")[:].drop_columns(["seed_index"]) if hf is not None else pa.table({})
            if snapshot == "scored" and hf is not None:
                writer.append(SNAPSHOT_FILES["scored"], shape_table("scored", table))
            elif snapshot == "bestof3" and hf is not None:
                append_by_language(writer, SNAPSHOT_FILES["bestof3"], shape_table("bestof3", table), config.languages)
            final = hf
            if hf is None:
                break
        produced = dict.fromkeys(config.languages, 0)
        over_quota = dict.fromkeys(config.languages, 0)
        duplicates = 0
        near = NearDuplicateIndex(config.near_dedup_threshold) if config.near_dedup else None
        if final is not None and "language" in final.column_names:
            final = final.remove_columns(["seed_index"])
            table, duplicates = select_final_rows(
                final, config, seen=set(), produced=produced, over_quota=over_quota, near=near
            )
            append_by_language(writer, SNAPSHOT_FILES["default"], shape_table("default", table), config.languages)
        known = dict(writer.schemas)
        expected = [SNAPSHOT_FILES["default"].format(code=c) for c in config.languages]
        files = writer.close(expected, lambda name: fallback_schema(name, known))
    except BaseException:
        writer.abort()
        raise
    finally:
        if actors:
            try:
                ray.get([a.close.remote() for a in actors], timeout=120)
            finally:
                for a in actors:
                    ray.kill(a)
    summary = {
        "engine": "ray",
        "config": config.to_dict(),
        "seeds": {"rows_available": seeds.num_rows, **counts.to_dict()},
        "segments": report,
        "final": {
            "duplicates_removed": duplicates,
            "near_duplicates_removed": near.removed if near is not None else 0,
            "over_quota": over_quota,
        },
        "languages": {
            c: {
                "requested": config.num_examples,
                "produced": produced[c],
                "shortfall": max(0, (config.num_examples or 0) - produced[c]),
            }
            for c in config.languages
        },
        "files": dict(sorted(writer.rows.items())),
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    url = writer.write_json("summary.json", summary)
    if url:
        files["summary.json"] = url
    tables = {} if output else {name: writer.table(name) for name in writer.schemas}
    return SynthesisResult(
        summary=summary, files=files, output=output, _tables=tables, storage_options=storage_options
    )
