"""Seed passages for XL-Instruct synthesis: any HF dataset with a text column, or the built-in sample.

The paper's seed source is, by a third-party account, a multilingual web corpus (CulturaX); any dataset with a text
column works here. Sources accepted by :func:`load_seeds`:

* ``None`` or ``"builtin"``: :data:`BUILTIN_SEEDS`, 40 short English web-style passages written for this project
  (``xl_suite/data/seed_sample.jsonl``, columns ``id``, ``topic``, ``text``), for demos and tests;
* a local path or fsspec URL (``memory://``, ``s3://`` with ``storage_options``) of a file (``.json``, ``.jsonl``,
  ``.parquet``, ``.csv``, ``.txt``) or a folder of such files, read with ``datasets.load_dataset(<format>,
  data_files=...)``;
* anything else is a Hub dataset id, read with ``datasets.load_dataset(id, config_name, split=split)``.

:func:`prepare_seeds` turns any of them into the two columns the pipeline reads, ``seed_id`` and ``seed_text``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from xl_suite.errors import InvalidArgumentError, SeedError


logger = logging.getLogger(__name__)

__all__ = [
    "BUILTIN_SEEDS",
    "SeedError",
    "SeedCounts",
    "load_seeds",
    "builtin_seeds",
    "prepare_seeds",
    "iter_seed_chunks",
]

#: Name of the built-in seed sample (pass it, or ``None``, as the source).
BUILTIN_SEEDS = "builtin"
_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text", ".tsv": "csv"}


@dataclass
class SeedCounts:
    """What happened to the seed rows read so far.

    Attributes:
        read: rows read from the source.
        empty: rows dropped because the text was empty or only whitespace.
        duplicate: rows dropped because their text (whitespace-normalised) was seen before.
        used: rows kept (prepared for the pipeline; the pipeline may stop before using them all).
    """

    read: int = 0
    empty: int = 0
    duplicate: int = 0
    used: int = 0
    seen: set = field(default_factory=set, repr=False)
    seen_ids: set = field(default_factory=set, repr=False)

    def to_dict(self) -> dict:
        """Plain dict for summaries."""
        return {"read": self.read, "empty": self.empty, "duplicate": self.duplicate, "used": self.used}


def builtin_seeds():
    """The built-in seed sample as a ``datasets.Dataset`` (``id``, ``topic``, ``text``), read from package data."""
    import json
    from importlib import resources

    import datasets

    text = (resources.files("xl_suite") / "data" / "seed_sample.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return datasets.Dataset.from_list(rows)


def _format_of(path: str) -> str | None:
    lower = path.lower()
    for ext, fmt in _FORMATS.items():
        if lower.endswith(ext) or lower.endswith(ext + ".gz"):
            return fmt
    return None


def _looks_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or _format_of(source) is not None or os.sep in source[:1]


def load_seeds(
    source: str | None = None,
    *,
    split: str = "train",
    config_name: str | None = None,
    storage_options: dict | None = None,
):
    """Load a seed dataset (not yet prepared; see :func:`prepare_seeds`).

    Args:
        source: ``None``/``"builtin"``, a path or fsspec URL of a file or folder, or a Hub dataset id.
        split: split to read (files give ``train``).
        config_name: Hub dataset config (subset), e.g. ``"mt"`` for CulturaX.
        storage_options: fsspec options for remote URLs.

    Returns:
        A ``datasets.Dataset``.

    Raises:
        SeedError: a local path that does not exist, a folder without data files, or a Hub id that cannot be read.
    """
    import datasets

    if source is None or source == BUILTIN_SEEDS:
        return builtin_seeds()
    source = str(source)
    if not source.strip():
        raise SeedError(
            f"The seed source (--seeds) is empty ({source!r}). Pass a file or folder, a Hub dataset id, or {BUILTIN_SEEDS!r}."
        )
    is_url = "://" in source
    if is_url or os.path.exists(os.path.expanduser(source)) or _looks_local(source):
        import fsspec

        fs, path = fsspec.core.url_to_fs(
            os.path.expanduser(source) if not is_url else source, **(storage_options or {})
        )
        if not fs.exists(path):
            raise SeedError(
                f"Seed source {source!r} does not exist. Pass an existing file/folder, a Hub dataset id, "
                f"or {BUILTIN_SEEDS!r} for the built-in sample."
            )
        if fs.isdir(path):
            files = sorted(p for p in fs.find(path) if _format_of(p) and not os.path.basename(p).startswith("."))
            if not files:
                raise SeedError(f"Seed folder {source!r} holds no data file ({sorted(_FORMATS)}).")
            fmt = _format_of(files[0])
            mixed = sorted({_format_of(p) for p in files} - {fmt})
            if mixed:
                raise SeedError(f"Seed folder {source!r} mixes formats ({[fmt, *mixed]}); keep one format per folder.")
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            data_files = [p if protocol == "file" else f"{protocol}://{p}" for p in files]
        else:
            fmt = _format_of(path)
            if fmt is None:
                raise SeedError(f"Cannot tell the format of seed file {source!r}; use one of {sorted(_FORMATS)}.")
            data_files = source if is_url else os.path.expanduser(source)
        kwargs = {"sep": "\t"} if fmt == "csv" and str(data_files).endswith(".tsv") else {}
        files = [data_files] if isinstance(data_files, str) else data_files
        empty = [
            f
            for f in ([path] if not fs.isdir(path) else [p for p in fs.find(path) if _format_of(p)])
            if fs.size(f) == 0
        ]
        if empty:
            raise SeedError(f"Seed file {empty[0]!r} is empty (0 bytes). Pass a file with at least one passage.")
        if fmt != "parquet":  # datasets reads bad bytes into the table and fails later, far from the file
            for f in [path] if not fs.isdir(path) else [p for p in fs.find(path) if _format_of(p)]:
                _check_utf8(fs, f)
        try:
            ds = datasets.load_dataset(
                fmt, data_files=data_files, split="train", storage_options=storage_options, **kwargs
            )
        except Exception as e:  # noqa: BLE001 - DatasetGenerationError, ArrowInvalid, StopIteration...: name the file
            raise SeedError(
                f"Could not read seed file(s) {files[:3]} as {fmt} ({type(e).__name__}: {e}). Check the file's "
                "format and encoding (UTF-8)."
            ) from e
        if ds.num_rows == 0:
            raise SeedError(f"Seed source {source!r} has no rows. Pass a file with at least one passage.")
        return ds
    try:
        return datasets.load_dataset(source, config_name, split=split, storage_options=storage_options)
    except (FileNotFoundError, ConnectionError, ValueError) as e:
        raise SeedError(
            f"Could not load seed dataset {source!r} (config {config_name!r}, split {split!r}): {e}. Pass a local "
            f"file or folder, a reachable Hub dataset id, or {BUILTIN_SEEDS!r} for the built-in sample."
        ) from e


def _check_utf8(fs, path: str, block: int = 1 << 20) -> None:
    """Raise a SeedError naming ``path`` and the byte offset when the file is not valid UTF-8."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with fs.open(path, "rb") as f:
        while True:
            data = f.read(block)
            try:
                decoder.decode(data, final=not data)
            except UnicodeDecodeError as e:
                raise SeedError(
                    f"Seed file {path!r} is not UTF-8 text (byte {offset + e.start}: {data[e.start : e.start + 1]!r}). "
                    "Convert it, e.g. `iconv -f latin1 -t utf-8`."
                ) from None
            if not data:
                return
            offset += len(data)


