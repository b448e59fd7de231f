"""``xl-suite push REPO_ID --config NAME``: add or replace one config in a Hub dataset repo, regenerate the card."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "push",
        help="add or replace one config in a Hub dataset repo",
        description="Push one config with datasets' push_to_hub(config_name=...), leaving the repo's other configs "
        "untouched, then regenerate the dataset card from the data. The token comes from HF_TOKEN or "
        "`hf auth login`, never from the command line.",
    )
    p.add_argument("repo_id", metavar="REPO_ID", help="namespace/name of the dataset repo (created if missing)")
    p.add_argument("--config", required=True, help="config to push, e.g. xl-alpacaeval-sw or xl-instruct-mt")
    p.add_argument(
        "--from-dir",
        default=None,
        metavar="DIR",
        help="take the config from an exported folder (xl-suite export / demo output)",
    )
    p.add_argument(
        "--source",
        default=None,
        metavar="PATH",
        help="build the config from this source (AlpacaEval file, translation or synthesis folder)",
    )
    p.add_argument("--private", action="store_true", help="create the repo as private")
    return p


def run(args) -> int:
    from xl_suite.hub import publish_config

    url = publish_config(args.repo_id, args.config, from_dir=args.from_dir, source=args.source, private=args.private)
    print(f"Pushed {args.config} to {args.repo_id}: {url}")
    print(f'Load with: datasets.load_dataset("{args.repo_id}", "{args.config}")')
    return 0
