"""run_stage and content_hash: resumable chunks, and hashes that do not depend on storage details."""

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xl_suite.errors import InvalidArgumentError, LockError
from xl_suite.runner import StageStats, content_hash, run_stage
from xl_suite.safety import DirLock


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
    """Takes concurrent calls (as vLLM's async engine does); records how many were in flight at once and which
    chunk files existed when each call started. Row ``x`` takes ``x % 5`` ms: a long tail inside every batch.

    ``hold_row``: the call holding that row waits (at most ``HOLD_TIMEOUT`` s) until a call of a later row has
    started, so whether the next chunk starts before this one is written does not depend on thread timing; with a
    barrier between chunks no later call starts, the wait times out and ``held_alone`` says so."""

    HOLD_TIMEOUT = 10.0

    concurrent_calls = True

    def __init__(self, folder=None, fail_on=None, hold_row=None):
        import threading

        self.lock = threading.Lock()
        self.running = self.max_running = self.calls = 0
        self.folder, self.fail_on = folder, fail_on
        self.files_seen: list[int] = []
        self.hold_row, self.later_call_started, self.held_alone = hold_row, threading.Event(), False

    def __call__(self, batch, engine):
        import time

        with engine.lock:
            engine.calls += 1
            engine.running += 1
            engine.max_running = max(engine.max_running, engine.running)
            if engine.folder is not None:
                engine.files_seen.append(len(list(engine.folder.glob("stage/chunk-*.parquet"))))
            if engine.hold_row is not None and min(batch["x"]) > engine.hold_row:
                engine.later_call_started.set()
        try:
            if engine.fail_on is not None and engine.fail_on in batch["x"]:
                raise RuntimeError(f"engine died on row {engine.fail_on}")
            if engine.hold_row in batch["x"] and not engine.later_call_started.wait(engine.HOLD_TIMEOUT):
                engine.held_alone = True
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
    engine = _OverlapEngine(tmp_path, hold_row=7)  # chunk 1's last call waits until a call of chunk 2 has started
    assert in_flight_batches({"engine": engine}, 8, 2, None) == 4
    stats = StageStats("stage")
    out = _window_run(ds, tmp_path, engine, stats=stats)
    assert out["y"] == [x * 3 for x in range(40)] and out["id"] == ds["id"]
    assert engine.max_running > 1, "calls overlapped"
    assert stats.chunks_computed == 5 and len(list(tmp_path.glob("stage/chunk-*.parquet"))) == 5
    assert not engine.held_alone, "no call of chunk 2 started while chunk 1 was unfinished: the chunk is a barrier"
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
    pieces = len(list(tmp_path.glob("stage/chunk-*.piece-*")))  # finished calls of chunks not yet complete
    healthy = _OverlapEngine()
    stats = StageStats("stage")
    out = _window_run(ds, tmp_path, healthy, stats=stats)
    assert out["y"] == [x * 3 for x in range(40)]
    assert stats.chunks_reused == kept and healthy.calls == 4 * (5 - kept) - pieces, "only missing calls are made"
    assert not list(tmp_path.glob("stage/*.piece-*"))


# -- piece files: a kill loses at most the calls in flight, not the chunks they belong to ---------------------------


def _pieces_ds(n=40):
    return datasets.Dataset.from_dict({"id": [f"r{i}" for i in range(n)], "text": [f"question {i}" for i in range(n)]})


def _answer(batch, generator, reshape=False):
    """One engine call per batch; 1:1, or (``reshape``) two rows per input row with only ``id`` kept (n->m)."""
    from xl_suite.engines.base import SamplingConfig

    replies = generator.generate([[{"role": "user", "content": t}] for t in batch["text"]], SamplingConfig())
    texts = [r[0].text for r in replies]
    out = {
        "answer": texts,
        "answer_status": ["ok" if t else "empty" for t in texts],
        "words": [t.split()[:2] for t in texts],  # a list column: Parquet renames its items unless told not to
    }
    if reshape:
        out = {"id": [i for i in batch["id"] for _ in range(2)]} | {
            k: [v for v in vs for _ in range(2)] for k, vs in out.items()
        }
    return out


