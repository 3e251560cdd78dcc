"""Argument checks shared by the library's reference modules: clear errors naming the argument."""

from __future__ import annotations

import operator


def positive_int(name: str, value) -> int:
    """``value`` as a Python int >= 1, else a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value
