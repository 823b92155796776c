"""Configuration dataclasses as command-line options: one `option()` per field, argparse on top."""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing


def option(default, help: str):
    """A dataclass field with its --help text (use mutable defaults via tuples)."""
    return dataclasses.field(default=default, metadata={"help": help})


def _parse_bool(text: str) -> bool:
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parser_for(tp):
    """argparse `type=` callable for a field annotation: scalars, Optional scalars and int tuples."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        base = _parser_for(inner[0])

        def optional(text: str):
            return None if text.lower() in {"none", "null", ""} else base(text)
        optional.__name__ = getattr(base, "__name__", "value")
        return optional
    if origin is tuple:
        item = _parser_for(args[0])

        def comma_separated(text: str):
            return tuple(item(part) for part in text.split(",") if part.strip())
        return comma_separated
    return {bool: _parse_bool}.get(tp, tp)


def add_options(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """Add ``--field-name`` for every field of dataclass `cls`; unset options stay None."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=_parser_for(hints[f.name]),
                            default=None, metavar=hints[f.name].__name__ if isinstance(hints[f.name], type) else "VALUE",
                            help=f"{f.metadata.get('help', '')} (default: {shown})")


def overrides(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}
