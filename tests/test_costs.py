"""Cost before a paid run: --dry-run states requests, tokens and cost, and starts no engine."""

from __future__ import annotations

import json

import pytest

from xl_suite.cli import main
from xl_suite.costs import estimate_cost, list_price


def _no_engine(*args, **kwargs):
    raise AssertionError("a dry run must not build an engine")


def _rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_evaluate_dry_run_counts_both_orders_and_the_rubric(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("xl_suite.engines.registry.build_generator", _no_engine)
    langs = ["de", "mt"]
    model = [
        {"id": str(i), "language": lang, "instruction": f"Question {i}?", "output": "" if i == 0 else "x" * 80}
        for lang in langs
        for i in range(3)
    ]
    refs = [{"id": str(i), "language": lang, "reference": "y" * 40} for lang in langs for i in range(3)]
    rc = main(
        [
            "evaluate",
            "--model-outputs",
            _rows(tmp_path / "m.jsonl", model),
            "--references",
            _rows(tmp_path / "r.jsonl", refs),
            "--judge-preset",
            "gpt-4o",
            "--output",
            str(tmp_path / "rep"),
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    # 6 answers, 2 empty (decided by rule): 4 x 2 orders pairwise requests, 4 rubric requests
    assert (
        "pairwise judge (gpt-4o-2024-08-06): 8 requests (6 answers (2 empty, decided by rule) in 2 language(s) x "
        "2 order(s))" in out
    )
    assert "rubric judge (gpt-4o-2024-08-06): 4 requests" in out
    assert "<= 256 completion tokens" in out  # 8 verdicts x 32 tokens
    assert "~$" in out and "dry run: no request was sent." in out
    assert not (tmp_path / "rep").exists()


@pytest.mark.data
def test_generate_dry_run_with_a_custom_price(tmp_path, capsys, monkeypatch, alpaca_eval_path):
    monkeypatch.setattr("xl_suite.engines.registry.build_generator", _no_engine)
    rc = main(
        [
            "generate",
            "--backend",
            "openai",
            "--model",
            "my-model",
            "--config",
            "xl-alpacaeval-de",
            "--source",
            str(alpaca_eval_path),
            "--output",
            str(tmp_path / "out"),
            "--limit",
            "3",
            "--max-tokens",
            "100",
            "--dry-run",
            "--price-input-per-mtok",
            "1",
            "--price-output-per-mtok",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "xl-alpacaeval-de answers (my-model): 3 requests (3 prompts)" in out
    # 300 completion tokens x $2/M = $0.0006, plus ~98 prompt tokens x $1/M
    assert "<= 300 completion tokens" in out and "~$0.0007" in out


def test_unknown_price_says_so():
    e = estimate_cost("answers", "local", [[{"role": "user", "content": "hi"}]], max_tokens=10)
    assert e.cost_usd is None and "cost unknown" in e.line()


@pytest.mark.slow  # 26,301 judge requests rendered and counted (797 prompts x 11 languages x 3; about 3 s)
@pytest.mark.data
def test_paper_scale_judging_estimate(alpaca_eval_path):
    from xl_suite.evaluation.judging import JudgeConfig, estimate_judging_cost
    from xl_suite.languages import BENCHMARK_LANGUAGES
    from xl_suite.sources import filter_english_specific, read_alpaca_eval

    kept, _ = filter_english_specific(read_alpaca_eval(str(alpaca_eval_path)))
    langs = [c for c in BENCHMARK_LANGUAGES if c != "en"]
    instructions = [r["instruction"] for _ in langs for r in kept]
    outputs = [r["output"] for _ in langs for r in kept]
    codes = [c for c in langs for _ in kept]
    pair, rubric = estimate_judging_cost(
        instructions,
        outputs,
        outputs,
        codes,
        config=JudgeConfig(),
        judge_model="gpt-4o-2024-08-06",
        price=list_price("gpt-4o-2024-08-06"),
    )
    assert len(kept) == 797 and len(langs) == 11
    assert pair.requests == 797 * 11 * 2 and rubric.requests == 797 * 11
    assert pair.completion_tokens == pair.requests * 32
    assert 10 < pair.cost_usd + rubric.cost_usd < 1000