class _Asked:
    """A FakeGenerator taking concurrent calls, recording the prompts it answered. ``empty``: prompts answered with
    an empty reply (failed rows); ``fail``: the prompt whose call raises, once the pieces matching ``wait_for`` (a
    glob under ``folder``) are stored, so that the call fails in the middle of its chunk after others finished."""

    def __init__(self, *, empty=(), fail=None, folder=None, wait_for=None, count=0):
        import threading

        from xl_suite.engines.fake import FakeGenerator

        self.seen: list[str] = []
        self.lock = threading.Lock()

        def respond(messages, index, sampling):
            text = messages[-1]["content"]
            with self.lock:
                self.seen.append(text)
            return "" if text in empty else f"answer to {text}"

        def fail_on(conv):
            if conv[-1]["content"] != fail:
                return False
            import time

            deadline = time.monotonic() + 10  # a sync, not a timing: the pieces are written in milliseconds
            while wait_for and len(list(folder.glob(wait_for))) < count and time.monotonic() < deadline:
                time.sleep(0.005)
            return True

        self.generator = FakeGenerator(respond, fail_on=fail_on, concurrent_calls=True)


def _pieces_run(ds, folder, asked, reshape=False, **kwargs):
    from xl_suite.runner import in_flight_batches

    fn_kwargs = {"generator": asked.generator, "reshape": reshape}
    assert kwargs.get("concurrency") or in_flight_batches(fn_kwargs, 8, 2, None) == 4
    stats = StageStats("stage")
    out = run_stage(
        ds,
        _answer,
        stage="stage",
        fingerprint="f",
        work_dir=str(folder),
        fn_kwargs=fn_kwargs,
        chunk_size=8,
        batch_size=2,
        remove_columns=ds.column_names if reshape else None,
        stats=stats,
        **kwargs,
    )
    return out, stats


def _fail_in_chunk_4(ds, folder, reshape=False, wait=True, **kwargs):
    """Run with the call of rows 36-37 (piece 2 of chunk 4) failing (``wait``: once pieces 0 and 1 of chunk 4 are
    stored)."""
    from xl_suite.errors import GenerationError

    pattern = "stage/chunk-00004-*.piece-00000[02]-2" if wait else None
    broken = _Asked(fail="question 37", folder=folder, wait_for=pattern, count=2)
    try:
        _pieces_run(ds, folder, broken, reshape=reshape, **kwargs)
    except GenerationError as e:
        assert "question 37" in str(e)
    else:  # pragma: no cover
        raise AssertionError("the engine failure must reach the caller")
    return broken


def _stored_ids(folder, pattern):
    return {i for p in folder.glob(pattern) for i in pq.read_table(p).column("id").to_pylist()}


def _chunk_files(folder):
    return {p.name: p.read_bytes() for p in sorted((folder / "stage").glob("*.parquet"))}


@pytest.mark.parametrize("reshape", [False, True], ids=["1:1", "n->m"])
@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_a_call_failing_mid_chunk_keeps_the_chunks_finished_calls_and_the_rerun_makes_only_the_others(
    tmp_path, reshape
):
    ds = _pieces_ds()
    reference, _ = _pieces_run(ds, tmp_path / "ref", _Asked(), reshape=reshape)
    work = tmp_path / "work"
    _fail_in_chunk_4(ds, work, reshape=reshape)
    pieces = sorted(p.name for p in (work / "stage").glob("chunk-00004-*.piece-*"))
    assert len(pieces) >= 2 and {"r32", "r33", "r34", "r35"} <= _stored_ids(work, "stage/*.piece-*"), pieces
    stored = _stored_ids(work, "stage/*.parquet") | _stored_ids(work, "stage/*.piece-*")
    missing = [t for i, t in zip(ds["id"], ds["text"], strict=True) if i not in stored]

    healthy = _Asked()
    out, stats = _pieces_run(ds, work, healthy, reshape=reshape)
    assert sorted(healthy.seen) == sorted(missing) and healthy.generator.prompts_seen == len(missing)
    assert not {"question 32", "question 33", "question 34", "question 35"} & set(healthy.seen)
    assert stats.rows_computed == len(missing)
    assert out.to_dict() == reference.to_dict()
    assert _chunk_files(work) == _chunk_files(tmp_path / "ref"), "the same chunk files, byte for byte"
    assert sorted(p.name for p in (work / "stage").iterdir()) == sorted(_chunk_files(work)), "no piece left behind"
    again = _Asked()
    assert _pieces_run(ds, work, again, reshape=reshape)[0].to_dict() == reference.to_dict() and again.seen == []


