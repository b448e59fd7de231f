"""``xl-suite demo``: the whole loop (synthesize, benchmark, answer, judge, report, export) on a built-in default."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="run the whole XL-Suite loop on a built-in default (tiny local stand-in model)",
        description="Synthesize XL-Instruct pairs for two languages, build XL-AlpacaEval, generate references and "
        "answers, judge them, write the report and export a data-only xl-suite/ folder. Without --model "
        "a tiny random model is built locally (no download): its text is meaningless, the numbers only "
        "show the plumbing. Paper setup on a GPU machine: --model ID --judge-preset gpt-4o.",
    )
    p.add_argument("--model", default=None, help="model id or path (default: build the tiny stand-in)")
    p.add_argument(
        "--backend",
        default="vllm",
        choices=["vllm", "openai", "transformers", "fake"],
        help="backend of --model (default vllm; fake: a deterministic test double, no model)",
    )
    p.add_argument(
        "--judge-preset",
        default=None,
        help="judge preset, e.g. gpt-4o (the paper: GPT-4o judge, GPT-4o-mini references); "
        "default: the model itself is reference and judge",
    )
    p.add_argument("--judge-model", default=None, help="override the preset's judge model")
    p.add_argument("--languages", default="de,mt", help="target languages (default de,mt)")
    p.add_argument(
        "--alpaca-eval",
        default=None,
        metavar="PATH",
        help="AlpacaEval prompts file (default: the Hub copy if reachable, else a labelled sample)",
    )
    p.add_argument("--num-prompts", type=int, default=12, help="XL-AlpacaEval prompts per language (default 12)")
    p.add_argument("--num-examples", type=int, default=8, help="XL-Instruct pairs per language (default 8)")
    p.add_argument("--max-tokens", type=int, default=128, help="new tokens per completion (default 128)")
    p.add_argument(
        "--seeds",
        default="builtin",
        help="seed passages, as for xl-suite synthesize: builtin (40 project-written passages), a file, folder or "
        "URL, or a Hub dataset id",
    )
    p.add_argument("--text-column", default="text", help="column of the seeds holding the passages (default text)")
    p.add_argument(
        "--decontaminate-against",
        action="append",
        default=[],
        metavar="PATH",
        help="more benchmark prompt files to decontaminate the synthesized pairs against (repeatable); "
        "--alpaca-eval is always used",
    )
    p.add_argument("--output-dir", default="xl-suite-demo", help="working folder (default xl-suite-demo)")
    p.add_argument("--export-dir", default="xl-suite", help="data-only dataset folder (default xl-suite)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a demo run with other settings in --output-dir and --export-dir (the same demo again "
        "resumes without it, and a finished one starts no engine)",
    )
    p.add_argument(
        "--no-overwrite", action="store_true", help="(the default now; kept so that older scripts still run)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the requests and tokens of every step (dollars for API models, engine-hours with "
        "--tokens-per-second), then stop: no model is built, no engine starts",
    )
    p.add_argument(
        "--tokens-per-second",
        type=float,
        default=None,
        help="generated tokens per second of the local engine, for the engine-hours of --dry-run",
    )
    return p


def run(args) -> int:
    from xl_suite.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        output_dir=args.output_dir,
        export_dir=args.export_dir,
        model=args.model,
        backend=args.backend,
        judge_preset=args.judge_preset,
        judge_model=args.judge_model,
        languages=tuple(c for c in args.languages.split(",") if c),
        alpaca_eval=args.alpaca_eval,
        num_prompts=args.num_prompts,
        num_examples=args.num_examples,
        max_tokens=args.max_tokens,
        overwrite=args.overwrite,
        seeds=args.seeds,
        text_column=args.text_column,
        decontaminate_against=tuple(args.decontaminate_against),
        dry_run=args.dry_run,
        tokens_per_second=args.tokens_per_second,
    )
    if args.overwrite and args.no_overwrite:
        from xl_suite.errors import InvalidArgumentError

        raise InvalidArgumentError("--overwrite and --no-overwrite contradict each other: give one.")
    run_demo(cfg)
    return 0
