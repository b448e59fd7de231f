"""Judge presets: which judge (and reference model) to use and how to run it, as data.

Shipped presets live in ``xl_suite/data/judge_presets.json``; a user's preset is a JSON or YAML file holding one
mapping with the same keys. Unknown keys are rejected (never silently ignored), and values given on the command
line or as keyword arguments override the preset, which overrides the defaults of :class:`JudgePreset` and
:class:`~xl_suite.evaluation.judging.JudgeConfig`.

Shipped presets:

* ``gpt-4o``: the paper's setup (GPT-4o judge, GPT-4o-mini references, OpenAI API) with pinned snapshots. The
  paper's judge prompt, tie rule and fine-grained metrics are unknown; ours are used.
* ``local-vllm``: any local model as judge through vLLM (``judge_model`` must be given).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from xl_suite.errors import InvalidArgumentError
from xl_suite.evaluation.judging import JudgeConfig


logger = logging.getLogger(__name__)

__all__ = ["JudgePreset", "load_preset", "list_presets"]

_JUDGE_FIELDS = {f.name for f in dataclasses.fields(JudgeConfig)}


@dataclass(frozen=True)
class JudgePreset:
    """A named judge setup.

    Args:
        name: preset name (``"gpt-4o"``) or the file it came from.
        description: what the preset is for.
        version: bump when a change alters judgments (recorded in reports).
        judge_backend: ``"vllm"``, ``"openai"``, ``"transformers"`` or ``"fake"``. Default ``"vllm"``.
        judge_model: model id or local path of the judge; None means "must be given at use time".
        judge_revision: pinned revision (commit SHA) of the judge, where the backend has one.
        judge_engine_kwargs: extra keyword arguments for :func:`xl_suite.engines.registry.build_generator`.
        reference_backend: backend of the reference model (for ``xl-suite generate --as-reference``).
        reference_model: the reference model (the paper: GPT-4o-mini).
        reference_revision: its pinned revision.
        judge: judging settings (:class:`~xl_suite.evaluation.judging.JudgeConfig`); in files, its fields sit at the top level.
    """

    name: str
    description: str = ""
    version: int = 1
    judge_backend: str = "vllm"
    judge_model: str | None = None
    judge_revision: str | None = None
    judge_engine_kwargs: dict = field(default_factory=dict)
    reference_backend: str | None = None
    reference_model: str | None = None
    reference_revision: str | None = None
    judge: JudgeConfig = field(default_factory=JudgeConfig)

    def __post_init__(self):
        """Check the backend names."""
        from xl_suite.engines.registry import BACKENDS

        for attr in ("judge_backend", "reference_backend"):
            value = getattr(self, attr)
            if value is not None and value not in BACKENDS:
                raise InvalidArgumentError(
                    f"Preset {self.name!r}: {attr}={value!r} is not a backend; choose one of {list(BACKENDS)}."
                )

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> JudgePreset:
        """Build a preset from a flat mapping; unknown keys raise ``ValueError`` naming the allowed ones."""
        if not isinstance(data, dict):
            raise InvalidArgumentError(f"Preset {name!r} must be a mapping of settings, got {type(data).__name__}.")
        own = {f.name for f in dataclasses.fields(cls)} - {"name", "judge"}
        unknown = sorted(set(data) - own - _JUDGE_FIELDS)
        if unknown:
            raise InvalidArgumentError(
                f"Preset {name!r} has unknown keys {unknown}. Allowed keys: {sorted(own | _JUDGE_FIELDS)}."
            )
        judge_kwargs = {k: v for k, v in data.items() if k in _JUDGE_FIELDS}
        if "dimensions" in judge_kwargs and judge_kwargs["dimensions"] is None:
            del judge_kwargs["dimensions"]
        return cls(name=name, judge=JudgeConfig(**judge_kwargs), **{k: v for k, v in data.items() if k in own})

    def with_overrides(self, **overrides) -> JudgePreset:
        """A copy with some settings replaced (``None`` values are ignored); unknown keys raise ``ValueError``."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if not overrides:
            return self
        data = self.to_dict()
        data.pop("name")
        data.update(overrides)
        return JudgePreset.from_dict(self.name, data)

    def to_dict(self) -> dict[str, Any]:
        """Flat, JSON-serialisable mapping (the file format)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "judge"}
        out.update(self.judge.to_dict())
        return out

    def build_judge(self, **engine_kwargs):
        """Build the judge backend (heavy imports happen here)."""
        from xl_suite.engines.registry import build_generator

        if not self.judge_model:
            raise InvalidArgumentError(
                f"Preset {self.name!r} names no judge model: pass one (CLI --judge-model, Python "
                "load_preset(..., judge_model=...), evaluate.load(..., judge_model=...))."
            )
        return build_generator(
            self.judge_backend,
            self.judge_model,
            revision=self.judge_revision,
            **{**self.judge_engine_kwargs, **engine_kwargs},
        )


def _shipped() -> dict[str, dict]:
    text = (resources.files("xl_suite") / "data" / "judge_presets.json").read_text(encoding="utf-8")
    data = json.loads(text)
    if len(set(data)) != len(data):  # json.loads keeps the last duplicate; the count check is for clarity
        raise InvalidArgumentError("Duplicate preset names in judge_presets.json.")
    return data


def list_presets() -> list[str]:
    """Names of the shipped presets.

    >>> list_presets()
    ['gpt-4o', 'local-vllm']
    """
    return sorted(_shipped())


def load_preset(name_or_path: str | Path, **overrides) -> JudgePreset:
    """Load a shipped preset by name, or a user's ``.json``/``.yaml`` preset file, then apply overrides.

    Args:
        name_or_path: a name from :func:`list_presets` or a file path.
        **overrides: settings to replace (``judge_model="..."``, ``order="random"``...); None values are ignored.

    Raises:
        ValueError: unknown preset name, unknown keys, or invalid values.

    >>> p = load_preset("gpt-4o")
    >>> p.judge_model, p.reference_model, p.judge.temperature, p.judge.order
    ('gpt-4o-2024-08-06', 'gpt-4o-mini-2024-07-18', 0.0, 'both')
    >>> load_preset("local-vllm", judge_model="/models/judge").judge_model
    '/models/judge'
    >>> load_preset("gpt-4o", colour="red")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: Preset 'gpt-4o' has unknown keys ['colour']. ...
    """
    s = str(name_or_path)
    shipped = _shipped()
    if s in shipped:
        preset = JudgePreset.from_dict(s, shipped[s])
    elif s.endswith((".json", ".yaml", ".yml")):
        path = Path(s).expanduser()
        if not path.is_file():
            raise InvalidArgumentError(f"Preset file {s!r} does not exist.")
        try:
            text = path.read_text(encoding="utf-8")
            if s.endswith(".json"):
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as e:  # noqa: BLE001 - OSError, UnicodeDecodeError, JSONDecodeError, YAMLError: say where
            detail = " ".join(str(e).split())
            raise InvalidArgumentError(
                f"Preset file {s!r} is not valid {'JSON' if s.endswith('.json') else 'YAML'} ({detail}). Fix it, or "
                f"use a shipped preset: {sorted(shipped)}."
            ) from None
        if not isinstance(data, dict):
            raise InvalidArgumentError(
                f"Preset file {s!r} must hold a mapping of settings (judge_model: ..., judge: {{...}}), got "
                f"{type(data).__name__}."
            )
        preset = JudgePreset.from_dict(str(path), data)
    else:
        raise InvalidArgumentError(
            f"Unknown judge preset {s!r}. Shipped presets: {sorted(shipped)}; or pass a .json/.yaml file."
        )
    return preset.with_overrides(**overrides)
