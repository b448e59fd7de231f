"""Arrow plumbing shared by the pipelines: column access, canonical layout, row filters, status counts.

Like ``datasets.table``, this module only moves tables around; the pipelines decide what to do with them.
"""

from __future__ import annotations

from collections.abc import Sequence

from xl_suite.fingerprint import random_fingerprint
from xl_suite.status import is_usable


__all__ = [
    "column_values",
    "to_arrow",
    "normalised",
    "keep_rows",
    "count_status",
    "order_columns",
]


def column_values(ds, name: str) -> list:
    """One column of a Dataset as a Python list (fast path for tables without an indices mapping)."""
    return ds.data.column(name).to_pylist() if ds._indices is None else list(ds.with_format(None)[name])


def to_arrow(ds):
    """The Dataset's rows as one ``pyarrow.Table`` (indices applied)."""
    import pyarrow as pa

    if ds.num_rows == 0:
        return (
            ds.data.table.slice(0, 0) if ds._indices is None else pa.Table.from_batches([], ds.features.arrow_schema)
        )
    table = ds.with_format("arrow")[:]
    return table if isinstance(table, pa.Table) else pa.table(table)


def normalised(ds):
    """One contiguous Arrow chunk per column.

    ``run_stage`` keys a chunk by the Arrow IPC bytes of its input, which depend on how the table is split into
    record batches: a stage output computed in batches and the same rows read back from Parquet would hash
    differently and the next stage would recompute on every rerun; likewise a Parquet round trip renames list
    items (``list<item>`` -> ``list<element>``). Normalising layout and schema (to the features' Arrow schema)
    makes the key depend on the content only.
    """
    import datasets

    table = to_arrow(ds).combine_chunks().cast(ds.features.arrow_schema)
    return datasets.Dataset(table, fingerprint=random_fingerprint())


def keep_rows(ds, column: str):
    """Rows whose ``column`` is ``True`` or a usable status (:data:`xl_suite.status.USABLE`; the Dataset itself
    when all are kept)."""
    values = column_values(ds, column)
    idx = [i for i, v in enumerate(values) if is_usable(v)]
    if len(idx) == ds.num_rows:
        return ds
    return normalised(ds.select(idx))


def count_status(values: list, into: dict) -> None:
    """Add the counts of each status value (nested lists flattened) to ``into``.

    >>> counts = {}; count_status(["ok", ["ok", "unparsed"]], counts); counts
    {'ok': 2, 'unparsed': 1}
    """
    for v in values:
        if isinstance(v, list):
            count_status(v, into)
        else:
            into[str(v)] = into.get(str(v), 0) + 1


def order_columns(table, first: Sequence[str]):
    """``table`` with the columns named in ``first`` (those present) first, the rest after, in their order."""
    names = [c for c in first if c in table.column_names]
    return table.select(names + [c for c in table.column_names if c not in names])
