"""One rule for the output folder of every command (synthesize, generate, translate, evaluate, export, finetune, demo).

* **A new folder** (missing or empty): the run claims it by writing xl-suite's marker
  (:data:`~xl_suite.safety.MARKER_FILE`) *before* any output. The marker records the command, the settings that
  determine the output (and their hash), the files and caches the command writes, and whether the run finished.
* **The same command with the same settings** on its own folder is a rerun: it resumes from the cache, and a
  finished run computes nothing and says so. No ``--overwrite`` is needed; the marker says the folder is that run's.
  ``--overwrite`` always starts afresh: the earlier output and its cache are deleted first (as below).
* **Another command, or other settings**, on a folder that holds a run's output: refused, naming the earlier run
  and what differs, unless ``--overwrite``. Then every file and cache folder the earlier run wrote (those its marker
  lists, and the files of its command) is deleted first, so nothing of it is left beside the new output; anything
  else in the folder (files xl-suite did not write) is kept and named, never deleted.
* **A folder that xl-suite did not write** (files but no marker) is refused, with or without ``--overwrite``.
  A folder that holds only what an interrupted run of this command left (its lock file, its caches, its files; an
  older release wrote the marker last) is that run's: the rerun resumes it.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "answers"
>>> claim = claim_output(out, "generate", {"model": "m"}, overwrite=False, files=["de.jsonl"])
>>> claim.mode
'new'
>>> _ = (out / "de.jsonl").write_text("{}")
>>> claim.complete()
>>> claim_output(out, "generate", {"model": "m"}, overwrite=False).mode
'resume'
>>> claim_output(out, "generate", {"model": "other"}, overwrite=False)
Traceback (most recent call last):
...
xl_suite.errors.OutputExistsError: ... holds the output of another run (xl-suite generate; other settings: model 'm' then, 'other' now). Rerun that command to resume it, choose another folder, or pass --overwrite to replace its output.

Nothing here runs at import time.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xl_suite.errors import OutputExistsError
from xl_suite.safety import LOCK_FILE, MARKER_FILE, protected_reason


__all__ = ["OutputClaim", "claim_output", "read_marker", "settings_hash", "settings_of", "MARKER_FORMAT"]

#: Version of the marker's content (release 1 wrote ``written_by``/``kind``/``pid``/``host``/``time`` only).
MARKER_FORMAT = 2

#: What each command writes into its folder (glob patterns) and its cache folders there: an ``--overwrite`` deletes
#: these as well as the files the earlier run's marker lists (markers of release 1 list none).
KIND_FILES: dict[str, tuple[str, ...]] = {
    "generate": ("*.jsonl",),
    "translate": ("*.jsonl",),
    "evaluate": (
        "report.md",
        "leaderboard.csv",
        "win_rates.png",
        "summary.json",
        "per_sample.jsonl",
        "judgments.jsonl",
        "rubric.jsonl",
        "annotations.json",
        "model_outputs.json",
    ),
    "synthesize": ("*.parquet", "summary.json"),
    # one board folder for `leaderboard` and `compare-judges`: each run adds to it in place
    "leaderboard": ("leaderboard.csv", "leaderboard.json", "index.html", "judges.csv", "judges.json"),
    "export": ("README.md", "recipes", "xl-alpacaeval-*", "m-alpacaeval-*", "xl-instruct-*", ".xl-suite-demo"),
}
KIND_CACHES: dict[str, tuple[str, ...]] = {
    "generate": (".work",),
    "translate": (".work",),
    "evaluate": ("annotations",),
    "synthesize": (".xl_suite_work",),
    "leaderboard": ("reports",),
}


def settings_of(obj: Any, *, drop: Iterable[str] = ()) -> dict:
    """The JSON-able settings of a dataclass (or mapping) without the fields in ``drop``, for :func:`claim_output`.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Job:
    ...     model: str = "m"
    ...     overwrite: bool = False
    >>> settings_of(Job(), drop=["overwrite"])
    {'model': 'm'}
    """
    import dataclasses

    items = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj)
    dropped = set(drop)
    return json.loads(json.dumps({k: v for k, v in items.items() if k not in dropped}, default=str, sort_keys=True))


def settings_hash(kind: str, settings: Mapping) -> str:
    """The hash of a run's settings recorded in its marker (equal hashes: the same run)."""
    from xl_suite.fingerprint import stable_hash

    return stable_hash("output-settings", kind, json.dumps(settings, sort_keys=True, default=str))


