"""``xl-suite finetune``: the paper's synthesize -> fine-tune (TRL) -> evaluate loop. Config checks run fast; the
whole recipe runs end to end on the tiny model (vLLM teacher and judge, transformers student, LoRA, a few steps)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_fixtures import require_vllm

from xl_suite.errors import InvalidArgumentError, MissingDependencyError
from xl_suite.training.finetune import FinetuneConfig, run_finetune, to_messages


REPO_ROOT = Path(__file__).resolve().parents[2]


def test_config_checks_name_the_bad_value():
    with pytest.raises(InvalidArgumentError, match=r"num_prompts \(--num-prompts\) must be an integer >= 1, got 0"):
        FinetuneConfig(num_prompts=0)
    with pytest.raises(InvalidArgumentError, match="held_out must be >= 1"):
        FinetuneConfig(held_out=0)
    with pytest.raises(ValueError, match="xx"):
        FinetuneConfig(languages="de,xx")
    assert FinetuneConfig(languages="mt,de").language_codes == ["mt", "de"]


def test_training_rows_ask_for_the_target_language_like_the_benchmark():
    msgs = to_messages("Name a river.", "Der Rhein.", "de")
    assert msgs == [
        {"role": "user", "content": "Name a river.\n\nPlease respond in German."},
        {"role": "assistant", "content": "Der Rhein."},
    ]


def test_judge_flags_without_a_judge_model_are_an_error(tmp_path):
    from xl_suite.engines.spec import EngineSpec

    with pytest.raises(InvalidArgumentError, match="--judge-backend.* need --judge-model"):
        run_finetune(FinetuneConfig(output_dir=str(tmp_path)), judge=EngineSpec(backend="openai"))


def test_missing_trl_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "trl", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'xl-suite\[train\]'"):
        run_finetune(FinetuneConfig(output_dir=str(tmp_path)))


def test_importing_the_training_modules_imports_no_trl_or_torch():
    code = (
        "import sys, xl_suite.training, xl_suite.training.judge, xl_suite.training.callbacks, "
        "xl_suite.training.finetune, xl_suite.commands.finetune\n"
        "print([m for m in ('trl', 'peft', 'torch', 'transformers', 'vllm') if m in sys.modules])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_unknown_config_file_key_is_an_error(tmp_path):
    cfg = tmp_path / "ft.yaml"
    cfg.write_text("max_steps: 2\nmax_stepz: 3\n", encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "xl_suite.cli", "finetune", "--config-file", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "unknown keys ['max_stepz']" in r.stderr


@pytest.mark.slow
@pytest.mark.vllm
@require_vllm
def test_finetune_recipe_end_to_end_on_the_tiny_model(tmp_path):
    """The CLI command a GPU user runs with --model, here on the stand-in: synthesize, LoRA SFT, judge before/after."""
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    config = tmp_path / "finetune.yaml"
    config.write_text(
        "num_examples: 4\nnum_prompts: 3\nmax_steps: 4\neval_steps: 2\nmetric_prompts: 3\nmax_tokens: 128\n"
        "lora: true\nclose_engines_for_training: false\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("XL_SUITE_")}
    env.update(
        OMP_NUM_THREADS="1",
        VLLM_CPU_KVCACHE_SPACE="1",
        TRL_EXPERIMENTAL_SILENCE="1",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
        HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"),
        XL_SUITE_LANGUAGES_FILE=str(tmp_path / "languages.json"),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    cmd = [
        sys.executable,
        "-m",
        "xl_suite.cli",
        "finetune",
        "--config-file",
        str(config),
        "--output-dir",
        "ft",
        "--backend",
        "transformers",  # the student: transformers loads in a second; the teacher/judge needs vLLM's JSON schemas
        "--teacher-backend",
        "vllm",
        "--teacher-engine-kwargs",
        '{"enforce_eager": true}',
    ]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    for step in range(1, 8):
        assert f"[{step}/7]" in r.stdout
    out = tmp_path / "ft"
    summary = json.loads((out / "finetune_summary.json").read_text(encoding="utf-8"))
    assert summary["stand_in_model"] is True and summary["config"]["lora"] is True
    training = summary["training"]
    assert len(training["losses"]) == 4 and all(math.isfinite(x) for x in training["losses"])
    assert len(training["eval_losses"]) == 2
    # the xl-suite metric ran inside the training loop, at each evaluation
    assert [m["step"] for m in training["metric_logs"]] == [2, 4]
    for m in training["metric_logs"]:
        assert 0.0 <= m["eval_xl_language_fidelity"] <= 100.0 and "eval_xl_line_pass_rate" in m
    assert all(len(a) == 3 for a in training["metric_answers"])
    # the adapter and the merged model are saved, and training changed the weights
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "adapter" / "adapter_config.json").is_file()
    from safetensors.numpy import load_file

    base = load_file(str(out / "tiny-model" / "model.safetensors"))
    tuned = load_file(str(out / "model" / "model.safetensors"))
    assert set(base) == set(tuned)
    assert any(not (base[k] == tuned[k]).all() for k in base)
    # before/after win rates and fidelity, per language and overall, from the judge
    for when in ("before", "after"):
        for lang in ("de", "mt", "overall"):
            row = summary[when][lang]
            assert 0.0 <= row["win_rate"] <= 100.0 and row["parse_rate"] > 0, (when, lang, row)
            assert row["n"] == (6 if lang == "overall" else 3)
        assert (out / f"report-{when}" / "leaderboard.csv").is_file()
    assert "win rate before" in r.stdout and "overall" in r.stdout
