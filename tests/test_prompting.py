import re
from pathlib import Path

import pytest

from xl_suite.languages import get_language
from xl_suite.prompting import TemplateError, list_templates, load_template, split_messages


GOLDEN = Path(__file__).parent / "data" / "golden"


def test_shipped_templates_listed_and_versioned():
    names = list_templates()
    assert "xl_alpacaeval_instruction" in names
    tpl = load_template("xl_alpacaeval_instruction")
    assert tpl.version == "1" and len(tpl.sha) == 12
    assert tpl.template_version.startswith("xl_alpacaeval_instruction@1+")


def test_request_template_golden():
    text = load_template("xl_alpacaeval_instruction").render_text(
        instruction="Write a haiku about rain.", language=get_language("mt")
    )
    assert text == (GOLDEN / "xl_alpacaeval_instruction_mt.txt").read_text(encoding="utf-8")


def test_undefined_variable_names_it():
    with pytest.raises(TemplateError, match="language"):
        load_template("xl_alpacaeval_instruction").render_text(instruction="x")


def test_user_template_path(tmp_path):
    p = tmp_path / "mine.jinja"
    p.write_text("{# version: 7 #}\n### system\nYou answer in {{ lang }}.\n### user\n{{ q }}\n")
    tpl = load_template(str(p))
    assert tpl.version == "7"
    assert tpl.render(lang="Irish", q="Hi?") == [
        {"role": "system", "content": "You answer in Irish."},
        {"role": "user", "content": "Hi?"},
    ]


def test_missing_template_is_an_error_not_the_prompt(tmp_path):
    with pytest.raises(TemplateError, match="does not exist"):
        load_template(str(tmp_path / "typo.jinja"))
    with pytest.raises(TemplateError, match="Unknown template"):
        load_template("no_such_template")


def test_split_messages_rejects_bad_shapes():
    with pytest.raises(TemplateError, match="before its first"):
        split_messages("hello\n### user\nhi")
    with pytest.raises(TemplateError, match="assistant"):
        split_messages("### user\nhi\n### assistant\nyo")
    with pytest.raises(TemplateError, match="empty"):
        split_messages("   ")


#: Every variable a shipped template takes (a superset: Jinja ignores the ones a template does not use).
_ALL_VARIABLES = dict(
    instruction="Q?",
    output="A.",
    output_a="A.",
    output_b="B.",
    text="Q?",
    passage="P.",
    reference="R.",
    response="C.",
    dimensions=[{"name": "fluency", "description": "reads well"}],
    criteria=[{"name": "fluency", "description": "reads well"}],
    scale_min=1,
    scale_max=5,
)


#: The shipped templates that name the target language (the benchmark prompt itself keeps the paper's request
#: sentence, ``LanguageSpec.request``).
_NAMING_TEMPLATES = ("judge_pairwise", "judge_rubric", "synth_judge", "synth_respond", "translate_instruction")


def test_every_template_that_names_the_language_is_checked():
    names = {
        name
        for name in list_templates()
        if "language." in re.sub(r"\{#.*?#\}", "", load_template(name).source, flags=re.S)
    }
    assert names == {*_NAMING_TEMPLATES, "xl_alpacaeval_instruction"}


@pytest.mark.parametrize("name", _NAMING_TEMPLATES)
def test_templates_name_the_language_in_english_and_its_own_name(name):
    """Judge, translation and synthesis prompts say "Swahili (Kiswahili)"."""
    tpl = load_template(name)
    swahili = tpl.render_text(language=get_language("sw"), **_ALL_VARIABLES)
    assert "Swahili (Kiswahili)" in swahili
    assert tpl.version == "2"  # bumped when the autonym was added, so caches keyed on it are not reused
    esperanto = tpl.render_text(language=get_language("eo"), **_ALL_VARIABLES)
    assert "Esperanto" in esperanto and "Esperanto (" not in esperanto  # no "Esperanto (Esperanto)"
