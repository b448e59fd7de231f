"""``xl-suite evaluate``: judge model answers against references and write the report.

    xl-suite evaluate --model-outputs answers/ --references refs/ --judge-backend vllm --judge-model JUDGE \\
        --output report/
    xl-suite evaluate --model-outputs answers/ --references refs/ --judge-preset gpt-4o --output report/
    xl-suite evaluate --model-outputs answers/ --output report/          # no judge: language fidelity only
    xl-suite evaluate --model-outputs model_outputs.json --language de --references reference_outputs.json \
        --judge-preset gpt-4o --output report/                            # alpaca_eval files as they are
    xl-suite evaluate --model-outputs annotations.json --language de --output report/   # alpaca_eval judgments

alpaca_eval's ``model_outputs.json`` and ``annotations.json`` are read as they are: rows are matched to XL-AlpacaEval
by instruction text and language (``--language`` for a file without a language column); unmatched rows are counted,
sampled, printed and written in the report. ``leaderboard.csv`` uses alpaca_eval's column names with alpaca_eval's
meanings: ``length_controlled_winrate`` is alpaca_eval's ``length_controlled_v1``, filled only for alpaca_eval's own
annotations when its ``df_gamed.csv`` is in huggingface_hub's cache; ``lc_minimal_winrate`` is the
``length_controlled_minimal`` GLM computed for every evaluation.

Prints a table per language and writes ``report.md``, ``leaderboard.csv`` and ``win_rates.png`` (plus per-sample
and per-judgment files, and alpaca_eval's ``annotations.json`` and ``model_outputs.json``) to the output folder. Judgments are cached under ``OUTPUT/annotations`` (``--cache-dir``):
a rerun makes zero judge calls.
"""

from __future__ import annotations

import argparse

from xl_suite.commands._args import add_config_file_argument, add_engine_arguments, engine_spec
from xl_suite.errors import InvalidArgumentError


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``xl-suite evaluate``; its flags come from EvaluateConfig and the judge's EngineSpec."""
    from xl_suite.configuration import add_arguments
    from xl_suite.evaluation.results import EvaluateConfig

    p = subparsers.add_parser(
        "evaluate",
        help="judge answers against references; per-language win rates, fidelity, report",
        description="Pairwise LLM judge (both orders by default) of model answers against reference answers, "
        "rubric scores and offline language fidelity, per language; prints the table and writes a "
        "Markdown + CSV leaderboard and a PNG plot. Without a judge, only language fidelity is "
        "computed. The judge prompt, tie rule and rubric are a reconstruction (the paper's are "
        "unknown).",
    )
    add_config_file_argument(p)
    add_arguments(p, EvaluateConfig, title="evaluation")
    add_engine_arguments(p, prefix="judge", title="judge model")
    return p


