"""The release files of a synthesis run: ``en_scored.parquet`` (scored), ``<code>_bestof3.parquet`` and
``<code>.parquet`` (default), written incrementally as chunks finish, and :class:`SynthesisResult`."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xl_suite.errors import InvalidArgumentError
from xl_suite.languages import get_language
from xl_suite.safety import unique_temp_path
from xl_suite.tables import order_columns


logger = logging.getLogger(__name__)

__all__ = ["SNAPSHOT_FILES", "SynthesisResult", "ShapeWriter", "shape_table", "append_by_language", "fallback_schema"]

#: Snapshot name -> file name pattern written in the output folder (``{code}`` is the language).
SNAPSHOT_FILES = {"scored": "en_scored.parquet", "bestof3": "{code}_bestof3.parquet", "default": "{code}.parquet"}


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def shape_table(kind: str, table):
    """Arrange a table in a release shape: ``scored`` (English pair, ``language="en"``; rows whose scoring failed
    are left out) or bestof3/default."""
    import pyarrow as pa

    if kind == "scored":
        from xl_suite.run.policy import failed_rows

        # A pair whose scoring failed (unparsed, error...) is stored for the retry, never written as scored data.
        bad = failed_rows(table, [c for c in table.column_names if c.endswith("_status")])
        if bad:
            drop = set(bad)
            table = table.take(pa.array([i for i in range(table.num_rows) if i not in drop], pa.int64()))
        if "response_en" in table.column_names:
            idx = table.column_names.index("response_en")
            table = table.rename_columns([("response" if i == idx else c) for i, c in enumerate(table.column_names)])
        if "id" not in table.column_names and "seed_id" in table.column_names:
            table = table.append_column("id", table["seed_id"])
        table = table.append_column("language", pa.array(["en"] * table.num_rows, pa.string()))
    return order_columns(table, ("id", "instruction", "response", "language"))


class ShapeWriter:
    """Writes shape files incrementally (Parquet, temporary name, moved into place on close), or keeps tables in
    memory when there is no output folder."""

    def __init__(self, output: str | None, storage_options: dict | None):
        self.output = output
        self.fs = self.root = None
        if output:
            import fsspec

            self.fs, self.root = fsspec.core.url_to_fs(str(output), **(storage_options or {}))
            self.root = self.root.rstrip("/")
            self.fs.makedirs(self.root, exist_ok=True)
        self._open: dict[str, list] = {}
        self._memory: dict[str, list] = {}
        self.schemas: dict[str, Any] = {}
        self.rows: dict[str, int] = {}

    def append(self, filename: str, table) -> None:
        import pyarrow.parquet as pq

        self.rows[filename] = self.rows.get(filename, 0) + table.num_rows
        schema = self.schemas.setdefault(filename, table.schema)
        if table.schema != schema:
            try:
                table = table.select(schema.names).cast(schema)
            except (KeyError, ValueError, TypeError) as e:
                raise InvalidArgumentError(
                    f"Rows for {filename} changed schema between chunks ({e}); a custom stage must "
                    "return the same columns and types for every batch."
                ) from e
        if table.num_rows == 0:
            return
        if self.fs is None:
            self._memory.setdefault(filename, []).append(table)
            return
        if filename not in self._open:
            final = f"{self.root}/{filename}"
            tmp = unique_temp_path(final)
            handle = self.fs.open(tmp, "wb")
            self._open[filename] = [pq.ParquetWriter(handle, schema), handle, tmp, final]
        self._open[filename][0].write_table(table)

    def close(self, expected: Sequence[str], fallback_schema) -> dict[str, str]:
        """Finish every file; files in ``expected`` without rows are written empty (with a known schema)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        for filename in expected:
            self.schemas.setdefault(filename, fallback_schema(filename))
            self.rows.setdefault(filename, 0)
        paths: dict[str, str] = {}
        for filename, schema in self.schemas.items():
            if self.fs is None:
                tables = self._memory.get(filename) or [pa.Table.from_batches([], schema)]
                self._memory[filename] = tables
                continue
            if filename not in self._open:
                tmp = unique_temp_path(f"{self.root}/{filename}")
                with self.fs.open(tmp, "wb") as f:
                    pq.write_table(pa.Table.from_batches([], schema), f)
                self.fs.mv(tmp, f"{self.root}/{filename}")
            else:
                writer, handle, tmp, final = self._open.pop(filename)
                writer.close()
                handle.close()
                self.fs.mv(tmp, final)
            paths[filename] = self._url(filename)
        # Partial files of an earlier run that was killed (a SIGKILL leaves its temporary files behind). Only in a
        # local folder, which synthesize() holds locked for the whole run: no other live run can own them. In a
        # remote store (no lock) they are left alone; they are hidden files that no reader picks up.
        if self.fs is not None and _is_local(self.fs):
            for pattern in ("*.parquet.tmp-*", ".*.parquet.tmp-*"):
                for stale in self.fs.glob(f"{self.root}/{pattern}"):
                    self.fs.rm(stale)
        return paths

    def abort(self) -> None:
        for writer, handle, tmp, _ in self._open.values():
            try:
                writer.close()
                handle.close()
                self.fs.rm(tmp)
            except Exception:  # best effort: never hide the original error
                logger.debug("could not remove %s", tmp, exc_info=True)
        self._open.clear()

    def _url(self, filename: str) -> str:
        return f"{str(self.output).rstrip('/')}/{filename}"

    def write_json(self, filename: str, obj) -> str | None:
        if self.fs is None:
            return None
        text = json.dumps(obj, indent=2, ensure_ascii=False, default=str, allow_nan=False)
        with self.fs.open(f"{self.root}/{filename}", "w", encoding="utf-8") as f:
            f.write(text + "\n")
        return self._url(filename)

    def table(self, filename: str):
        import pyarrow as pa

        return pa.concat_tables(self._memory[filename]) if filename in self._memory else None


