"""One object that describes an engine: backend, model, revision and engine arguments (vLLM's
``vLLMEngineProcessorConfig`` pattern). The CLI, the local runner and Ray build engines from it."""

from __future__ import annotations

from dataclasses import dataclass

from xl_suite.configuration import option, parse_json_object
from xl_suite.engines.registry import BACKENDS
from xl_suite.errors import InvalidArgumentError


__all__ = ["EngineSpec"]


@dataclass(frozen=True)
class EngineSpec:
    """Which engine to build, and how.

    Args:
        model: local folder, Hub id (vllm/transformers) or API model name (openai).
        backend: ``vllm`` (the default when ``None``), ``openai``, ``transformers`` or ``fake``.
        revision: pinned revision (commit SHA) of the model.
        engine_kwargs: extra engine arguments: a dict, or its JSON text (``--engine-kwargs``).
        truncate_prompts: keep the last ``max_model_len - max_tokens`` tokens of a prompt that does not fit the
            context instead of failing its row as ``too_long`` (``--truncate-prompts``; off by default). It goes into
            ``engine_kwargs`` (so into the engine's fingerprint: chunks of a run without it are not reused), and
            rows generated from a truncated prompt get the status ``prompt_truncated``. vLLM and transformers only.

    >>> EngineSpec(model="m", backend="fake", engine_kwargs='{"revision": null}').engine_kwargs
    {'revision': None}
    >>> EngineSpec(model="m", truncate_prompts=True).engine_kwargs
    {'truncate_prompts': True}
    """

    model: str | None = option(
        None, "model: local folder, Hub id (vllm/transformers) or API model name (openai)", metavar="PATH_OR_ID"
    )
    backend: str | None = option(None, "engine (default: vllm)", choices=BACKENDS)
    revision: str | None = option(None, "pinned revision (commit SHA) of the model")
    engine_kwargs: dict | str | None = option(
        None,
        "extra engine arguments as JSON, e.g. '{\"max_model_len\": 4096}' (vllm) or "
        '\'{"base_url": "http://127.0.0.1:8000/v1"}\' (openai)',
        metavar="JSON",
    )
    truncate_prompts: bool = option(
        False,
        "keep the last max_model_len - max_tokens tokens of a prompt that does not fit the model's context instead "
        "of failing its row as too_long; such rows are kept and marked prompt_truncated (vllm, transformers)",
    )

    def __post_init__(self):
        """Parse ``engine_kwargs``, check the backend name and put ``truncate_prompts`` into the engine arguments."""
        if self.backend is not None and self.backend not in BACKENDS:
            raise InvalidArgumentError(f"Unknown backend {self.backend!r}. Choose one of {list(BACKENDS)}.")
        kwargs = parse_json_object(self.engine_kwargs, "--engine-kwargs")
        if self.truncate_prompts:
            if kwargs.get("truncate_prompts", True) is not True:
                raise InvalidArgumentError(
                    f"--truncate-prompts contradicts --engine-kwargs truncate_prompts="
                    f"{kwargs['truncate_prompts']!r}: give one of them."
                )
            kwargs = {**kwargs, "truncate_prompts": True}
        object.__setattr__(self, "truncate_prompts", bool(kwargs.get("truncate_prompts")))
        if self.truncate_prompts and self.backend == "openai":
            raise InvalidArgumentError(
                "truncate_prompts (--truncate-prompts) is not available with the openai backend: the server "
                "tokenizes the prompt and rejects one that does not fit (its row gets the status too_long). Drop "
                "the option, or use the vllm or transformers backend."
            )
        object.__setattr__(self, "engine_kwargs", kwargs)

    def lazy(self, factory=None):
        """A :class:`~xl_suite.engines.lazy.LazyGenerator`: the engine starts only when a prompt needs it."""
        from xl_suite.engines.lazy import LazyGenerator

        return LazyGenerator(self, factory=factory)

    def build(self):
        """Build the generator (heavy imports happen here).

        Raises:
            InvalidArgumentError: no model is named.
        """
        from xl_suite.engines.registry import build_generator

        if not self.model:
            raise InvalidArgumentError("No model given: pass --model (or model= in Python).")
        return build_generator(self.backend or "vllm", self.model, revision=self.revision, **self.engine_kwargs)
