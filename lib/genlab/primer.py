"""Reference implementations of the graded exercises of chapter 00, the JAX primer.

The chapter (``solutions/00_jax_primer/00_jax_primer.ipynb``) teaches each function in the
section named in its docstring; the notebook's hidden tests compare the student's version with
the one here. Shape letters: N examples, D features, K mixture components, H hidden units.

    logsumexp           section 1, the NumPy API (and the max trick)
    sample_mixture      section 2, PRNG keys
    mixture_moments     section 2, the mixture's mean and variance in closed form
    mse_grad            section 3, ``jax.grad``
    per_example_grads   section 4, ``jax.vmap``
    power_sum           section 5, ``jax.jit`` with a static argument
    MLP, train_step     section 6, Flax NNX and optax (missing targets are NaN)
    noisy_copies        section 8, pitfalls (one key per random draw)
    clipped_mean_grad   section 9, challenge: per-example gradient clipping (DP-SGD's step)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from genlab import initializers
from genlab.validate import positive_int

__all__ = [
    "MLP",
    "clipped_mean_grad",
    "logsumexp",
    "mixture_moments",
    "mse_grad",
    "noisy_copies",
    "per_example_grads",
    "power_sum",
    "sample_mixture",
    "train_step",
]


def _require_float(name: str, x: jax.Array) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")


# --- section 1: the NumPy API ---------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="axis")
def logsumexp(x: jax.Array, axis: int = -1) -> jax.Array:
    """Numerically stable ``log(sum(exp(x)))`` along ``axis`` (chapter 00, section 1).

    With ``m = max(x)`` along the axis, ``log sum_i exp(x_i) = m + log sum_i exp(x_i - m)``: every
    shifted term is at most 1 and the largest is exactly 1, so nothing overflows or vanishes.

    Args:
        x: float array [...], at least 1-D; entries may be ``-inf`` (meaning ``exp(x) = 0``).
        axis: the axis to reduce (negative values count from the end).

    Returns:
        ``x``'s shape with ``axis`` removed, ``x``'s dtype. Finite for finite ``x`` of any
        magnitude (``x = 1000`` or ``-1000``); a slice that is all ``-inf`` gives ``-inf``.
    """
    x = jnp.asarray(x)
    _require_float("x", x)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis to reduce, got a scalar")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(
            f"axis must be in [-{x.ndim}, {x.ndim}) for x of shape {x.shape}, got {axis}"
        )
    m = jnp.max(x, axis=axis, keepdims=True)  # (..., 1, ...)
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))  # all -inf: shift by 0, not by -inf
    total = jnp.sum(jnp.exp(x - m), axis=axis)  # (...) in [1, size] unless all -inf
    return jnp.log(total) + jnp.squeeze(m, axis=axis)


# --- section 2: PRNG keys -------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="n")
def sample_mixture(key: jax.Array, means: jax.Array, stds: jax.Array, n: int) -> jax.Array:
    """Draw ``n`` samples from the equal-weight 1-D Gaussian mixture (chapter 00, section 2).

    ``p(x) = (1/K) sum_k N(x; means[k], stds[k]**2)``, sampled ancestrally: a uniform component
    index, then that component's Gaussian, from two independent keys of one split. The notebook
    grades any sampler with this distribution statistically (moments, component frequencies,
    Kolmogorov-Smirnov distances); the same key must give the same samples.

    Args:
        key: a JAX PRNG key.
        means: float32 [K], the component means.
        stds: float32 [K], the component standard deviations (>= 0).
        n: the number of samples, a Python int >= 1.

    Returns:
        float32 [n].
    """
    n = positive_int("n", n)
    means, stds = jnp.asarray(means, jnp.float32), jnp.asarray(stds, jnp.float32)
    if means.ndim != 1 or means.shape[0] < 1:
        raise ValueError(f"means must have shape [K] with K >= 1, got {means.shape}")
    if stds.shape != means.shape:
        raise ValueError(f"stds must have the shape of means {means.shape}, got {stds.shape}")
    k_component, k_noise = jax.random.split(key)
    components = jax.random.randint(k_component, (n,), 0, means.shape[0])  # (n,)
    noise = jax.random.normal(k_noise, (n,))  # (n,)
    return means[components] + stds[components] * noise  # (n,)


@jax.jit
def mixture_moments(means: jax.Array, stds: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of the equal-weight 1-D Gaussian mixture (chapter 00, section 2).

    For ``x ~ (1/K) sum_k N(means[k], stds[k]**2)`` the law of total expectation gives the mean
    of the component means, and the law of total variance the mean within-component variance
    plus the (population) variance of the component means. The second term is computed around
    the mixture mean, so means far from 0 lose no precision.

    Args:
        means: float [K], K >= 1, the component means.
        stds: float [K], the component standard deviations (>= 0; not variances).

    Returns:
        (mean, variance): float32 scalars (shape ()), exact: no sampling.
    """
    means, stds = jnp.asarray(means, jnp.float32), jnp.asarray(stds, jnp.float32)
    if means.ndim != 1 or means.shape[0] < 1:
        raise ValueError(f"means must have shape [K] with K >= 1, got {means.shape}")
    if stds.shape != means.shape:
        raise ValueError(f"stds must have the shape of means {means.shape}, got {stds.shape}")
    mean = jnp.mean(means)  # ()
    within = jnp.mean(stds**2)  # () the average component variance
    between = jnp.mean((means - mean) ** 2)  # () the spread of the component means
    return mean, within + between


