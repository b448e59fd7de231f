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

from xl_suite.commands._args import add_config_file_argument, add_engine_arguments, engine_spec
from xl_suite.errors import InvalidArgumentError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``xl-suite generate``; its flags come from GenerateConfig and EngineSpec."""
    from xl_suite.configuration import add_arguments
    from xl_suite.evaluation.answers import GenerateConfig

    p = subparsers.add_parser(
        "generate",
        help="answer a benchmark config with a model (or write its reference answers)",
        description="Answer every prompt of XL-AlpacaEval / m-AlpacaEval configs through a batched, resumable map "
        "on the engine. Writes OUTPUT/<config>.jsonl. With --as-reference, fills the benchmark's "
        "reference column instead (the paper used GPT-4o-mini) and can push it to the Hub.",
    )
    add_config_file_argument(p)
    add_engine_arguments(p, title="model")
    add_arguments(p, GenerateConfig, title="generation")
    return p


def run(args) -> int:
    """Run ``xl-suite generate``; returns the exit code (errors raise and the CLI prints them)."""
    from xl_suite.commands._outputs import RUN_CONTROL, engine_settings, retry_advice, source_setting
    from xl_suite.configuration import from_args
    from xl_suite.datasets_api import load_xl_suite
    from xl_suite.evaluation.answers import GenerateConfig
    from xl_suite.output_folder import claim_output, settings_of
    from xl_suite.run.context import retrying_failed
    from xl_suite.run.policy import check_stage_failure_rates, drop_failed
    from xl_suite.safety import check_output_dir, lock_folders
    from xl_suite.status import RowStatus

    job = from_args(GenerateConfig, args)
    spec = engine_spec(args)
    if not spec.model:
        raise InvalidArgumentError("--model is required.")
    configs = job.config_names()
    out = check_output_dir(job.output)
    targets = {name: out / f"{name}.jsonl" for name in configs}
    work_dir = job.work_dir or str(out / ".work")
    settings = {
        **settings_of(job, drop={*RUN_CONTROL, "config"}),
        "source": source_setting(job.source),
        "configs": configs,
        **engine_settings(spec),
    }
    claim_args = dict(
        files=[p.name for p in targets.values()], caches=[] if job.work_dir else [".work"], overwrite=job.overwrite
    )
    if job.dry_run:  # checks the folder (what a run would do to it), writes nothing
        claim = claim_output(out, "generate", settings, dry_run=True, **claim_args)
        datasets_by_name = _load(job, configs, load_xl_suite)
        _print_estimates(job, spec, datasets_by_name)
        _print_claim(claim, dry_run=True)
        print("dry run: no request was sent.")
        return 0
    claim_output(out, "generate", settings, dry_run=True, **claim_args)  # refuse before creating anything
    spec.check()  # the key, the model: before any engine starts
    # The whole run holds its output folder and work dir: a second run fails at once, naming this one.
    with lock_folders([out], purpose="xl-suite generate"):
        datasets_by_name = _load(job, configs, load_xl_suite)  # a bad config or source fails before the claim
        claim = claim_output(out, "generate", settings, **claim_args)
        _print_claim(claim)
        with lock_folders([work_dir], purpose="xl-suite generate"):
            if spec.backend == "openai":  # a paid API: say what the run will cost before it starts
                _print_estimates(job, spec, datasets_by_name)
            with retrying_failed(job.retry_failed):
                results, failed, exhausted = _generate(job, spec, datasets_by_name, targets, work_dir)
        claim.complete(targets.values())
    status = "reference_status" if job.as_reference else "output_status"
    what = "references" if job.as_reference else "answers"
    truncated = sum(
        s == RowStatus.PROMPT_TRUNCATED for r in results.values() if status in r.column_names for s in r[status]
    )
    if truncated:
        print(
            f"{truncated} {what} were generated from a prompt truncated "
            f"to the model's context (--truncate-prompts): kept, marked {RowStatus.PROMPT_TRUNCATED} in {status}."
        )
    # Each config is a stage of its own: its share of failed rows is judged alone (one config losing a fifth of
    # its answers fails the run, whatever the others did).
    warning = check_stage_failure_rates(
        {name: (failed[name], results[name].num_rows) for name in results},
        max_error_rate=job.max_error_rate,
        what=what,
        retry=retry_advice(sum(sum(f.values()) for f in failed.values()), exhausted),
    )
    if warning:
        print(f"warning: {warning}")
    if job.push:
        import datasets

        from xl_suite.hub import publish_config

        for name, result in results.items():
            kept, _ = drop_failed(result, [status])  # failed rows are never pushed as data
            url = publish_config(job.push, name, data=datasets.DatasetDict({"test": kept}))
            print(f"{name}: pushed to {job.push} ({url})")
    return 0


def _print_claim(claim, *, dry_run: bool = False) -> None:
    line = claim.describe()
    if line:
        print(("dry run: " if dry_run else "") + line)


def _load(job, configs, load) -> dict:
    datasets_by_name = {}
    for name in configs:
        ds = load(name, split="test", source=job.source)
        datasets_by_name[name] = ds.select(range(min(job.limit, ds.num_rows))) if job.limit is not None else ds
    return datasets_by_name


def _generate(job, spec, datasets_by_name, targets, work_dir) -> tuple[dict, dict, int]:
    """Answer each config and write its file: (results with every row, failed rows by status per config, failed rows
    that used all their attempts).

    A failed row (empty, error, too long) stays in the cache, where the rerun retries it; the file holds only the
    rows that are answers.
    """
    from xl_suite.commands._outputs import cached_line, retry_advice
    from xl_suite.evaluation import generate_answers, generate_references
    from xl_suite.run.policy import drop_failed
    from xl_suite.runner import StageStats
    from xl_suite.sources import write_jsonl

    results, failed, exhausted = {}, {}, 0
    what = "references" if job.as_reference else "answers"
    status = "reference_status" if job.as_reference else "output_status"
    generator = spec.lazy()  # starts only if a chunk is not cached
    try:
        for name, ds in datasets_by_name.items():
            fn = generate_references if job.as_reference else generate_answers
            stats = StageStats(stage=what)
            result = fn(
                ds,
                generator,
                sampling=job.sampling(),
                template=job.template,
                work_dir=f"{work_dir}/{name}",
                chunk_size=job.chunk_size,
                batch_size=job.batch_size,
                stats=stats,
            )
            kept, failed[name] = drop_failed(result, [status])
            exhausted += stats.rows_exhausted
            write_jsonl(kept.to_list(), targets[name])
            results[name] = result
            tokens = sum(result["completion_tokens"]) if "completion_tokens" in result.column_names else None
            n_failed = result.num_rows - kept.num_rows
            print(
                f"{name}: {kept.num_rows} {what} -> {targets[name]} ({cached_line(stats, what)}"
                + (f"; {tokens} completion tokens" if tokens is not None else "")
                + ")"
                + (
                    f"; {n_failed} failed, not written (kept in the cache; "
                    f"{retry_advice(n_failed, stats.rows_exhausted)})"
                    if n_failed
                    else ""
                )
            )
    finally:
        generator.close()
    return results, failed, exhausted


def _print_estimates(job, spec, datasets_by_name) -> None:
    from xl_suite.costs import estimate_cost
    from xl_suite.prompting import load_template

    template = load_template(job.template)
    what = "references" if job.as_reference else "answers"
    for name, ds in datasets_by_name.items():
        convs = [template.render(instruction=x) for x in ds["instruction"]]
        estimate = estimate_cost(
            f"{name} {what}",
            spec.model,
            convs,
            max_tokens=job.max_tokens,
            price=job.price(spec.model),
            detail=f"{ds.num_rows} prompts",
            local=spec.backend not in ("openai", "fake"),
        )
        print(estimate.line(job.tokens_per_second))
