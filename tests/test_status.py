"""One row status: every status value comes from ``xl_suite.status``; none is spelt as a literal elsewhere."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pyarrow as pa
import pytest

from xl_suite.runner import failed_rows, failure_counts
from xl_suite.status import BACKEND_FAILED, FAILED, USABLE, RowStatus, is_failed, is_usable


PACKAGE = Path(__file__).resolve().parents[1] / "xl_suite"
#: Values that only ever mean a status: spelt anywhere outside xl_suite/status.py (docstrings aside) they are a
#: second definition.
STATUS_ONLY = {
    s.value for s in RowStatus if s not in (RowStatus.OK, RowStatus.EMPTY, RowStatus.ERROR, RowStatus.REPAIRED)
} - {"n/a", "truncated", "prompt_truncated"}
#: Words that are not row statuses where they stand: (file, value) -> why.
NOT_STATUSES = {
    ("xl_suite/commands/languages.py", "ok"): "the languages table's verdict on a language, not a row's status",
    ("xl_suite/evaluation/text.py", "unparsed"): "a table column heading",
}
#: Values that are also ordinary words or keys ("ok" flags, "empty" counts, "error" messages): a status literal
#: when compared against.
ALL_VALUES = {s.value for s in RowStatus}


def _docstring_nodes(tree) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _literals(source: str) -> list[tuple[int, str, str]]:
    """(line, value, why) of the status literals in one module's code."""
    tree = ast.parse(source)
    skip = _docstring_nodes(tree)
    for node in ast.walk(tree):  # dict keys and subscripts name fields (extra["prompt_truncated"]), not statuses
        if isinstance(node, ast.Dict):
            skip.update(id(k) for k in node.keys if k is not None)
        elif isinstance(node, ast.Subscript):
            skip.add(id(node.slice))
        elif isinstance(node, ast.Call):  # d.get("prompt_truncated", 0)
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "setdefault", "pop") and node.args:
                skip.add(id(node.args[0]))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                items = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                for item in items:
                    if isinstance(item, ast.Constant) and item.value in ALL_VALUES:
                        found.append((item.lineno, item.value, "compared"))
                        skip.add(id(item))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value in STATUS_ONLY
            and id(node) not in skip
        ):
            found.append((node.lineno, node.value, "spelt"))
    return found


def test_no_status_literal_outside_the_status_module():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "status.py" and path.parent == PACKAGE:
            continue
        name = str(path.relative_to(PACKAGE.parent))
        for line, value, why in _literals(path.read_text(encoding="utf-8")):
            if (name, value) in NOT_STATUSES:
                continue
            offenders.append(f"{name}:{line}: {value!r} ({why})")
    assert not offenders, "status literals; use xl_suite.status.RowStatus:\n" + "\n".join(offenders)


def test_the_literal_check_catches_a_planted_one():
    planted = 'def f(row):\n    """Docstrings may say "unparsed"."""\n    return row["s"] == "ok" or row["t"] in ("too_long",)\n'
    assert [(v, w) for _, v, w in _literals(planted)] == [("ok", "compared"), ("too_long", "compared")]
    assert [v for _, v, _ in _literals('STATUS = "unparsed"\n')] == ["unparsed"]
    assert _literals('d = {"prompt_truncated": 1}\nx = d["prompt_truncated"]\ny = d.get("empty", 0)\n') == []


def test_the_ground_tables_module_imports_no_engine():
    source = (PACKAGE / "tables.py").read_text(encoding="utf-8")
    assert "xl_suite.engines" not in source


def test_a_status_is_its_value_in_every_form_it_is_written():
    assert RowStatus.UNPARSED == "unparsed" and "unparsed" in FAILED and RowStatus("ok") is RowStatus.OK
    assert (str(RowStatus.OK), f"{RowStatus.TOO_LONG}", repr(RowStatus.EMPTY)) == ("ok", "too_long", "'empty'")
    assert json.dumps({"s": RowStatus.ERROR}) == '{"s": "error"}'
    assert pa.array([RowStatus.OK, RowStatus.UNPARSED]).to_pylist() == ["ok", "unparsed"]
    assert type(pa.array([RowStatus.OK]).to_pylist()[0]) is str


def test_the_sets_are_disjoint_and_cover_the_backend_failures():
    assert not FAILED & USABLE
    assert set(BACKEND_FAILED) <= FAILED
    assert is_usable(True) and is_usable("prompt_truncated") and not is_usable("unparsed") and not is_usable(None)


@pytest.mark.parametrize("legacy", ["unparseable"])
def test_legacy_values_in_old_files_still_read_as_failures(legacy):
    old = pa.table({"score_status": ["ok", legacy, "ok"], "judge_status": [["ok"], ["ok"], ["empty", "ok"]]})
    assert failed_rows(old, ["score_status", "judge_status"]) == [1, 2]
    assert failure_counts(old, ["score_status", "judge_status"]) == {legacy: 1, "empty": 1}
    assert is_failed(legacy)
