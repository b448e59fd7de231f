"""The paper's experiment end to end: synthesize XL-Instruct, fine-tune with TRL, evaluate on XL-AlpacaEval before
and after (``xl-suite finetune``).

Steps (each prints one line; :func:`run_finetune` returns the summary, also written to
``<output_dir>/finetune_summary.json``):

1. **Models.** The student (``--model``; without it a tiny random stand-in is built locally, whose text is
   meaningless), the teacher that synthesizes the data and writes the reference answers (``--teacher-model``;
   default: the student model itself), and the judge (``--judge-preset`` or ``--judge-model``; default: the teacher).
2. **XL-Instruct** for the target languages from the seed passages (:func:`xl_suite.synthesis.synthesize`). Each
   pair becomes a TRL conversational row ``{"messages": [user, assistant]}``: the English instruction with the same
   "Please respond in <language>." request as XL-AlpacaEval, and the target-language response. A few pairs are held
   out for the eval loss.
3. **XL-AlpacaEval** prompts for the same languages, with the teacher's reference answers.
4. **Before:** the student answers them.
5. **Training** with TRL's ``SFTTrainer`` (full fine-tuning, or LoRA adapters via PEFT with ``--lora``). At every
   evaluation :class:`~xl_suite.training.callbacks.XlMetricCallback` answers a few XL-AlpacaEval prompts with the
   model being trained and logs the xl-suite ``evaluate`` metric (language fidelity) beside the eval loss.
   The model (LoRA: merged into the base weights; the adapter is kept in ``adapter/``) is saved to ``model/``.
6. **After:** the fine-tuned model answers the same prompts.
7. **Judging** both answer sets against the references (XL-AlpacaEval pairwise judge in both orders, language
   fidelity), reports in ``report-before/`` and ``report-after/``. With ``--judge-preset`` the preset's judge settings
   apply (the rubric included); otherwise the judge gives pairwise verdicts only (32 tokens, no rubric).

The answers are generated before and after training and judged at the end, so that on a GPU every engine can be
closed while training runs (``close_engines_for_training``, default on: vLLM holds most of the GPU memory).

**Reconstruction.** The paper's fine-tuning hyper-parameters are not known to us; the defaults here are small (a
few steps) so the recipe runs on a CPU, and a real run sets ``--max-steps``/``--num-examples`` to its scale.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from xl_suite.configuration import option
from xl_suite.errors import GenerationError, InvalidArgumentError


logger = logging.getLogger(__name__)

__all__ = ["FinetuneConfig", "run_finetune", "to_messages"]


@dataclass
class FinetuneConfig:
    """Settings of ``xl-suite finetune`` (the engines are :class:`~xl_suite.engines.spec.EngineSpec` objects).

    Args:
        output_dir: working folder (synthesis, benchmark answers, model, reports, summary). Default
            ``xl-suite-finetune``.
        languages: target languages, comma-separated. Default ``"de,mt"``.
        seeds: seed passages (file, folder or Hub dataset, as for ``xl-suite synthesize``); None: the built-in sample.
        num_examples: XL-Instruct pairs wanted per language. Default 8.
        threshold: minimum English score (1-5) of a synthesized pair. Default 3.5.
        language_filter: drop synthesized answers not in the target language (always off for the tiny stand-in,
            whose text is in no language). Default True.
        alpaca_eval: AlpacaEval prompts file; None: the Hub copy when reachable, else the labelled project sample.
        num_prompts: XL-AlpacaEval prompts per language, answered and judged before and after. Default 4.
        max_tokens: new tokens per generated text (synthesis, references, answers). Default 128.
        judge_preset: judge preset (``gpt-4o`` is the paper's setup); None: ``--judge-model``, else the teacher.
        held_out: XL-Instruct pairs held out as the eval set (eval loss). Default 2.
        max_steps: training steps. Default 8.
        learning_rate: peak learning rate. Default 2e-4.
        batch_size: training examples per device and step. Default 4.
        gradient_accumulation_steps: steps accumulated per update. Default 1.
        max_length: tokens per training example (longer ones are truncated). Default 1024.
        eval_steps: evaluate (eval loss + the xl-suite metric) every this many steps. Default 4.
        metric_prompts: XL-AlpacaEval prompts answered and scored by the metric at each evaluation. Default 4.
        lora: train LoRA adapters (PEFT) instead of all weights. Default False.
        lora_r: LoRA rank. Default 16.
        lora_alpha: LoRA alpha. Default 32.
        lora_dropout: LoRA dropout. Default 0.05.
        lora_target_modules: modules that get adapters (``all-linear`` or a comma-separated list). Default
            ``all-linear``.
        bf16: train in bfloat16 mixed precision (GPU). Default False.
        close_engines_for_training: close the teacher/judge engines before training and start them again for
            judging (frees GPU memory; off keeps them running, e.g. on a CPU). Default True.
        seed: seed of training, sampling and the held-out split. Default 0.
        overwrite: replace the output of a recipe with other settings in ``output_dir``. Default False (the same
            recipe resumes, and a finished one trains nothing and starts no engine).
    """

    output_dir: str = option("xl-suite-finetune", "working folder: data, model, reports, summary", metavar="DIR")
    languages: str = option("de,mt", "target languages, comma-separated")
    seeds: str | None = option(None, "seed passages (file, folder or Hub dataset); default: the built-in sample")
    num_examples: int = option(8, "XL-Instruct pairs wanted per language")
    threshold: float = option(3.5, "minimum English score (1-5) of a synthesized pair")
    language_filter: bool = option(True, "drop synthesized answers not in the target language (off for the stand-in)")
    alpaca_eval: str | None = option(
        None, "AlpacaEval prompts file (default: the Hub copy if reachable, else a labelled sample)", metavar="PATH"
    )
    num_prompts: int = option(4, "XL-AlpacaEval prompts per language, answered and judged before and after")
    max_tokens: int = option(128, "new tokens per generated text (synthesis, references, answers)")
    judge_preset: str | None = option(None, "judge preset, e.g. gpt-4o (default: --judge-model, else the teacher)")
    held_out: int = option(2, "XL-Instruct pairs held out as the eval set")
    max_steps: int = option(8, "training steps")
    learning_rate: float = option(2e-4, "peak learning rate")
    batch_size: int = option(4, "training examples per device and step")
    gradient_accumulation_steps: int = option(1, "steps accumulated per optimizer update")
    max_length: int = option(1024, "tokens per training example (longer ones are truncated)")
    eval_steps: int = option(4, "evaluate (eval loss + xl-suite metric) every this many steps")
    metric_prompts: int = option(4, "XL-AlpacaEval prompts scored by the metric at each evaluation")
    lora: bool = option(False, "train LoRA adapters (PEFT) instead of all weights")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha")
    lora_dropout: float = option(0.05, "LoRA dropout")
    lora_target_modules: str = option("all-linear", "modules with adapters: all-linear or a comma-separated list")
    bf16: bool = option(False, "bfloat16 mixed precision (GPU)")
    close_engines_for_training: bool = option(
        True, "close the teacher/judge engines while training (frees GPU memory)"
    )
    seed: int = option(0, "seed of training, sampling and the held-out split")
    overwrite: bool = option(
        False,
        "replace the output of a recipe with other settings in the output folder (its data, model and reports are "
        "deleted first); the same command resumes without it, and a finished one trains nothing",
    )
    dry_run: bool = option(
        False,
        "print the requests and tokens of every step (upper bounds; dollars for API models, engine-hours with "
        "--tokens-per-second) and the training steps, then stop: no model is built, no engine starts",
    )
    tokens_per_second: float | None = option(
        None, "generated tokens per second of the local engines, for the engine-hours of --dry-run"
    )

    def __post_init__(self):
        """Check every setting before any work: sizes, the language list, the learning rate and LoRA settings."""
        import re

        from xl_suite.languages import resolve_languages
        from xl_suite.safety import check_output_dir

        resolve_languages(self.languages)
        check_output_dir(self.output_dir, "--output-dir")  # a file or a read-only folder fails before any work
        for name in (
            "num_examples",
            "num_prompts",
            "max_tokens",
            "max_steps",
            "batch_size",
            "eval_steps",
            "gradient_accumulation_steps",
            "max_length",
            "lora_r",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(
                    f"{name} (--{name.replace('_', '-')}) must be an integer >= 1, got {value!r}."
                )
        if not _number_in(self.learning_rate, 0.0, 1.0, low_open=True):
            raise InvalidArgumentError(
                f"learning_rate (--learning-rate) must be a number in (0, 1], got {self.learning_rate!r}."
            )
        if not _number_in(self.threshold, 1.0, 5.0):
            raise InvalidArgumentError(f"threshold (--threshold) must be a score in [1, 5], got {self.threshold!r}.")
        if (
            isinstance(self.lora_dropout, bool)
            or not isinstance(self.lora_dropout, int | float)
            or not (0.0 <= self.lora_dropout < 1.0)
        ):
            raise InvalidArgumentError(f"lora_dropout (--lora-dropout) must be in [0, 1), got {self.lora_dropout!r}.")
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, int | float) or self.lora_alpha <= 0:
            raise InvalidArgumentError(
                f"lora_alpha (--lora-alpha) must be a positive number, got {self.lora_alpha!r}."
            )
        targets = [t.strip() for t in str(self.lora_target_modules or "").split(",")]
        if self.lora_target_modules != "all-linear" and (
            not all(targets) or not all(re.fullmatch(r"[A-Za-z_][\w.]*", t) for t in targets)
        ):
            raise InvalidArgumentError(
                f"lora_target_modules (--lora-target-modules) must be all-linear or a comma-separated list of module "
                f"names such as q_proj,v_proj, got {self.lora_target_modules!r}."
            )
        if self.held_out < 1:
            raise InvalidArgumentError(f"held_out must be >= 1 (the eval set of the eval loss), got {self.held_out}.")
        if self.metric_prompts < 0:
            raise InvalidArgumentError(f"metric_prompts must be >= 0, got {self.metric_prompts}.")

    @property
    def language_codes(self) -> list[str]:
        """The resolved language codes."""
        from xl_suite.languages import resolve_languages

        return [s.code for s in resolve_languages(self.languages)]


def _number_in(value, low: float, high: float, *, low_open: bool = False) -> bool:
    """A finite real number within [low, high] ((low, high] with ``low_open``); bools and strings are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return (low < value if low_open else low <= value) and value <= high


def to_messages(instruction: str, response: str, language: str) -> list[dict[str, str]]:
    """One XL-Instruct pair as TRL conversational messages; the user turn asks for the target language.

    The request is the one XL-AlpacaEval appends (template ``xl_alpacaeval_instruction``), so training and
    evaluation prompts have the same shape.

    >>> to_messages("Name a river.", "Il-Nil.", "mt")[0]["content"]
    'Name a river.\\n\\nPlease respond in Maltese.'
    """
    from xl_suite.languages import get_language
    from xl_suite.prompting import load_template
    from xl_suite.sources import REQUEST_TEMPLATE

    user = load_template(REQUEST_TEMPLATE).render_text(instruction=instruction, language=get_language(language))
    return [{"role": "user", "content": user.strip()}, {"role": "assistant", "content": response}]


def _spec_or_none(spec):
    return spec if spec is not None and (_is_engine(spec) or spec.model) else None


def _is_engine(obj) -> bool:
    """A built Generator (the caller's: used as is, never closed here), as opposed to an EngineSpec."""
    return obj is not None and callable(getattr(obj, "generate", None))


def _is_stand_in(model: str) -> bool:
    """The model folder is the tiny random stand-in (its marker file is there)."""
    from xl_suite.engines.tiny_model import MARKER_FILE

    return (Path(model) / MARKER_FILE).is_file()


def _describe(engine) -> str:
    if _is_engine(engine):
        return f"{engine.model} ({getattr(engine, 'backend', '?')}, given)"
    return f"{engine.model} ({engine.backend or 'vllm'})"


def run_finetune(
    config: FinetuneConfig | None = None,
    *,
    student=None,
    teacher=None,
    judge=None,
    echo=print,
) -> dict[str, Any]:
    """Run the recipe (see the module docstring); return the summary.

    Reads as its steps: every check first (:func:`_plan`: settings, LoRA targets, seeds, benchmark, keys, models,
    the output folder), then models, synthesis, references, answers before, training, answers after, judging. The
    engines are lazy and training is recorded with what it was trained on, so a rerun of a finished recipe computes
    nothing, trains nothing and starts no engine; the same command resumes an interrupted one.

    Args:
        config: :class:`FinetuneConfig`.
        student: :class:`~xl_suite.engines.spec.EngineSpec` of the model to fine-tune and its answer engine
            (model None: the tiny stand-in; backend None: vllm).
        teacher: EngineSpec of the synthesizer and reference model (model None: the student model), or a built
            Generator (the caller's engine: used as is and not closed here).
        judge: EngineSpec or Generator of the judge (None: the judge preset, else the teacher).
        echo: where progress lines go.

    Raises:
        MissingDependencyError: TRL/PEFT missing (``pip install 'xl-suite[train]'``).
        GenerationError: synthesis kept no pair, or too few to hold out an eval set.
        OutputExistsError: the output folder holds another run's output (``--overwrite``).
    """
    from xl_suite.safety import lock_folders

    plan = _plan(config or FinetuneConfig(), student, teacher, judge)
    if plan.cfg.dry_run:
        return _dry_run(plan, echo)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with lock_folders([plan.out], purpose="xl-suite finetune"):
        claim = _claim(plan)
        if claim.describe():
            echo(claim.describe())
        engines = _Engines()
        try:
            roles = _step(timings, "models", _models, plan, echo)
            train_ds, eval_ds, syn_summary = _step(
                timings,
                "synthesis",
                _synthesize,
                plan.cfg,
                plan.langs,
                engines.get(roles.teacher),
                plan.out,
                roles.stand_in,
                echo,
                seeds=plan.seeds,
            )
            with_refs = _step(timings, "references", _references, plan, roles, engines, echo)
            before = _step(
                timings, "answers_before", _answers, roles, roles.student, with_refs, engines, "[4/7]", echo
            )
            if plan.cfg.close_engines_for_training:
                engines.close_all()
            training = _step(timings, "training", _train, plan, roles, train_ds, eval_ds, with_refs, echo)
            after = _step(
                timings, "answers_after", _answers, roles, roles.tuned(training), with_refs, engines, "[6/7]", echo
            )
            reports, tables = _step(
                timings, "judging", _judge_both, plan, roles, engines, before, after, with_refs, echo
            )
            started = engines.started
        finally:
            engines.close_all()
        timings["total"] = time.perf_counter() - t0
        summary = _write_summary(
            plan, roles, syn_summary, train_ds, eval_ds, training, tables, reports, timings, started
        )
        claim.complete(["finetune_summary.json"])
    echo(format_comparison(summary))
    engines_line = f"engines started: {', '.join(started)}" if started else "no engine started: everything was cached"
    echo(f"Summary: {plan.out / 'finetune_summary.json'} ({engines_line})")
    return summary


@dataclass
class _Plan:
    """The recipe's settings, sources and engines, checked before anything runs."""

    cfg: FinetuneConfig
    langs: list[str]
    out: Path
    student: Any
    teacher: Any
    judge: Any
    preset: Any
    seeds: Any
    bench: Any
    label: str
    settings: dict


def _plan(cfg: FinetuneConfig, student, teacher, judge) -> _Plan:
    """Every check that can run before an engine starts or a file is written (keys, models, LoRA targets...)."""
    from xl_suite.commands._outputs import engine_settings, source_setting
    from xl_suite.engines.spec import EngineSpec
    from xl_suite.synthesis.seeds import builtin_seeds, check_text_column, load_seeds
    from xl_suite.training.judge import require_trl

    require_trl()
    if cfg.lora:
        _require_peft()
    student = student or EngineSpec()
    if (
        judge is not None
        and not _is_engine(judge)
        and not judge.model
        and (judge.backend or judge.revision or judge.engine_kwargs)
    ):
        raise InvalidArgumentError("--judge-backend/--judge-revision/--judge-engine-kwargs need --judge-model.")
    judge = _spec_or_none(judge)
    if judge is not None and cfg.judge_preset:
        raise InvalidArgumentError("Pass --judge-preset or --judge-model, not both.")
    langs = cfg.language_codes
    preset = None
    if cfg.judge_preset:
        from xl_suite.evaluation.presets import load_preset

        preset = load_preset(cfg.judge_preset)
    seeds = builtin_seeds() if cfg.seeds is None else load_seeds(cfg.seeds)
    check_text_column(seeds, "text")
    bench, label = _benchmark(cfg, langs)
    for spec in (student, teacher, judge) if not cfg.dry_run else ():
        if spec is not None and not _is_engine(spec) and spec.model:
            spec.check()  # keys and models, before any engine starts
    if preset is not None and not cfg.dry_run:
        EngineSpec(model=preset.judge_model, backend=preset.judge_backend, revision=preset.judge_revision).check()
    if cfg.lora:  # before synthesis, not after it (the stand-in's architecture is known without building it)
        check_lora_targets(student.model, cfg.lora_target_modules, revision=student.revision)
    settings = {
        **{k: v for k, v in asdict(cfg).items() if k not in _NOT_SETTINGS},
        "seeds": source_setting(cfg.seeds),
        "alpaca_eval": source_setting(cfg.alpaca_eval),
        **engine_settings(student if student.model else EngineSpec(model="tiny stand-in"), prefix="student_"),
    }
    for name, spec in (("teacher_", teacher), ("judge_", judge)):
        if spec is not None and not _is_engine(spec):
            settings.update(engine_settings(spec, prefix=name))
        elif spec is not None:
            settings[f"{name}model"] = f"{spec.model} (given engine)"
    plan = _Plan(cfg, langs, Path(cfg.output_dir), student, teacher, judge, preset, seeds, bench, label, settings)
    _claim(plan, dry_run=True)  # another run's folder is refused now, not after hours of work
    return plan


#: FinetuneConfig fields that change how a run goes, not what it makes (left out of its settings and training key).
_NOT_SETTINGS = ("output_dir", "overwrite", "close_engines_for_training", "dry_run", "tokens_per_second")
_CACHES = ["tiny-model", "synthesis", "work", "judgments", "trainer", "model", "adapter"]
_FILES = ["finetune_summary.json", "report-before", "report-after"]


def _claim(plan: _Plan, *, dry_run: bool = False):
    from xl_suite.output_folder import claim_output

    return claim_output(
        plan.out,
        "finetune",
        plan.settings,
        overwrite=plan.cfg.overwrite,
        files=_FILES,
        caches=_CACHES,
        dry_run=dry_run,
    )


def _step(timings: dict, name: str, fn, *args, **kwargs):
    t = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[name] = time.perf_counter() - t
    return result


@dataclass
class _Roles:
    """The EngineSpecs of the student, teacher, reference and judge (the stand-in's share one model)."""

    model: str
    stand_in: bool
    student: Any
    teacher: Any
    reference: Any
    judge: Any
    stand_in_kwargs: dict
    cfg: Any = None
    out: Path | None = None

    def tuned(self, training: dict):
        """The fine-tuned model's spec."""
        from xl_suite.engines.spec import EngineSpec

        backend = self.student.backend
        return EngineSpec(
            model=training["model_dir"],
            backend=backend,
            engine_kwargs=_engine_kwargs(backend, self.stand_in_kwargs, self.student.engine_kwargs),
        )


def _models(plan: _Plan, echo) -> _Roles:
    """[1/7] The student (the tiny stand-in is built, or reused), the teacher, the reference and the judge."""
    from xl_suite.engines.spec import EngineSpec

    student, teacher, judge, preset = plan.student, plan.teacher, plan.judge, plan.preset
    model = student.model
    if not model:
        from xl_suite.engines.tiny_model import build_tiny_model

        echo("[1/7] Building a tiny random chat model (a STAND-IN: its text is meaningless; pass --model)")
        model = str(build_tiny_model(plan.out / "tiny-model"))
    else:
        echo(f"[1/7] Model: {model}")
    stand_in = _is_stand_in(model)
    if stand_in and student.model:
        echo("      (the tiny random stand-in: its text is meaningless, the numbers only show the plumbing)")
    student_backend = student.backend or "vllm"
    # vLLM on CPU fails on seeded sampling when it splits a prefill (notebooks/README.md): one big step avoids it
    stand_in_kwargs = {"max_model_len": 2048, "engine_kwargs": {"max_num_batched_tokens": 65536}} if stand_in else {}
    student_spec = EngineSpec(
        model=model,
        backend=student_backend,
        revision=student.revision,
        engine_kwargs=_engine_kwargs(student_backend, stand_in_kwargs, student.engine_kwargs),
    )
    # the teacher: its own model, or the student's model with the teacher's backend/kwargs when only those are given
    t_model = teacher.model if teacher is not None and not _is_engine(teacher) and teacher.model else None
    teacher_backend = (teacher.backend if teacher is not None and not _is_engine(teacher) else None) or student_backend
    teacher_spec = (
        teacher
        if _is_engine(teacher)
        else EngineSpec(
            model=t_model or model,
            backend=teacher_backend,
            revision=teacher.revision if t_model else student.revision,
            engine_kwargs=_engine_kwargs(
                teacher_backend, stand_in_kwargs if t_model is None else {}, teacher.engine_kwargs if teacher else {}
            ),
        )
    )
    reference_spec = teacher_spec
    if preset is not None:
        judge_spec = EngineSpec(
            model=preset.judge_model,
            backend=preset.judge_backend,
            revision=preset.judge_revision,
            engine_kwargs=preset.judge_engine_kwargs,
        )
        if preset.reference_model:
            reference_spec = EngineSpec(
                model=preset.reference_model,
                backend=preset.reference_backend or preset.judge_backend,
                revision=preset.reference_revision,
            )
    else:
        judge_spec = judge or teacher_spec
    echo(
        f"      student {model} ({student_backend}); teacher {_describe(teacher_spec)}; judge {_describe(judge_spec)}"
    )
    return _Roles(
        model, stand_in, student_spec, teacher_spec, reference_spec, judge_spec, stand_in_kwargs, plan.cfg, plan.out
    )


def _references(plan: _Plan, roles: _Roles, engines, echo):
    """[3/7] XL-AlpacaEval prompts and the teacher's (or the preset's) reference answers."""
    from xl_suite.evaluation import generate_references

    echo(
        f"[3/7] XL-AlpacaEval from {plan.label}: {plan.cfg.num_prompts} prompts x {len(plan.langs)} languages; references"
    )
    sampling = _answer_sampling(plan.cfg, roles.stand_in)
    return generate_references(
        plan.bench, engines.get(roles.reference), sampling=sampling, work_dir=str(plan.out / "work")
    )


def _answers(roles: _Roles, spec, with_refs, engines, step: str, echo):
    """[4/7] and [6/7]: a model's answers (its engine is closed right after, freeing the GPU for the next)."""
    from xl_suite.evaluation import generate_answers

    echo(f"{step} Answers of {'the base model' if step == '[4/7]' else 'the fine-tuned model'} {spec.model}")
    sampling = _answer_sampling(roles.cfg, roles.stand_in)
    answers = generate_answers(with_refs, engines.get(spec), sampling=sampling, work_dir=str(roles.out / "work"))
    engines.close(spec)
    return answers


def _train(plan: _Plan, roles: _Roles, train_ds, eval_ds, with_refs, echo) -> dict:
    """[5/7] SFT with TRL; a finished training of the same data and settings is reused, not repeated."""
    cfg = plan.cfg
    echo(
        f"[5/7] Fine-tuning with TRL SFTTrainer ({'LoRA' if cfg.lora else 'full'}; {cfg.max_steps} steps, "
        f"{train_ds.num_rows} training pairs, {eval_ds.num_rows} held out)"
    )
    # the metric's prompts alternate between the languages (the benchmark holds num_prompts rows per language)
    by_position = sorted(range(with_refs.num_rows), key=lambda i: (i % cfg.num_prompts, i // cfg.num_prompts))
    metric_rows = with_refs.select(by_position[: cfg.metric_prompts])
    key = _training_key(cfg, roles, train_ds, eval_ds, metric_rows)
    record = plan.out / "model" / TRAINING_RECORD
    training = _read_training(record, key)
    if training is not None:
        echo(f"      reused the finished training in {training['model_dir']} (same data, model and settings)")
    else:
        training = train_sft(
            cfg,
            model=roles.model,
            revision=plan.student.revision,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            metric_instructions=metric_rows["instruction"],
            metric_languages=metric_rows["language"],
            min_new_tokens=_answer_sampling(cfg, roles.stand_in).min_tokens,
            output_dir=plan.out,
        )
        record.write_text(json.dumps({"key": key, "training": training}, default=_json_default), encoding="utf-8")
    echo(
        f"      training loss {training['first_loss']:.4f} -> {training['last_loss']:.4f}; "
        f"{len(training['metric_logs'])} in-loop metric evaluations; model saved to {training['model_dir']}"
    )
    return training


#: Written into the trained model folder: the hash of what it was trained on, and the training logs.
TRAINING_RECORD = "xl_suite_training.json"


def _training_key(cfg: FinetuneConfig, roles: _Roles, train_ds, eval_ds, metric_rows) -> str:
    from xl_suite.engines import local_model_hash
    from xl_suite.fingerprint import content_hash, stable_hash

    settings = {k: v for k, v in asdict(cfg).items() if k not in _NOT_SETTINGS}
    base = local_model_hash(roles.model) if Path(roles.model).is_dir() else roles.model
    return stable_hash(
        "xl-suite-sft",
        1,
        json.dumps(settings, sort_keys=True, default=str),
        base,
        roles.student.revision,
        content_hash(train_ds),
        content_hash(eval_ds),
        content_hash(metric_rows),
    )


def _read_training(record: Path, key: str) -> dict | None:
    """The training logs of a finished training with ``key``, if its model is there (else None: train)."""
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("training"), dict):
        return None
    training = data["training"]
    if not (Path(str(training.get("model_dir"))) / "config.json").is_file():
        return None
    return training


def _judge_both(plan: _Plan, roles: _Roles, engines, before, after, with_refs, echo):
    """[7/7] Judge the answers before and after against the references."""
    echo("[7/7] Judging the answers before and after against the references")
    judge_engine = engines.get(roles.judge, factory=plan.preset.build_judge if plan.preset else None)
    reports, tables = {}, {}
    for name, answers in (("before", before), ("after", after)):
        result, paths = _judge(
            plan.cfg, name, answers, with_refs, judge_engine, plan.preset, plan.out, model_label=name
        )
        reports[name] = {k: str(v) for k, v in paths.items()}
        tables[name] = result.table
    return reports, tables


def _write_summary(plan, roles, syn_summary, train_ds, eval_ds, training, tables, reports, timings, started) -> dict:
    summary = {
        "stand_in_model": roles.stand_in,
        "model": roles.model,
        "teacher": roles.teacher.model,
        "judge": roles.judge.model,
        "judge_preset": plan.cfg.judge_preset,
        "languages": plan.langs,
        "prompts": plan.label,
        "config": asdict(plan.cfg),
        "synthesis": syn_summary,
        "train_examples": train_ds.num_rows,
        "eval_examples": eval_ds.num_rows,
        "training": training,
        "before": _headline(tables["before"]),
        "after": _headline(tables["after"]),
        "reports": reports,
        "engines_started": started,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    path = plan.out / "finetune_summary.json"
    path.write_text(json.dumps(summary, indent=2, default=_json_default), encoding="utf-8")
    return summary


def check_lora_targets(model: str | None, targets: str, *, revision: str | None = None) -> None:
    """Check that every LoRA target module names a linear layer of ``model``, before any work (no weights loaded).

    ``all-linear`` always passes. The model is built from its config on the meta device; ``model`` None is the
    tiny stand-in.

    Raises:
        InvalidArgumentError: a target that names no module of the model (the message lists the ones it has).
    """
    if targets == "all-linear":
        return
    wanted = [m.strip() for m in targets.split(",") if m.strip()]
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        if model is None:
            from xl_suite.engines.tiny_model import tiny_llama_config

            config = tiny_llama_config()
        else:
            config = AutoConfig.from_pretrained(model, revision=revision)
        with torch.device("meta"):
            net = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError) as e:
        raise InvalidArgumentError(
            f"Cannot read the configuration of {model!r} to check --lora-target-modules ({e}). Pass a model folder "
            "or a Hub id in the cache, or --lora-target-modules all-linear."
        ) from None
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in net.named_modules() if isinstance(m, torch.nn.Linear)})
    missing = [t for t in wanted if t not in linear]
    if missing:
        raise InvalidArgumentError(
            f"--lora-target-modules {missing} name no linear layer of {model or 'the tiny stand-in'!r}; it has "
            f"{linear}. Choose among them, "
            "or pass all-linear."
        )


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _engine_kwargs(backend: str, stand_in: dict, given: dict) -> dict:
    base = dict(stand_in) if backend == "vllm" else {}
    return {**base, **(given or {})}


