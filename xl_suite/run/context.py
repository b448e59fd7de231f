"""Which executor computes the chunks of the ``run_stage`` calls in the current context (None: this process).

Set by :class:`xl_suite.executors.RayExecutor` in its ``with`` block; read by the scheduler. A context variable, so
threads and tasks started inside the block see it, and nothing outside it does.
"""

from __future__ import annotations

import contextlib
import contextvars


__all__ = ["current_executor", "using_executor", "retry_exhausted", "retrying_failed"]

_CURRENT: contextvars.ContextVar = contextvars.ContextVar("xl_suite_executor", default=None)


def current_executor():
    """The executor of the enclosing ``with`` block, or None (compute in this process)."""
    return _CURRENT.get()


@contextlib.contextmanager
def using_executor(executor):
    """Send the ``run_stage`` calls of this block to ``executor`` (None: compute here, e.g. inside a worker)."""
    token = _CURRENT.set(executor)
    try:
        yield executor
    finally:
        _CURRENT.reset(token)


_RETRY_EXHAUSTED: contextvars.ContextVar = contextvars.ContextVar("xl_suite_retry_exhausted", default=False)


def retry_exhausted() -> bool:
    """Whether failed rows that used all their attempts are tried again in this context (``--retry-failed``)."""
    return _RETRY_EXHAUSTED.get()


@contextlib.contextmanager
def retrying_failed(enabled: bool = True):
    """Inside the block, every stored failed row is tried once more, however many attempts it has had (the CLI's
    ``--retry-failed``: after an outage the limit of attempts must not keep a healthy server from answering)."""
    token = _RETRY_EXHAUSTED.set(bool(enabled))
    try:
        yield
    finally:
        _RETRY_EXHAUSTED.reset(token)
