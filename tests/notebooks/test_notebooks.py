"""The four notebooks run top to bottom (nbclient) on the tiny local model, so they never rot.

Each notebook runs in a fresh kernel of *this* interpreter (a kernelspec written to a temporary folder, so a user's
own ``python3`` kernel can never be picked up), in a temporary working folder, with an environment built here from
scratch: isolated HF caches, offline for notebooks 01, 03 and 04, and for notebook 02 a local Hub stand-in
(``tests/hub_server.py``) that the notebook pushes to and loads back from.

Notebook 02 starts its own vLLM engine, as a user's kernel does. Notebooks 03 and 04 take the run's one ``vllm serve``
(``XL_SUITE_NOTEBOOK_SERVER``, the ``vllm_server`` fixture) instead of starting two more engines of 40 s each.

The committed notebooks carry no outputs; a fast test checks that.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from engine_fixtures import require_vllm
from hub_server import serve_hub


REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO_ROOT / "notebooks"
NAMES = ("01_load_and_inspect", "02_synthesize_and_publish", "03_evaluate_and_plot", "04_finetune_with_trl")
SAMPLE_PROMPTS = REPO_ROOT / "xl_suite" / "data" / "demo_prompts.jsonl"
CELL_TIMEOUT = 600  # seconds; a vLLM engine start on 2 busy CPU cores can take minutes
HUB_TOKEN = "hf_NotebookSecretToken_0123456789abcdef"


def test_committed_notebooks_have_no_outputs():
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3", name
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{name} cell {i} has committed outputs; clear them"
                assert cell.execution_count is None, f"{name} cell {i} has an execution count; clear it"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """A ``python3`` kernelspec that starts this interpreter (the project's venv when pytest runs from it)."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("kernel")
    install(kernel_name="python3", prefix=str(prefix))
    return prefix / "share" / "jupyter" / "kernels"


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    """The notebooks' shared working folder (``XL_SUITE_NOTEBOOK_DIR``): the tiny model is built once."""
    return tmp_path_factory.mktemp("notebook_work")


def _kernel_env(home: Path, work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "XL_SUITE_", "VLLM_"))}
    env.update(
        HF_HOME=str(home / "hf"),
        HF_HUB_DISABLE_TELEMETRY="1",
        XL_SUITE_LANGUAGES_FILE=str(home / "languages.json"),
        XL_SUITE_NOTEBOOK_DIR=str(work),
        PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
        VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        TOKENIZERS_PARALLELISM="false",
        MPLBACKEND="module://matplotlib_inline.backend_inline",
    )
    env.update(extra)
    return env


def _execute(name: str, kernel_dir: Path, cwd: Path, env: dict[str, str]) -> tuple[nbformat.NotebookNode, str]:
    """Run a notebook; return it with its outputs and all its text output (streams, results, errors)."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    assert specs.get_kernel_spec("python3").argv[0] == sys.executable
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    km = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute(env=env)
    finally:
        # nbclient leaves a kernel it was handed running: stop it, or each notebook's kernel (and its share of the
        # CPU) lives until the end of the test run
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                texts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                texts.append(out.data.get("text/plain", ""))
    return nb, "\n".join(texts)


def _served(server) -> dict[str, str]:
    """The kernel's variables that point a notebook at the shared ``vllm serve`` (no engine of its own)."""
    return {"XL_SUITE_NOTEBOOK_SERVER": server.base_url, "XL_SUITE_NOTEBOOK_SERVED_MODEL": server.model}


def _n_sample_prompts() -> int:
    return sum(1 for line in SAMPLE_PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip())


@pytest.mark.slow
def test_01_load_and_inspect_sample(kernel_dir, work_dir, tmp_path):
    env = _kernel_env(tmp_path, work_dir, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    _, text = _execute("01_load_and_inspect", kernel_dir, tmp_path, env)
    n = _n_sample_prompts()
    assert "prompts: project-written SAMPLE prompts (NOT AlpacaEval" in text
    assert f"xl-alpacaeval-de: {n} rows" in text and f"xl-alpacaeval-mt: {n} rows" in text
    assert "same ids in every language: True" in text
    assert f"loaded back: xl-alpacaeval-mt, {n} rows" in text and "identical to the builder's rows" in text


@pytest.mark.slow
def test_01_twice_with_different_sources(kernel_dir, tmp_path):
    """Issue 20: the second run re-exports other rows into the same folder and loads them back with plain datasets
    from the same HF cache; before the export named its files by content, the old rows came back (and failed)."""
    import json

    work = tmp_path / "work"
    env = _kernel_env(tmp_path, work, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    _, text = _execute("01_load_and_inspect", kernel_dir, tmp_path, env)
    assert f"loaded back: xl-alpacaeval-mt, {_n_sample_prompts()} rows" in text
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"instruction": f"Describe place number {k} in two sentences.", "output": "x"}
                                 for k in range(5)]))  # fmt: skip
    _, text = _execute("01_load_and_inspect", kernel_dir, tmp_path, {**env, "XL_SUITE_ALPACA_EVAL": str(other)})
    assert "loaded back: xl-alpacaeval-mt, 5 rows" in text and "identical to the builder's rows" in text


