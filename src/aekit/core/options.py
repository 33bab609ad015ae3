"""Declaring config fields once: :func:`option` puts a field's help, choices and numeric range in its metadata,
and the rest of aekit reads them from there -- validation (:meth:`Option.check`), the ``aekit train`` flags,
the scikit-learn estimator's parameters. Also the JSON side of configs: strict types, no unknown keys.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import AekitError


class Interval(NamedTuple):
    """A numeric range written as in mathematics, ``"(0, 10]"`` or ``"[1, inf)"``; None is unbounded."""

    low: float | None
    high: float | None
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text: str) -> Interval:
        match = re.fullmatch(r"([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])", text.strip())
        if match is None:
            raise ValueError(f"not an interval: {text!r}")
        left, low, high, right = match.groups()

        def bound(s: str) -> float | None:
            return None if s in ("-inf", "inf") else int(s) if re.fullmatch(r"-?\d+", s) else float(s)

        return cls(bound(low), bound(high), left == "[", right == "]")

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.low is None or (value >= self.low if self.low_closed else value > self.low)
        below = self.high is None or (value <= self.high if self.high_closed else value < self.high)
        return above and below

    def __str__(self) -> str:
        low = "-inf" if self.low is None else show(self.low)
        high = "inf" if self.high is None else show(self.high)
        return f"{'[' if self.low_closed else '('}{low}, {high}{']' if self.high_closed else ')'}"

    def describe(self) -> str:
        """For help texts: ``>= 1`` when unbounded above, else ``in (0, 10]``."""
        return self._side(low=True) if self.high is None else f"in {self}"

    def requirement(self, *, integer: bool) -> str:
        """For error messages: ``> 0 and <= 10``, ``>= 1``, ``between 1 and 4096`` (integers)."""
        if self.high is None:
            positive = not integer and self.low == 0 and not self.low_closed
            return "a positive number" if positive else self._side(low=True)
        if self.low is None:
            return self._side(low=False)
        if integer and self.low_closed and self.high_closed:
            return f"between {show(self.low)} and {show(self.high)}"
        return f"{self._side(low=True)} and {self._side(low=False)}"

    def _side(self, *, low: bool) -> str:
        if low:
            return f"{'>=' if self.low_closed else '>'} {show(self.low)}"
        return f"{'<=' if self.high_closed else '<'} {show(self.high)}"


@dataclass(frozen=True)
class Option:
    """A config field that a user sets, as :func:`options` lists it.

    Attributes
    ----------
    name, part, type, default
        The field's name, the part it belongs to (``data``, ``model``, ``objective`` or ``train``), its type
        annotation and its dataclass default.
    help : str
        What it does, without its range or defaults (:meth:`describe` adds them).
    choices : tuple or callable, optional
        The allowed values, or a function returning them when asked (``likelihood``: the registry grows).
    interval : Interval, optional
        The allowed numbers (each item's, for a tuple).
    metavar : str, optional
        The value's name on the command line, e.g. ``H,W``.
    family_defaults : dict
        The families whose preset sets this option, and to what (``{"dae": 0.5}`` for ``noise_std``).
    """

    name: str
    part: str
    type: Any
    default: Any
    help: str
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None
    interval: Interval | None = None
    metavar: str | None = None
    family_defaults: dict[str, Any] = dataclasses.field(default_factory=dict)  # the presets that set it, to what

    @property
    def flag(self) -> str:
        """The ``aekit train`` flag, e.g. ``--noise-std``."""
        return "--" + self.name.replace("_", "-")

    def allowed(self) -> tuple[Any, ...] | None:
        """The allowed values, read now (registries may have grown since the field was declared)."""
        return self.choices() if callable(self.choices) else self.choices

    def check(self, value: Any) -> None:
        """Raise :class:`AekitError` unless ``value`` (already of the field's type) is allowed; None passes."""
        if value is None:
            return
        allowed = self.allowed()
        if allowed is not None and value not in allowed:
            raise AekitError(f"{self.name} must be {one_of(allowed)} (got {value!r})")
        if self.interval is not None:
            for item in value if isinstance(value, tuple) else (value,):
                if item not in self.interval:
                    what = f"{self.name} values" if isinstance(value, tuple) else self.name
                    requirement = self.interval.requirement(integer=isinstance(item, int))
                    raise AekitError(f"{what} must be {requirement} (got {item!r})")

    def default_text(self) -> str:
        """``default 0; dae: 0.5``: the dataclass default and each family's own (empty for a None default)."""
        shown = [] if self.default in (None, ()) else [f"default {show(self.default)}"]
        shown += [f"{family}: {show(value)}" for family, value in self.family_defaults.items()]
        return "; ".join(shown)

    def describe(self, *, defaults: bool = True) -> str:
        """The help text with the range and (unless ``defaults=False``) the defaults, e.g. ``std of the Gaussian
        input corruption; in [0, 2] (default 0; dae: 0.5)``. Choices are not repeated: the command line and the
        estimator's docstring show them."""
        text = self.help
        if self.interval is not None:
            each = "each " if is_tuple(self.type) else ""
            text += f"; {each}{self.interval.describe()}"
        shown = self.default_text() if defaults else ""
        return f"{text} ({shown})" if shown else text


def option(default: Any, help: str, *, choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None,
           bounds: str | None = None, metavar: str | None = None) -> Any:
    """Declare a config field that a user sets: a ``dataclasses.field`` whose metadata documents it.

    ``bounds`` is the allowed range in interval notation, e.g. ``"(0, 10]"`` or ``"[1, inf)"``; a float
    must also be finite. See :class:`Option` for the rest.
    """
    interval = Interval.parse(bounds) if bounds is not None else None
    spec = {"help": help, "choices": choices, "interval": interval, "metavar": metavar}
    return field(default=default, metadata={"option": spec})


def check_value(name: str, value: Any, interval: Interval) -> None:
    """Raise a one-line :class:`AekitError` unless the number ``value`` lies in ``interval`` (and is finite)."""
    if value not in interval:
        raise AekitError(f"{name} must be {interval.requirement(integer=isinstance(value, int))} (got {value!r})")


def declared(part_cls: type, part: str, family_defaults: dict[str, dict[str, Any]]) -> tuple[Option, ...]:
    """The options declared in dataclass ``part_cls`` (a config part named ``part``), in declaration order;
    ``family_defaults`` maps each family to the values its preset sets."""
    hints = typing.get_type_hints(part_cls)
    return tuple(
        Option(f.name, part, hints[f.name], f.default, **f.metadata["option"],
               family_defaults={fam: values[f.name] for fam, values in family_defaults.items() if f.name in values})
        for f in dataclasses.fields(part_cls) if "option" in f.metadata
    )


def from_dict(cls: type, raw: Any, *, where: str) -> Any:
    """Build dataclass ``cls`` from a JSON object, refusing unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise AekitError(f"{where} must be a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}
    no_unknown_keys(where, raw, names)
    try:
        return cls(**raw)
    except AekitError as err:
        raise AekitError(f"{where}: {err}") from None


def no_unknown_keys(where: str, raw: dict, known: set[str]) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise AekitError(f"{where} has unknown key(s): {', '.join(unknown)}")


def check_types(obj: Any) -> None:
    """Check (and gently coerce: list -> tuple, int -> float) each field against its annotation."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        coerced = _coerce(value, hints[f.name])
        if coerced is _BAD:
            raise AekitError(
                f"{f.name} has the wrong type: {value!r} ({type(value).__name__})"
            )
        setattr(obj, f.name, coerced)


_BAD = object()


def _coerce(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            out = _coerce(value, option)
            if out is not _BAD:
                return out
        return _BAD
    if hint is type(None):
        return None if value is None else _BAD
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _BAD
        args = typing.get_args(hint)
        item = args[0]
        items = [_coerce(v, item) for v in value]
        if any(v is _BAD for v in items):
            return _BAD
        if len(args) == 2 and args[1] is not Ellipsis:
            item_hints = args
            if len(value) != len(item_hints):
                return _BAD
        return tuple(items)
    if hint is bool:
        return value if isinstance(value, bool) else _BAD
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer beyond any float: out of every range anyway
                return _BAD
        return _BAD
    if hint is str:
        return value if isinstance(value, str) else _BAD
    return value


def check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise AekitError(f"{name} must be {one_of(allowed)} (got {value!r})")


def one_of(values: tuple[Any, ...]) -> str:
    """``one of mlp, conv`` for names; ``1 or 3`` for numbers."""
    if all(isinstance(v, str) for v in values):
        return f"one of {', '.join(values)}"
    shown = [show(v) for v in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def show(value: Any) -> str:
    """A value as a user writes it: ``0.001``, ``10``, ``512,256``."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(show, value))
    return str(value)


def is_tuple(hint: Any) -> bool:
    """``tuple[int, ...]``, ``tuple[int, int] | None``: a tuple, optional or not."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(is_tuple(h) for h in typing.get_args(hint))
    return typing.get_origin(hint) is tuple
