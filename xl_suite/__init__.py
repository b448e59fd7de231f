"""xl-suite: cross-lingual synthetic training and evaluation data for open-ended generation.

Implements (and, where the paper is silent, reconstructs) XL-Instruct and XL-AlpacaEval
(Iyer et al., Findings of EMNLP 2025, arXiv 2503.22973) as Hugging Face datasets.

Public names are resolved lazily so that ``import xl_suite`` stays light (no datasets, torch or vLLM).
"""

from __future__ import annotations

import importlib


__version__ = "0.1.0"

_EXPORTS = {
    # languages
    "LanguageSpec": "xl_suite.languages",
    "get_language": "xl_suite.languages",
    "list_languages": "xl_suite.languages",
    "register_language": "xl_suite.languages",
    "save_user_language": "xl_suite.languages",
    "load_user_languages": "xl_suite.languages",
    "CORE_LANGUAGES": "xl_suite.languages",
    "BENCHMARK_LANGUAGES": "xl_suite.languages",
    # prompts
    "load_template": "xl_suite.prompting",
    "render_messages": "xl_suite.prompting",
    # generation
    "SamplingConfig": "xl_suite.engines.base",
    "Completion": "xl_suite.engines.base",
    "Generator": "xl_suite.engines.base",
    "FakeGenerator": "xl_suite.engines.fake",
    "build_generator": "xl_suite.engines.registry",
    "build_tiny_model": "xl_suite.engines.tiny_model",
    "EngineSpec": "xl_suite.engines.spec",
    # datasets
    "load_xl_suite": "xl_suite.datasets_api",
    "load_dataset": "xl_suite.datasets_api",  # deprecated alias of load_xl_suite (warns), removed in the next release
    "list_configs": "xl_suite.datasets_api",
    "export_repo": "xl_suite.export",
    "publish_config": "xl_suite.hub",
    # metrics
    "win_rate": "xl_suite.evaluation.metrics",
    "length_controlled_win_rate": "xl_suite.evaluation.metrics",
    "bootstrap_ci": "xl_suite.evaluation.metrics",
    # evaluation
    "evaluate_responses": "xl_suite.evaluation",
    "write_report": "xl_suite.evaluation",
    "build_leaderboard": "xl_suite.evaluation.leaderboard",
    "generate_answers": "xl_suite.evaluation",
    "generate_references": "xl_suite.evaluation",
    "translate_prompts": "xl_suite.evaluation",
    "judge_pairwise": "xl_suite.evaluation.judging",
    "score_rubric": "xl_suite.evaluation.judging",
    "JudgeConfig": "xl_suite.evaluation.judging",
    "load_preset": "xl_suite.evaluation.presets",
    "list_presets": "xl_suite.evaluation.presets",
    "metric_path": "xl_suite.evaluate_module",
    "CITATION": "xl_suite.constants",
    # synthesis
    "synthesize": "xl_suite.synthesis",
    "SynthesisConfig": "xl_suite.synthesis",
    "load_seeds": "xl_suite.synthesis.seeds",
    # training (TRL)
    "XlAlpacaEvalPairwiseJudge": "xl_suite.training.judge",
    "XlAlpacaEvalRewardFunc": "xl_suite.training.judge",
    "XlMetricCallback": "xl_suite.training.callbacks",
    "FinetuneConfig": "xl_suite.training.finetune",
    "run_finetune": "xl_suite.training.finetune",
    # demo
    "run_demo": "xl_suite.demo",
    "DemoConfig": "xl_suite.demo",
    # language fidelity
    "language_fidelity": "xl_suite.fidelity",
    "identify_language": "xl_suite.fidelity",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xl_suite' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
