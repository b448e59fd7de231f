"""``xl-suite generate``: a model's answers to a benchmark config, or its reference answers.

    xl-suite generate --model PATH_OR_ID --backend vllm --config xl-alpacaeval-de --source alpaca_eval.json \\
        --output answers/
    xl-suite generate --model gpt-4o-mini-2024-07-18 --backend openai --config xl-alpacaeval-de \\
        --output refs/ --as-reference [--push user/xl-alpacaeval-refs]

Answers go to ``OUTPUT/<config>.jsonl`` (``id``, ``language``, ``instruction``, ``output``, ``generator`` and
provenance). With ``--as-reference`` the benchmark rows are written with the ``reference`` column filled.
"""

from __future__ import annotations

import argparse
import json

from xl_suite.errors import InvalidArgumentError, OutputExistsError


def add_engine_arguments(p: argparse.ArgumentParser, *, prefix: str = "", required: bool = True,
                         what: str = "model") -> None:
    """``--{prefix}backend/model/revision/engine-kwargs`` (shared by generate, translate and evaluate)."""
    dash = f"--{prefix}-" if prefix else "--"
    p.add_argument(f"{dash}model", required=required, default=None,
                   help=f"{what}: local folder, Hub id (vllm/transformers) or API model name (openai)")
    p.add_argument(f"{dash}backend", default=None, choices=["vllm", "openai", "transformers", "fake"],
                   help="engine (default: vllm)")
    p.add_argument(f"{dash}revision", default=None, help="pinned revision (commit SHA) of the model")
    p.add_argument(f"{dash}engine-kwargs", default=None, metavar="JSON",
                   help='extra engine arguments as JSON, e.g. \'{"max_model_len": 4096}\' (vllm) or '
                        '\'{"base_url": "http://127.0.0.1:8000/v1"}\' (openai)')


def parse_engine_kwargs(text: str | None) -> dict:
    """Parse ``--engine-kwargs`` JSON (an object) or raise ``ValueError``."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f"--engine-kwargs must be a JSON object, got {text!r} ({e.msg}).") from e
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"--engine-kwargs must be a JSON object, got {text!r}.")
    return value


def build_engine(backend: str | None, model: str, revision: str | None, engine_kwargs: str | dict | None):
    """Build a generator from CLI values (heavy imports happen here)."""
    from xl_suite.engines.registry import build_generator

    kwargs = engine_kwargs if isinstance(engine_kwargs, dict) else parse_engine_kwargs(engine_kwargs)
    return build_generator(backend or "vllm", model, revision=revision, **kwargs)


def add_sampling_arguments(p: argparse.ArgumentParser, *, max_tokens: int = 1024) -> None:
    """Decoding flags (greedy by default; recorded on every row)."""
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0.0: greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (default 1.0)")
    p.add_argument("--max-tokens", type=int, default=max_tokens, help=f"tokens per answer (default {max_tokens})")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Chunking / resume flags."""
    p.add_argument("--work-dir", default=None,
                   help="resumable chunk folder or fsspec URL (default: OUTPUT/.work); a rerun reuses finished chunks")
    p.add_argument("--chunk-size", type=int, default=256, help="rows per resumable chunk (default 256)")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per engine call (default 64)")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts of each config (smoke runs)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``xl-suite generate`` and its flags on the CLI's subparsers."""
    p = subparsers.add_parser(
        "generate", help="answer a benchmark config with a model (or write its reference answers)",
        description="Answer every prompt of XL-AlpacaEval / m-AlpacaEval configs through a batched, resumable map "
                    "on the engine. Writes OUTPUT/<config>.jsonl. With --as-reference, fills the benchmark's "
                    "reference column instead (the paper used GPT-4o-mini) and can push it to the Hub.")
    add_engine_arguments(p)
    p.add_argument("--config", required=True,
                   help="benchmark config(s), comma-separated: xl-alpacaeval-de, m-alpacaeval-mt, ...")
    p.add_argument("--source", default=None, metavar="PATH",
                   help="source of the config: AlpacaEval prompts file (xl-alpacaeval) or translation folder "
                        "(m-alpacaeval); default: the builder's default")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for <config>.jsonl files")
    p.add_argument("--as-reference", action="store_true",
                   help="write reference answers into the benchmark's reference column")
    p.add_argument("--push", default=None, metavar="REPO_ID",
                   help="with --as-reference: push each config (split test) to this Hub dataset repo")
    p.add_argument("--template", default="answer", help="answer template name or .jinja path (default: answer)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_sampling_arguments(p)
    add_run_arguments(p)
    return p


def run(args) -> int:
    """Run ``xl-suite generate``; returns the exit code (errors raise and the CLI prints them)."""
    from pathlib import Path

    from xl_suite.datasets_api import load_dataset, parse_config_name
    from xl_suite.engines.base import SamplingConfig
    from xl_suite.evaluation import generate_answers, generate_references
    from xl_suite.sources import write_jsonl

    if args.push and not args.as_reference:
        raise InvalidArgumentError("--push publishes reference answers: use it with --as-reference.")
    configs = [c.strip() for c in args.config.split(",") if c.strip()]
    for name in configs:
        family, _, lang = parse_config_name(name)
        if family == "xl-instruct" or lang == "all":
            raise InvalidArgumentError(f"--config {name!r}: give benchmark configs of one language (xl-alpacaeval-de, "
                             "m-alpacaeval-mt, ...).")
    if len(set(configs)) != len(configs):
        raise InvalidArgumentError(f"Duplicate configs in --config {args.config!r}.")
    out = Path(args.output)
    targets = {name: out / f"{name}.jsonl" for name in configs}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not args.overwrite:
        raise OutputExistsError(f"{existing} exist; pass --overwrite to replace them.")
    sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                              seed=args.seed)
    work_dir = args.work_dir or str(out / ".work")
    generator = build_engine(args.backend, args.model, args.revision, args.engine_kwargs)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name in configs:
            ds = load_dataset(name, split="test", source=args.source)
            if args.limit is not None:
                ds = ds.select(range(min(args.limit, ds.num_rows)))
            fn = generate_references if args.as_reference else generate_answers
            result = fn(ds, generator, sampling=sampling, template=args.template, work_dir=f"{work_dir}/{name}",
                        chunk_size=args.chunk_size, batch_size=args.batch_size)
            write_jsonl(result.to_list(), targets[name])
            tokens = sum(result["completion_tokens"]) if "completion_tokens" in result.column_names else None
            print(f"{name}: {result.num_rows} {'references' if args.as_reference else 'answers'} -> {targets[name]}"
                  + (f" ({tokens} completion tokens)" if tokens is not None else ""))
            if args.push:
                from xl_suite.hub import push_config

                url = push_config(result, args.push, name, split="test")
                print(f"{name}: pushed to {args.push} ({url})")
    finally:
        generator.close()
    return 0
