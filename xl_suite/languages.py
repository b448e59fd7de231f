"""Language registry: per-language literals as data, with loud gaps.

The paper's 8 core target languages (de pt hu lt ga mt zh hi), the 3 extra benchmark languages
(fr fi tr) and English (the query language) are built in. Users add a language without editing the
package, from Python (:func:`register_language`) or the CLI (``xl-suite languages add``), which stores it
in a user file (``$XL_SUITE_LANGUAGES_FILE``, default ``~/.config/xl-suite/languages.json``).

Nothing here runs at import time except the validation of the built-in table.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xl_suite.errors import LanguageError


__all__ = [
    "LanguageSpec",
    "CORE_LANGUAGES",
    "EXTRA_LANGUAGES",
    "BENCHMARK_LANGUAGES",
    "get_language",
    "list_languages",
    "register_language",
    "unregister_language",
    "resolve_languages",
    "user_languages_file",
    "save_user_language",
]

_CODE_RE = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True)
class LanguageSpec:
    """One language and the literals the pipeline needs for it.

    Args:
        code: ISO 639-1 code (``"de"``); ISO 639-3 where no 639-1 code exists.
        name: English name, lower case (``"german"``): also the split/file name of the authors' release.
        native_name: the language's own name for itself (``"Deutsch"``).
        script: ISO 15924 script code (``"Latn"``, ``"Hans"``, ``"Deva"``).
        request: the sentence appended to an English prompt to ask for an answer in this language.
        langid_code: code the offline language identifier uses for it (defaults to ``code``).
    """

    code: str
    name: str
    native_name: str
    script: str
    request: str = ""
    langid_code: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if not _CODE_RE.match(self.code or ""):
            raise LanguageError(
                f"Invalid language code {self.code!r}: use a lower-case ISO 639-1 code such as 'sw' "
                "(ISO 639-3 where no 2-letter code exists)."
            )
        if not self.name or not self.name.replace(" ", "").isalpha():
            raise LanguageError(f"Language {self.code!r} needs an English name such as 'swahili', got {self.name!r}.")
        if not self.native_name:
            raise LanguageError(f"Language {self.code!r} needs a native name (e.g. 'Kiswahili').")
        if not re.match(r"^[A-Z][a-z]{3}$", self.script or ""):
            raise LanguageError(f"Language {self.code!r}: script must be an ISO 15924 code like 'Latn', got {self.script!r}.")
        object.__setattr__(self, "name", self.name.lower())
        if not self.request:
            object.__setattr__(self, "request", f"Please respond in {self.display_name}.")
        if not self.langid_code:
            object.__setattr__(self, "langid_code", self.code)

    @property
    def display_name(self) -> str:
        """English name with a capital letter (``"German"``)."""
        return self.name.title()

    def to_dict(self) -> dict:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)


def _spec(code, name, native, script):
    return LanguageSpec(code=code, name=name, native_name=native, script=script)


#: The paper's 8 core target languages (training data and both benchmarks).
CORE_LANGUAGES: tuple[str, ...] = ("de", "pt", "hu", "lt", "ga", "mt", "zh", "hi")
#: Extra target languages of XL-AlpacaEval and part of the released training data.
EXTRA_LANGUAGES: tuple[str, ...] = ("fr", "fi", "tr")
#: Target languages of XL-AlpacaEval (core + extra).
BENCHMARK_LANGUAGES: tuple[str, ...] = CORE_LANGUAGES + EXTRA_LANGUAGES

_BUILTIN_LIST: tuple[LanguageSpec, ...] = (
    _spec("en", "english", "English", "Latn"),
    _spec("de", "german", "Deutsch", "Latn"),
    _spec("pt", "portuguese", "Português", "Latn"),
    _spec("hu", "hungarian", "Magyar", "Latn"),
    _spec("lt", "lithuanian", "Lietuvių", "Latn"),
    _spec("ga", "irish", "Gaeilge", "Latn"),
    _spec("mt", "maltese", "Malti", "Latn"),
    _spec("zh", "chinese", "中文", "Hans"),
    _spec("hi", "hindi", "हिन्दी", "Deva"),
    _spec("fr", "french", "Français", "Latn"),
    _spec("fi", "finnish", "Suomi", "Latn"),
    _spec("tr", "turkish", "Türkçe", "Latn"),
)


def _check_unique(specs) -> None:
    for attr in ("code", "name"):
        seen: set[str] = set()
        dups = sorted({getattr(s, attr) for s in specs if getattr(s, attr) in seen or seen.add(getattr(s, attr))})
        if dups:
            raise LanguageError(f"Duplicate language {attr}s in the registry: {dups}. Each language must appear once.")


_check_unique(_BUILTIN_LIST)  # validation only: a duplicate in the table above must fail loudly at import.
_BUILTIN: dict[str, LanguageSpec] = {s.code: s for s in _BUILTIN_LIST}
_REGISTERED: dict[str, LanguageSpec] = {}


def user_languages_file() -> Path:
    """Path of the user's language file (``$XL_SUITE_LANGUAGES_FILE`` or ``~/.config/xl-suite/languages.json``)."""
    env = os.environ.get("XL_SUITE_LANGUAGES_FILE")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "xl-suite" / "languages.json"


