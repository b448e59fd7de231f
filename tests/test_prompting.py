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
