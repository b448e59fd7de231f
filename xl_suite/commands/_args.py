"""Flags shared by several commands, generated from the job configs (:mod:`xl_suite.configuration`)."""

from __future__ import annotations

import argparse

from xl_suite.configuration import add_arguments, from_args


__all__ = ["add_engine_arguments", "engine_spec", "add_config_file_argument"]


def add_engine_arguments(parser: argparse.ArgumentParser, *, prefix: str = "", title: str | None = None) -> None:
    """``--[prefix-]model/backend/revision/engine-kwargs`` from :class:`~xl_suite.engines.spec.EngineSpec`."""
    from xl_suite.engines.spec import EngineSpec

    add_arguments(parser, EngineSpec, prefix=prefix, title=title)


def engine_spec(args: argparse.Namespace, *, prefix: str = ""):
    """The :class:`~xl_suite.engines.spec.EngineSpec` of a parsed command line."""
    from xl_suite.engines.spec import EngineSpec

    return from_args(EngineSpec, args, prefix=prefix)


def add_config_file_argument(parser: argparse.ArgumentParser) -> None:
    """``--config-file FILE``: YAML/JSON settings with the flags' names; the command line wins over the file."""
    parser.add_argument(
        "--config-file",
        default=None,
        metavar="FILE",
        help="YAML or JSON file of settings named like the flags (model: ..., max_tokens: ...); "
        "flags given on the command line win; unknown keys are an error",
    )
