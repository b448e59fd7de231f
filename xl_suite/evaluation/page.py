"""The leaderboard's ``index.html``: one self-contained page (data, CSS and script inline; nothing is fetched).

The table is rendered here, so the page reads without its script; the script only sorts. A click on a header sorts
by that column (again: the other way); the URL fragment holds the order (``index.html#sort=de&dir=asc``), so a
sorted view can be linked, and opening such a URL sorts the table before it is shown. The sorted column is on
``<body data-sorted-by=... data-sort-dir=...>``.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from xl_suite.evaluation.alpaca_eval import ALPACA_EVAL_BOARD
from xl_suite.evaluation.results import OVERALL


__all__ = ["render_page", "escape"]


def escape(text) -> str:
    """HTML-escape any value (``None`` as empty)."""
    return html.escape("" if text is None else str(text), quote=True)


_CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d1d1f; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.meta { color: #555; margin: 0 0 12px; } .warnings li { color: #8a4b00; }
table { border-collapse: collapse; } th, td { border: 1px solid #d0d0d5; padding: 4px 8px; vertical-align: top; }
#board td { min-width: 92px; text-align: right; }
#board th.sortable { cursor: pointer; user-select: none; background: #f2f2f5; }
#board th.sortable:hover { background: #e4e4ea; }
#board th[aria-sort="descending"]::after { content: " \\25BC"; } #board th[aria-sort="ascending"]::after { content: " \\25B2"; }
#board tbody th { text-align: left; white-space: nowrap; }
.wr { font-size: 16px; font-weight: 600; display: block; } .ci, .lc, .fid { display: block; font-size: 11px; color: #333; }
td.missing { background: #f7f7f7; color: #999; text-align: center !important; }
#board td.judge { font-size: 12px; color: #444; text-align: left; min-width: 0; } details { margin-top: 16px; }
#rows td, #rows th, #judges td, #judges th { font-size: 12px; }
.legend { font-size: 12px; color: #444; max-width: 70em; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var table = document.getElementById("board");
  if (!table) { return; }
  var tbody = table.tBodies[0];
  var headers = table.tHead.rows[0].cells;
  var textColumns = {model: true, judge: true};
  function column(name) {
    for (var i = 0; i < headers.length; i++) { if (headers[i].getAttribute("data-col") === name) { return i; } }
    return -1;
  }
  function key(row, i) { var v = row.cells[i].getAttribute("data-sort"); return v === null ? "" : v; }
  function sortBy(name, dir) {
    var i = column(name);
    if (i < 0) { return; }
    var desc = dir === "desc";
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.sort(function (a, b) {
      var x = key(a, i), y = key(b, i);
      if (textColumns[name]) { return desc ? y.localeCompare(x) : x.localeCompare(y); }
      var fx = parseFloat(x), fy = parseFloat(y), nx = isNaN(fx), ny = isNaN(fy);
      if (nx || ny) { return nx === ny ? 0 : (nx ? 1 : -1); }
      return desc ? fy - fx : fx - fy;
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
    for (var j = 0; j < headers.length; j++) { headers[j].removeAttribute("aria-sort"); }
    headers[i].setAttribute("aria-sort", desc ? "descending" : "ascending");
    document.body.setAttribute("data-sorted-by", name);
    document.body.setAttribute("data-sort-dir", desc ? "desc" : "asc");
  }
  function fromHash() {
    var params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    var name = params.get("sort");
    if (name) { sortBy(name, params.get("dir") || (textColumns[name] ? "asc" : "desc")); }
  }
  Array.prototype.forEach.call(headers, function (h) {
    if (!h.classList.contains("sortable")) { return; }
    h.addEventListener("click", function () {
      var name = h.getAttribute("data-col");
      var current = document.body.getAttribute("data-sorted-by") === name;
      var dir = current ? (document.body.getAttribute("data-sort-dir") === "desc" ? "asc" : "desc")
                        : (textColumns[name] ? "asc" : "desc");
      window.location.hash = "sort=" + encodeURIComponent(name) + "&dir=" + dir;
    });
  });
  window.addEventListener("hashchange", fromHash);
  fromHash();
}());
"""


def _num(v) -> float:
    try:
        return float(v) if v not in (None, "") else math.nan
    except (TypeError, ValueError):
        return math.nan


def _fmt(v, digits: int = 1) -> str:
    x = _num(v)
    return "" if math.isnan(x) else f"{x:.{digits}f}"


def _colour(win_rate: float) -> str:
    """Red (0) through yellow (50) to green (100)."""
    return f"hsl({1.2 * max(0.0, min(100.0, win_rate)):.0f}, 70%, 82%)"


def _cell(row: dict[str, Any] | None, lang: str) -> str:
    if row is None:
        return f'<td class="missing" data-lang="{escape(lang)}" data-sort="">&ndash;</td>'
    wr = _num(row.get("win_rate"))
    parts = []
    if not math.isnan(wr):
        parts.append(f'<span class="wr" title="win_rate: mean P(model beats reference) x 100">{wr:.1f}</span>')
        if not math.isnan(_num(row.get("ci_low"))):
            parts.append(
                f'<span class="ci" title="bootstrap CI">[{_fmt(row["ci_low"])}, {_fmt(row["ci_high"])}]</span>'
            )
        if not math.isnan(_num(row.get("lc_minimal_winrate"))):
            parts.append(
                '<span class="lc" title="lc_minimal_winrate: alpaca_eval\'s length_controlled_minimal GLM">'
                f"LC min {_fmt(row['lc_minimal_winrate'])}</span>"
            )
        if not math.isnan(_num(row.get("length_controlled_winrate"))):
            parts.append(
                '<span class="lc" title="length_controlled_winrate: alpaca_eval\'s length_controlled_v1">'
                f"LC v1 {_fmt(row['length_controlled_winrate'])}</span>"
            )
    if not math.isnan(_num(row.get("language_fidelity"))):
        parts.append(
            '<span class="fid" title="language_fidelity: answers in the target language">'
            f"fidelity {_fmt(row['language_fidelity'])}%</span>"
        )
    style = f' style="background: {_colour(wr)}"' if not math.isnan(wr) else ""
    sort = "" if math.isnan(wr) else f"{wr:.6f}"
    return f'<td data-lang="{escape(lang)}" data-sort="{sort}"{style}>{"".join(parts)}</td>'


