"""The guard: no test may leave process-wide state changed by this repository's code (issue 17).

xl-suite runs inside other people's processes (a training script, a notebook), so importing or calling it must not
change their thread switch interval, datasets' progress-bar switch, environment, root logger, warning filters, or leave
SIGINT ignored or blocked in the main thread.
An autouse fixture snapshots that state before each test and fails the test after which it differs.

Attribution: the environment and the warning filters are also changed by third-party packages when they are first
imported (scikit-learn sets ``KMP_DUPLICATE_LIB_OK``, scipy adds warning filters, pytest sets
``PYTEST_CURRENT_TEST``). Every write to ``os.environ`` and every ``warnings.filterwarnings``/``simplefilter`` call
is therefore recorded with the file of the code that made it (the nearest frame outside the standard library); a
change counts when that code lies in this repository (``xl_suite/``, ``tests/``...) or its origin is unknown. What a
test sets through ``monkeypatch`` is undone before the comparison. The root logger is attributed the same way
(``setLevel``/``addHandler``/``removeHandler`` on it are recorded; a change with no recorded writer counts). The
switch interval and the progress-bar switch have no third-party writers in the suite and are compared as they are; calls of datasets'
``enable/disable_progress_bars()`` from the library (``xl_suite/`` outside its command line) are reported even when
the switch ends as it was (a toggle is a race with the caller's threads and overrides the caller's choice).

Loaded as a plugin by ``tests/conftest.py``; ``tests/test_process_guard.py`` plants each kind of change and checks
that the guard fails the test.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import sysconfig
import threading
import warnings
from pathlib import Path

import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]
_STDLIB = str(Path(sysconfig.get_paths()["stdlib"]).resolve())
#: Files whose frames are skipped when looking for who made a change (the guard itself, and pytest's monkeypatch:
#: its changes are undone before the comparison).
_SKIP = {str(Path(__file__).resolve())}

#: datasets' progress-bar switch: compared (conftest turns the bars off for every test and fails a test after which
#: they are on) and every call of datasets' enable/disable_progress_bars() by library code is reported; the CLI
#: (xl_suite/cli.py, xl_suite/commands/) may toggle it for a command's duration if it puts it back.
CHECK_PROGRESS_BARS = True
#: The thread switch interval is compared (the vLLM backend no longer sets it: it runs on vLLM's async engine).
CHECK_SWITCH_INTERVAL = True

_env_writers: dict[str, str] = {}  # key -> file of the code that last wrote or deleted it
_filter_writers: dict[tuple, str] = {}  # warnings filter entry -> file of the code that added it
_bar_calls: list[tuple[str, str]] = []  # (function, file of the caller) of datasets' progress-bar switches
_root_writers: list[str] = []  # files of the code that set the root logger's level or handlers


def _writer() -> str:
    """File of the nearest caller outside the standard library and this module."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if not path.startswith("<"):
            resolved = str(Path(path).resolve())
            if not resolved.startswith(_STDLIB) and resolved not in _SKIP:
                return resolved
        frame = frame.f_back
    return "<unknown>"


def _is_library(path: str) -> bool:
    """A file of the package outside its command line (which may toggle switches for a command's duration)."""
    library = REPO_ROOT / "xl_suite"
    resolved = Path(path)
    if not resolved.is_relative_to(library):
        return False
    return not (resolved == library / "cli.py" or resolved.is_relative_to(library / "commands"))


def _is_ours(path: str | None) -> bool:
    """Code of this repository, or a change nobody recorded: both count as changes the guard reports."""
    if path is None or path == "<unknown>":
        return True
    return Path(path).is_relative_to(REPO_ROOT) and ".venv" not in Path(path).relative_to(REPO_ROOT).parts


