"""Stale language definitions and concurrent `languages add` (issue 20, outside fault test).

* after ``xl-suite languages add gsw ... --overwrite`` corrects a definition, everything built from it (generate,
  the loader, export, translate, the judges, synthesis) serves the new definition, never its earlier cache;
* six concurrent ``languages add`` into one file keep all six (the file is read, changed and replaced under a lock).
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import xl_suite.languages as L
from xl_suite.cli import main
from xl_suite.engines.fake import FakeGenerator, FakeSynthesisResponder


REPO = Path(__file__).resolve().parents[1]
ALPACA = [
    {"instruction": f"Explain topic number {k} briefly.", "output": f"Topic {k}.", "generator": "x"} for k in range(3)
]


def _spec(native="Schwiizertüütsch", request="Bitte antworte auf Schweizerdeutsch.", code="gsw", name="swiss german"):
    return L.LanguageSpec(code=code, name=name, native_name=native, script="Latn", request=request, langid_code="de")


@pytest.fixture
def gsw():
    """Swiss German registered for this process; redefine(...) replaces it (as `languages add --overwrite`)."""

    def redefine(**kw):
        return L.register_language(_spec(**kw), overwrite=True)

    redefine()
    yield redefine
    L.unregister_language("gsw")


def _cli(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, *capsys.readouterr()


# -- concurrent adds ---------------------------------------------------------------------------------------------

CODES = [("qaa", "alpha"), ("qab", "bravo"), ("qac", "charlie"), ("qad", "delta"), ("qae", "echo"), ("qaf", "foxtrot")]


def test_concurrent_saves_keep_every_language(tmp_path, monkeypatch):
    """Six saves at once, each one slowed between reading the file and writing it back: all six are kept."""
    path = tmp_path / "languages.json"
    read = L._read_languages_file

    def slow_read(p):
        out = read(p)
        time.sleep(0.2)  # the window in which another save used to read the same file
        return out

    monkeypatch.setattr(L, "_read_languages_file", slow_read)
    errors = []

    def save(code, name):
        try:
            L.save_user_language(_spec(native=name.title(), code=code, name=name), path=path)
        except Exception as e:  # noqa: BLE001 - collected and shown below
            errors.append(e)

    threads = [threading.Thread(target=save, args=c) for c in CODES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(e["code"] for e in json.loads(path.read_text(encoding="utf-8"))) == [c for c, _ in CODES]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name], "no temporary file left behind"


@pytest.mark.slow
def test_six_concurrent_languages_add_commands_keep_all_six(tmp_path):
    path = tmp_path / "languages.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "xl_suite.cli", "languages", "add", code, "--name", name, "--native-name",
             name.title(), "--script", "Latn", "--file", str(path)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for code, name in CODES
    ]  # fmt: skip
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    assert sorted(e["code"] for e in json.loads(path.read_text(encoding="utf-8"))) == [c for c, _ in CODES]


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


# -- a redefined language is never served from its earlier definition ---------------------------------------------


def test_generate_load_and_export_serve_the_corrected_request(tmp_path, capsys, monkeypatch):
    langs = tmp_path / "languages.json"
    monkeypatch.setenv("XL_SUITE_LANGUAGES_FILE", str(langs))
    source = tmp_path / "alpaca.json"
    source.write_text(json.dumps(ALPACA), encoding="utf-8")
    add = [
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
    gen = ["generate", "--backend", "fake", "--model", "m", "--config", "xl-alpacaeval-gsw", "--source", source]
    assert _cli([*add, "--request", "Antworte auf Schweizerdeutsch (alt)."], capsys)[0] == 0
    assert _cli([*gen, "--output", tmp_path / "o"], capsys)[0] == 0
    assert _cli(["export", tmp_path / "x", "--languages", "gsw", "--alpaca-eval", source], capsys)[0] == 0
    assert _cli([*add, "--request", "Antworte auf Schweizerdeutsch (neu).", "--overwrite"], capsys)[0] == 0
    rc, out, err = _cli([*gen, "--output", tmp_path / "o"], capsys)
    assert rc == 0, err
    rows = [json.loads(x) for x in (tmp_path / "o" / "xl-alpacaeval-gsw.jsonl").read_text().splitlines()]
    assert all(r["instruction"].endswith("(neu).") for r in rows) and "3 computed now" in out
    from xl_suite.datasets_api import load_xl_suite

    ds = load_xl_suite("xl-alpacaeval-gsw", split="test", source=str(source))
    assert all(x.endswith("(neu).") for x in ds["instruction"])
    rc, _, err = _cli(["export", tmp_path / "x", "--languages", "gsw", "--alpaca-eval", source, "--overwrite"], capsys)
    assert rc == 0, err
    import datasets

    exported = datasets.load_dataset(str(tmp_path / "x"), "xl-alpacaeval-gsw", split="test")
    assert all(x.endswith("(neu).") for x in exported["instruction"])


def _echo_system(messages, index, sampling):
    return messages[0]["content"][-200:]  # the part of the system prompt that names the language


def test_translate_uses_the_new_definition_not_its_cache(gsw, tmp_path):
    import datasets

    from xl_suite.evaluation import translate_prompts

    prompts = datasets.Dataset.from_list([{"id": "a", "english_instruction": "Write a line."}])
    first = translate_prompts(prompts, FakeGenerator(_echo_system), "gsw", work_dir=str(tmp_path))
    assert "Schwiizertüütsch" in first["gsw"]["instruction"][0]
    gsw(native="Schwyzerdütsch")
    again = translate_prompts(prompts, FakeGenerator(_echo_system), "gsw", work_dir=str(tmp_path))
    assert "Schwyzerdütsch" in again["gsw"]["instruction"][0]
    # a built-in language keeps its cache keys (no definition enters them)
    de = translate_prompts(prompts, FakeGenerator(_echo_system), "de", work_dir=str(tmp_path))
    assert de["de"]["translation_status"] == ["ok"]


def test_the_judge_judges_again_after_a_redefinition(gsw, tmp_path):
    from xl_suite.evaluation.judging import JudgeConfig, judge_pairwise

    judge = FakeGenerator(FakeSynthesisResponder())
    items = dict(instructions=["Q?"], model_outputs=["Grüezi"], reference_outputs=["Hoi"], languages=["gsw"])
    config = JudgeConfig(rubric=False, logprobs=None)
    assert judge_pairwise(**items, judge=judge, config=config, cache_dir=str(tmp_path)).ledger["from_cache"] == 0
    assert judge_pairwise(**items, judge=judge, config=config, cache_dir=str(tmp_path)).ledger["from_cache"] == 2
    gsw(native="Schwyzerdütsch")  # another name in the judge prompt
    assert judge_pairwise(**items, judge=judge, config=config, cache_dir=str(tmp_path)).ledger["from_cache"] == 0


def test_synthesis_writes_again_in_the_redefined_language(gsw, tmp_path):
    from xl_suite.synthesis import SynthesisConfig, synthesize
    from xl_suite.synthesis.seeds import builtin_seeds

    config = SynthesisConfig(languages=("gsw",), max_seeds=4, chunk_size=4, language_filter=False)
    seeds = builtin_seeds()
    synthesize(seeds, FakeGenerator(FakeSynthesisResponder()), config, output=str(tmp_path))
    gsw(native="Schwyzerdütsch")
    again = synthesize(seeds, FakeGenerator(FakeSynthesisResponder()), config, output=str(tmp_path))
    stages = {s["stage"]: s for s in again.summary["stages"]}
    assert stages["respond"]["chunks_computed"] == 1 and stages["judge"]["chunks_computed"] == 1
