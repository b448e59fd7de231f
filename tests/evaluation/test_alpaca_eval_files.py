"""alpaca_eval files out: every report folder holds ``annotations.json`` and ``model_outputs.json`` in alpaca_eval's
format. A golden-file test pins the format; where ``alpaca_eval`` is installed (the ``tests`` extra) its own metric
and leaderboard code runs on our files unchanged."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import pytest

from xl_suite.cli import main
from xl_suite.engines.fake import FakeGenerator
from xl_suite.evaluation import evaluate_responses, write_report
from xl_suite.evaluation.alpaca_eval import ANNOTATION_FIELDS, MODEL_OUTPUT_FIELDS, describe_items
from xl_suite.evaluation.judging import JudgeConfig


GOLDEN = Path(__file__).parents[1] / "data" / "golden" / "alpaca_eval"


def _judge(messages, i, sampling):
    """A judge with a verdict for every case: the answer marked WIN wins, LOSE loses, TIE ties, ??? is unreadable."""
    text = messages[-1]["content"]
    a = text.split("# Answer A", 1)[1].split("# Answer B", 1)[0]
    b = text.split("# Answer B", 1)[1]
    if "???" in a or "???" in b:
        return "I cannot decide."
    if "TIE" in a or "TIE" in b:
        return '{"winner": "tie"}'
    model_is_a = "REF" not in a
    wins = "WIN" in (a if model_is_a else b)
    return '{"winner": "%s"}' % ("A" if wins == model_is_a else "B")


def _result(tmp_path: Path):
    preds = [
        "WIN Das ist gut.",
        "LOSE Das ist schlecht.",
        "TIE Unentschieden.",
        "??? Unklar.",
        "",
        "WIN Zwei Referenzen.",
    ]
    refs = ["REF eins.", "REF zwei.", "REF drei.", "REF vier.", "REF fünf.", ["REF sechs a.", "REF sechs b."]]
    instructions = [f"Question {k}? Please respond in German." for k in range(6)]
    result = evaluate_responses(
        preds,
        "de",
        references=refs,
        instructions=instructions,
        ids=[f"q{k}" for k in range(6)],
        judge=FakeGenerator(_judge),
        config=JudgeConfig(rubric=False, price_input_per_mtok=2.5, price_output_per_mtok=10.0),
        cache_dir=str(tmp_path / "cache"),
        model_name="my-model",
        n_resamples=20,
    )
    rows = [{"dataset": "koala", "reference_generator": "gpt-4o-mini-2024-07-18"} for _ in range(6)]
    describe_items(result, rows)
    return result


def _without_times(rows: list[dict]) -> list[dict]:
    for r in rows:
        t = r["time_per_example"]
        assert t is None or (isinstance(t, float) and t >= 0), t
        r["time_per_example"] = "<seconds>" if t is not None else None
    return rows


def test_report_writes_alpaca_eval_files_golden(tmp_path):
    paths = write_report(_result(tmp_path), tmp_path / "report")

    annotations = json.loads(paths["annotations"].read_text(encoding="utf-8"))
    outputs = json.loads(paths["model_outputs"].read_text(encoding="utf-8"))
    assert all(list(r)[: len(ANNOTATION_FIELDS)] == list(ANNOTATION_FIELDS) for r in annotations)
    assert all(list(r)[: len(MODEL_OUTPUT_FIELDS)] == list(MODEL_OUTPUT_FIELDS) for r in outputs)
    expected = json.loads((GOLDEN / "annotations.json").read_text(encoding="utf-8"))
    assert _without_times(annotations) == expected
    assert outputs == json.loads((GOLDEN / "model_outputs.json").read_text(encoding="utf-8"))


def test_alpaca_eval_preference_is_one_plus_p_model_wins(tmp_path):
    result = _result(tmp_path)
    paths = write_report(result, tmp_path / "report")
    annotations = json.loads(paths["annotations"].read_text(encoding="utf-8"))
    by_id = {}
    for a in annotations:
        by_id.setdefault(a["id"], []).append(a["preference"])
    # WIN both orders -> 2, LOSE -> 1, TIE -> 1.5, unreadable -> null, empty answer loses by rule -> 1
    assert [by_id[f"q{k}"] for k in range(5)] == [[2.0], [1.0], [1.5], [None], [1.0]]
    assert by_id["q5"] == [2.0, 2.0]  # one row per (answer, reference) pair
    for sample in result.per_sample[:5]:
        p = sample["p_model_wins"]
        assert by_id[sample["id"]] == [None if p is None else 1 + p]


def test_no_judge_writes_model_outputs_but_no_annotations(tmp_path):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "annotations.json").write_text("[]")  # from an earlier run: never left behind
    result = evaluate_responses(["Hallo Welt, wie geht es?"], "de", instructions=["Greet. Answer in German."])
    paths = write_report(result, tmp_path / "report")
    assert "annotations" not in paths and not (tmp_path / "report" / "annotations.json").exists()
    assert json.loads(paths["model_outputs"].read_text(encoding="utf-8"))[0]["output"] == "Hallo Welt, wie geht es?"


# ----------------------------------------------------------------------------------------------------------------
# alpaca_eval's own code on our files


def _alpaca_eval():
    pd = pytest.importorskip("pandas")
    pytest.importorskip("alpaca_eval")
    return pd


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_alpaca_eval_get_winrate_on_our_annotations(tmp_path):
    pd = _alpaca_eval()
    from alpaca_eval.metrics import get_winrate

    result = _result(tmp_path)
    paths = write_report(result, tmp_path / "report")

    theirs = get_winrate(pd.read_json(paths["annotations"]))

    # alpaca_eval scores pairs: item q5's two references are two annotations; ours averages them per item. Both
    # are 2.0 here, so the item-level table equals alpaca_eval's pair-level numbers plus one more win.
    ours = result.table["overall"]
    assert theirs["n_total"] == ours["n_total"] + 1 and theirs["n_wins"] == ours["n_wins"] + 1
    assert (theirs["n_wins_base"], theirs["n_draws"]) == (ours["n_losses"], ours["n_draws"])
    assert theirs["win_rate"] == pytest.approx(100 * (ours["win_rate"] / 100 * ours["n_total"] + 1) / 6)


def test_alpaca_eval_leaderboard_code_recomputes_our_report(tmp_path):
    _alpaca_eval()
    from alpaca_eval import main as alpaca_eval_main

    result = _result(tmp_path)
    write_report(result, tmp_path / "report")
    folder = tmp_path / "alpaca_eval_run"  # alpaca_eval writes its own leaderboard.csv there
    folder.mkdir()
    for name in ("annotations.json", "model_outputs.json"):
        shutil.copy(tmp_path / "report" / name, folder / name)

    board_file = folder / "board.json"  # alpaca_eval's precomputed leaderboard: models it may recompute
    board_file.write_text(json.dumps({"mode": {"my-model": "community"}}), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        board, annotations = alpaca_eval_main.evaluate(
            model_outputs=str(folder / "model_outputs.json"),
            reference_outputs=str(folder / "model_outputs.json"),  # read, not used when recomputing metrics
            annotators_config=None,
            output_path=str(folder),
            precomputed_leaderboard=str(board_file),
            is_recompute_metrics_only=True,
            fn_metric="get_winrate",
            sort_by="win_rate",
            is_return_instead_of_print=True,
        )
    row = board.loc["my-model"]
    assert len(annotations) == 7 and row["n_total"] == 6  # 7 pairs, one unreadable
    # parsed pairs: q0 2.0, q1 1.0, q2 1.5, q4 1.0 (an empty answer loses by rule), q5 2.0 twice
    assert row["win_rate"] == pytest.approx(100 * (1 + 0 + 0.5 + 0 + 1 + 1) / 6)
    assert math.isclose(row["discrete_win_rate"], 100 * (3 + 0.5) / 6)


@pytest.mark.slow  # alpaca_eval's 805-row annotation files round-tripped (seconds)
@pytest.mark.data
def test_alpaca_eval_annotations_round_trip(shared_data, tmp_path, capsys):
    """alpaca_eval's annotations in, ours out: alpaca_eval reads them back to our win rate, and so do we."""
    pd = _alpaca_eval()
    from alpaca_eval.metrics import get_winrate

    root = shared_data / "alpaca_eval"
    source = str(root / "gpt-4o-mini-2024-07-18_outputs.json")
    args = ["--language", "en", "--alpaca-eval-source", source, "--n-resamples", "20"]
    assert (
        main(
            [
                "evaluate",
                "--model-outputs",
                str(root / "annotations_claude-2.1.json"),
                "--output",
                str(tmp_path / "a"),
                *args,
            ]
        )
        == 0
    )
    ours = json.loads((tmp_path / "a" / "annotations.json").read_text(encoding="utf-8"))
    original = {a["instruction"]: a for a in json.loads((root / "annotations_claude-2.1.json").read_text("utf-8"))}
    assert len(ours) == 797
    for a in ours[:50]:
        orig = original[a["instruction"]]
        for field in ("output_1", "output_2", "generator_1", "generator_2", "annotator", "dataset", "raw_completion"):
            assert a[field] == orig[field], field
        assert a["preference"] == pytest.approx(float(orig["preference"]), abs=1e-12)
        assert a["price_per_example"] == pytest.approx(float(orig["price_per_example"]))
    table = json.loads((tmp_path / "a" / "summary.json").read_text(encoding="utf-8"))["table"]["overall"]
    theirs = get_winrate(pd.read_json(tmp_path / "a" / "annotations.json"))
    assert theirs["win_rate"] == pytest.approx(table["win_rate"], abs=1e-9)
    assert theirs["n_wins_base"] == table["n_losses"]

    assert (
        main(
            [
                "evaluate",
                "--model-outputs",
                str(tmp_path / "a" / "annotations.json"),
                "--output",
                str(tmp_path / "b"),
                *args,
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "b" / "summary.json").read_text(encoding="utf-8"))["table"]["overall"]
    assert again["win_rate"] == pytest.approx(table["win_rate"], abs=1e-9) and again["n_total"] == 797