def _load_user_languages() -> dict[str, LanguageSpec]:
    path = user_languages_file()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LanguageError(f"User language file {path} is not valid JSON ({e}). Fix or delete it.") from e
    if not isinstance(data, list):
        raise LanguageError(f"User language file {path} must hold a JSON list of language objects.")
    out: dict[str, LanguageSpec] = {}
    for item in data:
        try:
            spec = LanguageSpec(**item)
        except TypeError as e:
            raise LanguageError(f"Bad language entry {item!r} in {path}: {e}") from e
        out[spec.code] = spec
    return out


def _all() -> dict[str, LanguageSpec]:
    merged = dict(_BUILTIN)
    merged.update(_load_user_languages())
    merged.update(_REGISTERED)
    return merged


def list_languages() -> list[LanguageSpec]:
    """All known languages: built-in, then the user's file, then those registered in this process."""
    return list(_all().values())


def _unknown(code: str, known: dict[str, LanguageSpec]) -> LanguageError:
    return LanguageError(
        f"Unknown language {code!r}. Known codes: {sorted(known)}. Add it from Python with "
        "xl_suite.register_language(xl_suite.LanguageSpec(code=..., name=..., native_name=..., script=...)) "
        "or from the shell with `xl-suite languages add CODE --name NAME --native-name NATIVE --script Latn`."
    )


def get_language(code_or_name: str | LanguageSpec) -> LanguageSpec:
    """Look a language up by ISO code or English name (``"de"`` or ``"german"``).

    >>> get_language("german").code
    'de'
    >>> get_language("mt").request
    'Please respond in Maltese.'
    """
    if isinstance(code_or_name, LanguageSpec):
        return code_or_name
    known = _all()
    key = str(code_or_name).strip().lower()
    if key in known:
        return known[key]
    for spec in known.values():
        if spec.name == key:
            return spec
    raise _unknown(code_or_name, known)


def resolve_languages(codes, *, allow_english: bool = False) -> list[LanguageSpec]:
    """Validate a list of language codes: known, no duplicates, English only when allowed.

    Accepts a list or a comma-separated string.

    >>> [s.code for s in resolve_languages("mt,de")]
    ['mt', 'de']
    """
    if isinstance(codes, str):
        codes = [c for c in codes.split(",") if c.strip()]
    specs = [get_language(c) for c in codes]
    if not specs:
        raise LanguageError("No languages given. Pass at least one code, e.g. --languages de,mt.")
    seen: set[str] = set()
    dups = [s.code for s in specs if s.code in seen or seen.add(s.code)]
    if dups:
        raise LanguageError(f"Duplicate language codes {dups} in {[s.code for s in specs]}: list each language once.")
    if not allow_english and any(s.code == "en" for s in specs):
        raise LanguageError("'en' is the query language, not a target language here; remove it from the list.")
    return specs


def register_language(spec: LanguageSpec, *, overwrite: bool = False) -> LanguageSpec:
    """Register a language for this process (see :func:`save_user_language` to persist it).

    Raises if the code or English name is already taken, unless ``overwrite=True``.
    """
    known = _all()
    if not overwrite:
        if spec.code in known:
            raise LanguageError(f"Language {spec.code!r} already exists; pass overwrite=True to replace it.")
        clash = [s.code for s in known.values() if s.name == spec.name]
        if clash:
            raise LanguageError(f"English name {spec.name!r} is already used by {clash[0]!r}.")
    _REGISTERED[spec.code] = spec
    return spec


def unregister_language(code: str) -> None:
    """Forget a language registered in this process (built-ins cannot be removed)."""
    if code not in _REGISTERED:
        raise LanguageError(f"Language {code!r} was not registered in this process; registered: {sorted(_REGISTERED)}.")
    del _REGISTERED[code]


def save_user_language(spec: LanguageSpec, *, overwrite: bool = False) -> Path:
    """Persist a language in the user's language file so every later process knows it."""
    path = user_languages_file()
    current = _load_user_languages()
    if not overwrite and (spec.code in current or spec.code in _BUILTIN):
        raise LanguageError(f"Language {spec.code!r} already exists; pass --overwrite to replace it.")
    if spec.code in _BUILTIN and overwrite:
        raise LanguageError(f"{spec.code!r} is built in and cannot be replaced; pick another code.")
    current[spec.code] = spec
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([s.to_dict() for s in current.values()], ensure_ascii=False, indent=2), encoding="utf-8")
    tmp.replace(path)
    return path
