"""``tests/xdist_groups.py``: under ``-n 2 --dist loadgroup`` the tests of a shared engine run in one worker, longest
first (the order: a direct test); when the group is lost, the engine fixture's ``once_per_run`` fails the run instead of starting a second engine.

An inner suite run by pytester in a subprocess with two xdist workers: a stand-in ``vllm_generator`` fixture (session
scope, no engine) that records its worker, and plain tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


pytestmark = pytest.mark.slow
TESTS_DIR = Path(__file__).resolve().parent

CONFTEST = """
import os
import pytest
from engine_fixtures import once_per_run

pytest_plugins = ["xdist_groups"]

@pytest.fixture(scope="session")
def vllm_generator(request, tmp_path_factory):
    once_per_run(request, tmp_path_factory, "vllm_generator")
    return request.config.workerinput["workerid"]
"""

TESTS = """
import time
import pytest

@pytest.mark.parametrize("k", range(6))
def test_engine(vllm_generator, k):
    time.sleep(0.1)
    with open("engine-workers.txt", "a") as f:
        f.write(vllm_generator + "\\n")

@pytest.mark.parametrize("k", range(6))
def test_plain(k):
    time.sleep(0.1)

@pytest.mark.slow
def test_long():
    time.sleep(0.1)
"""


@pytest.fixture
def inner(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=TESTS)
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n    vllm: vllm\n    ray: ray\n")
    return pytester


def test_a_shared_engine_runs_in_one_worker(inner):
    result = inner.runpytest_subprocess("-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=13)
    assert "scheduling tests via GroupScheduling" in result.stdout.str()
    workers = (inner.path / "engine-workers.txt").read_text().split()
    assert len(workers) == 6 and len(set(workers)) == 1, workers


def test_a_lost_group_fails_instead_of_starting_a_second_engine(inner):
    # --dist load ignores the groups: both workers get engine tests, and the second to start the engine fails
    result = inner.runpytest_subprocess("-n", "2", "--dist", "load", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) + outcomes.get("failed", 0) >= 1, result.stdout.str()
    result.stdout.fnmatch_lines(["*a second shared engine 'vllm_generator' in this run*tests/xdist_groups.py*"])


def test_order_puts_slow_and_engine_tests_first(pytester, monkeypatch):
    import xdist_groups

    pytester.makepyfile(
        test_order="""
import pytest
def test_fast(): pass
@pytest.mark.slow
def test_slow(): pass
@pytest.mark.vllm
def test_engine(): pass
"""
    )
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n    vllm: vllm\n")
    items, _ = pytester.inline_genitems()
    xdist_groups.pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == ["test_engine", "test_slow", "test_fast"]
