"""``xl-suite leaderboard``: many evaluation reports as one leaderboard (``leaderboard.csv`` and ``index.html``).

    xl-suite leaderboard report-a/ report-b/ --output board/
    xl-suite leaderboard annotations_claude-2.1.json annotations_alpaca-7b.json --language en \\
        --alpaca-eval-source alpaca_eval.json --output board/
    xl-suite leaderboard report-c/ --output board/          # adds a model to the board in place

REPORT is an xl-suite report folder (``xl-suite evaluate --output``), alpaca_eval's ``annotations.json`` (scored as
``xl-suite evaluate`` would, its report written to ``board/reports/<model>/``) or an alpaca_eval leaderboard CSV (its
rows under the language ``alpaca_eval``). ``leaderboard.csv`` has one row per model and language plus ``overall``
with alpaca_eval's column names and meanings; ``index.html`` is one self-contained page (nothing fetched), sortable,
each model linked to its report. A model already on the board is updated in place; ``--overwrite`` starts afresh.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from xl_suite.configuration import option
from xl_suite.sources import DEFAULT_ALPACA_EVAL_SOURCE


@dataclass
class LeaderboardConfig:
    """``xl-suite leaderboard``: which reports go on the board, and where the board is."""

    reports: list[str] = option(default_factory=list, help="report folders or alpaca_eval files", cli=False)
    output: str | None = option(
        None, "leaderboard folder (created, or updated in place)", required=True, metavar="DIR"
    )
    language: str | None = option(
        None, "the language of alpaca_eval annotation files without a language column (e.g. en)"
    )
    alpaca_eval_source: str = option(
        DEFAULT_ALPACA_EVAL_SOURCE,
        "AlpacaEval's prompts (path or fsspec URL) that alpaca_eval annotation files are matched against",
        metavar="PATH_OR_URL",
    )
    n_resamples: int = option(1000, "bootstrap resamples for alpaca_eval annotation files")
    seed: int = option(0, "bootstrap seed")
    overwrite: bool = option(False, "start a new board: drop the models already in the folder")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``xl-suite leaderboard``."""
    from xl_suite.configuration import add_arguments

    p = subparsers.add_parser(
        "leaderboard",
        help="many reports as one leaderboard (leaderboard.csv, index.html)",
        description="Put evaluation reports (xl-suite report folders, alpaca_eval annotations.json or leaderboard "
        "CSV files) on one leaderboard: leaderboard.csv with one row per model and language plus overall, under "
        "alpaca_eval's column names and meanings, and index.html, a self-contained sortable page of models x "
        "languages (win rate, CI, length-controlled win rates, language fidelity) linking each model's report. "
        "A model already on the board in --output is updated in place.",
    )
    p.add_argument("reports", nargs="+", metavar="REPORT", help="report folder, annotations.json or leaderboard .csv")
    add_arguments(p, LeaderboardConfig, title="leaderboard")
    return p


def run(args) -> int:
    """Run ``xl-suite leaderboard``."""
    from xl_suite.configuration import from_args
    from xl_suite.evaluation.leaderboard import build_leaderboard
    from xl_suite.output_folder import claim_output
    from xl_suite.safety import check_output_dir, lock_folders

    job = from_args(LeaderboardConfig, args, reports=list(args.reports))
    out = check_output_dir(job.output)
    claim_args = dict(overwrite=job.overwrite, caches=["reports"])
    claim_output(out, "leaderboard", {"board": 1}, dry_run=True, **claim_args)  # refuse before writing anything
    with lock_folders([out], purpose="xl-suite leaderboard"):
        claim = claim_output(out, "leaderboard", {"board": 1}, **claim_args)
        board, notes = build_leaderboard(
            job.reports,
            out,
            language=job.language,
            alpaca_eval_source=job.alpaca_eval_source,
            n_resamples=job.n_resamples,
            seed=job.seed,
            overwrite=job.overwrite,
        )
        claim.complete()
    for note in notes:
        print(f"updated: {note}")
    for warning in board.warnings():
        print(f"note: {warning}")
    print(f"{len(board.models)} models x {len(board.languages)} columns ({', '.join(board.languages)})")
    print(f"Leaderboard: {out / 'leaderboard.csv'}  page: {out / 'index.html'}")
    return 0
