"""Reference implementations of the graded exercises of chapter 02, the VAE ELBO.

The chapter (``solutions/02_vae_elbo/02_vae_elbo.ipynb``) teaches each function in the section
named in its docstring; the notebook's hidden tests compare the student's version with the one
here. Shape letters: B batch, D data dimensions, Z latent dimensions, K importance samples,
N Monte Carlo samples.

    gaussian_kl_standard, gaussian_kl          section 3, closed-form Gaussian KL
    bernoulli_log_likelihood,
    gaussian_log_likelihood                    section 3, the reconstruction term
    reparameterize                             section 4, the reparameterization trick
    score_function_grad, reparameterization_grad
                                               section 4, two gradient estimators
    iwae_bound                                 section 5, the importance-weighted bound
    linear_gaussian_log_marginal,
    linear_gaussian_posterior                  section 5, the exact check (not graded)
    kl_direction                               section 5, which way a KL goes
    elbo_gap                                   section 5, the exact gap (challenge)
    binarize                                   section 6, dynamically binarised digits
    elbo, VAEConfig, VAE, vae_train_step       section 6, the project
    encoder_decoder_grad_norms, kl_diagnostics,
    log_normalizer, smallest_kl, active_latents
                                               section 7, diagnostics of the seeds' bugs
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genlab import nn
from genlab.validate import broadcast_shapes, float_array, positive_int

__all__ = [
    "VAE",
    "VAEConfig",
    "active_latents",
    "bernoulli_log_likelihood",
    "binarize",
    "elbo",
    "elbo_gap",
    "encoder_decoder_grad_norms",
    "gaussian_kl",
    "gaussian_kl_standard",
    "gaussian_log_likelihood",
    "iwae_bound",
    "KL_DIRECTIONS",
    "KL_SYMPTOMS",
    "kl_diagnostics",
    "kl_direction",
    "latent_activity",
    "linear_gaussian_log_marginal",
    "linear_gaussian_posterior",
    "log_normalizer",
    "reparameterization_grad",
    "reparameterize",
    "score_function_grad",
    "smallest_kl",
    "vae_train_step",
]

LOG_2PI = math.log(2.0 * math.pi)


def _at_least_1d(name: str, x: jax.Array) -> None:
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one axis (the last is summed), got a scalar")


def _broadcast(**arrays: jax.Array) -> tuple[int, ...]:
    return broadcast_shapes(list(arrays), *(a.shape for a in arrays.values()))


# --- section 3: Gaussian KL and likelihoods --------------------------------------------------


def gaussian_kl_standard(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """``KL(N(mean, diag exp(log_var)) || N(0, I))``, summed over the last axis (section 3).

    ``0.5 * sum_j (exp(log_var_j) + mean_j**2 - 1 - log_var_j)``; zero exactly at the prior.
    ``exp(v) - 1`` is computed as ``expm1(v)``: near ``v = 0`` the subtraction would cancel and
    could round below zero.

    Args:
        mean: float [..., Z]. log_var: float [..., Z], the log-variances (broadcast with mean).

    Returns:
        float [...], >= 0.
    """
    mean, log_var = (
        float_array("mean", mean, allow_int=False),
        float_array("log_var", log_var, allow_int=False),
    )
    if len(_broadcast(mean=mean, log_var=log_var)) == 0:
        raise ValueError("mean and log_var must have at least one axis (the last is summed)")
    terms = mean**2 + (jnp.expm1(log_var) - log_var)  # (..., Z), each part >= 0
    return 0.5 * jnp.sum(terms, axis=-1)


def gaussian_kl(
    mean_q: jax.Array, log_var_q: jax.Array, mean_p: jax.Array, log_var_p: jax.Array
) -> jax.Array:
    """``KL(q || p)`` between diagonal Gaussians, summed over the last axis (section 3).

    ``0.5 * sum_j (log_var_p - log_var_q + (exp(log_var_q) + (mean_q - mean_p)**2)
    / exp(log_var_p) - 1)``.

    Args:
        mean_q, log_var_q: float [..., Z], the first argument q.
        mean_p, log_var_p: float [..., Z], the second argument p. All four broadcast together.

    Returns:
        float [...] (the broadcast shape without its last axis), >= 0.
    """
    arrays = {
        "mean_q": float_array("mean_q", mean_q, allow_int=False),
        "log_var_q": float_array("log_var_q", log_var_q, allow_int=False),
        "mean_p": float_array("mean_p", mean_p, allow_int=False),
        "log_var_p": float_array("log_var_p", log_var_p, allow_int=False),
    }
    if len(_broadcast(**arrays)) == 0:
        raise ValueError("the inputs must have at least one axis (the last is summed)")
    mq, lvq, mp, lvp = arrays.values()
    terms = lvp - lvq + (jnp.exp(lvq) + (mq - mp) ** 2) * jnp.exp(-lvp) - 1.0  # (..., Z)
    return 0.5 * jnp.sum(terms, axis=-1)


def bernoulli_log_likelihood(x: jax.Array, logits: jax.Array) -> jax.Array:
    """``sum_d x log sigmoid(l) + (1 - x) log sigmoid(-l)`` over the last axis (section 3).

    Stable for logits of any magnitude (uses ``jax.nn.log_sigmoid``). For binary ``x`` this is the
    log-probability of ``x``: over all ``2**D`` binary vectors the probabilities sum to 1. Values
    strictly inside (0, 1) are accepted and give the binary cross-entropy, which is *not* the
    log-density of anything (section 3 measures by how much it fails to normalise).

    Args:
        x: float [..., D], binary (0 or 1) for a log-probability. logits: float [..., D]
            (broadcast with x).

    Returns:
        float [...], <= 0 for binary x.
    """
    x, logits = float_array("x", x, allow_int=False), float_array("logits", logits, allow_int=False)
    if len(_broadcast(x=x, logits=logits)) == 0:
        raise ValueError("x and logits must have at least one axis (the last is summed)")
    terms = x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)  # (..., D)
    return jnp.sum(terms, axis=-1)


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """``log N(x; mean, diag exp(log_var))``, summed over the last axis, constant included.

    ``sum_d -0.5 * (log(2 pi) + log_var_d + (x_d - mean_d)**2 / exp(log_var_d))`` (section 3).

    Args:
        x: float [..., D]. mean, log_var: float arrays or Python floats, broadcast with x
            (``mean=0.0, log_var=0.0`` gives the standard normal ``N(0, I)``).

    Returns:
        float [...] (the broadcast shape without its last axis).
    """
    arrays = {
        "x": float_array("x", x, allow_int=False),
        "mean": float_array("mean", mean),
        "log_var": float_array("log_var", log_var),
    }
    if len(_broadcast(**arrays)) == 0:
        raise ValueError("x, mean and log_var must have at least one axis (the last is summed)")
    x, mean, log_var = arrays.values()
    terms = -0.5 * (LOG_2PI + log_var + (x - mean) ** 2 * jnp.exp(-log_var))  # (..., D)
    return jnp.sum(terms, axis=-1)


# --- section 4: reparameterization and gradient estimators -----------------------------------


def reparameterize(key: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """One sample ``z ~ N(mean, diag exp(log_var))`` as a differentiable function (section 4).

    ``z = mean + exp(0.5 * log_var) * jax.random.normal(key, mean.shape)``: the standard
    deviation is ``exp(0.5 * log_var)``, not ``log_var`` and not ``exp(log_var)``.

    Args:
        key: a JAX PRNG key. mean: float [..., Z]. log_var: float of mean's shape.

    Returns:
        float [..., Z].
    """
    mean, log_var = (
        float_array("mean", mean, allow_int=False),
        float_array("log_var", log_var, allow_int=False),
    )
    if log_var.shape != mean.shape:
        raise ValueError(f"log_var must have mean's shape {mean.shape}, got {log_var.shape}")
    eps = jax.random.normal(key, mean.shape)  # (..., Z)
    return mean + jnp.exp(0.5 * log_var) * eps


def _toy_noise(key: jax.Array, theta: jax.Array, num_samples: int) -> jax.Array:
    theta = float_array("theta", theta, allow_int=False)
    num_samples = positive_int("num_samples", num_samples)
    return jax.random.normal(key, (num_samples, *theta.shape))  # (N, ...)


def score_function_grad(key: jax.Array, theta: jax.Array, num_samples: int) -> jax.Array:
    """Score-function (REINFORCE) estimate of ``d/dtheta E_{z ~ N(theta, 1)}[z**2]`` (section 4).

    Elementwise in ``theta``; the true gradient is ``2 * theta``. Randomness, pinned:
    ``eps = jax.random.normal(key, (num_samples, *theta.shape))`` and ``z = theta + eps``.
    With the score ``d/dtheta log N(z; theta, 1) = z - theta`` and no baseline, the estimate is
    ``mean over axis 0 of z**2 * (z - theta)``.

    Args:
        key: a JAX PRNG key. theta: float [...]. num_samples: Python int >= 1.

    Returns:
        float, theta's shape.
    """
    eps = _toy_noise(key, theta, num_samples)
    z = theta + eps  # (N, ...)
    return jnp.mean(z**2 * (z - theta), axis=0)


def reparameterization_grad(key: jax.Array, theta: jax.Array, num_samples: int) -> jax.Array:
    """Reparameterization estimate of ``d/dtheta E_{z ~ N(theta, 1)}[z**2]`` (section 4).

    Same pinned noise as :func:`score_function_grad`, ``z = theta + eps``; the estimate is the
    gradient of ``mean over axis 0 of (theta + eps)**2``, i.e. ``mean over axis 0 of 2 z``.

    Args:
        key: a JAX PRNG key. theta: float [...]. num_samples: Python int >= 1.

    Returns:
        float, theta's shape.
    """
    eps = _toy_noise(key, theta, num_samples)
    return jnp.mean(2.0 * (theta + eps), axis=0)


# --- section 5: the importance-weighted bound and the exact check ----------------------------


def iwae_bound(log_weights: jax.Array) -> jax.Array:
    """``log (1/K) sum_k exp(log_weights[k])`` over axis 0, computed stably (section 5).

    With ``log_weights[k] = log p(x, z_k) - log q(z_k | x)`` and ``z_k ~ q``, this is the IWAE
    bound of Burda et al. (2015); ``K = 1`` gives the one-sample ELBO.

    Args:
        log_weights: float [K, ...], K >= 1; entries may be -inf.

    Returns:
        float [...].
    """
    log_weights = float_array("log_weights", log_weights, allow_int=False)
    _at_least_1d("log_weights", log_weights)
    if log_weights.shape[0] < 1:
        raise ValueError("log_weights must hold at least one sample on axis 0 (K >= 1)")
    k = log_weights.shape[0]
    return jax.nn.logsumexp(log_weights, axis=0) - jnp.log(float(k))


def _check_linear_gaussian(x, weight, bias, noise_var):
    x, weight = float_array("x", x, allow_int=False), float_array("weight", weight, allow_int=False)
    bias, noise_var = (
        float_array("bias", bias, allow_int=False),
        float_array("noise_var", noise_var, allow_int=False),
    )
    if weight.ndim != 2:
        raise ValueError(f"weight must have shape [D, Z], got {weight.shape}")
    d = weight.shape[0]
    if x.ndim < 1 or x.shape[-1] != d:
        raise ValueError(f"x must have shape [..., {d}], got {x.shape}")
    if bias.shape != (d,):
        raise ValueError(f"bias must have shape [{d}], got {bias.shape}")
    if noise_var.shape != ():
        raise ValueError(f"noise_var must be a scalar, got shape {noise_var.shape}")
    return x, weight, bias, noise_var


def linear_gaussian_log_marginal(x, weight, bias, noise_var) -> jax.Array:
    """Exact ``log p(x)`` of the linear-Gaussian model (probabilistic PCA) (section 5).

    ``p(z) = N(0, I_Z)``, ``p(x | z) = N(weight z + bias, noise_var I_D)``, so
    ``p(x) = N(bias, weight weight^T + noise_var I_D)``, evaluated with a Cholesky factor.

    Args:
        x: float [..., D]. weight: float [D, Z]. bias: float [D]. noise_var: float scalar > 0.

    Returns:
        float [...].
    """
    x, weight, bias, noise_var = _check_linear_gaussian(x, weight, bias, noise_var)
    d = weight.shape[0]
    cov = weight @ weight.T + noise_var * jnp.eye(d)  # (D, D)
    chol = jnp.linalg.cholesky(cov)  # (D, D), lower
    r = x - bias  # (..., D)
    flat = r.reshape(-1, d).T  # (D, M)
    white = jax.scipy.linalg.solve_triangular(chol, flat, lower=True)  # (D, M)
    maha = jnp.sum(white**2, axis=0).reshape(r.shape[:-1])  # (...)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    return -0.5 * (d * LOG_2PI + log_det + maha)


def linear_gaussian_posterior(x, weight, bias, noise_var) -> tuple[jax.Array, jax.Array]:
    """The exact posterior ``p(z | x) = N(mean, cov)`` of the linear-Gaussian model (section 5).

    ``cov = noise_var (weight^T weight + noise_var I_Z)^{-1}`` (the same for every x) and
    ``mean = cov weight^T (x - bias) / noise_var``. The covariance is diagonal exactly when the
    columns of ``weight`` are orthogonal.

    Args:
        x: float [..., D]. weight: float [D, Z]. bias: float [D]. noise_var: float scalar > 0.

    Returns:
        mean: float [..., Z]; cov: float [Z, Z].
    """
    x, weight, bias, noise_var = _check_linear_gaussian(x, weight, bias, noise_var)
    z = weight.shape[1]
    precision = weight.T @ weight / noise_var + jnp.eye(z)  # (Z, Z)
    cov = jnp.linalg.inv(precision)  # (Z, Z)
    mean = (x - bias) @ weight @ cov.T / noise_var  # (..., Z)
    return mean, cov


def elbo_gap(x, weight, bias, noise_var, mean_q, log_var_q) -> jax.Array:
    """The exact gap ``log p(x) - ELBO(q)`` of the linear-Gaussian model (section 5, challenge).

    It equals ``KL(q(z | x) || p(z | x))`` with ``q = N(mean_q, diag exp(log_var_q))`` and the
    exact posterior of :func:`linear_gaussian_posterior` (a full covariance in general). Computed
    here from the closed-form ELBO: ``E_q log N(x; W z + b, s I) - KL(q || N(0, I))`` with
    ``E_q ||x - W z - b||^2 = ||x - W mean_q - b||^2 + sum_j |W_j|^2 exp(log_var_q_j)``.

    Args:
        x: float [..., D]. weight: float [D, Z]. bias: float [D]. noise_var: float scalar > 0.
        mean_q, log_var_q: float [..., Z], broadcast with x's batch shape.

    Returns:
        float [...], >= 0; 0 exactly when q is the true posterior.
    """
    x, weight, bias, noise_var = _check_linear_gaussian(x, weight, bias, noise_var)
    mean_q = float_array("mean_q", mean_q, allow_int=False)
    log_var_q = float_array("log_var_q", log_var_q, allow_int=False)
    d, z = weight.shape
    for name, a in (("mean_q", mean_q), ("log_var_q", log_var_q)):
        if a.ndim < 1 or a.shape[-1] != z:
            raise ValueError(f"{name} must have shape [..., {z}], got {a.shape}")
    residual = x - mean_q @ weight.T - bias  # (..., D)
    spread = jnp.exp(log_var_q) @ jnp.sum(weight**2, axis=0)  # (...,) = sum_j |W_j|^2 var_j
    expected_sq = jnp.sum(residual**2, axis=-1) + spread  # (...)
    log_lik = -0.5 * (d * (LOG_2PI + jnp.log(noise_var)) + expected_sq / noise_var)
    bound = log_lik - gaussian_kl_standard(mean_q, log_var_q)
    return linear_gaussian_log_marginal(x, weight, bias, noise_var) - bound


# --- section 6: the ELBO and the model -------------------------------------------------------


def elbo(
    key: jax.Array,
    x: jax.Array,
    encode: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    decode: Callable[[jax.Array], jax.Array],
    beta: float = 1.0,
) -> jax.Array:
    """One-sample ELBO per example with a Bernoulli decoder (section 6).

    ``mean, log_var = encode(x)`` ([B, Z] each), ``z = reparameterize(key, mean, log_var)``
    (the key used as is), ``logits = decode(z)`` ([B, D]) and the result is
    ``bernoulli_log_likelihood(x, logits) - beta * gaussian_kl_standard(mean, log_var)``.

    Args:
        key: a JAX PRNG key. x: float [B, D] in [0, 1]. encode, decode: as above.
        beta: weight of the KL term (1 gives the ELBO; a float or a traced scalar).

    Returns:
        float [B] (not averaged over the batch).
    """
    x = float_array("x", x, allow_int=False)
    if x.ndim != 2:
        raise ValueError(f"x must have shape [B, D], got {x.shape}")
    mean, log_var = encode(x)  # (B, Z) each
    z = reparameterize(key, mean, log_var)  # (B, Z)
    logits = decode(z)  # (B, D)
    if logits.shape != x.shape:
        raise ValueError(f"decode(z) must have x's shape {x.shape}, got {logits.shape}")
    return bernoulli_log_likelihood(x, logits) - beta * gaussian_kl_standard(mean, log_var)


@dataclass(frozen=True)
class VAEConfig:
    """Sizes of :class:`VAE`; the defaults fit the 8x8 digits on a CPU in seconds."""

    data_dim: int = 64  # D: 8x8 pixels, flattened
    latent_dim: int = 2  # Z: 2 so the latent space can be drawn
    hidden_dim: int = 128  # H: one hidden layer in the encoder and one in the decoder


class VAE(nnx.Module):
    """An MLP encoder ``x -> (mean, log_var)`` and an MLP decoder ``z -> Bernoulli logits``.

    Attributes, created in this order from ``rngs``:
        encoder: ``nn.MLP((D, H, 2 Z))``; its output is split into mean and log_var.
        decoder: ``nn.MLP((Z, H, D))``.

    ``encode(x [..., D]) -> (mean [..., Z], log_var [..., Z])``; ``decode(z [..., Z]) ->
    logits [..., D]``.
    """

    def __init__(self, config: VAEConfig = VAEConfig(), *, rngs: nnx.Rngs):
        for name in ("data_dim", "latent_dim", "hidden_dim"):
            positive_int(f"config.{name}", getattr(config, name))
        self.config = config
        d, z, h = config.data_dim, config.latent_dim, config.hidden_dim
        self.encoder = nn.MLP((d, h, 2 * z), rngs=rngs)
        self.decoder = nn.MLP((z, h, d), rngs=rngs)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = self.encoder(x)  # (..., 2Z)
        mean, log_var = jnp.split(out, 2, axis=-1)  # (..., Z) each
        return mean, log_var

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)  # (..., D)


def binarize(key: jax.Array, x: jax.Array) -> jax.Array:
    """Dynamic binarisation: each pixel is 1 with probability its intensity (section 6).

    ``x`` in [0, 1] becomes a float32 array of 0s and 1s of the same shape, drawn with
    ``jax.random.bernoulli(key, x)``; a fresh key per batch gives a fresh binary image every
    time an image is seen, and the Bernoulli likelihood is then a probability of the data.

    Args:
        key: a JAX PRNG key. x: float [...] with values in [0, 1].

    Returns:
        float32, x's shape, values in {0, 1}.
    """
    x = float_array("x", x)
    return jax.random.bernoulli(key, x).astype(jnp.float32)


@nnx.jit
def vae_train_step(model: VAE, optimizer: nnx.Optimizer, x: jax.Array, key: jax.Array,
                   beta=1.0, valid=None) -> jax.Array:  # fmt: skip
    """One optimizer step on the mean negative beta-ELBO of a padded batch (section 6).

    Rows of ``x`` where ``valid`` is False are padding: whatever they hold (NaN and infinity
    included), they change neither the loss nor the gradient. The loss is the mean over the
    valid rows of ``-elbo(key, x, model.encode, model.decode, beta)``, with ``elbo`` evaluated
    once on the whole ``[B, D]`` batch (the key used as is, so each row's latent noise does not
    depend on the padding); its gradient with respect to the model's ``nnx.Param`` variables
    updates the model through ``optimizer.update(model, grads)``.

    Args:
        model: a :class:`VAE` (anything with ``encode`` and ``decode``). optimizer: an
            ``nnx.Optimizer`` of that model. x: float [B, D], binary in the valid rows.
            key: a JAX PRNG key. beta: the KL weight, a float or a JAX scalar.
        valid: bool [B] with at least one True, or None (every row valid).

    Returns:
        float scalar: the loss before the update, in nats per valid example.
    """
    if valid is None:
        valid = jnp.ones(x.shape[:1], bool)
    valid = jnp.asarray(valid, bool)
    if valid.shape != x.shape[:1]:
        raise ValueError(f"valid must have shape {x.shape[:1]} (one flag per row of x), "
                         f"got {valid.shape}")  # fmt: skip
    # Padded rows are replaced before the model sees them: a NaN there would otherwise reach the
    # gradient through the masked-out branch (0 * NaN is NaN).
    x_clean = jnp.where(valid[:, None], x, 0.0)

    def loss_fn(m):
        values = elbo(key, x_clean, m.encode, m.decode, beta)  # (B,)
        return -jnp.sum(jnp.where(valid, values, 0.0)) / jnp.sum(valid)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


# --- section 7: diagnostics of the seeds' bugs -----------------------------------------------


def _global_norm(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in leaves))


def encoder_decoder_grad_norms(loss_fn: Callable, model: nnx.Module, batch
                               ) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    """The gradient's size on the encoder and on the decoder (section 7).

    The L2 norm of the gradient of ``loss_fn(model, batch)`` with respect to all ``nnx.Param``
    variables of ``model.encoder`` (every parameter array flattened into one vector), and the
    same for ``model.decoder``. A loss that never calls the encoder gives exactly 0 there.

    Args:
        loss_fn: ``(model, batch) -> float scalar``. model: an NNX module with ``encoder`` and
            ``decoder`` submodules. batch: anything ``loss_fn`` accepts.

    Returns:
        (encoder_norm, decoder_norm): float scalars >= 0.
    """
    grads = nnx.grad(loss_fn)(model, batch)
    return _global_norm(grads["encoder"]), _global_norm(grads["decoder"])


KL_SYMPTOMS = ("nonzero at the prior", "negative", "not finite")
"""The symptoms :func:`kl_diagnostics` names, in a fixed vocabulary."""

_SYMPTOM_TOL = 1e-5  # nats: float32 rounding of a true KL near the prior stays far below


def _diagnostic_inputs() -> list[tuple[jax.Array, jax.Array]]:
    """(mean, log_var) pairs covering the domain [-3, 3]^2: a fine grid in one dimension and
    random draws in several dimensions with a batch shape."""
    grid = np.linspace(-3.0, 3.0, 121)
    mean, log_var = np.meshgrid(grid, grid, indexing="ij")  # (121, 121)
    rng = np.random.default_rng(0)
    return [
        (jnp.asarray(mean.reshape(-1, 1), jnp.float32), jnp.asarray(log_var.reshape(-1, 1),
                                                                    jnp.float32)),
        (jnp.asarray(rng.uniform(-3.0, 3.0, (50, 4, 5)), jnp.float32),
         jnp.asarray(rng.uniform(-3.0, 3.0, (50, 4, 5)), jnp.float32)),
    ]  # fmt: skip


def kl_diagnostics(kl_fn: Callable) -> frozenset[str]:
    """The symptoms of a function that claims to be ``KL(q || N(0, I))`` (section 7).

    ``kl_fn(mean [..., Z], log_var [..., Z]) -> [...]`` is measured on inputs of its domain
    (means and log-variances in [-3, 3], any Z and batch shape) and at the prior (zeros):

    - ``"nonzero at the prior"``: some value at the prior is not 0 (beyond 1e-5 nats) or is
      not finite;
    - ``"negative"``: some finite value is below -1e-5 nats;
    - ``"not finite"``: some value (at the prior included) is NaN or infinite.

    A true KL has none of them. The measurement: the prior in Z = 1 and Z = 5, every
    (mean, log_var) pair of a 121 x 121 grid of the domain in one dimension, and 200 random
    batches of five dimensions.

    Args:
        kl_fn: ``(mean, log_var) -> [...]``, one value per leading index.

    Returns:
        frozenset of the names in :data:`KL_SYMPTOMS` that the measurement found.
    """
    found = set()
    for z in (1, 5):
        prior = np.asarray(kl_fn(jnp.zeros((2, z)), jnp.zeros((2, z))), np.float64)
        if not np.all(np.isfinite(prior)):
            found |= {"nonzero at the prior", "not finite"}
        elif np.max(np.abs(prior)) > _SYMPTOM_TOL:
            found.add("nonzero at the prior")
    for mean, log_var in _diagnostic_inputs():
        values = np.asarray(kl_fn(mean, log_var), np.float64)
        finite = np.isfinite(values)
        if not np.all(finite):
            found.add("not finite")
        if np.any(values[finite] < -_SYMPTOM_TOL):
            found.add("negative")
    return frozenset(found)


def log_normalizer(log_likelihood: Callable, logits: jax.Array) -> jax.Array:
    """``log sum_x exp(log_likelihood(x, logits))`` over all binary ``x`` in ``{0, 1}^D``.

    0 for a likelihood that is a probability of binary data (section 7); anything else means
    the "reconstruction term" does not sum to 1 over the data it models.

    Args:
        log_likelihood: ``(x [N, D], logits [D]) -> [N]``. logits: float [D], 1 <= D <= 16.

    Returns:
        float scalar.
    """
    logits = float_array("logits", logits, allow_int=False)
    if logits.ndim != 1 or not 1 <= logits.shape[0] <= 16:
        raise ValueError(f"logits must have shape [D] with 1 <= D <= 16, got {logits.shape}")
    d = logits.shape[0]
    codes = np.arange(2**d)[:, None] >> np.arange(d)  # (2^D, D)
    every_x = jnp.asarray(codes & 1, jnp.float32)  # (2^D, D)
    return jax.nn.logsumexp(log_likelihood(every_x, logits))


def latent_activity(mean: jax.Array) -> jax.Array:
    """Burda et al.'s activity of each latent dimension (section 7).

    The variance over the data (population variance, axis 0) of the encoder means
    ``mean[:, j]``; a collapsed dimension returns nearly the same mean for every input.

    Args:
        mean: float [N, Z], N >= 2, the encoder means of N inputs.

    Returns:
        float [Z], >= 0.
    """
    mean = float_array("mean", mean, allow_int=False)
    if mean.ndim != 2 or mean.shape[0] < 2:
        raise ValueError(f"mean must have shape [N, Z] with N >= 2, got {mean.shape}")
    return jnp.var(mean, axis=0)


def active_latents(mean: jax.Array, threshold: float = 0.01) -> jax.Array:
    """Which latent dimensions the encoder uses: Burda et al.'s activity (section 7).

    Dimension ``j`` is active when its :func:`latent_activity` exceeds ``threshold``.

    Args:
        mean: float [N, Z], N >= 2, the encoder means of N inputs. threshold: float >= 0.

    Returns:
        bool [Z].
    """
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    return latent_activity(mean) > threshold


KL_DIRECTIONS = ("forward", "reverse", "neither")
"""The verdicts of :func:`kl_direction`."""


def _direction_inputs() -> list[tuple[jax.Array, ...]]:
    """Pairs (q, p) of diagonal Gaussians with unequal variances and unequal means: one
    dimension, several dimensions, and a batch shape; means and log-variances in [-3, 3]."""
    rng = np.random.default_rng(1)
    pairs = []
    for shape in [(200, 1), (100, 4), (5, 6, 3)]:
        mean_q, mean_p = rng.uniform(-3.0, 3.0, (2, *shape))
        log_var_q, log_var_p = rng.uniform(-3.0, 3.0, (2, *shape))
        pairs.append(tuple(jnp.asarray(a, jnp.float32)
                           for a in (mean_q, log_var_q, mean_p, log_var_p)))  # fmt: skip
    return pairs


def _agrees(got, want: jax.Array) -> bool:
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-3, atol=1e-4))


def kl_direction(kl_fn: Callable) -> str:
    """Which KL a suspect function of two diagonal Gaussians computes (section 5).

    ``kl_fn(mean_q, log_var_q, mean_p, log_var_p) -> [...]`` claims to be ``KL(q || p)``
    summed over the last axis. It is compared with both directions of the true KL on pairs of
    Gaussians with *unequal* variances (equal variances cannot tell the directions apart: there
    ``KL(q || p) = KL(p || q)``), in one and in several dimensions and with a batch shape,
    within float32 rounding (relative 1e-3, absolute 1e-4 nats).

    Args:
        kl_fn: the suspect, on float32 arrays [..., Z] with means and log-variances in [-3, 3].

    Returns:
        ``"forward"`` if it agrees with ``KL(q || p)`` on every pair, else ``"reverse"`` if it
        agrees with ``KL(p || q)`` on every pair, else ``"neither"``.
    """
    pairs = _direction_inputs()
    values = [kl_fn(*pair) for pair in pairs]
    if all(_agrees(v, gaussian_kl(mq, vq, mp, vp)) for v, (mq, vq, mp, vp) in zip(values, pairs)):
        return "forward"
    if all(_agrees(v, gaussian_kl(mp, vp, mq, vq)) for v, (mq, vq, mp, vp) in zip(values, pairs)):
        return "reverse"
    return "neither"


def _kl_of_head(head: Callable, a: jax.Array, b: jax.Array) -> jax.Array:
    mean, log_var = head(a, b)
    return 0.5 * (mean**2 + (jnp.expm1(log_var) - log_var))  # KL(q || N(0, 1)) per pair


def smallest_kl(head: Callable, low: float, high: float) -> jax.Array:
    """The smallest ``KL(q || N(0, 1))`` an encoder head can output on a box (section 7).

    ``head(raw_mean, raw_scale) -> (mean, log_var)`` maps the encoder's pre-activations of one
    latent dimension elementwise to the parameters of ``q``. The search: a 401 x 401 grid of
    the box ``[low, high]^2`` (edges included), then 30 rounds of a 21 x 21 grid around the best
    point so far, each half as wide, clipped to the box. Accurate to about 1e-7 nats for the
    smooth heads of the course (separable or not), at a corner, on an edge or inside.

    Args:
        head: the encoder head, elementwise on float32 arrays of one shape.
        low, high: floats, ``low < high``, the range of both pre-activations.

    Returns:
        float32 scalar >= 0: 0 when the head reaches the prior inside the box (identity mean
        and ``exp`` scale with 0 in the box); > 0 for a sigmoid on the mean and the standard
        deviation.
    """
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"low and high must be finite with low < high, got {low}, {high}")
    axis = jnp.linspace(low, high, 401)
    a, b = jnp.meshgrid(axis, axis, indexing="ij")  # (401, 401)
    values = _kl_of_head(head, a, b)
    best = int(jnp.nanargmin(values))
    best_a, best_b, smallest = a.ravel()[best], b.ravel()[best], values.ravel()[best]
    half = 2.0 * (high - low) / 400
    offsets = jnp.linspace(-1.0, 1.0, 21)
    for _ in range(30):
        local_a, local_b = jnp.meshgrid(jnp.clip(best_a + half * offsets, low, high),
                                        jnp.clip(best_b + half * offsets, low, high),
                                        indexing="ij")  # fmt: skip
        local = _kl_of_head(head, local_a, local_b)  # (21, 21)
        i = int(jnp.nanargmin(local))
        if local.ravel()[i] <= smallest:
            best_a, best_b, smallest = local_a.ravel()[i], local_b.ravel()[i], local.ravel()[i]
        half *= 0.5
    return jnp.maximum(smallest, 0.0)
