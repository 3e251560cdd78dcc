"""Reference implementations of the graded exercises of chapter 01, GAN math.

The chapter (``solutions/01_gan_math/01_gan_math.ipynb``) teaches each function in the section
named in its docstring; the notebook's hidden tests compare the student's version with the one
here. Shape letters: B batch, N samples, M modes, D dimensions of a point, K support size of a
discrete distribution.

    bce_with_logits       section 1, the game (binary cross-entropy from logits)
    discriminator_loss    section 1
    generator_loss        sections 1 and 3 (saturating and non-saturating)
    optimal_discriminator section 2, D*(x) = p_data / (p_data + p_g)
    kl_divergence         section 2
    js_divergence         section 2
    gan_value             section 2, V(D, G) for discrete distributions
    mode_coverage         section 4, the Gaussian-ring metric (its radius derived)
    gan_step              section 4, one alternating step written out
    generator_grad_norm   section 5, does the generator's gradient reach it?
    logit_gradient        section 5, which way and how hard a loss pushes each logit
    gradient_penalty      section 6, WGAN-GP
    wgan_critic_loss      section 6, the WGAN-GP critic's loss
    wasserstein_1d        section 6, earth mover's distance by sorting
    sliced_wasserstein    section 6, random 1-D projections (the challenge)
    generator_sample_grad section 3, where the two generator losses push a fake (derived)
    diagnose_generator_loss section 5, where a loss's push on a fake is weak or wrong
    sliced_shift_factor   section 6, the sliced distance of a shift, E|u_1| on the sphere (derived)

The chapter's training steps live here too (section 4): ``make_gan_step`` (Algorithm 1 of
Goodfellow et al. 2014, with the losses passed in) and ``make_wgan_gp_step`` (Algorithm 1 of
Gulrajani et al. 2017).

Conventions: natural logarithms; ``0 log 0 = 0``; losses are means over every entry (the batch).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.scipy.special import xlogy

from genlab.validate import broadcast_shapes, float_array, positive_int

__all__ = [
    "bce_with_logits",
    "discriminator_loss",
    "generator_loss",
    "gan_step",
    "gan_value",
    "diagnose_generator_loss",
    "fixed_fakes_objective",
    "generator_grad_norm",
    "generator_objective",
    "generator_sample_grad",
    "gradient_penalty",
    "js_divergence",
    "kl_divergence",
    "logit_gradient",
    "make_gan_step",
    "make_wgan_gp_step",
    "mode_coverage",
    "optimal_discriminator",
    "quality_radius",
    "sliced_shift_factor",
    "sliced_wasserstein",
    "wasserstein_1d",
    "wasserstein_assignment",
    "wgan_critic_loss",
    "wgan_generator_loss",
]


# --- argument checks ------------------------------------------------------------------------


def _distributions(p, q, names=("p", "q")) -> tuple[jax.Array, jax.Array]:
    p, q = float_array(names[0], p), float_array(names[1], q)
    for name, x in zip(names, (p, q)):
        if x.ndim == 0:
            raise ValueError(f"{name} must have at least one axis (the support), got a scalar")
    if p.shape[-1] != q.shape[-1]:
        raise ValueError(
            f"{names[0]} and {names[1]} need the same support size on the last axis, "
            f"got {p.shape} and {q.shape}"
        )
    broadcast_shapes(names, p.shape, q.shape)
    return p, q


# --- section 1: the game --------------------------------------------------------------------


@jax.jit
def _bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    # -[y log s(x) + (1 - y) log(1 - s(x))] = log(1 + e^x) - x y; jax.nn.softplus is the stable
    # max(x, 0) + log1p(e^-|x|) with the right derivative at x = 0 (written with jnp.abs, the
    # derivative there is off by 1/2: JAX gives |x| slope 1 and max(x, 0) slope 1/2 at 0)
    return jax.nn.softplus(logits) - logits * labels


def bce_with_logits(logits, labels) -> jax.Array:
    """Binary cross-entropy from logits, elementwise and stable (chapter 01, section 1).

    With ``s = sigmoid(logits)``, ``bce = -[labels log s + (1 - labels) log(1 - s)]``, computed as
    ``softplus(x) - x * y`` (softplus = ``max(x, 0) + log1p(exp(-|x|))``, stably) so that no
    exponential overflows and no log sees 0, with the right gradient at ``x = 0``.

    Args:
        logits: float [...], the discriminator's pre-sigmoid outputs, any magnitude.
        labels: float [...] in [0, 1] (1 = real, 0 = fake; soft labels allowed), broadcastable
            with ``logits``.

    Returns:
        float [...] of the broadcast shape, >= 0 for labels in {0, 1}; finite for finite inputs.
    """
    logits, labels = float_array("logits", logits), float_array("labels", labels)
    broadcast_shapes(("logits", "labels"), logits.shape, labels.shape)
    return _bce(logits, labels)


def _batch(name: str, x) -> jax.Array:
    x = float_array(name, x)
    if x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")
    return x


@jax.jit
def _discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    # BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x)
    return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def discriminator_loss(real_logits, fake_logits) -> jax.Array:
    """The discriminator's loss, ``-V(D, G)`` estimated on a batch (chapter 01, section 1).

    ``mean(BCE(real_logits, 1)) + mean(BCE(fake_logits, 0))`` = ``-mean log D(x) -
    mean log(1 - D(G(z)))``, each mean over all entries of its own array.

    Args:
        real_logits: float [B_real, ...], logits of data points (non-empty).
        fake_logits: float [B_fake, ...], logits of generated points (non-empty; the two batch
            sizes may differ).

    Returns:
        float scalar [].
    """
    real_logits = _batch("real_logits", real_logits)
    fake_logits = _batch("fake_logits", fake_logits)
    return _discriminator_loss(real_logits, fake_logits)


@functools.partial(jax.jit, static_argnames="non_saturating")
def _generator_loss(fake_logits: jax.Array, non_saturating: bool) -> jax.Array:
    if non_saturating:
        return jnp.mean(jax.nn.softplus(-fake_logits))  # -log sigmoid(x) = softplus(-x)
    return -jnp.mean(jax.nn.softplus(fake_logits))  # log(1 - sigmoid(x)) = -softplus(x)


def generator_loss(fake_logits, non_saturating: bool = True) -> jax.Array:
    """The generator's loss on a batch of fake logits (chapter 01, sections 1 and 3).

    - non-saturating (default, Goodfellow et al. 2014, section 3):
      ``-mean log D(G(z)) = mean softplus(-logits)``;
    - saturating (the minimax game as written): ``mean log(1 - D(G(z))) = -mean softplus(logits)``.

    Both are minimised by the generator; the mean is over all entries.

    Args:
        fake_logits: float [B, ...], discriminator logits of generated points (non-empty).
        non_saturating: Python bool.

    Returns:
        float scalar [].
    """
    if not isinstance(non_saturating, (bool, jnp.bool_)):
        raise TypeError(f"non_saturating must be a bool, got {type(non_saturating).__name__}")
    return _generator_loss(_batch("fake_logits", fake_logits), bool(non_saturating))


def generator_sample_grad(x, w, b, non_saturating: bool = True) -> np.ndarray:
    """Where each generator loss pushes a fake, against a logistic discriminator (section 3).

    The discriminator is ``D(x) = sigmoid(x . w + b)``. Each fake's own loss is ``-log D(x)``
    (non-saturating) or ``log(1 - D(x))`` (saturating); by the chain rule its gradient with
    respect to the fake is ``-(1 - D) w`` or ``-D w``: both point against ``w``, so gradient
    descent moves the fake along ``w``, towards "real"; their sizes differ by ``D / (1 - D)``.
    Computed in float64 NumPy with ``scipy.special.expit`` of plus or minus the logit (no
    ``1 - D`` cancellation), so it is exact to float64 rounding for logits of any size.

    Args:
        x: float [B, D], the fakes.
        w: float [D], the discriminator's weights.
        b: float scalar, its bias.
        non_saturating: Python bool, which loss.

    Returns:
        float64 NumPy array [B, D], row ``i`` the gradient of fake ``i``'s own loss.
    """
    import scipy.special

    try:
        x, w, b = (np.asarray(v, np.float64) for v in (x, w, b))
    except (TypeError, ValueError) as error:
        raise TypeError(f"x, w and b must be real arrays: {error}") from None
    if x.ndim != 2 or w.ndim != 1 or x.shape[1] != w.shape[0]:
        raise ValueError(f"x must be [B, D] and w [D], got {x.shape} and {w.shape}")
    if b.ndim != 0:
        raise ValueError(f"b must be a scalar, got shape {b.shape}")
    logits = x @ w + b  # (B,)
    # d/dl -log sigmoid(l) = -sigmoid(-l) = -(1 - D); d/dl log(1 - sigmoid(l)) = -sigmoid(l) = -D
    toward = -logits if non_saturating else logits
    slope = -scipy.special.expit(toward)  # (B,)
    return slope[:, None] * w[None, :]  # (B, D)


# --- section 2: the optimal discriminator and divergences ------------------------------------


@jax.jit
def _optimal_discriminator(p_data: jax.Array, p_g: jax.Array) -> jax.Array:
    total = p_data + p_g
    safe = jnp.where(total > 0, total, 1.0)
    return jnp.where(total > 0, p_data / safe, 0.5)


def optimal_discriminator(p_data, p_g) -> jax.Array:
    """``D*(x) = p_data(x) / (p_data(x) + p_g(x))`` elementwise (chapter 01, section 2).

    Args:
        p_data: float [...] >= 0, data density (or probability) at each point.
        p_g: float [...] >= 0, generator density at the same points; broadcastable with p_data.

    Returns:
        float [...] in [0, 1]; 0.5 where both densities are 0 (no point there, any value is
        optimal; 0.5 is the symmetric choice, and it keeps gradients free of NaN).
    """
    p_data, p_g = float_array("p_data", p_data), float_array("p_g", p_g)
    broadcast_shapes(("p_data", "p_g"), p_data.shape, p_g.shape)
    return _optimal_discriminator(p_data, p_g)


@jax.jit
def _kl(p: jax.Array, q: jax.Array) -> jax.Array:
    # p log(p / q) = xlogy(p, p) - xlogy(p, q): 0 where p = 0, +inf where p > 0 = q
    return jnp.sum(xlogy(p, p) - xlogy(p, q), axis=-1)


def kl_divergence(p, q) -> jax.Array:
    """``KL(p || q) = sum_k p_k log(p_k / q_k)`` over the last axis, natural log (section 2).

    Terms with ``p_k = 0`` are 0 (``0 log 0 = 0``, whatever ``q_k``); a term with ``p_k > 0`` and
    ``q_k = 0`` makes the divergence ``+inf``.

    Args:
        p, q: float [..., K], probability vectors on the last axis (non-negative, summing to 1;
            not checked), broadcastable on the leading axes.

    Returns:
        float [...], >= 0.
    """
    p, q = _distributions(p, q)
    return _kl(p, q)


@jax.jit
def _js(p: jax.Array, q: jax.Array) -> jax.Array:
    m = 0.5 * (p + q)
    return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)


def js_divergence(p, q) -> jax.Array:
    """Jensen-Shannon divergence ``0.5 KL(p || m) + 0.5 KL(q || m)``, ``m = (p + q) / 2``.

    Natural log, over the last axis (chapter 01, section 2). Symmetric, always finite, in
    ``[0, log 2]``; 0 iff ``p = q``, ``log 2`` iff the supports are disjoint. (``scipy.spatial.
    distance.jensenshannon`` returns the square root of this.)

    Args:
        p, q: float [..., K], probability vectors on the last axis, broadcastable.

    Returns:
        float [...].
    """
    p, q = _distributions(p, q)
    return _js(p, q)


@jax.jit
def _gan_value(p_data: jax.Array, p_g: jax.Array, d: jax.Array) -> jax.Array:
    return jnp.sum(xlogy(p_data, d) + xlogy(p_g, 1.0 - d), axis=-1)


def gan_value(p_data, p_g, d) -> jax.Array:
    """``V(D, G) = sum_k p_data[k] log d[k] + sum_k p_g[k] log(1 - d[k])`` (section 2).

    The GAN value function for discrete distributions on K points, summed over the last axis,
    natural log, with ``0 log 0 = 0``: a point where ``p_data`` is 0 contributes nothing to the
    first sum even if ``d`` is 0 there, and likewise for ``p_g`` and ``d = 1``.

    Args:
        p_data, p_g: float [..., K], probability vectors.
        d: float [..., K] in [0, 1], the discriminator's probability of "real" at each point.
            The three arrays broadcast.

    Returns:
        float [...], <= 0; ``-inf`` if ``d = 0`` where ``p_data > 0`` (or ``d = 1`` where
        ``p_g > 0``).
    """
    p_data, p_g = _distributions(p_data, p_g, names=("p_data", "p_g"))
    p_data, d = _distributions(p_data, d, names=("p_data", "d"))
    return _gan_value(p_data, p_g, d)


# --- section 4: mode coverage ----------------------------------------------------------------


def _mode_counts(samples, centers, radius):
    """(high-quality samples per mode [M] int32, whether each sample is high quality [N] bool)."""
    distances = jnp.linalg.norm(samples[:, None, :] - centers[None, :, :], axis=-1)  # (N, M)
    nearest = jnp.argmin(distances, axis=-1)  # (N,)
    close = jnp.min(distances, axis=-1) <= radius  # (N,)
    counts = jnp.zeros(centers.shape[0], jnp.int32).at[nearest].add(close.astype(jnp.int32))
    return counts, close


@jax.jit
def _mode_coverage(samples, centers, radius, min_count):
    counts, close = _mode_counts(samples, centers, radius)
    covered = jnp.sum(counts >= min_count).astype(jnp.int32)
    return covered, jnp.mean(close.astype(jnp.float32))


@jax.jit
def _largest_mode_share(samples, centers, radius):
    counts, _ = _mode_counts(samples, centers, radius)
    return jnp.max(counts) / jnp.maximum(jnp.sum(counts), 1)


def quality_radius(std: float, quality: float) -> float:
    """The radius within which an isotropic 2-D Gaussian puts the share ``quality`` of its mass.

    The squared distance from the center over std^2 is chi-squared with 2 degrees of freedom,
    whose tail is exp(-t / 2): P(|x - c| <= r) = 1 - exp(-r^2 / (2 std^2)).
    """
    return float(std) * float(np.sqrt(-2.0 * np.log1p(-float(quality))))


def _coverage_args(samples, centers, std, quality, min_count):
    """mode_coverage's arguments checked: (samples [N, 2], centers [M, 2], radius, min_count)."""
    samples, centers = float_array("samples", samples), float_array("centers", centers)
    if samples.ndim != 2 or samples.shape[0] < 1 or samples.shape[1] != 2:
        raise ValueError(f"samples must have shape [N, 2] with N >= 1, got {samples.shape}")
    if centers.ndim != 2 or centers.shape[0] < 1 or centers.shape[1] != 2:
        raise ValueError(f"centers must have shape [M, 2] with M >= 1, got {centers.shape}")
    if not isinstance(std, numbers.Real) or isinstance(std, bool) or not std > 0:
        raise ValueError(f"std must be a number > 0, got {std!r}")
    if not isinstance(quality, numbers.Real) or isinstance(quality, bool) or not 0 < quality < 1:
        raise ValueError(f"quality must be a number in (0, 1), got {quality!r}")
    if not isinstance(min_count, numbers.Integral) or isinstance(min_count, bool):
        raise TypeError(f"min_count must be an int, got {type(min_count).__name__}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    return samples, centers, quality_radius(std, quality), int(min_count)


def mode_coverage(samples, centers, std, quality: float, min_count: int = 1):
    """How many modes a generator covers, and how many of its samples are good (section 4).

    Points in the plane. Each sample goes to its nearest center (Euclidean distance; ties to the
    lowest index, as ``jnp.argmin``). A sample is *high quality* if that distance is at most the
    radius within which a sample of the mode itself (an isotropic Gaussian of standard deviation
    ``std`` per coordinate) falls with probability ``quality`` (:func:`quality_radius`; quality
    1 - e^{-9/2} = 98.9 % gives 3 std). A mode is *covered* if at least ``min_count``
    high-quality samples went to it.

    Args:
        samples: float [N, 2], N >= 1.
        centers: float [M, 2], the modes' centers, M >= 1.
        std: float > 0, the standard deviation of each mode.
        quality: float in (0, 1), the share of a perfect generator's samples counted as good.
        min_count: int >= 1.

    Returns:
        (covered, high_quality): int32 scalar [] in [0, M], the number of covered modes, and
        float32 scalar [] in [0, 1], the share of high-quality samples.
    """
    samples, centers, radius, min_count = _coverage_args(samples, centers, std, quality, min_count)
    return _mode_coverage(samples, centers, radius, min_count)


def largest_mode_share(samples, centers, std, quality: float) -> float:
    """The largest share of the high-quality samples that went to a single mode (section 4).

    Samples, modes and "high quality" as in :func:`mode_coverage`. A generator that spreads its
    good samples evenly over M modes scores 1 / M; one that has collapsed onto one mode scores 1.
    With no high-quality sample at all the share is 0.

    Args:
        samples: float [N, 2]; centers: float [M, 2]; std > 0; quality in (0, 1).

    Returns:
        Python float in [0, 1].
    """
    samples, centers, radius, _ = _coverage_args(samples, centers, std, quality, 1)
    return float(_largest_mode_share(samples, centers, radius))


# --- section 6: beyond the basics ------------------------------------------------------------


def gradient_penalty(
    critic_fn: Callable[[jax.Array], jax.Array], real, fake, key: jax.Array
) -> jax.Array:
    """WGAN-GP's gradient penalty ``mean_b (||grad critic(x_hat_b)||_2 - 1)^2`` (section 6).

    Randomness, pinned::

        eps = jax.random.uniform(key, (B,) + (1,) * (real.ndim - 1))   # [B, 1, ..., 1]
        x_hat = eps * real + (1 - eps) * fake                           # [B, ...]

    The gradient of the critic's output for example b is taken with respect to ``x_hat[b]``
    (``jax.grad`` of ``sum(critic_fn(x_hat))`` gives all of them at once, because a critic treats
    examples independently), and its norm is over all non-batch axes.

    Args:
        critic_fn: ``[B, ...] -> [B]`` (or ``[B, 1]``), a critic applied example by example.
        real, fake: float [B, ...], the same shape.
        key: a JAX PRNG key.

    Returns:
        float scalar [] (multiply by lambda, usually 10, and add it to the critic's loss).
    """
    if not callable(critic_fn):
        raise TypeError(f"critic_fn must be callable, got {type(critic_fn).__name__}")
    real, fake = float_array("real", real), float_array("fake", fake)
    if real.ndim < 1 or real.shape[0] < 1:
        raise ValueError(f"real must have shape [B, ...] with B >= 1, got {real.shape}")
    if fake.shape != real.shape:
        raise ValueError(f"fake must have real's shape {real.shape}, got {fake.shape}")
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))  # (B, 1, ..., 1)
    x_hat = eps * real + (1.0 - eps) * fake  # (B, ...)
    grads = jax.grad(lambda x: jnp.sum(critic_fn(x)))(x_hat)  # (B, ...)
    norms = jnp.sqrt(jnp.sum(grads.reshape(grads.shape[0], -1) ** 2, axis=-1))  # (B,)
    return jnp.mean((norms - 1.0) ** 2)