def run(args) -> int:
    """Run ``xl-suite evaluate``; returns the exit code (errors raise and the CLI prints them)."""
    import dataclasses

    from xl_suite.configuration import from_args
    from xl_suite.evaluation import align_references, read_rows
    from xl_suite.evaluation.results import EvaluateConfig
    from xl_suite.languages import get_language, resolve_languages
    from xl_suite.output_folder import claim_output
    from xl_suite.safety import check_output_dir, lock_folders

    job = from_args(EvaluateConfig, args)
    from xl_suite.commands._ray import check_executor

    check_executor(job.executor, job.num_actors, job.num_gpus_per_actor)
    judge_spec = engine_spec(args, prefix="judge")
    out = check_output_dir(job.output)
    model_rows = read_rows(job.model_outputs)
    if not model_rows:
        raise InvalidArgumentError(f"{job.model_outputs!r} holds no rows.")
    if job.judges and (job.judge_preset or judge_spec.model or judge_spec.backend or judge_spec.revision):
        raise InvalidArgumentError(
            "--judge names each jury member (PRESET or PRESET=MODEL); drop --judge-preset/--judge-model/"
            "--judge-backend/--judge-revision, or give the one judge with them instead of --judge."
        )
    use_judge = bool(job.judge_preset or judge_spec.model or job.judges)
    if judge_spec.backend and not use_judge:
        raise InvalidArgumentError("--judge-backend needs --judge-model (or --judge-preset).")
    model_rows, alpaca_eval_info = _read_alpaca_eval(model_rows, job, what=job.model_outputs)
    annotated = alpaca_eval_info is not None and alpaca_eval_info["kind"] == "annotations"
    if not annotated:
        _require_output_column(model_rows, job.model_outputs)
    if annotated and use_judge:
        raise InvalidArgumentError(
            f"{job.model_outputs!r} is an alpaca_eval annotations file: its judgments are "
            "already made. Drop --judge-model/--judge-preset, or pass the model_outputs.json."
        )
    if job.languages:
        keep = {s.code for s in resolve_languages(job.languages, allow_english=True)}
        model_rows = [r for r in model_rows if get_language(r.get("language", "")).code in keep]
        if not model_rows:
            raise InvalidArgumentError(f"No model output is in --languages {job.languages!r}.")
    model_name = job.model_name or _model_name(model_rows, job.model_outputs)

    preset = judge = None
    presets: list = []
    warnings: list[str] = []
    if use_judge:
        if not job.references:
            raise InvalidArgumentError("A judge compares answers with references: pass --references DIR_OR_FILE.")
        reference_rows, _ = _read_alpaca_eval(read_rows(job.references), job, what=job.references)
        rows = align_references(model_rows, reference_rows)
        missing = [r["id"] for r in rows if not (r.get("instruction") or "").strip()]
        if missing:
            raise InvalidArgumentError(
                f"{len(missing)} row(s) have no instruction (e.g. {missing[:3]}); the judge needs the "
                "prompt. Use outputs written by `xl-suite generate`, which keep it."
            )
        for warning in reference_language_warnings(rows):  # before any judge starts; also in the report
            print(f"warning: {warning}")
            warnings.append(warning)
        presets = _presets(job, judge_spec)
        preset = presets[0]
        paid = any(p.judge_backend == "openai" for p in presets)
        if job.dry_run or paid:  # a paid API: say what judging costs before it starts
            from xl_suite.evaluation.judging import estimate_judging_cost

            for p in presets:
                cfg = p.judge
                price = (
                    (cfg.price_input_per_mtok, cfg.price_output_per_mtok)
                    if cfg.price_input_per_mtok is not None
                    else None
                )
                for estimate in estimate_judging_cost(
                    [r["instruction"] for r in rows],
                    [r["output"] for r in rows],
                    [r["reference"] for r in rows],
                    [r["language"] for r in rows],
                    config=cfg,
                    judge_model=p.judge_model,
                    price=price,
                ):
                    local = p.judge_backend not in ("openai", "fake")
                    print(dataclasses.replace(estimate, local=local).line(job.tokens_per_second))
            if job.dry_run:
                claim = claim_output(
                    out,
                    "evaluate",
                    _settings(job, judge_spec, preset),
                    overwrite=job.overwrite,
                    caches=[] if job.cache_dir else ["annotations"],
                    dry_run=True,
                )
                if claim.describe():
                    print(f"dry run: {claim.describe()}")
                print("dry run: no request was sent.")
                return 0
        judges = [_lazy_judge(p, judge_spec) for p in presets]  # each starts only if one of its judgments is missing
        judge = judges if job.judges else judges[0]
    else:
        rows = [
            {
                "id": str(r.get("id", i)),
                "language": r["language"],
                "output": r.get("output") or "",
                "instruction": r.get("instruction"),
                "reference": r.get("reference"),
            }
            for i, r in enumerate(model_rows)
        ]
    annotators = sorted({str(r.get("annotator")) for r in model_rows if r.get("annotator")}) if annotated else []
    cache_dir = job.cache_dir or str(out / "annotations")
    settings = _settings(job, judge_spec, preset)
    claim_args = dict(overwrite=job.overwrite, caches=[] if job.cache_dir else ["annotations"])
    claim_output(out, "evaluate", settings, dry_run=True, **claim_args)  # refuse before creating anything
    # The whole run holds its report folder and judge cache: a second run on either fails at once, naming this one.
    with lock_folders([out], purpose="xl-suite evaluate"):
        claim = claim_output(out, "evaluate", settings, **claim_args)
        if claim.describe():
            print(claim.describe())
        with lock_folders([cache_dir if judge is not None else None], purpose="xl-suite evaluate"):
            return _evaluate_locked(
                job,
                rows,
                model_rows,
                judge,
                presets,
                annotated,
                annotators,
                model_name,
                cache_dir,
                alpaca_eval_info,
                out,
                claim,
                warnings,
            )


