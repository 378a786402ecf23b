"""Valid ranges of numeric settings, checked one way everywhere.

    number(value, low=0, low_open=True)            # a float > 0, finite
    number(value, integer=True, low=1)             # an int >= 1
    field_number("lr", value, low=0, low_open=True)  # ValueError "lr: must be > 0, got -1"

A config dataclass calls `field_number` in its `__post_init__`, so its errors start with the
field's name ("b1: must be in [0, 1), got 1.5"); the run config reports them as
`config.optimizer.b1: ...`. NaN and infinity are never a valid setting: "must be a finite number,
got nan". Booleans are not numbers here (`True` is no learning rate). A config section whose
settings a dataclass holds is built from it (`defaults`), so each default is written once, in the
dataclass. This module imports nothing from soo_jax, so every layer may use it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable
from typing import Any


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _bound(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_show(low)}, {_show(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_show(low)}"
    return f"{'<' if high_open else '<='} {_show(high)}"


def number(value: Any, *, integer: bool = False, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> int | float:
    """`value` as an int (`integer`) or a float, if it is a finite number in the range; else
    ValueError saying what is wrong, without naming a key."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        try:  # numpy scalars and 0-d arrays count; strings do not
            import numpy as np

            if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
                return number(value.item(), integer=integer, low=low, high=high, low_open=low_open,
                              high_open=high_open)
        except ImportError:  # pragma: no cover
            pass
        raise ValueError(f"must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"must be a finite number, got {float(value)!r}")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"must be an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ValueError(f"must be {_bound(low, high, low_open, high_open)}, got {value!r}")
    return value


def field_number(name: str, value: Any, **bounds) -> int | float:
    """`number(value, **bounds)`, with the field's name leading an error ("lr: must be > 0, got -1")."""
    try:
        return number(value, **bounds)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def field_flag(name: str, value: Any) -> bool:
    """A boolean setting: True or False (0 and 1 too, as JSON and older configs write them)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name}: must be True or False, got {value!r}")


def field_indices(name: str, values: Any, *, size: int | None = None) -> tuple[int, ...]:
    """A tuple of indices >= 0 (below `size` when given: the model's layer count)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name}: must be a tuple of integer indices such as (12,), got {values!r}")
    out = []
    for v in values:
        try:
            out.append(number(v, integer=True, low=0, high=None if size is None else size - 1))
        except ValueError:
            if size is not None and isinstance(v, numbers.Integral) and v >= size:
                raise ValueError(f"{name}: {tuple(values)!r} out of range for a {size}-layer model; "
                                 f"use indices 0..{size - 1}") from None
            raise ValueError(f"{name}: must be integer indices >= 0, got {tuple(values)!r}") from None
    return tuple(out)


def defaults(cls: type, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """A config dataclass's fields and their defaults, in field order, less `exclude` (the fields
    that are no setting of its config section): what that section is built from."""
    exclude = set(exclude)
    unknown = exclude - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {sorted(unknown)}")
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}.{f.name} has no default")
    return out
