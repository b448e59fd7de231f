"""`xl-suite finetune`: every setting checked before synthesis, the one output rule, and a finished recipe that
reruns without training or starting an engine (student on transformers, teacher and judge the fake engine)."""

import json

import pytest

from xl_suite.errors import InvalidArgumentError
from xl_suite.training.finetune import FinetuneConfig, check_lora_targets


pytest.importorskip("trl")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("learning_rate", 0, "learning_rate (--learning-rate) must be a number in (0, 1]"),
        ("learning_rate", float("nan"), "learning_rate"),
        ("lora_r", 0, "lora_r (--lora-r) must be an integer >= 1"),
        ("lora_r", 1.5, "lora_r"),
        ("lora_dropout", 1.0, "lora_dropout (--lora-dropout) must be in [0, 1)"),
        ("lora_target_modules", "q_proj,,v_proj", "comma-separated list of module names"),
        ("gradient_accumulation_steps", 0, "gradient_accumulation_steps"),
    ],
)
def test_training_settings_are_checked_when_the_config_is_made(tmp_path, field, value, message):
    """Old code: these reached TRL/PEFT only after synthesis, as raw ValueErrors."""
    with pytest.raises(
        InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        FinetuneConfig(output_dir=str(tmp_path / "ft"), **{field: value})


def test_lora_targets_are_checked_against_the_model_before_any_work():
    check_lora_targets(None, "q_proj,v_proj")
    check_lora_targets(None, "all-linear")
    with pytest.raises(InvalidArgumentError, match=r"\['attn'\] name no linear layer of 'the tiny stand-in'"):
        check_lora_targets(None, "q_proj,attn")


def _argv(out, *extra):
    return [
        "finetune", "--output-dir", out, "--backend", "transformers", "--teacher-backend", "fake",
        "--teacher-model", "t", "--max-steps", "2", "--eval-steps", "2", "--num-examples", "4", "--num-prompts", "2",
        "--metric-prompts", "2", "--max-tokens", "16", *extra,
    ]  # fmt: skip


def _cli(argv, capsys):
    from xl_suite.cli import main

    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.slow
def test_a_finished_recipe_reruns_without_training_or_engines(tmp_path, capsys):
    out = tmp_path / "ft"
    rc, stdout, err = _cli(_argv(out), capsys)
    assert rc == 0, err
    assert "engines started:" in stdout
    first = json.loads((out / "finetune_summary.json").read_text())
    rc, stdout, err = _cli(_argv(out), capsys)
    assert rc == 0, err
    assert "reused the finished training" in stdout and "no engine started: everything was cached" in stdout
    again = json.loads((out / "finetune_summary.json").read_text())
    assert again["training"]["losses"] == first["training"]["losses"] and again["after"] == first["after"]
    rc, _, err = _cli(_argv(out, "--max-steps", "3"), capsys)
    assert rc == 2 and "max_steps 2 then, 3 now" in err and "--overwrite" in err


def test_each_answer_is_judged_against_its_own_languages_reference_and_failed_rows_are_left_out(tmp_path):
    """A prompt has the same id in every language: references were looked up by id alone, so with two languages one
    language's answers were judged against the other's references. Failed answers/references are not judged."""
    from types import SimpleNamespace

    import datasets

    from xl_suite.engines.fake import FakeGenerator
    from xl_suite.training.finetune import _judge

    answers = datasets.Dataset.from_dict(
        {
            "id": ["a", "a", "b", "b"],
            "language": ["de", "mt", "de", "mt"],
            "instruction": ["Q? de", "Q? mt", "Q2? de", "Q2? mt"],
            "output": ["Antwort", "Tweġiba", "", "Tweġiba 2"],
            "output_status": ["ok", "ok", "error", "ok"],
        }
    )
    with_refs = datasets.Dataset.from_dict(
        {
            "id": ["a", "b", "a", "b"],
            "language": ["de", "de", "mt", "mt"],
            "reference": ["Referenz a", "Referenz b", "Referenza a", ""],
            "reference_status": ["ok", "ok", "ok", "empty"],
        }
    )
    cfg = SimpleNamespace(judge_preset=None)
    result, _ = _judge(
        cfg, "before", answers, with_refs, FakeGenerator(reply='{"winner": "A"}'), None, tmp_path, model_label="x"
    )
    got = {(x["id"], x["language"]): x["references"] for x in result.inputs}
    assert got == {("a", "de"): ["Referenz a"], ("a", "mt"): ["Referenza a"]}


def test_finetune_dry_run_starts_nothing_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a dry run needs no key
    out = tmp_path / "ft"
    argv = [
        "finetune",
        "--output-dir",
        out,
        "--teacher-backend",
        "openai",
        "--teacher-model",
        "gpt-4o-mini-2024-07-18",
    ]
    argv += ["--judge-preset", "gpt-4o", "--num-examples", "100", "--dry-run", "--tokens-per-second", "1000"]
    rc, stdout, err = _cli(argv, capsys)
    assert rc == 0, err
    assert "synthesis respond (gpt-4o-mini-2024-07-18): 80 requests" in stdout
    assert "answers after (tiny stand-in)" in stdout and "pairwise judge (after) (gpt-4o-2024-08-06)" in stdout
    assert "total: " in stdout and "training: 8 steps" in stdout and "note: 40 seed passages for 100 pairs" in stdout
    assert not out.exists()
