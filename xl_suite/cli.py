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


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupted command saved, and how to go on (one sentence)."""
    output = getattr(args, "output", None)
    cache = {
        "synthesize": getattr(args, "work_dir", None) or (output and f"{str(output).rstrip('/')}/.xl_suite_work"),
        "generate": getattr(args, "work_dir", None) or (output and f"{str(output).rstrip('/')}/.work"),
        "translate": getattr(args, "work_dir", None) or (output and f"{str(output).rstrip('/')}/.work"),
        "evaluate": getattr(args, "cache_dir", None) or (output and f"{str(output).rstrip('/')}/annotations"),
    }.get(args.command)
    if cache:
        return f"Finished chunks are saved in {cache}; rerun the same command to resume from them."
    if args.command == "demo":
        return "Finished chunks are saved under --output-dir; rerun the same command to resume from them."
    return "Rerun the same command to start it again."


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``xl-suite`` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
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
            return _run(args, argv)
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


def _run(args: argparse.Namespace, argv: list[str]) -> int:
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
        from xl_suite.safety import scrub_secrets

        if args.verbose:
            _print_traceback(e)
        message = " ".join(scrub_secrets(str(e)).split())  # one line, even for a parser's multi-line message
        print(f"xl-suite {args.command}: error: {message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"xl-suite {args.command}: interrupted. {_interrupted(args)}", file=sys.stderr)
        return 130
    except Exception as e:  # anything else is a bug in xl-suite: show it in full
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
