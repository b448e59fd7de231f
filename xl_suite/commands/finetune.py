"""``xl-suite finetune``: synthesize XL-Instruct, fine-tune with TRL's SFTTrainer, evaluate before and after.

    xl-suite finetune --output-dir ft/                                        # tiny local stand-in model (CPU)
    xl-suite finetune --model meta-llama/Llama-3.2-1B-Instruct --teacher-model Qwen/Qwen2.5-7B-Instruct \\
        --judge-preset gpt-4o --num-examples 2000 --max-steps 500 --lora --bf16 --output-dir ft/   # a GPU

The steps, the defaults and what is a reconstruction are in :mod:`xl_suite.training.finetune`.
"""

from __future__ import annotations

import argparse

from xl_suite.commands._args import add_config_file_argument, add_engine_arguments, engine_spec


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``xl-suite finetune``; its flags come from FinetuneConfig and three EngineSpecs."""
    from xl_suite.configuration import add_arguments
    from xl_suite.training.finetune import FinetuneConfig

    p = subparsers.add_parser(
        "finetune",
        help="the paper's loop: synthesize XL-Instruct, fine-tune with TRL (LoRA optional), evaluate before/after",
        description="Synthesize XL-Instruct pairs with a teacher, fine-tune the student with TRL's SFTTrainer "
        "(full or LoRA via PEFT) while logging the xl-suite metric at each evaluation, and judge the "
        "student's XL-AlpacaEval answers before and after training. Without --model a tiny random "
        "stand-in is built locally (meaningless text; the numbers only show the plumbing). Needs "
        "pip install 'xl-suite[train]'.",
    )
    add_config_file_argument(p)
    add_arguments(p, FinetuneConfig, title="recipe and training")
    add_engine_arguments(p, title="student model (the one fine-tuned; default: the tiny stand-in)")
    add_engine_arguments(p, prefix="teacher", title="teacher model (synthesis and references; default: the student)")
    add_engine_arguments(p, prefix="judge", title="judge model (default: --judge-preset, else the teacher)")
    return p


def run(args) -> int:
    """Run ``xl-suite finetune``; returns the exit code (errors raise and the CLI prints them)."""

    from xl_suite.configuration import from_args
    from xl_suite.training.finetune import FinetuneConfig, run_finetune

    cfg = from_args(FinetuneConfig, args)
    run_finetune(
        cfg,
        student=engine_spec(args),
        teacher=engine_spec(args, prefix="teacher"),
        judge=engine_spec(args, prefix="judge"),
    )
    return 0
