"""xl_suite.hub against a Hub stand-in over real HTTP (tests/hub_server.py).

huggingface_hub and datasets read HF_ENDPOINT, HF_HUB_DISABLE_XET and the offline variables at import time, and
the autouse fixture in conftest.py turns offline mode on; so the client side runs in a fresh interpreter with an
environment built here, while the stand-in runs in a thread of this process and its storage is checked directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hub_server import serve_hub

from xl_suite.hub import HubOfflineError, HubPushError, merge_card, push_config


REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "hf_SeCrEtDummyToken0123456789abcdefXYZ"

# Shared by every client script: DEBUG logs to stderr (so the token check sees everything the libraries log),
# the rows pushed, and a card factory that reports which configs it saw.
PRELUDE = textwrap.dedent(
    """
    import json, logging, sys, time
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    from datasets import Dataset, DatasetDict, load_dataset
    from huggingface_hub import DatasetCard, snapshot_download
    from xl_suite.hub import HubPushError, push_config

    A = DatasetDict({
        "train": Dataset.from_dict({"id": [0, 1, 2], "instruction": ["Hallo", "Wie geht's?", "Tschüss"]}),
        "test": Dataset.from_dict({"id": [3, 4], "instruction": ["Guten Tag", "Danke"]}),
    })
    A2 = DatasetDict({"test": Dataset.from_dict({"id": [7], "instruction": ["Neu"]})})
    B = Dataset.from_dict({"id": [5, 6], "instruction": ["Bonjour", "Merci"]})

    def card(repo_id, data):
        seen = ",".join(c["config_name"] for c in data.get("configs", []))
        return DatasetCard(
            "---\\nlicense: cc-by-4.0\\npretty_name: XL test\\nlanguage:\\n- de\\n- fr\\n"
            "configs: []\\n---\\n# XL test card\\n\\nconfigs seen: " + seen + "\\n"
        )

    def rows(ds):
        return ds.to_dict()["instruction"]

    def result(**values):
        print("RESULT " + json.dumps(values))
    """
)


def run_client(url: str, home: Path, script: str, **extra_env: str) -> dict:
    """Run PRELUDE + script in a fresh interpreter pointed at the stand-in; return its RESULT and outputs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "XL_SUITE_"))}
    env.update(
        HF_ENDPOINT=url,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(home),
        HF_TOKEN=SECRET,
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(REPO_ROOT),
        **extra_env,
    )
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )
    CAPTURED.append(proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"client failed:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"client printed no RESULT:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


CAPTURED: list[str] = []


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with serve_hub(tmp_path_factory.mktemp("hub")) as (url, server):
        yield url, server


def _config_entries(server, repo: str, config: str, sha: str) -> dict:
    return {p: e for p, e in server.tree(repo, sha).items() if p.startswith(f"{config}/")}


def _history(server, repo: str) -> list[str]:
    """Commit shas from the first to the head."""
    shas, sha = [], server.head(repo)
    while sha:
        shas.append(sha)
        sha = server.commit(repo, sha)["parent"]
    return shas[::-1]


def _card_yaml(server, repo: str) -> dict:
    import yaml

    return yaml.safe_load(server.read(repo, "README.md").decode().split("---")[1])


@pytest.mark.slow
def test_push_replace_and_load(hub, tmp_path):
    url, server = hub
    repo = "xl/roundtrip"
    pushed = run_client(
        url,
        tmp_path,
        f"""
        a = push_config(A, "{repo}", "A", card=card)
        b = push_config(B, "{repo}", "B")
        result(a=a, b=b)
        """,
    )
    assert "/commit/" in pushed["a"] and "/commit/" in pushed["b"]

    # Pushing B touched no A file: A's entries (and LFS objects) are identical in every commit since A's push.
    history = _history(server, repo)
    with_a = [sha for sha in history if _config_entries(server, repo, "A", sha)]
    first_a = _config_entries(server, repo, "A", with_a[0])
    assert {p.split("-")[0] for p in first_a} == {"A/train", "A/test"}
    assert all("lfs" in entry for entry in first_a.values())
    assert all(_config_entries(server, repo, "A", sha) == first_a for sha in with_a)
    assert with_a[-1] == history[-1] and _config_entries(server, repo, "B", history[-1])
    b_before = _config_entries(server, repo, "B", history[-1])

    # Replace A (a DatasetDict replaces the whole config) with a card push that first hits a concurrent-edit 412.
    server.inject_fault("commit", status=412, match="Update dataset card")
    loaded = run_client(
        url,
        tmp_path,
        f"""
        push_config(A2, "{repo}", "A", card=card)
        a_test = load_dataset("{repo}", "A", split="test")
        local = snapshot_download("{repo}", repo_type="dataset", local_dir="snap")
        b = load_dataset(local, "B")
        result(a_test=rows(a_test), b_splits=sorted(b), b_train=rows(b["train"]))
        """,
    )
    assert loaded == {"a_test": ["Neu"], "b_splits": ["train"], "b_train": ["Bonjour", "Merci"]}
    head = server.head(repo)
    assert _config_entries(server, repo, "B", head) == b_before, "replacing A changed B's files"
    assert [p.split("-")[0] for p in _config_entries(server, repo, "A", head)] == ["A/test"], "stale A/train left"
    assert not any(f.times for f in server.faults), "the injected 412 was never hit"

    # The card: the factory's text and metadata, plus push_to_hub's configs/dataset_info for both configs.
    readme = server.read(repo, "README.md").decode()
    assert "# XL test card" in readme and "configs seen: A,B" in readme
    meta = _card_yaml(server, repo)
    assert meta["license"] == "cc-by-4.0" and meta["pretty_name"] == "XL test" and meta["language"] == ["de", "fr"]
    assert {c["config_name"]: c["data_files"] for c in meta["configs"]} == {
        "A": [{"split": "test", "path": "A/test-*"}],
        "B": [{"split": "train", "path": "B/train-*"}],
    }
    infos = {info["config_name"]: info for info in meta["dataset_info"]}
    assert [s["name"] for s in infos["A"]["splits"]] == ["test"] and infos["A"]["splits"][0]["num_examples"] == 1
    assert infos["B"]["splits"][0]["num_examples"] == 2

    # The token never reaches the stand-in's storage, the client's HF_HOME/snapshot, nor any output of the client.
    for path in [*server.root.rglob("*"), *tmp_path.rglob("*")]:
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), f"token stored in {path}"
    assert CAPTURED and all(SECRET not in out for out in CAPTURED), "token in client output"


