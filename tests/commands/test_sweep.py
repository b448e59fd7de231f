"""Bad input by class, for every CLI command and the public functions: a clear one-line error, never a traceback.

Each case names a command, the class of bad input and the arguments; ``{name}`` placeholders are paths made by the
``paths`` fixture. Every case must end with exit status 2 and exactly one stderr line ``xl-suite <command>: error:
...`` that names the bad value (``expect``). An exception escaping ``cli.main`` (a bug: the CLI shows its
traceback) fails the test with that exception. Everything runs in-process, before any engine starts.
"""

import json
import math
import os
from pathlib import Path

import pytest

import xl_suite
from xl_suite.cli import COMMANDS, main
from xl_suite.errors import XlSuiteError


ALPACA = [{"instruction": f"Explain topic number {k} briefly.", "output": f"Topic {k}."} for k in range(3)]
#: alpaca_eval annotations (leaderboard, compare-judges) of the same prompts
ANNOTATIONS = [
    {**{"instruction": a["instruction"], "output_1": a["output"], "output_2": "Other."}, "preference": 1.5}
    for a in ALPACA
]


@pytest.fixture
def paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = {
        "missing": tmp_path / "no-such-file.jsonl",
        "empty": tmp_path / "empty.jsonl",
        "empty_json": tmp_path / "empty.json",
        "nonutf8": tmp_path / "latin1.jsonl",
        "dir": tmp_path / "a-folder",
        "file": tmp_path / "a-file",
        "ro": tmp_path / "read-only",
        "bad_yaml": tmp_path / "bad.yaml",
        "bad_json": tmp_path / "bad.json",
        "list_yaml": tmp_path / "list.yaml",
        "alpaca": tmp_path / "alpaca_eval.json",
        "out": tmp_path / "out",
        "ann": tmp_path / "annotations.json",
    }
    p["empty"].write_text("")
    p["empty_json"].write_text("")
    p["nonutf8"].write_bytes('{"text": "Grüße aus Köln", "instruction": "Straße"}\n'.encode("latin-1"))
    p["dir"].mkdir()
    p["file"].write_text("not a folder\n")
    p["ro"].mkdir()
    p["bad_yaml"].write_text("model: [unclosed\n  max_tokens: 3\n")
    p["bad_json"].write_text('{"model": "m",,}')
    p["list_yaml"].write_text("- model\n- m\n")
    p["alpaca"].write_text(json.dumps(ALPACA))
    p["ann"].write_text(json.dumps(ANNOTATIONS))
    # a folder this user cannot write to (root can write anywhere: the permission check is made to see it as a
    # user would; the rest of the run is the same)
    p["ro"].chmod(0o500)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda q, mode: False if Path(q) == p["ro"] else real_access(q, mode))
    yield {k: str(v) for k, v in p.items()}
    p["ro"].chmod(0o700)


FAKE = ["--backend", "fake", "--model", "m"]
GEN = ["generate", *FAKE, "--config", "xl-alpacaeval-de", "--source", "{alpaca}"]
TRANS = ["translate", *FAKE, "--languages", "de", "--source", "{alpaca}"]
SYNTH_BASE = ["synthesize", *FAKE, "--no-progress"]
SYNTH = [*SYNTH_BASE, "--languages", "mt", "--max-seeds", "4"]
EVAL = ["evaluate", "--model-outputs", "{alpaca}", "--language", "de", "--alpaca-eval-source", "{alpaca}"]
DEMO = ["demo", "--model", "m"]  # every case fails before a model is built

