"""``xl-suite`` command line: a thin dispatcher to ``xl_suite.commands.<name>``.

Each command module exposes ``add_parser(subparsers)`` and ``run(args) -> int``; heavy imports (datasets, torch,
vLLM) happen inside ``run``, so ``xl-suite --help`` and ``xl-suite <command> --help`` stay fast.

Exit codes: 0 done; 2 a problem the user can fix (any :class:`~xl_suite.errors.XlSuiteError`, and argparse's own
errors), printed as one line ``xl-suite <command>: error: ...``; 3 the run wrote everything but too many rows failed
(:class:`~xl_suite.errors.FailureRateError`, ``--max-error-rate``); 130 interrupted (Ctrl-C), with one line saying
where the finished chunks are. Any other exception is a bug and shows its traceback.

Logging: ``-v`` (INFO), ``-vv`` (DEBUG) and ``-q`` (errors only) set the ``xl_suite`` loggers' verbosity through
:mod:`xl_suite.utils.logging` (default: warnings); the root logger is left alone. vLLM reads its own log level from
``VLLM_LOGGING_LEVEL`` when it is imported and when it starts its engine process; unless ``-v`` is given or the
variable is set already, the command sets it to ``ERROR`` for its own duration (vLLM's start-up chatter would hide the
progress bars and summaries) and removes it again when the command ends. :func:`main` leaves the process as it
found it: logger state and environment are restored when it returns, so it can be called from Python.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys


#: command name -> module under xl_suite.commands
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "languages": "languages",
    "export": "export",
    "push": "push",
    "synthesize": "synthesize",
    "generate": "generate",
    "translate": "translate",
    "evaluate": "evaluate",
    "leaderboard": "leaderboard",
    "compare-judges": "compare_judges",
    "finetune": "finetune",
}


def _available_commands() -> dict[str, object]:
    mods = {}
    for name, module in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(f"xl_suite.commands.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"xl_suite.commands.{module}":
                raise
    return mods


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, in the format of every other CLI error (exit status 2, as argparse's)."""

    def error(self, message: str):
        """Print ``<prog>: error: <message> (see <prog> --help)`` and exit 2; no usage block."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (used by ``main`` and by the tests of ``--help``)."""
    parser = _Parser(
        prog="xl-suite",
        description="Cross-lingual synthetic training and evaluation data (XL-Instruct, XL-AlpacaEval) as HF datasets.",
    )
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log at INFO level (-vv: DEBUG), show vLLM's own logs and re-raise errors with their traceback",
    )
    loud.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, mod in _available_commands().items():
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run, _parser=p)
        assert p.prog.endswith(name), f"command module {mod.__name__} registered {p.prog!r}, expected {name!r}"
    return parser


def _interrupted(args: argparse.Namespace | None, command: str | None = None) -> str:
    """What an interrupted command saved, and how to go on (one sentence)."""
    command = getattr(args, "command", None) or command
    output = getattr(args, "output", None)
    cache = {
        "synthesize": getattr(args, "work_dir", None) or (output and f"{str(output).rstrip('/')}/.xl_suite_work"),
        "generate": getattr(args, "work_dir", None) or (output and f"{str(output).rstrip('/')}/.work"),
        "translate": getattr(args, "work_dir", None) or (output and f"{str(output).rstrip('/')}/.work"),
        "evaluate": getattr(args, "cache_dir", None) or (output and f"{str(output).rstrip('/')}/annotations"),
    }.get(command or "")
    if cache:
        return f"Finished chunks are saved in {cache}; rerun the same command to resume from them."
    if command in ("demo", "finetune") and getattr(args, "output_dir", None):
        return (
            f"Finished work is saved in {args.output_dir}; rerun the same command to resume from it (it reuses "
            "every finished chunk)."
        )
    if command in ("export", "leaderboard", "compare-judges", "languages"):
        return "Nothing was changed (files are replaced only once complete); rerun the same command."
    return "Rerun the same command to start it again."


class _InterruptWatch:
    """While the CLI runs: note when Ctrl-C (SIGINT) arrived, so that an error it caused (an engine process that
    died of the same signal) is reported as the interruption it is; and after it, ignore further Ctrl-C while the
    one line is printed. Restores the previous handler on exit (``main`` may run inside another program)."""

    def __init__(self, *, keep_quiet: bool = False):
        self.seen = False
        self.keep_quiet = keep_quiet  # the process exits after main: a late Ctrl-C must not interrupt its exit
        self._previous = None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            if self._previous is signal.default_int_handler:
                signal.signal(signal.SIGINT, self._handler)
            else:
                self._previous = None  # someone else handles SIGINT: leave it alone
        return self

    def _handler(self, signum, frame):
        if self.seen:  # a second Ctrl-C, or the same one re-raised by a library (pyarrow's stop handler chains the
            return  # signal on): the first is being reported; a second KeyboardInterrupt would escape the report
        self.seen = True
        raise KeyboardInterrupt

    def quiet(self) -> None:
        """Ignore further Ctrl-C (while reporting the first); undone by ``__exit__``."""
        import signal
        import threading

        self.seen = True
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __exit__(self, *exc) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN if self.keep_quiet else self._previous)


