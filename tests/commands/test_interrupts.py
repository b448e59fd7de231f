"""Ctrl-C at seeded random moments (start-up, mid-stage, between stages): every time exit 130 (or 0 when the run
had finished) and one line saying what is saved, no traceback; the rerun completes and says what it reused.

Real processes with the fake engine. The moments are relative to this machine's speed, measured in the same test:
each command is first run once to the end (its duration D), and ``xl-suite --help`` once (the interpreter's start-up
S); a trial's moment is drawn from [S, 0.85 D], so a fast machine (CI) is not signalled after its runs have ended and
a slow one not only during start-up. A signal that still lands while the interpreter is starting (runpy importing the
package, before ``xl_suite.cli.main`` runs) reaches no xl-suite code and no program can catch it: those trials are
counted apart (at most a quarter of them)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from terminal import start_interruptible


pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ALPACA = [{"instruction": f"Explain topic number {k} briefly.", "output": f"Topic {k}."} for k in range(8)]
VERDICT = json.dumps({"winner": "A"})


def _commands(tmp: Path) -> dict[str, tuple[list[str], str]]:
    src = tmp / "alpaca_eval.json"
    slow = json.dumps({"delay": 0.05})
    gen = ["generate", "--backend", "fake", "--model", "m", "--source", src, "--chunk-size", "2"]
    return {
        "generate": ([*gen, "--config", "xl-alpacaeval-de,xl-alpacaeval-mt", "--engine-kwargs", slow], "from cache"),
        "translate": (
            ["translate", "--backend", "fake", "--model", "t", "--languages", "de,mt", "--source", src]
            + ["--chunk-size", "2", "--engine-kwargs", slow],
            "translations from cache",
        ),
        "synthesize": (
            ["synthesize", "--backend", "fake", "--model", "f", "--languages", "mt", "--max-seeds", "8"]
            + ["--chunk-size", "4", "--no-progress", "--engine-kwargs", json.dumps({"delay": 0.02})],
            "chunks(new/reused)",
        ),
        "evaluate": (
            ["evaluate", "--model-outputs", tmp / "ans", "--references", tmp / "refs", "--judge-backend", "fake"]
            + ["--judge-model", "j", "--no-rubric", "--n-resamples", "10"]
            + ["--judge-engine-kwargs", json.dumps({"reply": VERDICT, "delay": 0.05})],
            "from cache",
        ),
    }


def _during_interpreter_start(stderr: str) -> bool:
    """A KeyboardInterrupt traceback from the interpreter's own start-up (runpy importing the package), before
    ``xl_suite.cli.main`` runs: on a loaded machine that can last a second or more; no program can catch it."""
    if "Traceback" not in stderr or not stderr.rstrip().endswith("KeyboardInterrupt"):
        return False
    frames = [line for line in stderr.splitlines() if line.lstrip().startswith("File ")]
    return bool(frames) and not any("xl_suite" in f and "__init__" not in f for f in frames)


def _env():
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cli(argv, cwd):
    return [sys.executable, "-m", "xl_suite.cli", *map(str, argv)]


def _timed(cmd, cwd) -> float:
    """Seconds one uninterrupted run of ``cmd`` takes here (it must succeed)."""
    began = time.monotonic()
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{cmd}: exit {done.returncode}: {done.stderr[-1500:]}"
    return time.monotonic() - began


def test_ctrl_c_at_random_moments(tmp_path):
    (tmp_path / "alpaca_eval.json").write_text(json.dumps(ALPACA), encoding="utf-8")
    for kind, extra in (("ans", []), ("refs", ["--as-reference"])):
        argv = ["generate", "--backend", "fake", "--model", "m", "--config", "xl-alpacaeval-de"]
        argv += ["--source", tmp_path / "alpaca_eval.json", "--output", tmp_path / kind, *extra]
        subprocess.run(_cli(argv, tmp_path), cwd=tmp_path, env=_env(), check=True, capture_output=True)
    commands = _commands(tmp_path)
    start_up = _timed(_cli(["--help"], tmp_path), tmp_path)
    durations = {}
    for name, (argv, _) in sorted(commands.items()):
        durations[name] = _timed(_cli([*argv, "--output", tmp_path / f"timing-{name}"], tmp_path), tmp_path)
    windows = {name: (start_up, max(start_up + 0.2, 0.85 * d)) for name, d in durations.items()}
    rng = random.Random(20261207)
    problems, interrupted, booting = [], 0, 0
    deadline = time.monotonic() + 150
    trial = 0
    while trial < 16 and time.monotonic() < deadline:
        name = rng.choice(sorted(commands))
        argv, reused = commands[name]
        out = tmp_path / f"out-{trial}"
        cmd = _cli([*argv, "--output", out], tmp_path)
        proc = start_interruptible(cmd, cwd=tmp_path, env=_env())
        moment = rng.uniform(*windows[name])
        time.sleep(moment)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
        ours = [line for line in stderr.splitlines() if line.startswith("xl-suite")]
        where = f"trial {trial} {name} at {moment:.2f} s (start-up {start_up:.2f} s, full run {durations[name]:.2f} s)"
        if _during_interpreter_start(stderr):
            booting += 1  # the interpreter was still starting (runpy/importlib only): no xl-suite code had run
        elif proc.returncode == 130:
            interrupted += 1
            if len(ours) != 1 or "interrupted." not in ours[0] or "Traceback" in stderr:
                problems.append(f"{where}: {stderr[-1500:]}")
            rerun = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=180)
            if rerun.returncode != 0 or reused not in rerun.stdout:
                problems.append(f"{where}, rerun {rerun.returncode}: {rerun.stdout[-800:]} {rerun.stderr[-800:]}")
        elif proc.returncode != 0 or ours:  # finished before the signal: a normal, quiet exit
            problems.append(f"{where}: exit {proc.returncode}: {stderr[-1500:]}")
        trial += 1
    assert not problems, "\n\n".join(problems)
    timings = f"start-up {start_up:.2f} s, full runs {', '.join(f'{k} {v:.2f} s' for k, v in durations.items())}"
    assert booting <= trial // 4, f"{booting} of {trial} signals came before any xl-suite code ran ({timings})"
    assert interrupted >= trial // 2, f"only {interrupted} of {trial} runs were interrupted ({timings})"
