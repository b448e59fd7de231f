"""One rule for outputs (issue 20): the same command on its own output resumes (a finished one is a no-op that
says so); another command or other settings are refused without --overwrite; --overwrite leaves no file of the
earlier run and never deletes files xl-suite did not write. Through the CLI with the fake engine."""

import json

import pytest

from xl_suite.cli import main
from xl_suite.output_folder import claim_output, read_marker
from xl_suite.safety import LOCK_FILE, MARKER_FILE


ALPACA = [
    {"instruction": f"Explain topic number {k} briefly.", "output": f"Topic {k}.", "generator": "x"} for k in range(6)
]
VERDICT = json.dumps(
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
    except SystemExit as e:
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _gen(alpaca_file, out, *extra):
    argv = ["generate", "--backend", "fake", "--model", "m", "--config", "xl-alpacaeval-de", "--source", alpaca_file]
    return [*argv, "--output", out, "--chunk-size", "4", *extra]


def _evaluate(tmp_path, report, *extra):
    argv = ["evaluate", "--model-outputs", tmp_path / "ans", "--references", tmp_path / "refs"]
    argv += ["--judge-backend", "fake", "--judge-model", "j", "--judge-engine-kwargs", json.dumps({"reply": VERDICT})]
    return [*argv, "--n-resamples", "10", "--output", report, *extra]


def _synth(out, *extra):
    argv = ["synthesize", "--backend", "fake", "--model", "f", "--max-seeds", "8", "--chunk-size", "4"]
    return [*argv, "--no-progress", "--output", out, *extra]


def test_generate_rerun_resumes_and_a_finished_rerun_says_it_computed_nothing(alpaca_file, tmp_path, capsys):
    out = tmp_path / "ans"
    rc, stdout, err = _cli(_gen(alpaca_file, out), capsys)
    assert rc == 0, err
    assert "0 of 6 answers from cache, 6 computed now" in stdout
    assert read_marker(out)["status"] == "complete" and read_marker(out)["files"] == ["xl-alpacaeval-de.jsonl"]
    rc, stdout, err = _cli(_gen(alpaca_file, out), capsys)  # old code: "exist. Pass --overwrite"
    assert rc == 0, err
    assert "the same command ran here before (finished)" in stdout
    assert "6 of 6 answers from cache, 0 computed now" in stdout


def test_other_settings_are_refused_and_overwrite_leaves_nothing_of_the_earlier_run(alpaca_file, tmp_path, capsys):
    out = tmp_path / "ans"
    assert _cli(_gen(alpaca_file, out), capsys)[0] == 0
    (out / "my-notes.txt").write_text("mine", encoding="utf-8")  # a file the user put there
    other = ["--config", "xl-alpacaeval-mt"]
    rc, _, err = _cli(_gen(alpaca_file, out, *other), capsys)
    assert rc == 2 and "holds the output of another run (xl-suite generate; other settings: configs" in err
    assert "pass --overwrite" in err
    rc, stdout, err = _cli(_gen(alpaca_file, out, *other, "--overwrite"), capsys)
    assert rc == 0, err
    assert "kept 1 entries xl-suite did not write: my-notes.txt" in stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([".work", LOCK_FILE, MARKER_FILE, "my-notes.txt", "xl-alpacaeval-mt.jsonl"])
    assert not list((out / ".work").glob("xl-alpacaeval-de*"))  # the earlier run's cache is gone too
    assert "0 of 6 answers from cache" in stdout
    # another command into it: refused, naming the command
    argv = ["translate", "--backend", "fake", "--model", "t", "--languages", "de", "--source", alpaca_file]
    rc, _, err = _cli([*argv, "--output", out], capsys)
    assert rc == 2 and "holds the output of another run (xl-suite generate)" in err


def test_a_folder_left_by_a_kill_before_the_marker_is_resumed_and_replaceable(alpaca_file, tmp_path, capsys):
    """Release 1 wrote answers before its marker: a kill between them left a folder neither the rerun nor
    --overwrite accepted."""
    out = tmp_path / "ans"
    assert _cli(_gen(alpaca_file, out), capsys)[0] == 0
    (out / MARKER_FILE).unlink()  # the state of the kill: lock file, cache, answers, no marker
    rc, stdout, err = _cli(_gen(alpaca_file, out), capsys)
    assert rc == 0, err
    assert "6 of 6 answers from cache, 0 computed now" in stdout
    (out / MARKER_FILE).unlink()
    rc, stdout, err = _cli(_gen(alpaca_file, out, "--overwrite"), capsys)
    assert rc == 0 and "0 of 6 answers from cache" in stdout, err


def test_a_release_1_marker_is_resumed(alpaca_file, tmp_path, capsys):
    out = tmp_path / "ans"
    assert _cli(_gen(alpaca_file, out), capsys)[0] == 0
    (out / MARKER_FILE).write_text(json.dumps({"written_by": "xl-suite", "kind": "generate", "pid": 1}))
    rc, stdout, err = _cli(_gen(alpaca_file, out), capsys)
    assert rc == 0 and "6 of 6 answers from cache" in stdout, err
    assert read_marker(out)["format"] == 2


def test_dry_run_writes_and_deletes_nothing(alpaca_file, tmp_path, capsys):
    out = tmp_path / "ans"
    rc, stdout, _ = _cli(_gen(alpaca_file, out, "--dry-run"), capsys)
    assert rc == 0 and not out.exists() and "no request was sent" in stdout
    assert _cli(_gen(alpaca_file, out), capsys)[0] == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    rc, stdout, _ = _cli(_gen(alpaca_file, out, "--model", "x", "--overwrite", "--dry-run"), capsys)
    assert rc == 0 and "dry run: --overwrite would delete the output of the earlier run" in stdout
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    rc, _, err = _cli(_gen(alpaca_file, out, "--model", "x", "--dry-run"), capsys)
    assert rc == 2 and "holds the output of another run" in err  # a dry run says what the run would meet


@pytest.mark.slow  # four evaluate runs (about 2 s of CPU)
def test_evaluate_refuses_another_report_and_overwrite_removes_its_rubric(alpaca_file, tmp_path, capsys):
    assert _cli(_gen(alpaca_file, tmp_path / "ans"), capsys)[0] == 0
    assert _cli(_gen(alpaca_file, tmp_path / "refs", "--as-reference"), capsys)[0] == 0
    report = tmp_path / "report"
    rc, stdout, err = _cli(_evaluate(tmp_path, report), capsys)
    assert rc == 0, err
    assert (report / "rubric.jsonl").is_file()
    rc, stdout, err = _cli(_evaluate(tmp_path, report), capsys)  # the same: resumes, zero judge calls
    assert rc == 0 and "pairwise_judge: 0 judged now, 12 from cache" in stdout, err
    # old code: overwrote the report without asking and left the earlier run's rubric.jsonl beside it
    rc, _, err = _cli(_evaluate(tmp_path, report, "--no-rubric"), capsys)
    assert rc == 2 and "holds the output of another run (xl-suite evaluate; other settings: rubric True then" in err
    rc, stdout, err = _cli(_evaluate(tmp_path, report, "--no-rubric", "--overwrite"), capsys)
    assert rc == 0, err
    assert not (report / "rubric.jsonl").exists() and (report / "report.md").is_file()
    assert "pairwise_judge: 12 judged now, 0 from cache" in stdout  # its judgment cache went with it


@pytest.mark.slow  # several synthesize runs (seconds)
def test_synthesize_refuses_other_settings_and_overwrite_leaves_no_earlier_file(tmp_path, capsys):
    out = tmp_path / "syn"
    rc, _, err = _cli(_synth(out, "--languages", "mt"), capsys)
    assert rc == 0, err
    assert (out / "mt.parquet").is_file()
    rc, stdout, err = _cli(_synth(out, "--languages", "mt"), capsys)
    assert rc == 0 and "the same command ran here before (finished)" in stdout, err
    rc, _, err = _cli(_synth(out, "--languages", "de"), capsys)  # old code: overwrote without --overwrite
    assert rc == 2 and "languages ['mt'] then, ['de'] now" in err
    assert (out / "mt.parquet").is_file()
    rc, _, err = _cli(_synth(out, "--languages", "de", "--overwrite"), capsys)
    assert rc == 0, err
    assert not (out / "mt.parquet").exists() and not (out / "mt_bestof3.parquet").exists()
    assert (out / "de.parquet").is_file()


def test_a_foreign_folder_is_refused_with_or_without_overwrite(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.jsonl").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(Exception, match="not written by xl-suite"):
            claim_output(foreign, "generate", {}, overwrite=overwrite, files=["a.jsonl"], caches=[".work"])
    assert (foreign / "a.jsonl").read_text() == "mine" and not (foreign / MARKER_FILE).exists()


# -- export: a no-op for the same rows, fresh rows after a re-export, the user's files kept ----------------------


def _bench(rows):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"id": [str(i) for i in range(rows)], "instruction": ["x"] * rows, "language": ["de"] * rows}
    )
    return {"xl-alpacaeval-de": datasets.DatasetDict({"test": ds})}


