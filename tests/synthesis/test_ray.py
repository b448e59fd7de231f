"""The synthesis stages on Ray Data: a local Ray started by this module, the fake engine and the tiny vLLM model.

Run under ``flock /tmp/vllm.lock`` on shared small machines: Ray and the engine each want the CPUs. In ``make test``
the tests of this module's local Ray share one xdist worker (``tests/xdist_groups.py``), while the other worker runs
the rest.
"""

from __future__ import annotations

import functools
import json

import pyarrow.parquet as pq
import pytest
from engine_fixtures import RAY_START_TIMED_OUT

from xl_suite.engines.fake import FakeGenerator, FaultInjectingResponder
from xl_suite.synthesis import SynthesisConfig, synthesize
from xl_suite.synthesis.seeds import builtin_seeds


ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def local_ray():
    from xl_suite.synthesis.ray import ray_init_kwargs

    if ray.is_initialized():
        pytest.fail("Ray is already initialized in this process; this module starts its own local Ray.")
    try:
        ray.init(**ray_init_kwargs(num_cpus=8))
    except Exception as e:
        if RAY_START_TIMED_OUT not in str(e):  # see engine_fixtures: once more, after the other worker's burst
            raise
        ray.shutdown()
        ray.init(**ray_init_kwargs(num_cpus=8))
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _rows(table) -> str:
    return json.dumps(table.to_pylist(), sort_keys=True, default=str)  # NaN scores compare equal as "NaN"


_FILES = ("en_scored.parquet", "mt_bestof3.parquet", "de_bestof3.parquet", "mt.parquet", "de.parquet")


def _same_files(a, b) -> None:
    for name in _FILES:
        ours, theirs = pq.read_table(a / name), pq.read_table(b / name)
        assert ours.num_rows == theirs.num_rows > 0 and _rows(ours) == _rows(theirs), name


def _stages(summary) -> list:
    return [{k: v for k, v in s.items() if "seconds" not in k} for s in summary["stages"]]


def _without_seconds(value):
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_without_seconds(v) for v in value]
    return value


def _factory(**kwargs):
    """A picklable engine factory; ``delay``/``kill_on``/``marker`` as in :class:`FaultInjectingResponder`."""
    return functools.partial(FakeGenerator, FaultInjectingResponder(**kwargs))


def test_ray_runs_the_same_orchestration_as_the_local_pipeline(local_ray, tmp_path):
    from xl_suite.synthesis.ray import synthesize_ray

    config = SynthesisConfig(languages=("mt", "de"), max_seeds=12, batch_size=4, chunk_size=4)
    remote = synthesize_ray(builtin_seeds(), _factory(), config, num_actors=2, output=str(tmp_path / "ray"))
    local = synthesize(builtin_seeds(), _factory()(), config, output=str(tmp_path / "local"))
    _same_files(tmp_path / "ray", tmp_path / "local")
    assert remote.summary["languages"] == local.summary["languages"]
    assert _without_seconds(_stages(remote.summary)) == _without_seconds(_stages(local.summary)), "same stage table"
    assert json.loads((tmp_path / "ray" / "summary.json").read_text())["executor"]["chunks"] == 3
    assert remote.summary["executor"]["generated"]["prompts"] == local.summary["generated"]["prompts"]
    # The chunk cache is the local pipeline's: a local rerun over the Ray run's folder generates nothing.
    again = FakeGenerator(FaultInjectingResponder())
    synthesize(builtin_seeds(), again, config, output=str(tmp_path / "ray"))
    assert again.calls == 0


