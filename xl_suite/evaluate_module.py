"""Where the XL-AlpacaEval ``evaluate`` module lives: ``evaluate.load(xl_suite.metric_path())``.

The metric folder (``evaluate_metrics/xl_alpacaeval``: script, card, ``requirements.txt``, ``app.py``) ships in the
wheel as package data of ``xl_suite.evaluate_metrics``, so an installed xl-suite loads it without a checkout. The same
folder, pushed to a Hub Space or model repo, loads with ``evaluate.load("<user>/xl_alpacaeval")``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from xl_suite.errors import InvalidArgumentError


__all__ = ["METRICS", "metric_path"]

#: The metric folders xl-suite ships.
METRICS: tuple[str, ...] = ("xl_alpacaeval",)


def metric_path(name: str = "xl_alpacaeval") -> str:
    """Folder of a shipped ``evaluate`` module, for ``evaluate.load(metric_path(), config_name)``.

    In a source checkout it is ``evaluate_metrics/<name>`` beside the package; in an installed wheel, the copy inside
    ``xl_suite/evaluate_metrics/``.

    >>> Path(metric_path()).name
    'xl_alpacaeval'

    Raises:
        InvalidArgumentError: an unknown metric name.
    """
    if name not in METRICS:
        raise InvalidArgumentError(f"Unknown metric {name!r}; xl-suite ships {list(METRICS)}.")
    checkout = Path(__file__).resolve().parent.parent / "evaluate_metrics" / name
    if (checkout / f"{name}.py").is_file():
        return str(checkout)
    return str(resources.files("xl_suite.evaluate_metrics") / name)
