"""Stable hashes: fingerprints of stages and engines, cache keys, and content hashes of datasets.

Every cache key in xl-suite is built from these functions, so a key never depends on how a table was chunked or
stored, or on where a function's code lives in the package.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any


__all__ = ["stable_hash", "content_hash", "function_id", "random_fingerprint"]

# Built-in stage functions moved from ``xl_suite.synthesis`` (a module) into the ``xl_suite.synthesis`` package.
# Their fingerprints keep naming the old module, so caches written before the move are still used.
_LEGACY_MODULES = {"xl_suite.synthesis.stages": "xl_suite.synthesis"}


def stable_hash(*parts: Any) -> str:
    """SHA-256 (16 hex digits) of the JSON of ``parts``: used for fingerprints and cache keys.

    >>> stable_hash("a", 1) == stable_hash("a", 1)
    True
    """
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


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
    >>> import pyarrow.compute as pc
    >>> t = a.with_format("arrow")[:]
    >>> content_hash(datasets.Dataset(t.filter(pc.greater(t["x"], 0)))) == content_hash(a)  # a filter adds a bitmap
    True
    """
    import pyarrow as pa

    table = ds.with_format("arrow")[:] if ds.num_rows else ds.data.table.slice(0, 0)
    if not isinstance(table, pa.Table):
        table = pa.table(table)
    table = table.combine_chunks().cast(ds.features.arrow_schema).replace_schema_metadata(None)
    table = pa.table([_without_empty_validity(c.chunk(0) if c.num_chunks else c) for c in table.columns], table.schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]


def _without_empty_validity(arr):
    """``arr`` in one layout for one content: no validity bitmap when it has no nulls (filters, takes and transfers
    such as Ray's may add an all-valid one), nested values rebuilt."""
    import pyarrow as pa

    if pa.types.is_nested(arr.type):  # children may carry bitmaps or offsets too: rebuild from the values
        return pa.array(arr.to_pylist(), type=arr.type)
    arr = pa.concat_arrays([arr.slice(0, len(arr)), pa.array([], type=arr.type)])  # fresh buffers of exact size
    if arr.null_count or arr.buffers()[0] is None:
        return arr
    return pa.Array.from_buffers(arr.type, len(arr), [None, *arr.buffers()[1:]], null_count=0, offset=arr.offset)


def function_id(function) -> str:
    """``module.qualname`` of a function, as it appears in fingerprints.

    >>> from xl_suite.synthesis.stages import refine_batch
    >>> function_id(refine_batch)
    'xl_suite.synthesis.refine_batch'
    """
    module = getattr(function, "__module__", "?")
    module = _LEGACY_MODULES.get(module, module)
    return f"{module}.{getattr(function, '__qualname__', repr(function))}"


def random_fingerprint() -> str:
    """A fresh fingerprint for in-memory datasets: spares datasets from hashing (pickling) the whole table.

    Nothing is cached by these fingerprints; the maps run by ``run_stage`` get theirs from the stage fingerprint.
    """
    return uuid.uuid4().hex
