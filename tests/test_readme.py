"""The README, followed top to bottom: every code block is either run as written (in a fresh folder, in README
order) or listed here with the reason it cannot run on a test machine (a GPU model, an API key, the Hub).

A new block in the README fails :func:`test_every_block_is_classified` until it is added to one of the lists.
``make demo`` itself (the first block) is covered by ``tests/commands/test_demo.py`` on the real vLLM engine.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest


AT_SCALE = "pip install -e '.[vllm,openai,eval,ray]'"
REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
BLOCKS = [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", README, re.DOTALL)]

#: First line of each block -> why it is not run here.
NOT_RUN = {
    "make demo": "creates .venv and runs the demo on vLLM: tests/commands/test_demo.py",
    "pip install -e '.[vllm,openai,eval]'": "installs packages / needs a GPU and an OpenAI key",
    "xl-suite synthesize --model Qwen/Qwen2.5-7B-Instruct": "a 7B model on vLLM (the fake engine runs the same "
    "command in tests/synthesis/test_synthesis.py)",
    "xl-suite generate --model MODEL": "MODEL is a placeholder; the OpenAI reference needs a key "
    "(the same commands run on the fake engine in tests/evaluation/test_evaluation.py)",
    "xl-suite evaluate --model-outputs annotations.json": "alpaca_eval's files (tests/evaluation/test_alpaca_eval.py)",
    "xl-suite leaderboard report-qwen/": "report folders of real runs (the same command runs on fake-judge reports "
    "and alpaca_eval's annotations in tests/evaluation/test_leaderboard.py)",
    "xl-suite compare-judges report-gpt4o/": "report folders of real judges (tests/evaluation/test_compare_judges.py runs the "
    "command on fake judges and on alpaca_eval's annotations)",
    "xl-suite push me/xl-suite": "pushes to the Hub (tests/datasets/test_publish.py runs it against a local Hub stand-in)",
    "xl-suite finetune --output-dir ft/": "trains a model with TRL (tests/training/test_finetune.py, notebook 04)",
    AT_SCALE: "a GPU cluster: test_the_paper_at_scale_runs_line_by_line runs its commands (dry runs as written)",
    "xl_suite/": "the layout, not a command",
    "@inproceedings": "the citation",
}
#: First line of each block run here, in README order.
RUN = [
    "import xl_suite",
    "xl-suite export my-xl-suite",
    "import evaluate",
    "xl-suite languages",
]

ALPACA = [
    {"instruction": f"Explain topic number {k} briefly.", "output": f"Topic {k}.", "generator": "gpt4", "dataset": "x"}
    for k in range(5)
]


def _first_line(block: str) -> str:
    return block.strip().splitlines()[0]


def _find(prefix: str) -> tuple[str, str]:
    found = [(lang, body) for lang, body in BLOCKS if _first_line(body).startswith(prefix)]
    assert len(found) == 1, f"{prefix!r} matches {len(found)} README blocks"
    return found[0]


def test_every_block_is_classified():
    for _, body in BLOCKS:
        first = _first_line(body)
        assert any(first.startswith(p) for p in [*RUN, *NOT_RUN]), f"README block not run nor explained: {first!r}"
    order = [next(i for i, (_, b) in enumerate(BLOCKS) if _first_line(b).startswith(p)) for p in RUN]
    assert order == sorted(order), "RUN must follow the README's order"


def test_python_blocks_compile():
    for lang, body in BLOCKS:
        if lang == "python":
            compile(body, "README.md", "exec")


def _shell_lines(body: str) -> list[str]:
    joined = body.replace("\\\n", " ")
    return [line.split("   #")[0].strip() for line in joined.splitlines() if line.strip()]


def _to_argv(line: str) -> list[str]:
    argv = shlex.split(line)
    if argv[0] == "xl-suite":
        return [sys.executable, "-m", "xl_suite.cli", *argv[1:]]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    raise AssertionError(f"unexpected command in a README block: {line!r}")


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path):
    """Export -> load with plain datasets -> the builder -> the metric, as the README shows them."""
    (tmp_path / "alpaca_eval.json").write_text(json.dumps(ALPACA), encoding="utf-8")
    (tmp_path / "evaluate_metrics").symlink_to(REPO / "evaluate_metrics")  # "from the repository root"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for prefix in RUN:
        lang, body = _find(prefix)
        if lang == "python":
            commands = [[sys.executable, "-c", body]]
        else:
            commands = [_to_argv(line) for line in _shell_lines(body)]
        for argv in commands:
            r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, f"README block {prefix!r} failed: {argv}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
            assert "Traceback" not in r.stderr
            if "load_dataset" in " ".join(argv) and "my-xl-suite" in " ".join(argv):
                assert "num_rows: 5" in r.stdout  # the export's rows, loaded by plain datasets
            if prefix == "import evaluate":
                assert "'language_fidelity': 100.0" in r.stdout
    assert (tmp_path / "my-xl-suite" / ".xl-suite-output.json").is_file()


def _at_scale_argv(line: str) -> list[str] | None:
    """A line of the paper-at-scale block as the test runs it: dry runs as written (nothing starts); real runs on
    the fake engine, locally (Ray: tests/test_ray_cli.py), with 2 pairs per language instead of 8,000."""
    argv = shlex.split(line)
    if argv[0] != "xl-suite":
        return None  # pip, ray start, export: set-up of the cluster
    if "--dry-run" in argv:
        return _to_argv(line)
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a in ("--engine-kwargs", "--executor", "--num-actors", "--num-gpus-per-actor"):
            skip = True
            continue
        if a == "--backend":
            skip = True
            continue
        if argv[i - 1] == "--num-examples":
            a = "2"
        if a == "--judge-preset":
            skip = True
            verdict = json.dumps({"winner": "A", **dict.fromkeys(("helpfulness", "relevance"), 4)})
            out += ["--judge-backend", "fake", "--judge-model", "gpt-4o-2024-08-06", "--no-rubric"]
            out += ["--judge-engine-kwargs", json.dumps({"reply": verdict}), "--n-resamples", "10"]
            continue
        out.append(a)
    if out[1] in ("synthesize", "generate"):
        out[2:2] = ["--backend", "fake"]
    if out[1] == "synthesize":
        out.append("--no-progress")
    return _to_argv(shlex.join(out))


@pytest.mark.slow
def test_the_paper_at_scale_runs_line_by_line(tmp_path):
    """The README's paper-scale commands in order: the dry runs as written, the runs on the fake engine."""
    from xl_suite.synthesis.seeds import builtin_seeds

    (tmp_path / "alpaca_eval.json").write_text(json.dumps(ALPACA), encoding="utf-8")
    (tmp_path / "seeds").mkdir()
    builtin_seeds().select_columns(["text"]).to_json(str(tmp_path / "seeds" / "culturax-en.jsonl"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("OPENAI_API_KEY", None)  # a dry run needs no key
    _, body = _find(AT_SCALE)
    ran = []
    for line in _shell_lines(body):
        argv = _at_scale_argv(line)
        if argv is None:
            continue
        r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{line}\n{argv}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr
        if "--dry-run" in argv:
            assert "total:" in r.stdout or "requests" in r.stdout, r.stdout
            assert "no request was sent" in r.stdout
        ran.append(argv[3])
    assert ran == ["synthesize", "synthesize", "generate", "generate", "generate", "evaluate", "evaluate"]
    assert (tmp_path / "runs" / "report" / "report.md").is_file()
    assert (tmp_path / "runs" / "xl-instruct" / "summary.json").is_file()
