"""A language the paper does not cover (Swahili, built in from CLDR) end to end on the tiny model through the real
vLLM engine: XL-AlpacaEval config, synthesis, generation, evaluation with language fidelity. Plus the refusal of
the synthesis language filter for a language no identifier can recognise (Friulian)."""

from __future__ import annotations

import json

import pytest

import xl_suite
from xl_suite.cli import build_parser, main
from xl_suite.commands import synthesize as synthesize_cmd


PROMPTS = [
    "Give three tips for staying healthy.",
    "Describe a sunset over the sea.",
    "What is a prime number?",
    "Write a short note to a neighbour.",
]


class SharedEngine:
    """The session's engine behind the CLI's ``build_generator``; never closes the shared engine."""

    def __init__(self, engine):
        self._engine = engine
        self.backend, self.model, self.revision = engine.backend, engine.model, engine.revision

    def generate(self, conversations, sampling):
        return self._engine.generate(conversations, sampling)

    def fingerprint(self):
        return self._engine.fingerprint()

    def supports_structured_output(self):
        return self._engine.supports_structured_output()

    def close(self):
        pass

    def __getattr__(self, name):
        return getattr(self._engine, name)


def test_builtin_non_paper_language_benchmark_config(tmp_path):
    source = tmp_path / "alpaca_eval.json"
    source.write_text(json.dumps([{"instruction": p, "output": "", "dataset": "helpful_base"} for p in PROMPTS]))
    for config, request in (
        ("xl-alpacaeval-sw", "Please respond in Swahili."),
        ("xl-alpacaeval-pt-br", "Please respond in Portuguese (Brazil)."),
    ):
        ds = xl_suite.load_xl_suite(config, split="test", source=str(source), cache_dir=str(tmp_path / "cache"))
        assert ds.num_rows == len(PROMPTS) and ds[0]["instruction"].endswith(request), config


def test_synthesis_language_filter_refuses_unrecognisable_language(tmp_path):
    from xl_suite.fidelity import check_language_filter

    with pytest.raises(ValueError, match=r"cannot check \['fur'\].*Friulian.*--no-language-filter"):
        check_language_filter(["sw", "fur"], enabled=True)
    # The CLI refuses too (today through the identifier's own check) before any generation.
    argv = [
        "synthesize",
        "--backend",
        "vllm",
        "--model",
        "unused",
        "--languages",
        "fur",
        "--max-seeds",
        "2",
        "--output",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    with pytest.raises(ValueError, match="fur"):
        synthesize_cmd.run(build_parser().parse_args(argv), generator=xl_suite.FakeGenerator(lambda m, i, s: "x"))


@pytest.mark.slow
@pytest.mark.vllm
def test_swahili_chain_on_the_tiny_model(vllm_generator, tiny_model_dir, tmp_path, monkeypatch, capsys):
    engine = SharedEngine(vllm_generator)
    # 1. synthesis for sw (the random model's text is never Swahili: the filter is off and only reports)
    out = tmp_path / "synth"
    argv = [
        "synthesize",
        "--backend",
        "vllm",
        "--model",
        str(tiny_model_dir),
        "--languages",
        "sw",
        "--max-seeds",
        "8",
        "--output",
        str(out),
        "--no-language-filter",
        "--threshold",
        "1",
        "--max-tokens",
        "96",
        "--chunk-size",
        "4",
        "--no-progress",
    ]
    assert synthesize_cmd.run(build_parser().parse_args(argv), generator=engine) == 0
    summary = json.loads((out / "summary.json").read_text())
    produced = summary["languages"]["sw"]["produced"]
    ds = xl_suite.load_xl_suite("xl-instruct-sw", source=str(out), split="train")
    assert ds.num_rows == produced > 0 and set(ds["language"]) == {"sw"}

    # 2. benchmark answers, references and evaluation with the judge for xl-alpacaeval-sw
    monkeypatch.setattr("xl_suite.engines.registry.build_generator", lambda *a, **k: engine)
    source = tmp_path / "alpaca_eval.json"
    source.write_text(json.dumps([{"instruction": p, "output": "", "dataset": "helpful_base"} for p in PROMPTS]))
    common = [
        "--model",
        str(tiny_model_dir),  # a real model folder: the command checks it before any engine starts
        "--backend",
        "vllm",
        "--config",
        "xl-alpacaeval-sw",
        "--source",
        str(source),
        "--max-tokens",
        "24",
    ]
    assert main(["generate", *common, "--output", str(tmp_path / "ans")]) == 0
    assert main(["generate", *common, "--output", str(tmp_path / "refs"), "--as-reference", "--seed", "7"]) == 0
    report = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                "--model-outputs",
                str(tmp_path / "ans"),
                "--references",
                str(tmp_path / "refs"),
                "--judge-backend",
                "vllm",
                "--judge-model",
                str(tiny_model_dir),  # a real model folder: the command checks it before any engine starts
                "--output",
                str(report),
                "--n-resamples",
                "50",
                "--no-rubric",
            ]
        )
        == 0
    )
    table = json.loads((report / "summary.json").read_text())["table"]
    assert list(table) == ["sw", "overall"] and table["sw"]["n"] == len(PROMPTS)
    assert 0.0 <= table["sw"]["language_fidelity"] <= 100.0  # measured by py3langid, which knows Swahili
    assert 0.0 <= table["sw"]["win_rate"] <= 100.0
