"""The committed accuracy table (xl_suite/data/langid_accuracy.json) against a fresh measurement on real text.

The corpus is the human translation catalogs of the ``django`` and ``plone.app.locales`` wheels (installed by the
``tests`` extra); see benchmarks/langid_accuracy.py. A sample of languages is re-measured here and must reproduce the table exactly.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from xl_suite.fidelity import accuracy_table_meta, is_heliport_available, language_fidelity, measured_accuracy


pytest.importorskip("py3langid", reason="language fidelity needs py3langid (pip install 'xl-suite[eval]')")
pytest.importorskip("django", reason="the real-text corpus is Django's translation catalogs (tests extra)")
pytest.importorskip("plone.app.locales", reason="the real-text corpus includes Plone's catalogs (tests extra)")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "langid_accuracy.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("langid_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(bench):
    return bench.load_corpus()


def _sample(messages: list[str], limit: int) -> list[str]:
    shuffled = list(messages)
    random.Random(0).shuffle(shuffled)
    return shuffled[:limit]


def test_corpus_is_the_one_the_table_was_built_from(corpus):
    import importlib.metadata as md

    import django

    corpus_meta = accuracy_table_meta()["corpus"]
    assert corpus_meta.startswith(f"Django {django.__version__} ")
    assert f"plone.app.locales {md.version('plone.app.locales')} " in corpus_meta
    assert len(corpus) >= 85


@pytest.mark.parametrize("code", ["zh", "zh-Hant", "de", "mt", "sr-Latn", "nn", "ga", "hi"])
def test_table_reproduces_on_a_sample_of_languages(bench, corpus, code):
    row = measured_accuracy(code)
    if code not in corpus:
        assert row is None, f"{code} has no corpus text but a measured row"
        return
    limit = accuracy_table_meta()["max_messages"]
    texts = _sample(corpus[code], limit)
    assert row["n"] == len(texts)
    result = bench.score_language(code, texts, "py3langid")
    assert {k: result[k] for k in ("n", "fidelity", "strict", "confusions")} == {
        k: row["identifiers"]["py3langid"][k] for k in ("n", "fidelity", "strict", "confusions")
    }


def test_mandarin_fidelity_on_real_text(corpus):
    """The issue's case: real Mandarin scored as zh without a judge, family-aware >= 0.90 (strict may be lower)."""
    texts = _sample(corpus["zh"], 300)
    result = language_fidelity(texts, "zh", min_chars=0, min_line_chars=0)
    assert result["language_fidelity"] >= 90.0
    assert result["language_fidelity_strict"] <= result["language_fidelity"]
    as_japanese = language_fidelity(texts, "ja", min_chars=0, min_line_chars=0)
    assert as_japanese["language_fidelity"] <= 10.0  # an unrelated language does not pass


@pytest.mark.skipif(
    not is_heliport_available(), reason="heliport measures Interlingua: pip install 'xl-suite[langid-wide]'"
)
def test_heliport_row_reproduces(bench, corpus):
    limit = accuracy_table_meta()["max_messages"]
    texts = _sample(corpus["ia"], limit)
    result = bench.score_language("ia", texts, "heliport")
    assert result["fidelity"] == measured_accuracy("ia")["identifiers"]["heliport"]["fidelity"]


def test_table_meets_the_goal_or_lists_the_exceptions():
    """>= 90% of the measured languages pass; the ones that do not are exactly those the CLI flags."""
    from xl_suite.commands.languages import language_rows

    rows = [r for r in language_rows() if r["fidelity"] is not None]
    good = [r for r in rows if r["fidelity"] >= 0.90 and r["max_unrelated"] <= 0.10]
    assert len(good) >= 0.9 * len(rows)
    assert {r["code"] for r in rows if r["status"] != "ok"} == {r["code"] for r in rows if r not in good}


def test_metric_card_embeds_the_current_table():
    from xl_suite.fidelity import accuracy_table_markdown

    card = (Path(__file__).resolve().parents[1] / "evaluate_metrics" / "xl_alpacaeval" / "README.md").read_text(
        encoding="utf-8"
    )
    start, end = "<!-- langid-accuracy:start -->\n", "<!-- langid-accuracy:end -->"
    assert card.split(start, 1)[1].split(end, 1)[0] == accuracy_table_markdown()