@pytest.mark.slow
def test_failed_push_leaves_existing_configs(hub, tmp_path):
    url, server = hub
    repo = "xl/faulty"
    run_client(url, tmp_path, f'push_config(A, "{repo}", "A"); push_config(B, "{repo}", "B"); result()')
    head_before = server.head(repo)

    server.inject_fault("commit", status=500, match="C/")
    out = run_client(
        url,
        tmp_path,
        f"""
        C = Dataset.from_dict({{"id": [9], "instruction": ["Hola"]}})
        try:
            push_config(C, "{repo}", "C", card=card)
            error = None
        except HubPushError as err:
            error = str(err)
        a = load_dataset("{repo}", "A")
        b = load_dataset("{repo}", "B", split="train")
        result(error=error, a_train=rows(a["train"]), a_test=rows(a["test"]), b=rows(b))
        """,
    )
    error = out["error"]
    assert error is not None, "the injected commit fault did not surface"
    assert "'C'" in error and "'xl/faulty'" in error and "HTTP 500" in error and "rerun push_config" in error
    assert "injected commit fault" in error, error
    assert out["a_train"] == ["Hallo", "Wie geht's?", "Tschüss"] and out["a_test"] == ["Guten Tag", "Danke"]
    assert out["b"] == ["Bonjour", "Merci"]
    # Midway: C's Parquet was uploaded (an LFS object) but no commit happened.
    assert server.head(repo) == head_before
    assert not _config_entries(server, repo, "C", head_before)
    assert len(list((server.repo_dir(repo) / "lfs").iterdir())) > len(
        [e for e in server.tree(repo).values() if "lfs" in e]
    )
    assert all(SECRET not in captured for captured in CAPTURED)


