"""``xl-suite synthesize``: XL-Instruct-style training pairs from seed passages (a reconstruction of the paper's method).

    xl-suite synthesize --model PATH_OR_ID --backend vllm --seeds builtin --languages mt,sw --num-examples 100 \\
        --output out/xl-instruct [--push user/xl-instruct]

Writes ``OUTPUT/<code>.parquet`` (final pairs), ``OUTPUT/<code>_bestof3.parquet``, ``OUTPUT/en_scored.parquet`` and
``OUTPUT/summary.json``; load them with ``xl_suite.load_dataset("xl-instruct-<code>", source=OUTPUT)``. Rerunning
the same command reuses every finished chunk (``OUTPUT/.xl_suite_work``), so an interrupted run continues.
"""

from __future__ import annotations

import argparse

from xl_suite.errors import InvalidArgumentError


def _template_override(text: str) -> tuple[str, str]:
    stage, sep, path = text.partition("=")
    if not sep or not stage or not path:
        raise argparse.ArgumentTypeError(f"--template expects STAGE=PATH (e.g. score=my_score.jinja), got {text!r}")
    return stage.strip(), path.strip()


def add_parser(subparsers) -> argparse.ArgumentParser:
    from xl_suite.commands.generate import add_engine_arguments

    p = subparsers.add_parser(
        "synthesize", help="synthesize XL-Instruct-style pairs (English instruction -> target-language answer)",
        description="Seed passages -> English instruction backtranslation -> response refinement -> multi-criteria "
                    "scoring and filtering (scored) -> best-of-n target-language answers (bestof3) -> language check "
                    "and duplicate removal -> final pairs. A reconstruction of XL-Instruct (arXiv 2503.22973): the "
                    "authors' prompts, criteria and thresholds are not known. Resumable: rerun the same command to "
                    "continue.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_engine_arguments(p, what="generator model")
    add_engine_arguments(p, prefix="scorer", required=False,
                         what="scorer model for the scoring stages (default: the generator)")
    g = p.add_argument_group("seeds and output")
    g.add_argument("--seeds", default="builtin",
                   help="seed passages: 'builtin' (40 project-written passages), a file/folder path or fsspec URL "
                        "(.jsonl/.json/.parquet/.csv/.txt), or a Hub dataset id")
    g.add_argument("--text-column", default="text", help="column of the seed dataset holding the passages")
    g.add_argument("--id-column", default=None, help="column with row ids (default: 'id' when present)")
    g.add_argument("--seeds-config", default=None, help="config (subset) of a Hub seed dataset")
    g.add_argument("--seeds-split", default="train", help="split of a Hub seed dataset")
    g.add_argument("--languages", required=True, help="target languages, comma-separated (e.g. mt,sw)")
    g.add_argument("--num-examples", type=int, default=None,
                   help="final pairs wanted per language (default: all the seeds give); a shortfall is reported")
    g.add_argument("--max-seeds", type=int, default=None,
                   help="seed passages used at most (default: num-examples x oversample, or all)")
    g.add_argument("--oversample", type=float, default=4.0, help="seeds per wanted example without --max-seeds")
    g.add_argument("--output", required=True, metavar="DIR", help="output folder or fsspec URL")
    g.add_argument("--work-dir", default=None, help="resumable chunk folder/URL (default: OUTPUT/.xl_suite_work)")
    g.add_argument("--storage-options", default=None, metavar="JSON",
                   help="fsspec storage options (JSON) for seeds, output and work dir")
    g.add_argument("--push", default=None, metavar="REPO_ID",
                   help="push each language as config xl-instruct-<code> to this Hub dataset repo")
    g.add_argument("--private", action="store_true", help="with --push: create the repo as private")
    s = p.add_argument_group("stages")
    s.add_argument("--n-candidates", type=int, default=3, help="target-language candidates per pair (best-of-n)")
    s.add_argument("--threshold", type=float, default=3.5, help="minimum English score (1-5) to keep a pair")
    s.add_argument("--aggregate", choices=["mean", "min"], default="mean", help="how criteria scores combine")
    s.add_argument("--target-threshold", type=float, default=None,
                   help="minimum score of the best candidate (default: keep the best whatever its score)")
    s.add_argument("--no-language-filter", action="store_true",
                   help="keep answers not identified as the target language (the check is still recorded and "
                        "reported); for demos with a tiny random model")
    s.add_argument("--min-language-prob", type=float, default=0.5, help="minimum language-identifier probability")
    s.add_argument("--no-dedup", action="store_true", help="keep duplicate instructions/answers")
    s.add_argument("--template", action="append", type=_template_override, default=[], metavar="STAGE=PATH",
                   help="replace a stage's template (repeatable): backtranslate, refine, score, respond, judge")
    d = p.add_argument_group("decoding and batching")
    d.add_argument("--max-tokens", type=int, default=512, help="maximum new tokens per completion")
    d.add_argument("--temperature", type=float, default=0.8, help="temperature of the candidates (others: greedy)")
    d.add_argument("--top-p", type=float, default=0.95, help="nucleus mass of the candidates")
    d.add_argument("--seed", type=int, default=0, help="sampling seed")
    d.add_argument("--batch-size", type=int, default=256, help="prompts per engine call")
    d.add_argument("--chunk-size", type=int, default=1024, help="rows per resumable chunk")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _engine(backend, model, revision, engine_kwargs):
    from xl_suite.commands.generate import build_engine, parse_engine_kwargs

    if backend == "fake":
        from xl_suite.engines.fake import FakeGenerator, FakeSynthesisResponder

        kwargs = parse_engine_kwargs(engine_kwargs) if isinstance(engine_kwargs, str) else dict(engine_kwargs or {})
        return FakeGenerator(FakeSynthesisResponder(**kwargs), model=model, revision=revision)
    return build_engine(backend, model, revision, engine_kwargs)


def config_from_args(args):
    """Build the :class:`~xl_suite.synthesis.SynthesisConfig` of a parsed command line."""
    from xl_suite.synthesis import SynthesisConfig

    templates = dict(args.template)
    if len(templates) != len(args.template):
        raise InvalidArgumentError(f"--template given twice for the same stage: {args.template}")
    return SynthesisConfig(
        languages=args.languages, num_examples=args.num_examples, max_seeds=args.max_seeds,
        oversample=args.oversample, n_candidates=args.n_candidates, threshold=args.threshold,
        aggregate=args.aggregate, target_threshold=args.target_threshold,
        language_filter=not args.no_language_filter, min_language_prob=args.min_language_prob,
        dedup=not args.no_dedup, max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
        seed=args.seed, batch_size=args.batch_size, chunk_size=args.chunk_size, templates=templates,
    )


def run(args, *, generator=None, scorer=None) -> int:
    """Run the command; ``generator``/``scorer`` inject ready engines (tests share one engine this way)."""
    import json

    import datasets

    from xl_suite.commands.generate import parse_engine_kwargs
    from xl_suite.synthesis import format_summary, preflight, synthesize
    from xl_suite.synthesis.seeds import check_text_column, load_seeds

    config = config_from_args(args)  # validate everything that can be validated before any engine starts
    preflight(config)
    storage_options = parse_engine_kwargs(args.storage_options) if args.storage_options else None
    if storage_options is not None and not isinstance(storage_options, dict):
        raise InvalidArgumentError(f"--storage-options must be a JSON object, got {args.storage_options!r}.")
    if args.push:
        from xl_suite.hub import check_online

        check_online(f"push the synthesized configs to {args.push!r}")  # before hours of generation
    seeds = load_seeds(args.seeds, split=args.seeds_split, config_name=args.seeds_config,
                       storage_options=storage_options)
    check_text_column(seeds, args.text_column)
    owned = []
    if generator is None:
        generator = _engine(args.backend, args.model, args.revision, args.engine_kwargs)
        owned.append(generator)
    if scorer is None and args.scorer_model:
        scorer = _engine(args.scorer_backend or args.backend, args.scorer_model, args.scorer_revision,
                         args.scorer_engine_kwargs)
        owned.append(scorer)
    if not args.no_progress:
        datasets.disable_progress_bars()  # one bar over the seeds instead of one per chunk and stage
    try:
        result = synthesize(
            seeds, generator, config, output=args.output, work_dir=args.work_dir, storage_options=storage_options,
            scorer=scorer, text_column=args.text_column, id_column=args.id_column, progress=not args.no_progress,
            seed_source=args.seeds,
        )
    finally:
        for engine in owned:
            engine.close()
    print(format_summary(result.summary))
    for name in sorted(result.files):
        print(f"wrote {result.files[name]}")
    codes = list(config.languages)
    print(f"Load with: xl_suite.load_dataset('xl-instruct-{codes[0]}', source={args.output!r})")
    if args.push:
        from xl_suite.publish import publish_config

        for code in codes:
            name = f"xl-instruct-{code}"
            url = publish_config(args.push, name, source=args.output, private=args.private,
                                 storage_options=storage_options)
            print(f"{name}: pushed to {args.push} ({url})")
    short = {c: v["shortfall"] for c, v in result.summary["languages"].items() if v["shortfall"]}
    if short:
        print(f"note: fewer pairs than --num-examples for {json.dumps(short)}; see the stage table above.")
    return 0
