"""Attacks on --overwrite: foreign folders, the working directory, symlinks; only folders we wrote are replaced."""

import os

import datasets
import pytest

from xl_suite.errors import OutputExistsError
from xl_suite.export import write_repo
from xl_suite.safety import MARKER_FILE, check_replaceable, unique_temp_path


def _configs(rows=1):
    ds = datasets.Dataset.from_dict({"id": list("ab")[:rows], "instruction": ["x"] * rows, "language": ["de"] * rows})
    return {"xl-alpacaeval-de": datasets.DatasetDict({"test": ds})}


def test_export_writes_a_marker_and_replaces_only_its_own_folder(tmp_path):
    out = write_repo(tmp_path / "repo", _configs())
    assert (out / MARKER_FILE).is_file()
    lines = []
    write_repo(out, _configs(), echo=lines.append)  # the same data again: a no-op that says so
    assert len(lines) == 1 and "unchanged" in lines[0]
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_repo(out, _configs(rows=2))
    write_repo(out, _configs(rows=2), overwrite=True)
    assert (out / MARKER_FILE).is_file() and not [p for p in tmp_path.iterdir() if "tmp" in p.name]


def test_overwrite_refuses_a_foreign_folder_and_names_it(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputExistsError, match=r"photos.*not written by xl-suite"):
        write_repo(foreign, _configs(), overwrite=True)
    assert (foreign / "holiday.jpg").read_bytes() == b"\xff\xd8"


@pytest.mark.parametrize("target", [".", "..", "sub/.."])
def test_overwrite_never_deletes_the_working_directory(tmp_path, monkeypatch, target):
    work = tmp_path / "a" / "b"
    (work / "sub").mkdir(parents=True)
    (work / "mine.txt").write_text("keep")
    (work / MARKER_FILE).write_text("{}")  # even a marker does not make the cwd deletable
    monkeypatch.chdir(work)
    with pytest.raises(OutputExistsError, match="working directory"):
        write_repo(target, _configs(), overwrite=True)
    assert (work / "mine.txt").read_text() == "keep"


def test_cli_export_dot_overwrite_keeps_cwd(tmp_path, monkeypatch):
    from xl_suite.cli import main

    (tmp_path / "mine.txt").write_text("keep")
    monkeypatch.chdir(tmp_path)
    code = main(["export", ".", "--overwrite", "--languages", "de", "--alpaca-eval", str(tmp_path / "none.json")])
    assert code == 2 and (tmp_path / "mine.txt").read_text() == "keep"


def test_symlink_and_file_targets(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "x").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(OutputExistsError):
        check_replaceable(link, overwrite=True)
    assert check_replaceable(tmp_path / "missing", overwrite=False) is False
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_replaceable(empty, overwrite=False) is False


def test_unique_temp_names_differ_across_calls_and_processes():
    names = {unique_temp_path("/out/x.parquet") for _ in range(100)}
    assert len(names) == 100 and all(f"-{os.getpid()}-" in n for n in names)