@jax.jit
def _wasserstein_1d(x: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean(jnp.abs(jnp.sort(x, axis=-1) - jnp.sort(y, axis=-1)), axis=-1)


def wasserstein_1d(x, y) -> jax.Array:
    """Earth mover's (Wasserstein-1) distance between two 1-D empirical distributions (section 6).

    With the same number N of equally weighted samples on each side, the optimal transport plan
    pairs the i-th smallest x with the i-th smallest y, so ``W1 = mean_i |sort(x)_i - sort(y)_i|``.

    Args:
        x, y: float [..., N], samples on the last axis, the same N (>= 1) on both sides;
            leading axes broadcast (one distance per slice).

    Returns:
        float [...], >= 0.
    """
    x, y = float_array("x", x), float_array("y", y)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"x and y must have a sample axis (last), got shapes {x.shape}, {y.shape}")
    if x.shape[-1] != y.shape[-1] or x.shape[-1] < 1:
        raise ValueError(
            f"x and y need the same number N >= 1 of samples on the last axis, got {x.shape} "
            f"and {y.shape}"
        )
    broadcast_shapes(("x", "y"), x.shape, y.shape)
    return _wasserstein_1d(x, y)


def wgan_critic_loss(
    critic_fn: Callable[[jax.Array], jax.Array], real, fake, key: jax.Array, gp_weight=10.0
) -> jax.Array:
    """The WGAN-GP critic's loss ``E f(fake) - E f(real) + gp_weight * GP`` (section 6).

    The critic ``f`` minimises it: the first two terms estimate ``-W1`` for a 1-Lipschitz ``f``
    (Kantorovich-Rubinstein duality), and the gradient penalty (``gradient_penalty`` with the same
    ``key``) keeps ``f``'s slope near 1 between the two distributions. No sigmoid, no log.

    Args:
        critic_fn: ``[B, ...] -> [B]`` (or ``[B, 1]``), unbounded real scores, example by example.
        real, fake: float [B, ...], the same shape.
        key: a JAX PRNG key, passed unchanged to ``gradient_penalty``.
        gp_weight: float >= 0, the penalty's weight lambda (10 in Gulrajani et al. 2017).

    Returns:
        float scalar [].
    """
    if not isinstance(gp_weight, numbers.Real) or isinstance(gp_weight, bool) or gp_weight < 0:
        raise ValueError(f"gp_weight must be a number >= 0, got {gp_weight!r}")
    penalty = gradient_penalty(critic_fn, real, fake, key)
    real, fake = float_array("real", real), float_array("fake", fake)
    return jnp.mean(critic_fn(fake)) - jnp.mean(critic_fn(real)) + gp_weight * penalty


