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

    >>> EngineSpec(model="m", backend="fake", engine_kwargs='{"revision": null}').engine_kwargs
    {'revision': None}
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

    def __post_init__(self):
        """Parse ``engine_kwargs`` and check the backend name."""
        if self.backend is not None and self.backend not in BACKENDS:
            raise InvalidArgumentError(f"Unknown backend {self.backend!r}. Choose one of {list(BACKENDS)}.")
        object.__setattr__(self, "engine_kwargs", parse_json_object(self.engine_kwargs, "--engine-kwargs"))

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