def test_pieces_of_other_content_or_of_another_retry_are_not_reused(tmp_path):
    import shutil

    ds = _pieces_ds()
    work = tmp_path / "work"
    _fail_in_chunk_4(ds, work)
    assert len(list(work.glob("stage/chunk-00004-*.piece-*"))) >= 2
    # Other content: a changed row of chunk 4 changes its key, so none of its old pieces is read.
    changed = ds.map(lambda r: {"text": r["text"] + "?" if r["id"] == "r39" else r["text"]})
    asked = _Asked()
    _pieces_run(changed, work, asked)
    assert {f"question {i}" for i in range(32, 38)} | {"question 39?"} <= set(asked.seen)

    # Another retry: rows 33, 35, 37, 39 fail (empty replies); a retry is killed after its first call (33, 35)...
    odd = {f"question {i}" for i in (33, 35, 37, 39)}
    retry = tmp_path / "retry"
    _pieces_run(ds, retry, _Asked(empty=odd))
    from xl_suite.errors import GenerationError

    try:
        _pieces_run(
            ds, retry, _Asked(empty=odd, fail="question 37", folder=retry, wait_for="stage/*.piece-*-retry-*", count=1)
        )
    except GenerationError:
        pass
    assert len(list(retry.glob("stage/chunk-00004-*.piece-000000-2-retry-*"))) == 1
    resumed = tmp_path / "resumed"
    shutil.copytree(retry, resumed)
    asked = _Asked(empty=odd)
    _pieces_run(ds, resumed, asked)
    assert sorted(asked.seen) == ["question 37", "question 39"], "the retry's stored piece is reused"
    # ... then the chunk is retried by a run of one call at a time (which stores no pieces, and deletes the chunk's
    # old ones with the chunk file): the rows are now on their third attempt. Put the piece of the second back: stale.
    stale = {p.name: p.read_bytes() for p in retry.glob("stage/*.piece-*")}
    asked = _Asked(empty=odd)
    _pieces_run(ds, retry, asked, concurrency=1)
    assert sorted(asked.seen) == sorted(odd) and not list(retry.glob("stage/*.piece-*")) and len(stale) == 1
    for name, data in stale.items():
        (retry / "stage" / name).write_bytes(data)
    asked = _Asked()
    out, stats = _pieces_run(ds, retry, asked)
    assert sorted(asked.seen) == sorted(odd), "the stale piece (attempt 2 of the rows) is not reused"
    assert set(out["answer_status"]) == {"ok"} and stats.rows_retried == 4
    assert not list(retry.glob("stage/*.piece-*")), "the chunk's stale piece is deleted with the others"


@pytest.mark.parametrize("damage", ["truncated", "other rows"])
@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_a_damaged_piece_is_moved_aside_and_computed_again(tmp_path, caplog, damage):

    ds = _pieces_ds()
    reference, _ = _pieces_run(ds, tmp_path / "ref", _Asked())
    work = tmp_path / "work"
    _fail_in_chunk_4(ds, work)
    (first,) = (work / "stage").glob("chunk-00004-*.piece-000000-2")
    (second,) = (work / "stage").glob("chunk-00004-*.piece-000002-2")
    if damage == "truncated":
        second.write_bytes(second.read_bytes()[:100])
    else:  # a sound file of the right size, but rows 32-33 under the name of rows 34-35
        second.write_bytes(first.read_bytes())
    healthy = _Asked()
    with caplog.at_level(logging.WARNING):
        out, _ = _pieces_run(ds, work, healthy)
    assert {"question 34", "question 35"} <= set(healthy.seen) and "question 32" not in healthy.seen
    assert second.name in caplog.text and (work / "stage" / f"{second.name}.corrupt").exists()
    assert out.to_dict() == reference.to_dict() and _chunk_files(work) == _chunk_files(tmp_path / "ref")


def test_one_call_at_a_time_writes_no_piece_files(tmp_path):
    ds = _pieces_ds()
    work = tmp_path / "work"
    _fail_in_chunk_4(ds, work, wait=False, concurrency=1)
    assert len(list(work.glob("stage/*.parquet"))) == 4 and not list(work.glob("stage/*.piece-*"))
    healthy = _Asked()
    _pieces_run(ds, work, healthy, concurrency=1)
    assert sorted(healthy.seen) == sorted(f"question {i}" for i in range(32, 40)), "the whole chunk, as before"