def test_load_dataset_after_a_re_export_returns_the_new_rows(tmp_path):
    """Old code: the second load_dataset returned the first export's 5 rows (datasets' cache key was unchanged)."""
    import datasets

    from xl_suite.export import write_repo

    repo = tmp_path / "repo"
    write_repo(repo, _bench(5))
    assert datasets.load_dataset(str(repo), "xl-alpacaeval-de", split="test").num_rows == 5
    write_repo(repo, _bench(3), overwrite=True)
    assert datasets.load_dataset(str(repo), "xl-alpacaeval-de", split="test").num_rows == 3
    assert datasets.load_dataset(str(repo), "xl-alpacaeval-de", split="test", download_mode="force_redownload")


def test_export_same_rows_is_a_no_op_and_a_replacement_keeps_the_users_files(tmp_path):
    from xl_suite.errors import OutputExistsError
    from xl_suite.export import write_repo

    repo = tmp_path / "repo"
    write_repo(repo, _bench(5))
    before = {p: p.stat().st_mtime_ns for p in repo.rglob("*")}
    lines = []
    write_repo(repo, _bench(5), echo=lines.append)
    assert "unchanged" in lines[0] and {p: p.stat().st_mtime_ns for p in repo.rglob("*")} == before
    (repo / "NOTES.md").write_text("my notes")
    with pytest.raises(OutputExistsError, match="other settings: configs.xl-alpacaeval-de.splits.test"):
        write_repo(repo, _bench(4))
    write_repo(repo, _bench(4), overwrite=True, echo=lines.append)
    assert "kept 1 files you added: NOTES.md" in lines[-1]
    assert (repo / "NOTES.md").read_text() == "my notes"


