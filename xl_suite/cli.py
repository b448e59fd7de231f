"""``xl-suite`` command line: a thin dispatcher to ``xl_suite.commands.<name>``.

Each command module exposes ``add_parser(subparsers)`` and ``run(args) -> int``; heavy imports (datasets, torch,
vLLM) happen inside ``run``, so ``xl-suite --help`` and ``xl-suite <command> --help`` stay fast.

Exit codes: 0 done; 2 a problem the user can fix (any :class:`~xl_suite.errors.XlSuiteError`, and argparse's own
errors), printed as one line ``xl-suite <command>: error: ...``; 3 the run wrote everything but too many rows failed
(:class:`~xl_suite.errors.FailureRateError`, ``--max-error-rate``); 130 interrupted (Ctrl-C), with one line saying
where the finished chunks are. Any other exception is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
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
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
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
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # vLLM's start-up chatter hides our progress bars and summaries; -v shows it
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    from xl_suite.errors import XlSuiteError

    try:
        if getattr(args, "config_file", None):
            from xl_suite.configuration import apply_config_file

            sub_argv = argv[argv.index(args.command) + 1 :]
            namespace = apply_config_file(args._parser, sub_argv, args.config_file)
            for key, value in vars(namespace).items():
                setattr(args, key, value)
        return int(args._run(args) or 0)
    except XlSuiteError as e:  # a problem the user can fix: one line that names the fix
        if args.verbose:
            raise
        from xl_suite.safety import scrub_secrets

        message = " ".join(scrub_secrets(str(e)).split())  # one line, even for a parser's multi-line message
        print(f"xl-suite {args.command}: error: {message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"xl-suite {args.command}: interrupted. {_interrupted(args)}", file=sys.stderr)
        return 130
    except Exception:  # anything else is a bug in xl-suite: show it in full
        print(
            f"xl-suite {args.command}: internal error (a bug in xl-suite; please report it with the traceback below):",
            file=sys.stderr,
        )
        raise


if __name__ == "__main__":
    sys.exit(main())