# (command, class of bad input, argv, text the error must contain)
CASES = [
    # missing file
    ("generate", "missing file", [*GEN[:-1], "{missing}", "--output", "{out}"], "no-such-file"),
    ("translate", "missing file", [*TRANS[:-1], "{missing}", "--output", "{out}"], "no-such-file"),
    ("synthesize", "missing file", [*SYNTH, "--seeds", "{missing}", "--output", "{out}"], "no-such-file"),
    ("evaluate", "missing file", ["evaluate", "--model-outputs", "{missing}", "--output", "{out}"], "no-such-file"),
    (
        "evaluate",
        "missing file",
        [*EVAL, "--references", "{missing}", "--judge-backend", "fake", "--judge-model", "j", "--output", "{out}"],
        "no-such-file",
    ),
    ("export", "missing file", ["export", "{out}", "--alpaca-eval", "{missing}", "--languages", "de"], "no-such-file"),
    (
        "export",
        "missing file",
        ["export", "{out}", "--alpaca-eval", "{alpaca}", "--languages", "de", "--m-alpacaeval", "{missing}"],
        "no-such-file",
    ),
    ("demo", "missing file", [*DEMO, "--alpaca-eval", "{missing}", "--output-dir", "{out}"], "no-such-file"),
    ("generate", "missing file", [*GEN, "--output", "{out}", "--config-file", "{missing}"], "no-such-file"),
    (
        "push",
        "missing file",
        ["push", "me/repo", "--config", "xl-alpacaeval-de", "--from-dir", "{missing}"],
        "no-such-file",
    ),
    # empty file
    ("generate", "empty file", [*GEN[:-1], "{empty_json}", "--output", "{out}"], "empty.json"),
    ("translate", "empty file", [*TRANS[:-1], "{empty}", "--output", "{out}"], "empty.jsonl"),
    ("synthesize", "empty file", [*SYNTH, "--seeds", "{empty}", "--output", "{out}"], "empty.jsonl"),
    ("evaluate", "empty file", ["evaluate", "--model-outputs", "{empty}", "--output", "{out}"], "empty.jsonl"),
    ("export", "empty file", ["export", "{out}", "--alpaca-eval", "{empty_json}", "--languages", "de"], "empty.json"),
    # non-UTF-8 file
    ("generate", "non-UTF-8", [*GEN[:-1], "{nonutf8}", "--output", "{out}"], "latin1.jsonl"),
    ("synthesize", "non-UTF-8", [*SYNTH, "--seeds", "{nonutf8}", "--output", "{out}"], "latin1.jsonl"),
    ("evaluate", "non-UTF-8", ["evaluate", "--model-outputs", "{nonutf8}", "--output", "{out}"], "latin1.jsonl"),
    ("translate", "non-UTF-8", [*TRANS, "--output", "{out}", "--config-file", "{nonutf8}"], "latin1.jsonl"),
    # a folder where a file belongs
    ("generate", "folder for file", [*GEN[:-1], "{dir}", "--output", "{out}"], "a-folder"),
    ("evaluate", "folder for file", ["evaluate", "--model-outputs", "{dir}", "--output", "{out}"], "a-folder"),
    ("synthesize", "folder for file", [*SYNTH, "--seeds", "{dir}", "--output", "{out}"], "a-folder"),
    ("translate", "folder for file", [*TRANS, "--output", "{out}", "--config-file", "{dir}"], "a-folder"),
    # a file where a folder belongs
    ("generate", "file for folder", [*GEN, "--output", "{file}"], "a-file"),
    ("translate", "file for folder", [*TRANS, "--output", "{file}"], "a-file"),
    ("synthesize", "file for folder", [*SYNTH, "--output", "{file}"], "a-file"),
    ("evaluate", "file for folder", [*EVAL, "--output", "{file}"], "a-file"),
    ("export", "file for folder", ["export", "{file}", "--alpaca-eval", "{alpaca}", "--languages", "de"], "a-file"),
    (
        "export",
        "file for folder",
        ["export", "{file}", "--alpaca-eval", "{alpaca}", "--languages", "de", "--overwrite"],
        "a-file",
    ),
    ("demo", "file for folder", [*DEMO, "--output-dir", "{file}"], "a-file"),
    ("demo", "file for folder", [*DEMO, "--output-dir", "{out}", "--export-dir", "{file}"], "a-file"),
    ("generate", "file for folder", [*GEN, "--output", "{out}", "--work-dir", "{file}"], "a-file"),
    # read-only output
    ("generate", "read-only output", [*GEN, "--output", "{ro}/answers"], "read-only"),
    ("translate", "read-only output", [*TRANS, "--output", "{ro}"], "read-only"),
    ("synthesize", "read-only output", [*SYNTH, "--output", "{ro}/synth"], "read-only"),
    ("evaluate", "read-only output", [*EVAL, "--output", "{ro}/report"], "read-only"),
    (
        "export",
        "read-only output",
        ["export", "{ro}/x", "--alpaca-eval", "{alpaca}", "--languages", "de"],
        "read-only",
    ),
    ("demo", "read-only output", [*DEMO, "--output-dir", "{ro}/demo"], "read-only"),
    # malformed config files
    ("generate", "malformed YAML", [*GEN, "--output", "{out}", "--config-file", "{bad_yaml}"], "bad.yaml"),
    ("translate", "malformed JSON", [*TRANS, "--output", "{out}", "--config-file", "{bad_json}"], "bad.json"),
    ("synthesize", "malformed YAML", [*SYNTH, "--output", "{out}", "--config-file", "{bad_yaml}"], "bad.yaml"),
    ("evaluate", "malformed YAML", [*EVAL, "--output", "{out}", "--config-file", "{list_yaml}"], "list.yaml"),
    ("evaluate", "malformed JSON", [*EVAL, "--output", "{out}", "--config-file", "{bad_json}"], "bad.json"),
    # unknown option values
    ("generate", "unknown value", [*GEN, "--output", "{out}", "--backend", "nope"], "nope"),
    (
        "generate",
        "unknown value",
        [*GEN[:-4], "--config", "xl-alpacaeval-zz", "--source", "{alpaca}", "--output", "{out}"],
        "zz",
    ),
    ("generate", "unknown value", [*GEN, "--output", "{out}", "--template", "no_such_template"], "no_such_template"),
    ("generate", "unknown value", [*GEN, "--output", "{out}", "--engine-kwargs", '{{"bogus": 1}}'], "bogus"),
    ("generate", "unknown value", [*GEN, "--output", "{out}", "--engine-kwargs", "[1]"], "[1]"),
    (
        "translate",
        "unknown value",
        [*TRANS[:-4], "--languages", "xx-nope", "--source", "{alpaca}", "--output", "{out}"],
        "xx-nope",
    ),
    ("synthesize", "unknown value", [*SYNTH_BASE, "--languages", "qq", "--output", "{out}"], "qq"),
    ("synthesize", "unknown value", [*SYNTH, "--output", "{out}", "--engine-kwargs", '{{"bogus": 1}}'], "bogus"),
    ("evaluate", "unknown value", [*EVAL, "--output", "{out}", "--lc-method", "typo"], "typo"),
    (
        "evaluate",
        "unknown value",
        [*EVAL, "--output", "{out}", "--judge-preset", "nope", "--references", "{alpaca}"],
        "nope",
    ),
    ("evaluate", "unknown value", [*EVAL, "--output", "{out}", "--languages", "zz"], "zz"),
    ("export", "unknown value", ["export", "{out}", "--alpaca-eval", "{alpaca}", "--languages", "zz"], "zz"),
    ("demo", "unknown value", [*DEMO, "--languages", "zz", "--output-dir", "{out}"], "zz"),
    (
        "languages",
        "unknown value",
        ["languages", "add", "gsw", "--name", "german", "--native-name", "x", "--script", "Latn"],
        "german",
    ),
    (
        "languages",
        "unknown value",
        ["languages", "add", "gsw", "--name", "swiss german", "--native-name", "x", "--script", "latin!"],
        "latin!",
    ),
    ("languages", "unknown value", ["languages", "list", "--format", "xml"], "xml"),
    ("push", "unknown value", ["push", "me/repo", "--config", "nope-zz", "--from-dir", "{dir}"], "nope-zz"),
    ("push", "unknown value", ["push", "me/repo", "--config", "xl-alpacaeval-de", "--from-dir", "{dir}"], "offline"),
    (
        "push",
        "conflicting flags",
        ["push", "me/repo", "--config", "xl-alpacaeval-de", "--from-dir", "{dir}", "--source", "{alpaca}"],
        "not both",
    ),
    # negative and NaN numbers
    ("generate", "bad number", [*GEN, "--output", "{out}", "--limit", "-3"], "-3"),
    ("generate", "bad number", [*GEN, "--output", "{out}", "--temperature", "nan"], "nan"),
    ("generate", "bad number", [*GEN, "--output", "{out}", "--max-tokens", "-1"], "-1"),
    ("generate", "bad number", [*GEN, "--output", "{out}", "--chunk-size", "0"], "0"),
    ("translate", "bad number", [*TRANS, "--output", "{out}", "--top-p", "1.5"], "1.5"),
    ("translate", "bad number", [*TRANS, "--output", "{out}", "--max-error-rate", "-0.1"], "-0.1"),
    ("synthesize", "bad number", [*SYNTH, "--output", "{out}", "--num-examples", "-1"], "-1"),
    ("synthesize", "bad number", [*SYNTH, "--output", "{out}", "--threshold", "nan"], "nan"),
    ("synthesize", "bad number", [*SYNTH_BASE, "--languages", "mt", "--max-seeds", "-5", "--output", "{out}"], "-5"),
    ("evaluate", "bad number", [*EVAL, "--output", "{out}", "--n-resamples", "0"], "0"),
    (
        "evaluate",
        "bad number",
        [
            *EVAL,
            "--output",
            "{out}",
            "--judge-temperature",
            "-1",
            "--references",
            "{alpaca}",
            "--judge-backend",
            "fake",
            "--judge-model",
            "j",
        ],
        "-1",
    ),
    ("demo", "bad number", [*DEMO, "--num-prompts", "0", "--output-dir", "{out}"], "0"),
    ("demo", "bad number", [*DEMO, "--max-tokens", "-2", "--output-dir", "{out}"], "-2"),
    ("demo", "bad number", [*DEMO, "--num-examples", "x", "--output-dir", "{out}"], "'x'"),
    # empty strings for lists and names
    ("generate", "empty list", [*GEN[:-4], "--config", "", "--source", "{alpaca}", "--output", "{out}"], "--config"),
    ("generate", "empty list", [*GEN, "--output", ""], "--output"),
    (
        "translate",
        "empty list",
        [*TRANS[:-4], "--languages", "", "--source", "{alpaca}", "--output", "{out}"],
        "languages",
    ),
    ("synthesize", "empty list", [*SYNTH_BASE, "--languages", "", "--output", "{out}"], "languages"),
    ("synthesize", "empty list", [*SYNTH, "--output", "{out}", "--seeds", ""], "seeds"),
    ("evaluate", "empty list", [*EVAL, "--output", "{out}", "--languages", ","], "languages"),
    ("evaluate", "empty list", ["evaluate", "--model-outputs", "", "--output", "{out}"], "model-outputs"),
    ("export", "empty list", ["export", "{out}", "--alpaca-eval", "{alpaca}", "--languages", ""], "languages"),
    ("export", "empty list", ["export", ""], "''"),
    ("demo", "empty list", [*DEMO, "--languages", "", "--output-dir", "{out}"], "languages"),
    ("demo", "empty list", [*DEMO, "--output-dir", "{out}", "--export-dir", "{out}/xl-suite"], "overlap"),
    ("push", "empty list", ["push", "", "--config", "xl-alpacaeval-de", "--from-dir", "{dir}"], "REPO_ID"),
    ("finetune", "file for folder", ["finetune", "--output-dir", "{file}"], "a-file"),
    ("finetune", "read-only output", ["finetune", "--output-dir", "{ro}/ft"], "read-only"),
    ("finetune", "unknown value", ["finetune", "--output-dir", "{out}", "--languages", "zz"], "zz"),
    ("finetune", "bad number", ["finetune", "--output-dir", "{out}", "--max-steps", "0"], "0"),
    ("finetune", "bad number", ["finetune", "--output-dir", "{out}", "--learning-rate", "nan"], "nan"),
    ("finetune", "empty list", ["finetune", "--output-dir", "{out}", "--languages", ""], "languages"),
    ("finetune", "malformed YAML", ["finetune", "--output-dir", "{out}", "--config-file", "{bad_yaml}"], "bad.yaml"),
    ("leaderboard", "missing file", ["leaderboard", "{missing}", "--output", "{out}"], "no-such-file"),
    ("leaderboard", "empty file", ["leaderboard", "{empty_json}", "--output", "{out}"], "empty.json"),
    ("leaderboard", "malformed JSON", ["leaderboard", "{bad_json}", "--output", "{out}"], "bad.json"),
    ("leaderboard", "folder for file", ["leaderboard", "{dir}", "--output", "{out}"], "a-folder"),
    ("leaderboard", "file for folder", ["leaderboard", "{ann}", "--output", "{file}"], "a-file"),
    ("leaderboard", "unknown value", ["leaderboard", "{ann}", "--output", "{out}", "--language", "zz"], "zz"),
    (
        "leaderboard",
        "read-only output",
        ["leaderboard", "{ann}", "--output", "{ro}/board", "--language", "en"],
        "read-only",
    ),
    (
        "compare-judges",
        "missing file",
        ["compare-judges", "{missing}", "{ann}", "--output", "{out}"],
        "no-such-file",
    ),
    (
        "compare-judges",
        "empty file",
        ["compare-judges", "{empty_json}", "{ann}", "--output", "{out}"],
        "empty.json",
    ),
    ("compare-judges", "file for folder", ["compare-judges", "{ann}", "{ann}", "--output", "{file}"], "a-file"),
    (
        "compare-judges",
        "unknown value",
        ["compare-judges", "{ann}", "{ann}", "--output", "{out}", "--language", "zz"],
        "zz",
    ),
    (
        "compare-judges",
        "read-only output",
        ["compare-judges", "{ann}", "{ann}", "--output", "{ro}/j", "--language", "en"],
        "read-only",
    ),
    (
        "compare-judges",
        "missing file",
        ["compare-judges", "{ann}", "{ann}", "--output", "{out}", "--language", "en", "--gold", "{missing}"],
        "no-such-file",
    ),
    (
        "languages",
        "empty list",
        ["languages", "add", "", "--name", "x", "--native-name", "x", "--script", "Latn"],
        "''",
    ),
]