@dataclass
class SynthesisResult:
    """What :func:`synthesize` produced.

    Attributes:
        summary: the run summary (also ``summary.json`` in the output folder).
        files: file name -> URL of every file written (``mt.parquet``, ``mt_bestof3.parquet``,
            ``en_scored.parquet``, ``summary.json``); empty without an output folder.
        output: the output folder/URL (``None``: results are kept in memory, see :meth:`dataset`).
    """

    summary: dict
    files: dict[str, str]
    output: str | None = None
    _tables: dict = field(default_factory=dict, repr=False)
    storage_options: dict | None = field(default=None, repr=False)

    def dataset(self, language: str, variant: str = "default"):
        """The rows of one language (``variant`` default/bestof3) or of ``"en"`` for ``scored``, as a Dataset."""
        import datasets
        import pyarrow.parquet as pq

        name = (
            SNAPSHOT_FILES["scored"]
            if variant == "scored"
            else SNAPSHOT_FILES[variant].format(code=get_language(language).code)
        )
        if name in self._tables:
            return datasets.Dataset(self._tables[name])
        if name not in self.files:
            raise InvalidArgumentError(f"No {variant!r} file for {language!r}; written: {sorted(self.files)}.")
        import fsspec

        with fsspec.open(self.files[name], "rb", **(self.storage_options or {})) as f:
            return datasets.Dataset(pq.read_table(f))


def _shape_of(filename: str) -> str:
    if filename == SNAPSHOT_FILES["scored"]:
        return "scored"
    return "bestof3" if filename.endswith("_bestof3.parquet") else "default"


def fallback_schema(filename: str, known: Mapping[str, Any]):
    """Schema for a file that got no rows: that of another language's file of the same shape, else minimal."""
    import pyarrow as pa

    for name, schema in known.items():
        if _shape_of(name) == _shape_of(filename):
            return schema
    return pa.schema([(c, pa.string()) for c in ("id", "instruction", "response", "language")])


def append_by_language(writer: ShapeWriter, pattern: str, table, languages: Sequence[str]) -> None:
    import pyarrow.compute as pc

    for code in languages:
        part = table.filter(pc.equal(table["language"], code)) if table.num_rows else table
        writer.append(pattern.format(code=code), part)
