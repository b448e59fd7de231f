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

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

__all__ = ["DemoConfig", "run_demo", "resolve_prompts", "SAMPLE_PROMPTS_LABEL"]

SAMPLE_PROMPTS_LABEL = "xl-suite-demo-sample"
_EXPORT_MARKER = ".xl-suite-demo"


@dataclass
class DemoConfig:
    """Settings of ``xl-suite demo``.

    Args:
        output_dir: working folder (model, synthesis, answers, report, resumable chunks). Default ``xl-suite-demo``.
        export_dir: data-only dataset folder to write. Default ``xl-suite`` (loads as ``load_dataset("xl-suite", ...)``).
        model: model id or path; None builds the tiny stand-in model.
        backend: backend of the model (``vllm`` default, ``openai``, ``transformers``).
        judge_preset: judge preset (``gpt-4o`` = the paper's setup); None uses the model itself as reference and judge.
        judge_model: override the preset's judge model.
        languages: two (or more) target languages. Default ``("de", "mt")``.
        alpaca_eval: AlpacaEval prompts file/URL; None tries the Hub copy and falls back to the labelled sample. It is
            also what the synthesized pairs are decontaminated against.
        num_prompts: XL-AlpacaEval prompts per language to answer and judge. Default 12.
        num_examples: XL-Instruct pairs wanted per language. Default 8.
        max_tokens: new tokens per completion. Default 128 (room for the JSON of the scoring stages).
        language_filter: apply the synthesis language filter (False for the tiny model, whose text is in no language).
        seeds: seed passages, as ``xl-suite synthesize --seeds``: ``builtin`` (40 project-written passages), a file,
            folder or URL, or a Hub dataset id.
        text_column: the seeds' text column. Default ``text``.
        decontaminate_against: more benchmark prompt files to decontaminate the synthesized pairs against (as
            ``synthesize --decontaminate-against``); ``alpaca_eval`` is always added.
        overwrite: replace the output of a demo run with other settings (in ``output_dir`` and ``export_dir``);
            the same demo again resumes (a finished one computes nothing and starts no engine).
        dry_run: print the requests and tokens of every step, then stop (no engine starts, nothing is written).
        tokens_per_second: generated tokens per second of the local engine, for the engine-hours of ``dry_run``.
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
    overwrite: bool = False
    engine_kwargs: dict = field(default_factory=dict)
    seeds: str = "builtin"
    text_column: str = "text"
    decontaminate_against: tuple[str, ...] = ()
    dry_run: bool = False
    tokens_per_second: float | None = None

    def __post_init__(self):
        """Check every setting before the demo builds a model (the error names the value and the fix)."""
        from xl_suite.costs import check_tokens_per_second
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
        if isinstance(self.decontaminate_against, str):
            self.decontaminate_against = (self.decontaminate_against,)
        check_tokens_per_second(self.tokens_per_second)
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


@dataclass
class _Plan:
    """Everything the demo will do, decided and checked before any engine starts or any file is written."""

    cfg: DemoConfig
    langs: list[str]
    out: Path
    export_dir: Path
    source: str
    label: str
    seeds: Any
    stand_in: bool
    synthesis: Any  # SynthesisConfig
    synthesis_plan: Any  # SynthesisPlan: stages, checked templates and benchmark, resolved once and passed down
    preset: Any
    settings: dict


def _plan(cfg: DemoConfig) -> _Plan:
    """Check every setting, folder, source, key and model before any engine starts (step 0)."""
    from xl_suite.commands._outputs import source_setting
    from xl_suite.languages import resolve_languages
    from xl_suite.safety import check_output_dir
    from xl_suite.synthesis import SynthesisConfig, plan_synthesis
    from xl_suite.synthesis.seeds import builtin_seeds, check_text_column, load_seeds

    langs = [s.code for s in resolve_languages(list(cfg.languages))]
    out = check_output_dir(cfg.output_dir, "--output-dir")
    export_dir = check_output_dir(cfg.export_dir, "--export-dir")
    source, label = resolve_prompts(cfg.alpaca_eval)  # a bad --alpaca-eval fails here, before any model is built
    seeds = builtin_seeds() if cfg.seeds in (None, "builtin") else load_seeds(cfg.seeds)
    check_text_column(seeds, cfg.text_column)
    stand_in = cfg.model is None
    against = tuple(dict.fromkeys([*([cfg.alpaca_eval] if cfg.alpaca_eval else []), *cfg.decontaminate_against]))
    synthesis = SynthesisConfig(
        languages=tuple(langs),
        num_examples=cfg.num_examples,
        max_tokens=cfg.max_tokens,
        language_filter=(not stand_in) if cfg.language_filter is None else cfg.language_filter,
        decontaminate_against=against,
        batch_size=256,
        chunk_size=256,
    )
    synthesis_plan = plan_synthesis(synthesis)  # templates checked, benchmark read: once, handed to synthesize
    preset = None
    if cfg.judge_preset:
        from xl_suite.evaluation.presets import load_preset

        preset = load_preset(cfg.judge_preset, judge_model=cfg.judge_model)
    settings = {
        "model": source_setting(cfg.model) if cfg.model else "tiny stand-in",
        "backend": cfg.backend,
        "judge_preset": cfg.judge_preset,
        "judge_model": cfg.judge_model,
        "languages": langs,
        "prompts": source_setting(source),
        "seeds": source_setting(cfg.seeds),
        "text_column": cfg.text_column,
        "decontaminate_against": [source_setting(a) for a in against],
        "num_prompts": cfg.num_prompts,
        "num_examples": cfg.num_examples,
        "max_tokens": cfg.max_tokens,
        "language_filter": synthesis.language_filter,
    }
    plan = _Plan(
        cfg, langs, out, export_dir, source, label, seeds, stand_in, synthesis, synthesis_plan, preset, settings
    )
    _claim(plan, dry_run=True)  # another run's folder is refused now, not after the work
    if not cfg.dry_run:
        for spec in _engine_specs(plan, model=cfg.model or "tiny-stand-in").values():
            if spec is not None and not (stand_in and spec.model == "tiny-stand-in"):
                spec.check()  # keys and models: a missing OPENAI_API_KEY fails now, not after minutes of vLLM
    return plan


_CACHES = ["tiny-model", "synthesis", "work", "judgments"]
_FILES = ["report", "demo_summary.json"]


def _claim(plan: _Plan, *, dry_run: bool = False):
    """The one output rule for both folders: the same demo resumes; another needs --overwrite."""
    from xl_suite.errors import OutputExistsError
    from xl_suite.output_folder import claim_output, read_marker
    from xl_suite.safety import MARKER_FILE

    flag = "--overwrite"
    claim = claim_output(
        plan.out,
        "demo",
        plan.settings,
        overwrite=plan.cfg.overwrite,
        files=_FILES,
        caches=_CACHES,
        flag=flag,
        dry_run=dry_run,
    )
    export = claim_output(
        plan.export_dir, "export", {}, overwrite=True, dry_run=True, legacy_markers=(_EXPORT_MARKER,), flag=flag
    )  # a folder xl-suite did not write is refused here, with or without --overwrite
    ours = claim.mode == "resume" or (read_marker(plan.out) or {}).get("kind") == "demo"
    if export.mode == "replace" and not plan.cfg.overwrite and not ours:
        raise OutputExistsError(
            f"--export-dir {str(plan.export_dir)!r} holds an export this demo did not write "
            f"({'its ' + MARKER_FILE if (plan.export_dir / MARKER_FILE).is_file() else 'an earlier release'}). "
            "Choose another --export-dir, or pass --overwrite to replace it (files you added there are kept)."
        )
    return claim


def _engine_specs(plan: _Plan, *, model: str) -> dict:
    """The EngineSpecs of the roles: model (answers, synthesis), judge and reference (None: the model's)."""
    from xl_suite.engines.spec import EngineSpec

    kwargs = dict(plan.cfg.engine_kwargs)
    if plan.cfg.backend == "vllm" and plan.stand_in:
        kwargs.setdefault("max_model_len", 2048)
    specs = {"model": EngineSpec(model=model, backend=plan.cfg.backend, engine_kwargs=kwargs), "judge": None}
    specs["reference"] = None
    preset = plan.preset
    if preset is not None:
        specs["judge"] = EngineSpec(
            model=preset.judge_model,
            backend=preset.judge_backend,
            revision=preset.judge_revision,
            engine_kwargs=preset.judge_engine_kwargs,
        )
        if preset.reference_model:
            specs["reference"] = EngineSpec(
                model=preset.reference_model,
                backend=preset.reference_backend or preset.judge_backend,
                revision=preset.reference_revision,
            )
    return specs


class _Engines:
    """The demo's engines, lazy: each starts on its first uncached prompt, so a cached rerun starts none."""

    def __init__(self, plan: _Plan, echo):
        model = plan.cfg.model
        if plan.stand_in:
            from xl_suite.engines.tiny_model import build_tiny_model

            echo(
                "[1/5] Building a tiny random chat model (a STAND-IN: its text is meaningless; pass --model for a "
                "real one)"
            )
            model = str(build_tiny_model(plan.out / "tiny-model"))  # reused when already built
        else:
            echo(f"[1/5] Model: {model} ({plan.cfg.backend})")
        self.model = model
        specs = _engine_specs(plan, model=model)
        self.generator = specs["model"].lazy(factory=_factory(specs["model"]))
        self.judge = self.reference = self.generator
        if specs["judge"] is not None:
            self.judge = specs["judge"].lazy(factory=plan.preset.build_judge)
        if specs["reference"] is not None:
            self.reference = specs["reference"].lazy()

    def all(self) -> list:
        return list({id(x): x for x in (self.generator, self.judge, self.reference)}.values())

    def started(self) -> list[str]:
        """Models whose engine started in this run."""
        return [g.model for g in self.all() if getattr(g, "started", True)]

    def close(self) -> None:
        for g in self.all():
            g.close()


def _factory(spec):
    """The fake backend answers the synthesis prompts (``--backend fake``: flow tests and offline trials)."""
    if spec.backend != "fake":
        return None
    from xl_suite.engines.fake import FakeGenerator, FakeSynthesisResponder

    return lambda: FakeGenerator(FakeSynthesisResponder(), model=spec.model, **spec.engine_kwargs)


def run_demo(config: DemoConfig | None = None, *, progress: bool = True, echo=print) -> dict:
    """Run the whole loop; return a summary dict (also written to ``<output_dir>/demo_summary.json``).

    Every check comes first (:func:`_plan`); the engines are lazy, so a rerun of a finished demo computes nothing
    and starts no engine; ``dry_run`` prints what each step would send and stops.
    """
    from xl_suite.safety import lock_folders

    cfg = config or DemoConfig()
    plan = _plan(cfg)
    if cfg.dry_run:
        return _dry_run(plan, echo)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with lock_folders([plan.out], purpose="xl-suite demo"):
        claim = _claim(plan)
        if claim.describe():
            echo(claim.describe())
        engines = _Engines(plan, echo)
        timings["model"] = time.perf_counter() - t0
        try:
            syn = _step(timings, "synthesis", _synthesize, plan, engines, progress, echo)
            with_refs, answers = _step(timings, "answers", _answer, plan, engines, echo)
            result, report = _step(timings, "evaluation", _evaluate, plan, engines, with_refs, answers, echo)
            started = engines.started()
        finally:
            engines.close()
        configs = _step(timings, "export", _export, plan, syn, with_refs, echo, resumed=claim.mode == "resume")
        timings["total"] = time.perf_counter() - t0
        summary = _summary(plan, engines.model, syn, report, configs, timings, started)
        claim.complete(_FILES)
    _print_next_steps(plan, summary, report, configs, echo)
    return summary


def _step(timings: dict, name: str, fn, *args, **kwargs):
    t = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[name] = time.perf_counter() - t
    return result


def _synthesize(plan: _Plan, engines: _Engines, progress: bool, echo):
    """[2/5] XL-Instruct pairs from the seeds."""
    from xl_suite.synthesis import format_summary, synthesize

    what = "the built-in seed sample" if plan.cfg.seeds in (None, "builtin") else f"the seeds {plan.cfg.seeds}"
    echo(f"[2/5] Synthesizing XL-Instruct pairs for {', '.join(plan.langs)} from {what}")
    syn = synthesize(
        plan.seeds,
        engines.generator,
        plan.synthesis,
        output=str(plan.out / "synthesis"),
        progress=progress,
        seed_source=plan.cfg.seeds or "builtin",
        text_column=plan.cfg.text_column,
        plan=plan.synthesis_plan,
    )
    echo(format_summary(syn.summary))
    return syn


def _benchmark(plan: _Plan):
    import datasets

    from xl_suite.datasets_api import load_xl_suite

    return datasets.concatenate_datasets(
        [
            _first(load_xl_suite(f"xl-alpacaeval-{code}", split="test", source=plan.source), plan.cfg.num_prompts)
            for code in plan.langs
        ]
    )


def _sampling(plan: _Plan):
    from xl_suite.engines.base import SamplingConfig

    # The stand-in model may emit end-of-sequence at once; an empty reference cannot be judged.
    max_tokens = plan.cfg.max_tokens
    return SamplingConfig(
        temperature=0.0, max_tokens=max_tokens, min_tokens=min(8, max_tokens) if plan.stand_in else 0
    )


def _answer(plan: _Plan, engines: _Engines, echo):
    """[3/5] The benchmark, its reference answers and the model's answers."""
    from xl_suite.commands._outputs import cached_line
    from xl_suite.evaluation import generate_answers, generate_references
    from xl_suite.evaluation.answers import usable_rows
    from xl_suite.runner import StageStats

    echo(
        f"[3/5] XL-AlpacaEval from {plan.label}: {plan.cfg.num_prompts} prompts x {len(plan.langs)} languages; "
        "references and answers"
    )
    bench = _benchmark(plan)
    refs_stats, answer_stats = StageStats("references"), StageStats("answers")
    work = str(plan.out / "work")
    with_refs = generate_references(
        bench, engines.reference, sampling=_sampling(plan), work_dir=work, stats=refs_stats
    )
    answers = generate_answers(bench, engines.generator, sampling=_sampling(plan), work_dir=work, stats=answer_stats)
    echo(f"      {cached_line(refs_stats, 'references')}; {cached_line(answer_stats, 'answers')}")
    answers, with_refs, failed = usable_rows(answers, with_refs)
    if any(failed.values()):  # never judged nor exported as data; the rerun retries them from the cache
        echo(
            f"      {failed['references']} references and {failed['answers']} answers failed (empty, error or too "
            "long): left out of the evaluation and the export, kept in the cache; rerun to retry them"
        )
    return with_refs, answers


def _judge_config(plan: _Plan):
    if plan.preset is not None:
        return plan.preset.judge
    from xl_suite.evaluation.judging import JudgeConfig

    return JudgeConfig(max_tokens=32, rubric_max_tokens=64)


def _evaluate(plan: _Plan, engines: _Engines, with_refs, answers, echo):
    """[4/5] Judge both orders, score fidelity and the rubric, write the report."""
    from xl_suite.evaluation import evaluate_responses, format_table, write_report

    echo("[4/5] Judging (both orders) and scoring language fidelity")
    refs = dict(zip(zip(with_refs["id"], with_refs["language"], strict=True), with_refs["reference"], strict=True))
    result = evaluate_responses(
        answers["output"],
        answers["language"],
        references=[refs[k] for k in zip(answers["id"], answers["language"], strict=True)],
        instructions=answers["instruction"],
        ids=answers["id"],
        judge=engines.judge,
        config=_judge_config(plan),
        cache_dir=str(plan.out / "judgments"),
        model_name=Path(engines.model).name if plan.stand_in else engines.model,
        preset=plan.cfg.judge_preset,
        lc_method="mle",
    )
    title = "XL-AlpacaEval demo" + (" (tiny stand-in model)" if plan.stand_in else "")
    report = write_report(result, plan.out / "report", title=title)
    echo(format_table(result))
    return result, report


def _export(plan: _Plan, syn, with_refs, echo, *, resumed: bool) -> dict:
    """[5/5] The data-only dataset folder (the same data again is left as it is)."""
    import datasets

    from xl_suite.datasets_api import load_xl_suite
    from xl_suite.export import write_repo

    echo(f"[5/5] Exporting the data-only dataset folder {plan.export_dir}/")
    configs: dict[str, object] = {}
    for code in plan.langs:
        configs[f"xl-alpacaeval-{code}"] = (
            datasets.DatasetDict({"test": with_refs.filter(lambda r, c=code: r["language"] == c)}),
            plan.source,
        )
        produced = (syn.summary.get("languages") or {}).get(code, {}).get("produced", 0)
        if produced:
            configs[f"xl-instruct-{code}"] = (
                load_xl_suite(f"xl-instruct-{code}", source=str(plan.out / "synthesis")),
                "xl-suite synthesize (demo)",
            )
        else:
            echo(
                f"      note: no XL-Instruct pair survived for {code}; xl-instruct-{code} is not exported "
                "(see the synthesis table above)"
            )
    # write_repo builds the folder under a unique temporary name beside it and replaces an earlier export only if
    # xl-suite wrote it: this demo's own (resumed), or any with --overwrite; files the user added are carried over.
    write_repo(
        plan.export_dir,
        configs,
        repo_id=plan.export_dir.name,
        overwrite=plan.cfg.overwrite or resumed,
        echo=lambda line: echo(f"      {line}"),
    )
    return configs


def _summary(plan: _Plan, model: str, syn, report, configs, timings, started) -> dict:
    import datasets

    summary = {
        "model": model,
        "stand_in_model": plan.stand_in,
        "languages": plan.langs,
        "prompts": plan.label,
        "seeds": plan.cfg.seeds,
        "decontaminated_against": list(plan.synthesis.decontaminate_against),
        "synthesis": syn.summary.get("languages"),
        "report": {k: str(v) for k, v in report.items()},
        "export_dir": str(plan.export_dir),
        "configs": sorted(datasets.get_dataset_config_names(str(plan.export_dir))),
        "engines_started": started,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (plan.out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return summary


def _print_next_steps(plan: _Plan, summary: dict, report: dict, configs: dict, echo) -> None:
    first = f"xl-alpacaeval-{plan.langs[0]}"
    echo("")
    plot = report.get("png") or "none (pip install 'xl-suite[plot]')"
    started = summary["engines_started"]
    engines = f"engines started: {', '.join(started)}" if started else "no engine started: everything came from cache"
    echo(
        f"Done in {summary['timings_s']['total']:.0f} s ({engines}). Report: {report['markdown']}; plot: {plot}; "
        f"leaderboard: {report['csv']}"
    )
    echo("Load the data with plain datasets (from this directory):")
    echo("    import datasets")
    echo(f'    datasets.load_dataset("{plan.export_dir}", "{first}", split="test")')
    if f"xl-instruct-{plan.langs[0]}" in configs:
        echo(f'    datasets.load_dataset("{plan.export_dir}", "xl-instruct-{plan.langs[0]}", split="train")')
    echo(
        "Score answers with the metric (language fidelity, offline; the default config with a judge gives win rates):"
    )
    echo("    import evaluate")
    echo(f'    metric = evaluate.load("{_metric_path()}", "fidelity")')
    echo(f'    metric.compute(predictions=["Hallo Welt, wie geht es dir heute?"], languages=["{plan.langs[0]}"])')


def _dry_run(plan: _Plan, echo) -> dict:
    """What every step would send (upper bounds), then stop: no model is built, no engine starts."""
    from xl_suite.costs import estimate_cost, format_estimates, list_price
    from xl_suite.evaluation.judging import estimate_judging_cost
    from xl_suite.prompting import load_template
    from xl_suite.synthesis.estimate import estimate_synthesis, seeds_note

    cfg = plan.cfg
    model = cfg.model or "tiny stand-in"
    local = cfg.backend not in ("openai", "fake")
    estimates = estimate_synthesis(
        plan.synthesis, plan.seeds[cfg.text_column], model=model, price=list_price(cfg.model), local=local
    )
    bench = _benchmark(plan)
    template = load_template("answer")
    convs = [template.render(instruction=x) for x in bench["instruction"]]
    detail = f"{cfg.num_prompts} prompts x {len(plan.langs)} languages"
    specs = _engine_specs(plan, model=model)
    ref = specs["reference"] or specs["model"]
    for stage, spec in (("references", ref), ("answers", specs["model"])):
        estimates.append(
            estimate_cost(
                stage,
                spec.model,
                convs,
                max_tokens=cfg.max_tokens,
                price=list_price(spec.model),
                detail=detail,
                local=(spec.backend or "vllm") not in ("openai", "fake"),
            )
        )
    judge = specs["judge"] or specs["model"]
    placeholder = ["x" * (4 * cfg.max_tokens)] * bench.num_rows  # answers at max tokens: an upper bound
    for e in estimate_judging_cost(
        bench["instruction"],
        placeholder,
        placeholder,
        bench["language"],
        config=_judge_config(plan),
        judge_model=judge.model,
        price=list_price(judge.model),
    ):
        estimates.append(dataclasses.replace(e, local=(judge.backend or "vllm") not in ("openai", "fake")))
    echo(f"demo dry run: {len(plan.langs)} languages, {plan.seeds.num_rows} seed passages, prompts from {plan.label}")
    echo(format_estimates(estimates, cfg.tokens_per_second))
    note = seeds_note(plan.synthesis, plan.seeds.num_rows)
    if note:
        echo(note)
    echo("dry run: no model was built, no request was sent, nothing was written.")
    return {"dry_run": True, "estimates": [dataclasses.asdict(e) for e in estimates]}


def _metric_path() -> str:
    here = Path(__file__).resolve().parents[1] / "evaluate_metrics" / "xl_alpacaeval"
    return str(here) if here.is_dir() else "evaluate_metrics/xl_alpacaeval"
