"""One config object per job: dataclasses whose fields carry their help text, turned into CLI flags and read from
YAML/JSON files with the same names.

A field is declared with :func:`option` (TRL's ``field(default=..., metadata={"help": ...})``). From the dataclass,
:func:`add_arguments` makes the argparse flags (``--field-name``; a bool that defaults to True becomes
``--no-field-name``), :func:`from_args` builds the object back from the parsed namespace, and :func:`from_mapping`
builds it from a config file's mapping, where an unknown key is an error. So the CLI, Python and config files share
one definition, and the CLI's defaults are the dataclass's.

>>> from dataclasses import dataclass
>>> @dataclass
... class Demo:
...     size: int = option(4, "rows per chunk")
...     dedup: bool = option(True, "remove duplicates")
>>> import argparse
>>> p = argparse.ArgumentParser(prog="demo")
>>> add_arguments(p, Demo)
>>> from_args(Demo, p.parse_args(["--size", "8", "--no-dedup"]))
Demo(size=8, dedup=False)
>>> from_mapping(Demo, {"size": 2}, source="demo.yaml")
Demo(size=2, dedup=True)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from xl_suite.errors import InvalidArgumentError


__all__ = [
    "option",
    "add_arguments",
    "from_args",
    "from_mapping",
    "read_config_file",
    "apply_config_file",
    "parse_json_object",
    "cli_fields",
    "dests",
]

_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    default_factory: Callable[[], Any] | None = None,
    flag: str | None = None,
    cli: bool = True,
    required: bool = False,
    choices: list | tuple | None = None,
    metavar: str | None = None,
    parse: Callable[[str], Any] | None = None,
    append: bool = False,
) -> Any:
    """A dataclass field with its help text and how it appears on the command line.

    Args:
        default: the default value.
        help: one line of help; shown by ``--help`` and kept as the field's documentation.
        default_factory: for mutable defaults.
        flag: the flag when it is not ``--<field-name>`` (e.g. ``"--template"``).
        cli: False keeps the field out of the CLI (Python and config files only).
        required: the flag must be given on the command line (the dataclass may still have a default).
        choices: allowed values.
        metavar: the value's name in ``--help``.
        parse: converts the flag's text (default: from the field's type).
        append: the flag may be repeated; the values are collected in a list.
    """
    metadata = {
        "help": help,
        "flag": flag,
        "cli": cli,
        "required": required,
        "choices": choices,
        "metavar": metavar,
        "parse": parse,
        "append": append,
    }
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _base_type(annotation, owner) -> tuple[type, bool]:
    """The field's scalar type and whether ``None`` is allowed."""
    if isinstance(annotation, str):
        hints = typing.get_type_hints(owner)
        raise AssertionError(f"unresolved annotation {annotation!r}: {hints}")  # pragma: no cover
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        inner, _ = _base_type(non_none[0], owner) if len(non_none) == 1 else (str, False)
        return inner, type(None) in args
    if origin is typing.Literal:
        return type(args[0]), False
    if origin in (tuple, list):
        return str, False
    return (annotation if isinstance(annotation, type) else str), False


