"""``xl-suite translate``: machine-translate the XL-AlpacaEval prompts into m-AlpacaEval files.

    xl-suite translate --model gpt-4o-2024-08-06 --backend openai --languages de,mt --source alpaca_eval.json \\
        --output m_alpacaeval/
    xl_suite.load_xl_suite("m-alpacaeval-de", split="test", source="m_alpacaeval/")

Writes ``OUTPUT/<code>.jsonl`` per language, the layout the m-AlpacaEval builder reads.
"""

from __future__ import annotations

import argparse

from xl_suite.commands._args import add_config_file_argument, add_engine_arguments, engine_spec
from xl_suite.errors import InvalidArgumentError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``xl-suite translate``; its flags come from TranslateConfig and EngineSpec."""
    from xl_suite.configuration import add_arguments
    from xl_suite.evaluation.translation import TranslateConfig

    p = subparsers.add_parser(
        "translate",
        help="translate the benchmark prompts into m-AlpacaEval files",
        description="Translate the 797 kept English AlpacaEval prompts into each language with an LLM (template "
        "translate_instruction; the paper used GPT-4o) as a batched, resumable map. Writes "
        "OUTPUT/<code>.jsonl, loadable as m-alpacaeval-<code> with source=OUTPUT.",
    )
    add_config_file_argument(p)
    add_engine_arguments(p, title="translation model")
    add_arguments(p, TranslateConfig, title="translation")
    return p


def run(args) -> int:
    """Run ``xl-suite translate``; returns the exit code (errors raise and the CLI prints them)."""
    from xl_suite.commands._outputs import RUN_CONTROL, cached_line, engine_settings, retry_advice, source_setting
    from xl_suite.configuration import from_args
    from xl_suite.evaluation import english_prompts, translate_prompts, write_m_alpacaeval
    from xl_suite.evaluation.translation import TranslateConfig
    from xl_suite.languages import resolve_languages
    from xl_suite.output_folder import claim_output, settings_of
    from xl_suite.run.context import retrying_failed
    from xl_suite.run.policy import check_stage_failure_rates, drop_failed
    from xl_suite.runner import StageStats
    from xl_suite.safety import check_output_dir, lock_folders
    from xl_suite.status import RowStatus

    job = from_args(TranslateConfig, args)
    spec = engine_spec(args)
    if not spec.model:
        raise InvalidArgumentError("--model is required.")
    specs = resolve_languages(job.languages)
    out = check_output_dir(job.output)
    names = [f"{s.code}.jsonl" for s in specs]
    work_dir = job.work_dir or str(out / ".work")
    settings = {
        **settings_of(job, drop={*RUN_CONTROL, "languages"}),
        "languages": [s.code for s in specs],
        "source": source_setting(job.source),
        **engine_settings(spec),
    }
    claim_args = dict(files=names, caches=[] if job.work_dir else [".work"], overwrite=job.overwrite)
    if job.dry_run:  # checks the folder (what a run would do to it), writes nothing
        claim = claim_output(out, "translate", settings, dry_run=True, **claim_args)
        _print_estimate(job, spec, specs, english_prompts(job.source, limit=job.limit))
        if claim.describe():
            print(f"dry run: {claim.describe()}")
        print("dry run: no request was sent.")
        return 0
    claim_output(out, "translate", settings, dry_run=True, **claim_args)  # refuse before creating anything
    spec.check()  # the key, the model: before any engine starts
    # The whole run holds its output folder and work dir: a second run fails at once, naming this one.
    with lock_folders([out], purpose="xl-suite translate"):
        prompts = english_prompts(job.source, limit=job.limit)  # a bad source fails before the claim
        claim = claim_output(out, "translate", settings, **claim_args)
        if claim.describe():
            print(claim.describe())
        with lock_folders([work_dir], purpose="xl-suite translate"):
            if spec.backend == "openai":  # a paid API: say what the run will cost before it starts
                _print_estimate(job, spec, specs, prompts)
            generator = spec.lazy()  # starts only if a chunk is not cached
            stats = StageStats(stage="translate")
            with retrying_failed(job.retry_failed):
                try:
                    translations = translate_prompts(
                        prompts,
                        generator,
                        [s.code for s in specs],
                        sampling=job.sampling(),
                        template=job.template,
                        work_dir=work_dir,
                        chunk_size=job.chunk_size,
                        batch_size=job.batch_size,
                        stats=stats,
                    )
                finally:
                    generator.close()
        # A failed translation (empty, error...) stays in the cache for the retry; it is never written as a prompt.
        kept, failed = {}, {}
        for code, ds in translations.items():
            kept[code], failed[code] = drop_failed(ds, ["translation_status"])
        paths = write_m_alpacaeval(kept, out, overwrite=True)  # the claim decided
        claim.complete(paths.values())
    for code, path in paths.items():
        status = kept[code]["translation_status"]
        flagged = sum(s != RowStatus.OK for s in status)
        n_failed = sum(failed[code].values())
        print(
            f"{code}: {len(status)} prompts -> {path}"
            + (f" ({flagged} truncated or from a truncated prompt, kept and marked)" if flagged else "")
            + (f"; {n_failed} failed, not written (kept in the cache)" if n_failed else "")
        )
    print(f"translations: {cached_line(stats, 'translations')}")
    print(f'Load with: xl_suite.load_xl_suite("m-alpacaeval-{specs[0].code}", split="test", source="{out}")')
    # Each language is a stage of its own: its share of failed rows is judged alone.
    warning = check_stage_failure_rates(
        {f"translate {code}": (failed[code], ds.num_rows) for code, ds in translations.items()},
        max_error_rate=job.max_error_rate,
        what="translations",
        retry=retry_advice(sum(sum(f.values()) for f in failed.values()), stats.rows_exhausted),
    )
    if warning:
        print(f"warning: {warning}")
    return 0


def _print_estimate(job, spec, specs, prompts) -> None:
    from xl_suite.costs import estimate_cost
    from xl_suite.prompting import load_template

    template = load_template(job.template)
    convs = [template.render(text=text, language=lang) for lang in specs for text in prompts["english_instruction"]]
    print(
        estimate_cost(
            "translation",
            spec.model,
            convs,
            max_tokens=job.max_tokens,
            price=job.price(spec.model),
            detail=f"{prompts.num_rows} prompts x {len(specs)} languages",
            local=spec.backend not in ("openai", "fake"),
        ).line(job.tokens_per_second)
    )
