"""XL-AlpacaEval / m-AlpacaEval / XL-Instruct builders on the real AlpacaEval prompts and project-written fixtures."""

import json
import textwrap

import pytest

import xl_suite
from xl_suite.builders import XlAlpacaEval
from xl_suite.cli import main
from xl_suite.sources import SourceError, alpaca_eval_exclusions, filter_english_specific, read_alpaca_eval


pytestmark = pytest.mark.data

EXPECTED_EXCLUDED_INDICES = [457, 475, 623, 624, 661, 709, 713, 723]


def _cli(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, *capsys.readouterr()


def test_797_rows_per_language_stable_ids(alpaca_eval_path):
    de = xl_suite.load_xl_suite("xl-alpacaeval-de", split="test", source=str(alpaca_eval_path))
    mt = xl_suite.load_xl_suite("xl-alpacaeval-mt", split="test", source=str(alpaca_eval_path))
    assert de.num_rows == mt.num_rows == 797
    assert de["id"] == mt["id"]
    assert len(set(de["id"])) == 797
    assert de["english_instruction"] == mt["english_instruction"]
    assert set(de["language"]) == {"de"} and set(mt["language"]) == {"mt"}
    assert all(r is None for r in de["reference"])
    assert set(de["dataset"]) == {"helpful_base", "koala", "oasst", "selfinstruct", "vicuna"}


def test_target_language_request_in_every_prompt(alpaca_eval_path):
    ds = xl_suite.load_xl_suite("xl-alpacaeval-hi", split="test", source=str(alpaca_eval_path))
    for row in ds:
        assert row["instruction"].startswith(row["english_instruction"])
        assert row["instruction"].endswith("\n\nPlease respond in Hindi.")
    assert len(set(ds["request_template"])) == 1


def test_exactly_the_8_documented_exclusions(alpaca_eval_path):
    records = read_alpaca_eval(str(alpaca_eval_path))
    assert len(records) == 805
    kept, excluded = filter_english_specific(records)
    assert len(kept) == 797
    assert sorted(rec["alpaca_eval_index"] for _, rec in excluded) == EXPECTED_EXCLUDED_INDICES
    for rule, rec in excluded:
        assert rule.reason and rule.category
        assert rec["instruction"].startswith(rule.instruction_prefix)
    assert len(alpaca_eval_exclusions()) == 8
    ds = xl_suite.load_xl_suite("xl-alpacaeval-fr", split="test", source=str(alpaca_eval_path))
    assert not set(ds["alpaca_eval_index"]) & set(EXPECTED_EXCLUDED_INDICES)


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_all_config_and_builder_used_directly(alpaca_eval_path, tmp_path):
    b = XlAlpacaEval(
        config_name="xl-alpacaeval-all", cache_dir=str(tmp_path), source=str(alpaca_eval_path), languages=("de", "ga")
    )
    b.download_and_prepare()
    ds = b.as_dataset(split="test")
    assert ds.num_rows == 2 * 797
    assert sorted(set(ds["language"])) == ["de", "ga"]
    full = xl_suite.load_xl_suite("xl-alpacaeval-all", split="test", source=str(alpaca_eval_path))
    assert full.num_rows == 11 * 797


def test_user_registered_language_config(alpaca_eval_path):
    from xl_suite.languages import LanguageSpec, register_language, unregister_language

    register_language(LanguageSpec(code="gsw", name="swiss german", native_name="Schwiizertüütsch", script="Latn"))
    try:
        ds = xl_suite.load_xl_suite("xl-alpacaeval-gsw", split="test", source=str(alpaca_eval_path))
    finally:
        unregister_language("gsw")
    assert ds.num_rows == 797 and ds[0]["instruction"].endswith("Please respond in Swiss German.")


def test_bad_sources(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        xl_suite.load_xl_suite("xl-alpacaeval-de", source=str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("[{not json")
    with pytest.raises(SourceError, match="not valid JSON"):
        xl_suite.load_xl_suite("xl-alpacaeval-de", source=str(bad))
    noinst = tmp_path / "noinst.json"
    noinst.write_text(json.dumps([{"prompt": "hi"}]))
    with pytest.raises(SourceError, match="'instruction'"):
        xl_suite.load_xl_suite("xl-alpacaeval-de", source=str(noinst))


def test_config_name_errors():
    with pytest.raises(ValueError) as e:
        xl_suite.load_xl_suite("xl-alpacaeval-xx")
    assert "Unknown language 'xx'" in str(e.value)
    with pytest.raises(ValueError) as e:
        xl_suite.load_xl_suite("alpaca-de")
    assert "does not exist" in str(e.value) and "xl-alpacaeval-de" in str(e.value)
    with pytest.raises(ValueError, match="only for xl-instruct"):
        xl_suite.load_xl_suite("xl-alpacaeval-bestof3-de")
    with pytest.raises(ValueError, match="Duplicate"):
        xl_suite.load_xl_suite("xl-alpacaeval-all", languages=("de", "de"))


def _write(path, text):
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_m_alpacaeval_from_release_layout(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    _write(
        folder / "german.json",
        """
        [{"instruction": "Was ist die Hauptstadt von Frankreich?", "dataset": "helpful_base"},
         {"instruction": "Schreibe ein kurzes Gedicht über den Regen.", "dataset": "vicuna"}]
    """,
    )
    _write(
        folder / "mt.jsonl",
        """
        {"id": "xlae-1", "instruction": "X'inhi l-kapitali ta' Franza?", "english_instruction": "What is the capital?"}
    """,
    )
    ds = xl_suite.load_xl_suite("m-alpacaeval-all", split="test", source=str(folder), languages=("de", "mt"))
    assert ds.num_rows == 3
    assert ds[0]["language"] == "de" and ds[0]["dataset"] == "helpful_base"
    assert ds[2]["id"] == "xlae-1" and ds[2]["english_instruction"] == "What is the capital?"
    with pytest.raises(SourceError, match="No file for language 'hi'"):
        xl_suite.load_xl_suite("m-alpacaeval-hi", source=str(folder))


def test_xl_instruct_column_mapping(tmp_path):
    folder = tmp_path / "xli"
    folder.mkdir()
    _write(
        folder / "mt.json",
        """
        [{"prompt": "Explain photosynthesis.", "output": "Il-fotosintesi hija ...", "score": 5},
         {"prompt": "Name three rivers.", "output": "Id-Danubju, ...", "score": 4}]
    """,
    )
    _write(
        folder / "mt_bestof3.json",
        """
        [{"question": "Q?", "target": "T", "candidates": ["a", "b", "c"]}]
    """,
    )
    ds = xl_suite.load_xl_suite("xl-instruct-mt", split="train", source=str(folder))
    assert ds["instruction"] == ["Explain photosynthesis.", "Name three rivers."]
    assert ds["response"][0] == "Il-fotosintesi hija ..."
    assert json.loads(ds[0]["metadata"]) == {"score": 5}
    assert ds[0]["variant"] == "default"
    b3 = xl_suite.load_xl_suite("xl-instruct-bestof3-mt", split="train", source=str(folder))
    assert b3[0]["response"] == "T" and json.loads(b3[0]["metadata"]) == {"candidates": ["a", "b", "c"]}
    _write(folder / "ga.json", '[{"foo": "x", "bar": "y"}]')
    with pytest.raises(SourceError) as e:
        xl_suite.load_xl_suite("xl-instruct-ga", split="train", source=str(folder))
    assert "['bar', 'foo']" in str(e.value) and "column_mapping" in str(e.value)
    ga = xl_suite.load_xl_suite(
        "xl-instruct-ga", split="train", source=str(folder), column_mapping={"instruction": "foo", "response": "bar"}
    )
    assert ga[0]["instruction"] == "x" and ga[0]["response"] == "y"


def test_changed_source_file_is_not_served_from_a_stale_cache(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    f = folder / "de.json"
    f.write_text(json.dumps([{"instruction": "a", "response": "b"}]), encoding="utf-8")
    assert xl_suite.load_xl_suite("xl-instruct-de", split="train", source=str(folder)).num_rows == 1
    f.write_text(
        json.dumps([{"instruction": "a", "response": "b"}, {"instruction": "c", "response": "d"}]), encoding="utf-8"
    )
    assert xl_suite.load_xl_suite("xl-instruct-de", split="train", source=str(folder))["instruction"] == ["a", "c"]


def test_empty_source_file_is_a_clear_error(tmp_path):
    (tmp_path / "mt.json").write_text("[]", encoding="utf-8")
    with pytest.raises(SourceError, match="holds no rows"):
        xl_suite.load_xl_suite("xl-instruct-mt", split="train", source=str(tmp_path))


def test_a_config_for_every_builtin_language():
    """``xl-alpacaeval-<code>`` exists for every built-in language except English (the prompts' own language)."""
    from xl_suite.languages import builtin_languages

    names = {c.name: c.language for c in XlAlpacaEval.BUILDER_CONFIGS}
    expected = {f"xl-alpacaeval-{s.config_code}": s.code for s in builtin_languages().values() if s.code != "en"}
    assert {n: c for n, c in names.items() if n != "xl-alpacaeval-all"} == expected
    assert len(expected) >= 150 and names["xl-alpacaeval-sw"] == "sw" and names["xl-alpacaeval-zh-hant"] == "zh-Hant"


@pytest.mark.slow  # builds 797 prompts x every built-in language (~160,000 rows, about 20 s of CPU)
def test_every_builtin_language_from_the_same_797_prompts(alpaca_eval_path, tmp_path):
    """All built-in target languages at once (one build): 797 rows each, the same ids, each language's request."""
    from xl_suite.languages import BENCHMARK_LANGUAGES, builtin_languages

    codes = tuple(c for c in builtin_languages() if c != "en")
    ds = xl_suite.load_xl_suite(
        "xl-alpacaeval-all", split="test", source=str(alpaca_eval_path), languages=codes, cache_dir=str(tmp_path)
    )
    assert ds.num_rows == 797 * len(codes)
    by_language: dict[str, list] = {}
    for lang, idx, instruction, english in zip(
        ds["language"], ds["alpaca_eval_index"], ds["instruction"], ds["english_instruction"], strict=True
    ):
        by_language.setdefault(lang, []).append(idx)
        spec = builtin_languages()[lang]
        assert instruction == f"{english}\n\n{spec.request}"
        if lang not in BENCHMARK_LANGUAGES:
            assert spec.request == f"Please respond in {spec.english_name}."
    assert set(by_language) == set(codes)
    first = by_language[codes[0]]
    assert len(first) == 797 and all(v == first for v in by_language.values())
    assert len(set(zip(ds["id"], ds["language"], strict=True))) == ds.num_rows  # one row per (prompt, language)
    assert builtin_languages()["sw"].request == "Please respond in Swahili."


def test_load_dataset_is_a_deprecated_alias_of_load_xl_suite(tmp_path):
    """The old name still loads the same rows for one release, with a FutureWarning naming the replacement."""
    (tmp_path / "de.json").write_text(json.dumps([{"instruction": "a", "response": "b"}]), encoding="utf-8")
    new = xl_suite.load_xl_suite("xl-instruct-de", split="train", source=str(tmp_path))
    with pytest.warns(FutureWarning, match=r"use xl_suite\.load_xl_suite\(config_name"):
        old = xl_suite.load_dataset("xl-instruct-de", split="train", source=str(tmp_path))
    assert old.to_list() == new.to_list() == [new[0]] and new[0]["instruction"] == "a"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name does not warn
        xl_suite.load_xl_suite("xl-instruct-de", split="train", source=str(tmp_path))


def test_a_redefined_user_language_is_not_served_from_the_cache_of_its_earlier_definition(tmp_path):
    """The definition of a language that is not built in enters the config id (issue 17)."""
    from xl_suite.languages import LanguageSpec, register_language, unregister_language

    source = tmp_path / "alpaca_eval.json"
    source.write_text(json.dumps([{"instruction": "Name a river."}]), encoding="utf-8")
    requests = []
    for request in ("Please respond in Swiss German.", "Bitte antworte auf Schwiizertüütsch."):
        register_language(
            LanguageSpec(
                code="gsw", name="swiss german", native_name="Schwiizertüütsch", script="Latn", request=request
            )
        )
        try:
            ds = xl_suite.load_xl_suite("xl-alpacaeval-gsw", split="test", source=str(source), cache_dir=str(tmp_path))
        finally:
            unregister_language("gsw")
        requests.append(ds[0]["instruction"].split("\n")[-1])
    assert requests == ["Please respond in Swiss German.", "Bitte antworte auf Schwiizertüütsch."]


def test_codes_users_have_load_the_builtin_language(tmp_path):
    source = tmp_path / "alpaca_eval.json"
    source.write_text(json.dumps([{"instruction": "Name a river."}]), encoding="utf-8")
    ds = xl_suite.load_xl_suite("xl-alpacaeval-nb", split="test", source=str(source), cache_dir=str(tmp_path))
    assert ds[0]["language"] == "no" and ds[0]["instruction"].endswith("\nPlease respond in Norwegian.")


ALPACA = [
    {"instruction": f"Explain topic number {k} briefly.", "output": f"Topic {k}.", "generator": "x"} for k in range(3)
]


def test_generate_load_and_export_serve_the_corrected_request(tmp_path, capsys, monkeypatch):
    langs = tmp_path / "languages.json"
    monkeypatch.setenv("XL_SUITE_LANGUAGES_FILE", str(langs))
    source = tmp_path / "alpaca.json"
    source.write_text(json.dumps(ALPACA), encoding="utf-8")
    add = [
        "languages",
        "add",
        "gsw",
        "--name",
        "swiss german",
        "--native-name",
        "Schwiizertüütsch",
        "--script",
        "Latn",
    ]
    gen = ["generate", "--backend", "fake", "--model", "m", "--config", "xl-alpacaeval-gsw", "--source", source]
    assert _cli([*add, "--request", "Antworte auf Schweizerdeutsch (alt)."], capsys)[0] == 0
    assert _cli([*gen, "--output", tmp_path / "o"], capsys)[0] == 0
    assert _cli(["export", tmp_path / "x", "--languages", "gsw", "--alpaca-eval", source], capsys)[0] == 0
    assert _cli([*add, "--request", "Antworte auf Schweizerdeutsch (neu).", "--overwrite"], capsys)[0] == 0
    rc, out, err = _cli([*gen, "--output", tmp_path / "o"], capsys)
    assert rc == 0, err
    rows = [json.loads(x) for x in (tmp_path / "o" / "xl-alpacaeval-gsw.jsonl").read_text().splitlines()]
    assert all(r["instruction"].endswith("(neu).") for r in rows) and "3 computed now" in out
    from xl_suite.datasets_api import load_xl_suite

    ds = load_xl_suite("xl-alpacaeval-gsw", split="test", source=str(source))
    assert all(x.endswith("(neu).") for x in ds["instruction"])
    rc, _, err = _cli(["export", tmp_path / "x", "--languages", "gsw", "--alpaca-eval", source, "--overwrite"], capsys)
    assert rc == 0, err
    import datasets

    exported = datasets.load_dataset(str(tmp_path / "x"), "xl-alpacaeval-gsw", split="test")
    assert all(x.endswith("(neu).") for x in exported["instruction"])


def test_a_read_only_datasets_cache_is_one_clear_error(tmp_path, monkeypatch, capsys):
    """A read-only HF_HOME (or HF_DATASETS_CACHE): generate and export name the folder and the fix, no traceback."""
    import errno
    import json
    import os

    from xl_suite.cli import main

    read_only = tmp_path / "ro"
    real_makedirs = os.makedirs

    def makedirs(path, *args, **kwargs):  # root writes anywhere: the file system's answer, as a user would get it
        if str(path).startswith(str(read_only)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", makedirs)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(read_only / "datasets"))
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", str(read_only / "datasets"))
    source = tmp_path / "a.json"
    source.write_text(json.dumps([{"instruction": "Explain topic 1.", "output": "x"}]), encoding="utf-8")
    gen = ["generate", "--backend", "fake", "--model", "m", "--config", "xl-alpacaeval-de", "--source", str(source)]
    for argv in ([*gen, "--output", str(tmp_path / "o")], ["export", str(tmp_path / "x"), "--languages", "de",
                                                          "--alpaca-eval", str(source)]):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Cannot write the datasets cache" in err and "Read-only file system" in err
        assert "HF_DATASETS_CACHE" in err


# -- wrong-language sources (issue 20) ---------------------------------------------------------------------------

_ENGLISH = [f"Please explain in detail how topic number {k} works and why it matters to people." for k in range(8)]


def test_an_english_file_is_not_accepted_as_a_target_language_source(tmp_path, capsys):
    """Old code: an English AlpacaEval file passed as the source of m-alpacaeval-de (generate, load, push)."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "de.jsonl").write_text(
        "".join(json.dumps({"id": str(k), "instruction": t}) + "\n" for k, t in enumerate(_ENGLISH))
    )
    with pytest.raises(SourceError, match=r"m-alpacaeval-de: 8 of 8 instructions .* are in 'en', not German"):
        xl_suite.load_xl_suite("m-alpacaeval-de", split="test", source=str(folder))
    assert (
        xl_suite.load_xl_suite("m-alpacaeval-de", split="test", source=str(folder), check_language=False).num_rows == 8
    )
    argv = ["generate", "--backend", "fake", "--model", "m", "--config", "m-alpacaeval-de", "--source", str(folder)]
    assert main([*argv, "--output", str(tmp_path / "ans")]) == 2
    assert "are in 'en', not German" in capsys.readouterr().err
    release = tmp_path / "x"
    release.mkdir()
    pairs = [
        {"instruction": t, "response": f"This English answer to question {k} is long enough."}
        for k, t in enumerate(_ENGLISH)
    ]
    (release / "de.json").write_text(json.dumps(pairs))
    with pytest.raises(SourceError, match=r"xl-instruct-de: 8 of 8 responses .* are in 'en', not German"):
        xl_suite.load_xl_suite("xl-instruct-de", split="train", source=str(release))


def test_german_sources_and_text_in_no_language_pass(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    german = [
        f"Bitte erkläre ausführlich, wie das Thema Nummer {k} funktioniert und warum es wichtig ist." for k in range(8)
    ]
    (folder / "de.jsonl").write_text(
        "".join(json.dumps({"id": str(k), "instruction": t}) + "\n" for k, t in enumerate(german))
    )
    assert xl_suite.load_xl_suite("m-alpacaeval-de", split="test", source=str(folder)).num_rows == 8
    noise = tmp_path / "n"
    noise.mkdir()  # a stand-in model's text is in no language: not an error
    (noise / "de.json").write_text(json.dumps([{"instruction": t, "response": "zq xv kkp tt"} for t in _ENGLISH]))
    assert xl_suite.load_xl_suite("xl-instruct-de", split="train", source=str(noise)).num_rows == 8
