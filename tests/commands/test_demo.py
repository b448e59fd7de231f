"""`xl-suite demo`, the README's main job, end to end on the tiny model through the real vLLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from engine_fixtures import require_vllm


pytestmark = [pytest.mark.slow, pytest.mark.vllm, require_vllm]


def test_demo_runs_the_whole_loop(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("XL_SUITE_")}
    env.update(
        OMP_NUM_THREADS="1",
        VLLM_CPU_KVCACHE_SPACE="1",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
        HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"),
    )
    r = subprocess.run(
        [sys.executable, "-m", "xl_suite.cli", "demo", "--num-prompts", "6", "--num-examples", "4"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    out = r.stdout
    assert "STAND-IN" in out and "project-written SAMPLE prompts" in out  # offline: the labelled sample is used
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in out
    report = tmp_path / "xl-suite-demo" / "report"
    assert (report / "report.md").is_file() and (report / "leaderboard.csv").is_file()
    assert (report / "win_rates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "xl-suite-demo" / "demo_summary.json").read_text())
    assert summary["stand_in_model"] is True and summary["languages"] == ["de", "mt"]
    # the printed Python lines work from the working directory
    code = (
        "import datasets, evaluate\n"
        "ds = datasets.load_dataset('xl-suite', 'xl-alpacaeval-de', split='test')\n"
        "assert ds.num_rows == 6 and all(ds['reference']), ds\n"
        "names = datasets.get_dataset_config_names('xl-suite')\n"
        "print('CONFIGS', sorted(names))\n"
        f"m = evaluate.load({str(_metric_dir())!r}, 'fidelity')\n"
        "print('FIDELITY', m.compute(predictions=['Hallo Welt, wie geht es dir heute?'], languages=['de'])"
        "['language_fidelity'])\n"
    )
    r2 = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "FIDELITY 100.0" in r2.stdout
    configs = next(line for line in r2.stdout.splitlines() if line.startswith("CONFIGS"))
    assert "xl-alpacaeval-mt" in configs
    produced = {code: summary["synthesis"][code]["produced"] for code in ("de", "mt")}
    for code, n in produced.items():  # synthesized pairs are exported exactly when some survived
        assert (f"'xl-instruct-{code}'" in configs) == (n > 0)


def _metric_dir():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "evaluate_metrics" / "xl_alpacaeval"
