"""The run summary of a synthesis (``summary.json``) and its plain-text table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from xl_suite import __version__
from xl_suite.engines.base import truncates_prompts
from xl_suite.status import USABLE, RowStatus
from xl_suite.synthesis.config import SYNTHESIS_VERSION


__all__ = ["build_summary", "check_failures", "format_summary", "stage_summary", "text_table"]


def stage_summary(stats, counter=None) -> dict:
    """A stage's entry of the summary's stage table, from its :class:`~xl_suite.run.stats.StageStats` (as the
    pipeline recorded it: rows in, rows kept, statuses, tokens) and the engine calls ``counter`` (the pipeline's counting generator) saw."""
    total = sum(stats.status.values())
    d = {
        "stage": stats.stage,
        "rows_in": stats.rows_in,
        "rows_out": stats.kept,
        "dropped": stats.dropped,
        "kept_rate": (stats.kept / stats.rows_in) if stats.rows_in else None,
        "status": dict(sorted(stats.status.items())),
        # usable outputs: parsed, from a whole prompt ("ok") or a truncated one (counted apart below)
        "parse_rate": (sum(stats.status.get(s, 0) for s in USABLE) / total) if total else None,
        "prompt_truncated": stats.status.get(RowStatus.PROMPT_TRUNCATED, 0),
        "json_repaired": stats.json_repaired,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "chunks_computed": stats.chunks_computed,
        "chunks_reused": stats.chunks_reused,
        "seconds": round(stats.wall_seconds, 3),
    }
    if counter is not None:
        d["generated"] = {
            "calls": counter.calls,
            "prompts": counter.prompts,
            "completions": counter.completions,
            "prompt_tokens": counter.prompt_tokens,
            "completion_tokens": counter.completion_tokens,
            "engine_seconds": round(counter.seconds, 3),
        }
    return d


def build_summary(run, *, seeds_rows: int, seconds: float, seed_source: str | None, text_column: str) -> dict:
    """The summary of a finished run (``run`` is the pipeline's :class:`~xl_suite.synthesis.pipeline.SynthesisRun`)."""
    config, generator, stages, reports, counters = run.config, run.generator, run.stages, run.stats, run.counters
    templates, fingerprints, produced, processed = run.templates, run.fingerprints, run.produced, run.processed

    warnings = []
    shortfall = {}
    if config.num_examples is not None:
        for code, n in produced.items():
            if n < config.num_examples:
                shortfall[code] = config.num_examples - n
        if shortfall:
            warnings.append(
                f"--num-examples {config.num_examples}: only {produced} pairs survived from {processed} seeds "
                f"(short by {shortfall}). Use more seeds (--max-seeds), a lower --threshold, or check the stage "
                "table for where rows were dropped."
            )
    for stage in stages:
        r = reports[stage.name]
        n_truncated = r.status.get(RowStatus.PROMPT_TRUNCATED, 0)
        if n_truncated:
            warnings.append(
                f"stage {stage.name}: {n_truncated} of {sum(r.status.values())} outputs were generated from a "
                "prompt truncated to the model's context (--truncate-prompts); they are kept as data and marked "
                f"{RowStatus.PROMPT_TRUNCATED!r} in {stage.column_prefix}_status and the provenance."
            )
        bad = {k: v for k, v in r.status.items() if k not in USABLE}
        if not bad:
            continue
        n, total = sum(bad.values()), sum(r.status.values())
        if stage.engine:
            warnings.append(
                f"stage {stage.name}: {n} of {total} outputs failed ({bad}: not parsed, empty, a request error or a "
                "prompt too long for the model); they are counted and stored in the work dir for the retry by the next "
                "run, never written to an output file nor used further."
            )
        else:
            warnings.append(
                f"stage {stage.name}: {n} of {total} rows failed the check ({bad})"
                + ("." if r.dropped else "; they were kept (the check does not filter here).")
            )
    lang_report = reports.get("language_check")
    if lang_report is not None and not config.language_filter:
        warnings.append(
            "The language filter is disabled (--no-language-filter): answers not identified as the "
            "target language were kept; see language_ok in the output rows."
        )
    benchmark = run.benchmark
    decontamination = {"enabled": False, "note": "no benchmark given to the run", "dropped": 0, "dropped_by_stage": {}}
    if benchmark is not None:
        from xl_suite.synthesis.decontamination import decontaminate_batch

        by_stage = {s.name: reports[s.name].dropped for s in stages if s.function is decontaminate_batch}
        decontamination = {
            **benchmark.summary(),
            "ngram": config.decontamination_ngram,
            "threshold": config.decontamination_threshold,
            "dropped": sum(by_stage.values()),
            "dropped_by_stage": by_stage,
        }
        if benchmark.note:
            warnings.append(f"decontamination: {benchmark.note}")
    scorer = run.scorer

    def finite(x):
        return None if isinstance(x, float) and not math.isfinite(x) else x

    return {
        "xl_suite_version": __version__,
        "synthesis_version": SYNTHESIS_VERSION,
        "reconstruction": "Stages, prompts, criteria and thresholds are our reconstruction of XL-Instruct "
        "(arXiv 2503.22973), not the authors' documented method.",
        "generator": {
            "backend": getattr(generator, "backend", "?"),
            "model": generator.model,
            "revision": generator.revision,
            "truncate_prompts": truncates_prompts(generator),
            "fingerprint": generator.fingerprint(),
        },
        "scorer": {
            "backend": getattr(scorer, "backend", "?"),
            "model": scorer.model,
            "revision": scorer.revision,
            "truncate_prompts": truncates_prompts(scorer),
            "fingerprint": scorer.fingerprint(),
        },
        "config": {k: finite(v) for k, v in config.to_dict().items()},
        "seeds": {
            "source": seed_source,
            "text_column": text_column,
            "rows_available": seeds_rows,
            "limit": config.seed_limit,
            **run.seed_counts.to_dict(),
            "processed": processed,
        },
        "stages": [
            {
                **{k: finite(v) for k, v in stage_summary(reports[s.name], counters.get(s.name)).items()},
                "template": templates[s.name].template_version if s.name in templates else None,
                "model": {"generator": generator.model, "scorer": scorer.model}.get(s.engine),
                "sampling": s.sampling.to_dict() if s.sampling else None,
                "fingerprint": fingerprints[s.name],
            }
            for s in stages
        ],
        "final": {
            "rows_in": run.final_in,
            "duplicates_removed": run.duplicates,
            "near_duplicates_removed": run.near.removed if run.near is not None else 0,
            "near_dedup": config.near_dedup,
            "near_dedup_threshold": config.near_dedup_threshold,
            "over_quota": run.over_quota,
            "dedup": config.dedup,
            "stopped_early": run.stopped_early,
        },
        "decontamination": decontamination,
        "json_repaired": sum(reports[s.name].json_repaired for s in stages),
        "languages": {
            code: {"requested": config.num_examples, "produced": produced[code], "shortfall": shortfall.get(code, 0)}
            for code in config.languages
        },
        "files": dict(sorted(run.writer.rows.items())),
        "generated": {
            "prompts": sum(c.prompts for c in counters.values()),
            "completions": sum(c.completions for c in counters.values()),
            "prompt_tokens": sum(c.prompt_tokens for c in counters.values()),
            "completion_tokens": sum(c.completion_tokens for c in counters.values()),
        },
        "failures": {
            s.name: {
                "rows": run.stats[s.name].rows_out,
                "failed": run.stats[s.name].rows_failed,
                "retried": run.stats[s.name].rows_retried,
                "by_status": dict(sorted(run.stats[s.name].failed_by_status.items())),
            }
            for s in stages
            if s.engine and s.name in getattr(run, "stats", {})
        },
        "output": str(run.output) if run.output else None,
        "work_dir": str(run.work_dir) if run.work_dir else None,
        "seconds": round(seconds, 3),
        "warnings": warnings,
    }


def check_failures(summary: Mapping[str, Any], max_error_rate: float, *, retry: str | None = None) -> str | None:
    """Judge a finished run's failed LLM outputs (``summary["failures"]``) against ``max_error_rate``, stage by stage.

    The one check behind ``xl-suite synthesize --max-error-rate`` (exit 3) and the ``max_error_rate=`` argument of
    :func:`~xl_suite.synthesis.synthesize` and :func:`~xl_suite.synthesis.ray.synthesize_ray`; call it once
    everything is written. Each engine stage is judged on its own
    (:func:`~xl_suite.run.policy.check_stage_failure_rates`): a stage that lost 21% of its rows fails the run even
    when the later stages, fed by the rows it kept, lost none.

    ``retry`` replaces the message's account of what a rerun does with the failed rows.

    Returns:
        None when no row failed, else a one-line warning (every stage's share is within the threshold).

    Raises:
        FailureRateError: a stage's share of failed rows is above ``max_error_rate``.

    >>> s = {"failures": {"score": {"rows": 40, "failed": 1, "by_status": {"unparsed": 1}}}}
    >>> print(check_failures(s, 0.05))
    score: 1 of 40 LLM outputs failed (2.5%: unparsed 1), within --max-error-rate 0.05 per stage; rerunning the same command retries them (up to 3 attempts per row).
    """
    from xl_suite.run.policy import check_stage_failure_rates

    failures = summary.get("failures") or {}
    return check_stage_failure_rates(
        {name: (entry["by_status"], entry["rows"]) for name, entry in failures.items()},
        max_error_rate=max_error_rate,
        what="LLM outputs",
        **({"retry": retry} if retry else {}),
    )


def format_summary(summary: Mapping[str, Any]) -> str:
    """A plain-text table of a run summary: rows in/out per stage, keep and ok rates, tokens, chunks, time.

    ``ok`` is the share of a stage's outputs whose status is ``ok``: parsed, for the LLM stages; identified as the
    target language, for ``language_check``.

    ``repaired`` counts replies read only after the JSON repair step. A line after the table gives the final
    step's exact and near-duplicate removals and the decontamination.

    >>> s = {"stages": [{"stage": "score", "rows_in": 4, "rows_out": 4, "dropped": 0, "kept_rate": 1.0,
    ...      "parse_rate": 0.75, "json_repaired": 1, "prompt_tokens": 10, "completion_tokens": 8,
    ...      "chunks_computed": 1, "chunks_reused": 0, "seconds": 0.5}],
    ...      "final": {"rows_in": 4, "duplicates_removed": 1, "near_duplicates_removed": 1},
    ...      "decontamination": {"enabled": True, "dropped": 2, "prompts": 805},
    ...      "languages": {"mt": {"requested": 2, "produced": 1,
    ...      "shortfall": 1}}, "generated": {"prompts": 4, "completion_tokens": 8}, "seconds": 1.0, "warnings": []}
    >>> print(format_summary(s))  # doctest: +NORMALIZE_WHITESPACE
    stage  rows_in  rows_out  kept   ok  repaired  prompt_tok  compl_tok  chunks(new/reused)  seconds
    score        4         4  100%  75%         1          10          8                 1/0     0.50
    final: 4 rows in, 1 exact duplicates and 1 near-duplicates removed; decontamination: 2 pairs dropped (805 benchmark prompts)
    language  requested  produced  shortfall
    mt                2         1          1
    generated this run: 4 prompts, 8 completion tokens; total 1.0 s
    """

    def pct(x):
        return "-" if x is None else f"{100 * x:.0f}%"

    header = [
        "stage",
        "rows_in",
        "rows_out",
        "kept",
        "ok",
        "repaired",
        "prompt_tok",
        "compl_tok",
        "chunks(new/reused)",
        "seconds",
    ]
    rows = [
        [
            s["stage"],
            str(s["rows_in"]),
            str(s["rows_out"]),
            pct(s.get("kept_rate")),
            pct(s.get("parse_rate")),
            str(s.get("json_repaired", 0)),
            str(s["prompt_tokens"]),
            str(s["completion_tokens"]),
            f"{s['chunks_computed']}/{s['chunks_reused']}",
            f"{s['seconds']:.2f}",
        ]
        for s in summary["stages"]
    ]
    lines = text_table(header, rows)
    final, decon = summary.get("final"), summary.get("decontamination")
    if final is not None:
        line = (
            f"final: {final.get('rows_in', 0)} rows in, {final.get('duplicates_removed', 0)} exact duplicates and "
            f"{final.get('near_duplicates_removed', 0)} near-duplicates removed"
        )
        if decon is not None:
            line += (
                f"; decontamination: {decon.get('dropped', 0)} pairs dropped ({decon.get('prompts', 0)} benchmark prompts)"
                if decon.get("enabled")
                else "; decontamination: OFF"
            )
        lines.append(line)
    lang_rows = [
        [code, "-" if v["requested"] is None else str(v["requested"]), str(v["produced"]), str(v["shortfall"])]
        for code, v in summary["languages"].items()
    ]
    lines += text_table(["language", "requested", "produced", "shortfall"], lang_rows)
    gen = summary.get("generated", {})
    lines.append(
        f"generated this run: {gen.get('prompts', 0)} prompts, {gen.get('completion_tokens', 0)} completion "
        f"tokens; total {summary.get('seconds', 0):.1f} s"
    )
    lines += [f"warning: {w}" for w in summary.get("warnings", [])]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    ]
