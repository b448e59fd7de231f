"""A synthesized config pushed to the Hub stand-in keeps typed provenance, carries its recipe, has a default config,
and holds no private string: no local path, user name, host name, token or key in any stored file."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hub_server import serve_hub

from xl_suite.prompting import load_template


REPO_ROOT = Path(__file__).resolve().parents[2]
USER = "zelda_quixote_7"
HF_SECRET = "hf_ProvenanceSecretToken0123456789abcdef"
KEY_SECRET = "sk-provenanceFakeKey0123456789abcdef"

pytestmark = [pytest.mark.slow, pytest.mark.data]


def _env(url: str, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "XL_SUITE_"))}
    env.update(
        HOME=str(home),
        USER=USER,
        LOGNAME=USER,
        HF_ENDPOINT=url,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(home / ".cache" / "hf"),
        HF_TOKEN=HF_SECRET,
        OPENAI_API_KEY=KEY_SECRET,
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p),
        OMP_NUM_THREADS="1",
        XL_SUITE_LANGUAGES_FILE=str(home / "languages.json"),
    )
    return env


def _run(env, *args, cwd):
    r = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def _stored_texts(server, repo: str) -> dict[str, str]:
    """Every file of the repo as text (Parquet rows and schema decoded), plus every raw file the stand-in stores."""
    out = {}
    for path in server.tree(repo):
        data = server.read(repo, path)
        if path.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(data))
            meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
            out[path] = json.dumps(table.to_pylist(), ensure_ascii=False, default=str) + json.dumps(meta)
        else:
            out[path] = data.decode("utf-8")
    for f in server.repo_dir(repo).rglob("*"):  # blobs, LFS objects, commits (messages), refs
        if f.is_file():
            out[f"<stored>/{f.relative_to(server.repo_dir(repo))}"] = f.read_bytes().decode("latin-1")
    return out


def test_pushed_synthesis_has_typed_provenance_recipe_default_and_nothing_private(alpaca_eval_path, tmp_path):
    home = tmp_path / "home" / USER
    (home / "templates").mkdir(parents=True)
    refine = home / "templates" / "refine.jinja"
    refine.write_text(load_template("synth_refine").source + "\nAnswer precisely.\n", encoding="utf-8")
    bench = home / "bench.jsonl"
    bench.write_text(json.dumps({"instruction": "Tell me about the history of the Danube river please"}) + "\n")
    (home / "data").mkdir()
    alpaca = home / "data" / "alpaca_eval.json"
    shutil.copy(alpaca_eval_path, alpaca)
    out = home / "runs" / "out"

    with serve_hub(tmp_path / "hub") as (url, server):
        env = _env(url, home)
        stdout = _run(
            env,
            "-m",
            "xl_suite.cli",
            "synthesize",
            "--backend",
            "fake",
            "--model",
            "fake-model",
            "--languages",
            "mt,de",
            "--max-seeds",
            "6",
            "--output",
            str(out),
            "--template",
            f"refine={refine}",
            "--decontaminate-against",
            str(bench),
            "--push",
            "me/xl",
            "--no-progress",
            cwd=home,
        )
        assert "xl-instruct-de: pushed to me/xl" in stdout
        _run(
            env,
            "-m",
            "xl_suite.cli",
            "push",
            "me/xl",
            "--config",
            "xl-alpacaeval-de",
            "--source",
            str(alpaca),
            cwd=home,
        )

        # -- nothing private anywhere in the stored repo ------------------------------------------------------
        texts = _stored_texts(server, "me/xl")
        assert any(p.startswith("recipes/xl-instruct-mt/") for p in texts)
        needles = {
            "home": str(home),
            "tmp": str(tmp_path),
            "user": USER,
            "hf token": HF_SECRET,
            "key": KEY_SECRET,
            "template path": str(refine),
        }
        for path, text in texts.items():
            for what, needle in needles.items():
                assert needle not in text, f"{what} ({needle}) found in {path}"
            host = socket.gethostname()
            if len(host) >= 3:  # a 1-2 letter host name ("vm") is not identifying and matches ordinary text
                assert not re.search(rf"(?<![\w]){re.escape(host)}(?![\w])", text), f"host name in {path}"

        # -- the card: recipe, filter counts, default config --------------------------------------------------
        card = texts["README.md"]
        assert "xl-suite synthesize --config-file recipes/xl-instruct-mt/config.yaml" in card
        assert "default: true" in card and "Recipe of `xl-instruct-de`" in card
        assert "near-duplicates removed" in card and "Decontamination:" in card and "| decontaminate | - |" in card
        assert "| respond | `fake-model` | `synth_respond@" in card
        assert "local file alpaca_eval.json" in card and "`<local>/templates/refine.jinja@" in card
        summary_src = json.loads((out / "summary.json").read_text())
        refine_version = next(s for s in summary_src["stages"] if s["stage"] == "refine")["template"]
        assert refine_version.startswith(str(refine))  # the local summary keeps the path; the pushed one does not
        pushed_summary = json.loads(texts["recipes/xl-instruct-mt/summary.json"])
        assert (
            pushed_summary["decontamination"]["prompts"] == 1 + 24
            and pushed_summary["config"]["decontaminate_against"]
        )
        recipe = texts["recipes/xl-instruct-mt/config.yaml"]
        assert "Note: The run was decontaminated against local benchmark files" in recipe

        # -- plain datasets: the default config, typed provenance ---------------------------------------------
        script = (
            "import json, datasets\n"
            "d = datasets.load_dataset('me/xl', split='train')\n"  # no config name: the default
            "x = datasets.load_dataset('me/xl', 'xl-instruct-mt', split='train')\n"
            "f = x.features['provenance']\n"
            "row = x[0]\n"
            "print('RESULT ' + json.dumps({'default_rows': d.num_rows, 'default_cols': d.column_names,\n"
            "  'model_type': f['model'].dtype, 'temp_type': f['sampling']['temperature'].dtype,\n"
            "  'stage_type': type(f['stages']).__name__, 'row': row['provenance'], 'origin': row['origin']}))\n"
        )
        res = json.loads(
            next(line for line in _run(env, "-c", script, cwd=home).splitlines() if line.startswith("RESULT "))[7:]
        )
        default = re.search(r"- config_name: (\S+)\n(?:  .*\n)*?  default: true", card).group(1)
        assert default == "xl-instruct-mt" and res["default_rows"] > 0 and "provenance" in res["default_cols"]
        assert res["model_type"] == "string" and res["temp_type"] == "float64" and res["stage_type"] == "List"
        prov = res["row"]
        assert prov["model"] == "fake-model" and prov["sampling"]["n"] == 3 and res["origin"] == "xl-suite synthesize"
        stages = {s["stage"]: s for s in prov["stages"]}
        assert stages["refine"]["template_version"].startswith("<local>/templates/refine.jinja@")
        assert stages["score"]["sampling"]["temperature"] == 0.0 and stages["score"]["raw_completions"]
        assert all(isinstance(s["score"], int) for s in prov["english_scores"])

        # -- the recipe reruns with the command the card shows ------------------------------------------------
        rerun = tmp_path / "rerun"
        for path, text in texts.items():
            if path.startswith("recipes/xl-instruct-mt/"):
                (rerun / path).parent.mkdir(parents=True, exist_ok=True)
                (rerun / path).write_text(text, encoding="utf-8")
        _run(
            env,
            "-m",
            "xl_suite.cli",
            "synthesize",
            "--config-file",
            "recipes/xl-instruct-mt/config.yaml",
            "--no-progress",
            cwd=rerun,
        )
        again = json.loads((rerun / "xl-instruct-mt-rerun" / "summary.json").read_text())
        skip = ("templates", "decontaminate_against")
        assert {k: v for k, v in again["config"].items() if k not in skip} == {
            k: v for k, v in summary_src["config"].items() if k not in skip
        }
        versions = {s["stage"]: (s["template"] or "").rpartition("+")[2] for s in again["stages"]}
        assert versions == {s["stage"]: (s["template"] or "").rpartition("+")[2] for s in summary_src["stages"]}
        assert again["languages"] == summary_src["languages"]


def test_recipe_config_loads_into_the_same_settings(tmp_path):
    """The recipe's config.yaml, read as ``xl-suite synthesize --config-file`` reads it, gives the run's config."""
    import argparse

    from xl_suite.commands import synthesize as cmd
    from xl_suite.configuration import apply_config_file
    from xl_suite.engines.fake import FakeGenerator, FakeSynthesisResponder
    from xl_suite.provenance import build_recipe
    from xl_suite.synthesis import SynthesisConfig, synthesize
    from xl_suite.synthesis.seeds import builtin_seeds

    config = SynthesisConfig(
        languages=("mt",), criteria={"clarity": "is clear"}, threshold=3.0, n_candidates=2, near_dedup_threshold=0.9
    )
    synthesize(
        builtin_seeds().select(range(3)),
        FakeGenerator(FakeSynthesisResponder()),
        config,
        output=str(tmp_path / "o"),
        seed_source="builtin",
    )
    files, card = build_recipe("xl-instruct-mt", str(tmp_path / "o"))
    assert sorted(files) == [
        "recipes/xl-instruct-mt/config.yaml",
        "recipes/xl-instruct-mt/summary.json",
        *[
            f"recipes/xl-instruct-mt/templates/{s}.jinja"
            for s in ("backtranslate", "judge", "refine", "respond", "score")
        ],
    ]
    for path, data in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    p = cmd.add_parser(sub)
    args = apply_config_file(p, [], str(tmp_path / "recipes/xl-instruct-mt/config.yaml"))
    loaded = cmd.config_from_args(args)
    assert (args.backend, args.model, args.seeds) == ("fake", "fake-model", "builtin")
    expected = {k: v for k, v in config.to_dict().items() if k != "templates"}
    assert {k: v for k, v in loaded.to_dict().items() if k != "templates"} == expected
    assert loaded.templates["score"] == "recipes/xl-instruct-mt/templates/score.jinja"
    assert card["command"] == "xl-suite synthesize --config-file recipes/xl-instruct-mt/config.yaml"


def test_push_from_an_export_carries_the_recipe(alpaca_eval_path, tmp_path):
    home = tmp_path / "home" / USER
    home.mkdir(parents=True)
    out, export = home / "out", home / "export"
    with serve_hub(tmp_path / "hub") as (url, server):
        env = _env(url, home)
        base = ["-m", "xl_suite.cli"]
        _run(
            env,
            *base,
            "synthesize",
            "--backend",
            "fake",
            "--model",
            "fake-model",
            "--languages",
            "mt",
            "--max-seeds",
            "4",
            "--output",
            str(out),
            "--no-progress",
            cwd=home,
        )
        _run(
            env,
            *base,
            "export",
            str(export),
            "--languages",
            "mt",
            "--alpaca-eval",
            str(alpaca_eval_path),
            "--xl-instruct",
            str(out),
            cwd=home,
        )
        assert (export / "recipes" / "xl-instruct-mt" / "config.yaml").is_file()
        _run(env, *base, "push", "me/xl-export", "--config", "xl-instruct-mt", "--from-dir", str(export), cwd=home)
        texts = _stored_texts(server, "me/xl-export")
        assert (
            "recipes/xl-instruct-mt/config.yaml" in texts and "recipes/xl-instruct-mt/templates/judge.jinja" in texts
        )
        assert "xl-suite synthesize --config-file recipes/xl-instruct-mt/config.yaml" in texts["README.md"]
        for path, text in texts.items():
            assert str(home) not in text and USER not in text and HF_SECRET not in text, path