class _Engines:
    """Engines by spec: one engine per distinct spec (the stand-in's teacher, reference and judge are one), lazy:
    each starts on its first uncached prompt. ``started`` lists the models whose engine started."""

    def __init__(self):
        self._engines: dict[str, Any] = {}
        self.started: list[str] = []

    @staticmethod
    def _key(spec) -> str:
        return json.dumps([spec.model, spec.backend, spec.revision, spec.engine_kwargs], sort_keys=True, default=str)

    def get(self, spec, factory=None):
        if _is_engine(spec):
            return spec  # the caller's engine: not ours to close
        key = self._key(spec)
        if key not in self._engines:
            if factory is None and spec.backend == "fake":  # the test double that answers the synthesis prompts
                from xl_suite.engines.fake import FakeGenerator, FakeSynthesisResponder

                kwargs = dict(spec.engine_kwargs)
                factory = lambda: FakeGenerator(FakeSynthesisResponder(), model=spec.model, **kwargs)  # noqa: E731
            self._engines[key] = spec.lazy(factory=factory)
        return self._engines[key]

    def close(self, spec) -> None:
        """Close the engine of ``spec`` (every role that shares it gets a fresh one when next asked)."""
        if _is_engine(spec):
            return
        engine = self._engines.pop(self._key(spec), None)
        if engine is not None:
            self._closing(engine)

    def close_all(self) -> None:
        while self._engines:
            self._closing(self._engines.popitem()[1])

    def _closing(self, engine) -> None:
        if getattr(engine, "started", False) and engine.model not in self.started:
            self.started.append(str(engine.model))
        engine.close()


