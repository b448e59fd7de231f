"""The xl-suite ``evaluate`` metric inside a training loop: a ``transformers.TrainerCallback``.

At every evaluation (``eval_strategy="steps"``), :class:`XlMetricCallback` answers a few XL-AlpacaEval prompts with
the model being trained (greedy ``generate``), scores the answers with the ``evaluate`` module of this package
(``evaluate.load(xl_suite.metric_path(), "fidelity")``: language fidelity and line pass rate, offline), and logs
``eval_xl_language_fidelity``, ``eval_xl_line_pass_rate`` and ``eval_xl_empty_rate`` through ``trainer.log``, so they
appear beside the eval loss in ``trainer.state.log_history``, the console and any tracker. With a judge metric
(the metric's ``default`` config and a ``judge``), the win rate against the prompts' references is logged too.

The class is built when first used (it subclasses ``transformers.TrainerCallback``); importing this module does not
import transformers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any


logger = logging.getLogger(__name__)

__all__ = ["XlMetricCallback", "generate_replies"]  # noqa: F822 - XlMetricCallback: module __getattr__

#: Prefix of the logged keys.
LOG_PREFIX = "eval_xl_"


def generate_replies(model, tokenizer, instructions: Sequence[str], *, max_new_tokens: int, min_new_tokens: int = 0):
    """Greedy answers of a transformers (or PEFT) model to one-turn chat prompts; restores the training mode."""
    import torch

    was_training = model.training
    model.eval()
    pad_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in instructions
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens or None,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[:, enc["input_ids"].shape[1] :]
        return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = pad_side
        if was_training:
            model.train()


def _callback_base():
    try:
        from transformers import TrainerCallback
    except ImportError as e:
        from xl_suite.errors import MissingDependencyError

        raise MissingDependencyError("The training callback needs transformers: pip install 'xl-suite[train]'.") from e
    return TrainerCallback


class _XlMetricCallback:
    """Logs the xl-suite metric on a few prompts at each evaluation. See the module docstring.

    Args:
        trainer: the ``transformers.Trainer`` (or TRL trainer) it is attached to; its model and processing class
            generate the answers, and ``trainer.log`` records the scores.
        instructions: the prompts to answer (a handful: this runs at every evaluation).
        languages: the target language of each prompt.
        max_new_tokens: new tokens per answer. Default 64.
        min_new_tokens: minimum new tokens (a random stand-in model may otherwise stop at once). Default 0.
        metric: an ``evaluate`` module; default ``evaluate.load(xl_suite.metric_path(), "fidelity")``.
        references: reference answers, needed with a judge.
        judge: a judge engine for the metric's ``default`` config (win rates); None: fidelity only.
    """

    def __init__(
        self,
        trainer,
        instructions: Sequence[str],
        languages: Sequence[str],
        *,
        max_new_tokens: int = 64,
        min_new_tokens: int = 0,
        metric=None,
        references: Sequence[str] | None = None,
        judge=None,
    ):
        from xl_suite.errors import InvalidArgumentError

        if not instructions:
            raise InvalidArgumentError("XlMetricCallback needs at least one prompt to answer.")
        if len(instructions) != len(languages):
            raise InvalidArgumentError(f"{len(instructions)} prompts but {len(languages)} languages.")
        if judge is not None and (references is None or len(references) != len(instructions)):
            raise InvalidArgumentError("A judge compares answers with references: pass one reference per prompt.")
        self.trainer = trainer
        self.instructions = list(instructions)
        self.languages = list(languages)
        self.references = list(references) if references is not None else None
        self.judge = judge
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        if metric is None:
            import evaluate

            from xl_suite.evaluate_module import metric_path

            metric = evaluate.load(metric_path(), "fidelity" if judge is None else "default")
        self.metric = metric
        #: one dict per evaluation: step, the logged scores and the answers
        self.history: list[dict[str, Any]] = []

    def on_evaluate(self, args, state, control, **kwargs):
        """Answer the prompts with the current model, compute the metric and log it."""
        model = self.trainer.model
        tokenizer = self.trainer.processing_class
        answers = generate_replies(
            model,
            tokenizer,
            self.instructions,
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
        )
        inputs: dict[str, Any] = {"predictions": answers, "languages": self.languages}
        if self.judge is not None:
            inputs.update(references=self.references, instructions=self.instructions, judge=self.judge)
        out = self.metric.compute(**inputs)
        logs = {
            f"{LOG_PREFIX}language_fidelity": float(out["language_fidelity"]),
            f"{LOG_PREFIX}line_pass_rate": float(out["line_pass_rate"]),
            f"{LOG_PREFIX}empty_rate": 100.0 * sum(not a for a in answers) / len(answers),
        }
        if self.judge is not None:
            logs[f"{LOG_PREFIX}win_rate"] = float(out["win_rate"])
        self.trainer.log(logs)
        self.history.append({"step": state.global_step, **logs, "answers": answers})
        bad = [k for k, v in logs.items() if isinstance(v, float) and math.isnan(v)]
        if bad:
            logger.warning("xl-suite metric at step %d: %s could not be computed (NaN)", state.global_step, bad)
        return control


_CLASS = None


def __getattr__(name: str):
    """``XlMetricCallback``: built on first access as a subclass of ``transformers.TrainerCallback``."""
    global _CLASS
    if name == "XlMetricCallback":
        if _CLASS is None:
            _CLASS = type(
                "XlMetricCallback",
                (_XlMetricCallback, _callback_base()),
                {"__module__": __name__, "__doc__": _XlMetricCallback.__doc__},
            )
        return _CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
