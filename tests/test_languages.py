import json

import pytest

from xl_suite import languages as L


PAPER = {"de", "pt", "hu", "lt", "ga", "mt", "zh", "hi", "fr", "fi", "tr", "en"}


def test_builtin_registry_covers_paper_languages():
    codes = [s.code for s in L.list_languages()]
    assert set(codes) >= PAPER
    assert len(codes) == len(set(codes))
    assert L.get_language("ga").name == "irish"
    assert L.get_language("maltese").native_name == "Malti"
    assert L.get_language("zh").script == "Hans"
    assert L.get_language("hi").request == "Please respond in Hindi."


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


def test_language_table_is_regenerable():
    """xl_suite/data/languages.json is what tools/build_language_table.py makes from the installed CLDR data."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("heliport", reason="the table lists heliport's labels: pip install 'xl-suite[langid-wide]'")
    script = Path(__file__).resolve().parents[1] / "tools" / "build_language_table.py"
    r = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
