"""The commands' side of the one output rule (:mod:`xl_suite.output_folder`): what counts as "the same run"."""

from __future__ import annotations

import os
from typing import Any


__all__ = ["engine_settings", "source_setting", "RUN_CONTROL", "cached_line"]

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