def read_marker(folder: str | Path) -> dict | None:
    """The marker of ``folder`` as a dict (``{}`` for an unreadable one), or None when there is none."""
    path = Path(folder) / MARKER_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flat(settings: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in settings.items():
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _differences(before: Mapping, now: Mapping) -> str:
    """``key 'a' then, 'b' now`` for the settings that differ (nested ones by dotted key, at most four).

    >>> _differences({"model": "a", "data": {"de": 1}}, {"model": "a", "data": {"de": 2}})
    'data.de 1 then, 2 now'
    """
    before, now = _flat(before), _flat(now)
    keys = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    shown = [f"{k} {_short(before.get(k))} then, {_short(now.get(k))} now" for k in keys[:4]]
    if len(keys) > 4:
        shown.append(f"and {len(keys) - 4} more")
    return ", ".join(shown)


@dataclass
class OutputClaim:
    """A command's hold on its output folder (see the module docstring); :meth:`complete` when the run finished.

    Attributes:
        folder: the output folder.
        kind: the command (``generate``...).
        mode: ``new`` (nothing there before), ``resume`` (this command's earlier run with the same settings) or
            ``replace`` (``--overwrite`` deleted another run's output).
        previous: the earlier run's marker (None for a new folder).
        removed: what ``--overwrite`` deleted (paths relative to the folder).
        kept: entries that xl-suite did not write, left in place by ``--overwrite``.
        dry_run: a check only (nothing was written or deleted).
    """

    folder: Path
    kind: str
    settings: dict
    settings_hash: str
    mode: Literal["new", "resume", "replace"]
    files: list[str] = field(default_factory=list)
    caches: list[str] = field(default_factory=list)
    previous: dict | None = None
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    dry_run: bool = False

    def _write(self, status: str, files: Iterable[str] = ()) -> None:
        started = (self.previous or {}).get("started") if self.mode == "resume" else None
        info = {
            "written_by": "xl-suite",
            "format": MARKER_FORMAT,
            "kind": self.kind,
            "status": status,
            "settings": self.settings,
            "settings_hash": self.settings_hash,
            "files": sorted({*self.files, *files}),
            "caches": sorted(set(self.caches)),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": started or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        from xl_suite.safety import unique_temp_path

        tmp = Path(unique_temp_path(self.folder / MARKER_FILE))
        tmp.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / MARKER_FILE)

    def complete(self, files: Iterable[str | Path] = ()) -> None:
        """Record that the run finished, with the files it wrote (names or paths inside the folder)."""
        names = []
        root = self.folder.resolve()
        for f in files:
            p = Path(f)
            if len(p.parts) == 1 and not p.is_absolute():  # a bare name inside the folder
                names.append(p.name)
                continue
            try:
                names.append(str(p.resolve().relative_to(root)))
            except ValueError:
                continue  # a file outside the folder is not the folder's
        self.files = sorted({*self.files, *names})
        self._write("complete")

    @property
    def finished_before(self) -> bool:
        """A resumed run whose earlier run had finished (its rerun is a no-op unless rows failed)."""
        return self.mode == "resume" and (self.previous or {}).get("status") == "complete"

    def describe(self) -> str | None:
        """One line for the user about what happened to the folder, or None for a new one."""
        if self.mode == "resume":
            state = "finished" if self.finished_before else "unfinished"
            return (
                f"{self.folder}: the same command ran here before ({state}); "
                + ("a run would reuse" if self.dry_run else "reusing")
                + " its finished work (rows that failed are tried again)."
            )
        if self.mode == "replace":
            prev = (self.previous or {}).get("kind") or "an earlier run"
            verb = "would delete" if self.dry_run else "deleted"
            line = f"--overwrite {verb} the output of the earlier run in {self.folder} (xl-suite {prev}: "
            line += f"{len(self.removed)} files and folders)"
            if self.kept:
                shown = ", ".join(self.kept[:5]) + (f" and {len(self.kept) - 5} more" if len(self.kept) > 5 else "")
                line += f"; kept {len(self.kept)} entries xl-suite did not write: {shown}"
            return line + "."
        return None


def _holds_work(folder: Path) -> bool:
    """Whether ``folder`` holds any file besides markers and lock files (a run that failed at once left none)."""
    for _root, _dirs, names in os.walk(folder):
        if any(n not in (MARKER_FILE, LOCK_FILE) for n in names):
            return True
    return False


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _owned_entries(
    folder: Path, kind: str, marker: Mapping, files: Iterable[str], caches: Iterable[str], *, by_kind: bool = True
) -> set[str]:
    """Top-level entries of ``folder`` that a run of ``kind`` (and the earlier run's marker) accounts for.

    ``by_kind`` adds the names every run of the two commands writes (:data:`KIND_FILES`, for markers of release 1,
    which list no files); without it only the names given or listed count.
    """
    listed = {str(f).split("/")[0] for f in marker.get("files", []) or []}
    listed |= {str(c).split("/")[0] for c in marker.get("caches", []) or []}
    listed |= {str(f).split("/")[0] for f in (*files, *caches)}
    patterns: tuple[str, ...] = ()
    if by_kind:
        old_kind = str(marker.get("kind") or "")
        patterns = (*KIND_FILES.get(kind, ()), *KIND_CACHES.get(kind, ()))
        patterns += (*KIND_FILES.get(old_kind, ()), *KIND_CACHES.get(old_kind, ()))
    owned = set()
    for name in _entries(folder):
        if name in (MARKER_FILE, LOCK_FILE) or name in listed or any(fnmatch.fnmatch(name, p) for p in patterns):
            owned.add(name)
        elif name.startswith(f".{MARKER_FILE}.tmp-"):
            owned.add(name)
    return owned


def claim_output(
    folder: str | Path,
    kind: str,
    settings: Mapping,
    *,
    overwrite: bool,
    files: Iterable[str] = (),
    caches: Iterable[str] = (),
    flag: str = "--overwrite",
    dry_run: bool = False,
    legacy_markers: Iterable[str] = (),
) -> OutputClaim:
    """Apply the one rule (module docstring) to ``folder`` for a run of ``kind`` with ``settings``; claim it.

    Call it while holding the folder's lock (:func:`xl_suite.safety.lock_folders`), before any engine starts.

    Args:
        folder: the local output folder (created if missing).
        kind: the command (``generate``, ``translate``, ``evaluate``, ``synthesize``, ``finetune``...).
        settings: what determines the output (JSON-able): a rerun with equal settings resumes.
        overwrite: the user's ``--overwrite``.
        files: the files (relative names) the run writes, as far as known before it starts.
        caches: its cache folders inside ``folder`` (deleted with the output by ``--overwrite``).
        flag: how the user passes ``overwrite`` (for the messages).
        dry_run: check only: write and delete nothing (``--dry-run``); the claim says what a run would do.
        legacy_markers: marker files of earlier releases that also prove xl-suite wrote the folder (a run of
            ``kind`` whose settings are unknown).

    Returns:
        The :class:`OutputClaim` (the marker is written; call :meth:`OutputClaim.complete` at the end).

    Raises:
        OutputExistsError: the folder holds another run's output and ``overwrite`` is false; or it holds files
            xl-suite did not write; or it is a file, a link, the working directory, home or a root.
    """
    p = Path(folder).expanduser()
    settings = json.loads(json.dumps(dict(settings), default=str, sort_keys=True))
    digest = settings_hash(kind, settings)
    files, caches = [str(f) for f in files], [str(c) for c in caches]
    claim = OutputClaim(p, kind, settings, digest, "new", files=files, caches=caches, dry_run=dry_run)
    if p.is_symlink():
        raise OutputExistsError(f"Refusing to write into {str(p)!r}: it is a symbolic link. Choose a real folder.")
    if p.exists() and not p.is_dir():
        raise OutputExistsError(f"Refusing to write into {str(p)!r}: it is a file, not a folder. Choose a folder.")
    reason = protected_reason(p.resolve())
    if reason and p.exists():
        raise OutputExistsError(f"Refusing to write into {str(p)!r} ({p.resolve()}): {reason}. Choose a new folder.")
    if not p.exists() or not _holds_work(p):  # nothing there but locks, markers and empty folders
        if not dry_run:
            claim._write("running")
        return claim
    marker = read_marker(p)
    if marker is None and any((p / m).is_file() for m in legacy_markers):
        marker = {"kind": kind}
    by_kind = marker is not None
    if marker is None:
        present = set(_entries(p))
        cache_there = any((p / c).is_dir() for c in caches)
        if not (cache_there and present <= _owned_entries(p, kind, {}, files, caches, by_kind=False)):
            raise OutputExistsError(
                f"Refusing to write into {str(p)!r}: it was not written by xl-suite (no {MARKER_FILE} inside; it "
                f"holds {', '.join(sorted(present - {LOCK_FILE})[:5])}), so {flag} does not apply to it. Choose "
                "another folder, or delete those files yourself."
            )
        # Only what an interrupted run of this command leaves (its cache, its files, its lock; release 1 wrote
        # the marker last): that run's folder.
        marker = {"kind": kind, "status": "running"}
    same = marker.get("kind") == kind and marker.get("settings_hash") in (digest, None)  # release 1: no settings
    if same and not overwrite:
        claim.mode, claim.previous = "resume", marker
        if not dry_run:
            claim._write("running")
        return claim
    if not overwrite:
        what = f"xl-suite {marker.get('kind') or 'unknown command'}"
        if marker.get("kind") == kind:
            what += f"; other settings: {_differences(marker.get('settings') or {}, settings)}"
        raise OutputExistsError(
            f"{str(p)!r} holds the output of another run ({what}). Rerun that command to resume it, choose another "
            f"folder, or pass {flag} to replace its output."
        )
    owned = _owned_entries(p, kind, marker, files, caches, by_kind=by_kind)
    claim.mode, claim.previous = "replace", marker
    if dry_run:
        claim.removed = sorted(owned - {MARKER_FILE, LOCK_FILE})
        claim.kept = sorted(set(_entries(p)) - owned)
        return claim
    for name in sorted(owned - {MARKER_FILE, LOCK_FILE}):
        target = p / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
        claim.removed.append(name)
    claim.kept = sorted(set(_entries(p)) - owned)
    claim._write("running")
    return claim