def _case_id(case):
    command, kind, argv, _ = case
    return f"{command}-{kind.replace(' ', '_')}-{CASES.index(case)}"


def test_every_command_is_swept():
    assert {c[0] for c in CASES} == set(COMMANDS)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_bad_input_gives_one_clear_line(case, paths, capsys):
    command, _, argv, expect = case
    argv = [a.format(**paths) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors (bad choice, not a number)
        rc = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"xl-suite {command}") and ": error: " in lines[0], err
    assert "Traceback" not in err
    assert expect in lines[0], f"the message should name {expect!r}: {lines[0]}"


def _public(name):
    return getattr(xl_suite, name)


# (public function, arguments, text the error must contain)
PUBLIC = [
    ("get_language", ("zz-nope",), {}, "zz-nope"),
    ("load_template", ("no_such_template",), {}, "no_such_template"),
    ("load_xl_suite", ("nope-zz",), {}, "nope-zz"),
    ("load_xl_suite", ("xl-alpacaeval-de",), {"split": "test", "source": "/no/such/file.json"}, "/no/such/file.json"),
    ("load_seeds", ("/no/such/seeds.jsonl",), {}, "/no/such/seeds.jsonl"),
    ("build_generator", ("nope", "m"), {}, "nope"),
    ("build_generator", ("fake", "m"), {"bogus": 1}, "bogus"),
    ("SamplingConfig", (), {"temperature": math.nan}, "nan"),
    ("SamplingConfig", (), {"max_tokens": -1}, "-1"),
    ("SynthesisConfig", (), {"languages": ()}, "languages"),
    ("SynthesisConfig", (), {"threshold": math.nan}, "nan"),
    ("JudgeConfig", (), {"order": "sideways"}, "sideways"),
    ("load_preset", ("nope",), {}, "nope"),
    ("DemoConfig", (), {"num_prompts": 0}, "num_prompts"),
    ("DemoConfig", (), {"languages": ()}, "languages"),
    ("win_rate", (None,), {}, "None"),
    ("win_rate", ([0.5, 1.5],), {}, "1.5"),
    ("bootstrap_ci", ([0.5, 1.0],), {"n_resamples": 0}, "n_resamples"),
    ("language_fidelity", (["Hallo Welt"], ["zz-nope"]), {}, "zz-nope"),
    ("language_fidelity", (["Hallo Welt", "x"], ["de"]), {}, "1"),
    ("identify_language", (None,), {}, "None"),
    ("export_repo", ("/proc/version",), {"languages": ["de"]}, "/proc/version"),
    ("export_repo", ("{out}",), {"languages": []}, "languages"),
    ("evaluate_responses", (["a"], ["de", "mt"]), {}, "1"),
    ("publish_config", ("no-namespace", "xl-alpacaeval-de"), {}, "no-namespace"),
    ("publish_config", ("me/repo", "xl-alpacaeval-zz"), {}, "zz"),
    ("LanguageSpec", (), {"code": "", "name": "x", "native_name": "x", "script": "Latn"}, "code"),
]


@pytest.mark.parametrize("case", PUBLIC, ids=lambda c: f"{c[0]}-{PUBLIC.index(c)}")
def test_public_functions_raise_the_error_family(case, paths):
    name, args, kwargs, expect = case
    args = tuple(a.format(**paths) if isinstance(a, str) else a for a in args)
    with pytest.raises(XlSuiteError) as info:
        _public(name)(*args, **kwargs)
    assert expect in str(info.value), f"the message should name {expect!r}: {info.value}"
