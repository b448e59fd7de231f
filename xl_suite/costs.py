"""What a run will ask of a paid API before it starts: requests, prompt and completion tokens, estimated cost.

Prompt tokens are estimated from the rendered chat messages at :data:`CHARS_PER_TOKEN` characters per token (the
usual rule of thumb for English with OpenAI's tokenizers; other scripts use more tokens per character, so the
estimate is a lower bound for them). Completion tokens are the upper bound ``requests x max_tokens x n``. Prices
are USD per million tokens: from the judge preset, the flags, or :data:`LIST_PRICES` (OpenAI list prices when this
was written; check them before trusting a figure).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


__all__ = [
    "CHARS_PER_TOKEN",
    "LIST_PRICES",
    "CostEstimate",
    "estimate_cost",
    "estimate_prompt_tokens",
    "check_tokens_per_second",
    "format_estimates",
    "list_price",
]

#: Characters per token used to estimate prompt tokens.
CHARS_PER_TOKEN = 4.0
#: USD per million (input, output) tokens of the paper's models, as listed when this was written.
LIST_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-2024-08-06": (2.5, 10.0),
    "gpt-4o-mini-2024-07-18": (0.15, 0.6),
}


def list_price(model: str | None) -> tuple[float, float] | None:
    """The (input, output) list price of a known model, else ``None``.

    >>> list_price("gpt-4o-mini-2024-07-18")
    (0.15, 0.6)
    >>> list_price("my-local-model") is None
    True
    """
    return LIST_PRICES.get(model or "")


def estimate_prompt_tokens(conversations: Iterable[Sequence[dict]]) -> int:
    """Estimated prompt tokens of chat conversations (content characters / :data:`CHARS_PER_TOKEN`, plus 4 per
    message for the chat format).

    >>> estimate_prompt_tokens([[{"role": "user", "content": "x" * 40}]])
    14
    """
    total = 0
    for conv in conversations:
        for message in conv:
            total += math.ceil(len(message["content"]) / CHARS_PER_TOKEN) + 4
    return total


@dataclass(frozen=True)
class CostEstimate:
    """One stage of a planned run.

    Attributes:
        stage: what the requests do (``"answers"``, ``"pairwise judge"``, ...).
        model: the model that will be called.
        requests: chat requests.
        prompt_tokens: estimated prompt tokens.
        completion_tokens: upper bound on completion tokens.
        price: USD per million (input, output) tokens, or ``None`` when unknown.
        detail: how ``requests`` is made up (``"797 prompts x 11 languages x 2 orders"``).
        local: the model runs on your own engine (vLLM, transformers): its cost is engine time, not dollars.
    """

    stage: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    price: tuple[float, float] | None = None
    detail: str = ""
    local: bool = False

    def engine_hours(self, tokens_per_second: float) -> float:
        """Hours of engine time to generate the completion bound at ``tokens_per_second`` generated tokens/s."""
        return self.completion_tokens / tokens_per_second / 3600

    @property
    def cost_usd(self) -> float | None:
        """Estimated cost: prompt tokens at the input price plus the completion bound at the output price."""
        if self.price is None:
            return None
        return (self.prompt_tokens * self.price[0] + self.completion_tokens * self.price[1]) / 1e6

    def line(self, tokens_per_second: float | None = None) -> str:
        """One line for the terminal: dollars for an API model, engine-hours for a local one.

        >>> CostEstimate("answers", "m", 10, 1000, 500, (1.0, 2.0), "10 prompts").line()
        'answers (m): 10 requests (10 prompts), ~1,000 prompt tokens, <= 500 completion tokens, ~$0.0020'
        >>> CostEstimate("answers", "m", 10, 1000, 36000, local=True).line(tokens_per_second=10)
        'answers (m): 10 requests, ~1,000 prompt tokens, <= 36,000 completion tokens, <= 1.00 engine-hours at 10 generated tokens/s'
        """
        cost = self.cost_usd
        if self.local:
            money = (
                f"<= {self.engine_hours(tokens_per_second):,.2f} engine-hours at {tokens_per_second:g} generated "
                "tokens/s"
                if tokens_per_second
                else "engine time unknown (pass --tokens-per-second, your engine's generated tokens per second)"
            )
        else:
            money = f"~${cost:,.4f}" if cost is not None else "cost unknown (no price for this model: pass one)"
        detail = f" ({self.detail})" if self.detail else ""
        return (
            f"{self.stage} ({self.model}): {self.requests:,} requests{detail}, ~{self.prompt_tokens:,} prompt "
            f"tokens, <= {self.completion_tokens:,} completion tokens, {money}"
        )


def estimate_cost(
    stage: str,
    model: str,
    conversations: Sequence[Sequence[dict]],
    *,
    max_tokens: int,
    n: int = 1,
    price: tuple[float, float] | None = None,
    detail: str = "",
    local: bool = False,
) -> CostEstimate:
    """A :class:`CostEstimate` for sending ``conversations`` (each ``n`` completions of at most ``max_tokens``).

    >>> e = estimate_cost("answers", "gpt-4o-mini-2024-07-18", [[{"role": "user", "content": "x" * 400}]] * 797,
    ...                   max_tokens=1024, price=list_price("gpt-4o-mini-2024-07-18"))
    >>> e.requests, e.prompt_tokens, e.completion_tokens, round(e.cost_usd, 4)
    (797, 82888, 816128, 0.5021)
    """
    return CostEstimate(
        stage=stage,
        model=model,
        requests=len(conversations),
        prompt_tokens=estimate_prompt_tokens(conversations),
        completion_tokens=len(conversations) * max_tokens * n,
        price=price,
        detail=detail,
        local=local,
    )


def format_estimates(estimates: Sequence[CostEstimate], tokens_per_second: float | None = None) -> str:
    """Each estimate's line, then the total: requests, tokens, dollars of API models, engine-hours of local ones.

    >>> print(format_estimates([CostEstimate("a", "api", 2, 10, 20, (1.0, 1.0)),
    ...                         CostEstimate("b", "local", 3, 30, 7200, local=True)], tokens_per_second=2))
    a (api): 2 requests, ~10 prompt tokens, <= 20 completion tokens, ~$0.0000
    b (local): 3 requests, ~30 prompt tokens, <= 7,200 completion tokens, <= 1.00 engine-hours at 2 generated tokens/s
    total: 5 requests, ~40 prompt tokens, <= 7,220 completion tokens; API models ~$0.0000; local engines <= 1.00 engine-hours at 2 generated tokens/s
    """
    lines = [e.line(tokens_per_second) for e in estimates]
    requests = sum(e.requests for e in estimates)
    prompt = sum(e.prompt_tokens for e in estimates)
    completion = sum(e.completion_tokens for e in estimates)
    total = f"total: {requests:,} requests, ~{prompt:,} prompt tokens, <= {completion:,} completion tokens"
    api = [e for e in estimates if not e.local]
    if api:
        known = [e.cost_usd for e in api if e.cost_usd is not None]
        total += f"; API models ~${sum(known):,.4f}" + ("" if len(known) == len(api) else " (some without a price)")
    local = [e for e in estimates if e.local]
    if local:
        if tokens_per_second:
            hours = sum(e.engine_hours(tokens_per_second) for e in local)
            total += f"; local engines <= {hours:,.2f} engine-hours at {tokens_per_second:g} generated tokens/s"
        else:
            total += "; local engines: pass --tokens-per-second for engine-hours"
    return "\n".join([*lines, total])


def check_tokens_per_second(value, flag: str = "--tokens-per-second") -> float | None:
    """``value`` as a positive number of generated tokens per second (or None).

    >>> check_tokens_per_second(0)
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: --tokens-per-second must be a positive number (generated tokens per second of your engine, e.g. 2500), got 0.
    """
    from xl_suite.errors import InvalidArgumentError

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InvalidArgumentError(
            f"{flag} must be a positive number (generated tokens per second of your engine, e.g. 2500), got {value!r}."
        )
    return float(value)
