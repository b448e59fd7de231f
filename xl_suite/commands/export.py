"""``xl-suite export DIR``: write the benchmark (and optional sources) as a data-only dataset repo folder."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="write a data-only dataset repo (Parquet per config + README configs:)",
        description="Build XL-AlpacaEval configs (and m-AlpacaEval / XL-Instruct from given sources) and write them "
        "as a folder that datasets.load_dataset(DIR, CONFIG) loads.",
    )
    p.add_argument(
        "output", metavar="DIR", help="folder to create (name it xl-suite to load_dataset('xl-suite', ...))"
    )
    p.add_argument("--languages", default=None, help="comma-separated codes (default: the 11 benchmark languages)")
    p.add_argument(
        "--alpaca-eval",
        default=None,
        metavar="PATH",
        help="AlpacaEval prompts (JSON/JSONL/Parquet, path or URL; default: the alpaca_eval data on the Hub)",
    )
    p.add_argument("--m-alpacaeval", default=None, metavar="PATH", help="folder with translated prompts per language")
    p.add_argument(
        "--xl-instruct",
        default=None,
        metavar="PATH",
        help="folder with XL-Instruct files (authors' release or an xl-suite synthesize output)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an export of other configs or rows in DIR (the same export again is a no-op without it; "
        "files you added there are kept)",
    )
    return p


def run(args) -> int:
    from xl_suite.export import export_repo
    from xl_suite.languages import BENCHMARK_LANGUAGES

    out = export_repo(
        args.output,
        languages=args.languages if args.languages is not None else BENCHMARK_LANGUAGES,  # '' is an error, not "all"
        alpaca_eval=args.alpaca_eval,
        m_alpacaeval=args.m_alpacaeval,
        xl_instruct=args.xl_instruct,
        overwrite=args.overwrite,
        echo=print,
    )
    import datasets

    names = datasets.get_dataset_config_names(str(out))
    print(f"Wrote {out} with {len(names)} configs: {', '.join(names)}")
    print(f'Load with: datasets.load_dataset("{out}", "{names[0]}")')
    return 0
