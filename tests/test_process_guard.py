"""The process-state guard (tests/process_guard.py) fails a test whose code changed process-wide state.

Each kind of change is planted in an inner pytest run, made by code compiled under a file name inside ``xl_suite/``
(as a library module would make it), and must fail that test; the same change made by a third-party file must not.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest


TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

INNER = textwrap.dedent(
    """
    import signal

    import process_guard

    # The planted SIGINT cases need a runner in which Ctrl-C works (this run may have been started in the background
    # by a non-interactive shell, which ignores SIGINT); set before any test, so no guard snapshot sees the change.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})

    process_guard.CHECK_PROGRESS_BARS = True  # planted below: checked whatever the owners' flags say today
    process_guard.CHECK_SWITCH_INTERVAL = True
    LIBRARY = {library!r}
    COMMAND = {command!r}
    THIRD_PARTY = "/opt/some-site-packages/other_library/module.py"


    def run_as(path, source):
        exec(compile(source, path, "exec"), {{}})


    def test_planted_environment_variable():
        run_as(LIBRARY, "import os; os.environ['XL_SUITE_PLANTED'] = '1'")


    def test_planted_warning_filter():
        run_as(LIBRARY, "import warnings; warnings.simplefilter('ignore', UserWarning)")


    def test_planted_root_logger_level():
        run_as(LIBRARY, "import logging; logging.getLogger().setLevel(logging.DEBUG)")


    def test_planted_root_logger_handler():
        run_as(LIBRARY, "import logging; logging.getLogger().addHandler(logging.StreamHandler())")


    def test_planted_progress_bars():
        run_as(LIBRARY, "import datasets; datasets.enable_progress_bars()")


    def test_planted_progress_bar_toggle():  # off and on again: the state ends as it was, the calls are the fault
        run_as(LIBRARY, "import datasets; datasets.disable_progress_bars(); datasets.utils.enable_progress_bars(); datasets.disable_progress_bars()")


    def test_a_command_may_toggle_the_bars_if_it_puts_them_back():
        run_as(COMMAND, "import datasets; datasets.enable_progress_bars(); datasets.disable_progress_bars()")


    def test_planted_switch_interval():
        run_as(LIBRARY, "import sys; sys.setswitchinterval(0.0005)")


    def test_planted_sigint_ignored():
        run_as(LIBRARY, "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)")


    def test_planted_sigint_blocked():
        run_as(LIBRARY, "import signal; signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGINT}})")


    def test_third_party_import_time_changes_are_not_ours():
        run_as(THIRD_PARTY, "import os, warnings; os.environ['OTHER_LIB_FLAG'] = '1'; warnings.simplefilter('ignore', FutureWarning)")


    def test_monkeypatch_is_undone_before_the_comparison(monkeypatch):
        monkeypatch.setenv("XL_SUITE_TEST_VALUE", "1")
        monkeypatch.delenv("HOME")


    def test_a_clean_test_passes():
        run_as(LIBRARY, "import os; os.environ.get('HOME')")
    """
)


@pytest.mark.slow
def test_the_guard_fails_each_planted_change(pytester, monkeypatch):
    pytester.makeconftest((TESTS / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(
        test_planted=INNER.format(
            library=str(REPO / "xl_suite" / "planted_module.py"),
            command=str(REPO / "xl_suite" / "commands" / "planted_command.py"),
        )
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=300)
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    # every test body passes; the guard adds a teardown error to the 9 planted ones and to no other
    assert outcomes.get("passed") == 13 and outcomes.get("errors") == 9, out
    planted = {
        "test_planted_environment_variable": "os.environ['XL_SUITE_PLANTED']: None -> '1' (by ",
        "test_planted_warning_filter": "warnings filter added: ('ignore', None, <class 'UserWarning'>",
        "test_planted_root_logger_level": "root logger (level, handlers): ('WARNING', []) -> ('DEBUG', [])",
        "test_planted_root_logger_handler": "', []) -> ('DEBUG', [<StreamHandler",  # the level planted by the test before
        "test_planted_progress_bars": "datasets' progress bars were turned on during this test",
        "test_planted_switch_interval": "sys.getswitchinterval(): 0.005 -> 0.0005",
        "test_planted_progress_bar_toggle": "datasets.enable_progress_bars() called by ",
        "test_planted_sigint_ignored": "SIGINT ignored: False -> True",
        "test_planted_sigint_blocked": "signals blocked in the main thread: [] -> [<Signals.SIGINT: 2>]",
    }
    for test, message in planted.items():
        assert f"ERROR at teardown of {test}" in out, out
        assert message in out, (message, out)
    assert "planted_module.py" in out  # the message names the code that made the change
    for test in ("third_party_import_time", "monkeypatch_is_undone", "a_clean_test_passes", "a_command_may_toggle"):
        assert f"teardown of test_{test}" not in out, out
    assert "OTHER_LIB_FLAG" not in out and "XL_SUITE_TEST_VALUE" not in out


def test_state_changes_names_only_what_changed():
    from process_guard import process_state, state_changes

    before = process_state()
    assert state_changes(before, process_state()) == []
    os.environ["XL_SUITE_GUARD_SELFTEST"] = "1"  # written from this file: the repository's code
    try:
        changes = state_changes(before, process_state())
    finally:
        del os.environ["XL_SUITE_GUARD_SELFTEST"]
    assert len(changes) == 1 and changes[0].startswith("os.environ['XL_SUITE_GUARD_SELFTEST']: None -> '1' (by ")
    assert changes[0].endswith(f"{Path(__file__).resolve()})")
    assert state_changes(before, process_state()) == []


def test_sigint_counts_only_when_left_ignored_or_blocked():
    """A child inherits an ignored or blocked SIGINT; a handler installed where it was ignored harms nobody."""
    from process_guard import state_changes

    ignored, blocked = "SIGINT ignored", "signals blocked in the main thread"
    clean = {ignored: False, blocked: []}
    assert state_changes(clean, {**clean, ignored: True}) == ["SIGINT ignored: False -> True"]
    assert state_changes({**clean, ignored: True}, clean) == []
    assert state_changes(clean, {**clean, blocked: [2]}) == ["signals blocked in the main thread: [] -> [2]"]
    assert state_changes({**clean, blocked: [2]}, clean) == []
