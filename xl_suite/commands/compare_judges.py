"""``xl-suite compare-judges``: judges compared per language (agreement, kappa, biases, rankings, gold accuracy).

    xl-suite compare-judges report-gpt4o/ report-qwen/ --output board/
    xl-suite compare-judges annotations_judge_a.json annotations_judge_b.json --language en --output board/
    xl-suite compare-judges a/claude.json,a/alpaca.json b/claude.json,b/alpaca.json --language en --output board/
    xl-suite compare-judges report-gpt4o/ report-qwen/ --gold mm_eval_pairs.jsonl --output board/

Each JUDGE is one judge's judgments of the same pairs: an xl-suite report folder (its annotations.json) or
alpaca_eval's annotations.json; several paths joined by commas are one judge over several models (then the ranking
correlations are computed). Writes ``judges.csv`` (first row: the first two judges' agreement over all languages, in
percent) and ``judges.json``, and adds a section to the folder's ``index.html`` (the leaderboard page, if the
folder holds one).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from xl_suite.configuration import option


@dataclass
class CompareJudgesConfig:
    """``xl-suite compare-judges``: which judges, against what gold, and where the comparison goes."""

    judges: list[str] = option(default_factory=list, help="one judge's judgments per item", cli=False)
    output: str | None = option(
        None, "folder for judges.csv and the page (a leaderboard folder or a new one)", required=True, metavar="DIR"
    )
    language: str | None = option(None, "the language of alpaca_eval files without a language column (e.g. en)")
    gold: str | None = option(
        None,
        "human preferences (prompt, chosen, rejected, language: MM-Eval, M-RewardBench) for each judge's accuracy",
        metavar="FILE",
    )
    overwrite: bool = option(False, "start afresh: drop what the folder holds (its leaderboard too)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``xl-suite compare-judges``."""
    from xl_suite.configuration import add_arguments

    p = subparsers.add_parser(
        "compare-judges",
        help="compare judges per language: agreement, kappa, biases, rankings, price, gold accuracy",
        description="Compare LLM judges that judged the same pairs, per language: agreement as alpaca_eval's "
        "Analyzer computes it (absolute scoring rule, one annotation each), Cohen's kappa, both-order consistency, "
        "P(prefer first), P(prefer longer), the correlation of their model rankings, price and time per 1,000 "
        "judged pairs, and accuracy against human preferences (--gold). Writes judges.csv and a section of "
        "index.html.",
    )
    p.add_argument(
        "judges",
        nargs="+",
        metavar="JUDGE",
        help="a report folder or annotations.json (paths joined by commas: one judge over several models)",
    )
    add_arguments(p, CompareJudgesConfig, title="compare judges")
    return p


def run(args) -> int:
    """Run ``xl-suite compare-judges``."""
    from xl_suite.configuration import from_args
    from xl_suite.evaluation.files import read_rows
    from xl_suite.evaluation.judges import compare_judges, read_judge
    from xl_suite.evaluation.leaderboard import write_page
    from xl_suite.output_folder import claim_output
    from xl_suite.safety import check_output_dir, lock_folders

    job = from_args(CompareJudgesConfig, args, judges=list(args.judges))
    out = check_output_dir(job.output)
    judges = [read_judge([p for p in spec.split(",") if p], language=job.language) for spec in job.judges]
    gold = read_rows(job.gold) if job.gold else None
    comparison = compare_judges(judges, gold=gold)
    claim_args = dict(overwrite=job.overwrite, caches=["reports"])
    claim_output(out, "leaderboard", {"board": 1}, dry_run=True, **claim_args)  # refuse before writing anything
    with lock_folders([out], purpose="xl-suite compare-judges"):
        claim = claim_output(out, "leaderboard", {"board": 1}, **claim_args)
        paths = comparison.write(out)
        page = write_page(out)
        claim.complete()
    for note in comparison.notes:
        print(note)
    first = comparison.rows[0]
    print(
        f"{first['judge_1']} vs {first['judge_2']} ({first['language']}): agreement {first['agreement']:.1f}% "
        f"over {first['n_pairs']} pairs, kappa {first['cohen_kappa']:.3f}"
    )
    print(f"Judges: {paths['csv']}  page: {page}")
    return 0
