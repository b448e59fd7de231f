"""The commands' side of the one output rule (:mod:`xl_suite.output_folder`): what counts as "the same run"."""

from __future__ import annotations

import os
from typing import Any


__all__ = ["engine_settings", "source_setting", "RUN_CONTROL", "cached_line", "retry_advice"]

#: Settings that change how a run goes, not what it writes: a rerun that differs only in these resumes.
RUN_CONTROL = frozenset(
    {
        "output",
        "overwrite",
        "work_dir",
        "cache_dir",
        "chunk_size",
        "batch_size",
        "dry_run",
        "price_input_per_mtok",
        "price_output_per_mtok",
        "max_error_rate",
        "push",
        "private",
        "progress",
        "storage_options",
        "retry_failed",
        "executor",
        "num_actors",
        "num_gpus_per_actor",
        "ray_address",
        "tokens_per_second",
    }
)


def source_setting(source: str | None) -> str | None:
    """A source as recorded in the settings: a local path made absolute (a rerun from another folder is the same)."""
    if source and "://" not in str(source) and os.path.exists(source):
        return os.path.abspath(source)
    return source


def engine_settings(spec, prefix: str = "") -> dict[str, Any]:
    """What of an :class:`~xl_suite.engines.spec.EngineSpec` determines the output: model, backend, revision,
    prompt truncation (not engine tuning such as ``max_model_len`` or a server URL)."""
    if spec is None or not spec.model:
        return {}
    return {
        f"{prefix}model": source_setting(spec.model),
        f"{prefix}backend": spec.backend or "vllm",
        f"{prefix}revision": spec.revision,
        f"{prefix}truncate_prompts": bool(spec.truncate_prompts),
    }


def cached_line(stats, what: str) -> str:
    """``12 of 12 from cache, 0 computed now`` for a :class:`~xl_suite.runner.StageStats`."""
    now = stats.rows_computed
    reused = max(stats.rows_in - now, 0)
    return f"{reused} of {stats.rows_in} {what} from cache, {now} computed now"


def retry_advice(failed: int, exhausted: int, *, attempts: int = 3) -> str:
    """What a rerun does with ``failed`` rows of which ``exhausted`` used all their attempts (the message's tail).

    >>> retry_advice(4, 0)
    'rerunning the same command retries them (up to 3 attempts per row)'
    >>> retry_advice(4, 4)
    'they used all 3 attempts each, so a plain rerun sends no request for them: once the cause is fixed (the server answers again), rerun with --retry-failed to try them again'
    >>> retry_advice(4, 1)
    'rerunning the same command retries 3 of them (up to 3 attempts per row); the other 1 used all 3 attempts: add --retry-failed to try it too'
    """
    if not exhausted:
        return f"rerunning the same command retries them (up to {attempts} attempts per row)"
    if exhausted >= failed:
        return (
            f"they used all {attempts} attempts each, so a plain rerun sends no request for them: once the cause is "
            "fixed (the server answers again), rerun with --retry-failed to try them again"
        )
    them = "it" if exhausted == 1 else "them"
    return (
        f"rerunning the same command retries {failed - exhausted} of them (up to {attempts} attempts per row); the "
        f"other {exhausted} used all {attempts} attempts: add --retry-failed to try {them} too"
    )
