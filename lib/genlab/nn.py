"""Shared Flax NNX building blocks.

Modules take ``rngs: nnx.Rngs`` keyword-only, so every parameter comes from an explicit key.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import jax
from flax import nnx

from genlab import initializers


class MLP(nnx.Module):
    """A multilayer perceptron: Linear -> activation -> ... -> Linear (no activation at the end).

    Args:
        sizes: layer widths ``(D_in, H_1, ..., D_out)``; at least two entries.
        activation: applied after every layer but the last (default ``jax.nn.relu``).
        rngs: the random streams for the initializers (keyword-only).

    Call: ``x: [..., D_in] -> [..., D_out]``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
        rngs: nnx.Rngs,
    ):
        sizes = tuple(sizes)
        if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(
                f"sizes must be two or more positive ints (D_in, ..., D_out), got {sizes}"
            )
        self.sizes = sizes
        self.activation = activation
        self.layers = nnx.List(
            [
                initializers.linear(d_in, d_out, rngs=rngs)
                for d_in, d_out in itertools.pairwise(sizes)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.shape[-1] != self.sizes[0]:
            raise ValueError(f"MLP expects inputs [..., {self.sizes[0]}], got shape {x.shape}")
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))  # (..., H_i)
        return self.layers[-1](x)  # (..., D_out)