def _require_peft():
    try:
        import peft
    except ImportError as e:
        from xl_suite.errors import MissingDependencyError

        raise MissingDependencyError("--lora needs PEFT: pip install 'xl-suite[train]'.") from e
    return peft


def _answer_sampling(cfg: FinetuneConfig, stand_in: bool):
    from xl_suite.engines.base import SamplingConfig

    # The stand-in model may emit end-of-sequence at once; an empty reference cannot be judged.
    return SamplingConfig(
        temperature=0.0, max_tokens=cfg.max_tokens, min_tokens=min(8, cfg.max_tokens) if stand_in else 0, seed=cfg.seed
    )


def _synthesis_config(cfg: FinetuneConfig, langs, language_filter: bool):
    from xl_suite.synthesis import SynthesisConfig

    return SynthesisConfig(
        languages=tuple(langs),
        num_examples=cfg.num_examples,
        threshold=cfg.threshold,
        max_tokens=cfg.max_tokens,
        language_filter=language_filter,
        seed=cfg.seed,
        batch_size=256,
        chunk_size=256,
    )


def _dry_run(plan: _Plan, echo) -> dict:
    """What each step would send (upper bounds) and the training it would run; nothing starts, nothing is written."""
    import dataclasses

    from xl_suite.costs import estimate_cost, format_estimates, list_price
    from xl_suite.evaluation.judging import JudgeConfig, estimate_judging_cost
    from xl_suite.prompting import load_template
    from xl_suite.synthesis.estimate import estimate_synthesis, seeds_note

    cfg = plan.cfg

    def name_of(spec, default):
        return getattr(spec, "model", None) or default

    def is_local(spec):
        return (getattr(spec, "backend", None) or "vllm") not in ("openai", "fake")

    student = name_of(plan.student, "tiny stand-in")
    teacher = plan.teacher if plan.teacher is not None and name_of(plan.teacher, None) else plan.student
    teacher_name = name_of(teacher, student)
    estimates = estimate_synthesis(
        _synthesis_config(cfg, plan.langs, cfg.language_filter),
        plan.seeds["text"],
        model=teacher_name,
        price=list_price(teacher_name),
        local=is_local(teacher),
    )
    template = load_template("answer")
    convs = [template.render(instruction=x) for x in plan.bench["instruction"]]
    detail = f"{cfg.num_prompts} prompts x {len(plan.langs)} languages"
    reference = plan.preset.reference_model if plan.preset is not None and plan.preset.reference_model else None
    rows = [("references", reference or teacher_name, reference is None and is_local(teacher))]
    rows += [("answers before", student, is_local(plan.student)), ("answers after", student, is_local(plan.student))]
    for stage, model, local in rows:
        estimates.append(
            estimate_cost(stage, model, convs, max_tokens=cfg.max_tokens, price=list_price(model), detail=detail,
                          local=local)
        )  # fmt: skip
    judge_cfg = plan.preset.judge if plan.preset is not None else JudgeConfig(max_tokens=32, rubric=False)
    judge_name = plan.preset.judge_model if plan.preset is not None else name_of(plan.judge, teacher_name)
    judge_local = (plan.preset.judge_backend if plan.preset is not None else None) not in ("openai",) and (
        plan.preset is not None or is_local(plan.judge or teacher)
    )
    placeholder = ["x" * (4 * cfg.max_tokens)] * plan.bench.num_rows
    for which in ("before", "after"):
        for e in estimate_judging_cost(
            plan.bench["instruction"], placeholder, placeholder, plan.bench["language"], config=judge_cfg,
            judge_model=judge_name, price=list_price(judge_name),
        ):  # fmt: skip
            estimates.append(dataclasses.replace(e, stage=f"{e.stage} ({which})", local=judge_local))
    echo(f"finetune dry run: {', '.join(plan.langs)}; {plan.seeds.num_rows} seed passages; prompts from {plan.label}")
    echo(format_estimates(estimates, cfg.tokens_per_second))
    note = seeds_note(_synthesis_config(cfg, plan.langs, cfg.language_filter), plan.seeds.num_rows)
    if note:
        echo(note)
    echo(
        f"training: {cfg.max_steps} steps of {cfg.batch_size} x {cfg.gradient_accumulation_steps} examples "
        f"({'LoRA r=' + str(cfg.lora_r) if cfg.lora else 'all weights'}), at most {cfg.max_length} tokens each"
    )
    echo("dry run: no model was built, no request was sent, nothing was written.")
    return {"dry_run": True, "estimates": [dataclasses.asdict(e) for e in estimates]}


