"""Training with TRL: the XL-AlpacaEval judge as a TRL judge and reward function, the metric as a training
callback, and the paper's synthesize -> fine-tune -> evaluate recipe (``xl-suite finetune``).

Nothing here imports TRL, transformers or torch at import time; they are imported when used, and a missing one is a
:class:`~xl_suite.errors.MissingDependencyError` naming ``pip install 'xl-suite[train]'``.
"""

from __future__ import annotations

import importlib


_EXPORTS = {
    "XlAlpacaEvalPairwiseJudge": "xl_suite.training.judge",
    "XlAlpacaEvalRewardFunc": "xl_suite.training.judge",
    "is_trl_available": "xl_suite.training.judge",
    "XlMetricCallback": "xl_suite.training.callbacks",
    "FinetuneConfig": "xl_suite.training.finetune",
    "run_finetune": "xl_suite.training.finetune",
    "to_messages": "xl_suite.training.finetune",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xl_suite.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return __all__
