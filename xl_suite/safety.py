"""Guards shared by every module that writes, caches or talks to a server.

* :func:`scrub_secrets`: remove API keys and tokens (from the environment, ``sk-...``, ``hf_...``) from a message;
  :class:`SecretFilter` does the same to every log record of a logger.
* :func:`write_marker` / :func:`check_replaceable`: an output folder is only ever replaced when it holds the marker
  file that xl-suite wrote into it; a foreign folder, the working directory or one of its parents is refused.
* :func:`unique_temp_path`: a temporary name no other run can hold (pid + random suffix), next to the target.
* :func:`quarantine`: move a damaged cache/chunk file aside (under a unique name) with a warning naming it.
* :class:`DirLock`: an exclusive ``fcntl`` lock per work dir or output folder; the error names the holder
  (pid, host, start time). The lock is released by the kernel when the holder dies, even by SIGKILL.

Nothing here runs at import time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

from xl_suite.errors import InvalidArgumentError, LockError, OutputExistsError


logger = logging.getLogger(__name__)

__all__ = [
    "MARKER_FILE",
    "LOCK_FILE",
    "SecretFilter",
    "DirLock",
    "check_replaceable",
    "check_files_replaceable",
    "check_output_dir",
    "lock_folders",
    "protected_reason",
    "install_secret_filter",
    "quarantine",
    "scrub_secrets",
    "secret_values",
    "unique_temp_path",
    "write_marker",
]

#: Marker file xl-suite writes into every folder it creates and may later replace.
MARKER_FILE = ".xl-suite-output.json"
#: Lock file inside a locked folder.
LOCK_FILE = ".xl-suite.lock"

_SECRET_VAR_RE = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD)$|^(OPENAI_API_KEY|HF_TOKEN|HUGGING_FACE_HUB_TOKEN)$")
# OpenAI-style keys (sk-..., sk-proj-...), Hugging Face tokens (hf_...), bearer headers.
_SECRET_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}"),
)
_MIN_SECRET_LEN = 6  # shorter values ("1", "true") would blank out ordinary words
_REDACTED = "***"


def secret_values(extra: tuple[str | None, ...] | list[str | None] = ()) -> list[str]:
    """Values of environment variables that look like credentials (``*_API_KEY``, ``*_TOKEN``...), plus ``extra``.

    Longest first, so a key that contains another is replaced whole.
    """
    values = {v for k, v in os.environ.items() if _SECRET_VAR_RE.search(k.upper()) and v}
    values.update(v for v in extra if v)
    return sorted((v for v in values if len(v) >= _MIN_SECRET_LEN), key=len, reverse=True)


def scrub_secrets(text: object, extra: tuple[str | None, ...] | list[str | None] = ()) -> str:
    """``str(text)`` with credentials replaced by ``***``.

    Removes the values of credential-like environment variables (``OPENAI_API_KEY``, ``HF_TOKEN``, any
    ``*_API_KEY``/``*_TOKEN``/``*_SECRET``), the strings in ``extra``, and anything shaped like an OpenAI key
    (``sk-...``), a Hugging Face token (``hf_...``) or a bearer header.

    >>> scrub_secrets("invalid key sk-abcdefghijklmnop for hf_ABCDEFGHIJKLMNOP", extra=["s3cr3t-value"])
    'invalid key *** for ***'
    >>> scrub_secrets("Authorization: Bearer abc.def-123456")
    'Authorization: Bearer ***'
    """
    out = str(text)
    for value in secret_values(extra):
        out = out.replace(value, _REDACTED)
    for pattern in _SECRET_PATTERNS:
        out = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + _REDACTED, out)
    return out


class SecretFilter(logging.Filter):
    """A logging filter that scrubs credentials from each record's message (arguments included)."""

    def __init__(self, extra: tuple[str | None, ...] | list[str | None] = ()):
        super().__init__()
        self.extra = tuple(extra)

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message, scrub it, and drop the arguments; always keeps the record."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must still be logged, scrubbed
            message = f"{record.msg} {record.args}"
        record.msg, record.args = scrub_secrets(message, self.extra), None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = scrub_secrets(logging.Formatter().formatException(record.exc_info), self.extra)
            record.exc_info = None
        return True


