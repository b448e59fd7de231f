"""The paper-scale path from the shell: ``synthesize``/``evaluate --executor ray --num-actors N`` (issue 20).

Real processes on a local Ray runtime (``--ray-address local``: a cluster someone else runs on a shared machine is
not joined), the fake engine. Checks: the same stage table, files and summary as a local run, the same
--max-error-rate default (exit 3), and no Ray INFO log or traceback on the terminal."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from engine_fixtures import RAY_START_TIMED_OUT
from terminal import start_interruptible


pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
ALPACA = [{"instruction": f"Explain topic number {k} briefly.", "output": f"Topic {k}."} for k in range(6)]


def _run(argv, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "xl_suite.cli", *map(str, argv)]
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and RAY_START_TIMED_OUT in done.stderr:  # once more; it resumes: nothing was computed
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return done


def _quiet(stderr: str) -> list[str]:
    """Lines on stderr that are not datasets' progress bars."""
    return [x for x in stderr.splitlines() if x.strip() and "examples/s" not in x and "it/s]" not in x]


def _synth(out, *extra):
    argv = ["synthesize", "--backend", "fake", "--model", "f", "--languages", "mt", "--max-seeds", "8"]
    return [*argv, "--chunk-size", "4", "--no-progress", "--output", out, *extra]


def test_synthesize_on_ray_prints_the_local_table_and_writes_the_local_files(tmp_path):
    ray = ["--executor", "ray", "--num-actors", "2", "--ray-address", "local"]
    local = _run(_synth(tmp_path / "local"), tmp_path)
    assert local.returncode == 0, local.stderr
    on_ray = _run(_synth(tmp_path / "ray", *ray), tmp_path)
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    out = on_ray.stdout
    assert "executor: Ray, 2 actor(s) on a local Ray runtime" in out
    assert "stage                 rows_in" in out and "language  requested  produced" in out  # the local table
    assert "SynthesisResult(" not in out
    for name in ("mt.parquet", "mt_bestof3.parquet", "en_scored.parquet"):
        a, b = pq.read_table(tmp_path / "local" / name), pq.read_table(tmp_path / "ray" / name)
        assert a.column("instruction").to_pylist() == b.column("instruction").to_pylist(), name
    noise = [x for x in _quiet(on_ray.stderr) if "INFO" in x or "Traceback" in x or "KeyError" in x]
    assert not noise, noise
    # the same default threshold as a local run: failed scores above 0.05 exit 3 (old code: returned normally)
    flaky = ["--engine-kwargs", json.dumps({"unparseable_every": 2})]
    failed = _run(_synth(tmp_path / "ray-flaky", *ray, *flaky), tmp_path)
    assert failed.returncode == 3, failed.stderr[-3000:]
    assert "above --max-error-rate 0.05" in failed.stderr and "stage                 rows_in" in failed.stdout


def test_evaluate_on_ray(tmp_path):
    src = tmp_path / "alpaca_eval.json"
    src.write_text(json.dumps(ALPACA))
    for kind, extra in (("ans", []), ("refs", ["--as-reference"])):
        argv = ["generate", "--backend", "fake", "--model", "m", "--config", "xl-alpacaeval-de", "--source", src]
        assert _run([*argv, "--output", tmp_path / kind, *extra], tmp_path).returncode == 0
    argv = ["evaluate", "--model-outputs", tmp_path / "ans", "--references", tmp_path / "refs"]
    argv += ["--judge-backend", "fake", "--judge-model", "j", "--no-rubric", "--n-resamples", "10"]
    argv += ["--judge-engine-kwargs", json.dumps({"reply": json.dumps({"winner": "A"})})]
    argv += ["--output", tmp_path / "report", "--executor", "ray", "--num-actors", "2", "--ray-address", "local"]
    result = _run(argv, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "executor: Ray, 2 actor(s) on a local Ray runtime" in result.stdout
    assert "1 of 1 chunks judged by the Ray actors" in result.stdout, result.stdout
    noise = [x for x in _quiet(result.stderr) if "INFO" in x or "Traceback" in x or "Warning" in x]
    assert not noise, noise
    rerun = _run(argv[: argv.index("--executor")], tmp_path)  # a local rerun of the Ray run judges nothing
    assert rerun.returncode == 0 and "pairwise_judge: 0 judged now, 12 from cache" in rerun.stdout, rerun.stderr


def test_no_ray_process_outlives_a_killed_command(tmp_path):
    """SIGKILL to `synthesize --executor ray` on the local runtime it started: every process that runtime started is
    stopped by the reaper (Ray's dashboard and runtime-env agents used to live on)."""
    import signal
    import time

    import psutil

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    argv = _synth(tmp_path / "killed", "--executor", "ray", "--num-actors", "1", "--ray-address", "local")
    argv += ["--engine-kwargs", json.dumps({"delay": 1.0})]  # a slow engine: the run is still going when killed
    driver = subprocess.Popen(
        [sys.executable, "-m", "xl_suite.cli", *map(str, argv)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        seen = []
        for line in driver.stdout:
            seen.append(line)
            if line.startswith("executor: Ray"):
                break
        started = []
        for proc in psutil.Process(driver.pid).children(recursive=True):
            try:
                cmd = " ".join(proc.cmdline())
            except psutil.Error:  # gone, or a zombie, already
                continue
            if "reaper" not in cmd:  # the watcher itself ends once it has done its work
                started.append((proc, cmd))
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    assert any("DashboardAgent" in cmd for _, cmd in started), (seen, [cmd for _, cmd in started])

    def alive():
        out = []
        for p, cmd in started:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append((p, cmd))
            except psutil.NoSuchProcess:
                pass
        return out

    deadline = time.monotonic() + 20
    while alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = alive()
    for p, _ in left:  # this test's own leftovers
        p.kill()
    assert not left, [cmd[:60] for _, cmd in left]


def test_ctrl_c_on_ray_is_one_line_and_the_rerun_resumes(tmp_path):
    import signal
    import time

    out = tmp_path / "ray"
    argv = _synth(out, "--executor", "ray", "--num-actors", "2", "--ray-address", "local", "--max-seeds", "16")
    argv += ["--engine-kwargs", json.dumps({"delay": 0.2})]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "xl_suite.cli", *map(str, argv)]
    proc = start_interruptible(cmd, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 240
        while not list((out / ".xl_suite_work").rglob("chunk-*.parquet")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)  # the actors are mid-run: some chunks stored, others computing
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    lines = _quiet(stderr)
    assert lines[-1].startswith("xl-suite synthesize: interrupted. Finished chunks are saved in"), lines
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    rerun = _run(argv[: argv.index("--executor")] + ["--max-seeds", "16"], tmp_path)  # locally: reuses the chunks
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "the same command ran here before (unfinished)" in rerun.stdout
