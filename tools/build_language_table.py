"""Regenerate ``xl_suite/data/languages.json``, the built-in language registry, from CLDR data.

The built-in languages are every language that the shipped identifier (py3langid) can output, plus the languages
that only the optional wide-coverage identifier (heliport, ``pip install 'xl-suite[langid-wide]'``) knows and that
the issue asked for, plus three BCP-47 variants (pt-BR, zh-Hant, sr-Latn). English names, autonyms and likely
scripts come from CLDR through ``langcodes`` + ``language_data``; the few fixes where that data is wrong or the
paper fixes a wording live in ``xl_suite.languages._OVERRIDES`` and are applied at load time, not here.

Usage (needs the ``eval`` and ``langid-wide`` extras)::

    python tools/build_language_table.py            # rewrite the file
    python tools/build_language_table.py --check    # exit 1 if the file is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import langcodes


OUT = Path(__file__).resolve().parents[1] / "xl_suite" / "data" / "languages.json"
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
    meta = {
        "generated_by": "tools/build_language_table.py",
        "langcodes": md.version("langcodes"),
        "language_data": md.version("language_data"),
        "py3langid": md.version("py3langid"),
        "heliport": md.version("heliport"),
    }
    return {"meta": meta, "languages": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare with the committed file")
    args = ap.parse_args()
    text = json.dumps(build(), ensure_ascii=False, indent=1) + "\n"
    if args.check:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("up to date" if same else f"{OUT} is out of date: run python tools/build_language_table.py")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
