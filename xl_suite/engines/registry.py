"""Backends by name: :func:`build_generator` makes a generator from a backend name and a model."""

from __future__ import annotations

from typing import Literal

from xl_suite.engines.base import Generator
from xl_suite.errors import InvalidArgumentError


__all__ = ["BACKENDS", "build_generator"]

BACKENDS = ("vllm", "openai", "transformers", "fake")


def build_generator(
    backend: Literal["vllm", "openai", "transformers", "fake"],
    model: str,
    *,
    revision: str | None = None,
    **kwargs,
) -> Generator:
    """Build a generator by backend name; heavy imports happen here, never at import time."""
    if backend == "vllm":
        from xl_suite.engines.vllm_engine import VLLMGenerator

        return VLLMGenerator(model, revision=revision, **kwargs)
    if backend == "openai":
        from xl_suite.engines.openai_engine import OpenAIGenerator

        return OpenAIGenerator(model, revision=revision, **kwargs)
    if backend == "transformers":
        from xl_suite.engines.hf_engine import TransformersGenerator

        return TransformersGenerator(model, revision=revision, **kwargs)
    if backend == "fake":
        from xl_suite.engines.fake import FakeGenerator

        return FakeGenerator(model=model, revision=revision, **kwargs)
    raise InvalidArgumentError(f"Unknown backend {backend!r}. Choose one of {list(BACKENDS)}.")
