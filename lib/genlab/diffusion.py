"""Reference implementations of the graded exercises of chapter 05, diffusion and flow matching.

The chapter (``solutions/05_diffusion/05_diffusion.ipynb``) teaches each function in the section
named in its docstring; the notebook's hidden tests compare the student's version with the one
here. Conventions: ``x0`` is data ``[B, ...]``; ``t`` is an integer step index ``[B]`` counted
from 0 (``t = 0`` is the first noising step, ``t = T - 1`` the last); float32 throughout. In flow
matching ``t`` is a float in [0, 1] and ``t = 1`` is data.

    linear_beta_schedule, cosine_beta_schedule,
    alpha_bars, q_sample                        section 1, the forward process
    posterior_mean_var, ddpm_loss, train_step   section 2, the loss is an ELBO
    mixture_score                               section 3, the exact score (the challenge)
    flow_matching_loss, euler_sample            section 3, flow matching
    ddpm_step, ddpm_sample, respace             section 4, samplers in one jit
    eps_to_flow, ddim_step, ddim_sample         section 4, deterministic sampling (DDIM)
    cfg_combine, classifier_guided_eps          section 5, guidance
    discretized_gaussian_log_prob, prior_kl,
    vlb_weights, vlb_terms, vlb_estimate        section 6, the bound in bits per dimension
    schedule_mismatch                           section 7, the pitfalls' diagnostic
    TimeMLP, sample_flow                        the networks and samplers of the projects
    digits_split, pretrained_digits_ddpm        section 6's digits model (trained once, cached)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import data, initializers, model_cache
from genlab.validate import float_array, positive_int

__all__ = [
    "DIGIT_LEVELS",
    "SCHEDULE_TOL",
    "SCHEDULE_BUGS",
    "TimeMLP",
    "alpha_bars",
    "cfg_combine",
    "classifier_guided_eps",
    "cosine_beta_schedule",
    "digits_split",
    "ddpm_loss",
    "ddpm_sample",
    "ddim_sample",
    "ddim_step",
    "ddpm_step",
    "discretized_gaussian_log_prob",
    "eps_to_flow",
    "euler_sample",
    "flow_matching_loss",
    "linear_beta_schedule",
    "mixture_score",
    "posterior_mean_var",
    "pretrained_digits_ddpm",
    "prior_kl",
    "q_sample",
    "respace",
    "sample_flow",
    "schedule_mismatch",
    "score_from_noise",
    "train_step",
    "vlb_estimate",
    "vlb_terms",
    "vlb_weights",
]


# --- section 1: the forward process ---------------------------------------------------------


def linear_beta_schedule(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02):
    """The DDPM noise schedule of Ho et al. (2020): T variances evenly spaced (section 1).

    Args:
        num_steps: T, a Python int >= 1.
        beta_start, beta_end: the first and last variance, floats in (0, 1).

    Returns:
        float32 [T] from beta_start to beta_end inclusive (a single step is beta_start).
    """
    num_steps = positive_int("num_steps", num_steps)
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not 0.0 < float(value) < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {value}")
    return jnp.linspace(beta_start, beta_end, num_steps, dtype=jnp.float32)


def cosine_beta_schedule(num_steps: int, s: float = 0.008, max_beta: float = 0.999):
    """The cosine schedule of Nichol & Dhariwal (2021) (section 1).

    ``alpha_bar(u) = cos^2((u + s) / (1 + s) * pi / 2) / cos^2(s / (1 + s) * pi / 2)`` at
    ``u = t / T``; ``beta_t = 1 - alpha_bar((t + 1) / T) / alpha_bar(t / T)``, clipped to
    ``max_beta``.

    Returns:
        float32 [T].
    """
    num_steps = positive_int("num_steps", num_steps)
    u = np.arange(num_steps + 1, dtype=np.float64) / num_steps  # float64: 1 - ratio cancels
    f = np.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # (T + 1,)
    return jnp.asarray(np.clip(1.0 - f[1:] / f[:-1], 0.0, max_beta), dtype=jnp.float32)


def alpha_bars(betas):
    """Cumulative signal fractions of a schedule (section 1).

    Args:
        betas: float [T], each in (0, 1].

    Returns:
        float32 [T]; entry t is the product of (1 - beta_s) for s = 0..t, decreasing.
    """
    betas = float_array("betas", betas, min_ndim=1)
    if betas.ndim != 1:
        raise ValueError(f"betas must have shape [T], got {betas.shape}")
    return jnp.cumprod(1.0 - betas.astype(jnp.float32))


def _per_example(values: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """``values[t]`` [B] reshaped to [B, 1, ..., 1] so it broadcasts over x's trailing axes."""
    return values[t].reshape(t.shape + (1,) * (x.ndim - t.ndim))


def _check_t(t, x0) -> jax.Array:
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.integer):
        raise TypeError(f"t must be an integer array [B], got dtype {t.dtype}")
    if t.ndim != 1 or x0.ndim < 1 or t.shape[0] != x0.shape[0]:
        raise ValueError(f"t must have shape [B] = ({x0.shape[:1]}), got {t.shape}")
    return t