def _presets(job, judge_spec) -> list:
    """The judge presets: one (``--judge-preset``/``--judge-model``), or one per ``--judge`` (a jury)."""
    from xl_suite.evaluation.presets import load_preset

    common = dict(
        order=job.order,
        rubric=None if job.rubric else False,
        structured_output=None if job.structured_output else False,
        temperature=job.judge_temperature,
    )
    if not job.judges:
        return [
            load_preset(
                job.judge_preset or "local-vllm",
                judge_model=judge_spec.model,
                judge_backend=judge_spec.backend,
                judge_revision=judge_spec.revision,
                **common,
            )
        ]
    presets = []
    for member in job.judges:
        name, _, model = member.partition("=")
        if not name.strip():
            raise InvalidArgumentError(f"--judge {member!r} names no preset: give PRESET or PRESET=MODEL.")
        presets.append(load_preset(name.strip(), judge_model=model.strip() or None, **common))
    return presets


def _lazy_judge(preset, judge_spec):
    """The preset's judge engine, checked now (key, model) and started only when a judgment is not cached."""
    from xl_suite.engines.spec import EngineSpec

    if not preset.judge_model:
        raise InvalidArgumentError(
            f"Preset {preset.name!r} names no judge model: pass --judge-model (or --judge {preset.name}=MODEL)."
        )
    resolved = EngineSpec(
        model=preset.judge_model,
        backend=preset.judge_backend,
        revision=preset.judge_revision,
        engine_kwargs={**preset.judge_engine_kwargs, **judge_spec.engine_kwargs},
    )
    resolved.check()  # the key, the model: before any engine starts
    return resolved.lazy(factory=lambda: preset.build_judge(**judge_spec.engine_kwargs))


def _settings(job, judge_spec, preset) -> dict:
    """What determines the report (a rerun with the same resumes; other settings need --overwrite).

    A jury's members are not among them: each judge keeps its own judgments in the cache, so a rerun with a judge
    added (or one left out) judges only what is new and rewrites the report, never re-judging the others.
    """
    from xl_suite.commands._outputs import RUN_CONTROL, engine_settings, source_setting
    from xl_suite.output_folder import settings_of

    settings = settings_of(job, drop=(*RUN_CONTROL, "judges"))
    for key in ("model_outputs", "references", "alpaca_eval_source"):
        settings[key] = source_setting(settings.get(key))
    settings.update(engine_settings(judge_spec, prefix="judge_"))
    if job.judges:
        settings["preset"] = "jury"
    elif preset is not None:
        settings["preset"] = f"{preset.name} v{preset.version}"
    return settings