@pytest.mark.slow
def test_offline_mode_fails_fast_without_network(hub, tmp_path):
    url, server = hub
    seen = len(server.requests)
    out = run_client(
        url,
        tmp_path,
        """
        from xl_suite.hub import HubOfflineError
        start = time.perf_counter()
        try:
            push_config(B, "xl/offline", "B")
            error = None
        except HubOfflineError as err:
            error = str(err)
        result(error=error, elapsed=time.perf_counter() - start)
        """,
        HF_HUB_OFFLINE="1",
    )
    assert out["error"] is not None and "HF_HUB_OFFLINE" in out["error"]
    assert out["elapsed"] < 5
    assert len(server.requests) == seen, "an offline push reached the server"
    assert "Retrying" not in CAPTURED[-1] and "Traceback" not in CAPTURED[-1]


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_offline_error_names_the_variable(monkeypatch, variable):
    from datasets import Dataset

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setenv(variable, "1")
    start = time.perf_counter()
    with pytest.raises(HubOfflineError, match=f"Unset {variable}"):
        push_config(Dataset.from_dict({"x": [1]}), "xl/offline", "de", token=SECRET)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    ("repo_id", "config_name", "match"),
    [("no-namespace", "de", "namespace/name"), ("a/b/c", "de", "namespace/name"), ("xl/x", "data", "'data'")],
)
def test_invalid_targets(repo_id, config_name, match):
    with pytest.raises(ValueError, match=match):
        push_config(None, repo_id, config_name)


def test_merge_card_keeps_push_owned_yaml():
    from huggingface_hub import DatasetCard

    current = {"configs": [{"config_name": "de", "data_files": "de/*"}], "dataset_info": {"config_name": "de"}}
    new = DatasetCard("---\nlicense: mit\nconfigs:\n- config_name: wrong\n---\n# Body\n")
    merged = merge_card(current, new)
    # push_to_hub's configs are kept; one of them is marked default so load_dataset(repo) needs no config name
    assert merged.data.to_dict() == {
        "license": "mit",
        **current,
        "configs": [{**current["configs"][0], "default": True}],
    }
    assert current["configs"] == [{"config_name": "de", "data_files": "de/*"}], "merge_card modified its input"
    assert merged.text == "# Body\n"
    assert new.data.to_dict()["configs"] == [{"config_name": "wrong"}], "merge_card modified its input"


def test_push_error_type_is_runtime_error():
    assert issubclass(HubPushError, RuntimeError) and issubclass(HubOfflineError, RuntimeError)


@pytest.mark.slow
@pytest.mark.parametrize(("status", "op"), [(401, "preupload"), (403, "preupload"), (500, "commit")])
def test_push_against_a_hub_that_echoes_the_token_never_prints_it_at_any_verbosity(status, op, tmp_path):
    source = tmp_path / "alpaca.json"
    source.write_text('[{"instruction": "Explain topic 1.", "output": "x"}]', encoding="utf-8")
    with serve_hub(tmp_path / "hub") as (url, server):
        server.inject_fault(op, status=status, times=100, echo_token=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "XL_SUITE_"))}
        env.update(
            HF_ENDPOINT=url,
            HF_HUB_DISABLE_XET="1",
            HF_HOME=tempfile.mkdtemp(dir=tmp_path),
            HF_TOKEN=SECRET,
            HF_HUB_DISABLE_TELEMETRY="1",
            PYTHONPATH=str(REPO_ROOT),
        )
        for verbosity in ([], ["-v"], ["-vv"]):
            argv = [*verbosity, "push", "xl/tok", "--config", "xl-alpacaeval-de", "--source", str(source)]
            proc = subprocess.run(
                [sys.executable, "-m", "xl_suite.cli", *argv], env=env, capture_output=True, text=True, timeout=300
            )
            out = proc.stdout + proc.stderr
            assert proc.returncode == 2, out[-3000:]
            assert f"HTTP {status}" in out and "credentials sent: Bearer ***" in out, out[-3000:]
            assert SECRET not in out, f"token printed with {verbosity or 'no -v'}"
