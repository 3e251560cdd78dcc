"""Parameter initializers with Flax's values that compile one program per size class, not per shape.

Flax's initializers call ``jax.random`` with the parameter's shape, and XLA compiles a program
for every new shape: 0.1-0.2 s each on a CPU (threefry's rounds and the truncated normal's
inverse error function make a large program), 6-11 s of a chapter's first run. But JAX draws
element ``i`` of a random array from the key and ``i`` alone (counter-based threefry bits,
``jax_threefry_partitionable``, on by default since JAX 0.5), so the first ``n`` draws of a
longer flat array are the draws of shape ``(n,)``, reshaped the same way. The initializers below
draw each parameter from its power-of-two size class and cut and scale it on the host: the same
float32 values bit for bit (``tests/test_initializers.py`` compares them with Flax's for many
shapes) from about a dozen programs for the whole course, which the persistent compilation
cache then shares between chapters.

Each is a drop-in ``init(key, shape, dtype=float32)``. Other dtypes, parameters larger than
``LARGEST`` entries (a GPT-2 embedding), models built inside ``jit`` or ``nnx.eval_shape``, and
``jax_threefry_partitionable`` turned off fall back to ``jax.random`` directly.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import numpy as np
from flax import nnx

LARGEST = 1 << 22  # entries; 16 MiB of float32, drawn at most twice over
SMALLEST = 1 << 8


def _size_class(n: int) -> int:
    return max(SMALLEST, 1 << (n - 1).bit_length())


@partial(jax.jit, static_argnums=(1, 2))
def _standard_draws(key: jax.Array, distribution: str, size: int) -> jax.Array:
    """``size`` standard draws, float32 [size]: normal, or normal truncated to (-2, 2)."""
    if distribution == "normal":
        return jax.random.normal(key, (size,))
    return jax.random.truncated_normal(key, -2.0, 2.0, (size,))


def _on_host(key: jax.Array, n: int, dtype) -> bool:
    """Whether a draw of ``n`` entries can be cut from its size class with Flax's values."""
    return (
        np.dtype(dtype) == np.float32
        and 0 < n <= LARGEST
        and jax.config.jax_threefry_partitionable  # else draw i depends on the shape
        and not isinstance(key, jax.core.Tracer)  # a model built under jit or eval_shape
    )


def _scaled(distribution: str, std_of, fallback):
    """An initializer drawing ``distribution`` times ``std_of(shape)`` (a float32 scalar)."""

    def init(key: jax.Array, shape, dtype=np.float32) -> jax.Array:
        shape = tuple(int(d) for d in shape)
        n = math.prod(shape)
        if not _on_host(key, n, dtype):
            return fallback(key, shape, dtype)
        draws = np.asarray(_standard_draws(key, distribution, _size_class(n)))[:n]
        return jax.device_put(draws.reshape(shape) * std_of(shape))

    return init


def _fans(shape: tuple[int, ...], in_axis: int, out_axis: int) -> tuple[float, float]:
    """Fan-in and fan-out, computed as ``jax.nn.initializers`` does (other axes are receptive)."""
    if len(shape) < 2:
        raise ValueError(f"variance scaling needs a shape of rank 2 or more, got {shape}")
    receptive = math.prod(shape) / shape[in_axis] / shape[out_axis]
    return shape[in_axis] * receptive, shape[out_axis] * receptive


def variance_scaling(scale: float, mode: str, distribution: str, in_axis: int = -2,
                     out_axis: int = -1):  # fmt: skip
    """``jax.nn.initializers.variance_scaling`` for ``mode`` ``'fan_in'`` or ``'fan_out'`` and
    ``distribution`` ``'truncated_normal'`` or ``'normal'``: the same values for float32."""
    if mode not in ("fan_in", "fan_out") or distribution not in ("truncated_normal", "normal"):
        raise ValueError(f"unsupported variance scaling: mode {mode!r}, {distribution!r}")
    fallback = jax.nn.initializers.variance_scaling(scale, mode, distribution, in_axis, out_axis)

    def std_of(shape):
        fan_in, fan_out = _fans(shape, in_axis, out_axis)
        variance = np.float32(scale / (fan_in if mode == "fan_in" else fan_out))
        std = np.sqrt(variance)
        if distribution == "truncated_normal":  # the std of N(0, 1) truncated to (-2, 2)
            std = std / np.float32(0.87962566103423978)
        return std

    return _scaled(distribution, std_of, fallback)


def normal(stddev: float):
    """``jax.nn.initializers.normal(stddev)``: the same values for float32."""
    return _scaled("normal", lambda shape: np.float32(stddev), jax.nn.initializers.normal(stddev))


def zeros(key: jax.Array, shape, dtype=np.float32) -> jax.Array:
    """Zeros of ``shape`` (``key`` unused), made on the host: no program per shape."""
    return jax.device_put(np.zeros(shape, dtype))


def ones(key: jax.Array, shape, dtype=np.float32) -> jax.Array:
    """Ones of ``shape`` (``key`` unused), made on the host: no program per shape."""
    return jax.device_put(np.ones(shape, dtype))


lecun_normal = variance_scaling(1.0, "fan_in", "truncated_normal")  # nnx.Linear's kernels
embedding = variance_scaling(1.0, "fan_in", "normal", out_axis=0)  # nnx.Embed's tables


def linear(d_in: int, d_out: int, *, rngs: nnx.Rngs, kernel_init=lecun_normal, **kwargs):
    """``nnx.Linear(d_in, d_out)`` with the same initial values, drawn as above."""
    return nnx.Linear(d_in, d_out, kernel_init=kernel_init, bias_init=zeros, rngs=rngs, **kwargs)


def embed(num_embeddings: int, features: int, *, rngs: nnx.Rngs, embedding_init=embedding):
    """``nnx.Embed(num_embeddings, features)`` with the same initial values, drawn as above."""
    return nnx.Embed(num_embeddings, features, embedding_init=embedding_init, rngs=rngs)


def layer_norm(features: int, *, rngs: nnx.Rngs, **kwargs):
    """``nnx.LayerNorm(features)`` with its scale (ones) and bias (zeros) made on the host."""
    return nnx.LayerNorm(features, scale_init=ones, bias_init=zeros, rngs=rngs, **kwargs)
