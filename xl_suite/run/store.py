"""The chunk store: a stage's cache files under a work dir, written with checksums and read back verified.

One mechanism for every on-disk cache of the run layer (stage chunks, their piece files, the judges' keyed store):

* a chunk file ``<work_dir>/<stage>/chunk-<number>-<key>.parquet`` holds a chunk's output, with its row count and
  each row's attempts in the Parquet metadata and a SHA-256 of the file itself in its footer (:func:`write_verified`:
  the table is encoded once, the checksum taken of the bytes as they are written); it is written under a unique
  temporary name and moved into place (:meth:`ChunkStore.write`);
* a piece file ``<chunk file>.piece-<first row>-<rows>[-retry-<hash>]`` holds one finished engine call of a chunk not
  yet complete; it never ends in ``.parquet``, so nothing that lists chunk files takes it for one;
* every file is verified when read (:func:`read_verified`): it must parse, carry the checksum and row count written with
  it (a file without them was not written by this store, or by a release before checksums, and is not trusted), and
  pass the caller's checks (columns, row count, ids). Files of releases before 2026-12-08 carry the older checksum
  (of the decoded table, :func:`table_sha`) and are verified by it. A file that fails is moved aside (``<name>.corrupt``) with a
  warning naming it, and its rows are computed again: edited values never reach an output;
* :meth:`ChunkStore.index` reads every chunk file of a stage by a key column: the store keyed by row content.

``work_dir`` is any fsspec URL (local path, ``memory://``, ``s3://`` with ``storage_options``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from xl_suite.run.policy import FAILURE_STATUSES, failed_rows, new_status_columns
from xl_suite.safety import DirLock, quarantine, unique_temp_path


logger = logging.getLogger(__name__)

__all__ = [
    "ID_COLUMNS",
    "ChunkStore",
    "StoredRow",
    "storage",
    "read_verified",
    "write_verified",
    "table_sha",
    "file_sha",
    "own_metadata",
    "attempts_of",
    "id_column",
    "replace_rows",
    "concat_tables",
    "index_stored_rows",
]

#: Columns that identify a row, checked when a chunk is read back (the first one present is used).
ID_COLUMNS = ("id", "cache_key", "seed_id", "item_index")
META_ROWS = b"xl_suite.rows"
#: The checksum of files written before 2026-12-08: SHA-256 of the decoded table (:func:`table_sha`), in the schema
#: metadata. Still verified on read; no longer written.
META_SHA = b"xl_suite.sha256"
#: The checksum of files written since: SHA-256 of the file's bytes before its footer and of the metadata the store
#: writes (:func:`file_sha`), in the footer's key-value metadata (added once the data is written: one encode).
META_FILE_SHA = b"xl_suite.file_sha256"
META_ATTEMPTS = b"xl_suite.attempts"


def storage(work_dir: str, storage_options: dict | None = None):
    """``(filesystem, root path)`` of a work dir given as any fsspec URL."""
    import fsspec

    return fsspec.core.url_to_fs(str(work_dir), **(storage_options or {}))


def table_sha(table) -> str:
    """SHA-256 of a table's data (schema without metadata + rows): the checksum of files written before 2026-12-08
    (:data:`META_SHA`), which are still verified by it."""
    import pyarrow as pa

    table = table.replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _metadata_digest(digest, metadata: dict | None) -> None:
    """Add the schema metadata the store writes (row count, attempts, datasets' features) to ``digest``."""
    for key, value in sorted((metadata or {}).items()):
        for part in (key, value):
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)


def file_sha(data: bytes, metadata: dict | None) -> str:
    """The checksum of a file written by :func:`write_verified` (:data:`META_FILE_SHA`): SHA-256 of the bytes before
    its Parquet footer (the magic and every data page), then of its schema metadata (``metadata``: row count,
    attempts, datasets' features), so an edited value, row count or attempt count is caught, and checking a file costs
    one pass over its bytes, no re-encoding.

    >>> import fsspec, pyarrow as pa, pyarrow.parquet as pq
    >>> fs = fsspec.filesystem("memory")
    >>> write_verified(fs, "/doc/chunk.parquet", pa.table({"x": [1, 2]}))
    >>> data = fs.cat_file("/doc/chunk.parquet")
    >>> footer = pq.read_metadata(pa.BufferReader(data)).metadata
    >>> file_sha(data, pq.read_schema(pa.BufferReader(data)).metadata) == footer[META_FILE_SHA].decode()
    True
    >>> read_verified(fs, "/doc/chunk.parquet").column("x").to_pylist()
    [1, 2]
    """
    footer = int.from_bytes(data[-8:-4], "little")
    digest = hashlib.sha256(memoryview(data)[: len(data) - 8 - footer])
    _metadata_digest(digest, metadata)
    return digest.hexdigest()


