"""``xl-suite translate``: machine-translate the XL-AlpacaEval prompts into m-AlpacaEval files.

    xl-suite translate --model gpt-4o-2024-08-06 --backend openai --languages de,mt --source alpaca_eval.json \\
        --output m_alpacaeval/
    xl_suite.load_dataset("m-alpacaeval-de", split="test", source="m_alpacaeval/")

Writes ``OUTPUT/<code>.jsonl`` per language, the layout the m-AlpacaEval builder reads.
"""

from __future__ import annotations

import argparse

from xl_suite.commands.generate import add_engine_arguments, add_run_arguments, add_sampling_arguments, build_engine
from xl_suite.errors import OutputExistsError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``xl-suite translate`` and its flags on the CLI's subparsers."""
    p = subparsers.add_parser(
        "translate", help="translate the benchmark prompts into m-AlpacaEval files",
        description="Translate the 797 kept English AlpacaEval prompts into each language with an LLM (template "
                    "translate_instruction; the paper used GPT-4o) as a batched, resumable map. Writes "
                    "OUTPUT/<code>.jsonl, loadable as m-alpacaeval-<code> with source=OUTPUT.")
    add_engine_arguments(p, what="translation model")
    p.add_argument("--languages", required=True, help="comma-separated target codes, e.g. de,mt")
    p.add_argument("--source", default=None, metavar="PATH",
                   help="AlpacaEval prompts (JSON/JSONL/Parquet; default: the alpaca_eval data on the Hub)")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for <code>.jsonl files")
    p.add_argument("--template", default="translate_instruction", help="translation template name or .jinja path")
    p.add_argument("--overwrite", action="store_true", help="replace existing language files")
    add_sampling_arguments(p)
    add_run_arguments(p)
    return p


def run(args) -> int:
    """Run ``xl-suite translate``; returns the exit code (errors raise and the CLI prints them)."""
    from pathlib import Path

    from xl_suite.engines.base import SamplingConfig
    from xl_suite.evaluation import english_prompts, translate_prompts, write_m_alpacaeval
    from xl_suite.languages import resolve_languages

    specs = resolve_languages(args.languages)
    out = Path(args.output)
    existing = [str(out / f"{s.code}.jsonl") for s in specs if (out / f"{s.code}.jsonl").exists()]
    if existing and not args.overwrite:
        raise OutputExistsError(f"{existing} exist; pass --overwrite to replace them.")
    prompts = english_prompts(args.source, limit=args.limit)
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                              seed=args.seed)
    generator = build_engine(args.backend, args.model, args.revision, args.engine_kwargs)
    try:
        translations = translate_prompts(prompts, generator, [s.code for s in specs], sampling=sampling,
                                         template=args.template, work_dir=args.work_dir or str(out / ".work"),
                                         chunk_size=args.chunk_size, batch_size=args.batch_size)
    finally:
        generator.close()
    paths = write_m_alpacaeval(translations, out, overwrite=args.overwrite)
    for code, path in paths.items():
        status = translations[code]["translation_status"]
        bad = sum(s != "ok" for s in status)
        print(f"{code}: {len(status)} prompts -> {path}" + (f" ({bad} empty or truncated, kept and marked)" if bad else ""))
    print(f'Load with: xl_suite.load_dataset("m-alpacaeval-{specs[0].code}", split="test", source="{out}")')
    return 0