def _evaluate_locked(
    job,
    rows,
    model_rows,
    judge,
    presets,
    annotated,
    annotators,
    model_name,
    cache_dir,
    alpaca_eval_info,
    out,
    claim,
    warnings=(),
) -> int:
    from xl_suite.evaluation import evaluate_responses, write_report
    from xl_suite.run.context import retrying_failed

    preset = presets[0] if presets else None
    try:
        with _executor(job, judge), retrying_failed(job.retry_failed):
            result = evaluate_responses(
                [r["output"] for r in rows],
                [r["language"] for r in rows],
                references=[r["reference"] for r in rows] if judge is not None or annotated else None,
                instructions=[r["instruction"] for r in rows] if all(r.get("instruction") for r in rows) else None,
                ids=[r["id"] for r in rows],
                judge=judge,
                config=[p.judge for p in presets] if isinstance(judge, list) else (preset.judge if preset else None),
                cache_dir=cache_dir,
                model_name=model_name,
                preset=", ".join(f"{p.name} v{p.version}" for p in presets) if presets else None,
                n_resamples=job.n_resamples,
                seed=job.seed,
                lc_method=job.lc_method,
                preferences=[r["probability"] for r in model_rows] if annotated else None,
                annotator=", ".join(annotators) or None,
            )
    finally:
        for engine in judge if isinstance(judge, list) else [judge] if judge is not None else []:
            engine.close()
    from xl_suite.evaluation.alpaca_eval import add_length_controlled_v1, describe_items

    describe_items(result, rows if judge is not None else model_rows)  # dataset, generators for alpaca_eval's files
    if annotated:  # alpaca_eval's own length_controlled_v1 where it applies (its df_gamed.csv in the HF cache)
        add_length_controlled_v1(result, model_rows)
    result.meta.setdefault("warnings", []).extend(warnings)
    if alpaca_eval_info is not None:
        result.meta["alpaca_eval"] = alpaca_eval_info
        if alpaca_eval_info["warning"]:
            result.meta["warnings"].append(alpaca_eval_info["warning"])
    usage = [r for r in model_rows if isinstance(r.get("completion_tokens"), int)]
    if usage:
        result.ledger["model_outputs"] = {
            "requests": len(usage),
            "prompt_tokens": sum(int(r.get("prompt_tokens") or 0) for r in usage),
            "completion_tokens": sum(r["completion_tokens"] for r in usage),
        }
    paths = write_report(result, out)
    claim.complete([p for p in paths.values() if p])
    print(result.format_table())
    for stage, entry in result.ledger.items():
        if "judged_now" in entry:
            print(
                f"{stage}: {entry['judged_now']} judged now, {entry['from_cache']} from cache, "
                f"{entry['prompt_tokens']} + {entry['completion_tokens']} tokens"
                + (f", ${entry['cost_usd']:.4f}" if entry.get("cost_usd") is not None else "")
            )
    for w in result.meta.get("warnings", []):
        print(f"warning: {w}")
    plot = paths.get("png") or "none (pip install 'xl-suite[plot]')"
    print(f"Report: {paths['markdown']}  CSV: {paths['csv']}  plot: {plot}")
    if judge is not None:  # the report is written; raises above the threshold
        check_judgments(result, job.max_error_rate)
    return 0


def check_judgments(result, max_error_rate: float) -> None:
    """Warn about unparsed judgments within the threshold; raise FailureRateError above it or when none parsed.

    Each stage is judged on its own: the pairwise judgments of each judge (a jury has one stage per member) and the
    rubric judgments. Rule-based judgments (an empty answer) are not the judge's replies and are not counted.
    """
    from xl_suite.errors import FailureRateError
    from xl_suite.run.policy import check_stage_failure_rates
    from xl_suite.status import FAILED, USABLE, RowStatus, is_rule

    stages: dict[str, tuple[dict[str, int], int]] = {}
    jury = len({r.get("judge_model") for r in result.judgments}) > 1
    for rows, what in ((result.judgments, "pairwise"), (result.rubric_rows, "rubric")):
        for r in rows:
            if "parse_status" not in r or is_rule(r["parse_status"]):
                continue
            name = f"{what} ({r.get('judge_model')})" if jury and what == "pairwise" else what
            by_status, total = stages.get(name, ({}, 0))
            if r["parse_status"] in FAILED:
                by_status[r["parse_status"]] = by_status.get(r["parse_status"], 0) + 1
            stages[name] = (by_status, total + 1)
    judged_statuses = (*USABLE, RowStatus.REPAIRED, *FAILED)
    pairwise = [r for r in result.judgments if r.get("parse_status") in judged_statuses]
    if pairwise and all(r["parse_status"] in FAILED for r in pairwise):
        raise FailureRateError(
            f"No pairwise judgment could be parsed ({len(pairwise)} of {len(pairwise)} unparsed): there is no win "
            "rate. The report is written, with the judge's raw replies under 'unparsed judgments'; check the "
            "judge model and preset, then rerun the same command (the unparsed judgments are judged again)."
        )
    warning = check_stage_failure_rates(
        stages,
        max_error_rate=max_error_rate,
        what="judgments",
        retry="rerunning the same command judges them again (up to 3 attempts each; after that, with --retry-failed)",
    )
    if warning:
        print(f"warning: {warning}")


