"""A cached rerun starts no engine; a missing local model is an error naming the folder."""

from __future__ import annotations

import pytest

from xl_suite.engines import resolve_model
from xl_suite.engines.fake import FakeGenerator, FakeSynthesisResponder
from xl_suite.engines.lazy import LazyGenerator
from xl_suite.engines.spec import EngineSpec
from xl_suite.errors import InvalidArgumentError


class Starts:
    """A factory that counts engine starts."""

    def __init__(self, model="m"):
        self.count = 0
        self.model = model

    def __call__(self):
        self.count += 1
        return FakeGenerator(FakeSynthesisResponder(), model=self.model)


def test_fingerprint_is_remembered_and_no_prompt_starts_nothing(tmp_path):
    spec = EngineSpec(model="m", backend="fake")
    first = LazyGenerator(spec, factory=(starts := Starts()), memo_path=tmp_path / "memo.json")
    assert first.generate([], None) == [] and starts.count == 0
    fp = first.fingerprint()  # nothing remembered yet: starts the engine to learn it
    assert starts.count == 1 and fp == FakeGenerator(model="m").fingerprint()
    second = LazyGenerator(spec, factory=(again := Starts()), memo_path=tmp_path / "memo.json")
    assert second.fingerprint() == fp and again.count == 0 and not second.started
    assert second.supports_structured_output() is False and again.count == 0
    other = LazyGenerator(
        EngineSpec(model="m2", backend="fake"), factory=(third := Starts("m2")), memo_path=tmp_path / "memo.json"
    )
    other.fingerprint()
    assert third.count == 1  # another spec is another key


@pytest.mark.parametrize("edit", ["value", "old format", "moved entry"])
def test_an_edited_fingerprint_memo_is_not_used(tmp_path, caplog, edit):
    import json
    import logging

    memo = tmp_path / "memo.json"
    spec, other = EngineSpec(model="m", backend="fake"), EngineSpec(model="m2", backend="fake")
    fp = LazyGenerator(spec, factory=Starts(), memo_path=memo).fingerprint()
    other_fp = LazyGenerator(other, factory=Starts("m2"), memo_path=memo).fingerprint()
    data = json.loads(memo.read_text())
    key = LazyGenerator(spec, memo_path=memo)._key()
    other_key = LazyGenerator(other, memo_path=memo)._key()
    if edit == "value":  # another model's fingerprint under this spec: its cached answers would be served
        data[key]["fingerprint"] = other_fp
    elif edit == "old format":
        data[key] = other_fp
    else:
        data[key] = data[other_key]
    memo.write_text(json.dumps(data))
    again = LazyGenerator(spec, factory=(starts := Starts()), memo_path=memo)
    with caplog.at_level(logging.WARNING):
        assert again.fingerprint() == fp
    assert starts.count == 1 and "does not verify" in caplog.text


def test_local_model_change_starts_the_engine_again(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    spec = EngineSpec(model=str(model), backend="vllm")
    LazyGenerator(spec, factory=Starts(), memo_path=tmp_path / "memo.json").fingerprint()
    same = LazyGenerator(spec, factory=(starts := Starts()), memo_path=tmp_path / "memo.json")
    same.fingerprint()
    assert starts.count == 0
    (model / "config.json").write_text('{"changed": 1}')
    changed = LazyGenerator(spec, factory=(starts := Starts()), memo_path=tmp_path / "memo.json")
    changed.fingerprint()
    assert starts.count == 1


def test_cached_synthesize_rerun_starts_no_engine(tmp_path, capsys, monkeypatch):
    import xl_suite.commands.synthesize as cmd
    from xl_suite.cli import main

    starts = []
    real = cmd._engine
    monkeypatch.setattr(cmd, "_engine", lambda spec: starts.append(spec) or real(spec))
    argv = [
        "synthesize",
        "--backend",
        "fake",
        "--model",
        "f",
        "--languages",
        "mt",
        "--output",
        str(tmp_path / "o"),
        "--max-seeds",
        "6",
        "--no-progress",
        "--no-language-filter",
    ]
    assert main(argv) == 0
    assert len(starts) == 1
    assert main(argv) == 0, capsys.readouterr().err
    assert len(starts) == 1  # every chunk cached: the rerun started no engine
    assert "generated this run: 0 prompts" in capsys.readouterr().out


def test_missing_local_model_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(InvalidArgumentError, match="the folder 'models' is here but holds no 'tiny'"):
        resolve_model("models/tiny")


def test_offline_hub_id_not_in_cache_fails_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InvalidArgumentError, match="offline mode is on"):
        resolve_model("nobody/no-such-model-xyz")
