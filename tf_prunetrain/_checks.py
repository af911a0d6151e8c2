"""Argument checks shared by the public API, with one wording.

A refused value raises a ValueError that names the function or class that
was called (`caller`), the argument, what it must be and what it got:
"DeadChannels: interval must be an integer >= 1, got 0."
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def _prefix(caller: str | None) -> str:
    return f"{caller}: " if caller else ""


def positive_int(value: Any, name: str, caller: str | None = None,
                 optional: bool = False, also: tuple[str, ...] = ()) -> Any:
    """Returns `value` if it is an integer >= 1 (or None when `optional`, or
    one of the strings in `also`).

    Booleans are refused; numpy integers are accepted.

    >>> positive_int(3, "epochs")
    3
    >>> positive_int(0, "epochs", "fit")
    Traceback (most recent call last):
    ...
    ValueError: fit: epochs must be an integer >= 1, got 0.
    """
    if (value is None and optional) or (isinstance(value, str)
                                        and value in also):
        return value
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
            or value < 1):
        others = (["None"] if optional else []) + [repr(a) for a in also]
        raise ValueError(
            f"{_prefix(caller)}{name} must be an integer >= 1"
            f"{''.join(' or ' + o for o in others)}, got {value!r}.")
    return value


def non_negative(value: Any, name: str, caller: str | None = None) -> Any:
    """Returns `value` if it is a real number >= 0 (inf allowed, NaN not).

    >>> non_negative(-1.0, "threshold", "prune_channels")
    Traceback (most recent call last):
    ...
    ValueError: prune_channels: threshold must be >= 0, got -1.0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{_prefix(caller)}{name} must be a number >= 0, got "
                         f"{value!r}.")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{_prefix(caller)}{name} must be >= 0, got "
                         f"{value!r}.")
    return value


def open_fraction(value: Any, name: str, caller: str | None = None) -> float:
    """Returns `value` as a float if it is a number in (0, 1).

    >>> open_fraction(1.5, "target", "FlopsBudget")
    Traceback (most recent call last):
    ...
    ValueError: FlopsBudget: target must be a number in (0, 1) (the final FLOPs as a fraction of the initial), got 1.5.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not 0 < float(value) < 1:
        raise ValueError(
            f"{_prefix(caller)}{name} must be a number in (0, 1) (the final "
            f"FLOPs as a fraction of the initial), got {value!r}.")
    return float(value)