def wgan_generator_loss(fake_scores) -> jax.Array:
    """The WGAN generator's loss ``-E f(G(z))``: move fakes to where the critic scores high.

    Args:
        fake_scores: float [B, ...], critic scores of generated points (non-empty).

    Returns:
        float scalar [].
    """
    return -jnp.mean(_batch("fake_scores", fake_scores))


# --- section 4: training steps ---------------------------------------------------------------


def _alternating_step(sample_real, latent_dim, batch_size, d_steps, g_steps, d_loss_fn, g_loss_fn):
    """The jitted step shared by both GANs; ``d_loss_fn(critic, real, fake, key)``."""
    latent_dim = positive_int("latent_dim", latent_dim)
    batch_size = positive_int("batch_size", batch_size)
    d_steps, g_steps = positive_int("d_steps", d_steps), positive_int("g_steps", g_steps)
    if not callable(sample_real):
        raise TypeError(f"sample_real must be callable, got {type(sample_real).__name__}")

    def g_objective(generator, discriminator, z):
        fake = generator(z)  # (B, ...) inside the differentiated function: gradients reach G
        return g_loss_fn(discriminator(fake))

    def d_update(i, carry):  # one discriminator update on fresh real and fake batches
        generator, discriminator, opt_d, keys, _ = carry
        k_real, k_z, k_loss = jax.random.split(keys[i], 3)
        real = sample_real(k_real, batch_size)  # (B, ...)
        z = jax.random.normal(k_z, (batch_size, latent_dim))  # (B, Z)
        fake = generator(z)  # (B, ...): constants for the discriminator's update
        d_loss, grads = nnx.value_and_grad(d_loss_fn)(discriminator, real, fake, k_loss)
        opt_d.update(discriminator, grads)
        return generator, discriminator, opt_d, keys, d_loss

    def g_update(j, carry):  # one generator update, the fakes inside the differentiated loss
        generator, discriminator, opt_g, keys, _ = carry
        z = jax.random.normal(keys[d_steps + j], (batch_size, latent_dim))  # (B, Z)
        g_loss, grads = nnx.value_and_grad(g_objective)(generator, discriminator, z)
        opt_g.update(generator, grads)
        return generator, discriminator, opt_g, keys, g_loss

    @nnx.jit
    def step(models, optimizers, key):
        generator, discriminator = models
        opt_g, opt_d = optimizers
        keys = jax.random.split(key, d_steps + g_steps)
        # XLA loops, not Python loops unrolled while tracing: the program, and its compile
        # time, stays the same size whatever d_steps and g_steps are.
        no_loss = jnp.zeros((), jnp.float32)
        *_, d_loss = nnx.fori_loop(0, d_steps, d_update,
                                   (generator, discriminator, opt_d, keys, no_loss))  # fmt: skip
        *_, g_loss = nnx.fori_loop(0, g_steps, g_update,
                                   (generator, discriminator, opt_g, keys, no_loss))  # fmt: skip
        return {"d_loss": d_loss, "g_loss": g_loss}

    return step


