"""``xl-suite synthesize``: XL-Instruct-style training pairs from seed passages (a reconstruction of the paper's method).

    xl-suite synthesize --model PATH_OR_ID --backend vllm --seeds builtin --languages mt,sw --num-examples 100 \\
        --output out/xl-instruct [--push user/xl-instruct]

Writes ``OUTPUT/<code>.parquet`` (final pairs), ``OUTPUT/<code>_bestof3.parquet``, ``OUTPUT/en_scored.parquet`` and
``OUTPUT/summary.json``; load them with ``xl_suite.load_xl_suite("xl-instruct-<code>", source=OUTPUT)``. Rerunning
the same command reuses every finished chunk (``OUTPUT/.xl_suite_work``), so an interrupted run continues.
"""

from __future__ import annotations

import argparse

from xl_suite.commands._args import add_config_file_argument, add_engine_arguments, engine_spec
from xl_suite.errors import InvalidArgumentError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``xl-suite synthesize``; its flags come from SynthesisConfig, SynthesisRunOptions and EngineSpec."""
    from xl_suite.configuration import add_arguments
    from xl_suite.synthesis.config import SynthesisConfig, SynthesisRunOptions

    p = subparsers.add_parser(
        "synthesize",
        help="synthesize XL-Instruct-style pairs (English instruction -> target-language answer)",
        description="Seed passages -> English instruction backtranslation -> response refinement -> benchmark "
        "decontamination -> multi-criteria scoring and filtering (scored) -> best-of-n target-language answers "
        "(bestof3) -> language check, decontamination, exact and near-duplicate removal -> final pairs. "
        "With --push, each language's config is published with typed provenance and its recipe "
        "(recipes/<config>/config.yaml, rerun with --config-file). A reconstruction of XL-Instruct (arXiv 2503.22973): the "
        "authors' prompts, criteria and thresholds are not known. Resumable: rerun the same command to "
        "continue.",
    )
    add_config_file_argument(p)
    add_engine_arguments(p, title="generator model")
    add_engine_arguments(p, prefix="scorer", title="scorer model for the scoring stages (default: the generator)")
    add_arguments(p, SynthesisRunOptions, title="seeds and output")
    add_arguments(p, SynthesisConfig, title="stages, decoding and batching")
    return p


def _engine(spec):
    if spec.backend == "fake":
        from xl_suite.engines.fake import FakeGenerator, FakeSynthesisResponder

        kwargs = dict(spec.engine_kwargs)
        engine_keys = ("delay", "empty_every", "concurrent_calls", "context_tokens", "truncate_prompts")
        engine_kw = {k: kwargs.pop(k) for k in engine_keys if k in kwargs}
        unknown = sorted(set(kwargs) - {"unparseable_every", "low_score_every"})
        if unknown:
            raise InvalidArgumentError(
                f"--engine-kwargs: unknown keys {unknown} for the fake synthesis engine. Allowed: "
                f"{sorted({*engine_keys, 'low_score_every', 'unparseable_every'})}."
            )
        return FakeGenerator(FakeSynthesisResponder(**kwargs), model=spec.model, revision=spec.revision, **engine_kw)
    return spec.build()


def config_from_args(args):
    """The :class:`~xl_suite.synthesis.SynthesisConfig` of a parsed command line."""
    from xl_suite.configuration import from_args
    from xl_suite.synthesis import SynthesisConfig

    return from_args(SynthesisConfig, args)


def run(args, *, generator=None, scorer=None) -> int:
    """Run the command; ``generator``/``scorer`` inject ready engines (tests share one engine this way)."""
    import contextlib
    import dataclasses
    import json

    import datasets

    from xl_suite.configuration import from_args
    from xl_suite.output_folder import claim_output
    from xl_suite.run.context import retrying_failed
    from xl_suite.safety import lock_folders
    from xl_suite.synthesis import format_summary, plan_synthesis
    from xl_suite.synthesis.config import SynthesisRunOptions
    from xl_suite.synthesis.report import check_failures
    from xl_suite.synthesis.seeds import check_text_column, load_seeds

    config = config_from_args(args)  # validate everything that can be validated before any engine starts
    options = from_args(SynthesisRunOptions, args)
    from xl_suite.commands._ray import check_executor

    check_executor(options.executor, options.num_actors, options.num_gpus_per_actor)
    gen_spec, scorer_spec = engine_spec(args), engine_spec(args, prefix="scorer")
    if generator is None and not gen_spec.model:
        raise InvalidArgumentError("--model is required (the generator model).")
    if scorer_spec.truncate_prompts and not scorer_spec.model:
        raise InvalidArgumentError(
            "--scorer-truncate-prompts applies to a separate scorer: give --scorer-model too, or use "
            "--truncate-prompts (the scoring stages then use the generator, which truncates)."
        )
    plan = plan_synthesis(config)  # stages, templates and benchmark: resolved and checked once, passed down
    storage_options = options.storage_options
    local = "://" not in str(options.output)
    if local:
        from xl_suite.safety import check_output_dir

        check_output_dir(options.output)
    if options.push:
        from xl_suite.hub import check_online

        check_online(f"push the synthesized configs to {options.push!r}")  # before hours of generation
    seeds = load_seeds(
        options.seeds, split=options.seeds_split, config_name=options.seeds_config, storage_options=storage_options
    )
    check_text_column(seeds, options.text_column)
    if options.dry_run or gen_spec.backend == "openai" or scorer_spec.backend == "openai":
        _print_estimates(config, options, seeds, gen_spec, scorer_spec)
    if options.dry_run:
        if local:
            claim = claim_output(
                options.output,
                "synthesize",
                _settings(config, options, gen_spec, scorer_spec),
                overwrite=options.overwrite,
                files=_files(config),
                caches=[] if options.work_dir else [".xl_suite_work"],
                dry_run=True,
            )
            if claim.describe():
                print(f"dry run: {claim.describe()}")
        print("dry run: no request was sent, nothing was written.")
        return 0
    if generator is None:
        gen_spec.check()  # the key, the model: before any engine starts
    if scorer is None and scorer_spec.model:
        dataclasses.replace(scorer_spec, backend=scorer_spec.backend or gen_spec.backend).check()
    owned = []
    if generator is None:  # engines start only when a chunk is not cached
        generator = gen_spec.lazy(factory=lambda: _engine(gen_spec))
        owned.append(generator)
    if scorer is None and scorer_spec.model:
        scorer_spec = dataclasses.replace(scorer_spec, backend=scorer_spec.backend or gen_spec.backend)
        scorer = scorer_spec.lazy(factory=lambda: _engine(scorer_spec))
        owned.append(scorer)
    with contextlib.ExitStack() as stack:
        if options.progress and datasets.is_progress_bar_enabled():
            # One bar over the seeds instead of one per chunk and stage, for this command only: the switch is put
            # back when it ends (main() may run inside the caller's process).
            datasets.disable_progress_bars()
            stack.callback(datasets.enable_progress_bars)
        claim = None
        if local:  # the one output rule (remote outputs: a rerun resumes, as from Python)
            settings = _settings(config, options, gen_spec, scorer_spec)
            claim_args = dict(
                overwrite=options.overwrite,
                files=_files(config),
                caches=[] if options.work_dir else [".xl_suite_work"],
            )
            claim_output(options.output, "synthesize", settings, dry_run=True, **claim_args)  # before any file
            stack.enter_context(lock_folders([options.output], purpose="xl-suite synthesize"))
            claim = claim_output(options.output, "synthesize", settings, **claim_args)
            if claim.describe():
                print(claim.describe())
        with retrying_failed(options.retry_failed):
            if options.executor == "ray":
                result = _run_on_ray(args, options, config, seeds, gen_spec, scorer_spec, owned, storage_options)
            else:
                result = _run(options, config, seeds, generator, scorer, owned, storage_options, plan)
        if claim is not None:
            claim.complete(result.files.values())
    print(format_summary(result.summary))
    for name in sorted(result.files):
        print(f"wrote {result.files[name]}")
    codes = list(config.languages)
    print(f"Load with: xl_suite.load_xl_suite('xl-instruct-{codes[0]}', source={options.output!r})")
    retry = "rerunning the same command retries them (up to 3 attempts per row; after that, with --retry-failed)"
    warning = check_failures(
        result.summary, options.max_error_rate, retry=retry
    )  # everything is written; raises above it
    if warning:
        print(f"warning: {warning}")
    if options.push:
        from xl_suite.hub import publish_config

        for code in codes:
            name = f"xl-instruct-{code}"
            url = publish_config(
                options.push, name, source=options.output, private=options.private, storage_options=storage_options
            )
            print(f"{name}: pushed to {options.push} ({url})")
    short = {c: v["shortfall"] for c, v in result.summary["languages"].items() if v["shortfall"]}
    if short:
        print(f"note: fewer pairs than --num-examples for {json.dumps(short)}; see the stage table above.")
    return 0


def _run(options, config, seeds, generator, scorer, owned, storage_options, plan=None):
    from xl_suite.synthesis import synthesize

    try:
        return synthesize(
            seeds,
            generator,
            config,
            output=options.output,
            work_dir=options.work_dir,
            storage_options=storage_options,
            scorer=scorer,
            text_column=options.text_column,
            id_column=options.id_column,
            progress=options.progress,
            seed_source=options.seeds,
            plan=plan,
        )
    finally:
        for engine in owned:
            engine.close()


def _settings(config, options, gen_spec, scorer_spec) -> dict:
    """What determines a synthesis output (a rerun with the same resumes; other settings need --overwrite)."""
    from xl_suite.commands._outputs import RUN_CONTROL, engine_settings, source_setting
    from xl_suite.output_folder import settings_of

    return {
        **settings_of(config, drop={"batch_size"}),
        **settings_of(options, drop=RUN_CONTROL),
        "seeds": source_setting(options.seeds),
        **engine_settings(gen_spec),
        **engine_settings(scorer_spec, prefix="scorer_"),
    }


def _files(config) -> list[str]:
    codes = list(config.languages)
    return [
        "summary.json",
        "en_scored.parquet",
        *(f"{c}.parquet" for c in codes),
        *(f"{c}_bestof3.parquet" for c in codes),
    ]


def _print_estimates(config, options, seeds, gen_spec, scorer_spec) -> None:
    """Requests and tokens per stage (upper bounds), dollars for API models, engine-hours for local ones."""
    from xl_suite.costs import format_estimates, list_price
    from xl_suite.synthesis.estimate import estimate_synthesis, seeds_note

    texts = seeds[options.text_column]
    scorer_backend = scorer_spec.backend or gen_spec.backend
    estimates = estimate_synthesis(
        config,
        texts,
        model=gen_spec.model,
        scorer_model=scorer_spec.model,
        price=list_price(gen_spec.model),
        scorer_price=list_price(scorer_spec.model),
        local=gen_spec.backend != "openai",
        scorer_local=scorer_backend != "openai",
    )
    print(
        f"estimate for {len(texts):,} seed passages (upper bounds: every seed kept, every completion at max tokens):"
    )
    print(format_estimates(estimates, options.tokens_per_second))
    note = seeds_note(config, len(texts))
    if note:
        print(note)


def _run_on_ray(args, options, config, seeds, gen_spec, scorer_spec, owned, storage_options):
    """The same run on a pool of Ray actors (:func:`xl_suite.synthesis.ray.synthesize_ray`); the driver starts no
    engine. The failure check is the command's, as for a local run."""
    import functools

    from xl_suite.commands._ray import ray_session
    from xl_suite.synthesis.ray import synthesize_ray

    for engine in owned:  # lazy engines of the local path: never started here
        engine.close()

    def engine(spec):
        return functools.partial(_engine, spec) if spec.backend == "fake" else spec

    remote = {"num_gpus": options.num_gpus_per_actor} if options.num_gpus_per_actor else None
    verbose = bool(getattr(args, "verbose", False))
    with ray_session(num_actors=options.num_actors, address=options.ray_address, verbose=verbose):
        return synthesize_ray(
            seeds,
            engine(gen_spec),
            config,
            scorer=engine(scorer_spec) if scorer_spec.model else None,
            output=options.output,
            work_dir=options.work_dir,
            storage_options=storage_options,
            text_column=options.text_column,
            id_column=options.id_column,
            num_actors=options.num_actors,
            ray_remote_args=remote,
            max_error_rate=None,  # checked below, after the summary is printed, as for a local run
        )
