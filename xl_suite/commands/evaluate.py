"""``xl-suite evaluate``: judge model answers against references and write the report.

    xl-suite evaluate --model-outputs answers/ --references refs/ --judge-backend vllm --judge-model JUDGE \\
        --output report/
    xl-suite evaluate --model-outputs answers/ --references refs/ --judge-preset gpt-4o --output report/
    xl-suite evaluate --model-outputs answers/ --output report/          # no judge: language fidelity only

Prints a table per language and writes ``report.md``, ``leaderboard.csv`` and ``win_rates.png`` (plus per-sample
and per-judgment files) to the output folder. Judgments are cached under ``OUTPUT/annotations`` (``--cache-dir``):
a rerun makes zero judge calls.
"""

from __future__ import annotations

import argparse

from xl_suite.commands.generate import add_engine_arguments, parse_engine_kwargs
from xl_suite.errors import InvalidArgumentError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``xl-suite evaluate`` and its flags on the CLI's subparsers."""
    p = subparsers.add_parser(
        "evaluate", help="judge answers against references; per-language win rates, fidelity, report",
        description="Pairwise LLM judge (both orders by default) of model answers against reference answers, "
                    "rubric scores and offline language fidelity, per language; prints the table and writes a "
                    "Markdown + CSV leaderboard and a PNG plot. Without a judge, only language fidelity is "
                    "computed. The judge prompt, tie rule and rubric are a reconstruction (the paper's are "
                    "unknown).")
    p.add_argument("--model-outputs", required=True, metavar="DIR_OR_FILE",
                   help="answers (.jsonl/.json/.parquet file or folder) with id, language, output (and instruction), "
                        "as written by xl-suite generate")
    p.add_argument("--references", default=None, metavar="DIR_OR_FILE",
                   help="reference answers with id, language and reference (or output); needed with a judge")
    p.add_argument("--output", required=True, metavar="REPORT_DIR", help="report folder")
    p.add_argument("--judge-preset", default=None, metavar="NAME_OR_FILE",
                   help="judge preset (gpt-4o, local-vllm) or a .json/.yaml preset file; default local-vllm when "
                        "--judge-model is given")
    add_engine_arguments(p, prefix="judge", required=False, what="judge model")
    p.add_argument("--order", choices=["both", "random"], default=None,
                   help="both presentation orders (default) or one content-seeded random order per item")
    p.add_argument("--no-rubric", action="store_true", help="skip the 1-5 rubric scores")
    p.add_argument("--no-structured-output", action="store_true",
                   help="do not constrain the judge's replies to their JSON schema")
    p.add_argument("--judge-temperature", type=float, default=None, help="judge temperature (default 0.0: greedy)")
    p.add_argument("--cache-dir", default=None, help="annotation cache folder or fsspec URL (default OUTPUT/annotations)")
    p.add_argument("--languages", default=None, help="only these language codes (comma-separated)")
    p.add_argument("--model-name", default=None, help="name of the evaluated model in the report")
    p.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples for the CI (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--lc-method", choices=["alpaca_eval", "mle"], default="alpaca_eval",
                   help="length-controlled win rate fit (default alpaca_eval)")
    return p


def run(args) -> int:
    """Run ``xl-suite evaluate``; returns the exit code (errors raise and the CLI prints them)."""
    from pathlib import Path

    from xl_suite.evaluation import align_references, evaluate_responses, read_rows, write_report
    from xl_suite.languages import get_language, resolve_languages

    out = Path(args.output)
    model_rows = read_rows(args.model_outputs)
    if not model_rows:
        raise InvalidArgumentError(f"{args.model_outputs!r} holds no rows.")
    use_judge = bool(args.judge_preset or args.judge_model)
    if args.judge_backend and not use_judge:
        raise InvalidArgumentError("--judge-backend needs --judge-model (or --judge-preset).")
    if args.languages:
        keep = {s.code for s in resolve_languages(args.languages)}
        model_rows = [r for r in model_rows if get_language(r.get("language", "")).code in keep]
        if not model_rows:
            raise InvalidArgumentError(f"No model output is in --languages {args.languages!r}.")
    model_name = args.model_name or _model_name(model_rows, args.model_outputs)

    preset = judge = None
    if use_judge:
        if not args.references:
            raise InvalidArgumentError("A judge compares answers with references: pass --references DIR_OR_FILE.")
        rows = align_references(model_rows, read_rows(args.references))
        missing = [r["id"] for r in rows if not (r.get("instruction") or "").strip()]
        if missing:
            raise InvalidArgumentError(f"{len(missing)} row(s) have no instruction (e.g. {missing[:3]}); the judge needs the "
                             "prompt. Use outputs written by `xl-suite generate`, which keep it.")
        from xl_suite.evaluation.presets import load_preset

        preset = load_preset(args.judge_preset or "local-vllm", judge_model=args.judge_model,
                             judge_backend=args.judge_backend, judge_revision=args.judge_revision,
                             order=args.order, rubric=False if args.no_rubric else None,
                             structured_output=False if args.no_structured_output else None,
                             temperature=args.judge_temperature)
        judge = preset.build_judge(**parse_engine_kwargs(args.judge_engine_kwargs))
    else:
        rows = [{"id": str(r.get("id", i)), "language": r["language"], "output": r.get("output") or "",
                 "instruction": r.get("instruction"), "reference": None} for i, r in enumerate(model_rows)]
    try:
        result = evaluate_responses(
            [r["output"] for r in rows], [r["language"] for r in rows],
            references=[r["reference"] for r in rows] if judge is not None else None,
            instructions=[r["instruction"] for r in rows] if judge is not None else None,
            ids=[r["id"] for r in rows], judge=judge, config=preset.judge if preset else None,
            cache_dir=args.cache_dir or str(out / "annotations"), model_name=model_name,
            preset=f"{preset.name} v{preset.version}" if preset else None, n_resamples=args.n_resamples,
            seed=args.seed, lc_method=args.lc_method,
        )
    finally:
        if judge is not None:
            judge.close()
    usage = [r for r in model_rows if isinstance(r.get("completion_tokens"), int)]
    if usage:
        result.ledger["model_outputs"] = {
            "requests": len(usage), "prompt_tokens": sum(int(r.get("prompt_tokens") or 0) for r in usage),
            "completion_tokens": sum(r["completion_tokens"] for r in usage),
        }
    paths = write_report(result, out)
    print(result.format_table())
    for stage, entry in result.ledger.items():
        if "judged_now" in entry:
            print(f"{stage}: {entry['judged_now']} judged now, {entry['from_cache']} from cache, "
                  f"{entry['prompt_tokens']} + {entry['completion_tokens']} tokens"
                  + (f", ${entry['cost_usd']:.4f}" if entry.get("cost_usd") is not None else ""))
    for w in result.meta.get("warnings", []):
        print(f"warning: {w}")
    print(f"Report: {paths['markdown']}  CSV: {paths['csv']}  plot: {paths['png']}")
    return 0


def _model_name(rows: list[dict], path: str) -> str:
    from pathlib import Path

    names = {r.get("generator") for r in rows if r.get("generator")}
    if len(names) == 1:
        return names.pop()
    return Path(path).stem or str(path)