def test_ray_spreads_chunks_evenly_and_a_killed_worker_costs_at_most_its_chunk(local_ray, tmp_path):
    """>= 8 chunks on 2 actors: neither gets more than 1.25x an even share (engines stamp their process id); a
    worker SIGKILLed mid-run loses at most the chunk it was on, and the result equals an undisturbed run."""
    from xl_suite.synthesis.ray import synthesize_ray

    config = SynthesisConfig(languages=("mt",), max_seeds=20, batch_size=2, chunk_size=2)
    result = synthesize_ray(
        builtin_seeds(), _factory(delay=0.02), config, num_actors=2, output=str(tmp_path / "spread")
    )
    per_process = result.summary["executor"]["chunks_per_process"]
    assert sum(per_process.values()) == 10 and len(per_process) == 2
    assert max(per_process.values()) <= 1.25 * 10 / 2, per_process

    victim = builtin_seeds()[9]["text"][:40]  # a seed of chunk 5
    marker = tmp_path / "killed"
    killer = _factory(kill_on=victim, marker=str(marker))
    out = tmp_path / "killed-run"
    try:
        first = synthesize_ray(builtin_seeds(), killer, config, num_actors=2, output=str(out))
        prompts = first.summary["executor"]["generated"]["prompts"]  # Ray restarted the actor and retried
    except Exception:  # the run failed with the worker: rerun, as a user would
        prompts = 0
        first = None
    assert marker.exists(), "a worker was killed"
    if first is None or not (out / "mt.parquet").exists():
        rerun = synthesize_ray(builtin_seeds(), killer, config, num_actors=2, output=str(out))
        prompts += rerun.summary["executor"]["generated"]["prompts"]
    _same_files_one = [pq.read_table(out / "mt.parquet"), pq.read_table(tmp_path / "spread" / "mt.parquet")]
    assert _rows(_same_files_one[0]) == _rows(_same_files_one[1])
    full = result.summary["executor"]["generated"]["prompts"]
    per_chunk = full / 10
    assert prompts <= full + 2 * per_chunk, "the rerun computed only what the killed worker had not stored"


def test_ray_stops_at_the_quota_and_checks_the_failure_threshold(local_ray, tmp_path):
    """A quota reached in the first chunks: the actors stop soon after (not all 10 chunks), the output is the local
    run's. Then a fake engine whose scores fail: FailureRateError after everything is written, as locally."""
    from xl_suite.engines.fake import FakeSynthesisResponder
    from xl_suite.errors import FailureRateError
    from xl_suite.synthesis.ray import synthesize_ray

    config = SynthesisConfig(languages=("mt",), num_examples=3, max_seeds=20, batch_size=2, chunk_size=2)
    out = tmp_path / "quota"
    remote = synthesize_ray(builtin_seeds(), _factory(delay=0.05), config, num_actors=2, output=str(out))
    local = synthesize(builtin_seeds(), _factory()(), config, output=str(tmp_path / "local"))
    assert local.summary["final"]["stopped_early"] and remote.summary["languages"] == local.summary["languages"]
    for name in ("en_scored.parquet", "mt_bestof3.parquet", "mt.parquet"):
        assert _rows(pq.read_table(out / name)) == _rows(pq.read_table(tmp_path / "local" / name)), name
    stop = remote.summary["executor"]["quota_reached_at_chunk"]
    started = len(list((out / ".xl_suite_work" / "backtranslate").glob("chunk-*.parquet")))
    assert stop is not None and stop <= 2 and started <= stop + 1 + 4 < 10, (stop, started)

    flaky = functools.partial(FakeGenerator, FaultInjectingResponder(FakeSynthesisResponder(unparseable_every=2)))
    config = SynthesisConfig(languages=("mt",), max_seeds=8, batch_size=2, chunk_size=2)
    with pytest.raises(FailureRateError, match="above --max-error-rate 0.05") as remote:
        synthesize_ray(builtin_seeds(), flaky, config, num_actors=2, output=str(tmp_path / "f"), max_error_rate=0.05)
    with pytest.raises(FailureRateError) as local:
        synthesize(builtin_seeds(), flaky(), config, output=str(tmp_path / "f-local"), max_error_rate=0.05)
    assert str(remote.value) == str(local.value)
    assert json.loads((tmp_path / "f" / "summary.json").read_text())["executor"]["chunks"] == 4
    assert _rows(pq.read_table(tmp_path / "f" / "mt.parquet")) == _rows(
        pq.read_table(tmp_path / "f-local" / "mt.parquet")
    )


