"""Reading source data (AlpacaEval prompts, the authors' releases) and building benchmark rows.

Everything here is a plain function over lists of dicts, so the builders in :mod:`xl_suite.builders` stay thin.
Sources are paths or fsspec URLs (``hf://datasets/...``, ``s3://...``, ``memory://...``) to JSON, JSON Lines or
Parquet files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from xl_suite.errors import SourceError
from xl_suite.languages import LanguageSpec
from xl_suite.prompting import load_template


logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ALPACA_EVAL_SOURCE",
    "REQUEST_TEMPLATE",
    "SourceError",
    "Exclusion",
    "alpaca_eval_exclusions",
    "exclusion_rule",
    "read_records",
    "iter_records",
    "write_jsonl",
    "read_alpaca_eval",
    "filter_english_specific",
    "prompt_id",
    "xl_alpacaeval_rows",
    "XL_INSTRUCT_COLUMN_CANDIDATES",
    "map_columns",
]

#: AlpacaEval's 805 prompts as published by its authors on the Hub (needs network; pass a local file otherwise).
DEFAULT_ALPACA_EVAL_SOURCE = "hf://datasets/tatsu-lab/alpaca_eval/alpaca_eval.json"
#: Template that appends the target-language request to an English prompt.
REQUEST_TEMPLATE = "xl_alpacaeval_instruction"


@dataclass(frozen=True)
class Exclusion:
    """One English-specific AlpacaEval prompt removed from XL-AlpacaEval."""

    instruction_prefix: str
    category: str
    reason: str


@lru_cache(maxsize=1)
def _exclusion_file() -> dict:
    text = (resources.files("xl_suite") / "data" / "alpaca_eval_exclusions.json").read_text(encoding="utf-8")
    return json.loads(text)


def alpaca_eval_exclusions() -> list[Exclusion]:
    """The 8 English-specific prompts we exclude (our choice; the paper's list could not be read).

    >>> len(alpaca_eval_exclusions())
    8
    """
    return [Exclusion(**e) for e in _exclusion_file()["excluded"]]


def exclusion_rule() -> str:
    """The written rule by which the exclusions were chosen."""
    return _exclusion_file()["rule"]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def read_records(source: str, *, storage_options: dict | None = None) -> list[dict]:
    """Read a JSON list, JSON Lines or Parquet file from a path or fsspec URL into a list of dicts.

    A list of :func:`iter_records` (which streams; the builders use it directly).

    Raises:
        SourceError: the file does not exist or cannot be parsed; the message names the path.
    """
    return list(iter_records(source, storage_options=storage_options))


#: Bytes read at a time from a source file.
_BLOCK = 1 << 20
_NOT_UTF8 = (
    "{source!r} is not UTF-8 text (byte {offset}: {sample!r}). Re-encode it as UTF-8, e.g. `iconv -f latin1 -t utf-8`."
)


def iter_records(source: str, *, storage_options: dict | None = None, batch_size: int = 1000):
    """Stream the records (dicts) of a JSON list, JSON Lines or Parquet file from a path or fsspec URL.

    The file is never held in memory whole: Parquet is read a record batch at a time (pyarrow), JSON Lines a line at
    a time and a JSON list one element at a time (only a single JSON object holding the list, ``{"data": [...]}``, is
    parsed whole). The first error stops the iteration with a :class:`SourceError` naming the file (and the line).

    Args:
        source: a path or fsspec URL.
        storage_options: fsspec options for ``source``.
        batch_size: Parquet rows per batch.

    Yields:
        One dict per record.

    Raises:
        SourceError: the file does not exist, is offline, or cannot be parsed; the message names it.
    """
    import fsspec

    from xl_suite.utils.hub import offline_reason

    source = str(source)
    offline = offline_reason() if source.startswith("hf://") else None
    if offline:
        raise SourceError(
            f"{source!r} is on the Hugging Face Hub, but offline mode is on ({offline}). "
            "Download the file once and pass its local path (CLI: --alpaca-eval PATH), or unset offline mode."
        )
    try:
        handle = fsspec.open(source, "rb", **(storage_options or {})).open()
    except FileNotFoundError as e:
        raise SourceError(f"Source file {source!r} does not exist. Pass an existing path or URL.") from e
    except IsADirectoryError as e:
        raise SourceError(f"Source {source!r} is a folder; pass a file (JSON, JSON Lines or Parquet).") from e
    except Exception as e:  # network/auth errors from remote filesystems
        raise SourceError(
            f"Could not read {source!r} ({type(e).__name__}: {e}). If you are offline, download the file and "
            "pass its local path."
        ) from e
    with handle as f:
        try:
            head = f.read(4)
        except IsADirectoryError as e:
            raise SourceError(f"Source {source!r} is a folder; pass a file (JSON, JSON Lines or Parquet).") from e
        if source.endswith(".parquet") or head == b"PAR1":
            f.seek(0)
            yield from _iter_parquet(f, source, batch_size)
        else:
            yield from _iter_json(f, head, source)


def _iter_parquet(f, source: str, batch_size: int):
    import pyarrow.parquet as pq

    try:
        # Column chunks are read through a 1 MB buffer, not pre-buffered whole: pyarrow's default pre-buffering
        # keeps memory that grows with the file (measured by benchmarks/bench_sources.py: 1.86x the peak for a 10x file).
        batches = pq.ParquetFile(f, pre_buffer=False, buffer_size=_BLOCK).iter_batches(batch_size=batch_size)
        for batch in batches:
            yield from batch.to_pylist()
    except Exception as e:
        raise SourceError(f"{source!r} is not a readable Parquet file: {e}") from e


def _text_blocks(f, head: bytes, source: str):
    """The file's text, block by block, decoded incrementally (a UTF-8 error names the byte offset)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    offset = 0
    data = head
    while True:
        block = data + f.read(_BLOCK) if data is not None else f.read(_BLOCK)
        data = None
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as e:
            raise SourceError(
                _NOT_UTF8.format(source=source, offset=offset + e.start, sample=block[e.start : e.start + 4])
            ) from None
        if text:
            yield text
        if not block:
            return
        offset += len(block)


def _iter_json(f, head: bytes, source: str):
    blocks = _text_blocks(f, head, source)
    buffer = ""
    for text in blocks:  # the first non-blank character tells the layout
        buffer += text
        if buffer.strip():
            break
    stripped = buffer.lstrip()
    if stripped.startswith("["):
        yield from _iter_json_list(stripped[1:], blocks, source)
        return
    if stripped.startswith("{"):
        while True:  # read on until the second line has started (or the file ended)
            first, newline, rest = stripped.partition("\n")
            more = None if newline and rest.strip() else next(blocks, None)
            if more is None:
                break
            stripped += more
        if source.endswith((".jsonl", ".ndjson")) or (rest.strip() and _complete_json(first)):
            yield from _iter_json_lines(stripped, blocks, source)
            return
    # A single JSON value (e.g. {"data": [...]}) is parsed whole.
    text = stripped + "".join(blocks)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SourceError(
            f"{source!r} is not valid JSON or JSON Lines (line {e.lineno}: {e.msg}). "
            "Expected a JSON list of objects, JSON Lines, or Parquet."
        ) from e
    if isinstance(data, dict):  # {"split": [...]} or {"data": [...]} layouts
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            data = lists[0]
    if not isinstance(data, list):
        raise SourceError(f"{source!r} must hold a list of JSON objects (one per prompt).")
    for record in data:
        yield _record(record, source)


def _complete_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _record(record, source: str) -> dict:
    if not isinstance(record, dict):
        raise SourceError(f"{source!r} must hold a list of JSON objects (one per prompt), found {record!r:.80}.")
    return record


def _iter_json_lines(text: str, blocks, source: str):
    # JSON Lines is newline-delimited: split on "\n" only (str.splitlines also splits on U+2028, U+0085...,
    # which may appear unescaped inside a JSON string).
    lineno = 0
    pending = text
    while True:
        more = next(blocks, None)
        if more is not None:
            pending += more
        *lines, pending = pending.split("\n") if more is not None else [*pending.split("\n"), ""]
        for line in lines:
            lineno += 1
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SourceError(
                        f"{source!r} is not valid JSON Lines (line {lineno}: {e.msg}). Expected one JSON object "
                        "per line."
                    ) from None
                yield _record(record, source)
        if more is None:
            return


def _iter_json_list(text: str, blocks, source: str):
    """The elements of a top-level JSON list, decoded one at a time (``text``: what follows the ``[``)."""
    decoder = json.JSONDecoder()
    buf, pos, eof, line = text, 0, False, 1

    def fail(msg: str) -> SourceError:
        return SourceError(
            f"{source!r} is not valid JSON or JSON Lines (line {line + buf.count(chr(10), 0, pos)}: {msg}). "
            "Expected a JSON list of objects, JSON Lines, or Parquet."
        )

    def refill() -> bool:  # append the next block, dropping what was decoded; False at the end of the file
        nonlocal buf, pos, eof, line
        more = None if eof else next(blocks, None)
        if more is None:
            eof = True
            return False
        line += buf.count("\n", 0, pos)
        buf, pos = buf[pos:] + more, 0
        return True

    def skip_blank() -> str:  # the next character that is not blank ("" at the end of the file)
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf) or not refill():
                return buf[pos] if pos < len(buf) else ""

    def value():
        nonlocal pos
        while True:
            try:
                found, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError as e:
                if refill():
                    continue
                raise fail(e.msg) from None
            if end == len(buf) and refill():  # a value at the end of the block may go on in the next one
                continue
            pos = end
            return found

    if skip_blank() == "]":  # an empty list
        pos += 1
    else:
        while True:
            yield _record(value(), source)
            char = skip_blank()
            if char == "]":
                pos += 1
                break
            if char != ",":
                raise fail(f"expected ',' or ']' after a list element, found {char or 'the end of the file'!r}")
            pos += 1
            if skip_blank() == "]":
                raise fail("a ',' before ']'")
    if skip_blank():
        raise fail("extra data after the list")