def q_sample(key, x0, t, alpha_bars):
    """Sample the forward process q(x_t | x_0) in one jump (section 1).

    Args:
        key: a ``jax.random`` key; eps = ``jax.random.normal(key, x0.shape)``.
        x0: float [B, ...], the data.
        t: int [B], the step of each example (0 <= t < T).
        alpha_bars: float [T].

    Returns:
        (x_t, eps), both float32 [B, ...]: sqrt(ab[t]) x0 + sqrt(1 - ab[t]) eps per example.
    """
    x0 = float_array("x0", x0, min_ndim=1)
    t = _check_t(t, x0)
    ab = _per_example(jnp.asarray(alpha_bars, jnp.float32), t, x0)  # (B, 1, ...)
    eps = jax.random.normal(key, x0.shape, dtype=jnp.float32)
    return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * eps, eps


# --- section 2: the posterior and the loss ---------------------------------------------------


def posterior_mean_var(x_t, x0, t, betas, alpha_bars):
    """Mean and variance of q(x_{t-1} | x_t, x_0) (section 2, Ho et al. eq. 6-7).

    Args:
        x_t, x0: float [B, ...].
        t: int [B]; at t = 0 the "previous" signal fraction is 1 (the posterior is x0 exactly).
        betas, alpha_bars: float [T].

    Returns:
        (mean, var), float32 [B, ...] each (var broadcast to the shape of mean).
    """
    x_t, x0 = float_array("x_t", x_t, min_ndim=1), float_array("x0", x0, min_ndim=1)
    t = _check_t(t, x0)
    betas, alpha_bars = jnp.asarray(betas, jnp.float32), jnp.asarray(alpha_bars, jnp.float32)
    ab_prev_all = jnp.concatenate([jnp.ones(1, jnp.float32), alpha_bars[:-1]])  # (T,)
    beta = _per_example(betas, t, x0)
    ab, ab_prev = _per_example(alpha_bars, t, x0), _per_example(ab_prev_all, t, x0)
    coef_x0 = jnp.sqrt(ab_prev) * beta / (1.0 - ab)
    coef_xt = jnp.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab)
    mean = coef_x0 * x0 + coef_xt * x_t
    var = (1.0 - ab_prev) / (1.0 - ab) * beta
    return mean, jnp.broadcast_to(var, mean.shape)


def ddpm_loss(key, eps_model: Callable, x0, alpha_bars):
    """The simplified DDPM loss: noise-prediction mean squared error (section 2).

    Args:
        key: split once into (key_t, key_eps); t = ``jax.random.randint(key_t, (B,), 0, T)``,
            then ``q_sample(key_eps, x0, t, alpha_bars)``.
        eps_model: ``eps_model(x_t [B, ...], t int [B]) -> [B, ...]``.
        x0: float [B, ...].
        alpha_bars: float [T].

    Returns:
        float32 scalar: the mean over every element of the squared error.
    """
    x0 = float_array("x0", x0, min_ndim=1)
    alpha_bars = jnp.asarray(alpha_bars, jnp.float32)
    key_t, key_eps = jax.random.split(key)
    t = jax.random.randint(key_t, (x0.shape[0],), 0, alpha_bars.shape[0])
    x_t, eps = q_sample(key_eps, x0, t, alpha_bars)
    return jnp.mean((eps_model(x_t, t) - eps) ** 2)


def train_step(model, optimizer, key, x0, alpha_bars):
    """One optimizer step on ``ddpm_loss`` (section 2; the notebook's behavioural exercise).

    Args:
        model: an ``nnx.Module`` called as ``model(x_t, t)``, updated in place.
        optimizer: ``nnx.Optimizer(model, tx, wrt=nnx.Param)``, updated in place.
        key, x0, alpha_bars: as in :func:`ddpm_loss`.

    Returns:
        float32 scalar: the loss before the update.
    """
    loss, grads = nnx.value_and_grad(lambda m: ddpm_loss(key, m, x0, alpha_bars))(model)
    optimizer.update(model, grads)
    return loss


# --- section 3: the exact score and flow matching --------------------------------------------


def mixture_score(x, centers, std, alpha_bar):
    """Score of the noised Gaussian mixture, the x-gradient of log q_t(x) (section 3).

    x0 follows the equal-weight mixture of N(c_m, std^2 I) at ``centers`` and
    x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps, so q_t is again a mixture.

    Args:
        x: float [N, D]. centers: float [M, D]. std: float > 0. alpha_bar: float in (0, 1].

    Returns:
        float32 [N, D].
    """
    x, centers = float_array("x", x, min_ndim=2), float_array("centers", centers, min_ndim=2)
    alpha_bar = jnp.asarray(alpha_bar, jnp.float32)
    var = alpha_bar * std**2 + 1.0 - alpha_bar
    means = jnp.sqrt(alpha_bar) * centers  # (M, D)
    diff = means[None] - x[:, None]  # (N, M, D)
    resp = jax.nn.softmax(-0.5 * jnp.sum(diff**2, axis=-1) / var, axis=-1)  # (N, M)
    return jnp.einsum("nm,nmd->nd", resp, diff) / var