@pytest.mark.vllm
def test_ray_actor_pool_with_the_tiny_vllm_model(local_ray, tiny_model_dir, tmp_path):
    pytest.importorskip("vllm")
    import xl_suite
    from xl_suite.engines.spec import EngineSpec
    from xl_suite.synthesis.ray import synthesize_ray

    config = SynthesisConfig(
        languages=("mt",),
        max_seeds=4,
        threshold=1.0,
        language_filter=False,
        max_tokens=96,
        batch_size=64,
        chunk_size=64,
    )
    spec = EngineSpec(model=str(tiny_model_dir), backend="vllm", engine_kwargs={"max_model_len": 2048, "seed": 0})
    out = tmp_path / "out"
    result = synthesize_ray(builtin_seeds(), spec, config, output=str(out))
    scored = result.dataset("en", "scored")
    assert scored.num_rows == 4
    assert set(scored["score_status"]) == {"ok"}  # constrained JSON through the engine inside the actor
    assert set(scored["score_model"]) == {str(tiny_model_dir)}
    final = xl_suite.load_xl_suite("xl-instruct-mt", source=str(out), split="train")
    assert final.num_rows == result.summary["languages"]["mt"]["produced"]
    again = synthesize_ray(builtin_seeds(), spec, config, output=str(out))
    assert again.summary["executor"]["generated"]["prompts"] == 0, "a cached rerun computes nothing"


def test_evaluation_stages_run_on_ray_with_the_same_cache(local_ray, tmp_path):
    """Answers and the pairwise judge through run_stage on a Ray Data actor pool: the same rows and chunk files as
    in one process, spread over the actors, and a local rerun over the Ray run's work dir computes nothing."""
    import datasets

    from xl_suite.engines.spec import EngineSpec
    from xl_suite.evaluation.answers import generate_answers
    from xl_suite.evaluation.judging import JudgeConfig, judge_pairwise
    from xl_suite.executors import RayExecutor

    rows = datasets.Dataset.from_dict(
        {
            "id": [f"q{i}" for i in range(16)],
            "instruction": [f"Question {i}: what is {i} + {i}? Please respond in German." for i in range(16)],
            "language": ["de"] * 16,
        }
    )
    answerer = EngineSpec(model="fake-answers", backend="fake", engine_kwargs={"delay": 0.3})
    verdict = '{"reasoning": "A is better.", "verdict": "A"}'
    judge = EngineSpec(model="fake-judge", backend="fake", engine_kwargs={"reply": verdict})
    config = JudgeConfig(chunk_size=4, batch_size=2, rubric=False)
    with RayExecutor(num_actors=2) as executor:
        remote = generate_answers(rows, answerer.lazy(), work_dir=str(tmp_path / "ray"), chunk_size=2, batch_size=1)
        judged = judge_pairwise(
            remote["instruction"],
            remote["output"],
            ["Referenz"] * 16,
            remote["language"],
            judge=judge.lazy(),
            config=config,
            cache_dir=str(tmp_path / "ray-judge"),
        )
    answers_run = executor.runs[0]
    assert answers_run["chunks"] == answers_run["chunks_computed"] == 8
    assert len(answers_run["chunks_per_process"]) == 2
    assert max(answers_run["chunks_per_process"].values()) <= 1.25 * 8 / 2, answers_run
    assert [r["stage"] for r in executor.runs][1:] and executor.runs[1]["chunks_computed"] > 0

    local = generate_answers(rows, answerer.lazy(), work_dir=str(tmp_path / "local"), chunk_size=2, batch_size=1)
    assert remote["output"] == local["output"] and remote["id"] == rows["id"]
    assert sorted(p.name for p in (tmp_path / "ray").rglob("chunk-*.parquet")) == sorted(
        p.name for p in (tmp_path / "local").rglob("chunk-*.parquet")
    )
    assert len(judged.rows) == 32 and {r["verdict"] for r in judged.rows} == {"A"}

    again = answerer.lazy()
    generate_answers(rows, again, work_dir=str(tmp_path / "ray"), chunk_size=2, batch_size=1)
    assert not again.started, "the Ray run's chunks serve a local rerun: no engine starts"

    with pytest.raises(Exception, match="cannot be sent to Ray workers"), RayExecutor(num_actors=1):
        generate_answers(rows, answerer.build(), work_dir=str(tmp_path / "live"), chunk_size=8, batch_size=8)


