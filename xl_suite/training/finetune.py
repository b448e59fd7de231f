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

    def __post_init__(self):
        """Check sizes and the language list."""
        from xl_suite.languages import resolve_languages
        from xl_suite.safety import check_output_dir

        resolve_languages(self.languages)
        check_output_dir(self.output_dir, "--output-dir")  # a file or a read-only folder fails before any work
        for name in ("num_examples", "num_prompts", "max_tokens", "max_steps", "batch_size", "eval_steps"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.held_out < 1:
            raise InvalidArgumentError(f"held_out must be >= 1 (the eval set of the eval loss), got {self.held_out}.")
        if self.metric_prompts < 0:
            raise InvalidArgumentError(f"metric_prompts must be >= 0, got {self.metric_prompts}.")

    @property
    def language_codes(self) -> list[str]:
        """The resolved language codes."""
        from xl_suite.languages import resolve_languages

        return [s.code for s in resolve_languages(self.languages)]


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
    """
    from xl_suite.engines.spec import EngineSpec
    from xl_suite.training.judge import require_trl

    cfg = config or FinetuneConfig()
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
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # 1. models
    model = student.model
    if not model:
        from xl_suite.engines.tiny_model import build_tiny_model

        echo("[1/7] Building a tiny random chat model (a STAND-IN: its text is meaningless; pass --model)")
        model = str(build_tiny_model(out / "tiny-model"))
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
    preset = None
    if cfg.judge_preset:
        from xl_suite.evaluation.presets import load_preset

        preset = load_preset(cfg.judge_preset)
        judge_spec = EngineSpec(
            model=preset.judge_model,
            backend=preset.judge_backend,
            revision=preset.judge_revision,
            engine_kwargs=preset.judge_engine_kwargs,
        )
    else:
        judge_spec = judge or teacher_spec
    echo(
        f"      student {model} ({student_backend}); teacher {_describe(teacher_spec)}; judge {_describe(judge_spec)}"
    )
    engines = _Engines()
    try:
        # 2. XL-Instruct
        t = time.perf_counter()
        train_ds, eval_ds, syn_summary = _synthesize(cfg, langs, engines.get(teacher_spec), out, stand_in, echo)
        timings["synthesis"] = time.perf_counter() - t

        # 3. XL-AlpacaEval + references
        t = time.perf_counter()
        bench, label = _benchmark(cfg, langs)
        echo(f"[3/7] XL-AlpacaEval from {label}: {cfg.num_prompts} prompts x {len(langs)} languages; references")
        sampling = _answer_sampling(cfg, stand_in)
        from xl_suite.evaluation import generate_answers, generate_references

        reference_spec = teacher_spec
        if preset is not None and preset.reference_model:
            reference_spec = EngineSpec(
                model=preset.reference_model,
                backend=preset.reference_backend or preset.judge_backend,
                revision=preset.reference_revision,
            )
        with_refs = generate_references(
            bench, engines.get(reference_spec), sampling=sampling, work_dir=str(out / "work")
        )
        timings["references"] = time.perf_counter() - t

        # 4. before
        t = time.perf_counter()
        echo(f"[4/7] Answers of the base model {model}")
        before = generate_answers(with_refs, engines.get(student_spec), sampling=sampling, work_dir=str(out / "work"))
        engines.close(student_spec)
        timings["answers_before"] = time.perf_counter() - t

        # 5. training
        if cfg.close_engines_for_training:
            engines.close_all()
        t = time.perf_counter()
        echo(
            f"[5/7] Fine-tuning with TRL SFTTrainer ({'LoRA' if cfg.lora else 'full'}; {cfg.max_steps} steps, "
            f"{train_ds.num_rows} training pairs, {eval_ds.num_rows} held out)"
        )
        # the metric's prompts alternate between the languages (the benchmark holds num_prompts rows per language)
        by_position = sorted(range(with_refs.num_rows), key=lambda i: (i % cfg.num_prompts, i // cfg.num_prompts))
        metric_rows = with_refs.select(by_position[: cfg.metric_prompts])
        training = train_sft(
            cfg,
            model=model,
            revision=student.revision,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            metric_instructions=metric_rows["instruction"],
            metric_languages=metric_rows["language"],
            min_new_tokens=sampling.min_tokens,
            output_dir=out,
        )
        timings["training"] = time.perf_counter() - t
        echo(
            f"      training loss {training['first_loss']:.4f} -> {training['last_loss']:.4f}; "
            f"{len(training['metric_logs'])} in-loop metric evaluations; model saved to {training['model_dir']}"
        )

        # 6. after
        t = time.perf_counter()
        echo(f"[6/7] Answers of the fine-tuned model {training['model_dir']}")
        tuned_spec = EngineSpec(
            model=training["model_dir"],
            backend=student_backend,
            engine_kwargs=_engine_kwargs(student_backend, stand_in_kwargs, student.engine_kwargs),
        )
        after = generate_answers(with_refs, engines.get(tuned_spec), sampling=sampling, work_dir=str(out / "work"))
        engines.close(tuned_spec)
        timings["answers_after"] = time.perf_counter() - t

        # 7. judging
        t = time.perf_counter()
        echo("[7/7] Judging the answers before and after against the references")
        judge_engine = engines.get(judge_spec, factory=preset.build_judge if preset else None)
        reports = {}
        tables = {}
        for name, answers in (("before", before), ("after", after)):
            result, paths = _judge(cfg, name, answers, with_refs, judge_engine, preset, out, model_label=name)
            reports[name] = {k: str(v) for k, v in paths.items()}
            tables[name] = result.table
        timings["judging"] = time.perf_counter() - t
    finally:
        engines.close_all()
    timings["total"] = time.perf_counter() - t0

    summary = {
        "stand_in_model": stand_in,
        "model": model,
        "teacher": teacher_spec.model,
        "judge": judge_spec.model,
        "judge_preset": cfg.judge_preset,
        "languages": langs,
        "prompts": label,
        "config": asdict(cfg),
        "synthesis": syn_summary,
        "train_examples": train_ds.num_rows,
        "eval_examples": eval_ds.num_rows,
        "training": training,
        "before": _headline(tables["before"]),
        "after": _headline(tables["after"]),
        "reports": reports,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    path = out / "finetune_summary.json"
    path.write_text(json.dumps(summary, indent=2, default=_json_default), encoding="utf-8")
    echo(format_comparison(summary))
    echo(f"Summary: {path}")
    return summary


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _engine_kwargs(backend: str, stand_in: dict, given: dict) -> dict:
    base = dict(stand_in) if backend == "vllm" else {}
    return {**base, **(given or {})}


class _Engines:
    """Engines by spec: one engine per distinct spec (the stand-in's teacher, reference and judge are one)."""

    def __init__(self):
        self._engines: dict[str, Any] = {}

    @staticmethod
    def _key(spec) -> str:
        return json.dumps([spec.model, spec.backend, spec.revision, spec.engine_kwargs], sort_keys=True, default=str)

    def get(self, spec, factory=None):
        if _is_engine(spec):
            return spec  # the caller's engine: not ours to close
        key = self._key(spec)
        if key not in self._engines:
            self._engines[key] = spec.lazy(factory=factory)
        return self._engines[key]

    def close(self, spec) -> None:
        """Close the engine of ``spec`` (every role that shares it gets a fresh one when next asked)."""
        if _is_engine(spec):
            return
        engine = self._engines.pop(self._key(spec), None)
        if engine is not None:
            engine.close()

    def close_all(self) -> None:
        while self._engines:
            self._engines.popitem()[1].close()


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


def _synthesize(cfg: FinetuneConfig, langs, teacher, out: Path, stand_in: bool, echo):
    import datasets

    from xl_suite.synthesis import SynthesisConfig, synthesize
    from xl_suite.synthesis.seeds import builtin_seeds, load_seeds

    language_filter = cfg.language_filter and not stand_in
    echo(
        f"[2/7] Synthesizing XL-Instruct for {', '.join(langs)} with the teacher"
        + ("" if language_filter == cfg.language_filter else " (language filter off: the stand-in writes no language)")
    )
    seeds = builtin_seeds() if cfg.seeds is None else load_seeds(cfg.seeds)
    syn = synthesize(
        seeds,
        teacher,
        SynthesisConfig(
            languages=tuple(langs),
            num_examples=cfg.num_examples,
            threshold=cfg.threshold,
            max_tokens=cfg.max_tokens,
            language_filter=language_filter,
            seed=cfg.seed,
            batch_size=256,
            chunk_size=256,
        ),
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
    from xl_suite.evaluation.judging import JudgeConfig

    judge_config = preset.judge if preset else JudgeConfig(max_tokens=32, rubric=False)
    refs = dict(zip(with_refs["id"], with_refs["reference"], strict=True))
    result = evaluate_responses(
        answers["output"],
        answers["language"],
        references=[refs[i] for i in answers["id"]],
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
