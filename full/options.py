"""Command-line options with their rules: dataclass fields as options (`option`, `add_options`) and argparse
``type=`` validators for plain options (`checked`, `power_of_two`, `positive_int`, ...).

A field may carry a `Check` (a range or a set of choices). The same check runs twice: when argparse reads
the option (so ``--alpha nan`` or ``--batch 0`` stops at the command line with one line naming the option,
the value and what would work: ``argument --batch: 0 is not allowed; it must be a number >= 1``) and in
`check_fields`, which configs call from ``validate()`` so that presets and code that builds a config directly
are held to the same rules. Floats must always be finite.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Callable

from full.errors import ConfigError, SidError


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


def option(default, help: str, check: Check | None = None, *, bookkeeping: bool = False):
    """A dataclass field with its --help text, an optional `Check` (use tuples for sequence defaults), and whether
    it is bookkeeping (how a run is run or recorded) rather than part of what it computes."""
    return dataclasses.field(default=default, metadata={"help": help, "check": check, "bookkeeping": bookkeeping})


def requirement(value, check: Check | None) -> str | None:
    """What `value` breaks ("it must be a finite number", ...), or None if it is fine (None means 'not set')."""
    if value is None or isinstance(value, (bool, str)) and check is None:
        return None
    for v in value if isinstance(value, tuple) else (value,):
        if isinstance(v, float) and not math.isfinite(v):
            return "it must be a finite number"
        if check is not None and not check.holds(v):
            return f"it must be {check.describe()}"
    return None


def check_fields(config) -> None:
    """Raise `ConfigError` (one line) for the first field of dataclass `config` that breaks its check."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        message = requirement(value, f.metadata.get("check"))
        if message:
            raise ConfigError(f"--{f.name.replace('_', '-')} {value!r} is not allowed; {message}")


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


_NAMES = {int: "a whole number", float: "a number"}


def checked(parse: Callable[[str], object], check: Check | None = None) -> Callable[[str], object]:
    """argparse ``type=``: ``parse``, then finiteness and `check`, as argparse type errors that quote the value."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {_NAMES.get(parse, 'valid')}") from None
        except argparse.ArgumentTypeError:
            raise
        message = requirement(value, check)
        if message:
            raise argparse.ArgumentTypeError(f"{text} is not allowed; {message}")
        return value
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def power_of_two(low: int = 1, high: int = 4096) -> Callable[[str], int]:
    """argparse ``type=``: a power of two in [low, high] (image sides)."""
    number = checked(int, Range(low, high))

    def convert(text: str) -> int:
        value = number(text)
        if value & (value - 1):
            raise argparse.ArgumentTypeError(f"{text} is not a power of two; EDM's networks halve the image side "
                                             f"at every level (e.g. {1 << (value.bit_length() - 1)} or "
                                             f"{1 << value.bit_length()})")
        return value
    convert.__name__ = "int"
    return convert


def library(parse: Callable[[str], object]) -> Callable[[str], object]:
    """argparse ``type=`` from a parser that raises `SidError` (e.g. `full.eval.sampling.parse_seeds`)."""
    def convert(text: str):
        try:
            return parse(text)
        except SidError as error:
            raise argparse.ArgumentTypeError(str(error).split(": ", 1)[-1]) from None
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


positive_int = checked(int, AT_LEAST_ONE)
nonnegative_int = checked(int, NONNEGATIVE)
positive_float = checked(float, POSITIVE)


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
                            type=checked(_parser_for(hints[f.name]), check), default=None,
                            metavar=hints[f.name].__name__ if isinstance(hints[f.name], type) else "VALUE",
                            help=f"{f.metadata.get('help', '')} (default: {shown})")


def overrides(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}
