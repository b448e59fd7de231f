"""The one offline-mode check of xl-suite (``HF_HUB_OFFLINE`` and the variables that mean the same).

huggingface_hub answers :func:`huggingface_hub.constants.is_offline_mode` from ``HF_HUB_OFFLINE`` as it was when
huggingface_hub was imported; ``datasets`` also honours ``HF_DATASETS_OFFLINE`` and transformers
``TRANSFORMERS_OFFLINE``. xl-suite is offline when any of them says so, now or at import, with the libraries' own
truth values (``1``, ``ON``, ``YES``, ``TRUE``, any case): every Hub or network decision of the package (reading a
source, resolving a model, pushing) goes through :func:`offline_reason` / :func:`is_offline_mode`.
"""

from __future__ import annotations

import os
import sys


__all__ = ["OFFLINE_VARIABLES", "TRUE_VALUES", "is_offline_mode", "offline_reason"]

#: Environment variables that switch the Hugging Face libraries offline.
OFFLINE_VARIABLES: tuple[str, ...] = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
#: The values huggingface_hub reads as true (``huggingface_hub.constants.ENV_VARS_TRUE_VALUES``).
TRUE_VALUES: frozenset[str] = frozenset({"1", "ON", "YES", "TRUE"})


def _true(value: str | None) -> bool:
    return value is not None and value.strip().upper() in TRUE_VALUES


def offline_reason() -> str | None:
    """Why the Hub is off limits (``"HF_HUB_OFFLINE=yes"``...), or ``None`` when online.

    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "yes", "HF_DATASETS_OFFLINE": "0"}):
    ...     offline_reason()
    'HF_HUB_OFFLINE=yes'
    """
    names = [name for name in OFFLINE_VARIABLES if _true(os.environ.get(name))]
    if names:
        return ", ".join(f"{name}={os.environ[name]}" for name in names)
    # The variable may have been unset after import; the libraries then still run offline.
    hub_constants = sys.modules.get("huggingface_hub.constants")
    # huggingface_hub >= 1.x's constants.is_offline_mode(); its HF_HUB_OFFLINE constant where that is missing.
    is_offline = getattr(hub_constants, "is_offline_mode", None)
    if hub_constants is not None and (is_offline() if is_offline else getattr(hub_constants, "HF_HUB_OFFLINE", False)):
        return "huggingface_hub was imported with HF_HUB_OFFLINE set (start a new process without it)"
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None and getattr(datasets_config, "HF_HUB_OFFLINE", False):
        return "datasets was imported with HF_HUB_OFFLINE or HF_DATASETS_OFFLINE set (start a new process without it)"
    return None


def is_offline_mode() -> bool:
    """Whether the Hugging Face Hub is off limits (see :func:`offline_reason`).

    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"HF_HUB_OFFLINE": "YES"}):
    ...     is_offline_mode()
    True
    """
    return offline_reason() is not None
