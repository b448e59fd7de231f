"""The wheel ships the prompt templates, the package data and the dataset card template."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_templates_and_data(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next(tmp_path.glob("xl_suite-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_prompts = {f"xl_suite/prompts/{p.name}" for p in (REPO / "xl_suite" / "prompts").glob("*.jinja")}
    assert shipped_prompts and shipped_prompts <= names
    assert "xl_suite/prompts/README.md" in names
    assert "xl_suite/data/alpaca_eval_exclusions.json" in names
    assert "xl_suite/data/demo_prompts.jsonl" in names
    assert "xl_suite/dataset_cards/xl_suite.md.jinja" in names
    assert any(n.startswith("xl_suite/engines/") for n in names)
    assert any(n.startswith("xl_suite/commands/") for n in names)
    # every subpackage (evaluation and synthesis were missing from the wheel) and the evaluate metric folder
    subpackages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "xl_suite").glob("*/__init__.py")}
    assert {f"{p}/__init__.py" for p in subpackages} <= names
    metric = {
        f"xl_suite/evaluate_metrics/xl_alpacaeval/{f}"
        for f in ("xl_alpacaeval.py", "README.md", "requirements.txt", "app.py")
    }
    assert metric <= names