def make_gan_step(
    sample_real: Callable[[jax.Array, int], jax.Array],
    latent_dim: int,
    batch_size: int,
    *,
    d_steps: int = 1,
    g_steps: int = 1,
    discriminator_loss_fn: Callable = discriminator_loss,
    generator_loss_fn: Callable = generator_loss,
) -> Callable:
    """One jitted step of GAN training: Algorithm 1 of Goodfellow et al. 2014 (section 4).

    ``step(models, optimizers, key) -> {"d_loss", "g_loss"}`` with ``models = (generator,
    discriminator)`` and ``optimizers`` the matching pair of ``nnx.Optimizer``: ``d_steps``
    discriminator updates on fresh real and fake batches, then ``g_steps`` generator updates
    (Algorithm 1 has ``g_steps = 1``). All randomness comes from ``key`` (one split per update).
    The fakes are computed inside the generator's differentiated loss, so its gradient reaches
    the generator. Use it with ``genlab.train.fit``.

    Args:
        sample_real: ``(key, n) -> [n, ...]`` real points.
        latent_dim: Z, the generator maps ``[B, Z] -> [B, ...]``; the discriminator maps
            ``[B, ...] -> [B, 1]`` logits.
        batch_size: B.
        d_steps, g_steps: ints >= 1.
        discriminator_loss_fn: ``(real_logits, fake_logits) -> []`` (default:
            ``discriminator_loss``).
        generator_loss_fn: ``(fake_logits) -> []`` (default: the non-saturating
            ``generator_loss``).
    """

    def d_loss_fn(discriminator, real, fake, key):
        del key  # the standard GAN's losses use no randomness
        return discriminator_loss_fn(discriminator(real), discriminator(fake))

    return _alternating_step(
        sample_real, latent_dim, batch_size, d_steps, g_steps, d_loss_fn, generator_loss_fn
    )


