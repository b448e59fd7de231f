"""export -> plain datasets.load_dataset round trip, and the generated card."""

import json
import os
import subprocess
import sys

import datasets
import pytest

from xl_suite.cli import main
from xl_suite.errors import (
    OutputExistsError,
)
from xl_suite.export import export_repo, write_repo
from xl_suite.safety import MARKER_FILE


pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def exported(alpaca_eval_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    m = root / "m_src"
    m.mkdir()
    (m / "de.jsonl").write_text(
        json.dumps({"instruction": "Wie spät ist es?", "english_instruction": "What time is it?"}) + "\n",
        encoding="utf-8",
    )
    (m / "mt.jsonl").write_text(json.dumps({"instruction": "X'ħin hu?"}) + "\n", encoding="utf-8")
    out = export_repo(root / "xl-suite", languages="de,mt", alpaca_eval=str(alpaca_eval_path), m_alpacaeval=str(m))
    return out


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_every_config_loads_with_plain_datasets(exported):
    names = datasets.get_dataset_config_names(str(exported))
    assert sorted(names) == sorted(
        [
            "xl-alpacaeval-de",
            "xl-alpacaeval-mt",
            "xl-alpacaeval-all",
            "m-alpacaeval-de",
            "m-alpacaeval-mt",
            "m-alpacaeval-all",
        ]
    )
    for name in names:
        ds = datasets.load_dataset(str(exported), name, split="test")
        expected = {"xl-alpacaeval-all": 2 * 797, "m-alpacaeval-all": 2}.get(
            name, 797 if name.startswith("xl-") else 1
        )
        assert ds.num_rows == expected, name
    de = datasets.load_dataset(str(exported), "xl-alpacaeval-de", split="test")
    assert de[0]["instruction"].endswith("Please respond in German.")


def test_load_by_bare_name_in_working_directory(exported, monkeypatch):
    monkeypatch.chdir(exported.parent)
    ds = datasets.load_dataset("xl-suite", "xl-alpacaeval-mt")
    assert ds["test"].num_rows == 797


def test_card_is_filled_from_the_data(exported):
    card = (exported / "README.md").read_text(encoding="utf-8")
    assert "| `xl-alpacaeval-de` | test | 797 | de |" in card
    assert "| `m-alpacaeval-mt` | test | 1 | mt |" in card
    assert "797 of 805 kept" in card
    assert card.count("| letter-pattern |") == 1 and "Come up with words that rhyme" in card
    assert "| mt | Maltese | Malti | Latn | Please respond in Maltese. |" in card
    assert "cc-by-nc-4.0" in card and "2503.22973" in card and "our reconstruction" in card


def test_refuses_existing_folder_unless_overwrite(exported, alpaca_eval_path):
    before = sorted(p.name for p in exported.iterdir())
    with pytest.raises(FileExistsError, match="overwrite"):
        export_repo(exported, languages="de", alpaca_eval=str(alpaca_eval_path))
    assert sorted(p.name for p in exported.iterdir()) == before


@pytest.mark.slow  # four `xl-suite export` subprocesses
def test_cli_export_and_overwrite(alpaca_eval_path, tmp_path):
    env = dict(os.environ)
    cmd = [
        sys.executable,
        "-m",
        "xl_suite.cli",
        "export",
        str(tmp_path / "out"),
        "--languages",
        "ga",
        "--alpaca-eval",
        str(alpaca_eval_path),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'datasets.load_dataset("' in r.stdout
    r2 = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)  # the same export: a no-op
    assert r2.returncode == 0 and "unchanged" in r2.stdout, r2.stderr
    other = [*cmd[:-4], "--languages", "ga,mt", *cmd[-2:]]
    r2 = subprocess.run(other, capture_output=True, text=True, env=env, timeout=120)
    assert r2.returncode == 2 and "--overwrite" in r2.stderr and "holds the output of another run" in r2.stderr
    r3 = subprocess.run(other + ["--overwrite"], capture_output=True, text=True, env=env, timeout=120)
    assert r3.returncode == 0, r3.stderr
    assert datasets.load_dataset(str(tmp_path / "out"), "xl-alpacaeval-ga", split="test").num_rows == 797


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

    (tmp_path / "mine.txt").write_text("keep")
    monkeypatch.chdir(tmp_path)
    code = main(["export", ".", "--overwrite", "--languages", "de", "--alpaca-eval", str(tmp_path / "none.json")])
    assert code == 2 and (tmp_path / "mine.txt").read_text() == "keep"