def test_pieces_an_overlapped_run_left_are_deleted_by_a_later_run_with_one_call_at_a_time(tmp_path):
    ds = _pieces_ds()
    work = tmp_path / "work"
    _fail_in_chunk_4(ds, work)
    assert list(work.glob("stage/chunk-00004-*.piece-*")), "the overlapped run stored pieces of chunk 4"
    healthy = _Asked()
    _pieces_run(ds, work, healthy, concurrency=1)
    assert "question 32" in healthy.seen, "one call per chunk: the whole chunk is computed, its pieces not read"
    assert not list(work.glob("stage/*.piece-*")), "no piece left behind"


# --------------------------------------------------------------------------------------------------------------
# keyed runs: the store keyed by row content (the judges' store)


def _keyed(tmp_path, keys, fn, **kw):
    ds = datasets.Dataset.from_dict({"key": list(keys), "x": [int(k[1:]) for k in keys]})
    stats = StageStats("k")
    out = run_stage(ds, fn, stage="k", fingerprint="f", work_dir=str(tmp_path), key_column="key", stats=stats, **kw)
    return out, stats


def test_a_keyed_run_reuses_stored_rows_whatever_run_and_chunking_wrote_them(tmp_path):
    seen = []

    def square(batch):
        seen.extend(batch["key"])
        return {"y": [x * x for x in batch["x"]], "y_status": ["ok"] * len(batch["x"])}

    _keyed(tmp_path, ["k1", "k2", "k3"], square, chunk_size=2)
    seen.clear()
    out, stats = _keyed(tmp_path, ["k4", "k2", "k1", "k5"], square, chunk_size=3)
    assert seen == ["k4", "k5"] and out["key"] == ["k4", "k2", "k1", "k5"] and out["y"] == [16, 4, 1, 25]
    assert (stats.rows_reused, stats.rows_computed, stats.keys_computed) == (2, 2, {"k4", "k5"})
    with pytest.raises(Exception, match="must be unique"):
        _keyed(tmp_path, ["k1", "k1"], square)


def test_the_store_index_counts_the_attempts_of_older_caches_and_prefers_a_usable_row(tmp_path):
    import pyarrow as pa

    from xl_suite.run.store import index_stored_rows, storage, write_verified

    fs, root = storage(str(tmp_path))
    folder = f"{root}/k"
    fs.makedirs(folder)
    # an older cache stored each retry in a file of its own, each row with attempts 1
    for n, status in enumerate(["unparsed", "unparsed", "ok"]):
        rows = {"key": ["a", "b"], "s_status": [status, "unparsed"], "y": [n, n]}
        write_verified(fs, f"{folder}/chunk-00000-{n}.parquet", pa.table(rows), [1, 1])
    index, damaged = index_stored_rows(fs, folder, "key", input_columns=["key"])
    assert damaged == [] and not index["a"].failed and index["a"].table.column("y")[index["a"].row].as_py() == 2
    assert index["b"].failed and index["b"].attempts == 3


def _in_process_map_chunks(chunks, worker, constructor_kwargs, **_):
    """``executors.map_chunks`` without Ray: the same tables (chunk index, columns sent along), one worker, in order."""
    from xl_suite.executors import chunk_tables

    tables, schema = chunk_tables(chunks)
    actor = worker(**constructor_kwargs, schema=schema)
    return [row for table in tables for row in actor(table).to_pylist()]


