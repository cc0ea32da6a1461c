"""Command-line flags from dataclass fields: the one parser every command, recipe and evaluation
uses (`--name` per field, typed from its annotation). At the bottom of ulvideo: no ulvideo imports."""

import argparse
import dataclasses
import json
import types
import typing


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One `--name` flag per dataclass field, typed from its annotation, defaulting to None."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        parser.add_argument(
            f"--{f.name}", type=_parser_for(hints[f.name]), default=None, help=_help(f)
        )


def _help(f) -> str:
    return f"default: {f.default_factory() if f.default is dataclasses.MISSING else f.default}"


def _parse_bool(text: str) -> bool:
    if text.lower() not in ("1", "true", "yes", "0", "false", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("1", "true", "yes")


def _parse_json(text: str):
    """A JSON object/list, or a comma-separated list of numbers (`0.9,0.99`)."""
    return json.loads(text if text.strip().startswith(("{", "[")) else f"[{text}]")


def _parser_for(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is bool:
        return _parse_bool
    if hint is dict or typing.get_origin(hint) in (dict, tuple):
        return _parse_json
    return hint