def _normalise(text: str) -> str:
    return " ".join(text.split())


def prepare_seeds(
    batch: dict[str, list],
    *,
    text_column: str,
    id_column: str | None = None,
    counts: SeedCounts | None = None,
    offset: int = 0,
) -> dict[str, list]:
    """Turn a batch of source rows into ``seed_id``/``seed_text`` rows, dropping empty and repeated texts.

    Args:
        batch: columns of source rows.
        text_column: column holding the passage.
        id_column: column holding a row id (default: ``"id"`` when present, else ``seed-<row number>``).
        counts: running :class:`SeedCounts`; its ``seen`` set makes duplicate removal work across batches.
        offset: row number of the batch's first row (for generated ids).

    Returns:
        ``{"seed_id": [...], "seed_text": [...]}``.

    >>> c = SeedCounts()
    >>> prepare_seeds({"text": ["A  cat.", " ", "A cat.", "Dogs."]}, text_column="text", counts=c)
    {'seed_id': ['seed-000000', 'seed-000003'], 'seed_text': ['A  cat.', 'Dogs.']}
    >>> c.to_dict()
    {'read': 4, 'empty': 1, 'duplicate': 1, 'used': 2}
    """
    import hashlib

    counts = counts if counts is not None else SeedCounts()
    texts = batch[text_column]
    if id_column is None and "id" in batch:
        id_column = "id"
    ids = batch[id_column] if id_column else None
    out: dict[str, list] = {"seed_id": [], "seed_text": []}
    for i, text in enumerate(texts):
        counts.read += 1
        if text is None or not str(text).strip():
            counts.empty += 1
            continue
        if not isinstance(text, str):
            raise SeedError(f"Seed text column {text_column!r} must hold strings, got {type(text).__name__}: {text!r}")
        key = hashlib.blake2b(_normalise(text).encode("utf-8"), digest_size=12).digest()
        if key in counts.seen:
            counts.duplicate += 1
            continue
        counts.seen.add(key)
        counts.used += 1
        seed_id = str(ids[i]) if ids is not None and ids[i] is not None else f"seed-{offset + i:06d}"
        if seed_id in counts.seen_ids:
            raise SeedError(
                f"Duplicate seed id {seed_id!r} (column {id_column!r}, row {offset + i}) for a different text. Ids "
                "must be unique: fix the source, or pass id_column=None to number the rows."
            )
        counts.seen_ids.add(seed_id)
        out["seed_id"].append(seed_id)
        out["seed_text"].append(text)
    return out


