"""``xl-suite compare-judges``: judges compared per language. Expected values are worked out by hand next to each
check; where ``alpaca_eval`` is installed, its own ``Analyzer`` computes the agreement on the same files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from xl_suite.cli import main
from xl_suite.engines.fake import FakeGenerator
from xl_suite.evaluation import evaluate_responses, write_report
from xl_suite.evaluation.judges import JUDGES_COLUMNS, compare_judges, read_judge
from xl_suite.evaluation.judging import JudgeConfig


KEYS = ["instruction", "output_1", "output_2"]
ANSWERS = {
    "de": ["GOOD Die Antwort ist gut und richtig.", "GOOD Noch eine gute Antwort.", "Eine Antwort.", "Eine andere."],
    "mt": ["GOOD It-tweġiba hija tajba.", "GOOD Tweġiba oħra tajba.", "Tweġiba.", "Tweġiba oħra."],
}
REFERENCES = ["REF one.", "REF two.", "REF GOOD three.", "REF four."]


def prefers_good(messages, i, sampling):
    """Judge A: the answer marked GOOD wins; neither marked is a tie."""
    text = messages[-1]["content"]
    a = text.split("# Answer A", 1)[1].split("# Answer B", 1)[0]
    b = text.split("# Answer B", 1)[1]
    return '{"winner": "%s"}' % ("A" if "GOOD" in a else ("B" if "GOOD" in b else "tie"))


def prefers_first(messages, i, sampling):
    """Judge B: always the answer shown first (its position bias cancels out over both orders: all ties)."""
    return '{"winner": "A"}'


def _report(tmp_path: Path, judge: FakeGenerator) -> Path:
    preds = ANSWERS["de"] + ANSWERS["mt"]
    langs = ["de"] * 4 + ["mt"] * 4
    result = evaluate_responses(
        preds,
        langs,
        references=REFERENCES * 2,
        instructions=[f"Question {k}? Please respond in {lang}." for lang in ("German", "Maltese") for k in range(4)],
        ids=[f"{lang}{k}" for lang in ("de", "mt") for k in range(4)],
        judge=judge,
        config=JudgeConfig(rubric=False, price_input_per_mtok=1.0, price_output_per_mtok=2.0),
        cache_dir=str(tmp_path / f"cache-{judge.model}"),
        model_name="model-x",
        n_resamples=20,
        lc_method="mle",
    )
    folder = tmp_path / f"report-{judge.model}"
    write_report(result, folder)
    return folder


@pytest.fixture
def reports(tmp_path):
    return [
        _report(tmp_path, FakeGenerator(prefers_good, model="judge-a")),
        _report(tmp_path, FakeGenerator(prefers_first, model="judge-b")),
    ]


def test_agreement_kappa_and_order_statistics_by_hand(reports):
    comparison = compare_judges([read_judge(reports[0]), read_judge(reports[1])])

    assert [(r["language"], r["judge_1"], r["judge_2"]) for r in comparison.rows] == [
        ("overall", "judge-a", "judge-b"),
        ("de", "judge-a", "judge-b"),
        ("mt", "judge-a", "judge-b"),
    ]
    for row in comparison.rows:
        # judge A: 2, 2, 1, 1.5 (GOOD answer, GOOD answer, GOOD reference, neither); judge B: 1.5 everywhere.
        # agreement = 100 * (1 - mean |a - b|) = 100 * (1 - (0.5 + 0.5 + 0.5 + 0) / 4)
        assert row["agreement"] == pytest.approx(62.5)
        # verdicts A [2, 2, 1, tie], B [tie x4]: observed 1/4, chance 1/4 -> kappa 0
        assert row["cohen_kappa"] == pytest.approx(0.0)
        # A: the GOOD answer wins in either order, so half of its decided judgments go to the first answer, and
        # every pair has the same winner in both orders; B: always the first answer, never the same winner
        assert (row["prefer_first_1"], row["order_consistency_1"]) == (pytest.approx(50.0), pytest.approx(100.0))
        assert (row["prefer_first_2"], row["order_consistency_2"]) == (pytest.approx(100.0), pytest.approx(0.0))
        assert row["n_models"] == 1 and math.isnan(row["spearman"])
    assert comparison.rows[0]["n_pairs"] == 8 and comparison.rows[1]["n_pairs"] == 4


def test_price_and_time_per_thousand_from_the_ledger(reports):
    judge = read_judge(reports[0])
    row = compare_judges([judge, read_judge(reports[1])]).rows[0]
    annotations = json.loads((reports[0] / "annotations.json").read_text(encoding="utf-8"))
    judgments = [json.loads(line) for line in (reports[0] / "judgments.jsonl").read_text("utf-8").splitlines()]
    # USD 1 per million prompt tokens and 2 per million completion tokens, over 8 pairs judged twice each
    usd = sum(j["prompt_tokens"] * 1.0 + j["completion_tokens"] * 2.0 for j in judgments) / 1e6
    assert row["price_per_1000_1"] == pytest.approx(1000 * usd / 8)
    assert row["seconds_per_1000_1"] == pytest.approx(1000 * sum(a["time_per_example"] for a in annotations) / 8)


def test_gold_accuracy_per_language(reports):
    de, mt = ANSWERS["de"], ANSWERS["mt"]
    gold = [
        # judge A prefers the GOOD answer here: right
        {
            "prompt": "Question 0? Please respond in German.",
            "chosen": de[0],
            "rejected": REFERENCES[0],
            "language": "de",
        },
        # judge A prefers the GOOD reference: right
        {
            "prompt": "Question 2? Please respond in German.",
            "chosen": REFERENCES[2],
            "rejected": de[2],
            "language": "de",
        },
        # judge A prefers the GOOD answer, the humans the reference: wrong
        {
            "prompt": "Question 0? Please respond in Maltese.",
            "chosen": REFERENCES[0],
            "rejected": mt[0],
            "language": "mt",
        },
    ]
    rows = {r["language"]: r for r in compare_judges([read_judge(p) for p in reports], gold=gold).rows}
    assert (rows["de"]["gold_accuracy_1"], rows["mt"]["gold_accuracy_1"]) == (100.0, 0.0)
    assert rows["overall"]["gold_accuracy_1"] == pytest.approx(200 / 3) and rows["overall"]["n_gold_1"] == 3
    assert rows["overall"]["gold_accuracy_2"] == pytest.approx(50.0)  # judge B ties every pair: half each


def test_agreement_is_alpaca_evals_analyzer(reports):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("alpaca_eval")
    from alpaca_eval.analyze import Analyzer

    rows = compare_judges([read_judge(p) for p in reports]).rows
    a, b = (pd.read_json(p / "annotations.json") for p in reports)
    for row in rows:
        pick = (
            (lambda df: df)
            if row["language"] == "overall"
            else (lambda df, code=row["language"]: df[df.language == code])
        )
        analyzer = Analyzer(
            gold_crossannotations=pick(b), gold_annotations=pick(b), n_annotators=1, scoring_rule="absolute"
        )
        theirs = analyzer.agreement_of_annotations(pick(a), n_majority_vote_1=1, n_majority_vote_2=1)
        assert row["agreement"] == pytest.approx(100 * theirs["score"], abs=1e-9)
        assert row["n_pairs"] == theirs["counts"]


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_judges_without_common_pairs_are_an_error(tmp_path, reports):
    other = _report(tmp_path / "other", FakeGenerator(prefers_good, model="judge-c"))
    annotations = json.loads((other / "annotations.json").read_text(encoding="utf-8"))
    for a in annotations:
        a["output_2"] += " (another model)"
    (other / "annotations.json").write_text(json.dumps(annotations), encoding="utf-8")
    with pytest.raises(ValueError, match="share no judged pair"):
        compare_judges([read_judge(reports[0]), read_judge(other)])


def test_command_writes_judges_csv_and_a_page_section(tmp_path, reports, capsys):
    board = tmp_path / "board"
    assert main(["leaderboard", str(reports[0]), "--output", str(board)]) == 0  # its table stays on the page
    assert main(["compare-judges", str(reports[0]), str(reports[1]), "--output", str(board)]) == 0
    assert "judge-a vs judge-b (overall): agreement 62.5% over 8 pairs" in capsys.readouterr().out
    with (board / "judges.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(JUDGES_COLUMNS)
    assert (rows[0]["judge_1"], rows[0]["judge_2"], rows[0]["language"], float(rows[0]["agreement"])) == (
        "judge-a",
        "judge-b",
        "overall",
        62.5,
    )
    page = (board / "index.html").read_text(encoding="utf-8")
    assert 'id="judges"' in page and 'id="board"' in page and 'data-model="model-x"' in page


@pytest.mark.slow  # alpaca_eval's 805-row annotation files through compare-judges and its Analyzer (about 5 s)
@pytest.mark.data
def test_alpaca_eval_annotations_against_a_second_judge(shared_data, tmp_path, capsys):
    """alpaca_eval's annotations of two models (its weighted GPT-4-turbo judge) against a second judge that gives the
    same verdicts without their probabilities (as its non-weighted annotators do): the agreement is alpaca_eval's
    Analyzer's, the rankings agree, and two files of one judge on different models share no pair."""
    root = shared_data / "alpaca_eval"
    files = [root / "annotations_claude-2.1.json", root / "annotations_alpaca-7b.json"]
    discrete = []
    for f in files:
        rows = json.loads(f.read_text(encoding="utf-8"))
        for r in rows:
            p = float(r["preference"])
            r.update(annotator="discrete_judge", preference=1.5 if p == 1.5 else (2.0 if p > 1.5 else 1.0))
        path = tmp_path / f"discrete_{f.name}"
        path.write_text(json.dumps(rows), encoding="utf-8")
        discrete.append(path)
    out = tmp_path / "board"
    judge_a, judge_b = ",".join(map(str, files)), ",".join(map(str, discrete))
    assert main(["compare-judges", judge_a, judge_b, "--language", "en", "--output", str(out)]) == 0
    with (out / "judges.csv").open(encoding="utf-8", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["judge_1"] == "weighted_alpaca_eval_gpt4_turbo" and row["judge_2"] == "discrete_judge"
    assert float(row["cohen_kappa"]) == 1.0 and int(row["n_models"]) == 2
    assert float(row["spearman"]) == float(row["pearson"]) == 1.0  # claude-2.1 above alpaca-7b for both

    pd = pytest.importorskip("pandas")
    pytest.importorskip("alpaca_eval")
    from alpaca_eval.analyze import Analyzer

    # one annotation each: alpaca_eval's files hold two pairs twice, which its Analyzer would count as a second
    # annotator; both sides keep the first (as compare-judges does)
    a = pd.concat([pd.read_json(f) for f in files], ignore_index=True).drop_duplicates(KEYS)
    b = pd.concat([pd.read_json(f) for f in discrete], ignore_index=True).drop_duplicates(KEYS)
    analyzer = Analyzer(gold_crossannotations=b, gold_annotations=b, n_annotators=1, scoring_rule="absolute")
    theirs = analyzer.agreement_of_annotations(a, n_majority_vote_1=1, n_majority_vote_2=1)
    assert float(row["agreement"]) == pytest.approx(100 * theirs["score"], abs=1e-9)
    assert int(row["n_pairs"]) == theirs["counts"] == 1608
    longer = analyzer.get_length_biases(a)["probability_prefer_longer"]
    assert float(row["prefer_longer_1"]) == pytest.approx(100 * longer, abs=1e-9)
    assert float(row["price_per_1000_1"]) == pytest.approx(1000 * a["price_per_example"].mean())

    # alpaca_eval's two files are one judge (weighted_alpaca_eval_gpt4_turbo) on two models, not two judges: said so
    assert main(["compare-judges", str(files[0]), str(files[1]), "--language", "en", "--output", str(out)]) == 2
    assert "Two judges have the same name (['weighted_alpaca_eval_gpt4_turbo'" in capsys.readouterr().err
