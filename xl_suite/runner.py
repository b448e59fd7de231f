"""Chunked, resumable ``Dataset.map(batched=True)`` over an engine.

One mechanism for every LLM stage (synthesis, answer generation, references, translation, judging):

* the input is cut into chunks of ``chunk_size`` rows; each chunk is mapped with ``Dataset.map(batched=True)``
  and written to ``work_dir/<stage>/<key>.parquet`` as soon as it finishes (temporary name, then a move);
* a chunk's key hashes the stage fingerprint (model, revision, template hash, sampling settings, seed...) and
  the chunk's input content, so a rerun of a finished stage makes zero generations, a change to any of those
  recomputes, and a process killed mid-run (even by SIGKILL) redoes at most the chunk it was working on;
* ``new_fingerprint`` is always set, so datasets never hashes the engine (an unhashable LLM would make it fall
  back to a random fingerprint and recompute everything).

``work_dir`` is any fsspec URL (local path, ``memory://``, ``s3://`` with ``storage_options``).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from xl_suite.errors import InvalidArgumentError
from xl_suite.fingerprint import stable_hash


logger = logging.getLogger(__name__)

__all__ = ["StageStats", "run_stage", "content_hash"]


@dataclass
class StageStats:
    """What a stage did: rows in/out, chunks computed vs reused, time."""

    stage: str
    rows_in: int = 0
    rows_out: int = 0
    chunks_total: int = 0
    chunks_computed: int = 0
    chunks_reused: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain dict for summaries."""
        return {k: getattr(self, k) for k in ("stage", "rows_in", "rows_out", "chunks_total", "chunks_computed",
                                               "chunks_reused", "seconds")} | self.extra


def content_hash(ds) -> str:
    """Hash of a Dataset's content (schema + rows), independent of how it was created or stored.

    The table is combined into one chunk per column and cast to the features' canonical Arrow schema (Parquet
    renames list items, ``list<item>`` -> ``list<element>``), without schema metadata, before hashing.

    >>> import datasets
    >>> a = datasets.Dataset.from_dict({"x": [1, 2]}); b = datasets.Dataset.from_dict({"x": [1, 2]})
    >>> content_hash(a) == content_hash(b)
    True
    >>> parts = datasets.concatenate_datasets([a.select([0]), a.select([1])])
    >>> content_hash(parts) == content_hash(a)
    True
    """
    import pyarrow as pa

    table = ds.with_format("arrow")[:] if ds.num_rows else ds.data.table.slice(0, 0)
    if not isinstance(table, pa.Table):
        table = pa.table(table)
    table = table.combine_chunks().cast(ds.features.arrow_schema).replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]


def _fs(work_dir: str, storage_options: dict | None):
    import fsspec

    return fsspec.core.url_to_fs(str(work_dir), **(storage_options or {}))


def _read_chunk(fs, path):
    import datasets
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f:
        table = pq.read_table(f)
    return datasets.Dataset(table)


def _write_chunk(fs, path, ds) -> None:
    import pyarrow.parquet as pq

    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as f:
        pq.write_table(ds.data.table if not ds._indices else ds.flatten_indices().data.table, f)
    fs.mv(tmp, path)


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
    """
    import datasets

    if chunk_size < 1 or batch_size < 1:
        raise InvalidArgumentError(f"chunk_size and batch_size must be >= 1, got {chunk_size}, {batch_size}.")
    stats = stats or StageStats(stage=stage)
    stats.rows_in += dataset.num_rows
    t0 = time.perf_counter()
    fs = folder = None
    if work_dir is not None:
        fs, root = _fs(work_dir, storage_options)
        folder = f"{root.rstrip('/')}/{stage}"
        fs.makedirs(folder, exist_ok=True)
    n = dataset.num_rows
    starts = list(range(0, n, chunk_size)) or [0]
    parts = []
    for i, start in enumerate(starts):
        chunk = dataset.select(range(start, min(start + chunk_size, n)))
        key = stable_hash(stage, fingerprint, content_hash(chunk), batch_size)
        path = f"{folder}/chunk-{i:05d}-{key}.parquet" if folder else None
        stats.chunks_total += 1
        if path and fs.exists(path):
            parts.append(_read_chunk(fs, path))
            stats.chunks_reused += 1
            continue
        mapped = chunk.map(
            function,
            batched=True,
            batch_size=batch_size,
            fn_kwargs=fn_kwargs or {},
            remove_columns=remove_columns,
            new_fingerprint=stable_hash("map", key),
            load_from_cache_file=False,
            keep_in_memory=True,
            desc=desc or f"{stage} [{i + 1}/{len(starts)}]",
        )
        if path:
            _write_chunk(fs, path, mapped)
        parts.append(mapped)
        stats.chunks_computed += 1
    result = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    stats.rows_out += result.num_rows
    stats.seconds += time.perf_counter() - t0
    logger.info("stage %s: %d -> %d rows (%d chunks computed, %d reused)", stage, stats.rows_in, stats.rows_out,
                stats.chunks_computed, stats.chunks_reused)
    return result
