"""Configuration dataclasses as command-line options: one `option()` per field, argparse on top.

A field may carry a `Check` (a range or a set of choices). The same check runs twice: when argparse reads
the option (so ``--alpha nan`` or ``--batch 0`` stops at the command line with one line naming the option)
and in `check_fields`, which configs call from ``validate()`` so that presets and code that builds a
config directly are held to the same rules. Floats must always be finite.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass

from full.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """low <= value <= high (either end open or absent)."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return "a number " + " and ".join(parts)


@dataclass(frozen=True)
class Choices:
    """One of a fixed set of values."""
    values: tuple

    def holds(self, value) -> bool:
        return value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(map(str, self.values))


Check = typing.Union[Range, Choices]
POSITIVE = Range(0, low_open=True)
NONNEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
PROBABILITY = Range(0, 1)


def option(default, help: str, check: Check | None = None):
    """A dataclass field with its --help text and an optional `Check` (use tuples for sequence defaults)."""
    return dataclasses.field(default=default, metadata={"help": help, "check": check})


def problem(name: str, value, check: Check | None) -> str | None:
    """Why `value` cannot be the option `name`, or None if it can (None values are 'not set')."""
    if value is None or isinstance(value, (bool, str)) and check is None:
        return None
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            return f"--{name.replace('_', '-')} {v}: must be a finite number"
        if check is not None and not check.holds(v):
            return f"--{name.replace('_', '-')} {v!r}: must be {check.describe()}"
    return None


def check_fields(config) -> None:
    """Raise `ConfigError` (one line) for the first field of dataclass `config` that breaks its check."""
    for f in dataclasses.fields(config):
        message = problem(f.name, getattr(config, f.name), f.metadata.get("check"))
        if message:
            raise ConfigError(message)


def _parse_bool(text: str) -> bool:
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


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


def _checked(parse, name: str, check: Check | None):
    """`parse`, then the finiteness and `check` tests, as argparse type errors (one line, names the option)."""
    def convert(text: str):
        value = parse(text)
        message = problem(name, value, check)
        if message:
            raise argparse.ArgumentTypeError(message.split(": ", 1)[1])
        return value
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def add_options(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """Add ``--field-name`` for every field of dataclass `cls`; unset options stay None."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        check = f.metadata.get("check")
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name,
                            type=_checked(_parser_for(hints[f.name]), f.name, check), default=None,
                            metavar=hints[f.name].__name__ if isinstance(hints[f.name], type) else "VALUE",
                            help=f"{f.metadata.get('help', '')} (default: {shown})")


def overrides(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}