def _read_alpaca_eval(rows: list[dict], job, *, what: str) -> tuple[list[dict], dict | None]:
    """alpaca_eval files (model_outputs.json, annotations.json) matched to XL-AlpacaEval; other rows as they are."""
    from xl_suite.evaluation.alpaca_eval import file_kind, from_annotations, from_model_outputs

    kind = file_kind(rows)
    if kind == "xl_suite":
        return rows, None
    read = from_annotations if kind == "annotations" else from_model_outputs
    match = read(rows, language=job.language, source=job.alpaca_eval_source, what=repr(str(what)))
    return match.rows, {
        "kind": kind,
        "file": str(what),
        "n_rows": match.n_input,
        "n_matched": len(match.rows),
        "n_unmatched": match.n_unmatched,
        "unmatched_sample": match.unmatched,
        "warning": match.summary(repr(str(what))),
    }


def _model_name(rows: list[dict], path: str) -> str:
    from pathlib import Path

    names = {r.get("generator") for r in rows if r.get("generator")}
    if len(names) == 1:
        return names.pop()
    return Path(path).stem or str(path)


def _require_output_column(rows: list[dict], what) -> None:
    """Every answer row has an ``output`` (a file without it would score as empty answers: 0 % fidelity)."""
    missing = [i for i, r in enumerate(rows) if "output" not in r]
    if missing:
        columns = sorted({k for r in rows[:100] for k in r})
        raise InvalidArgumentError(
            f"{str(what)!r}: {len(missing)} of {len(rows)} rows have no 'output' column (the answers; columns: "
            f"{columns}). Pass the answers written by xl-suite generate, or rename the answer column to 'output'."
        )


def reference_language_warnings(rows: list[dict], *, below: float = 50.0) -> list[str]:
    """One warning per language whose references are mostly not in that language (e.g. alpaca_eval's English
    outputs given as the references of ``--language de``): the paper's references are in the target language.

    Args:
        rows: aligned rows with ``reference`` and ``language``.
        below: warn when the references' language fidelity (%) is under this.
    """
    from collections import Counter

    from xl_suite.fidelity import language_fidelity
    from xl_suite.languages import get_language
    from xl_suite.status import RowStatus

    refs = [r.get("reference") or "" for r in rows]
    langs = [r["language"] for r in rows]
    if not refs:
        return []
    fid = language_fidelity(refs, langs)
    out = []
    for code, entry in fid["per_language"].items():
        rate = entry.get("language_fidelity")
        if entry.get("status") == RowStatus.NOT_APPLICABLE or rate is None or rate != rate or rate >= below:
            continue
        seen = Counter(
            d for d, lang in zip(fid["detected_language"], langs, strict=True) if get_language(lang).code == code
        )
        top = ", ".join(f"{d} {n}" for d, n in seen.most_common(2))
        out.append(
            f"the references for {code} are mostly not in {get_language(code).display_name} (language fidelity "
            f"{rate:.0f}%; identified: {top}). XL-AlpacaEval compares answers with references in the target "
            f"language: write them with xl-suite generate --as-reference --config xl-alpacaeval-{code}."
        )
    return out


def _executor(job, judge):
    """``--executor ray``: the judge's chunks go to a pool of Ray actors (the driver starts no engine)."""
    import contextlib

    if job.executor != "ray" or judge is None:
        return contextlib.nullcontext()
    from xl_suite.commands._ray import ray_session
    from xl_suite.executors import RayExecutor

    stack = contextlib.ExitStack()
    stack.enter_context(ray_session(num_actors=job.num_actors, address=job.ray_address))
    remote = {"num_gpus": job.num_gpus_per_actor} if job.num_gpus_per_actor else None
    executor = stack.enter_context(RayExecutor(num_actors=job.num_actors, ray_remote_args=remote))
    stack.callback(_print_ray_work, executor)
    return stack


def _print_ray_work(executor) -> None:
    """What the Ray actors computed (the ledger below counts what this process judged: with Ray, nothing)."""
    for run in executor.runs:
        print(
            f"{run['stage']}: {run['chunks_computed']} of {run['chunks']} chunks judged by the Ray actors "
            f"({len(run['chunks_per_process'])} worker processes)"
        )
