"""Everything checkable is checked before any engine starts (issue 20): keys, models, and no folder is created."""

import json

import pytest

from xl_suite.cli import main


ALPACA = [{"instruction": f"Explain topic number {k} briefly.", "output": f"Topic {k}."} for k in range(4)]


@pytest.fixture
def alpaca_file(tmp_path):
    path = tmp_path / "alpaca_eval.json"
    path.write_text(json.dumps(ALPACA), encoding="utf-8")
    return path


def _cli(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture
def no_engine(monkeypatch):
    """Fails the test if any engine is built."""
    import xl_suite.engines.registry as registry

    def refuse(*args, **kwargs):
        raise AssertionError(f"an engine was started: {args} {kwargs}")

    monkeypatch.setattr(registry, "build_generator", refuse)


def test_generate_without_an_api_key_fails_before_anything(alpaca_file, tmp_path, capsys, monkeypatch, no_engine):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "refs"
    argv = ["generate", "--backend", "openai", "--model", "gpt-4o-mini-2024-07-18", "--config", "xl-alpacaeval-de"]
    rc, _, err = _cli([*argv, "--source", alpaca_file, "--output", out, "--as-reference"], capsys)
    assert rc == 2 and "No API key for 'gpt-4o-mini-2024-07-18': set the environment variable OPENAI_API_KEY" in err
    assert not out.exists()


def test_evaluate_with_the_gpt_4o_preset_and_no_key(alpaca_file, tmp_path, capsys, monkeypatch):
    for kind in ("ans", "refs"):
        extra = ["--as-reference"] if kind == "refs" else []
        argv = ["generate", "--backend", "fake", "--model", "m", "--config", "xl-alpacaeval-de"]
        assert _cli([*argv, "--source", alpaca_file, "--output", tmp_path / kind, *extra], capsys)[0] == 0
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    import xl_suite.engines.registry as registry

    monkeypatch.setattr(registry, "build_generator", lambda *a, **k: pytest.fail("an engine was started"))
    report = tmp_path / "report"
    argv = ["evaluate", "--model-outputs", tmp_path / "ans", "--references", tmp_path / "refs"]
    rc, _, err = _cli([*argv, "--judge-preset", "gpt-4o", "--output", report], capsys)
    assert rc == 2 and "No API key for 'gpt-4o-2024-08-06'" in err and not report.exists()


def test_a_hub_model_offline_fails_at_once(tmp_path, capsys, no_engine):
    out = tmp_path / "syn"
    argv = ["synthesize", "--model", "Qwen/Qwen2.5-7B-Instruct", "--languages", "mt", "--max-seeds", "4"]
    rc, _, err = _cli([*argv, "--output", out, "--no-progress"], capsys)
    assert rc == 2 and "neither a local folder nor in the Hugging Face cache, and offline mode is on" in err
    assert not out.exists()


def test_an_unreachable_hub_fails_in_one_short_request(monkeypatch):
    """Online but without a network: one request with a short timeout, not the engine's minute of retries."""
    import huggingface_hub

    from xl_suite.engines.spec import EngineSpec
    from xl_suite.errors import InvalidArgumentError

    monkeypatch.setattr("xl_suite.utils.hub.offline_reason", lambda: None)  # online (the one offline check)
    calls = []

    def unreachable(self, repo_id, revision=None, timeout=None, **kw):
        calls.append(timeout)
        raise ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    with pytest.raises(InvalidArgumentError, match="the Hub cannot be reached"):
        EngineSpec(model="org/not-cached-model").check()
    assert calls == [10.0]
