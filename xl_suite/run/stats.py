"""What one stage run did: the one statistics type of the run layer, merged when a stage runs in several calls."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


__all__ = ["StageStats"]

#: The counters :meth:`StageStats.merge` adds up and :meth:`StageStats.to_dict` reports, in order.
_COUNTERS = (
    "rows_in",
    "rows_out",
    "chunks_total",
    "chunks_computed",
    "chunks_reused",
    "chunks_damaged",
    "rows_failed",
    "rows_retried",
    "rows_computed",
    "seconds",
    "kept",
    "dropped",
    "prompt_tokens",
    "completion_tokens",
    "json_repaired",
    "wall_seconds",
)
#: Of those, the ones :meth:`StageStats.to_dict` reports (the rest describe a pipeline's view of the stage).
_REPORTED = _COUNTERS[: _COUNTERS.index("seconds") + 1]


@dataclass
class StageStats:
    """What a stage did: rows in/out, chunks computed vs reused, failed rows by status, time.

    Attributes:
        stage: the stage name.
        rows_in: input rows.
        rows_out: output rows.
        chunks_total: chunks of the input.
        chunks_computed: chunks computed in this run.
        chunks_reused: chunks read back from the store.
        chunks_damaged: stored files found damaged (moved aside and computed again).
        rows_failed: output rows whose status is a failure.
        rows_retried: failed rows computed again in this run.
        rows_computed: rows sent to the engine in this run.
        seconds: wall time.
        failed_by_status: failed rows by status.
        extra: more entries for the summary (a stage's own counts), reported by :meth:`to_dict`.
        rows_reused: keyed runs (``run_stage(key_column=...)``): rows read from the store.
        keys_computed: keyed runs: the keys not read from the store. Neither is part of :meth:`to_dict`.
        rows_exhausted: failed output rows that used all their attempts, which a plain rerun does not try again
            (``--retry-failed`` does: :func:`xl_suite.run.context.retrying_failed`); not part of :meth:`to_dict`.
        status: every status of the stage's output rows, counted (a pipeline's recording, like the fields below).
        kept: output rows the stage's keep filter kept.
        dropped: output rows it dropped.
        prompt_tokens: prompt tokens recorded on the output rows.
        completion_tokens: completion tokens recorded on the output rows.
        json_repaired: replies read only after the JSON repair step.
        wall_seconds: wall time of the stage including the recording.
        stored_files: the store files holding the stage's output rows, in their order, relative to the work dir
            (``<stage>/chunk-...parquet``; runs with a work dir, not keyed ones): what an assembler reads back
            (:func:`xl_suite.run.store.ChunkStore.read_back`) instead of running the stage again.

    >>> a = StageStats("answers", rows_in=4, chunks_computed=1, failed_by_status={"empty": 1})
    >>> a.merge(StageStats("answers", rows_in=6, chunks_reused=2, failed_by_status={"empty": 2, "error": 1}))
    >>> a.rows_in, a.chunks_computed, a.chunks_reused, a.failed_by_status
    (10, 1, 2, {'empty': 3, 'error': 1})
    """

    stage: str
    rows_in: int = 0
    rows_out: int = 0
    chunks_total: int = 0
    chunks_computed: int = 0
    chunks_reused: int = 0
    chunks_damaged: int = 0
    rows_failed: int = 0
    rows_retried: int = 0
    rows_computed: int = 0
    seconds: float = 0.0
    failed_by_status: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    rows_reused: int = 0
    keys_computed: set = field(default_factory=set, repr=False)
    status: dict = field(default_factory=dict)
    kept: int = 0
    dropped: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    json_repaired: int = 0
    wall_seconds: float = 0.0
    stored_files: list = field(default_factory=list)
    rows_exhausted: int = 0

    def merge(self, other: StageStats, *, counters: tuple[str, ...] = _COUNTERS) -> None:
        """Add ``other``'s counts (of the same stage: another call, chunk or worker) to these.

        ``counters`` limits which of the summed counters are added (a caller that counts some itself passes the
        others); the statuses, the failures by status, the reused rows and the computed keys are always merged.
        """
        for name in counters:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for status, count in other.failed_by_status.items():
            self.failed_by_status[status] = self.failed_by_status.get(status, 0) + count
        for status, count in other.status.items():
            self.status[status] = self.status.get(status, 0) + count
        self.rows_reused += other.rows_reused
        self.rows_exhausted += other.rows_exhausted
        self.keys_computed |= other.keys_computed
        self.stored_files += other.stored_files

    def count_failures(self, by_status: dict[str, int]) -> None:
        """Add failed rows, by status."""
        for status, count in by_status.items():
            self.rows_failed += count
            self.failed_by_status[status] = self.failed_by_status.get(status, 0) + count

    def to_record(self) -> dict:
        """Every field as plain JSON values (the computed keys as a sorted list): a stage's counts sent between
        processes (a Ray actor's per-chunk counts to the driver); :meth:`from_record` reads it back.

        >>> a = StageStats("score", rows_in=4, status={"ok": 4}, stored_files=["score/chunk-00000-k.parquet"])
        >>> StageStats.from_record(a.to_record()) == a
        True
        """
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        record["keys_computed"] = sorted(self.keys_computed)
        return record

    @classmethod
    def from_record(cls, record: dict) -> StageStats:
        """The :class:`StageStats` of a :meth:`to_record` dict."""
        return cls(**{**record, "keys_computed": set(record.get("keys_computed", ()))})

    def to_dict(self) -> dict:
        """Plain dict for summaries."""
        return {
            "stage": self.stage,
            **{k: getattr(self, k) for k in _REPORTED},
            "failed_by_status": self.failed_by_status,
        } | self.extra
