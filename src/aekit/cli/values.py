"""Reading the command line's values: one-line errors, bounded numbers, widths and sizes, and the flags of
``aekit train`` generated from the config's option declarations (:func:`aekit.core.config.options`)."""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Callable
from typing import Any


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse would print the whole usage)
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def bounded(flag: str, kind: type, bounds: str) -> Callable[[str], Any]:
    """A flag's value type: a number of ``kind`` in ``bounds`` (interval notation, finite), refused at parse time."""
    from ..core.options import Interval

    interval = Interval.parse(bounds)

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes {'a whole number' if kind is int else 'a number'}, "
                                             f"not {text!r}") from None
        if value not in interval:
            raise argparse.ArgumentTypeError(
                f"{flag} must be {interval.requirement(integer=kind is int)} (got {text})")
        return value

    return parse


SEED = bounded("--seed", int, f"[0, {2**64 - 1}]")
LIMIT = bounded("--limit", int, "[1, inf)")


def size(text: str) -> tuple[int, int]:
    values = int_list(text)
    if len(values) == 1:
        return (values[0], values[0])
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected H,W or one size, got {text!r}")
    return values  # type: ignore[return-value]


def value_parser(hint: Any) -> Callable[[str], Any]:
    """How a flag reads the value of an option of type ``hint``: ``int``, ``float``, ``str``, ``512,256``, ``32,32``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: the flag's absence is None
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
    if typing.get_origin(hint) is tuple:
        return int_list if typing.get_args(hint)[-1] is Ellipsis else size
    return hint


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config option (``--noise-std`` for ``noise_std``), generated from its declaration in
    :mod:`aekit.core.config`, in a group per part. Every default is None: the family's preset decides."""
    from ..core.config import options

    titles = {"data": "data", "model": "model", "objective": "objective", "train": "training"}
    groups: dict[str, Any] = {}
    for opt in options():
        if opt.part not in groups:
            groups[opt.part] = parser.add_argument_group(f"{titles[opt.part]} options")
        allowed = opt.allowed()
        kwargs: dict[str, Any] = {"type": value_parser(opt.type), "default": None,
                                  "help": opt.describe().replace("%", "%%")}
        if allowed is not None and all(isinstance(v, str) for v in allowed):
            kwargs["choices"] = allowed  # names: argparse refuses others; numbers are the config's to check
        elif allowed is not None:
            kwargs["metavar"] = "{" + ",".join(map(str, allowed)) + "}"
        if opt.metavar is not None:
            kwargs["metavar"] = opt.metavar
        if opt.type is bool:  # --flip / --no-flip
            kwargs = {"action": argparse.BooleanOptionalAction, "default": None, "help": kwargs["help"]}
        groups[opt.part].add_argument(opt.flag, **kwargs)