def make_wgan_gp_step(
    sample_real: Callable[[jax.Array, int], jax.Array],
    latent_dim: int,
    batch_size: int,
    *,
    critic_steps: int = 5,
    gp_weight: float = 10.0,
) -> Callable:
    """One jitted step of WGAN-GP training: Algorithm 1 of Gulrajani et al. 2017 (section 6).

    Like ``make_gan_step`` (``models = (generator, critic)``, metrics ``d_loss`` for the critic and
    ``g_loss``), with ``critic_steps`` updates of ``wgan_critic_loss`` (the critic outputs an
    unbounded score ``[B, 1]``, no sigmoid) per generator update on ``wgan_generator_loss``. The
    paper uses Adam with ``b1 = 0``, ``b2 = 0.9`` and learning rate 1e-4.
    """
    if not isinstance(gp_weight, numbers.Real) or isinstance(gp_weight, bool) or gp_weight < 0:
        raise ValueError(f"gp_weight must be a number >= 0, got {gp_weight!r}")

    def d_loss_fn(critic, real, fake, key):
        return wgan_critic_loss(critic, real, fake, key, gp_weight)

    return _alternating_step(
        sample_real, latent_dim, batch_size, critic_steps, 1, d_loss_fn, wgan_generator_loss
    )


# --- section 4: the alternating step, written out -----------------------------------------------


