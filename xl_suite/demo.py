"""The whole XL-Suite loop on a built-in default (``xl-suite demo``, the README's first command).

1. build a tiny random chat model locally (no download; a stand-in whose text is meaningless) unless a model is named;
2. synthesize XL-Instruct pairs for two languages from the built-in seed sample;
3. build XL-AlpacaEval for those languages (AlpacaEval when given or reachable, else a small project-written sample of
   prompts, labelled as such), generate references and the model's answers;
4. judge, score language fidelity, write the report (Markdown, CSV, PNG);
5. export everything as a data-only ``xl-suite/`` folder that ``datasets.load_dataset("xl-suite", config)`` loads.

With the tiny model one engine serves as model, reference and judge (the numbers only show that the plumbing works).
For the paper's setup use ``--model <id> --judge-preset gpt-4o`` on a GPU machine with an OpenAI key.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path


logger = logging.getLogger(__name__)

__all__ = ["DemoConfig", "run_demo", "resolve_prompts", "SAMPLE_PROMPTS_LABEL"]

SAMPLE_PROMPTS_LABEL = "xl-suite-demo-sample"
_EXPORT_MARKER = ".xl-suite-demo"


@dataclass
class DemoConfig:
    """Settings of ``xl-suite demo``.

    Args:
        output_dir: working folder (model, synthesis, answers, report, resumable chunks). Default ``xl-suite-demo``.
        export_dir: data-only dataset folder to write. Default ``xl-suite`` (loads as ``load_xl_suite("xl-suite", ...)``).
        model: model id or path; None builds the tiny stand-in model.
        backend: backend of the model (``vllm`` default, ``openai``, ``transformers``).
        judge_preset: judge preset (``gpt-4o`` = the paper's setup); None uses the model itself as reference and judge.
        judge_model: override the preset's judge model.
        languages: two (or more) target languages. Default ``("de", "mt")``.
        alpaca_eval: AlpacaEval prompts file/URL; None tries the Hub copy and falls back to the labelled sample.
        num_prompts: XL-AlpacaEval prompts per language to answer and judge. Default 12.
        num_examples: XL-Instruct pairs wanted per language. Default 8.
        max_tokens: new tokens per completion. Default 128 (room for the JSON of the scoring stages).
        language_filter: apply the synthesis language filter (False for the tiny model, whose text is in no language).
        overwrite: replace an existing export folder written by an earlier demo.
    """

    output_dir: str = "xl-suite-demo"
    export_dir: str = "xl-suite"
    model: str | None = None
    backend: str = "vllm"
    judge_preset: str | None = None
    judge_model: str | None = None
    languages: tuple[str, ...] = ("de", "mt")
    alpaca_eval: str | None = None
    num_prompts: int = 12
    num_examples: int = 8
    max_tokens: int = 128
    language_filter: bool | None = None
    overwrite: bool = True
    engine_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        """Check every setting before the demo builds a model (the error names the value and the fix)."""
        from xl_suite.engines.registry import BACKENDS
        from xl_suite.errors import InvalidArgumentError

        for name in ("num_prompts", "num_examples", "max_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(
                    f"{name} (--{name.replace('_', '-')}) must be an integer >= 1, got {value!r}."
                )
        if self.backend not in BACKENDS:
            raise InvalidArgumentError(f"Unknown backend {self.backend!r}. Choose one of {list(BACKENDS)}.")
        if isinstance(self.languages, str) or not self.languages or not all(self.languages):
            raise InvalidArgumentError(
                f"languages (--languages) must name at least one language code, got {self.languages!r}; e.g. de,mt."
            )
        for name in ("output_dir", "export_dir"):
            if not str(getattr(self, name) or "").strip():
                raise InvalidArgumentError(
                    f"{name} (--{name.replace('_', '-')}) must name a folder, got an empty string."
                )
        out, export = Path(self.output_dir).resolve(), Path(self.export_dir).resolve()
        if out == export or export in out.parents or out in export.parents:
            raise InvalidArgumentError(
                f"--output-dir {self.output_dir!r} and --export-dir {self.export_dir!r} overlap: the export replaces "
                "its whole folder, so the two must be separate folders (e.g. xl-suite-demo and xl-suite)."
            )


def _first(ds, n: int):
    """The first ``n`` rows of ``ds`` (all of them when it has fewer)."""
    return ds.select(range(min(n, ds.num_rows)))


def _sample_prompts_path() -> str:
    return str(resources.files("xl_suite") / "data" / "demo_prompts.jsonl")


def resolve_prompts(alpaca_eval: str | None) -> tuple[str, str]:
    """Return (source, label): the given file, the Hub copy when reachable, else the labelled project sample."""
    from xl_suite.sources import DEFAULT_ALPACA_EVAL_SOURCE, SourceError, read_alpaca_eval

    if alpaca_eval:
        read_alpaca_eval(alpaca_eval)  # a bad path is an error, never silently replaced
        return alpaca_eval, "AlpacaEval"
    try:
        read_alpaca_eval(DEFAULT_ALPACA_EVAL_SOURCE)
        return DEFAULT_ALPACA_EVAL_SOURCE, "AlpacaEval (Hub)"
    except SourceError as e:
        logger.info("AlpacaEval not reachable (%s); using the project-written sample", e)
        return _sample_prompts_path(), "project-written SAMPLE prompts (AlpacaEval not reachable; pass --alpaca-eval)"


def _prepare_export_dir(path: Path, overwrite: bool) -> None:
    """Refuse an export folder the demo may not replace (foreign, the cwd, or ``--no-overwrite``); see safety."""
    from xl_suite.safety import check_replaceable

    check_replaceable(
        path,
        overwrite=overwrite,
        legacy_markers=(_EXPORT_MARKER,),
        flag="--overwrite (the demo's default; --no-overwrite refuses) or another --export-dir",
    )


def run_demo(config: DemoConfig | None = None, *, progress: bool = True, echo=print) -> dict:
    """Run the whole loop; return a summary dict (also written to ``<output_dir>/demo_summary.json``)."""
    import datasets

    from xl_suite.datasets_api import load_xl_suite
    from xl_suite.engines.base import SamplingConfig
    from xl_suite.engines.registry import build_generator
    from xl_suite.evaluation import (
        evaluate_responses,
        format_table,
        generate_answers,
        generate_references,
        write_report,
    )
    from xl_suite.export import write_repo
    from xl_suite.languages import resolve_languages
    from xl_suite.safety import check_output_dir
    from xl_suite.synthesis import SynthesisConfig, format_summary, synthesize
    from xl_suite.synthesis.seeds import builtin_seeds

    cfg = config or DemoConfig()
    langs = [s.code for s in resolve_languages(list(cfg.languages))]
    out = check_output_dir(cfg.output_dir, "--output-dir")
    export_dir = check_output_dir(cfg.export_dir, "--export-dir")
    _prepare_export_dir(export_dir, cfg.overwrite)
    source, label = resolve_prompts(cfg.alpaca_eval)  # a bad --alpaca-eval fails here, before any model is built
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # 1. model
    model = cfg.model
    stand_in = model is None
    if stand_in:
        from xl_suite.engines.tiny_model import build_tiny_model

        echo(
            "[1/5] Building a tiny random chat model (a STAND-IN: its text is meaningless; pass --model for a real one)"
        )
        model = str(build_tiny_model(out / "tiny-model"))
    else:
        echo(f"[1/5] Model: {model} ({cfg.backend})")
    engine_kwargs = dict(cfg.engine_kwargs)
    if cfg.backend == "vllm" and stand_in:
        engine_kwargs.setdefault("max_model_len", 2048)
    generator = build_generator(cfg.backend, model, **engine_kwargs)
    timings["model"] = time.perf_counter() - t0
    judge = reference = generator
    preset = None
    try:
        if cfg.judge_preset:
            from xl_suite.evaluation.presets import load_preset

            preset = load_preset(cfg.judge_preset, judge_model=cfg.judge_model)
            judge = preset.build_judge()
            if preset.reference_model:
                reference = build_generator(
                    preset.reference_backend or preset.judge_backend,
                    preset.reference_model,
                    revision=preset.reference_revision,
                )

        # 2. synthesis
        t = time.perf_counter()
        echo(f"[2/5] Synthesizing XL-Instruct pairs for {', '.join(langs)} from the built-in seed sample")
        language_filter = (not stand_in) if cfg.language_filter is None else cfg.language_filter
        syn_cfg = SynthesisConfig(
            languages=tuple(langs),
            num_examples=cfg.num_examples,
            max_tokens=cfg.max_tokens,
            language_filter=language_filter,
            batch_size=256,
            chunk_size=256,
        )
        syn = synthesize(
            builtin_seeds(),
            generator,
            syn_cfg,
            output=str(out / "synthesis"),
            progress=progress,
            seed_source="builtin",
        )
        echo(format_summary(syn.summary))
        timings["synthesis"] = time.perf_counter() - t

        # 3. benchmark, references, answers
        t = time.perf_counter()
        echo(
            f"[3/5] XL-AlpacaEval from {label}: {cfg.num_prompts} prompts x {len(langs)} languages; "
            "references and answers"
        )
        bench = (
            datasets.concatenate_datasets(
                [
                    _first(load_xl_suite(f"xl-alpacaeval-{code}", split="test", source=source), cfg.num_prompts)
                    for code in langs
                ]
            )
            if cfg.num_prompts
            else None
        )
        # The stand-in model may emit end-of-sequence at once; an empty reference cannot be judged.
        sampling = SamplingConfig(
            temperature=0.0, max_tokens=cfg.max_tokens, min_tokens=min(8, cfg.max_tokens) if stand_in else 0
        )
        with_refs = generate_references(bench, reference, sampling=sampling, work_dir=str(out / "work"))
        answers = generate_answers(bench, generator, sampling=sampling, work_dir=str(out / "work"))
        timings["answers"] = time.perf_counter() - t

        # 4. judge + fidelity + report
        t = time.perf_counter()
        echo("[4/5] Judging (both orders) and scoring language fidelity")
        judge_config = preset.judge if preset else None
        if judge_config is None:
            from xl_suite.evaluation.judging import JudgeConfig

            judge_config = JudgeConfig(max_tokens=32, rubric_max_tokens=64)
        result = evaluate_responses(
            answers["output"],
            answers["language"],
            references=with_refs["reference"],
            instructions=answers["instruction"],
            ids=answers["id"],
            judge=judge,
            config=judge_config,
            cache_dir=str(out / "judgments"),
            model_name=Path(model).name if stand_in else model,
            preset=cfg.judge_preset,
            lc_method="mle",
        )
        report = write_report(
            result, out / "report", title="XL-AlpacaEval demo" + (" (tiny stand-in model)" if stand_in else "")
        )
        echo(format_table(result))
        timings["evaluation"] = time.perf_counter() - t
    finally:
        for g in {id(x): x for x in (generator, judge, reference)}.values():
            g.close()

    # 5. export
    t = time.perf_counter()
    echo(f"[5/5] Exporting the data-only dataset folder {export_dir}/")
    configs: dict[str, object] = {}
    for code in langs:
        configs[f"xl-alpacaeval-{code}"] = (
            datasets.DatasetDict({"test": with_refs.filter(lambda r, c=code: r["language"] == c)}),
            source,
        )
        produced = (syn.summary.get("languages") or {}).get(code, {}).get("produced", 0)
        if produced:
            configs[f"xl-instruct-{code}"] = (
                load_xl_suite(f"xl-instruct-{code}", source=str(out / "synthesis")),
                "xl-suite synthesize (demo)",
            )
        else:
            echo(
                f"      note: no XL-Instruct pair survived for {code}; xl-instruct-{code} is not exported "
                "(see the synthesis table above)"
            )
    # write_repo builds the folder under a unique temporary name beside it, writes xl-suite's marker, and replaces
    # an earlier export only if it holds that marker (checked again here, after the long run).
    write_repo(export_dir, configs, repo_id=export_dir.name, overwrite=cfg.overwrite)
    timings["export"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    summary = {
        "model": model,
        "stand_in_model": stand_in,
        "languages": langs,
        "prompts": label,
        "synthesis": syn.summary.get("languages"),
        "report": {k: str(v) for k, v in report.items()},
        "export_dir": str(export_dir),
        "configs": sorted(datasets.get_dataset_config_names(str(export_dir))),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    first = f"xl-alpacaeval-{langs[0]}"
    echo("")
    plot = report.get("png") or "none (pip install 'xl-suite[plot]')"
    echo(f"Done in {timings['total']:.0f} s. Report: {report['markdown']}; plot: {plot}; leaderboard: {report['csv']}")
    echo("Load the data with plain datasets (from this directory):")
    echo("    import datasets")
    echo(f'    datasets.load_dataset("{export_dir}", "{first}", split="test")')
    if f"xl-instruct-{langs[0]}" in configs:
        echo(f'    datasets.load_dataset("{export_dir}", "xl-instruct-{langs[0]}", split="train")')
    echo(
        "Score answers with the metric (language fidelity, offline; the default config with a judge gives win rates):"
    )
    echo("    import evaluate")
    echo(f'    metric = evaluate.load("{_metric_path()}", "fidelity")')
    echo(f'    metric.compute(predictions=["Hallo Welt, wie geht es dir heute?"], languages=["{langs[0]}"])')
    return summary


def _metric_path() -> str:
    here = Path(__file__).resolve().parents[1] / "evaluate_metrics" / "xl_alpacaeval"
    return str(here) if here.is_dir() else "evaluate_metrics/xl_alpacaeval"
