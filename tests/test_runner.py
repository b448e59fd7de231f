"""run_stage and content_hash: resumable chunks, and hashes that do not depend on storage details."""

import datasets
import pyarrow.parquet as pq

from xl_suite.runner import StageStats, content_hash, run_stage


def test_content_hash_ignores_chunking_and_parquet_round_trip(tmp_path):
    ds = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "scores": [[1, 2], [3], []]})
    chunked = datasets.concatenate_datasets([ds.select([0]), ds.select([1, 2])])
    path = tmp_path / "x.parquet"
    pq.write_table(ds.data.table, path)
    reread = datasets.Dataset(pq.read_table(path))
    assert content_hash(ds) == content_hash(chunked) == content_hash(reread)
    assert content_hash(ds) != content_hash(ds.select([0, 1]))


def test_run_stage_reuses_chunks_and_recomputes_on_change(tmp_path):
    calls = []

    def double(batch, factor):
        calls.append(len(batch["x"]))
        return {"y": [x * factor for x in batch["x"]]}

    ds = datasets.Dataset.from_dict({"x": list(range(10))})
    stats = StageStats("double")
    out = run_stage(
        ds,
        double,
        stage="double",
        fingerprint="f1",
        work_dir=str(tmp_path),
        fn_kwargs={"factor": 2},
        chunk_size=4,
        batch_size=2,
        stats=stats,
    )
    assert out["y"] == [x * 2 for x in range(10)]
    assert (stats.chunks_computed, stats.chunks_reused) == (3, 0) and sum(calls) == 10
    calls.clear()
    stats = StageStats("double")
    again = run_stage(
        ds,
        double,
        stage="double",
        fingerprint="f1",
        work_dir=str(tmp_path),
        fn_kwargs={"factor": 2},
        chunk_size=4,
        batch_size=2,
        stats=stats,
    )
    assert again["y"] == out["y"] and calls == [] and stats.chunks_reused == 3
    changed = run_stage(
        ds,
        double,
        stage="double",
        fingerprint="f2",
        work_dir=str(tmp_path),
        fn_kwargs={"factor": 3},
        chunk_size=4,
        batch_size=2,
    )
    assert changed["y"] == [x * 3 for x in range(10)] and sum(calls) == 10


def test_run_stage_on_memory_filesystem():
    ds = datasets.Dataset.from_dict({"x": [1, 2, 3]})
    out = run_stage(
        ds,
        lambda b: {"y": [v + 1 for v in b["x"]]},
        stage="inc",
        fingerprint="f",
        work_dir="memory://xl-runner-test",
        chunk_size=2,
    )
    assert out["y"] == [2, 3, 4]


class _OverlapEngine:
    """Takes concurrent calls (as vLLM's request stream does); records how many were in flight at once and which
    chunk files existed when each call started. Row ``x`` takes ``x % 5`` ms: a long tail inside every batch."""

    concurrent_calls = True

    def __init__(self, folder=None, fail_on=None):
        import threading

        self.lock = threading.Lock()
        self.running = self.max_running = self.calls = 0
        self.folder, self.fail_on = folder, fail_on
        self.files_seen: list[int] = []

    def __call__(self, batch, engine):
        import time

        with engine.lock:
            engine.calls += 1
            engine.running += 1
            engine.max_running = max(engine.max_running, engine.running)
            if engine.folder is not None:
                engine.files_seen.append(len(list(engine.folder.glob("stage/chunk-*.parquet"))))
        try:
            if engine.fail_on is not None and engine.fail_on in batch["x"]:
                raise RuntimeError(f"engine died on row {engine.fail_on}")
            time.sleep(max(batch["x"]) % 5 / 1000)
            return {"y": [x * 3 for x in batch["x"]], "y_status": ["ok"] * len(batch["x"])}
        finally:
            with engine.lock:
                engine.running -= 1


def _window_run(ds, tmp_path, engine, **kwargs):
    return run_stage(
        ds,
        engine,
        stage="stage",
        fingerprint="f",
        work_dir=str(tmp_path),
        fn_kwargs={"engine": engine},
        chunk_size=8,
        batch_size=2,
        **kwargs,
    )


def test_engine_calls_overlap_across_batch_and_chunk_boundaries(tmp_path):
    """No barriers: with an engine that takes concurrent calls, the next chunk's batches start before the current
    chunk is written; outputs, chunk files and a rerun's zero calls are as with one call at a time."""
    from xl_suite.runner import in_flight_batches

    ds = datasets.Dataset.from_dict({"id": [f"r{i}" for i in range(40)], "x": list(range(40))})
    engine = _OverlapEngine(tmp_path)
    assert in_flight_batches({"engine": engine}, 8, 2, None) == 4
    stats = StageStats("stage")
    out = _window_run(ds, tmp_path, engine, stats=stats)
    assert out["y"] == [x * 3 for x in range(40)] and out["id"] == ds["id"]
    assert engine.max_running > 1, "calls overlapped"
    assert stats.chunks_computed == 5 and len(list(tmp_path.glob("stage/chunk-*.parquet"))) == 5
    first_of_chunk_2 = engine.files_seen[4]  # calls start in order; call 4 opens chunk 2 (4 calls per chunk)
    assert first_of_chunk_2 == 0, "chunk 2 started before chunk 1 was written: the chunk is not a barrier"

    sequential = tmp_path / "seq"
    one_at_a_time = _OverlapEngine()
    ref = _window_run(ds, sequential, one_at_a_time, concurrency=1)
    assert one_at_a_time.max_running == 1 and ref["y"] == out["y"]
    assert sorted(p.name for p in (sequential / "stage").glob("*.parquet")) == sorted(
        p.name for p in (tmp_path / "stage").glob("*.parquet")
    ), "same chunk keys, so either way's cache serves the other"

    again = _OverlapEngine()
    assert _window_run(ds, tmp_path, again)["y"] == out["y"] and again.calls == 0


def test_a_failing_call_keeps_every_finished_chunk_and_the_rerun_resumes(tmp_path):
    ds = datasets.Dataset.from_dict({"id": [f"r{i}" for i in range(40)], "x": list(range(40))})
    broken = _OverlapEngine(fail_on=33)
    try:
        _window_run(ds, tmp_path, broken)
    except RuntimeError as e:
        assert "row 33" in str(e)
    else:  # pragma: no cover
        raise AssertionError("the engine failure must reach the caller")
    kept = len(list(tmp_path.glob("stage/chunk-*.parquet")))
    assert 1 <= kept <= 4, "chunks finished before the failure are stored"
    healthy = _OverlapEngine()
    stats = StageStats("stage")
    out = _window_run(ds, tmp_path, healthy, stats=stats)
    assert out["y"] == [x * 3 for x in range(40)]
    assert stats.chunks_reused == kept and healthy.calls == 4 * (5 - kept), "only missing chunks are computed"