def read_alpaca_eval(source: str = DEFAULT_ALPACA_EVAL_SOURCE, *, storage_options: dict | None = None) -> list[dict]:
    """Read AlpacaEval prompts; each record needs ``instruction`` (``dataset``/``output`` are optional).

    Raises:
        SourceError: missing file, bad JSON, no records, or records without a non-empty ``instruction``.
    """
    records = read_records(source, storage_options=storage_options)
    if not records:
        raise SourceError(f"{source!r} holds no prompts.")
    bad = [
        i for i, r in enumerate(records) if not isinstance(r.get("instruction"), str) or not r["instruction"].strip()
    ]
    if bad:
        raise SourceError(
            f"{source!r}: {len(bad)} record(s) lack a non-empty 'instruction' field (first at index {bad[0]}; "
            f"fields there: {sorted(records[bad[0]])}). AlpacaEval records need 'instruction'."
        )
    return records


def prompt_id(instruction: str) -> str:
    """Stable id of an English prompt, the same in every language config.

    >>> prompt_id("What is 2+2?")
    'xlae-52cb6b5e4a'
    """
    return "xlae-" + hashlib.sha256(_norm(instruction).encode("utf-8")).hexdigest()[:10]


def filter_english_specific(
    records: Sequence[dict], exclusions: Iterable[Exclusion] | None = None
) -> tuple[list[dict], list[tuple[Exclusion, dict]]]:
    """Split records into (kept, excluded-with-their-rule). Each exclusion may match at most one prompt.

    Keeps order. Each kept record gets ``alpaca_eval_index`` (its position in the source).
    """
    exclusions = list(alpaca_eval_exclusions() if exclusions is None else exclusions)
    kept: list[dict] = []
    excluded: list[tuple[Exclusion, dict]] = []
    hits: dict[str, int] = {}
    for idx, rec in enumerate(records):
        norm = _norm(rec["instruction"])
        match = next((e for e in exclusions if norm.startswith(_norm(e.instruction_prefix))), None)
        rec = {**rec, "alpaca_eval_index": idx}
        if match is None:
            kept.append(rec)
            continue
        hits[match.instruction_prefix] = hits.get(match.instruction_prefix, 0) + 1
        if hits[match.instruction_prefix] > 1:
            raise SourceError(
                f"Exclusion {match.instruction_prefix!r} matched more than one prompt; make it specific."
            )
        excluded.append((match, rec))
    missing = [e.instruction_prefix for e in exclusions if e.instruction_prefix not in hits]
    if missing and len(missing) < len(exclusions):
        logger.warning(
            "%d exclusion(s) matched no prompt in this source (a subset or another version?): %s",
            len(missing),
            missing,
        )
    elif missing:
        logger.info("No English-specific exclusion applies to this source (not AlpacaEval's 805 prompts).")
    ids = [prompt_id(r["instruction"]) for r in kept]
    if len(set(ids)) != len(ids):
        raise SourceError("The source holds duplicate instructions; ids would not be unique. Deduplicate it first.")
    return kept, excluded