def test_a_keyed_run_on_an_executor_hands_the_earlier_attempts_to_the_workers(tmp_path, monkeypatch):
    """A keyed run's failed rows recomputed by executor workers: the workers' chunk files record every attempt the
    rows have had (not 1 each), so the retry limit counts them wherever they ran; after max_attempts none is sent."""
    import xl_suite.executors
    from xl_suite.executors import RayExecutor
    from xl_suite.run.store import attempts_of

    monkeypatch.setattr(xl_suite.executors, "map_chunks", _in_process_map_chunks)
    seen = []

    def k3_fails(batch):
        seen.append(list(batch["key"]))
        return {"y": batch["x"], "y_status": ["error" if k == "k3" else "ok" for k in batch["key"]]}

    def recorded():  # the attempts each chunk file records for k3
        tables = [pq.read_table(p) for p in sorted((tmp_path / "k").glob("chunk-*.parquet"))]
        return sorted(attempts_of(t)[t.column("key").to_pylist().index("k3")] for t in tables)

    keys = ["k1", "k2", "k3"]
    _keyed(tmp_path, keys, k3_fails)  # attempt 1, here
    for attempt in (2, 3):  # attempts 2 and 3, by the executor's workers (the 3rd retries the 2nd's stored chunk)
        with RayExecutor(num_actors=1):
            out, stats = _keyed(tmp_path, keys, k3_fails)
        assert recorded() == [1, attempt], "the worker's chunk file records every attempt so far"
        assert out["y_status"] == ["ok", "ok", "error"] and stats.rows_retried == 1
    assert seen == [keys, ["k3"], ["k3"]]
    with RayExecutor(num_actors=1):
        out, stats = _keyed(tmp_path, keys, k3_fails)
    assert seen == [keys, ["k3"], ["k3"]] and stats.rows_retried == 0, "no 4th attempt"


@pytest.mark.parametrize("keep_metadata", [False, True], ids=["checksum dropped", "old checksum kept"])
@pytest.mark.slow  # over 1 s here (tests/README.md, Tiers)
def test_an_edited_piece_is_moved_aside_and_its_rows_computed_again(tmp_path, keep_metadata):
    ds = _pieces_ds()
    reference, _ = _pieces_run(ds, tmp_path / "ref", _Asked())
    work = tmp_path / "work"
    _fail_in_chunk_4(ds, work)
    pieces = sorted((work / "stage").glob("chunk-00004-*.piece-*"))
    assert pieces
    for p in pieces:
        table = pq.read_table(p)
        edited = table.set_column(table.column_names.index("answer"), "answer", pa.array(["EDITED"] * table.num_rows))
        pq.write_table(edited.replace_schema_metadata(table.schema.metadata if keep_metadata else None), p)
    healthy = _Asked()
    out, _ = _pieces_run(ds, work, healthy)
    assert "EDITED" not in out["answer"] and out.to_dict() == reference.to_dict()
    assert all(Path(f"{p}.corrupt").exists() for p in pieces)


def _inc(batch):
    return {"y": [x + 1 for x in batch["x"]]}


def _run(tmp_path, ds=None, fn=_inc, **kw):
    ds = (
        ds
        if ds is not None
        else datasets.Dataset.from_dict({"id": [f"r{i}" for i in range(10)], "x": list(range(10))})
    )
    stats = StageStats("inc")
    out = run_stage(ds, fn, stage="inc", fingerprint="f", work_dir=str(tmp_path), chunk_size=4, stats=stats, **kw)
    return out, stats


def test_failed_rows_are_stored_counted_and_retried_up_to_the_cap(tmp_path):
    calls, seen = [], {}

    def flaky(batch):  # row 3 always fails; row 5 fails on the first attempt only
        calls.append(list(batch["x"]))
        for x in batch["x"]:
            seen[x] = seen.get(x, 0) + 1
        status = ["error" if x == 3 or (x == 5 and seen[5] == 1) else "ok" for x in batch["x"]]
        return {"y": [None if s != "ok" else x for x, s in zip(batch["x"], status, strict=True)], "y_status": status}

    out, stats = _run(tmp_path, fn=flaky)
    assert out["y_status"].count("error") == 2 and stats.rows_failed == 2
    calls.clear()
    out, stats = _run(tmp_path, fn=flaky)
    assert calls == [[3], [5]] and stats.rows_retried == 2 and stats.rows_failed == 1
    assert out["y"][5] == 5 and out["y_status"][3] == "error"
    for _ in range(3):
        calls.clear()
        out, stats = _run(tmp_path, fn=flaky, max_attempts=3)
    assert calls == [] and stats.rows_failed == 1  # attempt 3 was the last: stored as a failure, not retried
    calls.clear()
    _run(tmp_path, fn=flaky, retry_failed=False, max_attempts=9)
    assert calls == []