def _synthesize(cfg: FinetuneConfig, langs, teacher, out: Path, stand_in: bool, echo, *, seeds=None):
    import datasets

    from xl_suite.synthesis import synthesize
    from xl_suite.synthesis.seeds import builtin_seeds, load_seeds

    language_filter = cfg.language_filter and not stand_in
    echo(
        f"[2/7] Synthesizing XL-Instruct for {', '.join(langs)} with the teacher"
        + ("" if language_filter == cfg.language_filter else " (language filter off: the stand-in writes no language)")
    )
    if seeds is None:
        seeds = builtin_seeds() if cfg.seeds is None else load_seeds(cfg.seeds)
    syn = synthesize(
        seeds,
        teacher,
        _synthesis_config(cfg, langs, language_filter),
        output=str(out / "synthesis"),
        seed_source="builtin" if cfg.seeds is None else cfg.seeds,
    )
    produced = {code: (syn.summary.get("languages") or {}).get(code, {}).get("produced", 0) for code in langs}
    echo(f"      pairs kept: {produced}")
    parts = [syn.dataset(code) for code in langs if produced[code]]
    rows = datasets.concatenate_datasets(parts) if parts else None
    n = rows.num_rows if rows is not None else 0
    if n <= cfg.held_out:
        raise GenerationError(
            f"Synthesis kept {n} XL-Instruct pair(s) ({produced}); fine-tuning needs more than held_out="
            f"{cfg.held_out}. Raise --num-examples, lower --threshold, or use a stronger --teacher-model "
            f"(see {out / 'synthesis' / 'summary.json'})."
        )
    msgs = rows.map(
        lambda r: {"messages": to_messages(r["instruction"], r["response"], r["language"])},
        remove_columns=[c for c in rows.column_names if c not in ("id", "language")],
    )
    split = msgs.train_test_split(test_size=cfg.held_out, seed=cfg.seed)
    return split["train"], split["test"], {"produced": produced, "summary": str(out / "synthesis" / "summary.json")}