def xl_alpacaeval_rows(
    records: Sequence[dict], language: LanguageSpec, *, template: str = REQUEST_TEMPLATE
) -> list[dict]:
    """Rows of ``xl-alpacaeval-<lang>``: each kept English prompt plus the request to answer in ``language``.

    ``records`` are the kept records of :func:`filter_english_specific`.
    """
    tpl = load_template(template)
    rows = []
    for rec in records:
        english = rec["instruction"]
        instruction = tpl.render_text(instruction=english, language=language).strip()
        rows.append(
            {
                "id": prompt_id(english),
                "alpaca_eval_index": int(rec["alpaca_eval_index"]),
                "instruction": instruction,
                "english_instruction": english,
                "language": language.code,
                "dataset": rec.get("dataset") or "",
                "reference": None,
                "reference_generator": None,
                "request_template": tpl.template_version,
            }
        )
    return rows


#: Default column mapping for the authors' XL-Instruct release, whose field names we could not read.
#: Each target field lists candidate source columns, tried in order; override with ``column_mapping``.
XL_INSTRUCT_COLUMN_CANDIDATES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "prompt", "input", "question", "query", "en_instruction", "source"),
    "response": ("response", "output", "answer", "completion", "target", "chosen", "text"),
}


def map_columns(record: dict, mapping: dict[str, str | Sequence[str]], *, source: str) -> dict:
    """Pick target fields from a record by a column mapping; unmapped columns are returned under ``_rest``.

    >>> map_columns({"prompt": "Hi", "output": "Salut", "x": 1}, {"instruction": ["instruction", "prompt"],
    ...             "response": "output"}, source="f.json")
    {'instruction': 'Hi', 'response': 'Salut', '_rest': {'x': 1}}

    Raises:
        SourceError: when no candidate column exists, naming the available columns and the override.
    """
    out: dict = {}
    used = set()
    for target, cands in mapping.items():
        cands = (cands,) if isinstance(cands, str) else tuple(cands)
        col = next((c for c in cands if c in record), None)
        if col is None:
            raise SourceError(
                f"{source}: no column for {target!r}; tried {list(cands)}, the file has {sorted(record)}. "
                f"Pass column_mapping={{'{target}': '<column>'}} (Python: xl_suite.load_xl_suite(..., column_mapping=...) or the builder)."
            )
        out[target] = record[col]
        used.add(col)
    out["_rest"] = {k: v for k, v in record.items() if k not in used}
    return out


def write_jsonl(rows: Iterable[dict], path) -> None:
    """Write rows as JSON Lines, atomically: a uniquely named temporary file beside ``path``, then a rename.

    Non-ASCII text is kept as is; values JSON cannot hold are written with ``str``.
    """
    from pathlib import Path

    path = Path(path)
    from xl_suite.safety import unique_temp_path

    tmp = Path(unique_temp_path(path))
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
