"""The JSON repair step in front of the score and verdict parsers, and the count of repaired replies."""

import pytest

from xl_suite.engines.fake import FakeGenerator
from xl_suite.evaluation.judging import JudgeConfig, judge_pairwise, parse_verdict_with_status, score_rubric
from xl_suite.scoring import parse_scores_with_status


DIMS = ["fluency", "accuracy"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"fluency": 4, "accuracy": 5}', ({"fluency": 4, "accuracy": 5}, "ok")),
        ('{"fluency": 4, "accuracy": 5', ({"fluency": 4, "accuracy": 5}, "repaired")),  # truncated
        ("{'fluency': 4, 'accuracy': 5}", ({"fluency": 4, "accuracy": 5}, "repaired")),  # single quotes
        ('{"fluency": 4, "accuracy": 5,}', ({"fluency": 4, "accuracy": 5}, "repaired")),  # trailing comma
        ('{"fluency": 4, // reads well\n"accuracy": 5}', ({"fluency": 4, "accuracy": 5}, "repaired")),  # comment
        ("{fluency: 4, accuracy: 5}", ({"fluency": 4, "accuracy": 5}, "repaired")),  # unquoted keys
        ("Scores: ```json\n{'fluency': 2, accuracy: 3", ({"fluency": 2, "accuracy": 3}, "repaired")),  # open fence
        # repair never relaxes the strict checks: out of scale, missing or fractional scores stay unparsed
        ("{'fluency': 7, 'accuracy': 5}", (None, "unparsed")),
        ("{'fluency': 4", (None, "unparsed")),
        ("{'fluency': 4.5, accuracy: 5}", (None, "unparsed")),
        ("no scores at all", (None, "unparsed")),
    ],
)
def test_scores(text, expected):
    assert parse_scores_with_status(text, DIMS) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"winner": "A"}', ("A", "ok")),
        ("[[B]]", ("B", "ok")),
        ('{"winner": "B"', ("B", "ok")),  # the strict reader already takes a truncated object with a closed value
        ('{"winner": "tie', ("tie", "repaired")),  # truncated inside the value
        ("{'winner': 'B'}", ("B", "repaired")),
        ('{winner: "A", // sure\n}', ("A", "repaired")),  # unquoted key, comment, trailing comma
        ("{'winner': 'maybe'}", (None, "unparsed")),
        ("{'winner': 'A', 'verdict': 'B'}", (None, "unparsed")),  # two verdicts: ambiguous
        ("I like both.", (None, "unparsed")),
    ],
)
def test_verdicts(text, expected):
    assert parse_verdict_with_status(text) == expected


def test_repaired_replies_are_counted_in_the_ledger_and_rows():
    def replies(messages, i, sampling):
        text = messages[-1]["content"]
        if "fluency" in text.lower() and "winner" not in text.lower():
            return "{'helpfulness': 4, 'relevance': 4, 'accuracy': 4, 'fluency': 4, 'naturalness': 4"
        return "{'winner': 'A'}" if "first" in text else '{"winner": "A"}'

    judge = FakeGenerator(replies)
    config = JudgeConfig(order="random", structured_output=False)
    out = judge_pairwise(
        ["first question", "second question"],
        ["Antwort 1", "Antwort 2"],
        ["Ref 1", "Ref 2"],
        ["de", "de"],
        judge=judge,
        config=config,
    )
    assert [r["json_repaired"] for r in out.rows] == [True, False]
    assert all(r["parse_status"] == "ok" for r in out.rows)
    assert out.ledger["json_repaired"] == 1
    rubric = score_rubric(["first question"], ["Antwort"], ["de"], judge=judge, config=config)
    assert rubric.scores == [dict.fromkeys(("helpfulness", "relevance", "accuracy", "fluency", "naturalness"), 4)]
    assert rubric.rows[0]["json_repaired"] is True and rubric.ledger["json_repaired"] == 1