# --- sections 3 and 4: grad and vmap --------------------------------------------------------


def _check_regression(w: jax.Array, x: jax.Array, y: jax.Array) -> None:
    if w.ndim != 1:
        raise ValueError(f"w must have shape [D], got {w.shape}")
    if x.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"x must have shape [N, D] with D = {w.shape[0]}, got {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape [N] with N = {x.shape[0]}, got {y.shape}")


def _squared_error(w: jax.Array, x_n: jax.Array, y_n: jax.Array) -> jax.Array:
    return (jnp.dot(x_n, w) - y_n) ** 2  # ()


@jax.jit
def mse_grad(w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Gradient of ``L(w) = mean_n (x_n . w - y_n)**2`` in ``w`` (chapter 00, section 3).

    The closed form is ``(2 / N) x^T (x w - y)``; the chapter computes it with ``jax.grad``.

    Args:
        w: float [D], the weights.
        x: float [N, D], one example per row.
        y: float [N], the targets.

    Returns:
        float [D].
    """
    _check_regression(w, x, y)

    def loss(w):
        return jnp.mean(jax.vmap(_squared_error, in_axes=(None, 0, 0))(w, x, y))

    return jax.grad(loss)(w)


@jax.jit
def per_example_grads(w: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example gradients of the squared error (chapter 00, section 4).

    Row ``n`` is the gradient with respect to ``w`` of ``(x_n . w - y_n)**2``, i.e.
    ``2 x_n (x_n . w - y_n)``; their mean over the rows is :func:`mse_grad`.

    Args:
        w: float [D]; x: float [N, D]; y: float [N].

    Returns:
        float [N, D].
    """
    _check_regression(w, x, y)
    return jax.vmap(jax.grad(_squared_error), in_axes=(None, 0, 0))(w, x, y)  # (N, D)


# --- section 5: jit with a static argument --------------------------------------------------


@functools.partial(jax.jit, static_argnames="n")
def power_sum(x: jax.Array, n: int) -> jax.Array:
    """``sum_{k=1}^{n} x**k`` elementwise, compiled with ``n`` static (chapter 00, section 5).

    ``n`` is a Python int, so the loop below runs while tracing and XLA sees ``n`` multiplies and
    ``n - 1`` adds; every new ``n`` compiles a new program.

    Args:
        x: float [...].
        n: a Python int >= 1 (static: positional or ``n=...``).

    Returns:
        float [...], ``x``'s shape and dtype.
    """
    n = positive_int("n", n)
    power = x
    total = x
    for _ in range(n - 1):
        power = power * x  # x**(k+1)
        total = total + power
    return total


# --- section 6: Flax NNX and optax ----------------------------------------------------------


class MLP(nnx.Module):
    """A one-hidden-layer perceptron ``out(relu(hidden(x)))`` (chapter 00, section 6).

    Attributes, created in this order from ``rngs``:
        hidden: ``nnx.Linear(d_in, d_hidden)``, kernel [d_in, H], bias [H].
        out: ``nnx.Linear(d_hidden, d_out)``, kernel [H, d_out], bias [d_out].

    Call: ``x: [..., d_in] -> [..., d_out]`` (any number of leading batch axes).
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, *, rngs: nnx.Rngs):
        for name, value in (("d_in", d_in), ("d_hidden", d_hidden), ("d_out", d_out)):
            positive_int(name, value)
        self.hidden = initializers.linear(d_in, d_hidden, rngs=rngs)
        self.out = initializers.linear(d_hidden, d_out, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.hidden(x))  # (..., H)
        return self.out(h)  # (..., d_out)


@nnx.jit
def train_step(
    model: nnx.Module, optimizer: nnx.Optimizer, x: jax.Array, y: jax.Array
) -> jax.Array:
    """One optimiser step on the mean squared error of the observed targets (chapter 00, sec. 6).

    A NaN entry of ``y`` is a missing target. The loss is the mean of ``(model(x) - y)**2`` over
    the observed (non-NaN) entries only, and 0 when no entry is observed. The missing targets are
    replaced by zeros *before* any arithmetic and masked out of the residual, so no NaN reaches
    the gradient (a NaN in the discarded branch of ``jnp.where`` would: its cotangent is 0, and
    ``0 * NaN`` is NaN). The gradient with respect to the model's ``nnx.Param`` variables is
    applied with one ``optimizer.update(model, grads)``.

    Args:
        model: an NNX module mapping ``x`` to an array of ``y``'s shape; updated in place.
        optimizer: ``nnx.Optimizer(model, tx, wrt=nnx.Param)``; updated in place.
        x: float [N, ...], the inputs; y: float [N, ...], the targets, NaN where missing.

    Returns:
        The loss before the update, a float scalar [].
    """
    observed = ~jnp.isnan(y)  # (N, ...)
    targets = jnp.where(observed, y, 0.0)  # (N, ...) no NaN left
    count = jnp.maximum(jnp.sum(observed), 1)  # () at least 1: an empty batch has loss 0

    def loss_fn(model):
        residual = jnp.where(observed, model(x) - targets, 0.0)  # (N, ...)
        return jnp.sum(residual**2) / count

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


# --- section 8: pitfalls --------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames="num_copies")
def noisy_copies(key: jax.Array, x: jax.Array, num_copies: int) -> jax.Array:
    """``num_copies`` copies of ``x``, each with its own normal noise (chapter 00, section 8).

    One key per copy, from ``jax.random.split(key, num_copies)``: the copies' noises are
    independent standard normal draws, and the same key gives the same copies. (The notebook
    grades these properties, not this particular use of the keys.)

    Args:
        key: a JAX PRNG key.
        x: float [...].
        num_copies: a Python int >= 1.

    Returns:
        [num_copies, ...] (``x``'s dtype), row ``i`` being ``x`` plus the ``i``-th noise.
    """
    num_copies = positive_int("num_copies", num_copies)
    x = jnp.asarray(x)
    _require_float("x", x)
    keys = jax.random.split(key, num_copies)  # (num_copies,)
    noise = jax.vmap(lambda k: jax.random.normal(k, x.shape, x.dtype))(keys)  # (num_copies, ...)
    return x + noise


# --- section 9 (challenge): per-example gradient clipping -------------------------------------


def clipped_mean_grad(model: nnx.Module, x: jax.Array, y: jax.Array, max_norm: float):
    """The mean of per-example gradients, each clipped to norm ``max_norm`` (chapter 00, section 9).

    The aggregation step of DP-SGD (Abadi et al., 2016) without the noise. Example ``n``'s loss is
    the mean squared error of ``model(x[n:n+1])`` against ``y[n:n+1]`` (mean over its entries);
    its gradient ``g_n`` over every ``nnx.Param`` of the model has the global norm
    ``|g_n| = sqrt(sum over all parameter entries of g_n**2)``. Each ``g_n`` is scaled by
    ``min(1, max_norm / |g_n|)`` (a zero gradient stays zero) and the result is the mean over
    ``n``. With ``max_norm >= max_n |g_n|`` it is the gradient of :func:`train_step`'s loss.

    Args:
        model: an NNX module mapping ``x`` [N, ...] to outputs of ``y``'s shape; not modified.
        x: float [N, ...], y: float [N, ...], one example per row.
        max_norm: a Python float > 0.

    Returns:
        An ``nnx.State`` shaped like ``nnx.state(model, nnx.Param)`` (as ``nnx.grad`` returns).
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0:
        raise ValueError(f"max_norm must be a number > 0, got {max_norm!r}")
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must hold one example per row (same N), got shapes {x.shape} and {y.shape}"
        )
    return _clipped_mean_grad(model, x, y, jnp.float32(max_norm))


@nnx.jit
def _clipped_mean_grad(model, x, y, max_norm):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_one(params, x_n, y_n):
        one = nnx.merge(graphdef, params, rest)
        return jnp.mean((one(x_n[None]) - y_n[None]) ** 2)

    grads = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, y)  # leaves (N, ...)
    squares = [jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=1) for g in jax.tree.leaves(grads)]
    norms = jnp.sqrt(sum(squares))  # (N,)
    scale = jnp.where(norms > max_norm, max_norm / jnp.where(norms > 0, norms, 1.0), 1.0)  # (N,)
    return jax.tree.map(
        lambda g: jnp.mean(g * scale.reshape(-1, *([1] * (g.ndim - 1))), axis=0), grads
    )
