import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from xl_suite import languages as L


PAPER = {"de", "pt", "hu", "lt", "ga", "mt", "zh", "hi", "fr", "fi", "tr", "en"}


REPO = Path(__file__).resolve().parents[2]


def _spec(native="Schwiizertüütsch", request="Bitte antworte auf Schweizerdeutsch.", code="gsw", name="swiss german"):
    return L.LanguageSpec(code=code, name=name, native_name=native, script="Latn", request=request, langid_code="de")


def test_builtin_registry_covers_paper_languages():
    codes = [s.code for s in L.list_languages()]
    assert set(codes) >= PAPER
    assert len(codes) == len(set(codes))
    assert L.get_language("ga").name == "irish"
    assert L.get_language("maltese").native_name == "Malti"
    assert L.get_language("zh").script == "Hans"
    assert L.get_language("hi").request == "Please respond in Hindi."


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_builtin_registry_covers_every_py3langid_label():
    from py3langid import langid

    model = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE)
    covered = {s.langid.get("py3langid") for s in L.builtin_languages().values()}
    assert set(model.nb_classes) - {"zxx"} <= covered
    assert len(L.builtin_languages()) >= 90


def test_builtin_names_come_from_cldr():
    import langcodes

    for code in ("sw", "yo", "nn", "pt-BR", "zh-Hant", "sr-Latn"):
        spec = L.get_language(code)
        assert spec.english_name == langcodes.Language.get(code).display_name()
        assert spec.native_name == langcodes.Language.get(code).autonym()
    assert L.get_language("nn").name == "norwegian_nynorsk"
    assert L.get_language("pt-br").code == "pt-BR" and L.get_language("pt-BR").config_code == "pt-br"
    assert L.get_language("zh-hant").script == "Hant"
    assert L.get_language("sr_Latn").request == "Please respond in Serbian (Latin)."


def test_config_names_are_valid_and_unique():
    import re

    codes = [s.config_code for s in L.builtin_languages().values()]
    assert len(codes) == len(set(codes))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", c) for c in codes)
    names = [s.name for s in L.builtin_languages().values()]
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", n) for n in names), names


def test_unknown_language_suggests_and_says_how_to_add():
    with pytest.raises(ValueError) as e:
        L.get_language("swahilli")
    msg = str(e.value)
    assert "Did you mean 'sw'" in msg and "xl-suite languages add" in msg and "register_language" in msg


def test_duplicates_and_english_rejected():
    with pytest.raises(ValueError, match="Duplicate language codes"):
        L.resolve_languages(["de", "mt", "de"])
    with pytest.raises(ValueError, match="query language"):
        L.resolve_languages("de,en")
    with pytest.raises(ValueError, match="No languages"):
        L.resolve_languages("")


def test_registry_table_validated_for_duplicates():
    with pytest.raises(ValueError, match="Duplicate language codes"):
        L._check_unique([L.get_language("de"), L.get_language("de")])


def test_register_language_in_python():
    spec = L.LanguageSpec(code="qaa", name="Placeholder", native_name="Plc", script="Latn")
    L.register_language(spec)
    try:
        assert L.get_language("qaa").name == "placeholder"
        assert L.get_language("placeholder").request == "Please respond in Placeholder."
        with pytest.raises(ValueError, match="already exists"):
            L.register_language(spec)
    finally:
        L.unregister_language("qaa")
    with pytest.raises(ValueError):
        L.get_language("qaa")


def test_name_code_mismatch_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XL_SUITE_LANGUAGES_FILE", str(tmp_path / "langs.json"))
    bad = L.LanguageSpec(code="gsw", name="bavarian", native_name="Schwiizertüütsch", script="Latn")
    with pytest.raises(ValueError, match=r"'gsw' is Swiss German in CLDR, but its name 'bavarian' is Bavarian"):
        L.save_user_language(bad)
    with pytest.raises(ValueError, match="allow-name-mismatch"):
        L.register_language(bad)
    assert not (tmp_path / "langs.json").exists()
    L.save_user_language(bad, allow_name_mismatch=True)  # the explicit override
    assert L.get_language("gsw").display_name == "Bavarian"


def test_save_user_language_persists(tmp_path, monkeypatch):
    f = tmp_path / "langs.json"
    monkeypatch.setenv("XL_SUITE_LANGUAGES_FILE", str(f))
    L.save_user_language(
        L.LanguageSpec(
            code="gsw",
            name="swiss german",
            native_name="Schwiizertüütsch",
            script="Latn",
            request="Bitte uf Schwiizertüütsch antworte.",
        )
    )
    assert json.loads(f.read_text())[0]["code"] == "gsw"
    assert L.get_language("gsw").request == "Bitte uf Schwiizertüütsch antworte."
    assert L.get_language("swiss_german").code == "gsw"
    with pytest.raises(ValueError, match="already exists"):
        L.save_user_language(L.LanguageSpec(code="gsw", name="swiss german", native_name="K", script="Latn"))
    with pytest.raises(ValueError, match="built in"):
        L.save_user_language(L.LanguageSpec(code="de", name="german", native_name="D", script="Latn"), overwrite=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(code="s w", name="swahili", native_name="K", script="Latn"), "Invalid language code"),
        (dict(code="xx", name="swahili", native_name="K", script="Latn"), "not an ISO 639 language"),
        (dict(code="zh-Abcd", name="chinese", native_name="K", script="Hans"), "not an ISO 15924 script"),
        (dict(code="sw", name="", native_name="K", script="Latn"), "English name"),
        (dict(code="sw", name="swahili", native_name="", script="Latn"), "native name"),
        (dict(code="sw", name="swahili", native_name="K", script="latin"), "ISO 15924"),
        (dict(code="sw", name="swahili", native_name="K", script="Abcd"), "not an ISO 15924 script"),
    ],
)
def test_language_spec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.LanguageSpec(**kwargs)


