"""The synthesis stages on Ray Data, for runs that outgrow one machine.

The same :class:`~xl_suite.synthesis.Stage` objects and pure batched functions as :func:`xl_suite.synthesis.synthesize`
run inside ``ray.data.Dataset.map_batches`` with an **actor pool**: each actor builds its engine once (from a
picklable factory, e.g. :func:`engine_factory`) and applies a run of stages to every block with
:func:`xl_suite.synthesis.apply_stages`. Data goes in with ``ray.data.from_huggingface`` and comes back as a
``datasets.Dataset``; duplicate removal, the per-language quota and the release shapes (``en_scored``,
``<code>_bestof3``, ``<code>``) are then done on the driver with the code of the local pipeline.

The stage list is cut into segments at the snapshot stages (``scored``, ``bestof3``): each segment is one
``map_batches`` (an actor pool when it calls an engine, plain tasks otherwise) and is materialized so its snapshot
can be written. Two engine segments mean two actor pools, so each engine is started once per segment.

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

from xl_suite.synthesis import (
    SNAPSHOT_FILES,
    Stage,
    SynthesisConfig,
    SynthesisResult,
    _append_by_language,
    _fallback_schema,
    _final_rows,
    _shape,
    _ShapeWriter,
    apply_stages,
    check_templates,
    default_stages,
)


logger = logging.getLogger(__name__)

__all__ = ["synthesize_ray", "engine_factory", "ray_init_kwargs", "split_segments", "StagesActor"]

#: Environment a vLLM engine needs inside Ray workers on a small CPU machine (ENVIRONMENT.md section 5).
CPU_ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                  "HF_HUB_OFFLINE": "1"}


def ray_init_kwargs(num_cpus: int = 8, env: dict[str, str] | None = None) -> dict:
    """Keyword arguments for ``ray.init`` on a small CPU machine.

    ``num_cpus`` over-subscribes the logical CPUs (with 2, the actors of an LLM pipeline wait for each other), the
    dashboard is off, and workers inherit the engine environment (:data:`CPU_ENGINE_ENV`, overridable by ``env``).

    >>> ray_init_kwargs(4)["num_cpus"]
    4
    """
    env_vars = {**CPU_ENGINE_ENV, **{k: v for k, v in os.environ.items() if k in CPU_ENGINE_ENV}, **(env or {})}
    return {"num_cpus": num_cpus, "include_dashboard": False, "runtime_env": {"env_vars": env_vars},
            "log_to_driver": False}


def engine_factory(backend: str, model: str, **kwargs) -> Callable[[], Any]:
    """A picklable factory that builds an engine inside a Ray actor (:func:`xl_suite.generation.build_generator`).

    >>> engine_factory("fake", "m")().model
    'm'
    """
    from xl_suite.generation import build_generator

    return functools.partial(build_generator, backend, model, **kwargs)


def split_segments(stages: Sequence[Stage]) -> list[list[Stage]]:
    """Cut the stage list after each snapshot stage.

    >>> from xl_suite.synthesis import default_stages, SynthesisConfig
    >>> [[s.name for s in seg] for seg in split_segments(default_stages(SynthesisConfig(languages=("mt",))))]
    [['backtranslate', 'refine', 'score'], ['score_filter', 'expand', 'respond', 'judge'], ['language_check']]
    """
    segments: list[list[Stage]] = [[]]
    for stage in stages:
        segments[-1].append(stage)
        if stage.snapshot:
            segments.append([])
    return [s for s in segments if s]


class StagesActor:
    """Ray Data actor: builds the engines once, then applies its stages to every block (a ``pyarrow.Table``)."""

    def __init__(self, stages: Sequence[Stage], generator_factory=None, scorer_factory=None):
        from xl_suite.prompting import load_template

        self.stages = list(stages)
        needs = {s.engine for s in self.stages if s.engine}
        self.engines: dict[str, Any] = {}
        if "generator" in needs or ("scorer" in needs and scorer_factory is None):
            if generator_factory is None:
                raise ValueError("These stages call an engine: pass generator_factory.")
            self.engines["generator"] = generator_factory()
        if "scorer" in needs:
            self.engines["scorer"] = scorer_factory() if scorer_factory is not None else self.engines["generator"]
        self.templates = {s.name: load_template(s.template) for s in self.stages if s.template is not None}

    def __call__(self, batch):
        import pyarrow as pa

        out = apply_stages(batch.to_pydict(), self.stages, engines=self.engines, templates=self.templates)
        return pa.Table.from_pydict(out)

    def __del__(self):
        for engine in {id(e): e for e in getattr(self, "engines", {}).values()}.values():
            try:
                engine.close()
            except Exception:  # interpreter shutdown: best effort
                pass


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
) -> SynthesisResult:
    """Run the synthesis stages on Ray Data (``ray.init`` must have been called).

    Args:
        seeds: a ``datasets.Dataset`` with ``text_column``.
        generator_factory: builds the generation engine inside each actor (:func:`engine_factory`).
        config: :class:`~xl_suite.synthesis.SynthesisConfig`.
        scorer_factory: builds the scoring engine (default: the generator's engine, shared in the actor).
        stages: replace the stage list (default :func:`~xl_suite.synthesis.default_stages`; the generator is
            not available on the driver, so structured outputs for the scoring stages are requested only when
            ``default_stages`` is given a generator: pass your own ``stages`` built with one to get them).
        output: folder/URL for the same files as the local pipeline (``None``: kept in memory).
        storage_options: fsspec options for ``output``.
        text_column: seed column with the passages.
        id_column: seed column with row ids (default ``id`` when present).
        num_actors: actors (engines) per engine segment.
        num_cpus_per_actor: logical CPUs each actor requests.
        ray_remote_args: extra Ray options for the actors (e.g. ``{"num_gpus": 1}`` or a ``runtime_env``).

    Returns:
        A :class:`~xl_suite.synthesis.SynthesisResult` (summary with rows in/out per segment).
    """
    import datasets
    import pyarrow as pa
    import ray

    from xl_suite.prompting import load_template
    from xl_suite.seeds import SeedCounts, iter_seed_chunks

    t_start = time.perf_counter()
    config = config or SynthesisConfig()
    stages = list(stages) if stages is not None else default_stages(config, None)
    templates = {s.name: load_template(s.template) for s in stages if s.template is not None}
    check_templates(stages, templates, language=config.languages[0])
    counts = SeedCounts()
    parts = list(iter_seed_chunks(seeds, text_column=text_column, chunk_size=max(config.chunk_size, 1),
                                  max_seeds=config.seed_limit, id_column=id_column, counts=counts))
    prepared = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    prepared = prepared.add_column("seed_index", list(range(prepared.num_rows)))
    ds = ray.data.from_huggingface(prepared)
    writer = _ShapeWriter(output, storage_options)
    report = []
    lang_pos = {code: i for i, code in enumerate(config.languages)}
    final = None
    try:
        rows_in = prepared.num_rows
        for segment in split_segments(stages):
            t0 = time.perf_counter()
            if any(s.engine for s in segment):
                ds = ds.map_batches(
                    StagesActor, fn_constructor_kwargs={"stages": segment, "generator_factory": generator_factory,
                                                        "scorer_factory": scorer_factory},
                    batch_size=config.batch_size, batch_format="pyarrow", concurrency=num_actors,
                    num_cpus=num_cpus_per_actor, **(ray_remote_args or {}),
                )
            else:
                ds = ds.map_batches(_plain, fn_kwargs={"stages": segment}, batch_size=config.batch_size,
                                    batch_format="pyarrow")
            ds = ds.materialize()
            hf = _to_hf(ds)
            if hf is not None:  # Ray does not keep row order: restore the local pipeline's (seed, language) order
                seed_idx = hf["seed_index"][:]
                langs = hf["language"][:] if "language" in hf.column_names else [None] * hf.num_rows
                order = sorted(range(hf.num_rows), key=lambda i: (seed_idx[i], lang_pos.get(langs[i], -1)))
                hf = hf.select(order).flatten_indices()
            rows_out = hf.num_rows if hf is not None else 0
            report.append({"segment": [s.name for s in segment], "rows_in": rows_in, "rows_out": rows_out,
                           "seconds": round(time.perf_counter() - t0, 3)})
            rows_in = rows_out
            snapshot = segment[-1].snapshot
            table = hf.with_format("arrow")[:].drop_columns(["seed_index"]) if hf is not None else pa.table({})
            if snapshot == "scored" and hf is not None:
                writer.append(SNAPSHOT_FILES["scored"], _shape("scored", table))
            elif snapshot == "bestof3" and hf is not None:
                _append_by_language(writer, SNAPSHOT_FILES["bestof3"], _shape("bestof3", table), config.languages)
            final = hf
            if hf is None:
                break
        produced = dict.fromkeys(config.languages, 0)
        over_quota = dict.fromkeys(config.languages, 0)
        duplicates = 0
        if final is not None and "language" in final.column_names:
            final = final.remove_columns(["seed_index"])
            table, duplicates = _final_rows(final, config, set(), produced, over_quota, config.num_examples)
            _append_by_language(writer, SNAPSHOT_FILES["default"], _shape("default", table), config.languages)
        known = dict(writer.schemas)
        expected = [SNAPSHOT_FILES["default"].format(code=c) for c in config.languages]
        files = writer.close(expected, lambda name: _fallback_schema(name, known))
    except BaseException:
        writer.abort()
        raise
    summary = {
        "engine": "ray",
        "config": config.to_dict(),
        "seeds": {"rows_available": seeds.num_rows, **counts.to_dict()},
        "segments": report,
        "final": {"duplicates_removed": duplicates, "over_quota": over_quota},
        "languages": {c: {"requested": config.num_examples, "produced": produced[c],
                          "shortfall": max(0, (config.num_examples or 0) - produced[c])} for c in config.languages},
        "files": dict(sorted(writer.rows.items())),
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    url = writer.write_json("summary.json", summary)
    if url:
        files["summary.json"] = url
    tables = {} if output else {name: writer.table(name) for name in writer.schemas}
    return SynthesisResult(summary=summary, files=files, output=output, _tables=tables,
                           storage_options=storage_options)
