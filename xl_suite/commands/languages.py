"""``xl-suite languages``: list the languages with identifier coverage and measured accuracy, or add one."""

from __future__ import annotations

import argparse


#: A language is listed as weak when its measured family-aware fidelity is below this, or its passages pass as an
#: unrelated language more often than ``1 - THRESHOLD``.
THRESHOLD = 0.90


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "languages",
        help="list known languages (coverage, measured accuracy) or add a new one",
        description="List the language registry with the offline identifier that measures each language and its "
        "accuracy on real text, or add a language without editing the package.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    ls = sub.add_parser("list", help="list languages (default)")
    ls.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    add = sub.add_parser("add", help="add a language to a languages file (--file, default $XL_SUITE_LANGUAGES_FILE)")
    add.add_argument("code", help="BCP-47 tag, e.g. gsw or pt-BR")
    add.add_argument(
        "--file",
        default=None,
        help="languages file to add it to (created if missing; default: $XL_SUITE_LANGUAGES_FILE). Other runs know "
        "the language when XL_SUITE_LANGUAGES_FILE names this file",
    )
    add.add_argument("--name", required=True, help="English name, e.g. 'swiss german' (also the split/file name)")
    add.add_argument("--native-name", required=True, help="the language's own name, e.g. Schwiizertüütsch")
    add.add_argument("--script", required=True, help="ISO 15924 script code, e.g. Latn")
    add.add_argument(
        "--request", default="", help="sentence asking for an answer in it (default: 'Please respond in <Name>.')"
    )
    add.add_argument(
        "--langid-code", default=None, help="py3langid label for it (default: the language subtag of CODE)"
    )
    add.add_argument("--overwrite", action="store_true", help="replace an existing user language")
    add.add_argument(
        "--allow-name-mismatch",
        action="store_true",
        help="accept a name that CLDR gives to another language (normally an error)",
    )
    return p


def language_rows() -> list[dict]:
    """One row per known language: code, names, script, coverage, identifier used, measured accuracy, status, and the
    other codes that resolve to it (ISO 639-2/-3 forms, CLDR aliases, regional tags)."""
    from xl_suite.fidelity import (
        IDENTIFIER_EXTRAS,
        fidelity_support,
        is_fasttext_available,
        is_heliport_available,
        measured_accuracy,
    )
    from xl_suite.languages import aliases_of, builtin_languages, list_languages

    heliport, fasttext = is_heliport_available(), is_fasttext_available()
    builtins = builtin_languages()
    rows = []
    for spec in list_languages():
        support = fidelity_support(spec, heliport=heliport, fasttext=fasttext)
        wide = fidelity_support(spec, heliport=True, fasttext=True)
        coverage = [name for name, label in spec.langid.items() if label]
        measured = measured_accuracy(spec.code) or {}
        # The accuracy of the identifier used here; a language only heliport knows shows heliport's, as n/a here.
        result = (measured.get("identifiers") or {}).get(support.identifier or "")
        row = {
            "code": spec.code,
            "name": spec.display_name,
            "native_name": spec.native_name,
            "script": spec.script,
            "coverage": coverage,
            "identifier": support.identifier,
            "fidelity": result and result["fidelity"],
            "strict": result and result["strict"],
            "max_unrelated": result and result["max_unrelated"],
            "n": result and result["n"],
            "aliases": aliases_of(spec.code) if spec.code in builtins else [],
        }
        if not wide.supported:
            row["status"] = "n/a: no offline identifier"
        elif not support.supported:
            row["status"] = f"n/a: needs xl-suite[{IDENTIFIER_EXTRAS[wide.identifier]}]"
        elif not result:
            row["status"] = "not measured" + (f" ({measured['status']})" if measured.get("status") else "")
        elif result["fidelity"] < THRESHOLD or result["max_unrelated"] > 1 - THRESHOLD:
            row["status"] = f"below {THRESHOLD:.2f}"
        else:
            row["status"] = "ok"
        rows.append(row)
    return rows


def _shorten(text: str, width: int) -> str:
    """``text`` cut at a comma to fit ``width`` characters, with ``, ...`` when cut (``--format json`` has all)."""
    if len(text) <= width:
        return text
    return text[: text.rfind(", ", 0, width - 4)] + ", ..."


def run(args) -> int:
    from xl_suite.languages import LanguageSpec, save_user_language

    if args.action == "add":
        spec = LanguageSpec(
            code=args.code,
            name=args.name,
            native_name=args.native_name,
            script=args.script,
            request=args.request,
            langid_code=args.langid_code,
        )
        path = save_user_language(
            spec, path=args.file, overwrite=args.overwrite, allow_name_mismatch=args.allow_name_mismatch
        )
        print(
            f"Added {spec.code} ({spec.display_name}) to {path}. Configs like xl-alpacaeval-{spec.config_code} "
            f"work in runs with XL_SUITE_LANGUAGES_FILE={path}."
        )
        return 0
    rows = language_rows()
    if getattr(args, "format", "table") == "json":
        import json

        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    from xl_suite.fidelity import accuracy_table_meta

    def pct(x):
        return "-" if x is None else f"{100 * x:5.1f}"

    print(
        f"{'code':<8} {'name':<28} {'native':<22} {'script':<6} {'coverage':<27} {'fid%':>5} {'strict%':>7} "
        f"{'n':>4}  {'status':<30} aliases"
    )
    for r in rows:
        print(
            f"{r['code']:<8} {r['name'][:28]:<28} {r['native_name'][:22]:<22} {r['script']:<6} "
            f"{'+'.join(r['coverage']) or '-':<27} {pct(r['fidelity']):>5} {pct(r['strict']):>7} "
            f"{r['n'] or '-':>4}  {r['status']:<30} {_shorten(', '.join(r['aliases']) or '-', 48)}"
        )
    meta = accuracy_table_meta()
    measured = [r for r in rows if r["fidelity"] is not None]
    good = [r for r in measured if r["status"] == "ok"]
    print(
        f"\n{len(rows)} languages; {sum(1 for r in rows if r['identifier'])} measurable here; "
        f"{len(measured)} measured on real text, {len(good)} of them >= {THRESHOLD:.2f} own-language fidelity "
        f"and <= {1 - THRESHOLD:.2f} as an unrelated language."
    )
    print(
        f"fid%: family-aware fidelity, strict%: exact label, on single messages of {meta.get('corpus', '?')} "
        "(benchmarks/langid_accuracy.py)."
    )
    print(
        "aliases: other codes that resolve to the language (ISO 639-2/-3, CLDR aliases such as nb -> no or iw -> he, "
        "and region tags such as zh-TW -> zh-Hant); any region not listed is ignored (pt-PT, de-AT)."
    )
    return 0
