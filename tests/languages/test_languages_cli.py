"""``xl-suite languages``: coverage and measured accuracy per language, and the checks of ``languages add``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xl_suite.cli import main


BASE = [sys.executable, "-m", "xl_suite.cli", "languages"]


def _cli(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, *capsys.readouterr()


def _run(args, tmp_path):
    env = dict(os.environ, XL_SUITE_LANGUAGES_FILE=str(tmp_path / "l.json"))
    return subprocess.run(BASE + args, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow  # `xl-suite languages` subprocesses (about 2 s of CPU)
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


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
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


def test_a_languages_file_that_is_a_folder_or_read_only_is_one_clear_error(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "folder"
    folder.mkdir()
    argv = [
        "languages",
        "add",
        "gsw",
        "--name",
        "swiss german",
        "--native-name",
        "Schwiizertüütsch",
        "--script",
        "Latn",
    ]
    rc, _, err = _cli([*argv, "--file", folder], capsys)
    assert rc == 2 and "is a folder" in err and err.count("\n") == 1
    monkeypatch.setenv("XL_SUITE_LANGUAGES_FILE", str(folder))
    rc, _, err = _cli(
        ["generate", "--backend", "fake", "--model", "m", "--config", "xl-alpacaeval-gsw", "--output", tmp_path / "o"],
        capsys,
    )
    assert rc == 2 and "is a folder, not a file" in err and "Traceback" not in err
    read_only = tmp_path / "ro.json"
    read_only.write_text("[]", encoding="utf-8")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == read_only else real_access(p, mode))
    rc, _, err = _cli([*argv, "--file", read_only], capsys)
    assert rc == 2 and "is read-only" in err and read_only.read_text() == "[]"
