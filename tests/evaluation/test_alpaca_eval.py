"""alpaca_eval files in and out of ``xl-suite evaluate``, on alpaca_eval's own files (../shared/data)."""

import csv
import json

import pytest

from xl_suite.cli import main
from xl_suite.errors import InvalidArgumentError
from xl_suite.evaluation.alpaca_eval import file_kind, from_model_outputs, match_instructions


ALPACA = [
    {
        "instruction": f"Explain topic number {k} briefly.",
        "output": f"Topic {k}.",
        "generator": "x",
        "dataset": "helpful_base",
    }
    for k in range(4)
]


@pytest.fixture
def alpaca_file(tmp_path):
    path = tmp_path / "alpaca_eval.json"
    path.write_text(json.dumps(ALPACA), encoding="utf-8")
    return path


def _csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # alpaca_eval's 805-row annotation files evaluated (seconds)
@pytest.mark.data
@pytest.mark.parametrize("model", ["claude-2.1", "alpaca-7b"])
def test_annotations_file_unchanged_reproduces_alpaca_eval_leaderboard(model, shared_data, tmp_path, capsys):
    """alpaca_eval's annotations.json in, alpaca_eval's leaderboard columns out, with alpaca_eval's numbers.

    XL-AlpacaEval leaves out 8 of the 805 prompts; the report names them, and those 8 plus the 797 scored rows add up
    to alpaca_eval's published leaderboard row (counts, win rate, mean length).
    """
    root = shared_data / "alpaca_eval"
    annotations = json.loads((root / f"annotations_{model}.json").read_text(encoding="utf-8"))
    published = next(r for r in _csv(root / "leaderboard_rows.csv") if r["model"] == model)
    report = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--model-outputs",
                str(root / f"annotations_{model}.json"),
                "--language",
                "en",
                "--alpaca-eval-source",
                str(root / "gpt-4o-mini-2024-07-18_outputs.json"),
                "--output",
                str(report),
                "--n-resamples",
                "20",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "8 of 805 rows" in printed and "match no XL-AlpacaEval prompt" in printed

    rows = _csv(report / "leaderboard.csv")
    assert [r["language"] for r in rows] == ["en", "overall"]
    ours = rows[-1]
    # every alpaca_eval column is there under its own name, except its length control: its length_controlled_v1
    # needs df_gamed.csv (not in this test's HF cache), and no other estimator takes its name (tests/
    # test_length_control.py); ours is lc_minimal_winrate
    board_lc = {"length_controlled_winrate", "lc_standard_error"}
    assert set(published) - board_lc <= set(ours), set(published) - set(ours)
    assert not board_lc & set(ours) and ours["lc_minimal_winrate"]
    assert ours["model"] == model and ours["mode"] == "community"

    summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    info = summary["meta"]["alpaca_eval"]
    assert (info["kind"], info["n_rows"], info["n_matched"], info["n_unmatched"]) == ("annotations", 805, 797, 8)
    left_out = [annotations[u["index"]] for u in info["unmatched_sample"]]
    assert len(left_out) == 8
    p_left = [float(a["preference"]) - 1 for a in left_out]
    assert int(ours["n_total"]) == 797
    assert int(ours["n_wins"]) + sum(p > 0.5 for p in p_left) == int(published["n_wins"])
    assert int(ours["n_wins_base"]) + sum(p < 0.5 for p in p_left) == int(published["n_wins_base"])
    assert int(ours["n_draws"]) + sum(p == 0.5 for p in p_left) == int(published["n_draws"])
    total = float(ours["win_rate"]) * 797 + 100 * sum(p_left)
    assert total / 805 == pytest.approx(float(published["win_rate"]), abs=1e-9)
    # avg_length has alpaca_eval's meaning: mean length of the outputs in characters (alpaca_eval truncates it)
    chars = float(ours["avg_length"]) * 797 + sum(len(a["output_2"]) for a in left_out)
    assert int(chars / 805) == int(published["avg_length"])
    assert "annotations by weighted_alpaca_eval_gpt4_turbo" in (report / "report.md").read_text(encoding="utf-8")


@pytest.mark.data
@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_model_outputs_file_unchanged_with_language(shared_data, alpaca_eval_path, tmp_path, capsys):
    """GPT-4o-mini's alpaca_eval outputs (English answers) scored as German answers: fidelity is near zero."""
    report = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--model-outputs",
                str(alpaca_eval_path),
                "--language",
                "de",
                "--alpaca-eval-source",
                str(alpaca_eval_path),
                "--output",
                str(report),
            ]
        )
        == 0
    )
    assert "8 of 805 rows" in capsys.readouterr().out
    row = _csv(report / "leaderboard.csv")[-1]
    assert row["model"] == "gpt-4o-mini-2024-07-18" and int(row["n"]) == 797
    assert float(row["language_fidelity"]) < 5.0
    assert "avg_length" in row and "avg_model_length" not in row


