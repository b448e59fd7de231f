"""One offline check (xl_suite.utils.hub) for every Hub decision: sources, models, pushes (issue 17)."""

import pytest

from xl_suite.engines import resolve_model
from xl_suite.errors import HubOfflineError, InvalidArgumentError, SourceError
from xl_suite.hub import check_online
from xl_suite.sources import read_records
from xl_suite.utils.hub import is_offline_mode, offline_reason


@pytest.mark.parametrize("value", ["1", "yes", "YES", "on", "True", " true "])
@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_every_hub_decision_sees_the_same_offline_mode(monkeypatch, variable, value):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, value)
    assert is_offline_mode() and offline_reason() == f"{variable}={value}"
    with pytest.raises(SourceError, match=f"offline mode is on \\({variable}="):  # no network call is tried
        read_records("hf://datasets/tatsu-lab/alpaca_eval/alpaca_eval.json")
    with pytest.raises(InvalidArgumentError, match=f"offline mode is on \\({variable}="):
        resolve_model("no-such-org/no-such-model-xl")
    with pytest.raises(HubOfflineError, match=f"Unset {variable}"):
        check_online("push")


@pytest.mark.parametrize("value", ["0", "", "no", "false"])
def test_other_values_are_online(monkeypatch, value):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    assert offline_reason() is None and not is_offline_mode()
    assert resolve_model("no-such-org/no-such-model-xl") == ("no-such-org/no-such-model-xl", None)


def test_offline_at_import_time_still_counts(monkeypatch):
    """huggingface_hub read HF_HUB_OFFLINE when imported; unsetting the variable later does not bring it online."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    assert "huggingface_hub was imported with HF_HUB_OFFLINE set" in offline_reason()
    with pytest.raises(HubOfflineError, match="start a new process"):
        check_online("push")