def flow_matching_loss(key, v_model: Callable, x1):
    """Conditional flow matching with the linear path (section 3; Lipman et al. 2023).

    Args:
        key: split once into (key_t, key_0); t = ``jax.random.uniform(key_t, (B,))`` and
            x0 = ``jax.random.normal(key_0, x1.shape)``.
        v_model: ``v_model(x_t [B, ...], t float [B]) -> [B, ...]``.
        x1: float [B, ...], data (t = 1 is data, t = 0 noise).

    Returns:
        float32 scalar: mean over every element of (v_model(x_t, t) - (x1 - x0))^2 at
        x_t = t x1 + (1 - t) x0.
    """
    x1 = float_array("x1", x1, min_ndim=1)
    key_t, key_0 = jax.random.split(key)
    t = jax.random.uniform(key_t, (x1.shape[0],))
    x0 = jax.random.normal(key_0, x1.shape)
    tb = t.reshape(t.shape + (1,) * (x1.ndim - 1))
    x_t = tb * x1 + (1.0 - tb) * x0
    return jnp.mean((v_model(x_t, t) - (x1 - x0)) ** 2)


def euler_sample(v_model: Callable, x0, num_steps: int):
    """Integrate dx/dt = v(x, t) from t = 0 (noise x0) to t = 1 with Euler steps (section 3).

    Args:
        v_model: ``v_model(x [B, ...], t float [B]) -> [B, ...]``.
        x0: float [B, ...], the starting noise.
        num_steps: K >= 1 steps of size 1 / K at t_k = k / K, k = 0..K-1.

    Returns:
        float32 [B, ...], x at t = 1.
    """
    x = float_array("x0", x0, min_ndim=1).astype(jnp.float32)
    num_steps = positive_int("num_steps", num_steps)
    dt = 1.0 / num_steps

    def body(x, k):
        t = jnp.full((x.shape[0],), k * dt, dtype=jnp.float32)
        return x + dt * v_model(x, t), None

    x, _ = jax.lax.scan(body, x, jnp.arange(num_steps, dtype=jnp.float32))
    return x


# --- section 4: samplers ---------------------------------------------------------------------


