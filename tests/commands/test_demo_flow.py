"""`xl-suite demo`'s flow with the fake engine (fast): checks before engines, the one output rule, a cached rerun
that starts no engine, the seed and decontamination flags, --dry-run. The real-engine run is tests/commands/test_demo.py."""

import json

import pytest

from xl_suite.cli import main


ALPACA = [
    {"instruction": f"Explain topic number {k} briefly in a few words.", "output": f"Topic {k}."} for k in range(6)
]


def _cli(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture
def demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    alpaca = tmp_path / "alpaca_eval.json"
    alpaca.write_text(json.dumps(ALPACA), encoding="utf-8")
    return [
        "demo",
        "--backend",
        "fake",
        "--model",
        "m",
        "--num-prompts",
        "3",
        "--num-examples",
        "2",
        "--alpaca-eval",
        alpaca,
    ]


@pytest.mark.slow  # two whole demo runs (seconds)
def test_a_finished_demo_reruns_from_cache_without_starting_an_engine(demo, tmp_path, capsys):
    rc, out, err = _cli(demo, capsys)
    assert rc == 0, err
    assert "engines started: m" in out
    (tmp_path / "xl-suite" / "NOTES.md").write_text("mine")  # a file the user adds to the export folder
    rc, out, err = _cli(demo, capsys)  # old code: built the engine again (a cached make demo started vLLM)
    assert rc == 0, err
    assert "no engine started: everything came from cache" in out
    assert "6 of 6 references from cache, 0 computed now; 6 of 6 answers from cache, 0 computed now" in out
    assert "unchanged" in out and (tmp_path / "xl-suite" / "NOTES.md").read_text() == "mine"
    summary = json.loads((tmp_path / "xl-suite-demo" / "demo_summary.json").read_text())
    assert summary["engines_started"] == []
    assert summary["decontaminated_against"] == [str(tmp_path / "alpaca_eval.json")]  # --alpaca-eval honoured


@pytest.mark.slow  # a whole demo run (about 2.5 s of CPU)
def test_the_demo_checks_its_synthesis_once_and_reads_the_benchmark_once(demo, capsys, monkeypatch):
    """The demo's plan checks the synthesis templates and reads the decontamination benchmark before any engine starts,
    and hands them to synthesize, which neither checks nor reads them again."""
    import xl_suite.synthesis
    import xl_suite.synthesis.config
    import xl_suite.synthesis.decontamination
    import xl_suite.synthesis.pipeline

    calls = {"preflight": 0, "resolve_benchmark": 0}
    for name, home in (
        ("preflight", xl_suite.synthesis.config),
        ("resolve_benchmark", xl_suite.synthesis.decontamination),
    ):
        real = getattr(home, name)

        def counted(*args, _name=name, _real=real, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        for module in (home, xl_suite.synthesis, xl_suite.synthesis.pipeline):  # every name it is reached by
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counted)
    rc, _, err = _cli(demo, capsys)
    assert rc == 0, err
    assert calls == {"preflight": 1, "resolve_benchmark": 1}


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_another_demo_into_the_folders_needs_overwrite(demo, tmp_path, capsys):
    assert _cli(demo, capsys)[0] == 0
    rc, _, err = _cli([*demo, "--languages", "de"], capsys)
    assert rc == 2 and "languages ['de', 'mt'] then, ['de'] now" in err and "--overwrite" in err
    rc, out, err = _cli([*demo, "--languages", "de", "--overwrite"], capsys)
    assert rc == 0, err
    assert "--overwrite deleted the output of the earlier run" in out
    configs = sorted(p.name for p in (tmp_path / "xl-suite").iterdir() if p.is_dir())
    assert configs == ["xl-alpacaeval-de", "xl-instruct-de"]  # nothing of the earlier export is left


def test_a_judge_without_its_key_fails_before_any_model_or_engine(demo, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rc, _, err = _cli([*demo, "--judge-preset", "gpt-4o"], capsys)
    assert rc == 2 and "No API key for 'gpt-4o-2024-08-06'" in err
    assert not (tmp_path / "xl-suite-demo").exists()  # old code: built the model and started vLLM first


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_seeds_flag_and_dry_run(demo, tmp_path, capsys):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "".join(
            json.dumps({"text": f"Passage number {k} about rivers and the sea and boats."}) + "\n" for k in range(5)
        )
    )
    rc, out, err = _cli([*demo, "--seeds", seeds, "--dry-run", "--tokens-per-second", "10"], capsys)
    assert rc == 0, err
    assert "5 seed passages" in out and "synthesis backtranslate (m): 5 requests" in out
    assert "no model was built" in out and not (tmp_path / "xl-suite-demo").exists()
    rc, out, err = _cli([*demo, "--seeds", seeds], capsys)
    assert rc == 0, err
    summary = json.loads((tmp_path / "xl-suite-demo" / "demo_summary.json").read_text())
    assert summary["seeds"] == str(seeds)


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_failed_references_and_answers_are_neither_judged_nor_exported(demo, tmp_path, capsys, monkeypatch):
    """A reference or an answer that failed (error, empty, too long) is no data: the demo leaves it out of the
    evaluation and the export, says so, and the rerun retries it (it stays in the cache)."""
    import datasets

    import xl_suite.evaluation

    def failing_first(fn, column):
        def wrapped(*args, **kwargs):
            ds = fn(*args, **kwargs)
            return ds.map(lambda r, i: {column: "error"} if i == 0 else {}, with_indices=True)

        return wrapped

    monkeypatch.setattr(
        xl_suite.evaluation,
        "generate_references",
        failing_first(xl_suite.evaluation.generate_references, "reference_status"),
    )
    monkeypatch.setattr(
        xl_suite.evaluation, "generate_answers", failing_first(xl_suite.evaluation.generate_answers, "output_status")
    )
    rc, out, err = _cli(demo, capsys)
    assert rc == 0, err
    assert "1 references and 1 answers failed" in out and "left out of the evaluation and the export" in out
    summary = json.loads((tmp_path / "xl-suite-demo" / "report" / "summary.json").read_text())
    assert summary["table"]["overall"]["n"] == 5  # 6 pairs, the first one's reference and answer failed
    exported = [
        datasets.load_dataset(str(tmp_path / "xl-suite"), name, split="test")
        for name in ("xl-alpacaeval-de", "xl-alpacaeval-mt")
        if (tmp_path / "xl-suite" / name).is_dir()
    ]
    assert sum(d.num_rows for d in exported) == 5 and all(s == "ok" for d in exported for s in d["reference_status"])
