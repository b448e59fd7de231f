"""Start a subprocess that Ctrl-C can reach, as from a terminal: for the tests that send it SIGINT.

A process inherits an ignored or blocked SIGINT across ``exec``: a test run started in the background by a
non-interactive shell (``make test &``, ``nohup``), whose SIGINT the shell sets to ignored, would otherwise start
every CLI under test with Ctrl-C ignored, and Python then never installs its ``KeyboardInterrupt`` handler. The
child gets SIGINT's default disposition and an unblocked SIGINT, what a shell in a terminal gives a command.
"""

from __future__ import annotations

import signal
import subprocess


def like_a_terminal() -> None:
    """``preexec_fn`` for :class:`subprocess.Popen`: SIGINT at its default disposition and not blocked."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def start_interruptible(cmd, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(cmd, **kwargs)`` started :func:`like_a_terminal`, with text stdout/stderr pipes unless
    ``kwargs`` says otherwise."""
    kwargs = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **kwargs}
    return subprocess.Popen(cmd, preexec_fn=like_a_terminal, **kwargs)