def test_code_casing_is_normalised():
    assert L.LanguageSpec(code="SW", name="swahili", native_name="K", script="Latn").code == "sw"


def test_corrupt_user_file_errors_at_point_of_use_naming_the_file(tmp_path, monkeypatch):
    import importlib
    import sys

    f = tmp_path / "langs.json"
    f.write_text("{not json")
    monkeypatch.setenv("XL_SUITE_LANGUAGES_FILE", str(f))
    monkeypatch.delitem(sys.modules, "xl_suite.builders", raising=False)
    importlib.import_module("xl_suite.builders")  # never at import
    assert L.get_language("de").code == "de"  # built-ins do not need the user file
    with pytest.raises(ValueError, match=f"not valid JSON.*{f}"):
        L.get_language("qaa")
    f.write_text(json.dumps([{"code": "xx", "name": "x", "native_name": "x", "script": "Latn"}]))
    with pytest.raises(ValueError, match=f"Bad language entry in {f}.*'xx'"):
        L.list_languages()


def test_cli_add_rejects_swahili_named_german(tmp_path, monkeypatch):
    from xl_suite.languages import LanguageSpec, check_name_matches_code

    with pytest.raises(ValueError, match="'sw' is Swahili in CLDR, but its name 'german' is German"):
        check_name_matches_code(LanguageSpec(code="sw", name="german", native_name="Kiswahili", script="Latn"))


def test_builtin_table_passes_the_full_cldr_checks():
    """The built-in table skips the CLDR look-ups when it loads (speed); every row must pass them."""
    for spec in L.builtin_languages().values():
        L.LanguageSpec(code=spec.code, name=spec.name, native_name=spec.native_name, script=spec.script)