def gan_step(generator, discriminator, opt_g, opt_d, real, z):
    """One step of Algorithm 1 (Goodfellow et al. 2014) with k = 1, written out (section 4).

    First the discriminator's update: fakes ``G(z)`` with the current generator, held constant,
    and one ``opt_d.update`` on ``discriminator_loss``. Then the generator's update through the
    *updated* discriminator, on the same ``z``: one ``opt_g.update`` on the non-saturating
    ``generator_loss``, with the fakes computed inside the differentiated function.

    Args:
        generator: an NNX module ``[B, Z] -> [B, ...]``.
        discriminator: an NNX module ``[B, ...] -> [B, 1]`` logits.
        opt_g, opt_d: ``nnx.Optimizer`` of the generator's and the discriminator's ``nnx.Param``.
        real: float [B_real, ...], a batch of data.
        z: float [B, Z], a batch of noise.

    Returns:
        ``(d_loss, g_loss)``: float scalars, each loss at the parameters before its update.
    """

    def d_objective(d, fake):
        return discriminator_loss(d(real), d(fake))

    def g_objective(g, d):
        return generator_loss(d(g(z)))

    fake = jax.lax.stop_gradient(generator(z))  # (B, ...): constants for D's update
    d_loss, d_grads = nnx.value_and_grad(d_objective)(discriminator, fake)
    opt_d.update(discriminator, d_grads)
    g_loss, g_grads = nnx.value_and_grad(g_objective)(generator, discriminator)
    opt_g.update(generator, g_grads)
    return d_loss, g_loss