def install_secret_filter(log: logging.Logger, extra: tuple[str | None, ...] | list[str | None] = ()) -> SecretFilter:
    """Attach one :class:`SecretFilter` to ``log`` (idempotent: an existing one gets the new ``extra`` values)."""
    for f in log.filters:
        if isinstance(f, SecretFilter):
            f.extra = tuple(dict.fromkeys((*f.extra, *extra)))
            return f
    f = SecretFilter(extra)
    log.addFilter(f)
    return f


# -- output folders ------------------------------------------------------------------------------------------


def write_marker(folder: str | Path, kind: str) -> Path:
    """Write xl-suite's marker into ``folder``, recording what wrote it (``kind``), when, and the pid."""
    path = Path(folder) / MARKER_FILE
    info = {
        "written_by": "xl-suite",
        "kind": kind,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path.write_text(json.dumps(info) + "\n", encoding="utf-8")
    return path


def protected_reason(path: Path) -> str | None:
    """Why ``path`` (resolved) may never be replaced or written into as an output folder, or None."""
    cwd = Path.cwd().resolve()
    home = Path.home().resolve()
    if path == cwd or path in cwd.parents:
        return "it is the current working directory or one of its parents"
    if path == home or path in home.parents:
        return "it is your home directory or one of its parents"
    if path == Path(path.anchor):
        return "it is a filesystem root"
    return None


def check_replaceable(
    path: str | Path,
    *,
    overwrite: bool,
    legacy_markers: tuple[str, ...] = (),
    flag: str = "--overwrite/overwrite=True",
) -> bool:
    """Decide whether ``path`` may be (re)written; raise if not.

    Args:
        path: the output folder about to be written (an existing file is refused).
        overwrite: the caller's overwrite flag.
        legacy_markers: other marker file names that also prove xl-suite wrote the folder (older releases).
        flag: how the user passes ``overwrite``, for the message.

    Returns:
        True when ``path`` exists and will be replaced, False when it does not exist (or is an empty folder).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false; or it is a file, a link, a folder without
            xl-suite's marker (a folder we did not write), the working directory, home, a root or a parent of those.
    """
    p = Path(path).expanduser()
    resolved = p.resolve()
    reason = protected_reason(resolved)
    if reason and p.exists():
        raise OutputExistsError(f"Refusing to write over {str(p)!r} ({resolved}): {reason}. Choose a new folder.")
    if not p.exists() and not p.is_symlink():
        return False
    if p.is_dir() and not any(p.iterdir()):
        return False
    if not overwrite:
        raise OutputExistsError(f"{str(p)!r} already exists. Choose another folder or pass {flag}.")
    if p.is_symlink():
        raise OutputExistsError(f"Refusing to replace {str(p)!r}: it is a symbolic link. Choose a real folder.")
    if not p.is_dir():
        raise OutputExistsError(f"Refusing to replace {str(p)!r}: it is a file, not a folder. Choose a folder name.")
    if p.is_dir() and not any((p / m).is_file() for m in (MARKER_FILE, *legacy_markers)):
        raise OutputExistsError(
            f"Refusing to replace {str(p)!r}: it was not written by xl-suite (no {MARKER_FILE} inside), so "
            f"{flag} does not apply to it. Choose another folder, or delete it yourself."
        )
    return True


def check_output_dir(path: str | Path, flag: str = "--output") -> Path:
    """Check, before any work, that ``path`` can be an output folder: not a file, and writable (or creatable).

    Raises:
        InvalidArgumentError: ``path`` is a file, or it (or the nearest existing folder above it) is not writable.

    >>> check_output_dir("/proc/version", "--output")
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: --output '/proc/version' is a file, not a folder. Name a folder (it is created if missing).
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InvalidArgumentError(
            f"{flag} {str(p)!r} is a file, not a folder. Name a folder (it is created if missing)."
        )
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidArgumentError(f"{flag} {str(p)!r} cannot be created: {str(existing)!r} is a file.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidArgumentError(
            f"{flag} {str(p)!r} is not writable ({str(existing)!r} is read-only for this user). "
            "Choose a folder you can write to."
        )
    return p


def check_files_replaceable(folder: str | Path, names, *, overwrite: bool, flag: str = "--overwrite") -> list[Path]:
    """Check the files ``names`` that a command writes into ``folder``; return those that exist (to be replaced).

    A file is only replaced with ``overwrite`` *and* when ``folder`` holds xl-suite's marker (written by
    :func:`write_marker` after an earlier run), so ``--overwrite`` never replaces a file of the same name in a
    folder that xl-suite did not write.

    Raises:
        OutputExistsError: a file exists and ``overwrite`` is false, or the folder has no marker (a foreign folder),
            or a name is a folder.
    """
    root = Path(folder).expanduser()
    existing = [root / n for n in names if (root / n).exists() or (root / n).is_symlink()]
    if not existing:
        return []
    shown = [str(p) for p in existing]
    folders = [str(p) for p in existing if p.is_dir() or p.is_symlink()]
    if folders:
        raise OutputExistsError(f"{folders} are folders or links where files go. Choose another output folder.")
    if not overwrite:
        raise OutputExistsError(f"{shown} exist. Pass {flag} to replace them, or choose another output folder.")
    if not (root / MARKER_FILE).is_file():
        raise OutputExistsError(
            f"Refusing to replace {shown}: {str(root)!r} was not written by xl-suite (no {MARKER_FILE} inside), so "
            f"{flag} does not apply to it. Choose another output folder, or delete the files yourself."
        )
    return existing


def lock_folders(folders, *, purpose: str, storage_options: dict | None = None):
    """One :class:`DirLock` per local folder of ``folders`` (fsspec URLs; remote ones and None are skipped).

    Returns:
        A ``contextlib.ExitStack`` holding the locks (release them with ``with`` or ``.close()``).

    Raises:
        LockError: another process holds one of them (the locks taken so far are released).
    """
    import contextlib

    import fsspec

    stack = contextlib.ExitStack()
    seen = set()
    try:
        for url in folders:
            if url is None:
                continue
            fs, root = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            if protocol not in ("file", "local"):
                continue
            key = str(Path(root).resolve())
            if key in seen:
                continue
            seen.add(key)
            stack.enter_context(DirLock(root, purpose=purpose))
    except BaseException:
        stack.close()
        raise
    return stack


def unique_temp_path(target: str | Path | None = None, *, suffix: str = "") -> str:
    """A temporary name next to ``target`` that no other process can hold: ``.<name>.tmp-<pid>-<random>``.

    >>> p = unique_temp_path("/out/data.parquet")
    >>> p.startswith("/out/.data.parquet.tmp-") and p != unique_temp_path("/out/data.parquet")
    True
    """
    token = f"tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}"
    if target is None:
        return token
    text = str(target).rstrip("/")
    head, _, name = text.rpartition("/")
    return f"{head}/.{name}.{token}" if head or text.startswith("/") else f".{name}.{token}"


def quarantine(fs, path: str, reason: str, *, what: str = "Cache file") -> str | None:
    """Move a damaged file aside as ``<path>.corrupt`` (``.corrupt-<random>`` if taken) with a warning naming it; return the new path.

    Args:
        fs: fsspec filesystem of ``path``.
        path: the damaged file.
        reason: what is wrong with it (shown in the warning).
        what: how to call it in the warning.

    Returns:
        The new path, or None when the store refused the move (read-only); the file is then left in place, and the
        caller must skip it.
    """
    target = f"{path}.corrupt"
    try:
        if fs.exists(target):  # an earlier damaged copy: keep both
            target = f"{path}.corrupt-{uuid.uuid4().hex[:8]}"
        fs.mv(path, target)
    except Exception as e:  # noqa: BLE001 - read-only stores: leave it, it is re-detected next time
        logger.warning(
            "%s %s is damaged (%s) and could not be moved aside (%s); it is skipped and recomputed.",
            what,
            path,
            reason,
            e,
        )
        return None
    logger.warning("%s %s is damaged (%s); moved to %s, its rows will be computed again.", what, path, reason, target)
    return target


# -- locks ---------------------------------------------------------------------------------------------------


class DirLock:
    """An exclusive lock on a local folder, held through ``fcntl.flock`` on ``<folder>/.xl-suite.lock``.

    The lock file records the holder (pid, host, start time, what it is doing); a second process gets a
    :class:`~xl_suite.errors.LockError` naming them. The kernel releases the lock when the holder exits, however it
    dies, so a stale lock file never blocks a later run. Re-entrant within a process (a nested ``DirLock`` on the
    same folder is a no-op).

    Args:
        folder: the folder to lock (created if missing).
        purpose: shown to the other process (``"synthesis work dir"``...).
    """

    #: folder -> [holders in this process, file descriptor]; the flock is released when the last holder leaves,
    #: whichever thread or instance that is.
    _held: dict[str, list] = {}
    _guard = threading.Lock()

    def __init__(self, folder: str | Path, purpose: str = "xl-suite run"):
        self.folder = Path(folder).resolve()
        self.purpose = purpose
        self._acquired = False

    def acquire(self) -> DirLock:
        """Take the lock or raise :class:`LockError` naming the holder."""
        import fcntl
        import sys

        key = str(self.folder)
        with DirLock._guard:
            if key in DirLock._held:
                DirLock._held[key][0] += 1
                self._acquired = True
                return self
            if self.folder.exists() and not self.folder.is_dir():
                raise InvalidArgumentError(f"{str(self.folder)!r} is a file, not a folder. Name a folder.")
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise InvalidArgumentError(
                    f"Cannot write to {str(self.folder)!r} ({e.strerror or e}). Choose a folder you can write to."
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder, pid = _read_holder(fd)
                os.close(fd)
                stop = f"stop it (kill {pid})" if pid else "stop it"
                raise LockError(
                    f"{self.folder} is in use by another xl-suite process ({holder}). Wait for it to finish, {stop}, "
                    "or use another folder; two runs writing one folder would corrupt each other."
                ) from None
            info = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "purpose": self.purpose,
                "command": scrub_secrets(" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))[:300] if sys.argv else "",
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            DirLock._held[key] = [1, fd]
            self._acquired = True
        return self

    def release(self) -> None:
        """Release the lock (the lock file stays; it is harmless without the flock)."""
        if not self._acquired:
            return
        import fcntl

        key = str(self.folder)
        self._acquired = False
        with DirLock._guard:
            entry = DirLock._held.get(key)
            if entry is None:
                return
            entry[0] -= 1
            if entry[0] > 0:
                return
            del DirLock._held[key]
            try:
                fcntl.flock(entry[1], fcntl.LOCK_UN)
            finally:
                os.close(entry[1])

    def __enter__(self) -> DirLock:
        """Acquire."""
        return self.acquire()

    def __exit__(self, *exc) -> None:
        """Release."""
        self.release()


def _read_holder(fd: int) -> tuple[str, object]:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return "holder unknown", None
    if not isinstance(info, dict) or not info:
        return "holder unknown", None
    command = f", command: {info['command']}" if info.get("command") else ""
    text = (
        f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started')}, "
        f"{info.get('purpose', 'xl-suite run')}{command}"
    )
    return text, info.get("pid")