def _board_table(board) -> str:
    by_key = {(r["model"], r["language"]): r for r in board.rows}
    judges: dict[str, list[str]] = {}
    links: dict[str, str] = {}
    for e in board.entries:
        judges.setdefault(e.model, [])
        if e.judge and e.judge not in judges[e.model]:
            judges[e.model].append(e.judge)
        if e.report and e.model not in links:
            links[e.model] = e.report
    head = [
        '<th class="sortable" data-col="model" scope="col">Model</th>',
        '<th data-col="judge" scope="col">Judge</th>',
    ]
    head += [
        f'<th class="sortable" data-col="{escape(lang)}" scope="col">{escape(lang)}</th>' for lang in board.languages
    ]
    body = []
    for model in board.models:
        name = escape(model)
        label = f'<a href="{escape(links[model])}">{name}</a>' if model in links else name
        cells = [f'<th scope="row" data-sort="{name}">{label}</th>']
        judge = ", ".join(judges.get(model, [])) or "-"
        cells.append(f'<td class="judge" data-sort="{escape(judge)}">{escape(judge)}</td>')
        cells += [_cell(by_key.get((model, lang)), lang) for lang in board.languages]
        body.append(f'<tr data-model="{name}">{"".join(cells)}</tr>')
    return (
        f'<table id="board"><thead><tr>{"".join(head)}</tr></thead>\n<tbody>\n'
        + "\n".join(body)
        + "\n</tbody></table>"
    )


def _board(board, legend: str) -> str:
    if not board.entries:
        return '<p class="legend">No model on this board yet: <code>xl-suite leaderboard REPORT... --output</code> adds them.</p>'
    return (
        f'{_board_table(board)}\n<p class="legend">{legend}</p>\n'
        f"<details><summary>All rows, as in leaderboard.csv</summary>\n{_rows_table(board)}\n</details>"
    )


def _rows_table(board) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in board.columns)
    body = []
    for r in board.rows:
        cells = []
        for c in board.columns:
            v = r.get(c)
            cells.append(f"<td>{escape(_fmt(v, 3) if isinstance(v, float) else v)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table id="rows"><thead><tr>{head}</tr></thead><tbody>' + "".join(body) + "</tbody></table>"


def _judges_section(judges: dict | None) -> str:
    """The judges' comparison (``xl-suite compare-judges``), when the folder has one."""
    if not judges or not judges.get("rows"):
        return ""
    columns = judges["columns"]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{escape(_fmt(r.get(c), 3) if isinstance(r.get(c), float) else r.get(c))}</td>" for c in columns
        )
        + "</tr>"
        for r in judges["rows"]
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in judges.get("notes", []))
    return (
        '<section id="judges-section"><h2>Judges compared, per language</h2>'
        f'<ul class="legend">{notes}</ul><table id="judges"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        "</section>"
    )


def render_page(board, judges: dict | None = None, *, title: str = "XL-AlpacaEval leaderboard") -> str:
    """The whole ``index.html`` of a :class:`~xl_suite.evaluation.leaderboard.Leaderboard` (and of the judges'
    comparison, when given)."""
    from xl_suite import __version__

    warnings = "".join(f"<li>{escape(w)}</li>" for w in board.warnings())
    languages = [x for x in board.languages if x != OVERALL]
    data = json.dumps(
        {"models": board.models, "languages": board.languages, "rows": board.rows},
        ensure_ascii=False,
        default=str,
    ).replace("</", "<\\/")
    legend = (
        "Each cell: the win rate (mean P(model beats reference) x 100, a tie = 50) with its bootstrap CI; "
        "<b>LC min</b>: <code>lc_minimal_winrate</code>, the length-controlled win rate by alpaca_eval's "
        "<code>length_controlled_minimal</code> GLM (every evaluation); <b>LC v1</b>: "
        "<code>length_controlled_winrate</code>, alpaca_eval's leaderboard estimator <code>length_controlled_v1</code> "
        "(only for alpaca_eval's own judgments); <b>fidelity</b>: answers in the target language. Colour: win rate, "
        "red (0) to green (100). Click a header to sort; the order is kept in the URL (#sort=LANG&amp;dir=asc). "
        f"The {escape(ALPACA_EVAL_BOARD)!s} column, when present, holds alpaca_eval's published rows."
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{_CSS}</style>
</head>
<body data-sorted-by="" data-sort-dir="">
<h1>{escape(title)}</h1>
<p class="meta">{len(board.models)} models; languages: {escape(", ".join(languages))}. Files: <a href="leaderboard.csv">leaderboard.csv</a>.
Written by xl-suite {escape(__version__)}.</p>
<ul class="warnings">{warnings}</ul>
{_board(board, legend)}
{_judges_section(judges)}
<script type="application/json" id="leaderboard-data">{data}</script>
<script>{_SCRIPT}</script>
</body>
</html>
"""