# --- section 5: diagnostics for the pitfalls ---------------------------------------------------


def generator_objective(
    loss_fn: Callable = generator_loss, *, fakes_as_constants: bool = False
) -> Callable:
    """The generator's objective of one training step, as a function of both players (section 5).

    Returns ``objective(generator, discriminator, z) -> []``: ``loss_fn`` (default: the
    non-saturating ``generator_loss``) of the discriminator's logits on the fakes
    ``generator(z)``. Differentiated with respect to the generator (its first argument), it gives
    the generator's gradient. ``fakes_as_constants=True`` reproduces pitfall 1: the fakes are
    computed outside the differentiated function (``stop_gradient``), so the generator's gradient
    is exactly 0 while the value is unchanged.

    Args:
        loss_fn: ``(fake_logits [B, 1]) -> []``.
        fakes_as_constants: Python bool, the bug of pitfall 1.

    Returns:
        ``objective(generator, discriminator, z)`` with generator ``[B, Z] -> [B, ...]``,
        discriminator ``[B, ...] -> [B, 1]`` logits and z float ``[B, Z]``; a float scalar.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if not isinstance(fakes_as_constants, bool):
        raise TypeError(f"fakes_as_constants must be a bool, got {fakes_as_constants!r}")

    def objective(generator, discriminator, z):
        fake = generator(z)  # (B, ...)
        if fakes_as_constants:
            fake = jax.lax.stop_gradient(fake)
        return loss_fn(discriminator(fake))

    return objective


def fixed_fakes_objective(fakes, loss_fn: Callable = discriminator_loss) -> Callable:
    """The discriminator's objective against a fixed batch of fakes (section 4's head start).

    Returns ``objective(discriminator, real) -> []``: ``loss_fn`` (default
    ``discriminator_loss``) of the discriminator's logits on ``real`` and on ``fakes``, the fakes
    constants. For ``genlab.train.make_train_step``, to train a discriminator alone.

    Args:
        fakes: float [B, ...], the fixed fakes.
        loss_fn: ``(real_logits, fake_logits) -> []``.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    fakes = jax.lax.stop_gradient(float_array("fakes", fakes))

    def objective(discriminator, real):
        return loss_fn(discriminator(real), discriminator(fakes))

    return objective


def generator_grad_norm(g_objective: Callable, generator, discriminator, z) -> jax.Array:
    """Euclidean norm of the generator's gradient of a candidate objective (section 5).

    ``g_objective(generator, discriminator, z) -> []`` is differentiated with respect to every
    ``nnx.Param`` of ``generator`` (nothing else), and the norm is taken over all of those entries
    together (optax's global norm). Exactly 0 when the objective does not depend on the
    generator's parameters, e.g. fakes computed outside the differentiated function.

    Returns:
        float scalar [], >= 0.
    """
    if not callable(g_objective):
        raise TypeError(f"g_objective must be callable, got {type(g_objective).__name__}")
    grads = nnx.grad(g_objective)(generator, discriminator, z)
    return optax.global_norm(grads)


def logit_gradient(loss_fn: Callable, logits) -> jax.Array:
    """The per-entry slope of a loss at the discriminator's logits (section 5).

    Returns ``N * d loss_fn(logits) / d logits`` with ``N = logits.size``: for a loss that is a
    mean over N entries, entry ``i`` is the derivative of that entry's own term. The sign says
    which way a minimiser moves the logit (negative: up, towards "real"); the size says how hard.

    Args:
        loss_fn: ``[...] -> []``, a scalar loss of the logits.
        logits: float [...], non-empty.

    Returns:
        float [...], logits' shape.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    logits = _batch("logits", logits)
    return logits.size * jax.grad(loss_fn)(logits)


DIAGNOSIS_RANGE = (-7.0, 7.0)  # fake logits judged: D(G(z)) from about 0.001 to 0.999
DIAGNOSIS_SPACING = 0.001  # the reference's grid; the endpoints it returns are within half of it
ENDPOINT_TOLERANCE = 0.02  # how far a student's endpoint may be from the exact one
NARROWEST = 0.1  # weak intervals (and gaps between them) at least this wide must be found


def _weak_runs(weak: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The maximal runs of True in ``weak`` as logit intervals [K, 2], cut between grid points."""
    edges = np.diff(np.concatenate([[False], weak, [False]]).astype(np.int8))  # (G + 1,)
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1  # run indices
    lo, hi = DIAGNOSIS_RANGE
    left = np.where(starts == 0, lo, 0.5 * (grid[np.maximum(starts - 1, 0)] + grid[starts]))
    last = len(grid) - 1
    right = np.where(stops == last, hi, 0.5 * (grid[stops] + grid[np.minimum(stops + 1, last)]))
    return np.stack([left, right], axis=-1).reshape(-1, 2)


