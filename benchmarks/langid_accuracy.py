"""Per-language accuracy of the fidelity identifiers on real, human-written text: open-source translation catalogs.

Corpus: the gettext catalogs shipped in two PyPI wheels, ``django`` (BSD-3-Clause; ~95 locales, Django's volunteer
translators on Transifex) and ``plone.app.locales`` (GPL-2.0, data only, no dependencies; ~65 locales, Plone's
translators). Both are installed by the ``tests`` extra. They are human translations of user-facing messages
("Enter a valid email address.", help texts, admin messages), written by none of us; English is Django's source
strings. Only statistics are committed, no text. As far as the identifiers' papers say this is not their training
data (py3langid/langid.py: JRC-Acquis, ClueWeb, Wikipedia, Reuters RCV2, Debian i18n; heliport/HeLI-OTS: mostly
Wikipedia and Leipzig corpora). Caveat: langid.py's "Debian i18n" part may hold older Django catalogs.

Texts: every translated message (``msgstr``), placeholders, HTML tags and entities removed, untranslated copies
(``msgstr == msgid``) and messages with fewer than 20 letters (``xl_suite.fidelity.count_letters``) dropped,
duplicates dropped, shuffled (seed 0). The headline unit is one message (at most ``3 * --max-passages`` per
language; a short sentence, the hard case); a second score joins them three at a time into *passages* (about
the length of a short answer, at most ``--max-passages``). A language with fewer than ``3 * --min-passages``
usable messages is listed as not measured.

Scoring is that of :func:`xl_suite.fidelity.language_fidelity` with each identifier: ``fidelity`` is the
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
import random
import re
import sys
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


def _clean(text: str) -> str:
    return " ".join(_PLACEHOLDER_RE.sub(" ", text).split())


def _catalogs():
    """(registry code or None, catalog) for every .mo of the two corpora, in a fixed order."""
    import django
    import plone.app.locales

    from xl_suite.languages import builtin_languages

    known = builtin_languages()
    for package, mapping in (
        (django, LOCALE_TO_CODE),
        (plone.app.locales, {**LOCALE_TO_CODE, **PLONE_LOCALE_TO_CODE}),
    ):
        for mo in sorted(Path(package.__path__[0]).glob("**/LC_MESSAGES/*.mo")):
            locale = mo.parts[-3]
            code = mapping.get(locale, locale.replace("_", "-"))
            with mo.open("rb") as fh:
                catalog = gettext.GNUTranslations(fh)._catalog
            yield (code if code in known else None), catalog, locale


def load_corpus(min_letters: int = 20) -> dict[str, list[str]]:
    """Registry code -> cleaned, de-duplicated human-written messages from the installed corpora.

    Translations (``msgstr``) of Django and plone.app.locales; English is the source strings (``msgid``) of
    Django's catalogs.
    """
    from xl_suite.fidelity import count_letters

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
        get_heliport_identifier,
        get_identifier,
    )
    from xl_suite.languages import builtin_languages

    support = fidelity_support(code, heliport=True, prefer=identifier)
    if support.identifier != identifier:
        return None
    ident = get_identifier() if identifier == "py3langid" else get_heliport_identifier()
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
        other = fidelity_support(spec.code, heliport=True, prefer=identifier)
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
            "corpus": (
                f"Django {md.version('django')} (BSD-3-Clause) and plone.app.locales "
                f"{md.version('plone.app.locales')} (GPL-2.0) translation catalogs, from PyPI"
            ),
            "unit": "one translated message (>= 20 letters); 'passage': 3 messages joined",
            "max_messages": 3 * max_passages,
            "max_passages": max_passages,
            "min_passages": min_passages,
            "py3langid": md.version("py3langid"),
            "heliport": md.version("heliport"),
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
