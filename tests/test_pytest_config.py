"""The suite's own pytest configuration (pyproject.toml): what it leaves out of collection is safe to leave out."""

import re
import shlex
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]


def _addopts() -> list[str]:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")  # tomllib is Python 3.11+; the package supports 3.10
    (line,) = re.findall(r'^addopts = "(.*)"$', text, re.M)
    return shlex.split(line)


def test_files_left_out_of_doctest_collection_hold_no_doctests():
    """``--ignore`` keeps the package __init__ files (lazy exports) out of ``--doctest-modules``: a doctest written
    there would never run, so there must be none."""
    ignored = [arg.split("=", 1)[1] for arg in _addopts() if arg.startswith("--ignore=")]
    assert ignored, "no --ignore in addopts: drop this test with the option"
    for name in ignored:
        path = REPO / name
        assert path.is_file(), f"{name} is ignored in pyproject.toml but does not exist"
        assert ">>>" not in path.read_text(encoding="utf-8"), f"{name} has a doctest that --ignore hides"