def test_the_driver_learns_an_engine_fingerprint_from_a_ray_task_and_starts_no_engine(
    local_ray, tmp_path, monkeypatch
):
    """On a cluster the driver may have no GPU: with nothing remembered for the spec, its fingerprint (needed for the
    cache keys) comes from a Ray task, is remembered on the driver, and equals the engine's own."""
    import datasets

    from xl_suite.engines.spec import EngineSpec
    from xl_suite.evaluation.answers import generate_answers
    from xl_suite.executors import RayExecutor

    monkeypatch.setenv("XL_SUITE_CACHE", str(tmp_path / "driver-cache"))  # nothing remembered on the driver
    rows = datasets.Dataset.from_dict(
        {"id": ["a", "b", "c", "d"], "instruction": [f"Question {i}?" for i in range(4)], "language": ["de"] * 4}
    )
    spec = EngineSpec(model=f"fake-{tmp_path.name}", backend="fake", engine_kwargs={"reply": "Antwort"})
    driver = spec.lazy()
    with RayExecutor(num_actors=1):
        out = generate_answers(rows, driver, work_dir=str(tmp_path / "ray"), chunk_size=2, batch_size=2)
    assert out["output"] == ["Antwort"] * 4
    assert not driver.started, "the driver started the engine to learn its fingerprint"
    assert (tmp_path / "driver-cache" / "engine_fingerprints.json").is_file()
    assert spec.lazy().fingerprint() == spec.build().fingerprint()  # remembered, and the engine's own
    local = spec.lazy()
    generate_answers(rows, local, work_dir=str(tmp_path / "ray"), chunk_size=2, batch_size=2)
    assert not local.started, "the same cache keys: a local rerun finds every chunk"


_DRIVER = r"""
import json, time, psutil, ray
from xl_suite.reaper import descendants, watch_started
from xl_suite.synthesis.ray import ray_init_kwargs
before = descendants()
ray.init(**ray_init_kwargs(num_cpus=2))
started = sorted(descendants() - before)
if REAP:
    reaper = watch_started(before)
print(json.dumps([[p, " ".join(psutil.Process(p).cmdline())[:60]] for p in started]), flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("reap", [True, False])
def test_no_ray_process_outlives_a_killed_driver_that_started_the_runtime(reap, tmp_path):
    """A driver that started a local Ray runtime is killed with SIGKILL: Ray's dashboard and runtime-env agents used to
    live on (the rest of the node shares the driver's fate); the reaper stops every process the runtime started."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    code = f"REAP = {reap}\n" + _DRIVER
    driver = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        started = json.loads(driver.stdout.readline())
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    assert any("DashboardAgent" in cmd for _, cmd in started), started

    def alive():
        out = []
        for pid, cmd in started:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    out.append((pid, cmd))
            except psutil.NoSuchProcess:
                pass
        return out

    deadline = time.monotonic() + 20
    while alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = alive()
    for pid, _ in left:  # this test's own leftovers
        os.kill(pid, signal.SIGKILL)
    if reap:
        assert not left, left
    else:  # what happened without the reaper (shows the test can fail): the agents outlived the driver
        assert {cmd.split()[0] for _, cmd in left} >= {"ray::DashboardAgent"}, left
