"""How ``make test`` spreads one pytest run over pytest-xdist workers (``-n 2 --dist loadgroup``).

* Tests that use a process-wide engine run in one worker, so that a run starts ONE in-process vLLM engine and ONE
  ``vllm serve`` (the ``vllm_generator`` and ``vllm_server`` fixtures: group ``vllm-engine``); the tests of the
  in-process local Ray runtime run in one worker (one runtime per process: the ``local_ray`` fixture, group ``ray``).
  Every other test goes to whichever worker is free, the Ray tests whose commands start a runtime of their own
  (``--ray-address local`` does not join another one) included.
* The longest tests are handed out first (engine tests, then the ``slow`` tier, then the rest), so that the workers
  finish together instead of one waiting on a long test picked up last.

xdist's own ``loadgroup`` learns a test's group from a suffix it appends to the test's node id; pytest 9.2's structured
node ids ignore that (pytest-dev/pytest-xdist#1386), so the groups were silently dropped. Here each worker writes the
groups it collected to a folder the controller named (``pytest_configure_node``), and the controller's scheduler, a
``LoadScopeScheduling`` whose scope is the group, reads them once every worker has collected. The engine fixtures
also fail a run that starts a second shared engine (``engine_fixtures.once_per_run``), so a lost group is a failure,
not a slower run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest


SHARED_ENGINE_FIXTURES = frozenset({"vllm_generator", "vllm_server"})
IN_PROCESS_RAY_FIXTURES = frozenset({"local_ray"})
_WORKERINPUT_KEY = "xl_suite_groups_dir"
_DIR_KEY = pytest.StashKey[Path]()


def group_of(item: pytest.Item) -> str | None:
    """The worker group of a test: ``vllm-engine``, ``ray`` or None (any worker)."""
    names = set(getattr(item, "fixturenames", ()))
    if SHARED_ENGINE_FIXTURES & names:
        return "vllm-engine"
    if IN_PROCESS_RAY_FIXTURES & names:
        return "ray"
    return None


def _rank(item: pytest.Item) -> int:
    if item.get_closest_marker("vllm") or item.get_closest_marker("ray"):
        return 0
    return 1 if item.get_closest_marker("slow") else 2


def pytest_collection_modifyitems(config, items):
    items.sort(key=_rank)  # stable: within a rank, the collection order


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook sends the collection to the controller
def pytest_collection_finish(session):
    workerinput = getattr(session.config, "workerinput", None)
    if not workerinput or _WORKERINPUT_KEY not in workerinput:
        return
    groups = {item.nodeid: group for item in session.items if (group := group_of(item))}
    target = Path(workerinput[_WORKERINPUT_KEY]) / f"{workerinput['workerid']}.json"
    target.write_text(json.dumps(groups), encoding="utf-8")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    config = node.config
    if _DIR_KEY not in config.stash:
        config.stash[_DIR_KEY] = Path(tempfile.mkdtemp(prefix="xl-suite-xdist-groups-"))
    node.workerinput[_WORKERINPUT_KEY] = str(config.stash[_DIR_KEY])


def pytest_unconfigure(config):
    if _DIR_KEY in config.stash:
        shutil.rmtree(config.stash[_DIR_KEY], ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        """``loadgroup`` with the groups read from the workers' files instead of node id suffixes."""

        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:  # first called once every worker has collected (and written its file)
                self._groups = {}
                for path in sorted(config.stash[_DIR_KEY].glob("*.json")):
                    self._groups.update(json.loads(path.read_text(encoding="utf-8")))
            return self._groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)
