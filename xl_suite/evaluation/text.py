"""The plain-text table of an evaluation (``xl-suite evaluate`` prints it; the report reuses its cells).

Depends on nothing of the evaluation but the result's ``table`` (language -> row dict), so both
:class:`~xl_suite.evaluation.results.EvaluationResult` and :mod:`~xl_suite.evaluation.report` use it.
"""

from __future__ import annotations

import math
from typing import Any


__all__ = ["MAIN_COLUMNS", "format_value", "table_columns", "format_table"]

#: The table's main columns, (key, label), in order.
MAIN_COLUMNS = [
    ("language", "lang"),
    ("n", "n"),
    ("win_rate", "WR"),
    ("standard_error", "SE"),
    ("ci_low", "CI low"),
    ("ci_high", "CI high"),
    ("discrete_win_rate", "discrete"),
    ("lc_minimal_winrate", "LC min"),
    ("length_controlled_winrate", "LC v1"),
    ("parse_rate", "parsed %"),
    ("n_unparsed_judgments", "unparsed"),
    ("prefer_first_rate", "prefer 1st"),
    ("prefer_longer_rate", "prefer longer"),
    ("language_fidelity", "fidelity %"),
    ("language_fidelity_strict", "strict %"),
    ("line_pass_rate", "line pass %"),
]


def format_value(v: Any, digits: int = 1) -> str:
    """A table cell: ``-`` for None, ``n/a`` for NaN, one decimal (two below 1).

    >>> format_value(None), format_value(float("nan")), format_value(51.234), format_value(0.5)
    ('-', 'n/a', '51.2', '0.50')
    """
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.{digits}f}" if abs(v) >= 1 or v == 0 else f"{v:.2f}"
    return str(v)


def table_columns(result) -> list[tuple[str, str]]:
    """(key, label) of the columns of ``result.table`` worth showing: the main ones present, then the rubric's."""
    present = set().union(*(row.keys() for row in result.table.values()))
    cols = [(k, label) for k, label in MAIN_COLUMNS if k in present]
    cols += [
        (k, k.replace("rubric_", "")) for k in sorted(present) if k.startswith("rubric_") and k != "rubric_parse_rate"
    ]
    return cols


def format_table(result) -> str:
    """Fixed-width text table, one row per language and one for ``overall``."""
    cols = table_columns(result)
    rows = [[format_value(row.get(k)) for k, _ in cols] for row in result.table.values()]
    widths = [max(len(label), *(len(r[j]) for r in rows)) for j, (_, label) in enumerate(cols)]
    lines = ["  ".join(label.rjust(w) for (_, label), w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
