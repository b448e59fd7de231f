"""The xl-suite error family.

Every error that a user can fix (a bad argument, a missing file, an engine that failed, a Hub that is
unreachable) is an :class:`XlSuiteError`. Its message names the bad value and the fix, and the CLI prints it
as one line. Any other exception is a bug in xl-suite: the CLI shows its traceback and asks for a report.

Each specific error also derives from the built-in exception that callers caught before this family
existed (``ValueError``, ``RuntimeError``, ``FileExistsError``, ``ImportError``), so ``except ValueError``
in user code keeps working.

>>> issubclass(InvalidArgumentError, XlSuiteError) and issubclass(InvalidArgumentError, ValueError)
True
"""

from __future__ import annotations


__all__ = [
    "XlSuiteError",
    "InvalidArgumentError",
    "LanguageError",
    "SourceError",
    "SourceNotFoundError",
    "SeedError",
    "TemplateError",
    "GenerationError",
    "MissingDependencyError",
    "OutputExistsError",
    "HubError",
    "HubOfflineError",
    "HubPushError",
    "CacheError",
    "LockError",
    "FailureRateError",
    "EXIT_USAGE",
    "EXIT_FAILURE_RATE",
]

#: Exit code of the CLI for an :class:`XlSuiteError` (bad argument, missing file, busy folder...).
EXIT_USAGE = 2
#: Exit code of the CLI when a run finished and wrote everything, but too many rows failed
#: (:class:`FailureRateError`); rerunning the same command retries the failed rows.
EXIT_FAILURE_RATE = 3


class XlSuiteError(Exception):
    """Base of every error that xl-suite raises on purpose; the message says what to change.

    ``exit_code`` is the CLI's exit status for it (:data:`EXIT_USAGE`, 2, unless a subclass says otherwise).
    """

    exit_code: int = EXIT_USAGE


class InvalidArgumentError(XlSuiteError, ValueError):
    """An argument, config field or option has a value that is not allowed."""


class LanguageError(InvalidArgumentError):
    """A language code or language entry is unknown or malformed."""


class SourceError(XlSuiteError, ValueError):
    """A source file is missing, unreadable or lacks required fields."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A file or folder that was named does not exist, or holds no readable file."""


class SeedError(SourceError):
    """The seeds are missing, empty or lack the text column."""


class TemplateError(XlSuiteError, ValueError):
    """A template could not be found or rendered."""


class GenerationError(XlSuiteError, RuntimeError):
    """A backend failed to produce completions. Never turned into empty rows."""


class MissingDependencyError(XlSuiteError, ImportError):
    """An optional dependency (an engine, an identifier) is not installed; the message names the extra."""


class OutputExistsError(XlSuiteError, FileExistsError):
    """An output exists and would be replaced; the message names the flag that allows it."""


class HubError(XlSuiteError, RuntimeError):
    """A Hugging Face Hub operation cannot be done."""


class HubOfflineError(HubError):
    """Raised before any network call when an offline-mode variable is set."""


class HubPushError(HubError):
    """A push failed; the message names the repo, the config and what to do about it."""


class CacheError(XlSuiteError, RuntimeError):
    """A stored chunk or cache file is damaged in a way that cannot be repaired by recomputing it."""


class LockError(XlSuiteError, RuntimeError):
    """Another process holds the lock on a work dir or output folder; the message names it (pid, host, start)."""


class FailureRateError(XlSuiteError, RuntimeError):
    """A run finished and wrote everything, but more rows failed than ``--max-error-rate`` allows (CLI exit 3).

    The failed rows (unparsed, empty, error, too long) are stored with their status and retried by the next run of
    the same command; nothing was lost.
    """

    exit_code = EXIT_FAILURE_RATE