def check_text_column(dataset, text_column: str) -> None:
    """Raise :class:`SeedError` when ``text_column`` is missing or the dataset has no rows."""
    if text_column not in dataset.column_names:
        raise SeedError(
            f"Seed dataset has no text column {text_column!r}; its columns are {dataset.column_names}. "
            "Pass the right one with --text-column (Python: text_column=...)."
        )
    if dataset.num_rows == 0:
        raise SeedError("The seed dataset is empty (0 rows). Pass a dataset with at least one passage.")


def iter_seed_chunks(
    dataset,
    *,
    text_column: str = "text",
    chunk_size: int = 1024,
    max_seeds: int | None = None,
    id_column: str | None = None,
    counts: SeedCounts | None = None,
    read_batch: int = 1024,
) -> Iterator:
    """Yield prepared seed chunks (``datasets.Dataset`` of ``seed_id``/``seed_text``) of ``chunk_size`` rows.

    Source rows are read in batches of ``read_batch`` (memory stays bounded by the chunk size, whatever the
    dataset's size); empty and repeated texts are dropped and counted in ``counts``; at most ``max_seeds`` rows are
    yielded in total. The chunking is a pure function of the source rows, so a rerun yields identical chunks.

    Raises:
        SeedError: the text column is missing, the dataset is empty, or no usable passage is left.
    """
    import datasets

    check_text_column(dataset, text_column)
    if chunk_size < 1:
        raise InvalidArgumentError(f"chunk_size must be >= 1, got {chunk_size}.")
    counts = counts if counts is not None else SeedCounts()
    columns = [text_column] + ([id_column] if id_column else ["id"] if "id" in dataset.column_names else [])
    source = dataset.select_columns(columns)
    buffer: dict[str, list] = {"seed_id": [], "seed_text": []}
    features = datasets.Features({"seed_id": datasets.Value("string"), "seed_text": datasets.Value("string")})

    def make(columns: dict[str, list]):
        import uuid

        import pyarrow as pa

        table = pa.Table.from_pydict(columns, schema=features.arrow_schema)
        return datasets.Dataset(table, fingerprint=uuid.uuid4().hex)  # no hashing of the whole table

    limit = max_seeds if max_seeds is not None else float("inf")
    yielded = 0
    for start in range(0, source.num_rows, read_batch):
        if counts.used >= limit:
            break
        batch = source[start : start + read_batch]
        part = prepare_seeds(batch, text_column=text_column, id_column=id_column, counts=counts, offset=start)
        if counts.used > limit:  # keep exactly max_seeds
            extra = counts.used - int(limit)
            for key in part:
                part[key] = part[key][: len(part[key]) - extra]
            counts.used -= extra
        for key in buffer:
            buffer[key].extend(part[key])
        while len(buffer["seed_id"]) >= chunk_size:
            chunk = {k: v[:chunk_size] for k, v in buffer.items()}
            buffer = {k: v[chunk_size:] for k, v in buffer.items()}
            yielded += chunk_size
            yield make(chunk)
    if buffer["seed_id"]:
        yielded += len(buffer["seed_id"])
        yield make(buffer)
    if yielded == 0:
        raise SeedError(
            f"No usable seed passage: {counts.read} rows read, {counts.empty} empty, {counts.duplicate} duplicates "
            f"in column {text_column!r}. Check --text-column and the source."
        )
