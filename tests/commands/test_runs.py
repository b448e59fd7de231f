"""Whole runs through the CLI with the fake engine (``--backend fake --engine-kwargs``) or an OpenAI-compatible
stand-in on 127.0.0.1: each ends in correct output or one clear error.

* the --max-error-rate threshold is judged per stage (per config, language, judge stage) and sets the exit code; the
  rerun retries only the failed rows;
* failed rows never reach an output as data (translate, generate and --push);
* --overwrite never replaces a folder xl-suite did not write; an output that is a file or read-only is refused;
* two runs on one folder: the second fails at once; Ctrl-C says what was saved and the rerun resumes;
* one bad HTTP 200 reply (truncated JSON, an HTML page, a content-filter reply without content, no choices) is one
  failed row, not a traceback (generate, translate, evaluate, synthesize); many in a row stop the run; a judge
  server without log-probabilities stops with one line naming the fix.
"""

import json
import logging
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from terminal import start_interruptible

from xl_suite.cli import main
from xl_suite.engines.base import SamplingConfig
from xl_suite.engines.fake import FakeSynthesisResponder
from xl_suite.errors import FailureRateError


REPO = Path(__file__).resolve().parents[2]
ALPACA = [
    {"instruction": f"Explain topic number {k} briefly.", "output": f"Topic {k}.", "generator": "x"} for k in range(6)
]
GOOD_VERDICT = json.dumps(
    {"winner": "A", **dict.fromkeys(("helpfulness", "relevance", "accuracy", "fluency", "naturalness"), 4)}
)


@pytest.fixture
def alpaca_file(tmp_path):
    path = tmp_path / "alpaca_eval.json"
    path.write_text(json.dumps(ALPACA), encoding="utf-8")
    return path


