"""Jinja2 prompt templates shipped as package data, rendered into chat messages.

A template file renders to plain text in which each chat turn is introduced by a marker line of the form
``### system``, ``### user`` or ``### assistant`` (alone on a line). Without markers, the whole text is one
user message. The chat template itself is applied later by the tokenizer/vLLM, never here.

Templates are rendered with ``StrictUndefined``: a missing variable raises an error that names it.
A user can pass a path to their own ``.jinja`` file wherever a template name is accepted.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jinja2

from xl_suite.errors import TemplateError


__all__ = [
    "PromptTemplate",
    "load_template",
    "list_templates",
    "render_messages",
    "neutralise_markers",
    "TemplateError",
]

_ROLE_RE = re.compile(r"^### (system|user|assistant)\s*$", re.MULTILINE)
_ROLE_LINE = re.compile(r"^(### (?:system|user|assistant)\s*)$", re.MULTILINE)
_VERSION_RE = re.compile(r"\{#-?\s*version:\s*([\w.\-]+)\s*-?#\}")


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded template.

    Attributes:
        name: template name (file stem) or the user's path.
        source: the template text.
        version: ``{# version: N #}`` declared in the file (``"0"`` when absent).
        sha: first 12 hex digits of the SHA-256 of the source; changes with any edit.
    """

    name: str
    source: str
    version: str
    sha: str

    @property
    def template_version(self) -> str:
        """``name@version+sha``: recorded on every generated row."""
        return f"{self.name}@{self.version}+{self.sha}"

    def render_text(self, **variables) -> str:
        """Render to text with ``StrictUndefined``."""
        try:
            return _compile(self.source).render(**variables)
        except jinja2.UndefinedError as e:
            raise TemplateError(
                f"Template {self.name!r} uses an undefined variable ({e.message}). "
                f"Variables passed: {sorted(variables)}. Pass the missing variable or fix the template."
            ) from e

    def render(self, **variables) -> list[dict[str, str]]:
        """Render to chat messages (``[{"role": ..., "content": ...}]``)."""
        return split_messages(self.render_text(**variables), name=self.name)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"Template syntax error at line {e.lineno}: {e.message}") from e


def split_messages(text: str, *, name: str = "<template>") -> list[dict[str, str]]:
    """Split rendered text into chat messages at ``### role`` marker lines.

    >>> split_messages("### system\\nBe brief.\\n### user\\nHi\\n")
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}]
    >>> split_messages("Just a question?")
    [{'role': 'user', 'content': 'Just a question?'}]
    """
    parts = _ROLE_RE.split(text)
    head = parts[0].strip()
    if len(parts) == 1:
        if not head:
            raise TemplateError(f"Template {name!r} rendered to an empty prompt.")
        return [{"role": "user", "content": head}]
    if head:
        raise TemplateError(f"Template {name!r} has text before its first '### role' marker: {head[:60]!r}")
    messages = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        content = content.strip()
        if not content:
            raise TemplateError(f"Template {name!r} rendered an empty {role!r} message.")
        messages.append({"role": role, "content": content})
    if messages[-1]["role"] == "assistant":
        raise TemplateError(f"Template {name!r} ends with an assistant message; the model needs a user turn last.")
    return messages


def neutralise_markers(text: str) -> str:
    """Indent lines that look like ``### role`` markers, so inserted text (a web passage, a model's answer) cannot
    open a new chat turn when the rendered template is split into messages.

    >>> neutralise_markers("a\\n### user\\nb")
    'a\\n ### user\\nb'
    """
    return _ROLE_LINE.sub(r" \1", text) if "###" in text else text


def list_templates() -> list[str]:
    """Names of the templates shipped with the package."""
    root = resources.files("xl_suite") / "prompts"
    return sorted(p.name[: -len(".jinja")] for p in root.iterdir() if p.name.endswith(".jinja"))


def load_template(name_or_path: str | Path | PromptTemplate) -> PromptTemplate:
    """Load a shipped template by name (``"backtranslate"``) or a user's ``.jinja`` file by path.

    A path that does not exist is an error; it is never used as the template text.
    """
    if isinstance(name_or_path, PromptTemplate):
        return name_or_path
    s = str(name_or_path)
    if s.endswith(".jinja") or "/" in s or "\\" in s:
        path = Path(s).expanduser()
        if not path.is_file():
            raise TemplateError(f"Template file {str(path)!r} does not exist. Pass an existing .jinja path.")
        return _make(str(path), path.read_text(encoding="utf-8"))
    res = resources.files("xl_suite") / "prompts" / f"{s}.jinja"
    if not res.is_file():
        raise TemplateError(
            f"Unknown template {s!r}. Shipped templates: {list_templates()}; or pass a path to a .jinja."
        )
    return _make(s, res.read_text(encoding="utf-8"))


def _make(name: str, source: str) -> PromptTemplate:
    _compile(source)  # fail early on syntax errors
    m = _VERSION_RE.search(source)
    return PromptTemplate(
        name=name,
        source=source,
        version=m.group(1) if m else "0",
        sha=hashlib.sha256(source.encode("utf-8")).hexdigest()[:12],
    )


def render_messages(template: str | Path | PromptTemplate, **variables) -> list[dict[str, str]]:
    """Load and render a template to chat messages in one call."""
    return load_template(template).render(**variables)