def test_empty_status_of_an_input_column_is_not_this_stages_failure(tmp_path):
    ds = datasets.Dataset.from_dict({"id": ["a", "b"], "x": [1, 2], "prev_status": ["empty", "ok"]})
    calls = []

    def fn(batch):
        calls.append(1)
        return {"y": batch["x"]}

    _run(tmp_path, ds=ds, fn=fn)
    _, stats = _run(tmp_path, ds=ds, fn=fn)
    assert len(calls) == 1 and stats.rows_failed == 0


@pytest.mark.parametrize("kw", [{"chunk_size": 0}, {"batch_size": "8"}, {"max_attempts": 0}, {"stage": "a/b"}])
def test_bad_arguments_are_invalid_argument_errors(tmp_path, kw):
    ds = datasets.Dataset.from_dict({"x": [1]})
    args = {"stage": "s", "fingerprint": "f", "work_dir": str(tmp_path)} | kw
    with pytest.raises(InvalidArgumentError):
        run_stage(ds, _inc, **args)


_HOLDER = textwrap.dedent("""
    import sys, time
    from xl_suite.safety import DirLock
    with DirLock(sys.argv[1], purpose="test holder"):
        print("locked", flush=True)
        time.sleep(60)
""")


@pytest.mark.slow
def test_second_process_on_one_work_dir_gets_a_clear_error(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockError, match=rf"pid {proc.pid} on host .*started .*test holder"):
            _run(tmp_path)
    finally:
        proc.kill()
        proc.wait()
    out, stats = _run(tmp_path)  # the kernel released the killed holder's lock
    assert stats.chunks_computed == 3


def test_lock_is_reentrant_and_released(tmp_path):
    with DirLock(tmp_path):
        _run(tmp_path)  # run_stage inside a caller's lock on the same folder
    with DirLock(tmp_path):
        pass
    assert os.path.exists(tmp_path / ".xl-suite.lock")


@pytest.mark.parametrize("mapped_by_index", [False, True], ids=["plain", "index-mapped"])
def test_apply_batched_gives_the_table_dataset_map_gives(mapped_by_index):
    """The pieces of overlapping calls are computed without ``Dataset.map`` (no Dataset, no fingerprint hashing per
    batch), yet give the same table as ``map``: batches formatted the same way (a ClassLabel as its int, nested lists
    as lists), untouched columns kept, new and replaced columns typed, removed columns gone, schema metadata
    (features) included; and a piece cut from a chunk is that chunk's rows."""
    from xl_suite.run.scheduler import _Piece, _to_table, apply_batched

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["no", "yes"]),
            "tags": datasets.Sequence(datasets.Value("string")),
            "score": datasets.Value("float32"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "id": [f"r{i}" for i in range(7)],
            "label": [i % 2 for i in range(7)],
            "tags": [[f"t{j}" for j in range(i % 3)] for i in range(7)],
            "score": [i / 4 for i in range(7)],
        },
        features=features,
    )
    if mapped_by_index:
        ds = ds.select([6, 2, 5, 0, 3])
    seen = []

    def fn(batch, suffix):
        seen.append({k: type(v[0]).__name__ for k, v in batch.items()})
        return {
            "id": [i + suffix for i in batch["id"]],
            "n_tags": [len(t) for t in batch["tags"]],
            "verdict": [
                {"label": label, "tags": tags} for label, tags in zip(batch["label"], batch["tags"], strict=True)
            ],
        }

    kwargs = {"fn_kwargs": {"suffix": "!"}, "batch_size": 2, "remove_columns": ["score"]}
    expected = _to_table(
        ds.map(fn, batched=True, new_fingerprint="f", load_from_cache_file=False, keep_in_memory=True, **kwargs)
    )
    by_map = list(seen)
    seen.clear()
    got = apply_batched(ds, fn, kwargs["fn_kwargs"], batch_size=2, remove_columns=["score"], fingerprint="f")
    assert seen == by_map and by_map[0] == {"id": "str", "label": "int", "tags": "list", "score": "float"}
    assert got.equals(expected, check_metadata=True), (got.schema, expected.schema)
    assert got.column_names == ["id", "label", "tags", "n_tags", "verdict"] and got.num_rows == ds.num_rows

    piece = _Piece(ds, 1, 4)
    assert piece.table().equals(_to_table(ds.select(range(1, 4))))
    assert piece.table().to_pydict()["id"] == ds["id"][1:4]
