"""Engine tier: the tiny local model, served by the real vLLM (the one shared ``vllm_generator``), as model, reference
and judge through ``xl-suite generate`` / ``xl-suite evaluate``; and the metric inside the training-style script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xl_suite.cli import main


REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [
    "Give three tips for staying healthy.",
    "Describe a sunset over the sea.",
    "What is a prime number?",
    "Write a short note to a neighbour.",
    "Why do leaves change colour in autumn?",
    "Name two uses of copper.",
    "How do bees make honey?",
    "Suggest a name for a bakery.",
]


class SharedEngine:
    """The session's engine behind the CLI's ``build_generator``: counts calls, never closes the shared engine."""

    def __init__(self, engine):
        self._engine = engine
        self.prompts_seen = 0

    def generate(self, conversations, sampling):
        self.prompts_seen += len(conversations)
        return self._engine.generate(conversations, sampling)

    def close(self):
        pass  # the fixture owns the engine

    def __getattr__(self, name):
        return getattr(self._engine, name)


@pytest.mark.slow
@pytest.mark.vllm
def test_cli_generate_and_evaluate_with_tiny_model(vllm_generator, tiny_model_dir, tmp_path, monkeypatch, capsys):
    engine = SharedEngine(vllm_generator)
    built = []

    def fake_build(backend, model, *, revision=None, **kwargs):
        assert backend == "vllm"
        built.append(model)
        return engine

    monkeypatch.setattr("xl_suite.engines.registry.build_generator", fake_build)
    source = tmp_path / "alpaca_eval.json"
    source.write_text(
        json.dumps([{"instruction": p, "output": "", "dataset": "helpful_base"} for p in PROMPTS]), encoding="utf-8"
    )
    common = [
        "--model",
        str(tiny_model_dir),  # a real model folder: the command checks it before any engine starts
        "--backend",
        "vllm",
        "--config",
        "xl-alpacaeval-de,xl-alpacaeval-mt",
        "--source",
        str(source),
        "--max-tokens",
        "24",
    ]
    assert main(["generate", *common, "--output", str(tmp_path / "ans")]) == 0
    assert (
        main(
            [
                "generate",
                *common,
                "--output",
                str(tmp_path / "refs"),
                "--as-reference",
                "--temperature",
                "1.0",
                "--seed",
                "7",
            ]
        )
        == 0
    )
    assert engine.prompts_seen == 32

    report = tmp_path / "report"
    args = [
        "evaluate",
        "--model-outputs",
        str(tmp_path / "ans"),
        "--references",
        str(tmp_path / "refs"),
        "--judge-backend",
        "vllm",
        "--judge-model",
        str(tiny_model_dir),  # a real model folder: the command checks it before any engine starts
        "--output",
        str(report),
        "--n-resamples",
        "200",
    ]
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "overall" in printed and "pairwise_judge: 32 judged now" in printed
    for name in ("report.md", "leaderboard.csv", "win_rates.png", "judgments.jsonl", "rubric.jsonl"):
        assert (report / name).is_file(), name
    import matplotlib.image

    assert matplotlib.image.imread(report / "win_rates.png").shape[1] > 300
    summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    assert list(summary["table"]) == ["de", "mt", "overall"]
    overall = summary["table"]["overall"]
    assert overall["n"] == 16 and overall["parse_rate"] == 100.0  # JSON-schema-constrained verdicts always parse
    assert overall["rubric_parse_rate"] == 100.0
    assert 0.0 <= overall["win_rate"] <= 100.0 and overall["ci_low"] <= overall["win_rate"] <= overall["ci_high"]
    judgments = [json.loads(line) for line in (report / "judgments.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(judgments) == 32
    assert {j["preference_source"] for j in judgments} == {"logprobs"}  # soft preferences from the verdict token
    assert all(json.loads(j["judge_sampling"])["json_schema"] is not None for j in judgments)
    assert {j["judge_model"] for j in judgments} == {str(vllm_generator.model)}
    assert summary["meta"]["judge"]["structured_output"] is True

    # A rerun reads every judgment from the annotation cache: zero engine calls.
    seen = engine.prompts_seen
    assert main(args) == 0
    assert engine.prompts_seen == seen
    assert "pairwise_judge: 0 judged now, 32 from cache" in capsys.readouterr().out


@pytest.mark.slow
def test_training_script_uses_the_metric(tiny_model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "examples" / "train_with_metric.py"),
            "--model",
            str(tiny_model_dir),
            "--epochs",
            "2",
            "--judge-backend",
            "fake",
            "--judge-model",
            "fake",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    epochs = [x for x in lines if "epoch" in x]
    assert [x["epoch"] for x in epochs] == [1, 2]
    assert all(0.0 <= x["language_fidelity"] <= 100.0 for x in epochs)
    assert epochs[1]["loss"] < epochs[0]["loss"]
    final = lines[-1]
    assert final["final"] is True and final["parse_rate"] == 0.0  # the fake judge's replies are counted as unparsed