@pytest.mark.slow  # runs tools/build_language_table.py in a subprocess
def test_language_table_is_regenerable():
    """xl_suite/data/languages.json is what tools/build_language_table.py makes from the installed CLDR data."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("heliport", reason="the table lists heliport's labels: pip install 'xl-suite[langid-wide]'")
    script = Path(__file__).resolve().parents[2] / "tools" / "build_language_table.py"
    r = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- every code a user has (issue 17, item 6) -----------------------------------------------------------------------

ALIASES = {
    "nb": "no",
    "nob": "no",
    "NB": "no",
    "nn": "nn",
    "nno": "nn",
    "fil": "tl",
    "tl": "tl",
    "tgl": "tl",
    "he": "he",
    "iw": "he",
    "heb": "he",
    "zh-CN": "zh",
    "zh-Hans": "zh",
    "zh_cn": "zh",
    "cmn": "zh",
    "zho": "zh",
    "zh-TW": "zh-Hant",
    "zh-HK": "zh-Hant",
    "zh-Hant-TW": "zh-Hant",
    "pt-PT": "pt",
    "pt-BR": "pt-BR",
    "por": "pt",
    "deu": "de",
    "ger": "de",
    "de-AT": "de",
    "en-US": "en",
    "es-419": "es",
    "in": "id",
    "ji": "yi",
    "sh": "sr-Latn",
    "sr-Cyrl": "sr",
    "sr-ME": "sr-Latn",
    "prs": "fa",
    "arb": "ar",
}


@pytest.mark.parametrize(("code", "builtin"), sorted(ALIASES.items()))
def test_codes_users_have_resolve_to_the_builtin_language(code, builtin):
    assert L.get_language(code).code == builtin
    assert L.resolve_languages([code], allow_english=True)[0].code == builtin


@pytest.mark.parametrize("code", ["hi-Latn", "nan", "gsw", "xx", "zh-Cyrl"])
def test_codes_cldr_does_not_map_to_a_builtin_stay_unknown(code):
    assert L.resolve_alias(code) is None
    with pytest.raises(L.LanguageError, match="Unknown language"):
        L.get_language(code)


def test_an_alias_and_its_language_are_one_language():
    with pytest.raises(L.LanguageError, match="Duplicate language codes"):
        L.resolve_languages("no,nb")


def test_nb_scores_norwegian_text():
    from xl_suite.fidelity import language_fidelity

    texts = [
        "Været er veldig fint i dag, så vi går en lang tur i skogen.",
        "Kan du hjelpe meg med å skrive et brev til kommunen om parkeringen?",
        "The weather is very nice today, so we are going for a long walk.",
    ]
    out = language_fidelity(texts, "nb")
    assert out["detected_language"][:2] == ["no", "no"] and out["is_target"] == [True, True, False]
    assert out["per_language"]["no"]["status"] == "ok" and round(out["language_fidelity"], 1) == 66.7


def test_aliases_are_listed_by_the_languages_command():
    from xl_suite.commands.languages import language_rows

    rows = {r["code"]: r["aliases"] for r in language_rows()}
    assert rows["no"] == ["nb", "nob", "nor"] and {"iw", "heb"} <= set(rows["he"]) and "fil" in rows["tl"]
    assert {"zh-TW", "zh-HK"} <= set(rows["zh-Hant"]) and "zh-CN" in rows["zh"] and "pt-PT" in rows["pt"]
    for code, aliases in rows.items():  # every listed alias resolves back to its language
        assert all(L.get_language(a).code == code for a in aliases), code


def test_an_alias_of_a_builtin_cannot_be_registered_silently(tmp_path):
    spec = L.LanguageSpec(code="nb", name="norwegian bokmal", native_name="norsk bokmål", script="Latn")
    with pytest.raises(L.LanguageError, match="already resolves to the built-in 'no'"):
        L.register_language(spec)
    with pytest.raises(L.LanguageError, match="already resolves to the built-in 'no'"):
        L.save_user_language(spec, path=tmp_path / "l.json")
    L.register_language(spec, overwrite=True)  # made a language of its own, explicitly
    try:
        assert L.get_language("nb").code == "nb"
    finally:
        L.unregister_language("nb")
    assert L.get_language("nb").code == "no"


# ---- user languages come from an explicit argument or the documented variable (issue 17, item 4) ------------------


def test_no_languages_file_is_read_unless_named(tmp_path, monkeypatch):
    home = tmp_path / "home"
    legacy = home / ".config" / "xl-suite" / "languages.json"
    legacy.parent.mkdir(parents=True)
    gsw = {"code": "gsw", "name": "swiss german", "native_name": "Schwiizertüütsch", "script": "Latn"}
    legacy.write_text(json.dumps([gsw]), encoding="utf-8")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("XL_SUITE_LANGUAGES_FILE")
    assert L.user_languages_file() is None
    with pytest.raises(L.LanguageError, match=r"no longer read by default: set XL_SUITE_LANGUAGES_FILE="):
        L.get_language("gsw")  # the old default file is named, not read
    with pytest.raises(L.LanguageError, match=r"pass path= \(CLI: --file PATH\) or set XL_SUITE_LANGUAGES_FILE"):
        L.save_user_language(L.LanguageSpec(**{**gsw, "code": "bar", "name": "bavarian", "native_name": "Boarisch"}))
    monkeypatch.setenv("XL_SUITE_LANGUAGES_FILE", str(legacy))  # the documented variable
    assert L.get_language("gsw").native_name == "Schwiizertüütsch"


def test_load_user_languages_registers_a_named_file(tmp_path):
    path = tmp_path / "mine.json"
    spec = L.LanguageSpec(code="gsw", name="swiss german", native_name="Schwiizertüütsch", script="Latn")
    assert L.save_user_language(spec, path=path) == path
    with pytest.raises(L.LanguageError, match="Unknown language 'gsw'"):
        L.get_language("gsw")  # saved, but this process did not name the file
    assert [s.code for s in L.load_user_languages(path)] == ["gsw"]
    try:
        assert L.get_language("gsw") == spec
    finally:
        L.unregister_language("gsw")


CODES = [("qaa", "alpha"), ("qab", "bravo"), ("qac", "charlie"), ("qad", "delta"), ("qae", "echo"), ("qaf", "foxtrot")]


@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_concurrent_saves_keep_every_language(tmp_path, monkeypatch):
    """Six saves at once, each one slowed between reading the file and writing it back: all six are kept."""
    path = tmp_path / "languages.json"
    read = L._read_languages_file

    def slow_read(p):
        out = read(p)
        time.sleep(0.2)  # the window in which another save used to read the same file
        return out

    monkeypatch.setattr(L, "_read_languages_file", slow_read)
    errors = []

    def save(code, name):
        try:
            L.save_user_language(_spec(native=name.title(), code=code, name=name), path=path)
        except Exception as e:  # noqa: BLE001 - collected and shown below
            errors.append(e)

    threads = [threading.Thread(target=save, args=c) for c in CODES]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(e["code"] for e in json.loads(path.read_text(encoding="utf-8"))) == [c for c, _ in CODES]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name], "no temporary file left behind"


@pytest.mark.slow
def test_six_concurrent_languages_add_commands_keep_all_six(tmp_path):
    path = tmp_path / "languages.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "xl_suite.cli", "languages", "add", code, "--name", name, "--native-name",
             name.title(), "--script", "Latn", "--file", str(path)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for code, name in CODES
    ]  # fmt: skip
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
    assert sorted(e["code"] for e in json.loads(path.read_text(encoding="utf-8"))) == [c for c, _ in CODES]
