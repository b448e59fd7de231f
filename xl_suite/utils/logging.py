"""The library's log verbosity, in the style of ``datasets.utils.logging`` and ``transformers.utils.logging``.

Every module logs through ``logging.getLogger(__name__)``, so all records go to the ``xl_suite`` logger and its
children. Importing xl-suite configures nothing: until a ``set_verbosity_*`` function is called the ``xl_suite``
logger has no level and no handler of its own, and its records reach whatever the application configured (or, with
nothing configured, Python's last-resort handler, which prints warnings and errors to stderr). The root logger is
never touched.

Calling :func:`set_verbosity` (or ``set_verbosity_info/warning/debug/error``) is an explicit request: it sets the
level of the ``xl_suite`` logger. Where the application configured no handler on the root logger (a plain script, the
``xl-suite`` command), it also gives the ``xl_suite`` logger one stderr handler (``LEVEL name: message``) and stops
propagation to the root logger, so that a record is not printed twice (:func:`disable_default_handler` removes it);
where the root logger has handlers (``logging.basicConfig`` was called, pytest's log capture), records simply
propagate to them. The ``xl-suite`` command's ``-v``/``-q`` use these functions.

>>> import xl_suite.utils.logging as xl_logging
>>> saved = xl_logging.LoggingState.capture()
>>> xl_logging.set_verbosity_info()
>>> xl_logging.get_verbosity() == xl_logging.INFO
True
>>> saved.restore()
"""

from __future__ import annotations

import logging
import sys
import threading
from logging import CRITICAL, DEBUG, ERROR, FATAL, INFO, NOTSET, WARN, WARNING  # noqa: F401 (re-exported)


__all__ = [
    "CRITICAL",
    "DEBUG",
    "ERROR",
    "FATAL",
    "INFO",
    "NOTSET",
    "WARN",
    "WARNING",
    "get_logger",
    "get_verbosity",
    "set_verbosity",
    "set_verbosity_debug",
    "set_verbosity_info",
    "set_verbosity_warning",
    "set_verbosity_error",
    "enable_default_handler",
    "disable_default_handler",
    "enable_propagation",
    "disable_propagation",
    "LoggingState",
]

_LIBRARY = "xl_suite"
_FORMAT = "%(levelname)s %(name)s: %(message)s"
_lock = threading.Lock()
_default_handler: logging.Handler | None = None
_handler_disabled = False


def _library_logger() -> logging.Logger:
    return logging.getLogger(_LIBRARY)


def get_logger(name: str | None = None) -> logging.Logger:
    """The logger ``name`` (a module's ``__name__``), or the library's root logger ``xl_suite``.

    >>> get_logger().name, get_logger("xl_suite.runner").name
    ('xl_suite', 'xl_suite.runner')
    """
    return logging.getLogger(name or _LIBRARY)


def get_verbosity() -> int:
    """The effective level of the ``xl_suite`` logger (``logging.WARNING`` = 30 unless someone changed it).

    >>> get_verbosity() in (DEBUG, INFO, WARNING, ERROR, CRITICAL)
    True
    """
    return _library_logger().getEffectiveLevel()


def _install_default_handler() -> None:
    global _default_handler
    with _lock:
        if _default_handler is not None or _handler_disabled or logging.getLogger().handlers:
            return  # the application configured the root logger: records propagate to its handlers
        from xl_suite.safety import SecretFilter

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.addFilter(SecretFilter())  # credentials never reach the terminal, whatever a record quotes
        logger = _library_logger()
        logger.addHandler(handler)
        logger.propagate = False
        _default_handler = handler


def set_verbosity(verbosity: int) -> None:
    """Set the level of the ``xl_suite`` logger (``logging.INFO``, ``xl_suite.utils.logging.DEBUG``...).

    Args:
        verbosity: a ``logging`` level; ``NOTSET`` gives the decision back to the parent loggers.
    """
    if not isinstance(verbosity, int) or isinstance(verbosity, bool):
        raise ValueError(
            f"verbosity must be a logging level such as logging.INFO (20), got {verbosity!r}; "
            "or call set_verbosity_info() / set_verbosity_warning() / set_verbosity_debug() / set_verbosity_error()."
        )
    if verbosity != NOTSET:
        _install_default_handler()
    _library_logger().setLevel(verbosity)


def set_verbosity_debug() -> None:
    """Log everything, down to DEBUG."""
    set_verbosity(DEBUG)


def set_verbosity_info() -> None:
    """Log progress and decisions (INFO and above)."""
    set_verbosity(INFO)


def set_verbosity_warning() -> None:
    """Log warnings and errors only (the default of the ``xl-suite`` command)."""
    set_verbosity(WARNING)


def set_verbosity_error() -> None:
    """Log errors only."""
    set_verbosity(ERROR)


def disable_default_handler() -> None:
    """Remove the library's stderr handler (and do not add it later): records go to the parent loggers."""
    global _default_handler, _handler_disabled
    with _lock:
        _handler_disabled = True
        if _default_handler is not None:
            _library_logger().removeHandler(_default_handler)
            _default_handler = None
        _library_logger().propagate = True


def enable_default_handler() -> None:
    """Allow the library's stderr handler again (added at the next ``set_verbosity*`` call, or now if one was)."""
    global _handler_disabled
    with _lock:
        _handler_disabled = False
    if _library_logger().level != NOTSET:
        _install_default_handler()


def enable_propagation() -> None:
    """Let ``xl_suite`` records reach the root logger's handlers too (they may then be printed twice)."""
    _library_logger().propagate = True


def disable_propagation() -> None:
    """Keep ``xl_suite`` records from the root logger's handlers."""
    _library_logger().propagate = False


class LoggingState:
    """The ``xl_suite`` logger's level, handlers and propagation, to put back later (the CLI's ``main`` does).

    >>> state = LoggingState.capture()
    >>> set_verbosity_debug()
    >>> state.restore()
    >>> LoggingState.capture() == state
    True
    """

    def __init__(self, level: int, handlers: list[logging.Handler], propagate: bool, default: logging.Handler | None):
        self.level, self.handlers, self.propagate, self.default = level, handlers, propagate, default

    @classmethod
    def capture(cls) -> LoggingState:
        """The current state."""
        logger = _library_logger()
        return cls(logger.level, list(logger.handlers), logger.propagate, _default_handler)

    def restore(self) -> None:
        """Put the captured state back."""
        global _default_handler
        logger = _library_logger()
        with _lock:
            for handler in list(logger.handlers):
                if handler not in self.handlers:
                    logger.removeHandler(handler)
            for handler in self.handlers:
                if handler not in logger.handlers:
                    logger.addHandler(handler)
            logger.setLevel(self.level)
            logger.propagate = self.propagate
            _default_handler = self.default

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LoggingState):
            return NotImplemented
        return (self.level, self.handlers, self.propagate) == (other.level, other.handlers, other.propagate)
