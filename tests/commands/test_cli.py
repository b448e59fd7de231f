"""Every subcommand's --help exits 0 without importing heavy engines (TRL's test_help_no_type_error)."""

import subprocess
import sys

import pytest

import xl_suite.commands.push
from xl_suite.cli import COMMANDS, build_parser, main
from xl_suite.errors import HubPushError


SECRET = "hf_SeCrEtDummyToken0123456789abcdefXYZ"


def test_all_commands_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(COMMANDS)


@pytest.mark.slow  # one `xl-suite COMMAND --help` subprocess per command
@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_exits_zero_and_stays_light(command):
    args = ["--help"] if command is None else [command, "--help"]
    code = (
        "import sys; from xl_suite.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    rc = e.code\n"
        "heavy = [m for m in ('vllm', 'torch', 'transformers', 'ray', 'trl', 'peft') if m in sys.modules]\n"
        "print('HEAVY', heavy); sys.exit(rc)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage: xl-suite" in r.stdout
    assert "HEAVY []" in r.stdout


@pytest.mark.slow  # `xl-suite languages` subprocesses
def test_languages_add_and_list(tmp_path):
    import os

    env = dict(os.environ, XL_SUITE_LANGUAGES_FILE=str(tmp_path / "l.json"))
    base = [sys.executable, "-m", "xl_suite.cli", "languages"]
    r = subprocess.run(
        base + ["add", "gsw", "--name", "swiss german", "--native-name", "Schwiizertüütsch", "--script", "Latn"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    r = subprocess.run(base + ["list"], capture_output=True, text=True, env=env, timeout=60)
    assert "gsw      Swiss German" in r.stdout
    r = subprocess.run(
        base + ["add", "gsw", "--name", "swiss german", "--native-name", "K", "--script", "Latn"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 2 and "already exists" in r.stderr


def test_verbosity_flags_and_vllm_log_level_last_only_as_long_as_the_command(monkeypatch, capsys):
    """-v/-q set the xl_suite loggers through xl_suite.utils.logging; VLLM_LOGGING_LEVEL exists only during the run."""
    import logging
    import os

    from xl_suite import cli
    from xl_suite.commands import languages
    from xl_suite.utils import logging as xl_logging

    seen = []

    def fake_run(args):
        seen.append((os.environ.get("VLLM_LOGGING_LEVEL"), xl_logging.get_verbosity()))
        logging.getLogger("xl_suite.commands.languages").info("an info line")
        return 0

    monkeypatch.setattr(languages, "run", fake_run)
    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    root = logging.getLogger()
    before = (root.level, list(root.handlers), xl_logging.get_verbosity(), logging.getLogger("xl_suite").propagate)
    assert cli.main(["languages"]) == 0
    assert cli.main(["-q", "languages"]) == 0
    assert cli.main(["-v", "languages"]) == 0
    assert cli.main(["-vv", "languages"]) == 0
    assert seen == [("ERROR", logging.WARNING), ("ERROR", logging.ERROR), (None, logging.INFO), (None, logging.DEBUG)]
    assert "VLLM_LOGGING_LEVEL" not in os.environ  # not left behind, never set with -v
    after = (root.level, list(root.handlers), xl_logging.get_verbosity(), logging.getLogger("xl_suite").propagate)
    assert after == before  # the root logger untouched, the library logger put back

    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")  # the user's own choice is kept
    seen.clear()
    assert cli.main(["languages"]) == 0
    assert seen[0][0] == "DEBUG" and os.environ["VLLM_LOGGING_LEVEL"] == "DEBUG"


# -- secrets never reach the terminal, at any verbosity (issue 20: `xl-suite -v push` printed the Hub token) --


def _raises(error):
    def run(args):
        try:
            raise RuntimeError(f"401 Unauthorized (credentials sent: Bearer {SECRET})")
        except RuntimeError as cause:
            raise error from cause

    return run


@pytest.mark.parametrize("verbosity", [[], ["-v"], ["-vv"]])
def test_a_chained_error_quoting_the_token_is_scrubbed_at_every_verbosity(verbosity, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(xl_suite.commands.push, "run", _raises(HubPushError("Pushing failed (HTTP 401).")))
    rc = main([*verbosity, "push", "me/x", "--config", "xl-alpacaeval-de"])
    err = capsys.readouterr().err
    assert rc == 2 and SECRET not in err and err.rstrip().endswith("xl-suite push: error: Pushing failed (HTTP 401).")
    if verbosity:  # the traceback, causes included, scrubbed
        assert "Traceback" in err and "credentials sent: Bearer ***" in err
    else:
        assert err.count("\n") == 1


def test_an_internal_error_shows_its_traceback_scrubbed(monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(xl_suite.commands.push, "run", _raises(KeyError("a bug")))
    rc = main(["push", "me/x", "--config", "xl-alpacaeval-de"])
    err = capsys.readouterr().err
    assert rc == 1 and "internal error (a bug in xl-suite" in err and "KeyError: 'a bug'" in err
    assert SECRET not in err and "Bearer ***" in err
