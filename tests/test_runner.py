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
