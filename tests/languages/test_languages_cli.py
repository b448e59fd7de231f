"""``xl-suite languages``: coverage and measured accuracy per language, and the checks of ``languages add``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


BASE = [sys.executable, "-m", "xl_suite.cli", "languages"]


def _run(args, tmp_path):
    env = dict(os.environ, XL_SUITE_LANGUAGES_FILE=str(tmp_path / "l.json"))
    return subprocess.run(BASE + args, capture_output=True, text=True, env=env, timeout=120)


def test_list_shows_coverage_and_accuracy_for_90_plus_languages(tmp_path):
    pytest.importorskip("py3langid")
    r = _run(["list", "--format", "json"], tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {row["code"]: row for row in json.loads(r.stdout)}
    assert len(rows) >= 90
    assert rows["zh"]["coverage"][0] == "py3langid" and rows["zh"]["fidelity"] >= 0.90
    assert rows["fur"]["status"] == "n/a: no offline identifier" and rows["fur"]["fidelity"] is None
    weak = [c for c, row in rows.items() if row["status"].startswith("below")]
    for code in weak:  # every measured language under the bar is listed as such
        assert rows[code]["fidelity"] < 0.90 or rows[code]["max_unrelated"] > 0.10
    table = _run([], tmp_path)
    assert table.returncode == 0, table.stderr
    assert "measured on real text" in table.stdout and "zh-Hant" in table.stdout


def test_add_rejects_a_name_cldr_gives_another_language(tmp_path):
    r = _run(["add", "gsw", "--name", "german", "--native-name", "Schwiizertüütsch", "--script", "Latn"], tmp_path)
    assert r.returncode == 2
    assert "'gsw' is Swiss German in CLDR, but its name 'german' is German" in r.stderr
    assert not (tmp_path / "l.json").exists()
    r = _run(["add", "sw", "--name", "german", "--native-name", "Kiswahili", "--script", "Latn"], tmp_path)
    assert r.returncode == 2 and "'sw' is Swahili in CLDR, but its name 'german' is German" in r.stderr


def test_add_rejects_unknown_code_with_suggestion(tmp_path):
    r = _run(["add", "xx", "--name", "swahili", "--native-name", "K", "--script", "Latn"], tmp_path)
    assert r.returncode == 2 and "not an ISO 639 language" in r.stderr
