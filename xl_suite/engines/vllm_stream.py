"""Feed one vLLM engine from many callers without batch barriers.

``LLM.chat`` returns only when the longest answer of its call is done, so the engine's batch drains at every call
boundary: with long-tailed answer lengths, calls of 64 prompts ran at about half the speed of one call holding all
of them (measured, ``../shared/ENVIRONMENT.md`` section 7). :class:`RequestStream` removes the barrier: a single
engine thread adds each caller's requests to the running engine (``LLM.enqueue_chat``) and steps it
(``LLMEngine.step``); a caller's :meth:`RequestStream.run` returns when *its* requests are done, while requests of
other callers keep the engine's batch full. Results are the same as with ``LLM.chat``: every request carries its
own seed, so its output does not depend on what else is in the batch.

Only the engine thread touches the engine; callers only enqueue work and wait.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence


logger = logging.getLogger(__name__)

__all__ = ["RequestStream"]


class _Call:
    """One caller's requests: filled in by the engine thread, waited for by the caller."""

    def __init__(self, n: int):
        self.outputs: list = [None] * n
        self.remaining = n
        self.error: BaseException | None = None
        self.done = threading.Event()
        if n == 0:
            self.done.set()

    def finish(self, index: int, output) -> None:
        self.outputs[index] = output
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


class RequestStream:
    """Runs chat requests of many threads on one ``vllm.LLM`` as one continuous stream.

    Args:
        llm: the ``vllm.LLM``; from now on only the stream's thread may use it for generation.
        chat_template: chat template passed to ``enqueue_chat`` (``None``: the model's).
    """

    def __init__(self, llm, *, chat_template: str | None = None):
        self._llm = llm
        self._chat_template = chat_template
        self._inbox: queue.Queue = queue.Queue()
        self._pending: dict[str, tuple[_Call, int]] = {}
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._dead: BaseException | None = None

    def run(self, conversations: Sequence[list[dict]], params: Sequence) -> list:
        """Add the requests to the stream and wait for them; returns ``RequestOutput`` objects in input order.

        Raises:
            RuntimeError: the stream is closed, or the engine failed (the engine's error is chained).
        """
        if self._closed:
            raise RuntimeError("the request stream is closed")
        call = _Call(len(conversations))
        if not conversations:
            return []
        self._ensure_thread()
        self._inbox.put((list(conversations), list(params), call))
        while not call.done.wait(1.0):
            thread = self._thread
            if thread is None or not thread.is_alive():
                raise RuntimeError(f"the vLLM request stream stopped ({self._dead!r})")
        if call.error is not None:
            raise RuntimeError(f"vLLM failed while running these requests: {call.error}") from call.error
        return call.outputs

    def close(self) -> None:
        """Stop the engine thread (pending callers get an error)."""
        self._closed = True
        if self._thread is not None:
            self._inbox.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    # -- the engine thread ---------------------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="xl-suite-vllm-stream", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        engine = self._llm.llm_engine
        try:
            while True:
                busy = bool(self._pending)
                items = []
                try:  # block only when the engine has nothing to do
                    items.append(self._inbox.get(block=not busy))
                    while True:
                        items.append(self._inbox.get_nowait())
                except queue.Empty:
                    pass
                if any(item is None for item in items):
                    self._fail_all(RuntimeError("the request stream was closed"))
                    for item in items:
                        if item is not None:
                            item[2].fail(RuntimeError("the request stream was closed"))
                    return
                for convs, params, call in items:
                    try:
                        ids = self._llm.enqueue_chat(convs, params, use_tqdm=False, chat_template=self._chat_template)
                    except Exception as e:  # a rejected request fails its own call only
                        call.fail(e)
                        continue
                    for i, request_id in enumerate(ids):
                        self._pending[str(request_id)] = (call, i)
                if not self._pending:
                    continue
                for out in engine.step():
                    if getattr(out, "finished", False):
                        entry = self._pending.pop(str(out.request_id), None)
                        if entry is not None:
                            entry[0].finish(entry[1], out)
        except BaseException as e:  # the engine died: every waiting caller gets the error
            logger.debug("vLLM request stream stopped", exc_info=True)
            self._dead = e
            self._fail_all(e)

    def _fail_all(self, error: BaseException) -> None:
        calls = {id(c): c for c, _ in self._pending.values()}
        self._pending.clear()
        for call in calls.values():
            call.fail(error)
