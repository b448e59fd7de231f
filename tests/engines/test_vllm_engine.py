"""Engine processes and signals: Ctrl-C in a terminal during a vLLM generate ends it cleanly, and no engine process is
left. (SIGKILL of the process that built an engine, whose engine processes must go too, is checked by
``tests/synthesis/test_synthesis_engine.py::test_sigkill_mid_run_with_vllm_then_resume``, which also resumes the run.)"""

import json
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from engine_fixtures import ENGINE_ENV_DEFAULTS, require_vllm
from terminal import start_interruptible


def _read_lines(stream, lines: list) -> None:
    """(arrival time, what stays on a terminal) per line: the text after the line's last carriage return, so a
    progress bar that redraws itself and is cleared leaves nothing."""
    for raw in stream:
        lines.append((time.monotonic(), raw.decode("utf-8", "replace").rstrip("\n").split("\r")[-1]))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@require_vllm
@pytest.mark.vllm
@pytest.mark.slow
def test_ctrl_c_during_a_vllm_generate_ends_with_exit_130_one_line_and_no_engine_left(tiny_model_dir, tmp_path):
    """Ctrl-C in a terminal: SIGINT to the whole process group (the CLI and the engine's processes) at a seeded
    moment while the engine answers. The CLI's "interrupted" line is the only thing printed after it, exit 130, no
    traceback from vLLM or its EngineCore, and no engine process outlives the CLI. One trial (each starts an engine,
    about a minute here); Ctrl-C at many moments of every command is ``tests/commands/test_interrupts.py``."""
    rng = random.Random(0)
    source = tmp_path / "alpaca_eval.json"
    rows = [
        {"instruction": f"Explain topic number {k} in detail.", "output": "-", "generator": "g"} for k in range(192)
    ]
    source.write_text(json.dumps(rows), encoding="utf-8")
    out = tmp_path / "answers"
    argv = [sys.executable, "-m", "xl_suite.cli", "generate", "--backend", "vllm", "--model", str(tiny_model_dir),
            "--config", "xl-alpacaeval-de", "--source", str(source), "--output", str(out), "--chunk-size", "32",
            "--batch-size", "8", "--max-tokens", "512", "--temperature", "1.0",
            "--engine-kwargs", json.dumps({"max_model_len": 1024})]  # fmt: skip
    env = {**ENGINE_ENV_DEFAULTS, **os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "HF_HUB_OFFLINE": "1"}
    # start_new_session: its own process group, as a terminal's foreground job; bytes, which _read_lines decodes
    proc = start_interruptible(argv, env=env, cwd=tmp_path, start_new_session=True, text=False)
    stdout, stderr = [], []
    readers = [threading.Thread(target=_read_lines, args=(s, lines), daemon=True)
               for s, lines in ((proc.stdout, stdout), (proc.stderr, stderr))]  # fmt: skip
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 300
        while not any((out / ".work").rglob("chunk-*.p*")):  # a first call answered: the engine is generating
            assert proc.poll() is None, f"generate ended before the interrupt: {[line for _, line in stderr]}"
            assert time.monotonic() < deadline, "the engine did not answer within 300 s"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        assert proc.poll() is None, "generate finished before the interrupt: give it more work"
        signalled = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
        for reader in readers:
            reader.join(10)
        deadline = time.monotonic() + 20
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(proc.pid), "an engine process outlived the interrupted CLI"
    finally:
        if _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    everything = "\n".join(line for _, line in stdout + stderr)
    assert proc.returncode == 130, everything
    assert "Traceback" not in everything and "KeyboardInterrupt" not in everything, everything
    after = [line for t, line in stdout + stderr if t >= signalled and line.strip()]
    assert len(after) == 1 and after[0].startswith("xl-suite generate: interrupted."), everything
