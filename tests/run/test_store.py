"""The chunk store (xl_suite.run.store) under attack: damaged, edited and unverifiable chunk files are moved aside
and recomputed; old files still verify; each file is encoded once; verified reads name missing columns."""

import logging
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xl_suite.runner import StageStats, read_verified, run_stage


def _inc(batch):
    return {"y": [x + 1 for x in batch["x"]]}


def _run(tmp_path, ds=None, fn=_inc, **kw):
    ds = (
        ds
        if ds is not None
        else datasets.Dataset.from_dict({"id": [f"r{i}" for i in range(10)], "x": list(range(10))})
    )
    stats = StageStats("inc")
    out = run_stage(ds, fn, stage="inc", fingerprint="f", work_dir=str(tmp_path), chunk_size=4, stats=stats, **kw)
    return out, stats


def _damage_truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _damage_zero(p: Path):
    p.write_bytes(b"")


def _damage_bitflip(p: Path):
    data = bytearray(p.read_bytes())
    # flip a bit in the first data page (after the 4-byte magic), where the values are
    for off in range(8, 40):
        data[off] ^= 0x01
    p.write_bytes(bytes(data))


def _damage_short(p: Path):
    table = pq.read_table(p)
    pq.write_table(table.slice(0, 2).replace_schema_metadata(None), p)  # a valid file with rows missing


def _damage_wrong_ids(p: Path):
    table = pq.read_table(p).replace_schema_metadata(None)
    ids = table.column("id").to_pylist()
    pq.write_table(table.set_column(table.column_names.index("id"), "id", pa.array(ids[::-1])), p)


@pytest.mark.parametrize("damage", [_damage_truncate, _damage_zero, _damage_bitflip, _damage_short, _damage_wrong_ids])
def test_damaged_chunk_is_moved_aside_and_recomputed(tmp_path, caplog, damage):
    out, _ = _run(tmp_path)
    files = sorted((tmp_path / "inc").glob("*.parquet"))
    assert len(files) == 3
    damage(files[1])
    with caplog.at_level(logging.WARNING):
        again, stats = _run(tmp_path)
    assert again["y"] == out["y"] and again["id"] == out["id"]
    assert (stats.chunks_reused, stats.chunks_computed, stats.chunks_damaged) == (2, 1, 1)
    assert files[1].name in caplog.text and Path(f"{files[1]}.corrupt").exists()
    third, stats = _run(tmp_path)  # the recomputed chunk is good
    assert third["y"] == out["y"] and stats.chunks_reused == 3


def _edit_values(table):
    """The same rows with every ``y`` changed to 999 (what an edit of a cache file would pass on)."""
    return table.set_column(table.column_names.index("y"), "y", pa.array([999] * table.num_rows))


def _rewrite_without_checksum(p: Path):
    pq.write_table(_edit_values(pq.read_table(p)).replace_schema_metadata(None), p)


def _rewrite_keeping_the_old_metadata(p: Path):
    table = pq.read_table(p)
    pq.write_table(_edit_values(table).replace_schema_metadata(table.schema.metadata), p)


def _drop_a_column(p: Path):
    table = pq.read_table(p)
    pq.write_table(table.drop_columns(["y"]).replace_schema_metadata(table.schema.metadata), p)


def _drop_a_column_and_the_checksum(p: Path):
    pq.write_table(pq.read_table(p).drop_columns(["y"]).replace_schema_metadata(None), p)


def _rewrite_keeping_the_footer_checksum(p: Path, edit=_edit_values, meta=None):
    """Rewrite ``p`` with ``edit`` applied, carrying its footer checksum over (what a tool that keeps the file's
    metadata would write)."""
    from xl_suite.run.store import META_FILE_SHA

    footer = pq.read_metadata(p).metadata
    table = edit(pq.read_table(p))
    table = table.replace_schema_metadata(meta if meta is not None else table.schema.metadata)
    with pq.ParquetWriter(p, table.schema) as writer:
        writer.write_table(table)
        writer.add_key_value_metadata({META_FILE_SHA: footer[META_FILE_SHA]})