def ddpm_step(key, eps_model: Callable, x_t, t, betas, alpha_bars):
    """One ancestral sampling step x_t -> x_{t-1} (section 4, Ho et al. Algorithm 2).

    Args:
        key: the noise is ``jax.random.normal(key, x_t.shape)``, not added at t = 0.
        eps_model: called as ``eps_model(x_t, t_batch)`` with t_batch int32 [B] all equal to t.
        x_t: float [B, ...].
        t: an int (Python or 0-d array, possibly traced inside ``lax.scan``), 0 <= t < T.
        betas, alpha_bars: float [T].

    Returns:
        float32 [B, ...].
    """
    x_t = float_array("x_t", x_t, min_ndim=1)
    betas, alpha_bars = jnp.asarray(betas, jnp.float32), jnp.asarray(alpha_bars, jnp.float32)
    t = jnp.asarray(t, jnp.int32)
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, jnp.int32))
    beta, ab = betas[t], alpha_bars[t]
    ab_prev = jnp.where(t > 0, alpha_bars[jnp.maximum(t - 1, 0)], 1.0)
    mean = (x_t - beta / jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(1.0 - beta)
    std = jnp.sqrt((1.0 - ab_prev) / (1.0 - ab) * beta)
    noise = jax.random.normal(key, x_t.shape, dtype=jnp.float32)
    return mean + jnp.where(t > 0, std, 0.0) * noise


def respace(alpha_bars, num_steps: int):
    """A shorter schedule on evenly spaced steps of a trained one (section 4; Nichol & Dhariwal).

    Args:
        alpha_bars: float [T], the training schedule.
        num_steps: K, 1 <= K <= T.

    Returns:
        (betas [K], alpha_bars [K], timesteps int32 [K]): step k of the short schedule is the
        trained step ``timesteps[k]`` (same signal fraction); its beta is
        1 - ab[timesteps[k]] / ab[timesteps[k - 1]].
    """
    alpha_bars = jnp.asarray(alpha_bars, jnp.float32)
    total = alpha_bars.shape[0]
    num_steps = positive_int("num_steps", num_steps)
    if num_steps > total:
        raise ValueError(f"num_steps must be <= T = {total}, got {num_steps}")
    timesteps = jnp.round(jnp.linspace(0, total - 1, num_steps)).astype(jnp.int32)
    short = alpha_bars[timesteps]
    previous = jnp.concatenate([jnp.ones(1, jnp.float32), short[:-1]])
    return 1.0 - short / previous, short, timesteps


@nnx.jit(static_argnames=("shape",))
def ddpm_sample(key, model, shape, betas, alpha_bars, timesteps=None):
    """Ancestral sampling from pure noise, every step in one ``lax.scan`` (section 4).

    Args:
        key: one key; x_T and every step's noise come from ``jax.random.split(key, K + 1)``.
        model: an ``nnx.Module`` called as ``model(x, t) -> eps`` with int t [B].
        shape: static tuple (B, ...), the shape of the samples.
        betas, alpha_bars: float [K], the sampling schedule.
        timesteps: None, or int [K] giving the model's step index of each schedule step (from
            :func:`respace`).

    Returns:
        float32 [B, ...], x_0.
    """
    num = betas.shape[0]
    keys = jax.random.split(key, num + 1)
    steps = jnp.arange(num, dtype=jnp.int32) if timesteps is None else timesteps

    def eps_at(k):
        return lambda x, _: model(x, jnp.full((x.shape[0],), steps[k], jnp.int32))

    def body(x, k):
        return ddpm_step(keys[k + 1], eps_at(k), x, k, betas, alpha_bars), None

    x = jax.random.normal(keys[0], shape, dtype=jnp.float32)
    x, _ = jax.lax.scan(body, x, jnp.arange(num - 1, -1, -1, dtype=jnp.int32))
    return x


@nnx.jit(static_argnames=("shape", "num_steps"))
def sample_flow(key, model, shape, num_steps):
    """Euler samples of a velocity model from N(0, I) noise (section 3), one jitted program.

    ``model``: an ``nnx.Module`` called as ``model(x, t)`` with float t [B]; returns float32
    [*shape] at t = 1.
    """
    return euler_sample(model, jax.random.normal(key, shape, jnp.float32), num_steps)


def eps_to_flow(x_t, eps, alpha_bar):
    """A diffusion point and its noise, read on the straight noise-to-data path (section 4).

    x_t = sqrt(ab) x0 + sqrt(1 - ab) eps is, divided by sqrt(ab) + sqrt(1 - ab), the point
    z = tau x0 + (1 - tau) eps of flow matching's straight path (t = 1 is data), at
    tau = sqrt(ab) / (sqrt(ab) + sqrt(1 - ab)); the path's velocity there is x0 - eps.

    Args:
        x_t, eps: float [B, ...]. alpha_bar: float [B], each in (0, 1].

    Returns:
        (z [B, ...], tau float32 [B], velocity [B, ...]), velocity = x0 - eps with
        x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab).
    """
    x_t, eps = float_array("x_t", x_t, min_ndim=1), float_array("eps", eps, min_ndim=1)
    if x_t.shape != eps.shape:
        raise ValueError(f"x_t {x_t.shape} and eps {eps.shape} must have one shape")
    ab = float_array("alpha_bar", alpha_bar)
    if ab.shape != x_t.shape[:1]:
        raise ValueError(f"alpha_bar must have shape [B] = {x_t.shape[:1]}, got {ab.shape}")
    ab = ab.reshape(ab.shape + (1,) * (x_t.ndim - 1))  # (B, 1, ..., 1)
    signal, noise = jnp.sqrt(ab), jnp.sqrt(1.0 - ab)
    x0 = (x_t - noise * eps) / signal
    scale = signal + noise
    return x_t / scale, (signal / scale).reshape(-1), x0 - eps


def ddim_step(eps_model: Callable, x_t, t, t_prev, alpha_bars, eta, key):
    """One DDIM step of the eta family from step index t to t_prev < t (section 4).

    With x0_hat and eps_hat the clean point and the noise that the model's prediction implies,
    the output is sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z: its
    marginal given x0_hat is q(x_{t_prev} | x0_hat) for every sigma (Song et al. 2021, eq. 12),
    and sigma = eta * sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) is eta times the
    standard deviation of the forward posterior q(x_{t_prev} | x_t, x_0) across the skipped
    steps (eq. 16): eta = 0 is deterministic DDIM, eta = 1 the ancestral DDPM step.

    Args:
        eps_model: called once as ``eps_model(x_t, t_batch)``, t_batch int32 [B] all equal to t.
        x_t: float [B, ...].
        t, t_prev: ints (Python or 0-d arrays, possibly traced), -1 <= t_prev < t < T; t_prev =
            -1 means clean data (signal fraction 1, sigma = 0): the step returns x0_hat.
        alpha_bars: float [T].
        eta: float in [0, 1] (possibly traced).
        key: the noise is z = ``jax.random.normal(key, x_t.shape)``.

    Returns:
        float32 [B, ...].
    """
    x_t = float_array("x_t", x_t, min_ndim=1)
    alpha_bars = jnp.asarray(alpha_bars, jnp.float32)
    t, t_prev = jnp.asarray(t, jnp.int32), jnp.asarray(t_prev, jnp.int32)
    eps_hat = eps_model(x_t, jnp.full((x_t.shape[0],), t, jnp.int32))
    ab = alpha_bars[t]
    ab_prev = jnp.where(t_prev >= 0, alpha_bars[jnp.maximum(t_prev, 0)], 1.0)
    x0_hat = (x_t - jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(ab)
    var = jnp.asarray(eta, jnp.float32) ** 2 * (1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev)
    direction = jnp.sqrt(jnp.maximum(1.0 - ab_prev - var, 0.0))
    z = jax.random.normal(key, x_t.shape, jnp.float32)
    return jnp.sqrt(ab_prev) * x0_hat + direction * eps_hat + jnp.sqrt(var) * z


@nnx.jit(static_argnames=("shape",))
def ddim_sample(key, model, shape, alpha_bars, timesteps, eta=0.0):
    """DDIM sampling from N(0, I) noise on trained steps, in one ``lax.scan``.

    Args:
        key: draws x_T = ``jax.random.normal(key, shape)``; step k (counted from 0 at the last
            trained step) draws its noise with ``jax.random.fold_in(key, k + 1)``.
        model: an ``nnx.Module`` called as ``model(x, t) -> eps`` with int t [B].
        shape: static tuple (B, ...).
        alpha_bars: float [T], the training schedule.
        timesteps: int [K], increasing trained step indices (e.g. from :func:`respace`); the
            sampler visits them from the last to the first, then steps to clean data.
        eta: float in [0, 1]; 0 (the default) is deterministic, 1 the ancestral sampler.

    Returns:
        float32 [B, ...].
    """
    timesteps = jnp.asarray(timesteps, jnp.int32)
    previous = jnp.concatenate([jnp.full((1,), -1, jnp.int32), timesteps[:-1]])

    def body(x, k):
        step_key = jax.random.fold_in(key, k + 1)
        return ddim_step(model, x, timesteps[k], previous[k], alpha_bars, eta, step_key), None

    x = jax.random.normal(key, shape, dtype=jnp.float32)
    x, _ = jax.lax.scan(body, x, jnp.arange(timesteps.shape[0] - 1, -1, -1, dtype=jnp.int32))
    return x


# --- section 5: guidance ---------------------------------------------------------------------


def cfg_combine(eps_cond, eps_uncond, w):
    """Classifier-free guidance in the diffusers convention (section 5).

    Args:
        eps_cond, eps_uncond: float arrays of one shape (noise or velocity predictions).
        w: guidance scale (float or array broadcasting against them); w = 0 gives the
            unconditional prediction, w = 1 the conditional one, w > 1 extrapolates past it.

    Returns:
        float array of the broadcast shape.
    """
    eps_cond = float_array("eps_cond", eps_cond)
    eps_uncond = float_array("eps_uncond", eps_uncond)
    if eps_cond.shape != eps_uncond.shape:
        raise ValueError(f"eps_cond {eps_cond.shape} and eps_uncond {eps_uncond.shape} differ")
    return eps_uncond + w * (eps_cond - eps_uncond)


def score_from_noise(eps, alpha_bar):
    """The score of p_t that a noise prediction stands for (section 3): -eps / sqrt(1 - ab).

    The best noise prediction E[eps | x_t] and the score of the noisy marginal at noise level ab
    are the same vector field up to this factor (Tweedie's formula).

    Args:
        eps: float [B, ...], a noise prediction at x_t.
        alpha_bar: float, or float array broadcasting against eps, in [0, 1).

    Returns:
        float32 [B, ...], the score grad_x log p_t(x_t).
    """
    eps = float_array("eps", eps)
    ab = jnp.asarray(alpha_bar, jnp.float32)
    if not isinstance(ab, jax.core.Tracer) and not bool(jnp.all((ab >= 0) & (ab < 1))):
        raise ValueError("alpha_bar must lie in [0, 1) (at 1 there is no noise to predict)")
    return -eps / jnp.sqrt(1.0 - ab)


def classifier_guided_eps(eps_uncond, grad_log_classifier, alpha_bar, w):
    """Classifier guidance written as a noise prediction (section 5; Dhariwal & Nichol 2021).

    The guided density is p_t(x) p_t(y | x)^w; its score is the unconditional score plus w
    times the classifier's gradient, and the noise prediction is -sqrt(1 - ab) times a score.

    Args:
        eps_uncond: float [B, ...], the unconditional noise prediction at x_t.
        grad_log_classifier: float [B, ...], the gradient of log p_t(y | x) at x_t.
        alpha_bar: float, or float array broadcasting against them, in [0, 1).
        w: the guidance scale (float or broadcasting array); 0 gives eps_uncond.

    Returns:
        float32 [B, ...]: eps_uncond - w sqrt(1 - ab) grad_log_classifier.
    """
    eps_uncond = float_array("eps_uncond", eps_uncond)
    grad = float_array("grad_log_classifier", grad_log_classifier)
    if eps_uncond.shape != grad.shape:
        raise ValueError(f"eps_uncond {eps_uncond.shape} and grad_log_classifier {grad.shape} "
                         "must have one shape")  # fmt: skip
    ab = jnp.asarray(alpha_bar, jnp.float32)
    return eps_uncond - w * jnp.sqrt(1.0 - ab) * grad


# --- section 6: the bound in bits per dimension ----------------------------------------------


DIGIT_LEVELS = 17  # the 8x8 digits' pixels take the integer levels 0..16


def _log_normal_cell(lower, upper):
    """log(Phi(upper) - Phi(lower)) for standardised cell edges lower < upper (either infinite).

    Stable in both tails: a cell to the right of 0 is mirrored to the left, where the log-CDF
    of its upper edge is accurate, and the lower edge's share is removed with log(-expm1).
    """
    flip = lower + upper > 0.0
    lo = jnp.where(flip, -upper, lower)
    hi = jnp.where(flip, -lower, upper)
    log_hi, log_lo = jax.scipy.special.log_ndtr(hi), jax.scipy.special.log_ndtr(lo)
    gap = jnp.minimum(log_lo - log_hi, 0.0)  # <= 0; -inf for an open lower edge
    return log_hi + jnp.log(-jnp.expm1(jnp.where(gap < 0.0, gap, -1e-30)))


def discretized_gaussian_log_prob(x0, mean, std, num_levels: int = DIGIT_LEVELS):
    """Log-probability of data on a grid under a discretised Gaussian decoder (section 6).

    The data take K = ``num_levels`` values evenly spaced from -1 to 1 (both included). Each
    level gets the mass of N(mean, std^2) on its cell, the values nearer to it than to any other
    level: half a spacing, 1 / (K - 1), on either side, except that the lowest cell extends to
    -inf and the highest to +inf, so the K probabilities sum to 1 (Ho et al. 2020, eq. 13).

    Args:
        x0: float [B, ...], every entry one of the K levels.
        mean: float [B, ...], the decoder's mean per entry.
        std: float > 0, or a float array broadcasting against x0.
        num_levels: K, a Python int >= 2.

    Returns:
        float32 [B]: log P(x0) in nats per example, summed over the data axes; finite and
        accurate in the tails (a mean tens of standard deviations away).
    """
    x0 = float_array("x0", x0, min_ndim=1)
    mean = float_array("mean", mean, min_ndim=1)
    if x0.shape != mean.shape:
        raise ValueError(f"x0 {x0.shape} and mean {mean.shape} must have one shape")
    num_levels = positive_int("num_levels", num_levels)
    if num_levels < 2:
        raise ValueError(f"num_levels must be >= 2, got {num_levels}")
    std = jnp.asarray(std, jnp.float32)
    half = 1.0 / (num_levels - 1)  # half the spacing 2 / (K - 1)
    lower = jnp.where(x0 < -1.0 + half, -jnp.inf, (x0 - half - mean) / std)
    upper = jnp.where(x0 > 1.0 - half, jnp.inf, (x0 + half - mean) / std)
    log_p = _log_normal_cell(lower, upper)  # (B, ...)
    return jnp.sum(log_p.reshape(x0.shape[0], -1), axis=-1)


def prior_kl(x0, alpha_bars):
    """L_T: KL(q(x_T | x_0) || N(0, I)) per example, in nats (section 6).

    Args:
        x0: float [B, ...]. alpha_bars: float [T]; its last entry is the final signal fraction.

    Returns:
        float32 [B], summed over the data axes:
        sum of (ab_T x0^2 + (1 - ab_T) - 1 - log(1 - ab_T)) / 2.
    """
    x0 = float_array("x0", x0, min_ndim=1)
    ab = jnp.asarray(alpha_bars, jnp.float32)[-1]
    per_entry = 0.5 * (ab * x0**2 - ab - jnp.log1p(-ab))
    return jnp.sum(per_entry.reshape(x0.shape[0], -1), axis=-1)


def vlb_weights(betas, alpha_bars):
    """The factor w[t] with L_{t-1} = w[t] ||eps - eps_hat||^2 (section 2 and 6).

    The model's step is N(mu_theta, posterior variance) with mu_theta written through eps_hat,
    so each KL of the bound is a weighted noise-prediction error.

    Args:
        betas, alpha_bars: float [T].

    Returns:
        float32 [T]: beta^2 / (2 var alpha (1 - ab)) with var the posterior variance; entry 0 is
        0 (at the first step the decoder term replaces the KL).
    """
    betas = jnp.asarray(betas, jnp.float32)
    ab = jnp.asarray(alpha_bars, jnp.float32)
    ab_prev = jnp.concatenate([jnp.ones(1, jnp.float32), ab[:-1]])
    var = (1.0 - ab_prev) / (1.0 - ab) * betas
    safe_var = jnp.where(var > 0, var, 1.0)
    weights = betas**2 / (2.0 * safe_var * (1.0 - betas) * (1.0 - ab))
    return jnp.where(jnp.arange(betas.shape[0]) > 0, weights, 0.0)


def vlb_terms(key, eps_model: Callable, x0, t, betas, alpha_bars, num_levels: int = DIGIT_LEVELS):
    """One Monte Carlo sample of the bound's term at step t, per example, in nats (section 6).

    Args:
        key: the noise of ``q_sample(key, x0, t, alpha_bars)``.
        eps_model: ``eps_model(x_t [B, ...], t int [B]) -> [B, ...]``.
        x0: float [B, ...] on the grid of ``num_levels`` levels in [-1, 1].
        t: int [B]. betas, alpha_bars: float [T].
        num_levels: K, the number of data levels (17 for the 8x8 digits).

    Returns:
        float32 [B]: at t = 0 the decoder's -log p(x0 | x_1), a discretised Gaussian around the
        model's mean with variance betas[0]; at t > 0 vlb_weights[t] ||eps - eps_hat||^2.
        Its mean over x_t is L_{t-1} (L_0 at t = 0).
    """
    x0 = float_array("x0", x0, min_ndim=1)
    t = _check_t(t, x0)
    betas, alpha_bars = jnp.asarray(betas, jnp.float32), jnp.asarray(alpha_bars, jnp.float32)
    x_t, eps = q_sample(key, x0, t, alpha_bars)
    eps_hat = eps_model(x_t, t)
    flat = (x0.shape[0], -1)
    kl = vlb_weights(betas, alpha_bars)[t] * jnp.sum(((eps - eps_hat) ** 2).reshape(flat), -1)
    beta, ab = _per_example(betas, t, x0), _per_example(alpha_bars, t, x0)
    mean = (x_t - beta / jnp.sqrt(1.0 - ab) * eps_hat) / jnp.sqrt(1.0 - beta)
    decoder = -discretized_gaussian_log_prob(x0, mean, jnp.sqrt(betas[0]), num_levels)
    return jnp.where(t == 0, decoder, kl)


def vlb_estimate(key, eps_model: Callable, x0, betas, alpha_bars, num_levels: int = DIGIT_LEVELS):
    """An unbiased estimate of the diffusion bound on -log P(x0), per example (section 6).

    -log P(x0) <= L_T + sum over t of L_{t-1}. The sum is T times the mean over a step t drawn
    uniformly from 0..T-1, so one step per example gives an unbiased estimate.

    Args:
        key: split once into (key_t, key_eps); t = ``jax.random.randint(key_t, (B,), 0, T)``.
        eps_model, x0, betas, alpha_bars, num_levels: as in :func:`vlb_terms`.

    Returns:
        float32 [B] nats: prior_kl + T * vlb_terms at the drawn step. Divide the mean by
        D log 2 for bits per dimension.
    """
    x0 = float_array("x0", x0, min_ndim=1)
    alpha_bars = jnp.asarray(alpha_bars, jnp.float32)
    num_steps = alpha_bars.shape[0]
    key_t, key_eps = jax.random.split(key)
    t = jax.random.randint(key_t, (x0.shape[0],), 0, num_steps)
    terms = vlb_terms(key_eps, eps_model, x0, t, betas, alpha_bars, num_levels)
    return prior_kl(x0, alpha_bars) + num_steps * terms


# --- section 7: the diagnostic ---------------------------------------------------------------


SCHEDULE_BUGS = ("same", "shift", "stride", "reversed", "other")
SCHEDULE_TOL = 1e-5


def _shifts(num_steps: int):
    """The index offsets a shift may have, smallest first, late before early: 1, -1, 2, ..."""
    for size in range(1, num_steps // 2 + 1):
        yield from (size, -size)


def schedule_mismatch(train_alpha_bars, sample_alpha_bars) -> tuple[str, int]:
    """Which schedule bug a sampler has, and its parameter, from the two schedules (section 7).

    Two signal fractions count as equal when they differ by at most ``SCHEDULE_TOL`` = 1e-5; a
    relation holds when every pair of entries it matches is equal.

    Args:
        train_alpha_bars: float [T], the schedule the model was trained with.
        sample_alpha_bars: float [T'], the schedule the sampler uses with its step indices.

    Returns:
        (kind, k), the first of these that holds (``SCHEDULE_BUGS``):
        ("same", 0): T' = T and equal at every index;
        ("shift", k): T' = T, 1 <= |k| <= T // 2, and the sampler's index i has the training
        schedule's entry i + k wherever that index exists (k > 0: read k indices late; the
        smallest |k| first, k before -k);
        ("stride", k): k >= 2, k T' <= T, and the sampler's paper step j = 1..T' (index j - 1) has
        the training schedule's paper step k j (index k j - 1), the smallest such k;
        ("reversed", 0): T' = T and the sampler reads the training schedule from its last index
        to its first;
        ("other", 0): none of these.

    Raises:
        ValueError: when either schedule is not one-dimensional or is empty.
    """
    a = np.asarray(float_array("train_alpha_bars", train_alpha_bars, min_ndim=1), np.float64)
    b = np.asarray(float_array("sample_alpha_bars", sample_alpha_bars, min_ndim=1), np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError(
            f"the schedules must both have shape [T], T >= 1, got {a.shape} and {b.shape}"
        )

    def equal(x, y) -> bool:
        return x.shape == y.shape and bool(np.all(np.abs(x - y) <= SCHEDULE_TOL))

    n, m = a.size, b.size
    if equal(a, b):
        return "same", 0
    if n == m:
        for k in _shifts(n):
            if equal(a[k:], b[: n - k]) if k > 0 else equal(a[: n + k], b[-k:]):
                return "shift", k
    for k in range(2, n // m + 1):
        if equal(a[k - 1 :: k][:m], b):
            return "stride", k
    if equal(a[::-1], b):
        return "reversed", 0
    return "other", 0


# --- the networks -----------------------------------------------------------------------------


class TimeMLP(nnx.Module):
    """An MLP of (x, t[, label]) for noise or velocity prediction on flat data.

    Args:
        dim: D, the data width (inputs and outputs are [B, D]).
        hidden: width of the hidden layers; depth: how many hidden layers (>= 1).
        time_scale: t is divided by it before the sinusoidal embedding (T for DDPM steps,
            1 for flow matching's t in [0, 1]).
        num_classes: None for an unconditional model, else C: labels 0..C-1 are classes and
            label C means "no label" (classifier-free guidance's null token).
        rngs: keyword-only.

    Call: ``model(x [B, D], t [B], labels int [B] or None) -> [B, D]``.
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, *, time_scale: float = 1.0,
                 num_classes: int | None = None, num_frequencies: int = 16,
                 rngs: nnx.Rngs):  # fmt: skip
        self.dim, self.time_scale, self.num_classes = dim, float(time_scale), num_classes
        self.frequencies = nnx.Variable(
            jnp.exp(jnp.linspace(0.0, math.log(200.0), num_frequencies)).astype(jnp.float32)
        )
        self.embed = (
            None if num_classes is None else initializers.embed(num_classes + 1, hidden, rngs=rngs)
        )
        self.input = initializers.linear(dim + 2 * num_frequencies, hidden, rngs=rngs)
        self.layers = nnx.List(
            [initializers.linear(hidden, hidden, rngs=rngs) for _ in range(depth - 1)]
        )
        self.output = initializers.linear(hidden, dim, rngs=rngs)

    def __call__(self, x, t, labels=None):
        s = jnp.asarray(t, jnp.float32)[:, None] / self.time_scale  # (B, 1)
        angles = s * self.frequencies[...]  # (B, F)
        h = self.input(jnp.concatenate([x, jnp.sin(angles), jnp.cos(angles)], axis=-1))
        if self.embed is not None:
            if labels is None:
                labels = jnp.full((x.shape[0],), self.num_classes, jnp.int32)
            h = h + self.embed(labels)
        h = jax.nn.silu(h)
        for layer in self.layers:
            h = jax.nn.silu(layer(h))
        return self.output(h)


# --- section 6's digits model -----------------------------------------------------------------

DIGITS_DDPM_CONFIG = dict(num_train=1500, split_seed=0, hidden=256, depth=3, num_steps=1000,
                          batch=128, learning_rate=1e-3, seed=0)  # fmt: skip


def digits_split(num_train: int = 1500, seed: int = 0):
    """The 8x8 digits scaled to [-1, 1] (17 levels, spacing 1/8), split into train and held out.

    Returns:
        (train [num_train, 64], held_out [1797 - num_train, 64]), float32, a fixed permutation.
    """
    x, _ = data.load_digits()  # (1797, 64) in [0, 1]
    order = np.random.default_rng(seed).permutation(x.shape[0])
    x = 2.0 * x[order] - 1.0
    return jnp.asarray(x[:num_train]), jnp.asarray(x[num_train:])


def pretrained_digits_ddpm(train_steps: int = 2000) -> TimeMLP:
    """A DDPM of the training digits: ``TimeMLP(64, 256, 3)`` trained on ``L_simple`` with the
    linear schedule (T = 1000), Adam, ``train_steps`` steps of 128 (cached after the first run)."""
    config = dict(DIGITS_DDPM_CONFIG, train_steps=positive_int("train_steps", train_steps))

    def build():
        return TimeMLP(64, config["hidden"], config["depth"], time_scale=config["num_steps"],
                       rngs=nnx.Rngs(config["seed"]))  # fmt: skip

    def fit(model):
        train_x, _ = digits_split(config["num_train"], config["split_seed"])
        ab = alpha_bars(linear_beta_schedule(config["num_steps"]))
        optimizer = nnx.Optimizer(model, optax.adam(config["learning_rate"]), wrt=nnx.Param)
        step = nnx.jit(lambda m, o, key, x0: train_step(m, o, key, x0, ab))
        for i in range(config["train_steps"]):
            key_batch, key_step = jax.random.split(jax.random.fold_in(jax.random.key(5), i))
            index = jax.random.randint(key_batch, (config["batch"],), 0, train_x.shape[0])
            step(model, optimizer, key_step, train_x[index])

    return model_cache.cached_model("digits-ddpm", config, build, fit)
