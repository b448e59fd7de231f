"""`xl-suite push`: one config at a time to a Hub stand-in over real HTTP, card regenerated from the data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import serve_hub


REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "hf_PublishSecretToken_0123456789abcdef"

pytestmark = [pytest.mark.slow, pytest.mark.data]


def _env(url: str, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "XL_SUITE_"))}
    env.update(
        HF_ENDPOINT=url,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(home / "hf"),
        HF_TOKEN=SECRET,
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(REPO_ROOT),
        XL_SUITE_LANGUAGES_FILE=str(home / "languages.json"),
    )
    return env


def _cli(env, *args, cwd):
    r = subprocess.run(
        [sys.executable, "-m", "xl_suite.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180
    )
    return r


def test_push_new_language_configs_then_load(alpaca_eval_path, tmp_path):
    with serve_hub(tmp_path / "hub") as (url, server):
        env = _env(url, tmp_path)
        # a language the paper does not have, added from the CLI
        r = _cli(
            env,
            "languages",
            "add",
            "gsw",
            "--name",
            "swiss german",
            "--native-name",
            "Schwiizertüütsch",
            "--script",
            "Latn",
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
        r = _cli(
            env,
            "export",
            str(tmp_path / "xl-suite"),
            "--languages",
            "de,gsw",
            "--alpaca-eval",
            str(alpaca_eval_path),
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
        logs = []
        for config in ("xl-alpacaeval-de", "xl-alpacaeval-gsw"):
            r = _cli(
                env,
                "-v",
                "push",
                "me/xl-suite",
                "--config",
                config,
                "--from-dir",
                str(tmp_path / "xl-suite"),
                cwd=tmp_path,
            )
            logs.append(r.stdout + r.stderr)
            assert r.returncode == 0, r.stderr
        # the ga config built straight from the source, replacing nothing else
        r = _cli(
            env, "push", "me/xl-suite", "--config", "xl-alpacaeval-ga", "--source", str(alpaca_eval_path), cwd=tmp_path
        )
        assert r.returncode == 0, r.stderr
        logs.append(r.stdout + r.stderr)

        script = (
            "import json, datasets\n"
            "out = {c: datasets.load_dataset('me/xl-suite', c, split='test').num_rows "
            "for c in ('xl-alpacaeval-de', 'xl-alpacaeval-gsw', 'xl-alpacaeval-ga')}\n"
            "row = datasets.load_dataset('me/xl-suite', 'xl-alpacaeval-gsw', split='test')[0]\n"
            "print('RESULT ' + json.dumps({'rows': out, 'gsw': row['instruction']}))\n"
        )
        r = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
        )
        assert r.returncode == 0, r.stderr[-3000:]
        res = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("RESULT "))[7:])
        assert res["rows"] == {"xl-alpacaeval-de": 797, "xl-alpacaeval-gsw": 797, "xl-alpacaeval-ga": 797}
        assert res["gsw"].endswith("Please respond in Swiss German.")

        card = server.read("me/xl-suite", "README.md").decode()
        for config in ("xl-alpacaeval-de", "xl-alpacaeval-gsw", "xl-alpacaeval-ga"):
            assert f"| `{config}` | test | 797 |" in card
        assert "| gsw | Swiss German | Schwiizertüütsch | Latn | Please respond in Swiss German. |" in card
        assert "config_name: xl-alpacaeval-gsw" in card  # push_to_hub's configs YAML kept
        assert "Come up with words that rhyme" in card and "cc-by-nc-4.0" in card
        assert SECRET not in card
        assert all(SECRET not in log for log in logs)


def test_push_offline_is_one_clear_error(tmp_path):
    env = _env("http://127.0.0.1:9", tmp_path)
    env["HF_HUB_OFFLINE"] = "1"
    r = _cli(env, "push", "me/x", "--config", "xl-alpacaeval-de", "--source", "/nonexistent.json", cwd=tmp_path)
    assert r.returncode == 2
    assert "HF_HUB_OFFLINE" in r.stderr and "Traceback" not in r.stderr