def cli_fields(cls) -> list[dataclasses.Field]:
    """The fields of ``cls`` that appear on the command line."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True) and f.init]


def _flag(f: dataclasses.Field, prefix: str) -> str:
    name = f.metadata.get("flag") or f"--{f.name.replace('_', '-')}"
    return name if not prefix else f"--{prefix}-{name[2:]}"


def _default(f: dataclasses.Field):
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return None


def _float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add_arguments(parser, cls, *, prefix: str = "", title: str | None = None) -> None:
    """Add one flag per CLI field of the dataclass ``cls`` (to a group titled ``title`` when given).

    Args:
        parser: an ``argparse.ArgumentParser`` (or argument group).
        cls: the dataclass.
        prefix: flag prefix, e.g. ``"judge"`` gives ``--judge-model``; the namespace keys get ``<prefix>_``.
        title: argument group title.
    """
    hints = typing.get_type_hints(cls)
    target = parser.add_argument_group(title) if title else parser
    for f in cli_fields(cls):
        meta = f.metadata
        dest = f"{prefix}_{f.name}" if prefix else f.name
        default = _default(f)
        typ, optional = _base_type(hints[f.name], cls)
        help_text = meta.get("help", "")
        if typ is bool and not meta.get("parse"):
            if default is True:
                flag = _flag(f, prefix)
                target.add_argument(
                    f"--no-{flag[2:]}",
                    dest=dest,
                    action="store_false",
                    default=True,
                    help=f"{help_text} (on by default; this flag turns it off)",
                )
            else:
                target.add_argument(
                    _flag(f, prefix), dest=dest, action="store_true", default=bool(default), help=help_text
                )
            continue
        kwargs: dict[str, Any] = {"dest": dest, "help": help_text}
        if meta.get("parse"):
            kwargs["type"] = meta["parse"]
        elif typ is int:
            kwargs["type"] = int
        elif typ is float:
            kwargs["type"] = _float
        if meta.get("choices"):
            kwargs["choices"] = list(meta["choices"])
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if meta.get("append"):
            kwargs["action"] = "append"
            kwargs["default"] = []
        else:
            kwargs["default"] = default if not isinstance(default, (list, tuple, dict)) else None
        if meta.get("required"):
            kwargs["help"] = f"{help_text} (required, on the command line or in --config-file)"
        elif not meta.get("append") and kwargs.get("default") is not None and "default" not in help_text:
            kwargs["help"] = f"{help_text} (default: {kwargs['default']})"
        target.add_argument(_flag(f, prefix), **kwargs)


def from_args(cls, args: argparse.Namespace, *, prefix: str = "", **overrides):
    """Build ``cls`` from a parsed namespace: CLI fields from ``args``, the others from their defaults.

    Raises:
        InvalidArgumentError: a required flag is missing (the message names it), or the dataclass rejects a value.
    """
    values = {}
    for f in cli_fields(cls):
        dest = f"{prefix}_{f.name}" if prefix else f.name
        if f.metadata.get("required") and getattr(args, dest, None) in (None, "", []):
            raise InvalidArgumentError(
                f"{_flag(f, prefix)} is required (give it on the command line or in a --config-file)."
            )
        if hasattr(args, dest):
            value = getattr(args, dest)
            if value is None and isinstance(_default(f), (list, tuple, dict)):
                continue  # a collection flag that was not given: keep the dataclass default
            values[f.name] = value
    values.update(overrides)
    return cls(**values)


def from_mapping(cls, data: Mapping[str, Any], *, source: str):
    """Build ``cls`` from a mapping (a config file); an unknown key is an error naming the allowed ones."""
    if not isinstance(data, Mapping):
        raise InvalidArgumentError(f"{source}: expected a mapping of settings, got {type(data).__name__}.")
    allowed = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidArgumentError(f"{source}: unknown keys {unknown}. Allowed keys: {sorted(allowed)}.")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data or data[f.name] is None:
            continue
        typ, _ = _base_type(hints[f.name], cls)
        value = data[f.name]
        if typ is bool and not isinstance(value, bool):
            raise InvalidArgumentError(
                f"{source}: {f.name} must be true or false (a YAML boolean, not a string), got {value!r}."
            )
        if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidArgumentError(f"{source}: {f.name} must be an integer, got {value!r}.")
    try:
        return cls(**dict(data))
    except TypeError as e:
        raise InvalidArgumentError(f"{source}: {e}") from e


def dests(parser: argparse.ArgumentParser) -> set[str]:
    """Namespace keys of every flag of ``parser`` (the keys a ``--config-file`` may set)."""
    return {a.dest for a in parser._actions if a.dest not in ("help", argparse.SUPPRESS)}


def apply_config_file(parser: argparse.ArgumentParser, argv: list[str], path: str) -> argparse.Namespace:
    """Parse ``argv`` with the settings of a config file as defaults: the command line wins over the file.

    Raises:
        InvalidArgumentError: the file is unreadable, or names a setting the command does not have.
    """
    data = read_config_file(path)
    known = dests(parser) - {"config_file"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidArgumentError(f"Config file {path!r}: unknown keys {unknown}. Allowed keys: {sorted(known)}.")
    repeatable = {a.dest for a in parser._actions if isinstance(a, argparse._AppendAction)}
    actions = {a.dest: a for a in parser._actions}
    for key, value in data.items():
        data[key] = value = _file_value(actions[key], value, path)
        if key in repeatable:  # a repeatable flag (--template STAGE=PATH): a list, or a mapping of STAGE: PATH
            if isinstance(value, dict):
                value = [f"{k}={v}" for k, v in value.items()]
            data[key] = [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        elif isinstance(value, (list, tuple)):
            data[key] = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            data[key] = json.dumps(value)
    parser.set_defaults(**data)
    return parser.parse_args(argv)


def _file_value(action: argparse.Action, value: Any, path) -> Any:
    """A config file's value for ``action``, checked as the flag's text would be: a switch takes a real boolean
    (``dry_run: 'false'``, a string, would otherwise mean true), a number flag a number of its type, a choice one
    of its choices.

    >>> p = argparse.ArgumentParser()
    >>> a = p.add_argument("--chunk-size", type=int)
    >>> _file_value(a, 1.5, "job.yaml")
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: Config file 'job.yaml': chunk_size must be an integer, got 1.5.
    >>> b = p.add_argument("--dry-run", action="store_true")
    >>> _file_value(b, "false", "job.yaml")
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: Config file 'job.yaml': dry_run must be true or false (a YAML boolean, not a string), got 'false'.
    """
    name = action.dest
    if value is None:
        return value
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction | argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise InvalidArgumentError(
                f"Config file {str(path)!r}: {name} must be true or false (a YAML boolean, not a string), got "
                f"{value!r}."
            )
        return value
    if action.type in (int, float, _float):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (action.type is int and value != int(value))
        ):
            kind = "an integer" if action.type is int else "a number"
            raise InvalidArgumentError(f"Config file {str(path)!r}: {name} must be {kind}, got {value!r}.")
        value = int(value) if action.type is int else float(value)
    if action.choices is not None and not isinstance(value, list | tuple | dict) and value not in action.choices:
        raise InvalidArgumentError(
            f"Config file {str(path)!r}: {name} must be one of {list(action.choices)}, got {value!r}."
        )
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (keys with ``-`` are read as ``_``).

    Raises:
        InvalidArgumentError: the file is missing, unreadable, not a mapping, or malformed (the message names it).
    """
    p = Path(path)
    if p.is_dir():
        raise InvalidArgumentError(f"Config file {str(p)!r} is a folder. Pass a YAML or JSON file.")
    if not p.is_file():
        raise InvalidArgumentError(f"Config file {str(p)!r} does not exist.")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidArgumentError(f"Config file {str(p)!r} cannot be read as UTF-8 text: {e}") from e
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError or json.JSONDecodeError: the message says where
        raise InvalidArgumentError(
            f"Config file {str(p)!r} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}"
        ) from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidArgumentError(
            f"Config file {str(p)!r} must hold a mapping of settings, got {type(data).__name__}."
        )
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def parse_json_object(text: str | None, flag: str) -> dict:
    """Parse a flag's JSON object (``{}`` for an empty value); the error names the flag.

    >>> parse_json_object('{"a": 1}', "--engine-kwargs")
    {'a': 1}
    >>> parse_json_object("[1]", "--storage-options")
    Traceback (most recent call last):
    ...
    xl_suite.errors.InvalidArgumentError: --storage-options must be a JSON object, got '[1]'.
    """
    if not text:
        return {}
    if isinstance(text, dict):
        return dict(text)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidArgumentError(f"{flag} must be a JSON object, got {text!r} ({e.msg}).") from e
    if not isinstance(value, dict):
        raise InvalidArgumentError(f"{flag} must be a JSON object, got {text!r}.")
    return value