@pytest.mark.slow
@pytest.mark.data
def test_01_load_and_inspect_alpaca_eval(kernel_dir, work_dir, tmp_path, alpaca_eval_path):
    env = _kernel_env(
        tmp_path, work_dir, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", XL_SUITE_ALPACA_EVAL=str(alpaca_eval_path)
    )
    _, text = _execute("01_load_and_inspect", kernel_dir, tmp_path, env)
    assert f"prompts: AlpacaEval ({alpaca_eval_path})" in text
    assert "xl-alpacaeval-de: 797 rows" in text and "xl-alpacaeval-mt: 797 rows" in text
    assert "805 prompts in the file -> 797 kept, 8 excluded" in text
    assert "Please respond in Maltese." in text
    assert "loaded back: xl-alpacaeval-mt, 797 rows" in text


@pytest.mark.slow
@pytest.mark.vllm
@require_vllm
def test_02_synthesize_and_publish_to_hub_stand_in(kernel_dir, work_dir, tmp_path):
    with serve_hub(tmp_path / "hub") as (url, server):
        # online against the stand-in only: HF_HUB_OFFLINE is not set for this kernel
        env = _kernel_env(tmp_path, work_dir, HF_ENDPOINT=url, HF_HUB_DISABLE_XET="1", HF_TOKEN=HUB_TOKEN)
        _, text = _execute("02_synthesize_and_publish", kernel_dir, tmp_path, env)
        card = server.read("me/xl-suite-sw", "README.md").decode()
    produced = int(text.split("XL-Instruct pairs produced for sw: ", 1)[1].split()[0])
    assert produced > 0
    assert f"loaded back from the Hub: me/xl-suite-sw xl-instruct-sw, {produced} rows" in text
    assert f"| `xl-instruct-sw` | train | {produced} |" in card
    assert "| sw | Swahili | Kiswahili | Latn | Please respond in Swahili. |" in card
    assert HUB_TOKEN not in text and HUB_TOKEN not in card


@pytest.mark.slow
@pytest.mark.vllm
@require_vllm
def test_03_evaluate_and_plot(kernel_dir, work_dir, tmp_path, vllm_server):
    env = _kernel_env(tmp_path, work_dir, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **_served(vllm_server))
    nb, text = _execute("03_evaluate_and_plot", kernel_dir, tmp_path, env)
    assert "benchmark: 12 prompts (6 x ['de', 'mt'])" in text
    assert "report written: " in text and "win_rates.png" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 1
    assert re.search(r"tiny model: language fidelity \d+\.\d% \(meaningless\)", text)
    assert "hand-written check: language fidelity 50.0%, detected ['de', 'en']" in text
    assert (work_dir / "03-report" / "leaderboard.csv").is_file()


@pytest.mark.slow
@pytest.mark.vllm
@require_vllm
def test_04_finetune_with_trl(kernel_dir, work_dir, tmp_path, vllm_server):
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    env = _kernel_env(tmp_path, work_dir, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **_served(vllm_server))
    _, text = _execute("04_finetune_with_trl", kernel_dir, tmp_path, env)
    indices = re.search(r"TRL judge indices: \[(-?\d), (-?\d)\]", text)
    assert indices and {int(i) for i in indices.groups()} <= {-1, 0, 1}
    assert re.search(r"rewards \(P\(completion beats the reference\)\): \[", text)
    for step in range(1, 8):
        assert f"[{step}/7]" in text
    assert "in-loop metric evaluations: 2" in text and "eval_xl_language_fidelity" in text
    assert "adapter_model.safetensors" in text
    assert (work_dir / "04-finetune" / "report-after" / "leaderboard.csv").is_file()
