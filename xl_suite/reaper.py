"""Engine processes die with their parent: a tiny watcher process that kills them when the parent is gone.

vLLM starts its EngineCore (and, with several GPUs, worker processes) as children of the process that built the
``LLM``. When that process is killed with SIGKILL it runs no cleanup, and the children live on, holding the
accelerator's memory and a CPU core each. ``PR_SET_PDEATHSIG`` would have to be set *inside* those children, and
vLLM creates them itself (``multiprocessing`` spawn: a fork followed by an exec that Python's at-fork hooks do not
see), so instead :func:`watch` starts one small watcher process per engine:

* it is told the engine's process ids (with their start times, so a reused pid is never hit);
* it waits on a pipe from the parent and also polls the parent's pid (a forked grandchild could hold the pipe open);
* when the parent is gone, it sends SIGTERM to the engine processes, then SIGKILL to those alive 5 s later, and
  exits. It ignores SIGINT/SIGHUP so that Ctrl-C in a terminal (sent to the whole group) cannot stop it first.

A normal :meth:`Reaper.close` (after the engine was shut down) just ends the watcher.

The same watcher covers a local Ray runtime that a command starts (``ray.init()`` without a cluster): most of Ray's
processes share the driver's fate, but its dashboard and runtime-env agents outlived a killed driver.
:func:`descendants` before ``ray.init`` and :func:`watch_started` after it watch every process the runtime started.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterable


logger = logging.getLogger(__name__)

__all__ = ["Reaper", "watch", "descendants", "watch_started"]

_WATCHER = r"""
import os, select, signal, sys, time
import psutil
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
parent, parent_started = int(sys.argv[1]), float(sys.argv[2])
targets = [(int(p), float(t)) for p, t in (a.split(":") for a in sys.argv[3:])]

def parent_alive():
    try:
        proc = psutil.Process(parent)
        return abs(proc.create_time() - parent_started) < 1 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False

fd = sys.stdin.fileno()
done = False
while parent_alive():
    ready, _, _ = select.select([fd], [], [], 0.5)
    if ready:
        data = os.read(fd, 64)
        if b"done" in data:
            done = True
            break
        if not data:  # EOF: the parent died or dropped the pipe; keep polling its pid
            while parent_alive():
                time.sleep(0.5)
            break
if not done:
    procs = []
    for pid, started in targets:
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - started) < 1:
                procs.append(proc)
        except psutil.Error:
            pass
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    print(f"xl-suite reaper: parent {parent} died; stopped engine processes {[p.pid for p in procs]}",
          file=sys.stderr, flush=True)
"""


class Reaper:
    """Handle on a watcher process; :meth:`close` ends it without touching the engine processes."""

    def __init__(self, proc: subprocess.Popen, pids: list[int]):
        self.proc = proc
        self.pids = pids

    def close(self) -> None:
        """Tell the watcher that the engine was shut down normally, and wait for it to exit."""
        if self.proc.poll() is not None:
            return
        try:
            self.proc.stdin.write(b"done\n")
            self.proc.stdin.flush()
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def watch(pids: Iterable[int]) -> Reaper | None:
    """Start a watcher that stops ``pids`` (and only them) when this process dies; None when there is nothing to do.

    Args:
        pids: process ids of the engine's processes (children of this process).
    """
    import psutil

    targets = []
    for pid in sorted(set(pids)):
        try:
            targets.append(f"{pid}:{psutil.Process(pid).create_time()}")
        except psutil.Error:
            continue
    if not targets:
        return None
    me = psutil.Process()
    proc = subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(me.pid), str(me.create_time()), *targets],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # not in the terminal's process group: Ctrl-C and a group kill spare it
        close_fds=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    logger.debug("Reaper %d watches engine processes %s", proc.pid, targets)
    return Reaper(proc, [int(t.split(":")[0]) for t in targets])


def descendants() -> set[int]:
    """Process ids of this process's descendants now: take it before starting a runtime, for :func:`watch_started`."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def watch_started(before: set[int]) -> Reaper | None:
    """Watch the descendants of this process that are not in ``before`` (what a runtime just started, such as a local
    Ray node: its GCS, raylet, dashboard and agents): when this process dies, even by SIGKILL, they are stopped.

    Args:
        before: :func:`descendants` taken just before the runtime started (other engines' processes and watchers are
            left to their own watchers).

    Returns:
        The :class:`Reaper` (close it after shutting the runtime down), or None when nothing new was started.
    """
    return watch(descendants() - set(before))
