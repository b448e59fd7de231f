"""The wheel ships the prompt templates, the package data and the dataset card template."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_templates_and_data(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next(tmp_path.glob("xl_suite-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_prompts = {f"xl_suite/prompts/{p.name}" for p in (REPO / "xl_suite" / "prompts").glob("*.jinja")}
    assert shipped_prompts and shipped_prompts <= names
    assert "xl_suite/prompts/README.md" in names
    assert "xl_suite/data/alpaca_eval_exclusions.json" in names
    assert "xl_suite/data/demo_prompts.jsonl" in names
    assert "xl_suite/dataset_cards/xl_suite.md.jinja" in names
    assert any(n.startswith("xl_suite/engines/") for n in names)
    assert any(n.startswith("xl_suite/commands/") for n in names)
    # every subpackage (evaluation and synthesis were missing from the wheel) and the evaluate metric folder
    subpackages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "xl_suite").glob("*/__init__.py")}
    assert {f"{p}/__init__.py" for p in subpackages} <= names
    metric = {
        f"xl_suite/evaluate_metrics/xl_alpacaeval/{f}"
        for f in ("xl_alpacaeval.py", "README.md", "requirements.txt", "app.py")
    }
    assert metric <= names


def _setup_cfg_requirements() -> tuple[list[str], dict[str, list[str]]]:
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")

    def names(text: str) -> list[str]:
        lines = [line.split("#")[0].strip() for line in text.splitlines()]
        return [re.split(r"[<>=!~\[; ]", line)[0].lower() for line in lines if line]

    extras = {k: names(v) for k, v in cfg["options.extras_require"].items()}
    return names(cfg["options"]["install_requires"]), extras


def test_base_install_carries_the_metric_and_not_the_synthesis_weight():
    """`pip install xl-suite` computes the metric's fidelity; single-purpose packages are extras (issue 17)."""
    base, extras = _setup_cfg_requirements()
    assert {"datasets", "evaluate", "py3langid", "huggingface_hub", "pyarrow"} <= set(base)
    assert not {"datasketch", "langcodes", "language_data", "scikit-learn", "torch", "vllm"} & set(base)
    assert extras["synthesis"] == ["datasketch"] and set(extras["languages"]) == {"langcodes", "language_data"}
    assert {"datasketch", "langcodes", "language_data"} <= set(extras["tests"])  # `.[tests]` runs every unit test
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "tools/ci_base_install.sh" in ci  # the fresh-venv, no-extras job


@pytest.mark.parametrize(
    ("module", "call", "extra"),
    [
        (
            "datasketch",
            lambda: __import__("xl_suite.synthesis.decontamination").synthesis.decontamination.NearDuplicateIndex(),
            "synthesis",
        ),
        (
            "langcodes",
            lambda: __import__("xl_suite").register_language(
                __import__("xl_suite").LanguageSpec(
                    code="gsw", name="swiss german", native_name="Schwiizertüütsch", script="Latn"
                )
            ),
            "languages",
        ),
        (
            "sklearn",
            lambda: __import__("xl_suite").length_controlled_win_rate(
                [0.9, 0.2, 0.6, 0.7, 0.4, 0.8], [10, 20, 30, 40, 50, 60], [12, 18, 30, 35, 52, 61]
            ),
            "eval",
        ),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(monkeypatch, module, call, extra):
    from xl_suite.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, as when it is not installed
    with pytest.raises(MissingDependencyError) as e:
        call()
    message = str(e.value)
    assert f"pip install 'xl-suite[{extra}]'" in message and "\n" not in message


def test_every_subpackage_is_listed_in_setup_cfg():
    """A package missing from setup.cfg's explicit list is missing from the wheel (the installed package breaks)."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = {line.strip() for line in cfg["options"]["packages"].splitlines() if line.strip()}
    found = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "xl_suite").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert found - listed == set(), f"add to setup.cfg [options] packages: {sorted(found - listed)}"
