"""Argument checks shared by the library's reference modules: clear errors naming the argument."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import jax
import jax.numpy as jnp


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


def float_array(name: str, x, *, min_ndim: int = 0, allow_int: bool = True) -> jax.Array:
    """``x`` as a real floating JAX array with at least ``min_ndim`` axes.

    Integer and boolean arrays become float32 when ``allow_int`` (else a TypeError); None,
    strings, dicts and complex numbers are a TypeError naming ``name``.
    """
    if x is None or isinstance(x, (str, bytes, dict)):
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}")
    try:
        x = jnp.asarray(x)
    except TypeError as error:
        raise TypeError(f"{name} must be an array of numbers ({error})") from None
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {x.dtype}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        if not allow_int:
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")
        x = x.astype(jnp.float32)
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} axes, got shape {x.shape}")
    return x


def broadcast_shapes(names: Sequence[str], *shapes: tuple[int, ...]) -> tuple[int, ...]:
    """The broadcast of ``shapes``, else a ValueError listing each named shape."""
    try:
        return jnp.broadcast_shapes(*shapes)
    except ValueError:
        shown = ", ".join(f"{n} {tuple(s)}" for n, s in zip(names, shapes))
        raise ValueError(f"shapes do not broadcast: {shown}") from None
