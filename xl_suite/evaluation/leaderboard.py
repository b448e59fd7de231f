"""Many evaluation reports as one leaderboard: ``leaderboard.csv`` and a self-contained, sortable ``index.html``.

A leaderboard folder holds:

* ``leaderboard.csv``: one row per model and language plus ``overall``, alpaca_eval's leaderboard columns under its
  names and with its meanings (:data:`~xl_suite.evaluation.alpaca_eval.LEADERBOARD_COLUMNS`; ``n_wins_base`` counts
  the reference's wins, ``length_controlled_winrate`` is only ever alpaca_eval's ``length_controlled_v1``), then
  ours (:data:`CSV_COLUMNS`).
* ``index.html``: models x languages with win rate, its CI, the length-controlled win rates and language fidelity,
  colour-coded, sortable by any column (click a header, or open ``index.html#sort=de&dir=asc``), each model linked
  to its report. Data, CSS and script are inline: nothing is fetched.
* ``leaderboard.json``: the entries (one per model and source, with their rows), so that adding a model to the folder
  updates it in place; ``reports/``: the reports written for alpaca_eval files given as sources.

Sources (:func:`read_source`): an xl-suite report folder (``xl-suite evaluate --output``), alpaca_eval's
``annotations.json`` (scored as ``xl-suite evaluate`` would, into ``reports/<model>/``), or an alpaca_eval
leaderboard CSV (its rows as they are, under the language ``alpaca_eval``: its 805 English prompts, not
XL-AlpacaEval's 797).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xl_suite.errors import InvalidArgumentError
from xl_suite.evaluation.alpaca_eval import ALPACA_EVAL_BOARD, LEADERBOARD_COLUMNS, LEADERBOARD_RENAMES
from xl_suite.evaluation.page import render_page
from xl_suite.evaluation.results import OVERALL


__all__ = [
    "CSV_COLUMNS",
    "ALPACA_EVAL_BOARD",
    "Entry",
    "Leaderboard",
    "build_leaderboard",
    "load_leaderboard",
    "read_source",
    "write_page",
]

CSV_FILE = "leaderboard.csv"
PAGE_FILE = "index.html"
MANIFEST_FILE = "leaderboard.json"
REPORTS_DIR = "reports"
_MANIFEST_LAYOUT = 1

#: Our columns after alpaca_eval's.
_OUR_COLUMNS: tuple[str, ...] = (
    "ci_low",
    "ci_high",
    "lc_minimal_winrate",
    "lc_minimal_standard_error",
    "language_fidelity",
    "parse_rate",
    "n",
    "judge",
    "reference",
    "source",
    "report",
)
#: ``leaderboard.csv``'s columns: model, language, alpaca_eval's (its names and meanings), then ours.
CSV_COLUMNS: tuple[str, ...] = ("model", "language", *LEADERBOARD_COLUMNS, *_OUR_COLUMNS)


@dataclass
class Entry:
    """One model from one source.

    Attributes:
        model: the model's name.
        kind: ``report``, ``alpaca_eval_annotations`` or ``alpaca_eval_leaderboard``.
        source: the path given.
        report: the model's ``report.md``, relative to the leaderboard folder when it can be (None: no report).
        judge: who judged (the judge model or alpaca_eval's annotator).
        reference: the reference answers' model (alpaca_eval's baseline).
        rows: one dict per language (and ``overall``) with :data:`CSV_COLUMNS`.
        added: when the entry was added (UTC, ISO 8601).
    """

    model: str
    kind: str
    source: str
    report: str | None
    judge: str | None
    reference: str | None
    rows: list[dict[str, Any]]
    added: str = ""


@dataclass
class Leaderboard:
    """A leaderboard folder's entries; :meth:`write` writes its files."""

    folder: Path
    entries: list[Entry] = field(default_factory=list)
    columns: tuple[str, ...] = CSV_COLUMNS

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row, models by overall win rate (best first), languages with ``overall`` first then by code."""
        order = {m: i for i, m in enumerate(self.models)}
        languages = {lang: i for i, lang in enumerate(self.languages)}
        rows = [r for e in self.entries for r in e.rows]
        return sorted(rows, key=lambda r: (order[r["model"]], languages[r["language"]]))

    @property
    def models(self) -> list[str]:
        """Model names, best overall (or ``alpaca_eval``, or first language) win rate first."""
        best: dict[str, float] = {}
        for e in self.entries:
            for r in e.rows:
                score = _number(r.get("win_rate"))
                if r["language"] in (OVERALL, ALPACA_EVAL_BOARD) and not math.isnan(score):
                    best[e.model] = max(best.get(e.model, -1.0), score)
        names = list(dict.fromkeys(e.model for e in self.entries))
        return sorted(names, key=lambda m: (-best.get(m, -1.0), m))

    @property
    def languages(self) -> list[str]:
        """``overall`` first, then the languages by code (``alpaca_eval`` last)."""
        found = {r["language"] for e in self.entries for r in e.rows}
        middle = sorted(found - {OVERALL, ALPACA_EVAL_BOARD})
        return [x for x in (OVERALL,) if x in found] + middle + [x for x in (ALPACA_EVAL_BOARD,) if x in found]

    def warnings(self) -> list[str]:
        """What a reader must know before comparing rows (different judges or references)."""
        out = []
        ours = [e for e in self.entries if e.kind != "alpaca_eval_leaderboard"]
        judges = sorted({e.judge or "unknown" for e in ours})
        references = sorted({e.reference or "unknown" for e in ours})
        if len(judges) > 1:
            out.append(f"The models were judged by different judges ({', '.join(judges)}): compare rows of one judge.")
        if len(references) > 1:
            out.append(
                f"The models were compared with different references ({', '.join(references)}): a win rate is "
                "against its own reference."
            )
        if any(e.kind == "alpaca_eval_leaderboard" for e in self.entries):
            out.append(
                f"The {ALPACA_EVAL_BOARD!r} column holds alpaca_eval's published rows (its 805 English prompts); "
                "'en' is XL-AlpacaEval's 797."
            )
        return out

    def add(self, entries: Sequence[Entry]) -> list[str]:
        """Add entries; a model already on the board from the same kind of source is replaced as a whole (its
        ``overall`` is its report's). Rows of alpaca_eval's published leaderboard are a kind of their own, so a
        model keeps them beside its XL-AlpacaEval report. Returns one line per replaced model."""
        notes = []
        for new in entries:
            same = [e for e in self.entries if e.model == new.model and _board_kind(e) == _board_kind(new)]
            for old in same:
                dropped = sorted({r["language"] for r in old.rows} - {r["language"] for r in new.rows})
                notes.append(
                    f"{new.model}: replaced ({old.source} -> {new.source})"
                    + (f"; no longer on the board: {', '.join(dropped)}" if dropped else "")
                )
            self.entries = [e for e in self.entries if e not in same] + [new]
        return notes

    def write(self) -> dict[str, Path]:
        """Write ``leaderboard.csv``, ``index.html`` and ``leaderboard.json``; return them by kind."""
        self.folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "csv": self.folder / CSV_FILE,
            "html": self.folder / PAGE_FILE,
            "manifest": self.folder / MANIFEST_FILE,
        }
        with paths["csv"].open("w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            w.writeheader()
            w.writerows({k: _cell(r.get(k)) for k in CSV_COLUMNS} for r in self.rows)
        manifest = {"layout": _MANIFEST_LAYOUT, "entries": [asdict(e) for e in self.entries]}
        paths["manifest"].write_text(json.dumps(_clean(manifest), indent=2, ensure_ascii=False), encoding="utf-8")
        paths["html"].write_text(render_page(self, _read_judges(self.folder)), encoding="utf-8")
        return paths


def write_page(folder: str | Path) -> Path:
    """(Re)write ``index.html`` of ``folder`` from its leaderboard and judges' comparison (``xl-suite
    compare-judges``), whichever it has."""
    board = load_leaderboard(folder)
    path = Path(folder) / PAGE_FILE
    path.write_text(render_page(board, _read_judges(Path(folder))), encoding="utf-8")
    return path


def load_leaderboard(folder: str | Path) -> Leaderboard:
    """The leaderboard in ``folder`` (empty when the folder has none yet).

    Raises:
        InvalidArgumentError: an unreadable ``leaderboard.json``.
    """
    path = Path(folder) / MANIFEST_FILE
    board = Leaderboard(folder=Path(folder))
    if not path.is_file():
        return board
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        board.entries = [Entry(**e) for e in data["entries"]]
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidArgumentError(
            f"{str(path)!r} is not a leaderboard manifest ({e}); rebuild the folder with --overwrite."
        ) from e
    return board


def build_leaderboard(
    sources: Sequence[str | Path],
    output: str | Path,
    *,
    language: str | None = None,
    alpaca_eval_source: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    overwrite: bool = False,
) -> tuple[Leaderboard, list[str]]:
    """Add the sources' models to the leaderboard in ``output`` (created when missing) and write its files.

    Args:
        sources: report folders, alpaca_eval ``annotations.json`` files or alpaca_eval leaderboard CSVs.
        output: the leaderboard folder. A model already on it is updated in place (its rows for the languages
            the new source has are replaced); the others stay.
        language: the language of alpaca_eval annotation files without a ``language`` column (e.g. ``"en"``).
        alpaca_eval_source: AlpacaEval's prompts, which annotation files are matched against (default: the Hub).
        n_resamples: bootstrap resamples for annotation files.
        seed: bootstrap seed.
        overwrite: start a new board (drop the entries already in ``output``).

    Returns:
        ``(leaderboard, notes)``: notes say which rows were replaced.

    Raises:
        InvalidArgumentError: no source, a source that is none of the kinds above, or two sources giving the same
            model and language.
    """
    if not sources:
        raise InvalidArgumentError("No report given: pass report folders, annotations.json or leaderboard CSV files.")
    folder = Path(output)
    board = Leaderboard(folder=folder) if overwrite else load_leaderboard(folder)
    entries: list[Entry] = []
    for source in sources:
        entries.extend(
            read_source(
                source,
                folder=folder,
                language=language,
                alpaca_eval_source=alpaca_eval_source,
                n_resamples=n_resamples,
                seed=seed,
            )
        )
    _check_unique(entries)
    notes = board.add(entries)
    board.write()
    return board, notes


def _board_kind(entry: Entry) -> str:
    return "alpaca_eval_leaderboard" if entry.kind == "alpaca_eval_leaderboard" else "xl_suite"


def _check_unique(entries: Sequence[Entry]) -> None:
    seen: dict[tuple[str, str], str] = {}
    for e in entries:
        key = (e.model, _board_kind(e))
        if key in seen:
            raise InvalidArgumentError(
                f"{e.model!r} comes from two sources: {seen[key]} and {e.source}. Evaluate its languages together "
                "(one report), pass one of them, or name the models apart (xl-suite evaluate --model-name)."
            )
        seen[key] = e.source


# ----------------------------------------------------------------------------------------------------------------
# sources


def read_source(
    source: str | Path,
    *,
    folder: str | Path,
    language: str | None = None,
    alpaca_eval_source: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[Entry]:
    """The leaderboard entries of one source (see the module docstring for the kinds).

    Raises:
        InvalidArgumentError: the source is missing or of no known kind.
    """
    path = Path(source)
    if (
        path.is_file()
        and path.name in ("summary.json", "report.md", "leaderboard.csv")
        and (path.parent / "summary.json").is_file()
    ):
        path = path.parent
    if path.is_dir():
        return [_report_entry(path, str(source), Path(folder), kind="report")]
    if not path.is_file():
        raise InvalidArgumentError(f"{str(source)!r} does not exist; pass a report folder or an alpaca_eval file.")
    if path.suffix == ".csv":
        return _alpaca_eval_board_entries(path)
    if path.suffix == ".json":
        return [_annotations_entry(path, Path(folder), language, alpaca_eval_source, n_resamples, seed)]
    raise InvalidArgumentError(
        f"{str(source)!r} is none of: an xl-suite report folder (with summary.json), alpaca_eval's annotations.json, "
        "an alpaca_eval leaderboard .csv."
    )


def _report_entry(path: Path, source: str, folder: Path, *, kind: str) -> Entry:
    from xl_suite.evaluation.report import read_report

    report = read_report(path)
    judge = (report.meta.get("judge") or {}).get("model")
    reference = report.meta.get("reference_model")
    link = _link(path / "report.md", folder) if (path / "report.md").is_file() else None
    rows = []
    for name, stats in report.table.items():
        row: dict[str, Any] = {"model": report.model, "language": name}
        for k, v in stats.items():
            row[LEADERBOARD_RENAMES.get(k, k)] = v
        if judge:
            row["mode"] = "community"
        row.update({"judge": judge, "reference": reference, "source": source, "report": link})
        rows.append({k: row.get(k) for k in CSV_COLUMNS})
    return Entry(report.model, kind, source, link, judge, reference, rows, _now())


def _annotations_entry(path: Path, folder: Path, language, alpaca_eval_source, n_resamples, seed) -> Entry:
    from xl_suite.evaluation.alpaca_eval import file_kind
    from xl_suite.evaluation.report import write_report
    from xl_suite.evaluation.results import evaluate_annotations
    from xl_suite.sources import DEFAULT_ALPACA_EVAL_SOURCE

    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise InvalidArgumentError(f"{str(path)!r} is not JSON ({e}).") from e
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict) or file_kind(rows) != "annotations":
        raise InvalidArgumentError(
            f"{str(path)!r} is not alpaca_eval's annotations.json (a list of rows with instruction, output_1, "
            "output_2, preference); for model outputs, run `xl-suite evaluate` first and pass its report folder."
        )
    result = evaluate_annotations(
        rows,
        source=alpaca_eval_source or DEFAULT_ALPACA_EVAL_SOURCE,
        language=language,
        what=str(path),
        n_resamples=n_resamples,
        seed=seed,
    )
    model = result.meta.get("model") or path.stem
    result.meta["model"] = model
    report_dir = folder / REPORTS_DIR / _slug(model)
    write_report(result, report_dir, title=f"XL-AlpacaEval report: {model} (alpaca_eval annotations)")
    entry = _report_entry(report_dir, str(path), folder, kind="alpaca_eval_annotations")
    entry.source = str(path)
    return entry


def _alpaca_eval_board_entries(path: Path) -> list[Entry]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        table = list(reader)
    if "win_rate" not in header:
        raise InvalidArgumentError(
            f"{str(path)!r} is not an alpaca_eval leaderboard (no win_rate column; it has {header[:8]})."
        )
    name_column = "model" if "model" in header else header[0]
    entries = []
    for r in table:
        model = r[name_column]
        row: dict[str, Any] = {"model": model, "language": ALPACA_EVAL_BOARD}
        for c in LEADERBOARD_COLUMNS:
            row[c] = _parse_number(r.get(c))
        row.update({"mode": r.get("mode") or None, "source": str(path), "judge": None, "reference": None})
        entries.append(
            Entry(
                model, "alpaca_eval_leaderboard", str(path), None, None, None, [{k: row.get(k) for k in CSV_COLUMNS}]
            )
        )
        entries[-1].added = _now()
    return entries


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def _link(target: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(target.resolve(), folder.resolve())).as_posix()
    except ValueError:  # another drive
        return target.resolve().as_uri()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _number(v) -> float:
    try:
        return float(v) if v not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def _parse_number(text):
    if text in (None, ""):
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


def _cell(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v


def _clean(o):
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    return o


def _read_judges(folder: Path) -> dict | None:
    """The judges' comparison of this folder (``judges.json``, written by ``xl-suite compare-judges``), if any."""
    path = folder / "judges.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
