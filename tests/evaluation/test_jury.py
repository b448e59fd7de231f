"""A jury: several judges, each judging every pair (its verdicts kept, cached per judge); the jury's verdict on an
item is the mean of the judges' P(model wins); the report shows each judge's win rate beside the jury's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xl_suite.cli import main
from xl_suite.engines.fake import FakeGenerator
from xl_suite.evaluation import evaluate_responses, write_report
from xl_suite.evaluation.judging import JudgeConfig


PREDS = ["GOOD Die Antwort ist gut.", "GOOD Noch eine gute Antwort.", "Eine Antwort.", "Eine andere Antwort."]
REFS = ["REF eins.", "REF GOOD zwei.", "REF GOOD drei.", "REF vier."]
INSTR = [f"Question {k}? Please respond in German." for k in range(4)]


def prefers_good(messages, i, sampling):
    text = messages[-1]["content"]
    a = text.split("# Answer A", 1)[1].split("# Answer B", 1)[0]
    b = text.split("# Answer B", 1)[1]
    return '{"winner": "%s"}' % (
        "A" if "GOOD" in a and "GOOD" not in b else ("B" if "GOOD" in b and "GOOD" not in a else "tie")
    )


def prefers_model(messages, i, sampling):
    text = messages[-1]["content"]
    a = text.split("# Answer A", 1)[1].split("# Answer B", 1)[0]
    return '{"winner": "%s"}' % ("B" if "REF" in a else "A")


def test_jury_verdict_is_the_mean_and_each_judge_is_reported(tmp_path):
    good = FakeGenerator(prefers_good, model="judge-good")
    lenient = FakeGenerator(prefers_model, model="judge-lenient")
    result = evaluate_responses(
        PREDS,
        "de",
        references=REFS,
        instructions=INSTR,
        judge=[good, lenient],
        config=JudgeConfig(rubric=False),
        cache_dir=str(tmp_path / "cache"),
        model_name="m",
        n_resamples=20,
        lc_method="mle",
    )
    # judge-good: GOOD answer vs plain ref -> 1; GOOD vs GOOD -> tie 0.5; plain vs GOOD ref -> 0; plain vs plain -> 0.5
    # judge-lenient: always the model -> 1. The jury: the mean of the two per item.
    assert [s["p_model_wins_by_judge"] for s in result.per_sample] == [
        {"judge-good": 1.0, "judge-lenient": 1.0},
        {"judge-good": 0.5, "judge-lenient": 1.0},
        {"judge-good": 0.0, "judge-lenient": 1.0},
        {"judge-good": 0.5, "judge-lenient": 1.0},
    ]
    assert [s["p_model_wins"] for s in result.per_sample] == [1.0, 0.75, 0.5, 0.75]
    overall = result.table["overall"]
    assert overall["win_rate"] == pytest.approx(75.0)
    assert overall["win_rate_by_judge"] == {"judge-good": pytest.approx(50.0), "judge-lenient": pytest.approx(100.0)}
    assert result.meta["judge"]["model"] == "jury: judge-good + judge-lenient"
    assert [m["model"] for m in result.meta["judge"]["jury"]] == ["judge-good", "judge-lenient"]
    # every judge's verdicts are kept: 4 items x 2 orders x 2 judges
    assert len(result.judgments) == 16 and {r["judge_model"] for r in result.judgments} == {
        "judge-good",
        "judge-lenient",
    }
    assert set(result.ledger) == {"pairwise_judge:judge-good", "pairwise_judge:judge-lenient"}
    # position bias per judge: each judge sees its own pairs in both orders; neither changes its mind
    assert overall["order_agreement"] == 1.0

    paths = write_report(result, tmp_path / "report")
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "## Jury" in md and "| language | judge-good | judge-lenient | jury |" in md
    assert "| overall | 50.0 | 100.0 | 75.0 |" in md
    annotations = json.loads(paths["annotations"].read_text(encoding="utf-8"))
    assert [a["preference"] for a in annotations] == [2.0, 1.75, 1.5, 1.75]
    assert annotations[0]["annotator"] == "jury: judge-good + judge-lenient"
    assert set(annotations[1]["raw_completion"]) == {
        "judge-good:model_first",
        "judge-good:model_second",
        "judge-lenient:model_first",
        "judge-lenient:model_second",
    }


def test_one_judge_twice_is_an_error():
    judge = FakeGenerator(prefers_good, model="same")
    with pytest.raises(ValueError, match="names judge 'same' twice"):
        evaluate_responses(PREDS, "de", references=REFS, instructions=INSTR, judge=[judge, judge])


def _preset(tmp_path: Path, name: str, reply: str) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(
        json.dumps(
            {"judge_backend": "fake", "judge_model": name, "judge_engine_kwargs": {"reply": reply}, "rubric": False}
        ),
        encoding="utf-8",
    )
    return str(path)


def test_judge_flag_repeated_and_adding_a_judge_judges_only_what_is_new(tmp_path, capsys):
    answers = tmp_path / "answers.jsonl"
    refs = tmp_path / "refs.jsonl"
    answers.write_text(
        "".join(
            json.dumps({"id": f"q{k}", "language": "de", "instruction": INSTR[k], "output": PREDS[k]}) + "\n"
            for k in range(4)
        ),
        encoding="utf-8",
    )
    refs.write_text(
        "".join(json.dumps({"id": f"q{k}", "language": "de", "reference": REFS[k]}) + "\n" for k in range(4)),
        encoding="utf-8",
    )
    first = _preset(tmp_path, "judge-first", '{"winner": "A"}')  # always the answer shown first
    second = _preset(tmp_path, "judge-second", '{"winner": "B"}')  # always the answer shown second
    args = ["evaluate", "--model-outputs", str(answers), "--references", str(refs), "--output", str(tmp_path / "r")]
    args += ["--order", "random", "--n-resamples", "20", "--lc-method", "mle"]

    assert main([*args, "--judge", first]) == 0
    assert "pairwise_judge: 4 judged now, 0 from cache" in capsys.readouterr().out

    assert main([*args, "--judge", first, "--judge", second]) == 0  # a judge added to the finished evaluation
    printed = capsys.readouterr().out
    assert "pairwise_judge:judge-first: 0 judged now, 4 from cache" in printed
    assert "pairwise_judge:judge-second: 4 judged now, 0 from cache" in printed
    summary = json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))
    overall = summary["table"]["overall"]
    # one content-seeded order per item, the same for both judges: one always backs the answer shown first, the
    # other the one shown second, so their win rates add up to 100 and the jury ties every item
    by_judge = overall["win_rate_by_judge"]
    assert by_judge["judge-first"] + by_judge["judge-second"] == pytest.approx(100.0)
    assert overall["win_rate"] == pytest.approx(50.0)
    assert summary["meta"]["preset"] == f"{first} v1, {second} v1"

    assert main([*args, "--judge", first, "--judge-model", "x"]) == 2
    assert "--judge names each jury member" in capsys.readouterr().err
