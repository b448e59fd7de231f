"""``xl-suite languages``: list the known languages or add one (stored in the user's language file)."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("languages", help="list known languages or add a new one",
                              description="List the language registry, or add a language without editing the package.")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("list", help="list languages (default)")
    add = sub.add_parser("add", help="add a language to ~/.config/xl-suite/languages.json ($XL_SUITE_LANGUAGES_FILE)")
    add.add_argument("code", help="ISO 639-1 code, e.g. sw")
    add.add_argument("--name", required=True, help="English name, e.g. swahili (also the split/file name)")
    add.add_argument("--native-name", required=True, help="the language's own name, e.g. Kiswahili")
    add.add_argument("--script", required=True, help="ISO 15924 script code, e.g. Latn")
    add.add_argument("--request", default="", help="sentence asking for an answer in it (default: 'Please respond in <Name>.')")
    add.add_argument("--langid-code", default="", help="code used by the language identifier (default: CODE)")
    add.add_argument("--overwrite", action="store_true", help="replace an existing user language")
    return p


def run(args) -> int:
    from xl_suite.languages import LanguageSpec, list_languages, save_user_language

    if args.action == "add":
        spec = LanguageSpec(code=args.code, name=args.name, native_name=args.native_name, script=args.script,
                            request=args.request, langid_code=args.langid_code)
        path = save_user_language(spec, overwrite=args.overwrite)
        print(f"Added {spec.code} ({spec.display_name}) to {path}. Configs like xl-alpacaeval-{spec.code} now work.")
        return 0
    print(f"{'code':<5} {'name':<12} {'native':<12} {'script':<6} request")
    for s in list_languages():
        print(f"{s.code:<5} {s.name:<12} {s.native_name:<12} {s.script:<6} {s.request}")
    return 0
