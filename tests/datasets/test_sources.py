"""Reading sources (xl_suite.sources): JSON, JSON Lines and Parquet streamed, bad input named (file, line, encoding),
never a stray TypeError/StopIteration."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xl_suite.errors import SourceError
from xl_suite.sources import read_records


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path):
    path = tmp_path / "a.jsonl"
    rows = [{"instruction": "one\u2028two\u0085three\u2029"}, {"instruction": "b"}]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    assert read_records(str(path)) == rows


def test_non_utf8_source_names_the_file(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes('{"instruction": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(SourceError, match=r"latin\.jsonl.*not UTF-8"):
        read_records(str(path))


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"a": 1}\n{"a": \n', encoding="utf-8")
    with pytest.raises(SourceError, match="line 2"):
        read_records(str(path))


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_sources_are_streamed_not_read_whole(tmp_path, monkeypatch, fmt):
    """The first record comes back before the reader reaches a broken end of the file (issue 17: no whole files)."""
    import xl_suite.sources as sources

    monkeypatch.setattr(sources, "_BLOCK", 4096)
    rows = [{"instruction": f"prompt {i} " + "x" * 200} for i in range(2000)]
    path = tmp_path / f"big.{fmt}"
    if fmt == "json":
        text = "[\n" + ",\n".join(json.dumps(r) for r in rows) + ',\n{"instruction": '  # cut off at the end
    else:
        text = "\n".join(json.dumps(r) for r in rows) + '\n{"instruction": \n'
    path.write_text(text, encoding="utf-8")
    records = sources.iter_records(str(path))
    assert next(records) == rows[0] and next(records) == rows[1]
    with pytest.raises(SourceError, match="line 2002" if fmt == "json" else "line 2001"):  # "[" is line 1
        list(records)


@pytest.mark.parametrize("block", [1, 3, 64, 1 << 20])
def test_streamed_reader_reads_every_layout_at_any_block_size(tmp_path, monkeypatch, block):
    import xl_suite.sources as sources

    monkeypatch.setattr(sources, "_BLOCK", block)
    rows = [{"instruction": f'p{i} ünï \u2028 \\ " ] ,', "n": i * 1.5, "l": [1, {"a": None}]} for i in range(20)]
    layouts = {
        "list.json": json.dumps(rows, ensure_ascii=False, indent=1),
        "compact.json": json.dumps(rows),
        "lines.jsonl": "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
        "bom-lines.json": "\ufeff" + "\n".join(json.dumps(r) for r in rows),
        "wrapped.json": json.dumps({"data": rows}, indent=2),
    }
    for name, text in layouts.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert read_records(str(tmp_path / name)) == rows, name
    (tmp_path / "empty.json").write_text(" [ ] ", encoding="utf-8")
    assert read_records(str(tmp_path / "empty.json")) == []
    flat = [{"instruction": r["instruction"], "n": r["n"]} for r in rows]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "t.parquet", row_group_size=7)
    assert read_records(str(tmp_path / "t.parquet")) == flat


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"a": 1},]', "line 1: a ',' before ']'"),
        ('[{"a": 1} {"b": 2}]', "expected ',' or ']'"),
        ('[{"a": 1}]\nmore', "line 2: extra data after the list"),
        ("[1, 2]", "must hold a list of JSON objects"),
    ],
)
def test_broken_json_lists_are_named(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SourceError, match=re.escape(message)):
        read_records(str(path))