def _command_of(argv: list[str]) -> str | None:
    return next((a for a in argv if a in COMMANDS), None)


def _report_interrupt(watch: _InterruptWatch, args, argv: list[str]) -> int:
    watch.quiet()
    command = getattr(args, "command", None) or _command_of(argv) or ""
    sys.stderr.write(f"\nxl-suite {command}: interrupted. {_interrupted(args, command)}\n".replace(" :", ":"))
    sys.stderr.flush()
    return 130


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xl-suite`` console script.

    Ctrl-C at any moment, start-up included, ends with exit status 130 and one line saying what is saved; an error
    that the interruption caused (an engine process stopped by the same signal) is reported as the interruption.
    """
    program = argv is None  # the process's own entry point (console script, python -m): it exits right after
    argv = list(sys.argv[1:] if argv is None else argv)
    with _InterruptWatch(keep_quiet=program) as watch:
        args = None
        try:
            parser = build_parser()
            args = parser.parse_args(argv)
            code = _main(args, argv, watch)
        except KeyboardInterrupt:
            code = _report_interrupt(watch, args, argv)
    if program and watch.seen:
        _exit_now(code)
    return code


def _exit_now(code: int) -> None:
    """End an interrupted program at once, its report printed and every ``finally`` run (engines closed, files
    moved into place): the interpreter's own shutdown would restore the default SIGINT action while library threads
    (pyarrow's stop handler, engine processes) may still pass the signal on, which killed 1 in ~15 interrupted runs
    with no message after ours."""
    import logging

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    logging.shutdown()
    os._exit(code)


def _main(args: argparse.Namespace, argv: list[str], watch) -> int:
    from xl_suite.utils import logging as xl_logging

    state = xl_logging.LoggingState.capture()
    xl_logging.set_verbosity(
        xl_logging.ERROR
        if args.quiet
        else xl_logging.DEBUG
        if args.verbose > 1
        else xl_logging.INFO
        if args.verbose
        else xl_logging.WARNING
    )
    try:
        with _vllm_log_level(None if args.verbose else "ERROR"):
            return _run(args, argv, watch)
    finally:
        state.restore()


@contextlib.contextmanager
def _vllm_log_level(level: str | None):
    """``VLLM_LOGGING_LEVEL=level`` while the command runs, unless the user set it (or ``level`` is None)."""
    if level is None or "VLLM_LOGGING_LEVEL" in os.environ:
        yield
        return
    os.environ["VLLM_LOGGING_LEVEL"] = level
    try:
        yield
    finally:
        if os.environ.get("VLLM_LOGGING_LEVEL") == level:
            del os.environ["VLLM_LOGGING_LEVEL"]


def _run(args: argparse.Namespace, argv: list[str], watch) -> int:
    from xl_suite.errors import XlSuiteError

    try:
        if getattr(args, "config_file", None):
            from xl_suite.configuration import apply_config_file

            sub_argv = argv[argv.index(args.command) + 1 :]
            namespace = apply_config_file(args._parser, sub_argv, args.config_file)
            for key, value in vars(namespace).items():
                setattr(args, key, value)
        return int(args._run(args) or 0)
    except XlSuiteError as e:  # a problem the user can fix: one line that names the fix (-v: the traceback first)
        if watch.seen:  # caused by Ctrl-C (an engine stopped by the same signal): it is the interruption
            return _report_interrupt(watch, args, argv)
        from xl_suite.safety import scrub_secrets

        if args.verbose:
            _print_traceback(e)
        message = " ".join(scrub_secrets(str(e)).split())  # one line, even for a parser's multi-line message
        print(f"xl-suite {args.command}: error: {message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return _report_interrupt(watch, args, argv)
    except Exception as e:  # anything else is a bug in xl-suite: show it in full
        if watch.seen:  # ...unless Ctrl-C caused it (an engine or worker stopped by the same signal)
            return _report_interrupt(watch, args, argv)
        print(
            f"xl-suite {args.command}: internal error (a bug in xl-suite; please report it with the traceback below):",
            file=sys.stderr,
        )
        _print_traceback(e)
        return 1


def _print_traceback(error: BaseException) -> None:
    """The traceback of ``error`` (its causes and contexts included) on stderr, with credentials scrubbed: a chained
    error may quote a token (a server echoing the Authorization header), and a traceback is shown as printed."""
    import traceback

    from xl_suite.safety import scrub_secrets

    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    print(scrub_secrets(text).rstrip("\n"), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
