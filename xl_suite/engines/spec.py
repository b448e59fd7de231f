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

    def check(self) -> None:
        """Check, before the engine starts, what can fail at its start: the API key of an HTTP model, the model
        folder or Hub id of a local engine (offline, a Hub id that is not in the cache fails at once; online, a Hub
        id is looked up with one short request, so an unreachable Hub or a misspelt id fails in seconds, not after
        the engine's own retries).

        Raises:
            InvalidArgumentError: no API key, a missing model folder, a Hub id offline and not cached, an unknown
                or unreachable Hub model.
            MissingDependencyError: the backend's package is not installed.
        """
        import os

        backend = self.backend or "vllm"
        if backend == "fake" or not self.model:
            return
        if backend == "openai":
            from xl_suite.engines import is_openai_available
            from xl_suite.engines.openai_engine import OPENAI_INSTALL_HINT
            from xl_suite.errors import MissingDependencyError

            if not is_openai_available():
                raise MissingDependencyError(f"The OpenAI backend needs the openai client: {OPENAI_INSTALL_HINT}.")
            env = self.engine_kwargs.get("api_key_env", "OPENAI_API_KEY")
            if not os.environ.get(env) and not self.engine_kwargs.get("base_url"):
                raise InvalidArgumentError(
                    f"No API key for {self.model!r}: set the environment variable {env} (or, for a local server "
                    "without a key, pass its base_url in the engine kwargs). Nothing was started."
                )
            return
        from xl_suite.engines import resolve_model

        name, local_dir = resolve_model(self.model)  # a missing folder, or a Hub id offline and not cached
        if local_dir is None:
            _check_hub_model(name, self.revision)

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


def _check_hub_model(repo_id: str, revision: str | None, timeout: float = 10.0) -> None:
    """One short request for a Hub model that is not in the local cache (nothing when it is, or offline)."""
    from xl_suite.engines import in_hub_cache
    from xl_suite.utils.hub import is_offline_mode

    if is_offline_mode() or in_hub_cache(repo_id):
        return
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:  # pragma: no cover - a dependency
        return
    try:
        HfApi().model_info(repo_id, revision=revision, timeout=timeout)
    except GatedRepoError:
        return  # it exists; access is the engine's to prove with the user's token
    except RevisionNotFoundError:
        raise InvalidArgumentError(
            f"Model {repo_id!r} has no revision {revision!r} on the Hub. Check --revision."
        ) from None
    except RepositoryNotFoundError:
        raise InvalidArgumentError(
            f"Model {repo_id!r} is not on the Hugging Face Hub (nor a local folder, nor in the cache). Check the "
            "name, or log in (HF_TOKEN) for a private model."
        ) from None
    except Exception as e:  # noqa: BLE001 - no connection, DNS, timeout, proxy: all say "unreachable"
        raise InvalidArgumentError(
            f"Model {repo_id!r} is not in the Hugging Face cache and the Hub cannot be reached "
            f"({type(e).__name__}). Download it first (huggingface-cli download {repo_id}) or pass a local folder; "
            "with HF_HUB_OFFLINE=1 this is known without a request."
        ) from None