class _HashingSink(io.RawIOBase):
    """A write-only file that hashes and counts what passes through to ``target`` (and keeps its last 8 bytes)."""

    def __init__(self, target):
        super().__init__()
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0
        self.tail = b""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        self.digest.update(data)
        self.size += len(data)
        self.tail = (self.tail + data)[-8:]
        self.target.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def own_metadata(table) -> dict:
    """The table's schema metadata (datasets' features) without the store's checksum keys."""
    return {k: v for k, v in (table.schema.metadata or {}).items() if not k.startswith(b"xl_suite.")}


def attempts_of(table) -> list[int]:
    """Each row's attempts as recorded with the file (1 each when none were recorded)."""
    meta = table.schema.metadata or {}
    if META_ATTEMPTS in meta:
        try:
            values = json.loads(meta[META_ATTEMPTS])
            if isinstance(values, list) and len(values) == table.num_rows:
                return [int(v) for v in values]
        except (ValueError, TypeError):
            pass
    return [1] * table.num_rows


def id_column(*tables) -> str | None:
    """The first of :data:`ID_COLUMNS` that every table has, or None."""
    for name in ID_COLUMNS:
        if all(name in t.column_names for t in tables):
            return name
    return None


def read_verified(
    fs,
    path: str,
    *,
    required: Sequence[str] = (),
    expected_rows: int | None = None,
    expected_ids: list | None = None,
    allowed_ids: Collection | None = None,
    id_column: str | None = None,
    what: str = "Chunk file",
):
    """Read a Parquet file written by the store and check it; move it aside and return None when it fails.

    Checks, in order: the file parses; it carries the row count and checksum the store writes, and they match (a file
    without them, from a release before checksums or from anything else, cannot be verified and is not used); the
    ``required`` columns are there; the row count is ``expected_rows``; the ``id_column`` values are ``expected_ids``
    in order (1:1 stages) or all in ``allowed_ids`` (n->m stages). The checksum is :func:`file_sha` (files written
    since 2026-12-08) or, for older files, :func:`table_sha` of the decoded table.

    Args:
        fs: fsspec filesystem of ``path``.
        path: the file.
        required: columns the file must have.
        expected_rows: row count it must have.
        expected_ids: ids it must have, in order.
        allowed_ids: ids it may have.
        id_column: column holding the ids.
        what: how to call the file in the warning.

    Returns:
        The ``pyarrow.Table`` (its store metadata kept), or None after a warning that names the file and where it was
        moved (``<path>.corrupt``); the caller recomputes its rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with fs.open(path, "rb") as f:
            data = f.read()
        footer = pq.read_metadata(pa.BufferReader(data)).metadata or {}
        table = pq.read_table(pa.BufferReader(data))
        meta = table.schema.metadata or {}
        if META_ROWS not in meta or (META_FILE_SHA not in footer and META_SHA not in meta):
            raise ValueError(
                "no checksum in its metadata (not written by xl-suite's store, rewritten since, or from a release "
                "before checksums): it cannot be verified"
            )
        if int(meta[META_ROWS]) != table.num_rows:
            raise ValueError(f"{table.num_rows} rows, but {int(meta[META_ROWS])} were written")
        if META_FILE_SHA in footer:
            sound = file_sha(data, meta) == footer[META_FILE_SHA].decode()
        else:  # written before 2026-12-08: the checksum of the decoded table
            sound = table_sha(table) == meta[META_SHA].decode()
        if not sound:
            raise ValueError("checksum mismatch (the data changed after it was written)")
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise ValueError(f"missing columns {missing}")
        if expected_rows is not None and table.num_rows != expected_rows:
            raise ValueError(f"{table.num_rows} rows where the input chunk has {expected_rows}")
        if id_column is not None and (expected_ids is not None or allowed_ids is not None):
            if id_column not in table.column_names:
                raise ValueError(f"no {id_column!r} column")
            ids = table.column(id_column).to_pylist()
            if expected_ids is not None and ids != list(expected_ids):
                raise ValueError(f"its {id_column!r} values are not the input chunk's")
            if allowed_ids is not None and not set(ids) <= set(allowed_ids):
                raise ValueError(f"its {id_column!r} values are not drawn from the input chunk")
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError/... on truncated or garbled files
        quarantine(fs, path, f"{type(e).__name__}: {e}", what=what)
        return None
    return table


def write_verified(fs, path, table, attempts: list[int] | None = None, *, compliant_nested: bool = True) -> None:
    """Write ``table`` with its row count and per-row attempts in the metadata and its checksum in the footer; atomic
    via a unique temp.

    The table is encoded once: its bytes are hashed on their way to the file, and the checksum (:func:`file_sha`) is
    added to the footer's key-value metadata before the footer is written.

    ``compliant_nested=False`` keeps the list fields' names (``list<item>``) instead of Parquet's ``list<element>``:
    piece files are written so, so that a stored piece reads back with the schema of a computed one and a chunk put
    together from both is the same file as one computed at once.
    """
    import pyarrow.parquet as pq

    meta = own_metadata(table)
    meta[META_ROWS] = str(table.num_rows).encode()
    if attempts is not None:
        meta[META_ATTEMPTS] = json.dumps(attempts).encode()
    table = table.replace_schema_metadata(meta)
    tmp = unique_temp_path(path)
    try:
        with fs.open(tmp, "wb") as f:
            sink = _HashingSink(f)
            writer = pq.ParquetWriter(sink, table.schema, use_compliant_nested_type=compliant_nested)
            try:
                writer.write_table(table)
                digest, data_size = sink.digest.copy(), sink.size  # everything before the footer
                _metadata_digest(digest, meta)
                writer.add_key_value_metadata({META_FILE_SHA: digest.hexdigest().encode()})
            finally:
                writer.close()
            footer = int.from_bytes(sink.tail[:4], "little")
            if sink.size - 8 - footer != data_size:  # pyarrow wrote data after the checksum was taken
                raise RuntimeError(
                    f"Writing {path}: the Parquet writer added {sink.size - 8 - footer - data_size} bytes before the "
                    "footer after the checksum was taken; the file could not be verified. Report this with your "
                    "pyarrow version."
                )
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise


def replace_rows(table, indices: list[int], new):
    """``table`` with rows ``indices`` replaced by the rows of ``new`` (same order), schemas unified."""
    import pyarrow as pa

    meta = own_metadata(table)
    table = table.replace_schema_metadata(None)
    new = new.replace_schema_metadata(None)
    combined = pa.concat_tables([table, new], promote_options="permissive")
    order = list(range(table.num_rows))
    for k, i in enumerate(indices):
        order[i] = table.num_rows + k
    return combined.take(order).replace_schema_metadata(meta)


def concat_tables(tables: list):
    """Tables of one stage's rows (stored ones from files of several runs, computed ones) as one: columns a file
    lacks (added since it was written) are null, list fields unified; the datasets features of a table that has
    every column are kept."""
    import pyarrow as pa

    combined = pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="permissive")
    meta = next((t.schema.metadata for t in tables if t.column_names == combined.column_names), None)
    return combined.combine_chunks().replace_schema_metadata(meta)


@dataclass
class StoredRow:
    """One row of a stage's store found by its key: the file's table and row, and what its attempts were."""

    table: object  # pyarrow.Table (store metadata dropped)
    row: int
    failed: bool
    attempts: int = 1  # attempts spent on this key: the most recorded with a failed copy, or the failed copies


def index_stored_rows(
    fs,
    folder: str,
    key_column: str,
    *,
    input_columns: Collection[str] = (),
    required: Sequence[str] = (),
    failures: Collection[str] = FAILURE_STATUSES,
    what: str = "Chunk file",
) -> tuple[dict, list[str]]:
    """Index every chunk file of a stage folder by ``key_column``: the store keyed by row content.

    Each file is read with :func:`read_verified` (one that fails, or lacks ``required`` columns, is moved aside and
    left out). A row is failed when one of its status columns (``*_status`` not in ``input_columns``) holds a failure.
    Per key, a usable row wins over failed ones, and the first usable one (files in name order) over later ones; a
    key's attempts are the largest attempt count recorded with a failed copy, or the number of failed copies if
    larger (older caches stored each retry in a file of its own).

    Returns:
        (key -> :class:`StoredRow`, the paths moved aside).
    """
    index: dict[str, StoredRow] = {}
    failed_copies: dict[str, int] = {}
    damaged: list[str] = []
    if not fs.exists(folder):
        return index, damaged
    for path in sorted(fs.glob(f"{folder}/chunk-*.parquet")):
        table = read_verified(fs, path, required=(key_column, *required), what=what)
        if table is None:
            damaged.append(path)
            continue
        attempts = attempts_of(table)
        table = table.replace_schema_metadata(own_metadata(table))
        status_cols = new_status_columns(table, input_columns)
        bad = set(failed_rows(table, status_cols, failures)) if status_cols else set()
        for i, key in enumerate(table.column(key_column).to_pylist()):
            found = index.get(key)
            if i in bad:
                failed_copies[key] = failed_copies.get(key, 0) + 1
                if found is None:
                    index[key] = StoredRow(table, i, True, attempts[i])
                elif found.failed:
                    found.attempts = max(found.attempts, attempts[i])
            elif found is None or found.failed:
                index[key] = StoredRow(table, i, False, attempts[i])
    for key, n in failed_copies.items():
        if index[key].failed:
            index[key].attempts = max(index[key].attempts, n)
    return index, damaged


class ChunkStore:
    """The cache files of the stages under one work dir: where they live, how they are written and read back.

    Args:
        fs: the fsspec filesystem.
        root: the work dir's path on it.
    """

    def __init__(self, fs, root: str):
        self.fs = fs
        self.root = root.rstrip("/")

    @classmethod
    def open(cls, work_dir: str, storage_options: dict | None = None) -> ChunkStore:
        """The store of ``work_dir`` (any fsspec URL)."""
        return cls(*storage(work_dir, storage_options))

    @property
    def local(self) -> bool:
        """True on the local filesystem (where a lock file works)."""
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return protocol in ("file", "local")

    def lock(self, purpose: str):
        """An exclusive lock on a local work dir for the duration of a stage (a no-op elsewhere)."""
        return DirLock(self.root, purpose=purpose) if self.local else contextlib.nullcontext()

    def folder(self, stage: str, *, create: bool = False) -> str:
        """The folder of ``stage``'s files."""
        folder = f"{self.root}/{stage}"
        if create:
            self.fs.makedirs(folder, exist_ok=True)
        return folder

    def chunk_path(self, stage: str, number: int, key: str) -> str:
        """The chunk file of chunk ``number`` whose key is ``key``."""
        return f"{self.folder(stage)}/chunk-{number:05d}-{key}.parquet"

    def exists(self, path: str) -> bool:
        """Whether ``path`` is there."""
        return self.fs.exists(path)

    def read(self, path: str, **checks):
        """:func:`read_verified` on this store."""
        return read_verified(self.fs, path, **checks)

    def write(self, path: str, table, attempts: list[int] | None = None, *, compliant_nested: bool = True) -> None:
        """:func:`write_verified` on this store."""
        write_verified(self.fs, path, table, attempts, compliant_nested=compliant_nested)

    def read_back(self, names: Sequence[str], *, what: str = "Chunk file"):
        """The rows of stored files, verified and put together in order: a stage's output as its
        :attr:`~xl_suite.run.stats.StageStats.stored_files` name it (``<stage>/<file>``, relative to the work dir).

        Returns:
            The ``pyarrow.Table`` (datasets' features kept, the store's metadata dropped), or None when a file is
            missing or fails verification (moved aside, with a warning naming it).
        """
        tables = []
        for name in names:
            path = f"{self.root}/{name}"
            if not self.fs.exists(path):
                logger.warning("%s %s is missing.", what, path)
                return None
            table = self.read(path, what=what)
            if table is None:
                return None
            tables.append(table.replace_schema_metadata(own_metadata(table)))
        if not tables:
            raise ValueError("read_back needs at least one file name.")
        return tables[0] if len(tables) == 1 else concat_tables(tables)

    def remove(self, paths) -> None:
        """Delete files (those already gone are fine)."""
        for path in sorted(paths):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(path)

    def pieces(self, stage: str) -> dict[str, str]:
        """Piece files in a stage folder, name -> path (quarantined ones, ``*.corrupt``, left out)."""
        found = {}
        for path in self.fs.glob(f"{self.folder(stage)}/chunk-*.piece-*"):
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if ".corrupt" not in name:
                found[name] = path
        return found

    def index(self, stage: str, key_column: str, **kwargs) -> tuple[dict, list[str]]:
        """:func:`index_stored_rows` of ``stage``'s folder."""
        return index_stored_rows(self.fs, self.folder(stage), key_column, **kwargs)
