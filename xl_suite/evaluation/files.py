"""Reading answer files and pairing model answers with their references."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from xl_suite.errors import InvalidArgumentError, SourceNotFoundError
from xl_suite.languages import get_language


__all__ = ["read_rows", "align_references"]


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a ``.jsonl``/``.json``/``.parquet`` file, or of every such file in a folder (sorted by name).

    Raises:
        FileNotFoundError: the path does not exist, or a folder holds no such file.
    """
    from xl_suite.sources import read_records

    p = Path(path)
    if not p.exists():
        raise SourceNotFoundError(f"{str(p)!r} does not exist.")
    if p.is_dir():
        files = sorted(
            f
            for f in p.iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix in (".jsonl", ".json", ".parquet")
        )
        if not files:
            raise SourceNotFoundError(f"{str(p)!r} holds no .jsonl/.json/.parquet file.")
    else:
        files = [p]
    rows: list[dict] = []
    for f in files:
        rows.extend(read_records(str(f)))
    return rows


def align_references(model_rows: Sequence[dict], reference_rows: Sequence[dict]) -> list[dict]:
    """Pair each model answer with its reference by (``id``, ``language``).

    Model rows need ``id``, ``language`` and ``output``; reference rows ``id``, ``language`` and ``reference``
    (or ``output``, as in alpaca_eval output files). The instruction comes from the model row, else the reference
    row. Reference rows without a model answer are ignored.

    Returns:
        One dict per model row: ``id``, ``language``, ``instruction``, ``output``, ``reference``, and the model row's
        ``dataset`` and the reference row's ``reference_generator`` (or ``generator``) when they have them (for
        alpaca_eval's files, see :func:`xl_suite.evaluation.alpaca_eval.describe_items`).

    Raises:
        ValueError: a missing field, a duplicate (id, language), or a model answer without a reference.

    >>> align_references([{"id": "1", "language": "de", "output": "Ja", "instruction": "Q"}],
    ...                  [{"id": "1", "language": "de", "reference": "Nein"}])
    [{'id': '1', 'language': 'de', 'instruction': 'Q', 'output': 'Ja', 'reference': 'Nein'}]
    """

    def key(row, i, what):
        missing = [k for k in ("id", "language") if row.get(k) in (None, "")]
        if missing:
            raise InvalidArgumentError(f"{what} row {i} lacks {missing}: {sorted(row)}")
        return str(row["id"]), get_language(row["language"]).code

    refs: dict[tuple[str, str], dict] = {}
    for i, r in enumerate(reference_rows):
        k = key(r, i, "reference")
        if k in refs:
            raise InvalidArgumentError(f"Duplicate reference for id={k[0]!r}, language={k[1]!r}.")
        text = r.get("reference") if r.get("reference") is not None else r.get("output")
        if text is None:
            raise InvalidArgumentError(f"reference row {i} has neither 'reference' nor 'output': {sorted(r)}")
        refs[k] = {
            "reference": text,
            "instruction": r.get("instruction"),
            "reference_generator": r.get("reference_generator") or r.get("generator"),
        }
    out, seen, missing = [], set(), []
    for i, r in enumerate(model_rows):
        k = key(r, i, "model output")
        if k in seen:
            raise InvalidArgumentError(f"Duplicate model output for id={k[0]!r}, language={k[1]!r}.")
        seen.add(k)
        if "output" not in r:
            raise InvalidArgumentError(f"model output row {i} has no 'output': {sorted(r)}")
        if k not in refs:
            missing.append(k)
            continue
        instruction = r.get("instruction") or refs[k]["instruction"]
        row = {
            "id": k[0],
            "language": k[1],
            "instruction": instruction,
            "output": r["output"] or "",
            "reference": refs[k]["reference"],
        }
        if r.get("dataset") is not None:
            row["dataset"] = r["dataset"]
        if refs[k]["reference_generator"] is not None:
            row["reference_generator"] = refs[k]["reference_generator"]
        out.append(row)
    if missing:
        raise InvalidArgumentError(
            f"{len(missing)} model output(s) have no reference, e.g. {missing[:3]}. Generate the "
            "references for these prompts (xl-suite generate --as-reference) or pass the right file."
        )
    return out
