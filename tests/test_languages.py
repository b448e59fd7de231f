import json

import pytest

from xl_suite import languages as L


def test_builtin_registry_covers_paper_languages():
    codes = [s.code for s in L.list_languages()]
    assert codes[:1] == ["en"]
    assert set(codes) >= {"de", "pt", "hu", "lt", "ga", "mt", "zh", "hi", "fr", "fi", "tr", "en"}
    assert len(codes) == len(set(codes))
    assert L.get_language("ga").name == "irish"
    assert L.get_language("maltese").native_name == "Malti"
    assert L.get_language("zh").script == "Hans"
    assert L.get_language("hi").request == "Please respond in Hindi."


def test_unknown_language_lists_known_and_how_to_add():
    with pytest.raises(ValueError) as e:
        L.get_language("sw")
    msg = str(e.value)
    assert "'sw'" in msg and "'mt'" in msg and "xl-suite languages add" in msg and "register_language" in msg


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
    spec = L.LanguageSpec(code="sw", name="Swahili", native_name="Kiswahili", script="Latn")
    L.register_language(spec)
    try:
        assert L.get_language("sw").name == "swahili"
        assert L.get_language("swahili").request == "Please respond in Swahili."
        with pytest.raises(ValueError, match="already exists"):
            L.register_language(spec)
    finally:
        L.unregister_language("sw")
    with pytest.raises(ValueError):
        L.get_language("sw")


def test_save_user_language_persists(tmp_path, monkeypatch):
    f = tmp_path / "langs.json"
    monkeypatch.setenv("XL_SUITE_LANGUAGES_FILE", str(f))
    L.save_user_language(L.LanguageSpec(code="sw", name="swahili", native_name="Kiswahili", script="Latn",
                                        request="Tafadhali jibu kwa Kiswahili."))
    assert json.loads(f.read_text())[0]["code"] == "sw"
    assert L.get_language("sw").request == "Tafadhali jibu kwa Kiswahili."
    with pytest.raises(ValueError, match="already exists"):
        L.save_user_language(L.LanguageSpec(code="sw", name="swahili", native_name="K", script="Latn"))
    with pytest.raises(ValueError, match="built in"):
        L.save_user_language(L.LanguageSpec(code="de", name="german", native_name="D", script="Latn"), overwrite=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(code="SW", name="swahili", native_name="K", script="Latn"), "Invalid language code"),
        (dict(code="sw", name="", native_name="K", script="Latn"), "English name"),
        (dict(code="sw", name="swahili", native_name="", script="Latn"), "native name"),
        (dict(code="sw", name="swahili", native_name="K", script="latin"), "ISO 15924"),
    ],
)
def test_language_spec_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.LanguageSpec(**kwargs)


def test_corrupt_user_file_is_a_clear_error(tmp_path, monkeypatch):
    f = tmp_path / "langs.json"
    f.write_text("{not json")
    monkeypatch.setenv("XL_SUITE_LANGUAGES_FILE", str(f))
    with pytest.raises(ValueError, match="not valid JSON"):
        L.get_language("de")