def _benchmark(cfg: FinetuneConfig, langs):
    import datasets

    from xl_suite.datasets_api import load_xl_suite
    from xl_suite.demo import resolve_prompts

    source, label = resolve_prompts(cfg.alpaca_eval)
    parts = []
    for code in langs:
        ds = load_xl_suite(f"xl-alpacaeval-{code}", split="test", source=source)
        if ds.num_rows < cfg.num_prompts:
            raise InvalidArgumentError(
                f"xl-alpacaeval-{code} from {label} has {ds.num_rows} prompts; --num-prompts {cfg.num_prompts} "
                "asks for more."
            )
        parts.append(ds.select(range(cfg.num_prompts)))
    return datasets.concatenate_datasets(parts), label


def train_sft(
    cfg: FinetuneConfig,
    *,
    model: str,
    revision: str | None,
    train_dataset,
    eval_dataset,
    metric_instructions,
    metric_languages,
    min_new_tokens: int,
    output_dir: Path,
) -> dict[str, Any]:
    """Fine-tune ``model`` with TRL's ``SFTTrainer`` on conversational ``messages`` rows; save it; return the logs.

    Returns:
        ``model_dir`` (the trained model: merged weights with LoRA), ``adapter_dir`` (LoRA only), ``losses``
        (training loss per logged step), ``first_loss``/``last_loss``, ``eval_losses``, ``metric_logs`` (the
        in-loop xl-suite metric at each evaluation) and ``log_history`` (TRL's, as is).
    """
    from xl_suite.training.judge import require_trl

    require_trl()
    from trl import SFTConfig, SFTTrainer

    from xl_suite.training.callbacks import XlMetricCallback

    run_dir = output_dir / "trainer"
    args = SFTConfig(
        output_dir=str(run_dir),
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=cfg.max_length,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        save_strategy="no",
        report_to="none",
        seed=cfg.seed,
        bf16=cfg.bf16,
        model_init_kwargs={"revision": revision, "dtype": "auto"} if revision else {"dtype": "auto"},
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft_config = None
    if cfg.lora:
        from peft import LoraConfig

        targets = cfg.lora_target_modules
        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=targets
            if targets == "all-linear"
            else [m.strip() for m in targets.split(",") if m.strip()],
            task_type="CAUSAL_LM",
        )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, peft_config=peft_config
    )
    callback = None
    if cfg.metric_prompts:
        callback = XlMetricCallback(
            trainer,
            list(metric_instructions),
            list(metric_languages),
            max_new_tokens=min(cfg.max_tokens, 64),
            min_new_tokens=min_new_tokens,
        )
        trainer.add_callback(callback)
    trainer.train()
    model_dir = output_dir / "model"
    adapter_dir = None
    tokenizer = trainer.processing_class
    if cfg.lora:
        adapter_dir = output_dir / "adapter"
        trainer.model.save_pretrained(str(adapter_dir))
        tokenizer.save_pretrained(str(adapter_dir))
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(model_dir))
    else:
        trainer.model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    if not losses or not all(math.isfinite(x) for x in losses):
        raise GenerationError(f"Training loss is not finite: {losses}. Lower --learning-rate or check the data.")
    return {
        "model_dir": str(model_dir),
        "adapter_dir": str(adapter_dir) if adapter_dir else None,
        "losses": losses,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "eval_losses": [h["eval_loss"] for h in history if "eval_loss" in h],
        "metric_logs": [
            {k: v for k, v in h.items() if k.startswith("eval_xl_") or k == "step"}
            for h in history
            if any(k.startswith("eval_xl_") for k in h)
        ],
        "metric_answers": [h["answers"] for h in callback.history] if callback else [],
        "log_history": history,
    }


