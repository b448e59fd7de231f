"""Shared fixtures: isolated HF caches, the third-party AlpacaEval data, the tiny model and one vLLM engine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


# tests/ is not a package: the plugin is importable by module name under pytest's default import mode.
pytest_plugins = ["engine_fixtures"]

REPO_ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "data"


def shared_data_dir() -> Path:
    return Path(os.environ.get("XL_SUITE_SHARED_DATA", _DEFAULT_SHARED))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The third-party test data (../shared/data). Skips when absent, fails when CI requires it."""
    root = shared_data_dir()
    if not (root / "alpaca_eval" / "gpt-4o-mini-2024-07-18_outputs.json").is_file():
        msg = f"third-party test data not found at {root} (set XL_SUITE_SHARED_DATA); see tests/README.md"
        if os.environ.get("XL_SUITE_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def alpaca_eval_path(shared_data) -> Path:
    """AlpacaEval's 805 prompts with GPT-4o-mini's English outputs."""
    return shared_data / "alpaca_eval" / "gpt-4o-mini-2024-07-18_outputs.json"


@pytest.fixture(autouse=True)
def _isolated_hf(tmp_path_factory, monkeypatch):
    """Every test gets its own HF caches, offline mode and no progress bars (datasets' conftest)."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("XL_SUITE_LANGUAGES_FILE", str(home / "languages.json"))
    monkeypatch.setenv("XL_SUITE_CACHE", str(home / "xl_suite_cache"))
    try:
        import datasets

        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
        datasets.disable_progress_bars()
    except ImportError:
        pass
    yield
