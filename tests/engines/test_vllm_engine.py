"""Engine processes die with their parent: SIGKILL the process that built a vLLM engine, its children must go."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from engine_fixtures import ENGINE_ENV_DEFAULTS, require_vllm


_CHILD = textwrap.dedent("""
    import sys, time
    from xl_suite.engines.vllm_engine import VLLMGenerator
    if __name__ == "__main__":
        g = VLLMGenerator(sys.argv[1])
        print("PIDS", *sorted(g.engine_pids), flush=True)
        time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False


@require_vllm
@pytest.mark.vllm
@pytest.mark.slow
def test_engine_processes_die_when_the_parent_is_sigkilled(tiny_model_dir, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD, encoding="utf-8")
    env = {**ENGINE_ENV_DEFAULTS, **os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tiny_model_dir)], stdout=subprocess.PIPE, text=True, env=env
    )
    pids = []
    try:
        line = proc.stdout.readline()
        assert line.startswith("PIDS"), f"engine did not start: {line!r}"
        pids = [int(p) for p in line.split()[1:]]
        assert pids and all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20  # SIGTERM, then SIGKILL after 5 s; measured: gone within 3-6 s
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        assert not [p for p in pids if _alive(p)], "engine processes outlived their parent"
    finally:
        proc.kill()
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
