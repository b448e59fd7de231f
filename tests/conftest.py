"""Shared fixtures: isolated HF caches, the third-party AlpacaEval data, the tiny model and one vLLM engine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


# tests/ and its folders are not packages: under pytest's default import mode this folder is on sys.path, so the
# plugin (and hub_server) import by module name from every folder; test file names must be unique across folders.
pytest_plugins = ["process_guard", "engine_fixtures", "xdist_groups", "pytester"]

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
def _isolated_hf(_process_state_guard, tmp_path_factory, monkeypatch):
    """Every test gets its own HF caches, offline mode and no progress bars (datasets' conftest).

    Set up after the process-state guard (``tests/process_guard.py``) and undone before it compares: the progress
    bars are put back as they were, and a test after which they are on fails (only the caller may flip datasets'
    global switch; the library passes ``disable=`` per bar).
    """
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("XL_SUITE_LANGUAGES_FILE", str(home / "languages.json"))
    monkeypatch.setenv("XL_SUITE_CACHE", str(home / "xl_suite_cache"))
    try:
        import datasets
    except ImportError:
        yield
        return
    import process_guard  # the plugin module (loaded by pytest_plugins above)

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    bars = process_guard.progress_bars_enabled()
    datasets.disable_progress_bars()
    yield
    turned_on = process_guard.progress_bars_enabled()
    if bars:
        datasets.enable_progress_bars()
    if turned_on and process_guard.CHECK_PROGRESS_BARS:
        pytest.fail(
            "datasets' progress bars were turned on during this test: xl-suite must not call "
            "datasets.enable_progress_bars()/disable_progress_bars() (pass disable= per bar instead).",
            pytrace=False,
        )


@pytest.fixture
def gsw():
    """Swiss German registered for this process; ``redefine(native=..., request=...)`` replaces its definition (as
    ``xl-suite languages add gsw ... --overwrite`` does); unregistered afterwards."""
    import xl_suite.languages as L

    def redefine(native="Schwiizertüütsch", request="Bitte antworte auf Schweizerdeutsch."):
        spec = L.LanguageSpec(
            code="gsw", name="swiss german", native_name=native, script="Latn", request=request, langid_code="de"
        )
        return L.register_language(spec, overwrite=True)

    redefine()
    yield redefine
    L.unregister_language("gsw")