def diagnose_generator_loss(loss_fn: Callable, fraction: float) -> np.ndarray:
    """Where a candidate generator loss stops pushing fakes towards "real" (section 5).

    A fake's *push* is minus its per-example slope (:func:`logit_gradient`): positive when the
    minimiser moves its logit up, towards "real". Over the fake logits of ``DIAGNOSIS_RANGE``
    ([-7, 7]) let P be the largest push. A logit is *weak* if its push is below ``fraction * P``
    (a push the wrong way, or none, included); when no logit of the range has a positive push,
    the whole range is weak. The weak set is returned as its maximal intervals.

    The reference reads the pushes on a grid of spacing ``DIAGNOSIS_SPACING`` and cuts each
    interval halfway between grid points, so its endpoints are within 0.0005 of the exact ones;
    an answer must be within ``ENDPOINT_TOLERANCE``, and must find every weak interval and gap
    at least ``NARROWEST`` wide.

    Args:
        loss_fn: fake logits [N] -> float scalar, a mean over the N fakes of one term each.
        fraction: float in (0, 1), the share of the largest push below which a push is weak.

    Returns:
        float64 NumPy array [K, 2]: the weak intervals (start, end), sorted, disjoint; shape
        (0, 2) when every logit of the range is pushed at least ``fraction * P``.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if not isinstance(fraction, numbers.Real) or isinstance(fraction, bool) or not 0 < fraction < 1:
        raise ValueError(f"fraction must be a number in (0, 1), got {fraction!r}")
    lo, hi = DIAGNOSIS_RANGE
    grid = np.linspace(lo, hi, round((hi - lo) / DIAGNOSIS_SPACING) + 1)  # (14001,)
    logits = jnp.asarray(grid, jnp.float32)
    push = -np.asarray(logits.size * jax.grad(loss_fn)(logits), np.float64)  # (G,)
    largest = float(np.max(push))
    weak = np.ones_like(push, bool) if largest <= 0 else push < fraction * largest
    return _weak_runs(weak, grid)


# --- section 6: Wasserstein distances beyond one dimension --------------------------------------


def sliced_wasserstein(key: jax.Array, x, y, num_projections: int) -> jax.Array:
    """Sliced Wasserstein-1 distance between two empirical distributions in D dimensions.

    Random directions: ``jax.random.normal(key, (num_projections, D))``, each row divided by its
    Euclidean norm. Both samples are projected on every direction, and the 1-D distance by
    sorting (``wasserstein_1d``) is averaged over the directions. It never exceeds the exact W1
    (:func:`wasserstein_assignment`), and is 0 for identical samples.

    Args:
        key: a JAX PRNG key.
        x, y: float [N, D], the same N >= 1 and D >= 1.
        num_projections: P >= 1.

    Returns:
        float scalar [], >= 0.
    """
    x, y = float_array("x", x), float_array("y", y)
    if x.ndim != 2 or x.shape[0] < 1 or y.shape != x.shape:
        raise ValueError(
            f"x and y must both have shape [N, D] with N >= 1, got {x.shape}, {y.shape}"
        )
    num_projections = positive_int("num_projections", num_projections)
    directions = jax.random.normal(key, (num_projections, x.shape[1]))  # (P, D)
    directions = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
    return jnp.mean(_wasserstein_1d(directions @ x.T, directions @ y.T))  # (P, N) -> (P,) -> []


def sliced_shift_factor(dim: int) -> float:
    """E|u_1| for u uniform on the unit sphere of R^dim (section 6).

    Two copies of a sample shifted by s have, along a unit direction u, the 1-D distance
    ``|u . s|``; averaged over the sphere that is ``c_D |s|`` with
    ``c_D = Gamma(D / 2) / (sqrt(pi) Gamma((D + 1) / 2))``: 1 for D = 1, 2 / pi for D = 2, 1/2 for
    D = 3, about ``sqrt(2 / (pi D))`` for large D. Computed with log-gamma (no overflow).

    Args:
        dim: Python int D >= 1.

    Returns:
        A Python float in (0, 1].
    """
    import math

    dim = positive_int("dim", dim)
    return math.exp(math.lgamma(dim / 2) - math.lgamma((dim + 1) / 2)) / math.sqrt(math.pi)


def wasserstein_assignment(x, y) -> float:
    """The exact W1 between two empirical distributions of N points each, in any dimension.

    With equal weights 1/N the optimal transport plan is a permutation (Birkhoff-von Neumann), so
    W1 is an assignment problem: ``min_perm mean_i |x_i - y_perm(i)|``, solved exactly by
    ``scipy.optimize.linear_sum_assignment`` in O(N^3) (NumPy, not traceable by JAX).

    Args:
        x, y: float [N, D], the same shape.

    Returns:
        A Python float >= 0.
    """
    from scipy.optimize import linear_sum_assignment

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.shape != x.shape or x.shape[0] < 1:
        raise ValueError(
            f"x and y must both have shape [N, D] with N >= 1, got {x.shape}, {y.shape}"
        )
    cost = np.linalg.norm(x[:, None, :] - y[None, :, :], axis=-1)  # (N, N)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())