def _judge(cfg, name, answers, with_refs, judge_engine, preset, out: Path, *, model_label: str):
    from xl_suite.evaluation import evaluate_responses, write_report
    from xl_suite.evaluation.answers import usable_rows
    from xl_suite.evaluation.judging import JudgeConfig

    judge_config = preset.judge if preset else JudgeConfig(max_tokens=32, rubric=False)
    # failed answers or references (empty, error, too long) are never judged as data: the rerun retries them
    answers, with_refs, _ = usable_rows(answers, with_refs)
    # keyed by (id, language): a prompt has the same id in every language
    refs = dict(zip(zip(with_refs["id"], with_refs["language"], strict=True), with_refs["reference"], strict=True))
    result = evaluate_responses(
        answers["output"],
        answers["language"],
        references=[refs[k] for k in zip(answers["id"], answers["language"], strict=True)],
        instructions=answers["instruction"],
        ids=answers["id"],
        judge=judge_engine,
        config=judge_config,
        cache_dir=str(out / "judgments"),
        model_name=f"{model_label} fine-tuning",
        preset=cfg.judge_preset,
        lc_method="mle",
    )
    paths = write_report(result, out / f"report-{name}", title=f"XL-AlpacaEval, {name} fine-tuning")
    return result, paths


def _headline(table: dict) -> dict[str, dict[str, float]]:
    keys = ("win_rate", "lc_minimal_winrate", "language_fidelity", "parse_rate", "n")
    return {lang: {k: row.get(k) for k in keys} for lang, row in table.items()}


def format_comparison(summary: dict) -> str:
    """A plain-text table of win rate and language fidelity per language, before and after fine-tuning."""
    lines = [f"{'language':<10} {'win rate before':>16} {'after':>8} {'fidelity before':>16} {'after':>8}"]

    def fmt(v):
        return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"

    for lang, row in summary["before"].items():
        a = summary["after"].get(lang, {})
        lines.append(
            f"{lang:<10} {fmt(row.get('win_rate')):>16} {fmt(a.get('win_rate')):>8} "
            f"{fmt(row.get('language_fidelity')):>16} {fmt(a.get('language_fidelity')):>8}"
        )
    return "\n".join(lines)