def _edit_the_attempts(p: Path):
    """The same data pages, the per-row attempts edited (a failed row would look as if it had attempts left)."""
    meta = dict(pq.read_schema(p).metadata)
    meta[b"xl_suite.attempts"] = b"[0, 0, 0, 0]"[: len(meta[b"xl_suite.attempts"])]
    _rewrite_keeping_the_footer_checksum(p, edit=lambda t: t, meta=meta)


@pytest.mark.parametrize(
    "edit",
    [
        _rewrite_without_checksum,
        _rewrite_keeping_the_old_metadata,
        _rewrite_keeping_the_footer_checksum,
        _edit_the_attempts,
        _drop_a_column,
        _drop_a_column_and_the_checksum,
    ],
)
def test_a_chunk_that_cannot_be_verified_is_moved_aside_and_recomputed(tmp_path, caplog, edit):
    # A file without the checksum written with it (rewritten, or from a release before checksums) is not trusted:
    # edited values never reach the output.
    out, _ = _run(tmp_path)
    files = sorted((tmp_path / "inc").glob("*.parquet"))
    for f in files:
        edit(f)
    with caplog.at_level(logging.WARNING):
        again, stats = _run(tmp_path)
    assert again["y"] == out["y"] == [x + 1 for x in range(10)]
    assert (stats.chunks_reused, stats.chunks_computed, stats.chunks_damaged) == (0, 3, 3)
    assert all(Path(f"{f}.corrupt").exists() for f in files) and str(files[0]) in caplog.text


def _as_written_before_2026_12_08(p: Path, edit=None):
    """Rewrite a chunk file as the store wrote it before 2026-12-08: the checksum (SHA-256 of the decoded table) in
    the schema metadata, none in the footer; ``edit`` changes the values after the checksum was taken."""
    from xl_suite.run.store import META_SHA, table_sha

    table = pq.read_table(p)
    meta = {**table.schema.metadata, META_SHA: table_sha(table).encode()}
    pq.write_table((edit(table) if edit else table).replace_schema_metadata(meta), p)
    assert b"xl_suite.file_sha256" not in pq.read_metadata(p).metadata


def test_chunks_written_before_2026_12_08_still_verify_and_are_reused(tmp_path, caplog):
    out, _ = _run(tmp_path)
    files = sorted((tmp_path / "inc").glob("*.parquet"))
    _as_written_before_2026_12_08(files[0])
    _as_written_before_2026_12_08(files[1], edit=_edit_values)  # edited since: its old checksum catches it
    with caplog.at_level(logging.WARNING):
        again, stats = _run(tmp_path)
    assert again["y"] == out["y"] == [x + 1 for x in range(10)]
    assert (stats.chunks_reused, stats.chunks_computed, stats.chunks_damaged) == (2, 1, 1)
    assert files[1].name in caplog.text and files[0].name not in caplog.text
    assert files[0].exists() and not Path(f"{files[0]}.corrupt").exists(), "the old file is read as it is"


def test_a_chunk_file_is_encoded_once(tmp_path, monkeypatch):
    """The checksum is taken of the bytes on their way to the file: one Parquet encode per stored file (the store
    used to encode each file twice, the checksum being taken of the decoded first encoding)."""
    encodes = []
    real = pq.ParquetWriter.write_table

    def counted(self, table, *args, **kwargs):
        encodes.append(table.num_rows)
        return real(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", counted)
    _run(tmp_path)
    assert encodes == [4, 4, 2]
    monkeypatch.undo()
    assert _run(tmp_path)[1].chunks_reused == 3


def test_read_verified_names_missing_columns(tmp_path, caplog):
    import fsspec

    from xl_suite.run.store import write_verified

    path = tmp_path / "a.parquet"
    fs = fsspec.filesystem("file")
    write_verified(fs, str(path), pa.table({"x": [1]}))
    with caplog.at_level(logging.WARNING):
        assert read_verified(fs, str(path), required=["cache_key"]) is None
    assert "cache_key" in caplog.text and str(path) in caplog.text


def test_no_fixed_or_leftover_temp_names(tmp_path):
    _run(tmp_path)
    assert not [p for p in (tmp_path / "inc").iterdir() if "tmp" in p.name]