@pytest.fixture(scope="session", autouse=True)
def _record_writers():
    """Record who writes ``os.environ`` and adds warning filters, for the whole session; put everything back after."""
    environ_cls = type(os.environ)
    set_item, del_item = environ_cls.__setitem__, environ_cls.__delitem__
    filterwarnings, simplefilter = warnings.filterwarnings, warnings.simplefilter

    def recording_set(self, key, value):
        if self is os.environ:
            _env_writers[key] = _writer()
        set_item(self, key, value)

    def recording_del(self, key):
        if self is os.environ:
            _env_writers[key] = _writer()
        del_item(self, key)

    def recording(add):
        def wrapper(*args, **kwargs):
            before = list(warnings.filters)
            add(*args, **kwargs)
            writer = _writer()
            for entry in warnings.filters:
                if entry not in before:
                    _filter_writers[entry] = writer

        return wrapper

    def recording_call(name, function):
        def wrapper(*args, **kwargs):
            _bar_calls.append((name, _writer()))
            return function(*args, **kwargs)

        return wrapper

    # datasets exports its two switches under several names; each name is wrapped, and put back afterwards.
    switches = []
    try:
        import datasets
        import datasets.utils
        import datasets.utils.tqdm
    except ImportError:
        datasets = None
    else:
        for module in (datasets, datasets.utils, datasets.utils.tqdm, getattr(datasets.utils, "logging", None)):
            for name in ("disable_progress_bars", "enable_progress_bars"):
                if module is not None and callable(getattr(module, name, None)):
                    switches.append((module, name, getattr(module, name)))
                    setattr(module, name, recording_call(name, getattr(module, name)))
    logger_methods = {name: getattr(logging.Logger, name) for name in ("setLevel", "addHandler", "removeHandler")}

    def recording_logger(name):
        method = logger_methods[name]

        def wrapper(self, *args, **kwargs):
            if self is logging.getLogger():
                _root_writers.append(_writer())
            return method(self, *args, **kwargs)

        return wrapper

    for name in logger_methods:
        setattr(logging.Logger, name, recording_logger(name))
    environ_cls.__setitem__, environ_cls.__delitem__ = recording_set, recording_del
    warnings.filterwarnings, warnings.simplefilter = recording(filterwarnings), recording(simplefilter)
    try:
        yield
    finally:
        environ_cls.__setitem__, environ_cls.__delitem__ = set_item, del_item
        warnings.filterwarnings, warnings.simplefilter = filterwarnings, simplefilter
        for module, name, function in switches:
            setattr(module, name, function)
        for name, method in logger_methods.items():
            setattr(logging.Logger, name, method)


def progress_bars_enabled() -> bool | None:
    """datasets' global progress-bar switch (``None`` while datasets is not imported)."""
    if "datasets" not in sys.modules:
        return None
    from datasets.utils.logging import is_progress_bar_enabled

    return is_progress_bar_enabled()


def _root_logger_state() -> tuple:
    root = logging.getLogger()
    # pytest's own capture handlers are swapped per phase (setup/call/teardown); they are not the code's.
    handlers = [h for h in root.handlers if not type(h).__module__.startswith("_pytest")]
    return logging.getLevelName(root.level), handlers


def process_state() -> dict[str, object]:
    """What the guard compares, one entry per piece of process-wide state."""
    state: dict[str, object] = {
        "root logger (level, handlers)": _root_logger_state(),
        "warnings.filters": list(warnings.filters),
        "os.environ": dict(os.environ),
    }
    if CHECK_SWITCH_INTERVAL:
        state["sys.getswitchinterval()"] = sys.getswitchinterval()
    # Ctrl-C: a SIGINT left ignored or blocked is inherited by every process started afterwards (exec keeps both),
    # so a user's later subprocesses, and this suite's own Ctrl-C tests, could no longer be interrupted.
    # (A Python-level handler is not inherited, so only "ignored" is compared: vLLM, Ray and asyncio may install one.)
    state["SIGINT ignored"] = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread():
        state["signals blocked in the main thread"] = sorted(signal.pthread_sigmask(signal.SIG_BLOCK, []))
    return state


def state_changes(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """The differences between two :func:`process_state` snapshots that this repository's code made."""
    changes = []
    for key, old in before.items():
        new = after[key]
        if key == "os.environ":
            for name in sorted(old.keys() | new.keys()):
                if old.get(name) != new.get(name) and _is_ours(_env_writers.get(name)):
                    where = _env_writers.get(name, "<unknown>")
                    changes.append(f"os.environ[{name!r}]: {old.get(name)!r} -> {new.get(name)!r} (by {where})")
        elif key == "warnings.filters":
            added = [e for e in new if e not in old and _is_ours(_filter_writers.get(e))]
            removed = [e for e in old if e not in new]
            changes += [f"warnings filter added: {e!r} (by {_filter_writers.get(e, '<unknown>')})" for e in added]
            changes += [f"warnings filter removed: {e!r}" for e in removed]
        elif key == "SIGINT ignored":  # harmful one way only: ignored after, not before (a child inherits it)
            if new and not old:
                changes.append(f"{key}: {old!r} -> {new!r}")
        elif key == "signals blocked in the main thread":
            if set(new) - set(old):
                changes.append(f"{key}: {old!r} -> {new!r}")
        elif old != new:
            changes.append(f"{key}: {old!r} -> {new!r}")
    return changes


@pytest.fixture(autouse=True)
def _process_state_guard():
    """Fail a test after which process-wide state differs from before it (see the module docstring)."""
    before, calls, root_writes = process_state(), len(_bar_calls), len(_root_writers)
    yield
    changes = state_changes(before, process_state())
    writers = _root_writers[root_writes:]
    if writers and not any(_is_ours(path) for path in writers):  # set by third-party code only (alpaca_eval's import)
        changes = [c for c in changes if not c.startswith("root logger")]
    if CHECK_PROGRESS_BARS:
        changes += [f"datasets.{name}() called by {path}" for name, path in _bar_calls[calls:] if _is_library(path)]
    if changes:
        pytest.fail(
            "process-wide state changed during this test (xl-suite must leave the caller's process as it found "
            "it): " + "; ".join(changes),
            pytrace=False,
        )
