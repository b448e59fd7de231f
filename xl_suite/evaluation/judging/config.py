"""The judge's settings: one frozen dataclass, recorded in every report (and the CLI's flags, made from it)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

from xl_suite.configuration import option
from xl_suite.engines.base import SamplingConfig
from xl_suite.errors import InvalidArgumentError
from xl_suite.evaluation.judging.parsing import VERDICT_SCHEMA, rubric_schema


__all__ = ["OrderMode", "ORDER_MODES", "DEFAULT_DIMENSIONS", "JudgeConfig"]

OrderMode = Literal["both", "random"]
#: ``both`` presentation orders, preferences averaged; or one content-seeded ``random`` order per item.
ORDER_MODES = ("both", "random")


#: Rubric dimensions (ours; the paper's fine-grained metrics are unknown): name -> what the judge scores.
DEFAULT_DIMENSIONS: dict[str, str] = {
    "helpfulness": "how well the answer meets the user's need: it does what the instruction asks, completely.",
    "relevance": "the answer stays on the instruction's topic and contains nothing unrelated.",
    "accuracy": "the facts, reasoning, calculations and code in the answer are correct.",
    "fluency": "the answer is grammatical, correctly spelt text in the target language.",
    "naturalness": "the answer reads as if a native speaker of the target language wrote it, not as a literal "
    "translation; register and idioms fit.",
}


@dataclass(frozen=True)
class JudgeConfig:
    """How the judge is prompted, decoded, cached and priced. Every field is recorded in the report.

    Args:
        template: pairwise template (shipped name or ``.jinja`` path). Default ``"judge_pairwise"``.
        rubric_template: rubric template. Default ``"judge_rubric"``.
        order: ``"both"`` (default: each item judged in both presentation orders, preferences averaged) or
            ``"random"`` (one content-seeded order per item, un-swapped afterwards).
        seed: seed of the content-seeded order RNG and of the judge's sampling. Default 0.
        temperature: judge temperature; 0.0 (default) is greedy decoding.
        max_tokens: token budget of a pairwise verdict. Default 32.
        rubric_max_tokens: token budget of a rubric reply. Default 128.
        logprobs: top log-probabilities to ask for per token (soft preferences); None asks for none. Default 5.
        structured_output: constrain replies to their JSON schema when the backend supports it. Default True.
        rubric: also score the model's answers with the rubric judge. Default True.
        dimensions: rubric dimensions, name -> description. Default :data:`DEFAULT_DIMENSIONS`.
        chunk_size: judgments per resumable cache chunk. A SIGKILL loses at most the judge calls in flight: one
            chunk when calls run one at a time; with an engine that takes concurrent calls (vLLM, HTTP), each
            finished call (``batch_size`` judgments) is stored at once, so the calls in flight. Default 256.
        batch_size: judgments per engine call. Default 64.
        price_input_per_mtok: USD per million prompt tokens, for the cost ledger (None: cost not shown).
        price_output_per_mtok: USD per million completion tokens.
    """

    template: str = option("judge_pairwise", "pairwise template (shipped name or .jinja path)")
    rubric_template: str = option("judge_rubric", "rubric template")
    order: OrderMode = option(
        "both",
        "both presentation orders, preferences averaged; or one content-seeded random order per item",
        choices=ORDER_MODES,
    )
    seed: int = option(0, "seed of the content-seeded order and of the judge's sampling")
    temperature: float = option(0.0, "judge temperature (0.0: greedy)")
    max_tokens: int = option(32, "token budget of a pairwise verdict")
    rubric_max_tokens: int = option(128, "token budget of a rubric reply")
    logprobs: int | None = option(5, "top log-probabilities per token, for soft preferences (None: none)")
    structured_output: bool = option(True, "constrain replies to their JSON schema when the backend supports it")
    rubric: bool = option(True, "also score the answers with the rubric judge")
    dimensions: dict[str, str] = option(
        default_factory=lambda: dict(DEFAULT_DIMENSIONS),
        help="rubric dimensions (criteria), name -> description",
        cli=False,
    )
    chunk_size: int = option(
        256, "judgments per resumable cache chunk (a SIGKILL loses at most the judge calls in flight)"
    )
    batch_size: int = option(64, "judgments per engine call")
    price_input_per_mtok: float | None = option(None, "USD per million prompt tokens, for the cost ledger")
    price_output_per_mtok: float | None = option(None, "USD per million completion tokens")

    def __post_init__(self):
        """Validate the settings (order, dimension names, sizes, sampling values)."""
        if self.order not in ORDER_MODES:
            raise InvalidArgumentError(f"order={self.order!r} is not supported; choose one of {list(ORDER_MODES)}.")
        if not self.dimensions:
            raise InvalidArgumentError(
                "dimensions must name at least one rubric dimension, e.g. {'helpfulness': '...'}."
            )
        bad = [d for d in self.dimensions if not re.fullmatch(r"[a-z][a-z0-9_]*", d)]
        if bad:
            raise InvalidArgumentError(f"Rubric dimension names must be lower_snake_case identifiers, got {bad}.")
        if self.chunk_size < 1 or self.batch_size < 1:
            raise InvalidArgumentError(
                f"chunk_size and batch_size must be >= 1, got {self.chunk_size}, {self.batch_size}."
            )
        object.__setattr__(self, "dimensions", dict(self.dimensions))
        self.pairwise_sampling()  # validates temperature / max_tokens
        self.rubric_sampling()

    def pairwise_sampling(self, *, structured: bool = False) -> SamplingConfig:
        """Sampling settings of the pairwise judge (``json_schema`` set only when ``structured``)."""
        return SamplingConfig(
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=self.seed,
            logprobs=self.logprobs,
            json_schema=VERDICT_SCHEMA if structured else None,
        )

    def rubric_sampling(self, *, structured: bool = False) -> SamplingConfig:
        """Sampling settings of the rubric judge."""
        return SamplingConfig(
            temperature=self.temperature,
            max_tokens=self.rubric_max_tokens,
            seed=self.seed,
            json_schema=rubric_schema(self.dimensions) if structured else None,
        )

    def to_dict(self) -> dict:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)