def _cli(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _generate(alpaca_file, out, *extra):
    return [
        "generate",
        "--backend",
        "fake",
        "--model",
        "m",
        "--config",
        "xl-alpacaeval-de,xl-alpacaeval-mt",
        "--source",
        alpaca_file,
        "--output",
        out,
        "--chunk-size",
        "4",
        *extra,
    ]


def _statuses(folder: Path, column: str, pattern: str = "*.jsonl") -> list[str]:
    return [
        json.loads(line)[column]
        for f in sorted(folder.glob(pattern))
        for line in f.read_text(encoding="utf-8").splitlines()
    ]


# -- the failure share and the exit code ------------------------------------------------------------------------


def test_generate_failure_share_exit_code_and_retry_of_only_the_failed_rows(alpaca_file, tmp_path, capsys, caplog):
    out = tmp_path / "ans"
    flaky = ["--engine-kwargs", json.dumps({"empty_every": 3})]
    rc, stdout, err = _cli(_generate(alpaca_file, out, *flaky), capsys)
    statuses = _statuses(out, "output_status")
    assert set(statuses) == {"ok"}, "a failed answer never reaches the answers file"
    written = {c: len(_statuses(out, "output_status", f"xl-alpacaeval-{c}.jsonl")) for c in ("de", "mt")}
    n_bad = {c: 6 - n for c, n in written.items()}
    assert 0 < sum(n_bad.values()) < 12 and all(n_bad.values())  # the fake's empty replies, chosen by prompt hash
    assert rc == 3, err
    line = err.strip()
    assert line.count("\n") == 0 and line.startswith("xl-suite generate: error: ")
    for c in ("de", "mt"):  # each config is judged on its own
        assert f"xl-alpacaeval-{c}: {n_bad[c]} of 6 answers failed" in line and f"empty {n_bad[c]}" in line
        assert f"{n_bad[c]} failed, not written" in stdout
    assert "--max-error-rate 0.05 (checked per stage)" in line and "not written to the outputs" in line
    assert "rerunning the same command retries them" in line and "pass --max-error-rate" in line
    assert "Traceback" not in err
    # nothing lost: both files written, the failed answers kept in the cache for the retry
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["xl-alpacaeval-de.jsonl", "xl-alpacaeval-mt.jsonl"]

    # within a raised threshold: exit 0, one warning line (--overwrite starts afresh: the same rows fail again)
    rc, stdout, err = _cli(_generate(alpaca_file, out, *flaky, "--overwrite", "--max-error-rate", "0.9"), capsys)
    assert rc == 0, err
    assert "--overwrite deleted the output of the earlier run" in stdout
    warnings = [line for line in stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"xl-alpacaeval-de: {n_bad['de']} of 6 answers failed" in warnings[0]
    assert "within" in warnings[0]

    # the engine recovers: the exact rerun the message advises (no --overwrite) sends only the failed rows
    with caplog.at_level(logging.INFO, logger="xl_suite.run"):
        rc, stdout, err = _cli(_generate(alpaca_file, out), capsys)
    assert rc == 0, err
    assert "warning:" not in stdout
    retried = [r.args[2] for r in caplog.records if "retrying %d failed rows" in r.msg]
    assert sum(retried) == sum(n_bad.values())
    assert _statuses(out, "output_status") == ["ok"] * 12
    assert f"{6 - n_bad['de']} of 6 answers from cache, {n_bad['de']} computed now" in stdout
    # and once more: nothing to do, and it says so
    rc, stdout, err = _cli(_generate(alpaca_file, out), capsys)
    assert rc == 0 and stdout.count("6 of 6 answers from cache, 0 computed now") == 2, stdout


def test_translate_above_the_threshold_exits_3_after_writing(alpaca_file, tmp_path, capsys):
    out = tmp_path / "m"
    argv = ["translate", "--backend", "fake", "--model", "t", "--languages", "de,mt", "--source", alpaca_file]
    rc, stdout, err = _cli([*argv, "--output", out, "--engine-kwargs", json.dumps({"empty_every": 2})], capsys)
    assert set(_statuses(out, "translation_status")) == {"ok"}, "a failed translation is never written as a prompt"
    n_bad = {c: 6 - len(_statuses(out, "translation_status", f"{c}.jsonl")) for c in ("de", "mt")}
    assert rc == 3 and sum(n_bad.values()) > 0
    for c, n in n_bad.items():
        assert not n or f"translate {c}: {n} of 6 translations failed" in err
    assert (out / "de.jsonl").is_file() and (out / "mt.jsonl").is_file()


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_evaluate_unparsed_judgments_share(alpaca_file, tmp_path, capsys):
    for kind in ("ans", "refs"):
        extra = ["--as-reference"] if kind == "refs" else []
        assert _cli(_generate(alpaca_file, tmp_path / kind, *extra), capsys)[0] == 0
    argv = [
        "evaluate",
        "--model-outputs",
        tmp_path / "ans",
        "--references",
        tmp_path / "refs",
        "--judge-backend",
        "fake",
        "--judge-model",
        "j",
        "--no-rubric",
        "--n-resamples",
        "10",
        "--output",
        tmp_path / "report",
    ]
    flaky = ["--judge-engine-kwargs", json.dumps({"reply": GOOD_VERDICT, "empty_every": 4})]
    rc, stdout, err = _cli([*argv, *flaky], capsys)
    judgments = [
        json.loads(line) for line in (tmp_path / "report" / "judgments.jsonl").read_text("utf-8").splitlines()
    ]
    n_bad = sum(j["parse_status"] == "unparsed" for j in judgments)
    assert len(judgments) == 24 and 0 < n_bad < 24
    assert rc == 3 and f"pairwise: {n_bad} of 24 judgments failed" in err and f"unparsed {n_bad})" in err
    rc, stdout, err = _cli([*argv, *flaky, "--max-error-rate", "1"], capsys)
    assert rc == 0 and "warning: " in stdout and f"pairwise: {n_bad} of 24 judgments failed" in stdout
    # a judge that answers: only the unparsed judgments are sent again
    rc, stdout, err = _cli([*argv, "--judge-engine-kwargs", json.dumps({"reply": GOOD_VERDICT})], capsys)
    assert rc == 0, err
    assert f"pairwise_judge: {n_bad} judged now, {24 - n_bad} from cache" in stdout


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_synthesize_failure_share_and_retry(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["synthesize", "--backend", "fake", "--model", "f", "--languages", "mt", "--max-seeds", "8"]
    argv += ["--output", out, "--chunk-size", "4", "--no-progress"]
    flaky = ["--engine-kwargs", json.dumps({"unparseable_every": 2})]
    rc, stdout, err = _cli([*argv, *flaky, "--max-error-rate", "0.9"], capsys)
    assert rc == 0, err
    failures = json.loads((out / "summary.json").read_text())["failures"]
    n_bad = failures["score"]["failed"]
    assert n_bad > 0 and failures["score"]["by_status"] == {"unparsed": n_bad}
    warnings = [line for line in stdout.splitlines() if "max-error-rate" in line]
    assert (
        len(warnings) == 1
        and warnings[0].startswith("warning: ")
        and f"score: {n_bad} of" in warnings[0]
        and "within --max-error-rate 0.9" in warnings[0]
    )
    rc, _, err = _cli([*argv, *flaky], capsys)  # the default threshold; the deterministic fake fails again
    assert rc == 3 and "above --max-error-rate 0.05" in err and "Traceback" not in err
    assert (out / "mt.parquet").is_file() and (out / "summary.json").is_file()
    rc, stdout, err = _cli(argv, capsys)  # fixed engine
    assert rc == 0, err
    failures = json.loads((out / "summary.json").read_text())["failures"]
    assert failures["score"] == {"rows": 8, "failed": 0, "retried": n_bad, "by_status": {}}
    assert "max-error-rate" not in stdout


@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan"])
def test_max_error_rate_is_validated(tmp_path, capsys, value):
    rc, _, err = _cli(
        ["translate", "--model", "t", "--languages", "de", "--output", tmp_path, "--max-error-rate", value], capsys
    )
    assert rc == 2 and "max-error-rate" in err and "Traceback" not in err


# -- --overwrite never replaces what xl-suite did not write -----------------------------------------------------


def test_generate_overwrite_refuses_a_foreign_folder(alpaca_file, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "xl-alpacaeval-de.jsonl").write_text("my notes\n", encoding="utf-8")
    rc, _, err = _cli(_generate(alpaca_file, foreign, "--overwrite"), capsys)
    assert rc == 2 and "not written by xl-suite" in err and str(foreign) in err
    assert (foreign / "xl-alpacaeval-de.jsonl").read_text(encoding="utf-8") == "my notes\n"
    rc, _, err = _cli(_generate(alpaca_file, tmp_path / "ours"), capsys)
    assert rc == 0 and (tmp_path / "ours" / ".xl-suite-output.json").is_file()
    rc, stdout, err = _cli(_generate(alpaca_file, tmp_path / "ours"), capsys)  # the same command: resumes
    assert rc == 0 and "the same command ran here before" in stdout, err
    rc, _, err = _cli(_generate(alpaca_file, tmp_path / "ours", "--model", "other"), capsys)  # another run
    assert rc == 2 and "holds the output of another run" in err and "model 'm' then, 'other' now" in err
    assert "--overwrite" in err
    assert _cli(_generate(alpaca_file, tmp_path / "ours", "--model", "other", "--overwrite"), capsys)[0] == 0


def test_translate_overwrite_refuses_a_foreign_folder(alpaca_file, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "de.jsonl").write_text("{}\n", encoding="utf-8")
    argv = ["translate", "--backend", "fake", "--model", "t", "--languages", "de", "--source", alpaca_file]
    rc, _, err = _cli([*argv, "--output", foreign, "--overwrite"], capsys)
    assert rc == 2 and "not written by xl-suite" in err
    assert (foreign / "de.jsonl").read_text(encoding="utf-8") == "{}\n"


def test_output_that_is_a_file_or_read_only(alpaca_file, tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    rc, _, err = _cli(_generate(alpaca_file, a_file), capsys)
    assert rc == 2 and "is a file, not a folder" in err
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: make the permission check see what a user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    try:
        rc, _, err = _cli(_generate(alpaca_file, ro / "sub"), capsys)
        assert rc == 2 and "not writable" in err and str(ro) in err
        assert not (ro / "sub").exists()
    finally:
        ro.chmod(0o700)


# -- two runs on one folder, Ctrl-C (real processes) ------------------------------------------------------------


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _start(argv, tmp_path):
    return start_interruptible([sys.executable, "-m", "xl_suite.cli", *map(str, argv)], cwd=tmp_path, env=_env())


def _wait_for(predicate, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the first run ended early ({proc.returncode}): {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("timed out waiting for the first run")


def _holds_lock(folder: Path, pid: int):
    def check():
        try:
            return json.loads((folder / ".xl-suite.lock").read_text())["pid"] == pid
        except (OSError, ValueError, KeyError):
            return False

    return check


def _synth_argv(out, *extra):
    return [
        "synthesize",
        "--backend",
        "fake",
        "--model",
        "f",
        "--languages",
        "mt",
        "--max-seeds",
        "8",
        "--output",
        out,
        "--chunk-size",
        "4",
        "--no-progress",
        *extra,
    ]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["synthesize", "generate"])
def test_second_run_on_one_folder_fails_at_once_and_the_first_completes(command, alpaca_file, tmp_path, capsys):
    out = tmp_path / "out"
    slow = ["--engine-kwargs", json.dumps({"delay": 0.05})]
    argv = _synth_argv(out, *slow) if command == "synthesize" else _generate(alpaca_file, out, *slow)
    proc = _start(argv, tmp_path)
    try:
        _wait_for(_holds_lock(out, proc.pid), proc)
        t0 = time.monotonic()
        rc, _, err = _cli(argv, capsys)
        assert time.monotonic() - t0 < 10  # at once, not after the first run
        assert rc == 2, err
        assert f"in use by another xl-suite process (pid {proc.pid} on host" in err
        assert f"xl-suite {command}" in err and "command: " in err and f"kill {proc.pid}" in err
        assert err.count("\n") == 1 and "Traceback" not in err
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    # the first run's output is whole: no damaged or duplicated chunk, and a rerun reuses everything
    assert not list(out.rglob("*.corrupt*")) and not list(out.rglob(".*.tmp-*"))
    if command == "generate":
        assert len(_statuses(out, "output_status")) == 12
        chunk_files = list((out / ".work").rglob("chunk-*.parquet"))
        assert len(chunk_files) == 4  # 2 configs x 6 prompts in chunks of 4: no chunk written twice
    else:
        summary = json.loads((out / "summary.json").read_text())
        assert summary["languages"]["mt"]["produced"] > 0
    rc, stdout, err = _cli(argv, capsys) if command == "synthesize" else _cli([*argv, "--overwrite"], capsys)
    assert rc == 0, err


@pytest.mark.slow
def test_evaluate_second_run_on_one_report_folder(alpaca_file, tmp_path, capsys):
    for kind in ("ans", "refs"):
        extra = ["--as-reference"] if kind == "refs" else []
        assert _cli(_generate(alpaca_file, tmp_path / kind, *extra), capsys)[0] == 0
    report = tmp_path / "report"
    argv = [
        "evaluate",
        "--model-outputs",
        tmp_path / "ans",
        "--references",
        tmp_path / "refs",
        "--judge-backend",
        "fake",
        "--judge-model",
        "j",
        "--no-rubric",
        "--n-resamples",
        "10",
        "--output",
        report,
        "--judge-engine-kwargs",
        json.dumps({"reply": GOOD_VERDICT, "delay": 0.1}),
    ]
    proc = _start(argv, tmp_path)
    try:
        _wait_for(_holds_lock(report, proc.pid), proc)
        rc, _, err = _cli(argv, capsys)
        assert rc == 2 and f"pid {proc.pid}" in err and "xl-suite evaluate" in err
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "pairwise_judge: 24 judged now, 0 from cache" in stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", ["synthesize", "evaluate"])
def test_ctrl_c_says_what_was_saved_and_the_rerun_resumes(command, alpaca_file, tmp_path, capsys):
    if command == "synthesize":
        out = tmp_path / "out"
        argv = _synth_argv(out, "--max-seeds", "12")
        saved = out / ".xl_suite_work"
    else:
        for kind in ("ans", "refs"):
            extra = ["--as-reference"] if kind == "refs" else []
            assert _cli(_generate(alpaca_file, tmp_path / kind, *extra), capsys)[0] == 0
        out = tmp_path / "report"
        argv = [
            "evaluate",
            "--model-outputs",
            tmp_path / "ans",
            "--references",
            tmp_path / "refs",
            "--judge-backend",
            "fake",
            "--judge-model",
            "j",
            "--n-resamples",
            "10",
            "--output",
            out,
        ]
        saved = out / "annotations"  # the pairwise judgments are one chunk; Ctrl-C comes during the rubric
    slow_kwargs = {"delay": 0.1} | ({"reply": GOOD_VERDICT} if command == "evaluate" else {})
    flag = "--engine-kwargs" if command == "synthesize" else "--judge-engine-kwargs"
    proc = _start([*argv, flag, json.dumps(slow_kwargs)], tmp_path)
    try:
        _wait_for(lambda: any(saved.rglob("chunk-*.parquet")), proc, timeout=120)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]  # datasets' progress bars may come before
    ours = [line for line in lines if line.startswith("xl-suite")]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr and ours == lines[-1:], stderr
    assert lines[-1] == (
        f"xl-suite {command}: interrupted. Finished chunks are saved in {saved}; rerun the same command to resume "
        "from them."
    )
    n_saved = len(list(saved.rglob("chunk-*.parquet")))
    rc, stdout, err = _cli([*argv, flag, json.dumps(slow_kwargs | {"delay": 0})], capsys)
    assert rc == 0, err
    if command == "synthesize":
        stages = json.loads((out / "summary.json").read_text())["stages"]
        assert sum(s["chunks_reused"] for s in stages) >= n_saved > 0
    else:
        assert "pairwise_judge: 0 judged now, 24 from cache" in stdout


# -- failed rows never reach an output as data; the threshold per judgment stage --------------------------------


KEY = "sk-test-THISISASECRETKEY1234567890"


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_evaluate_judges_each_judgment_stage_on_its_own(capsys):
    from xl_suite.commands.evaluate import check_judgments

    def row(status, judge="j1"):
        return {"parse_status": status, "judge_model": judge}

    # rubric: 12 of 100 unparsed (12%), hidden before by 400 parsed pairwise judgments (12 of 500 = 2.4%)
    result = SimpleNamespace(judgments=[row("ok")] * 400, rubric_rows=[row("unparsed")] * 12 + [row("ok")] * 88)
    with pytest.raises(FailureRateError, match=r"^rubric: 12 of 100 judgments failed \(12.0%: unparsed 12\), above"):
        check_judgments(result, 0.05)
    # a jury: one judge failing 10% of its pairwise judgments, the other none
    result = SimpleNamespace(
        judgments=[row("ok", "j1")] * 200 + [row("unparsed", "j2")] * 10 + [row("ok", "j2")] * 90, rubric_rows=[]
    )
    with pytest.raises(FailureRateError, match=r"^pairwise \(j2\): 10 of 100 judgments failed"):
        check_judgments(result, 0.05)
    check_judgments(result, 0.1)
    assert "pairwise (j2): 10 of 100 judgments failed (10.0%: unparsed 10), within" in capsys.readouterr().out


def test_translate_never_writes_a_failed_translation_and_the_loader_never_serves_one(alpaca_file, tmp_path, capsys):
    from xl_suite.datasets_api import load_xl_suite

    out = tmp_path / "m"
    argv = ["translate", "--backend", "fake", "--model", "t", "--languages", "de", "--source", alpaca_file]
    argv += ["--output", out, "--engine-kwargs", json.dumps({"empty_every": 3})]
    rc, stdout, err = _cli(argv, capsys)
    rows = _rows(out / "de.jsonl")
    n_failed = 6 - len(rows)
    assert 0 < n_failed < 6 and all(r["translation_status"] == "ok" and r["instruction"] for r in rows)
    assert rc == 3 and f"translate de: {n_failed} of 6 translations failed" in err and "Traceback" not in err
    assert f"{n_failed} failed, not written" in stdout
    # the fake translator writes English: the loader's language check would (rightly) refuse it
    served = load_xl_suite(
        "m-alpacaeval-de", split="test", source=str(out), cache_dir=str(tmp_path / "c1"), check_language=False
    )
    assert served.num_rows == 6 - n_failed and all(served["instruction"])

    # a file written before (failed rows kept as empty prompts): the builder leaves them out
    old = tmp_path / "old"
    old.mkdir()
    bad = {**rows[0], "id": "bad", "instruction": "", "translation_status": "empty"}
    (old / "de.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows, bad]), encoding="utf-8")
    served = load_xl_suite(
        "m-alpacaeval-de", split="test", source=str(old), cache_dir=str(tmp_path / "c2"), check_language=False
    )
    assert served.num_rows == len(rows) and "bad" not in served["id"]

    # the engine recovers: the rerun the message advises translates only the failed rows, and writes them
    rc, stdout, err = _cli(argv[:-2], capsys)
    assert rc == 0, err
    assert len(_rows(out / "de.jsonl")) == 6 and f"{6 - n_failed} of 6 translations from cache" in stdout


def test_generate_never_writes_nor_pushes_a_failed_answer(alpaca_file, tmp_path, capsys, monkeypatch):
    import xl_suite.hub

    pushed = {}
    monkeypatch.setattr(
        xl_suite.hub, "publish_config", lambda repo, name, data: pushed.setdefault(name, data) and "url"
    )
    out = tmp_path / "refs"
    argv = ["generate", "--backend", "fake", "--model", "m", "--config", "xl-alpacaeval-de", "--source", alpaca_file]
    argv += ["--output", out, "--as-reference", "--push", "user/refs", "--max-error-rate", "0.9"]
    argv += ["--engine-kwargs", json.dumps({"empty_every": 3})]
    rc, stdout, err = _cli(argv, capsys)
    assert rc == 0, err
    rows = _rows(out / "xl-alpacaeval-de.jsonl")
    assert 0 < len(rows) < 6 and all(r["reference_status"] == "ok" and r["reference"] for r in rows)
    test = pushed["xl-alpacaeval-de"]["test"]
    assert test.num_rows == len(rows) and set(test["reference_status"]) == {"ok"}


# -- one bad reply is one failed row: the four LLM commands through an HTTP stand-in ----------------------------


def _completion(body: dict, content) -> dict:
    n = body.get("n", 1)
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": content[i]}}
            for i in range(n)
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
    }


#: Bad replies, each sent with HTTP 200: (content type, body).
BAD_REPLIES = {
    "truncated JSON": ("application/json", lambda body: json.dumps(_completion(body, ["Hallo"] * 9))[:60]),
    "HTML login page": ("text/html", lambda body: f"<html><body>Log in (token {KEY})</body></html>"),
    "content filter": (
        "application/json",
        lambda body: json.dumps(
            {
                **_completion(body, [None] * 9),
                "choices": [
                    {"index": 0, "finish_reason": "content_filter", "message": {"role": "assistant", "content": None}}
                ],
            }
        ),
    ),
    "no choices": (
        "application/json",
        lambda body: json.dumps({k: v for k, v in _completion(body, [""]).items() if k != "choices"}),
    ),
}


class _QuietServer(ThreadingHTTPServer):
    """A client that drops its connection (a cancelled run, a timeout under test) is expected here: no traceback."""

    def handle_error(self, request, client_address):
        pass


class _Server:
    """An OpenAI-compatible stand-in answering with the fake synthesis model (which also answers the judges and
    plain prompts); request number ``bad_at`` (1-based, in arrival order; None: every request) gets the bad reply
    ``bad``."""

    def __init__(self, bad: str | None = None, bad_at: int | None = 1):
        self.bad, self.bad_at, self.requests = bad, bad_at, 0
        self.lock = threading.Lock()
        responder = FakeSynthesisResponder()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests += 1
                    n = owner.requests
                if owner.bad is not None and owner.bad_at in (None, n):
                    ctype, make = BAD_REPLIES[owner.bad]
                    data = make(body)
                else:
                    sampling = SamplingConfig(n=body.get("n", 1), json_schema=None)
                    messages = body["messages"]
                    ctype = "application/json"
                    data = json.dumps(_completion(body, [responder(messages, i, sampling) for i in range(sampling.n)]))
                data = data.encode()
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    servers = []

    def start(**kw):
        servers.append(_Server(**kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # sent to the stand-in; never printed


def _http(server, **extra) -> str:
    return json.dumps({"base_url": server.url, "max_retries": 0, "backoff_base": 0.01, "max_concurrency": 2, **extra})


@pytest.mark.parametrize("bad", sorted(BAD_REPLIES))
@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_one_bad_reply_is_one_failed_answer_not_a_traceback(bad, alpaca_file, tmp_path, capsys, server, caplog):
    pytest.importorskip("openai")
    srv = server(bad=bad)
    out = tmp_path / "ans"
    argv = ["generate", "--backend", "openai", "--model", "m", "--config", "xl-alpacaeval-de"]
    argv += ["--source", alpaca_file, "--output", out, "--engine-kwargs", _http(srv)]
    rc, stdout, err = _cli(argv, capsys)
    assert "Traceback" not in err and KEY not in err + stdout + caplog.text
    assert rc == 3 and err.count("\n") == 1 and "xl-alpacaeval-de: 1 of 6 answers failed (16.7%: error 1)" in err
    assert len(_rows(out / "xl-alpacaeval-de.jsonl")) == 5, "the rest of the batch is kept"
    assert "request failed, row marked 'error'" in caplog.text, "the (scrubbed) reason is logged"
    rc, stdout, err = _cli(argv, capsys)  # the server is healthy again: the rerun asks for that row only
    assert rc == 0, err
    assert len(_rows(out / "xl-alpacaeval-de.jsonl")) == 6 and srv.requests == 7


@pytest.mark.slow  # five commands over HTTP (seconds)
def test_a_bad_reply_in_translate_evaluate_and_synthesize_is_one_failed_row(alpaca_file, tmp_path, capsys, server):
    pytest.importorskip("openai")
    # translate
    srv = server(bad="HTML login page")
    argv = ["translate", "--backend", "openai", "--model", "m", "--languages", "de", "--source", alpaca_file]
    rc, stdout, err = _cli(
        [*argv, "--output", tmp_path / "m", "--engine-kwargs", _http(srv), "--max-error-rate", "0.2"], capsys
    )
    assert rc == 0 and "translate de: 1 of 6 translations failed" in stdout and "Traceback" not in err, err
    assert len(_rows(tmp_path / "m" / "de.jsonl")) == 5

    # evaluate: answers and references from the fake engine, the judge over HTTP (discrete verdicts)
    for kind, extra in (("ans", []), ("refs", ["--as-reference"])):
        gen = [
            "generate",
            "--backend",
            "fake",
            "--model",
            kind,
            "--config",
            "xl-alpacaeval-de",
            "--source",
            alpaca_file,
        ]
        assert _cli([*gen, "--output", tmp_path / kind, *extra], capsys)[0] == 0
    preset = tmp_path / "judge.json"
    preset.write_text(json.dumps({"judge_backend": "openai", "logprobs": None, "rubric": False}), encoding="utf-8")
    srv = server(bad="content filter", bad_at=3)
    argv = [
        "evaluate",
        "--model-outputs",
        tmp_path / "ans",
        "--references",
        tmp_path / "refs",
        "--judge-preset",
        preset,
    ]
    argv += [
        "--judge-model",
        "j",
        "--judge-engine-kwargs",
        _http(srv),
        "--n-resamples",
        "10",
        "--output",
        tmp_path / "r",
    ]
    rc, stdout, err = _cli([*argv, "--max-error-rate", "0.1"], capsys)
    assert rc == 0 and "pairwise: 1 of 12 judgments failed (8.3%: error 1), within" in stdout, (stdout, err)
    judgments = [json.loads(x) for x in (tmp_path / "r" / "judgments.jsonl").read_text().splitlines()]
    (failed,) = [j for j in judgments if j["parse_status"] == "error"]
    assert failed["raw_completion"].startswith("[error] ") and "content_filter" in failed["raw_completion"]

    # synthesize
    srv = server(bad="truncated JSON", bad_at=2)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "".join(json.dumps({"text": f"A passage about gardening number {k}. " * 3}) + "\n" for k in range(4))
    )
    argv = ["synthesize", "--backend", "openai", "--model", "m", "--seeds", seeds, "--languages", "mt"]
    argv += ["--output", tmp_path / "s", "--engine-kwargs", _http(srv), "--no-progress", "--chunk-size", "2"]
    rc, stdout, err = _cli(argv, capsys)
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert sum(e["by_status"].get("error", 0) for e in summary["failures"].values()) == 1
    assert rc == 3 and "1 of 4 LLM outputs failed (25.0%: error 1)" in err and "Traceback" not in err, err


def test_many_bad_replies_in_a_row_stop_the_run_with_one_clear_error(alpaca_file, tmp_path, capsys, server):
    pytest.importorskip("openai")
    from xl_suite.engines.openai_engine import OpenAIGenerator

    srv = server(bad="HTML login page", bad_at=None)  # every reply: a proxy's login page
    many = [
        {"instruction": f"Question number {k}?", "output": "x"}
        for k in range(OpenAIGenerator.max_consecutive_failures + 4)
    ]
    source = tmp_path / "many.json"
    source.write_text(json.dumps(many), encoding="utf-8")
    argv = ["generate", "--backend", "openai", "--model", "m", "--config", "xl-alpacaeval-de", "--source", source]
    rc, _, err = _cli([*argv, "--output", tmp_path / "a", "--engine-kwargs", _http(srv, max_concurrency=1)], capsys)
    assert rc != 0 and err.count("\n") == 1 and "Traceback" not in err and KEY not in err
    assert "failed in a row; stopping" in err and "not a chat completion" in err
    assert srv.requests == OpenAIGenerator.max_consecutive_failures


def test_a_judge_without_logprobs_stops_naming_the_fix(alpaca_file, tmp_path, capsys, server):
    pytest.importorskip("openai")
    for kind, extra in (("ans", []), ("refs", ["--as-reference"])):
        gen = [
            "generate",
            "--backend",
            "fake",
            "--model",
            kind,
            "--config",
            "xl-alpacaeval-de",
            "--source",
            alpaca_file,
        ]
        assert _cli([*gen, "--output", tmp_path / kind, *extra], capsys)[0] == 0
    srv = server()  # answers, but never with log-probabilities
    argv = [
        "evaluate",
        "--model-outputs",
        tmp_path / "ans",
        "--references",
        tmp_path / "refs",
        "--judge-backend",
        "openai",
    ]
    argv += ["--judge-model", "j", "--judge-engine-kwargs", _http(srv), "--no-rubric", "--output", tmp_path / "r"]
    rc, _, err = _cli(argv, capsys)
    assert rc != 0 and err.count("\n") == 1 and "Traceback" not in err
    assert "returned no log-probabilities" in err and '"logprobs": null' in err and "--judge-preset" in err
