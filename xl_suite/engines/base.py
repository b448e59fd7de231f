"""The generator seam: chat messages in, completions out.

Every backend (vLLM offline, OpenAI-compatible HTTP, transformers, the test fake) implements
:class:`Generator`. Pipelines receive a generator through arguments; nothing here holds a global engine.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

from xl_suite.errors import GenerationError, InvalidArgumentError
from xl_suite.fingerprint import stable_hash
from xl_suite.status import BACKEND_FAILED, RowStatus


__all__ = [
    "Messages",
    "SamplingConfig",
    "Completion",
    "Generator",
    "GenerationError",
    "TokenLedger",
    "conversation_seed",
]

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingConfig:
    """Decoding settings. Every field is recorded on generated rows.

    Args:
        temperature: 0.0 means greedy (the default, as for judges).
        top_p: nucleus sampling mass.
        max_tokens: maximum new tokens per completion.
        min_tokens: minimum new tokens before end-of-sequence may be generated (0 = no minimum). Supported by vLLM
            (offline and ``vllm serve``) and transformers; not by the OpenAI API itself.
        n: completions per prompt (best-of-n uses n=3).
        seed: sampling seed; with n>1 and temperature>0 the backend derives per-candidate streams from it.
        logprobs: number of top log-probabilities to return per generated token (None = none).
        json_schema: constrain the output to this JSON schema where the backend supports structured outputs.
        stop: stop strings.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    min_tokens: int = 0
    n: int = 1
    seed: int = 0
    logprobs: int | None = None
    json_schema: dict | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.temperature >= 0 or self.temperature == float("inf"):  # NaN compares false
            raise InvalidArgumentError(f"temperature must be a finite number >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise InvalidArgumentError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_tokens < 1:
            raise InvalidArgumentError(f"max_tokens must be >= 1, got {self.max_tokens}.")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise InvalidArgumentError(
                f"min_tokens must be in [0, max_tokens={self.max_tokens}], got {self.min_tokens}."
            )
        if self.n < 1:
            raise InvalidArgumentError(f"n must be >= 1, got {self.n}.")
        object.__setattr__(self, "stop", tuple(self.stop))

    def to_dict(self) -> dict:
        """JSON-serialisable dict (schema included), used in fingerprints and provenance columns."""
        return asdict(self)

    def to_json(self) -> str:
        """Canonical JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)


@dataclass
class Completion:
    """One completion.

    Attributes:
        text: generated text.
        prompt_tokens: tokens in the prompt (0 if unknown).
        completion_tokens: generated tokens.
        finish_reason: "stop", "length", ...
        top_logprobs: per generated token, a dict {token_text: logprob} of the top alternatives (None if not asked).
        tokens: generated token texts, aligned with ``top_logprobs`` (None if not asked).
    """

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    top_logprobs: list[dict[str, float]] | None = None
    tokens: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def failed_completion(status: RowStatus | str, message: str, *, prompt_tokens: int = 0) -> Completion:
    """The completion a backend returns for one request that failed on its own (the rest of the batch goes on).

    ``status`` is ``"too_long"`` (the prompt does not fit the model's context) or ``"error"`` (the request failed
    after the backend's retries); the text is empty and ``extra["error"]`` holds the message. Stage functions copy
    the status into their ``*_status`` column (:func:`failure_status`), so the row is stored, counted and retried
    as a failure, never passed on as data.

    >>> c = failed_completion(RowStatus.TOO_LONG, "prompt has 300 tokens, the context 256")
    >>> str(failure_status(c)), c.text
    ('too_long', '')
    """
    if status not in BACKEND_FAILED:
        raise InvalidArgumentError(f"status must be one of {[str(s) for s in BACKEND_FAILED]}, got {status!r}.")
    status = RowStatus(status)
    return Completion(
        text="", prompt_tokens=prompt_tokens, finish_reason=status, extra={"status": status, "error": message}
    )


def failure_status(completion) -> RowStatus | None:
    """``too_long``/``error`` when the backend marked this completion as a per-row failure, else None."""
    status = (getattr(completion, "extra", None) or {}).get("status")
    return RowStatus(status) if status in BACKEND_FAILED else None


def raw_text(completion) -> str:
    """What a row records as the raw completion: the text, or, for a request that failed on its own
    (:func:`failed_completion`), its status and message (``"[error] ..."``; the backends scrub credentials from
    it), so a report's raw replies say why a row failed.

    >>> raw_text(Completion("Hallo")), raw_text(failed_completion(RowStatus.ERROR, "HTTP 200 with no content"))
    ('Hallo', '[error] HTTP 200 with no content')
    """
    status = failure_status(completion)
    if status is None:
        return completion.text
    return f"[{status}] {(completion.extra or {}).get('error', '')}".rstrip()


def prompt_truncated(completion) -> bool:
    """True when the backend cut this completion's prompt to fit its context (``extra["prompt_truncated"]``)."""
    return bool((getattr(completion, "extra", None) or {}).get("prompt_truncated"))


def truncates_prompts(generator) -> bool:
    """Whether ``generator`` was built with ``truncate_prompts`` (known without starting a lazy engine)."""
    return bool(getattr(generator, "truncate_prompts", False))


def row_status(completion, ok: bool | None = None, otherwise: RowStatus = RowStatus.EMPTY) -> RowStatus:
    """The ``*_status`` value of a row: the backend's per-row failure (``too_long``/``error``) if any, else ``ok``
    when ``ok`` (default: the completion has text), else ``otherwise`` (``empty``, ``unparsed``...).

    A usable completion whose prompt the backend truncated (``truncate_prompts``) is ``prompt_truncated``
    instead of ``ok``: kept as data, and counted apart from the ``ok`` rows.

    >>> [str(row_status(Completion(t))) for t in ("Hallo", "")], str(row_status(Completion("{"), False, "unparsed"))
    (['ok', 'empty'], 'unparsed')
    >>> str(row_status(failed_completion("error", "HTTP 503"), True))
    'error'
    >>> str(row_status(Completion("Hallo", extra={"prompt_truncated": True})))
    'prompt_truncated'
    """
    status = failure_status(completion)
    if status is not None:
        return status
    if ok is None:
        ok = bool(completion.text and completion.text.strip())
    if not ok:
        return RowStatus(otherwise)
    return RowStatus.PROMPT_TRUNCATED if prompt_truncated(completion) else RowStatus.OK


def concurrent_calls(generator) -> bool:
    """True when ``generator.generate`` may be called from several threads at once and their requests share the
    engine (vLLM's async engine, the HTTP backend's one sliding window). :func:`xl_suite.runner.run_stage` then
    keeps several batches in flight, so the engine never waits for a batch's slowest row."""
    return bool(getattr(generator, "concurrent_calls", False))


@dataclass
class TokenLedger:
    """Thread-safe running totals of what a backend consumed (the OpenAI backend adds retries and cost).

    Attributes:
        requests: engine calls or HTTP requests sent (retries included).
        prompt_tokens: prompt tokens, summed over requests that succeeded.
        completion_tokens: generated tokens, summed over all candidates.
        retries: requests that were sent again after a retryable failure.
        failures: requests that failed for good (raised ``GenerationError``).
        cost: spend in the currency of the configured prices; ``None`` when no prices were given.

    >>> ledger = TokenLedger()
    >>> ledger.add(prompt_tokens=10, completion_tokens=5)
    >>> ledger.to_dict()["completion_tokens"]
    5
    """

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: int = 0
    cost: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(
        self,
        *,
        requests: int = 1,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        retries: int = 0,
        failures: int = 0,
        cost: float | None = None,
    ) -> None:
        """Add to the totals atomically."""
        with self._lock:
            self.requests += requests
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            self.retries += retries
            self.failures += failures
            if cost is not None:
                self.cost = (self.cost or 0.0) + cost

    def to_dict(self) -> dict:
        """A consistent snapshot as a plain dict."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


def conversation_seed(seed: int, messages: Messages) -> int:
    """The per-request seed engines use: a function of the config seed and the conversation only.

    Each prompt thus gets its own random stream (no correlation between prompts that share ``seed``), and a
    prompt's sampled output does not depend on the batch it was sent in or its position there.

    >>> msgs = [{"role": "user", "content": "hi"}]
    >>> conversation_seed(0, msgs) == conversation_seed(0, list(msgs))
    True
    >>> conversation_seed(0, msgs) != conversation_seed(1, msgs)
    True
    """
    return int(stable_hash("seed", seed, messages), 16) % (2**31 - 1)


@runtime_checkable
class Generator(Protocol):
    """What pipelines need from a backend."""

    backend: str
    model: str
    revision: str | None

    def generate(self, conversations: Sequence[Messages], sampling: SamplingConfig) -> list[list[Completion]]:
        """Return ``sampling.n`` completions for each conversation, in input order. Raises GenerationError."""
        ...

    def fingerprint(self) -> str:
        """Stable identity of the model behind the backend (model id, revision, backend, dtype...)."""
        ...

    def supports_structured_output(self) -> bool:
        """True when ``SamplingConfig.json_schema`` is enforced by the backend."""
        ...

    def close(self) -> None:
        """Release the engine (processes, connections)."""
        ...