def test_model_outputs_without_language_names_the_flag(alpaca_file, tmp_path, capsys):
    assert (
        main(
            [
                "evaluate",
                "--model-outputs",
                str(alpaca_file),
                "--alpaca-eval-source",
                str(alpaca_file),
                "--output",
                str(tmp_path / "r"),
            ]
        )
        == 2
    )
    assert "--language" in capsys.readouterr().err


def test_duplicate_instruction_is_an_error_naming_it(alpaca_file, tmp_path):
    rows = ALPACA + [{**ALPACA[2], "output": "again"}]
    with pytest.raises(InvalidArgumentError, match="Rows 2 and 4 .*Explain topic number 2"):
        from_model_outputs(rows, language="de", source=str(alpaca_file))


def test_unmatched_rows_are_counted_and_sampled(alpaca_file):
    rows = ALPACA + [{"instruction": f"Not a benchmark prompt {k}", "output": "x"} for k in range(12)]
    match = from_model_outputs(rows, language="mt", source=str(alpaca_file))
    assert [r["id"] for r in match.rows] == [r["id"] for r in match.rows if r["id"].startswith("xlae-")]
    assert len(match.rows) == 4 and match.n_unmatched == 12 and len(match.unmatched) == 10
    assert match.unmatched[0] == {"index": 4, "language": "mt", "instruction": "Not a benchmark prompt 0"}
    assert "12 of 16 rows" in match.summary()


def test_full_xl_alpacaeval_prompts_match_too_and_languages_must_agree(alpaca_file):
    from xl_suite.datasets_api import load_xl_suite

    ds = load_xl_suite("xl-alpacaeval-hi", split="test", source=str(alpaca_file))
    rows = [{"instruction": r["instruction"], "output": "x", "language": "hindi"} for r in ds]
    match = match_instructions(rows, source=str(alpaca_file))
    assert [r["id"] for r in match.rows] == ds["id"] and {r["language"] for r in match.rows} == {"hi"}
    # the Hindi prompt is not a German prompt: in German it matches nothing
    with pytest.raises(InvalidArgumentError, match="No row"):
        match_instructions([{**rows[0], "language": "de"}], source=str(alpaca_file))
    with pytest.raises(InvalidArgumentError, match="--language is 'de'"):
        match_instructions(rows, language="de", source=str(alpaca_file))


def test_file_kinds():
    assert file_kind(ALPACA) == "model_outputs"
    assert file_kind([{"id": "a", "instruction": "q", "output": "o"}]) == "xl_suite"


def test_model_outputs_and_reference_outputs_with_a_judge(alpaca_file, tmp_path):
    refs = tmp_path / "reference_outputs.json"
    refs.write_text(
        json.dumps([{**r, "output": f"Referenz {k}.", "generator": "ref"} for k, r in enumerate(ALPACA)]),
        encoding="utf-8",
    )
    report = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--model-outputs",
                str(alpaca_file),
                "--references",
                str(refs),
                "--language",
                "de",
                "--alpaca-eval-source",
                str(alpaca_file),
                "--judge-backend",
                "fake",
                "--judge-model",
                "judge",
                "--judge-engine-kwargs",
                json.dumps({"reply": '{"winner": "A"}'}),
                "--no-rubric",
                "--output",
                str(report),
                "--n-resamples",
                "10",
            ]
        )
        == 0
    )
    judgments = [json.loads(line) for line in (report / "judgments.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(judgments) == 8 and {j["language"] for j in judgments} == {"de"}
    assert "n_wins_base" in _csv(report / "leaderboard.csv")[0]


def test_report_without_matplotlib_is_still_written(alpaca_file, tmp_path, monkeypatch, capsys):
    import sys

    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "win_rates.png").write_bytes(b"old plot")  # an earlier evaluation's report
    (tmp_path / "report" / ".xl-suite-output.json").write_text('{"written_by": "xl-suite", "kind": "evaluate"}')
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as without the [plot] extra
    assert (
        main(
            [
                "evaluate",
                "--model-outputs",
                str(alpaca_file),
                "--language",
                "de",
                "--alpaca-eval-source",
                str(alpaca_file),
                "--output",
                str(tmp_path / "report"),
            ]
        )
        == 0
    )
    assert "plot: none (pip install 'xl-suite[plot]')" in capsys.readouterr().out
    assert not (tmp_path / "report" / "win_rates.png").exists()
    assert "xl-suite[plot]" in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert len(_csv(tmp_path / "report" / "leaderboard.csv")) == 2