# -- --dry-run of synthesize ------------------------------------------------------------------------------------


def test_synthesize_dry_run_prints_requests_tokens_and_engine_hours_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "syn"
    argv = ["synthesize", "--model", "some/model", "--languages", "de,mt", "--num-examples", "5"]
    rc, stdout, err = _cli([*argv, "--output", out, "--dry-run", "--tokens-per-second", "100"], capsys)
    assert rc == 0, err
    assert not out.exists()
    lines = stdout.splitlines()
    respond = next(line for line in lines if line.startswith("synthesis respond"))
    assert "40 requests (20 seeds x 2 languages, 3 completions each)" in respond and "engine-hours" in respond
    assert "note: 40 seed passages for 5 pairs" not in stdout  # 20 seeds are enough for 5 pairs
    total = next(line for line in lines if line.startswith("total:"))
    assert "engine-hours at 100 generated tokens/s" in total
    assert "no request was sent" in stdout


# -- rows failed for ever: --retry-failed (issue 20) -------------------------------------------------------------


def test_rows_that_used_all_attempts_are_retried_with_retry_failed(alpaca_file, tmp_path, capsys, caplog):
    """Old code: three reruns during an outage used up the attempts; with the server healthy again the run sent 0
    requests, still exited 3, and its message still said "rerunning retries them"."""
    import logging

    out = tmp_path / "ans"
    outage = ["--engine-kwargs", json.dumps({"empty_every": 2})]
    for _ in range(3):  # the outage: every rerun fails the same rows again, until their attempts are used
        rc, stdout, err = _cli(_gen(alpaca_file, out, *outage), capsys)
        assert rc == 3, err
    assert "used all 3 attempts each, so a plain rerun sends no request for them" in err
    assert "rerun with --retry-failed" in err
    with caplog.at_level(logging.INFO, logger="xl_suite.run.scheduler"):
        rc, stdout, err = _cli(_gen(alpaca_file, out), capsys)  # healthy, but a plain rerun: nothing to send
    assert rc == 3 and "--retry-failed" in err and "6 of 6 answers from cache, 0 computed now" in stdout
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]
    rc, stdout, err = _cli(_gen(alpaca_file, out, "--retry-failed"), capsys)
    assert rc == 0, err
    assert "0 computed now" not in stdout
    rows = [json.loads(x) for x in (out / "xl-alpacaeval-de.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["output_status"] for r in rows} == {"ok"}
