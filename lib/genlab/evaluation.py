"""Measuring generative models: likelihood in bits (a flow's exact likelihood through its ODE,
dequantised), feature statistics, Fréchet distance, kernel distance (KID), k-NN precision and
recall, nearest-neighbour (memorisation) distances (chapter 06).

The references of chapter 06's graded exercises on sample quality live here; the text
watermark's are in :mod:`genlab.watermark`. Distances are computed from explicit differences,
a block of rows at a time (``jax.lax.map``), not through the ``|a|^2 + |b|^2 - 2 a.b`` shortcut:
that one loses the small distances (an exact copy of a training image comes out at about 1e-3
instead of 0 in float32), which are the ones a memorisation test is about.

Besides the references, the course's generators of the 8x8 digits in small versions, each
trained once on the classifier's training split and kept in :mod:`genlab.model_cache` so the
chapter measures real models without re-running other chapters: :func:`digits_vae` (chapter 02,
with :func:`vae_iwae_nll` its importance-weighted likelihood bound), :func:`digits_gan`
(chapter 01's MLP GAN) and :func:`digits_flow` (chapter 05's flow-matching model). For text
memorisation, :func:`memorisation_gpts` trains chapter 04's GPT on a small slice of the corpus
and keeps snapshots along the way.
"""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import (
    char_gpt,
    data,
    diffusion,
    digits_classifier,
    gan,
    gpt,
    model_cache,
    nn,
    train,
    vae,
)
from genlab.validate import float_array, positive_int

ROW_BLOCK = 64  # rows of a distance matrix computed at once (memory: ROW_BLOCK x M x D floats)


# --- likelihood ---------------------------------------------------------------------------------


def bits_per_dim(nll_nats, num_dims):
    """A negative log-likelihood in nats, per example, as bits per dimension.

    Args:
        nll_nats: float array [...] (or a number), the NLL of each example in nats.
        num_dims: the number of dimensions of one example (pixels, characters), an int >= 1.

    Returns:
        float array of nll_nats's shape: the same information in bits, divided by num_dims.
    """
    num_dims = positive_int("num_dims", num_dims)
    nll = float_array("nll_nats", nll_nats)
    return nll / (num_dims * math.log(2.0))


def dequantized_bits_per_dim(log_density, num_dims, bin_width):
    """Bits per dimension of discrete data under a continuous density, by uniform dequantisation
    (Theis et al. 2016; Ho et al. 2019).

    Each dimension of an example x takes integer levels; the model's density lives on a scale
    where one level step has width ``bin_width`` (levels k map to a k + b, a = bin_width). The
    probability of x is the integral of the density over x's cell; Jensen's inequality bounds its
    logarithm by the average log-density at x + u, u uniform on the unit cube, plus the
    Jacobian of the level-to-model map, num_dims * log(bin_width).

    Args:
        log_density: float array [..., K]: the model's log-density (nats) at K dequantised copies
            of each example, each copy's offsets u drawn uniformly (K >= 1).
        num_dims: D, the dimensions of one example, an int >= 1.
        bin_width: a > 0, the width of one level step on the model's scale.

    Returns:
        float32 [...]: the Monte Carlo estimate (mean over the K copies) of the upper bound on
        -log2 P(x) / D. A density uniform over the levels' range scores log2(levels).
    """
    log_density = float_array("log_density", log_density, min_ndim=1)
    if log_density.shape[-1] < 1:
        raise ValueError("log_density needs at least one dequantised copy on its last axis")
    num_dims = positive_int("num_dims", num_dims)
    if not float(bin_width) > 0.0:
        raise ValueError(f"bin_width must be > 0, got {bin_width!r}")
    log_prob = jnp.mean(log_density, axis=-1) + num_dims * math.log(float(bin_width))
    return (-log_prob / (num_dims * math.log(2.0))).astype(jnp.float32)


def mixture_bits_cost(weight, num_dims):
    """The most a model can lose in bits per dimension when it is mixed with anything else:
    q' = weight * q + (1 - weight) * r, for every density or distribution r and every example.

    Args:
        weight: the mixture weight w of the model q, a float in (0, 1].
        num_dims: D, the dimensions of one example, an int >= 1.

    Returns:
        float: the smallest c >= 0 such that the bits per dimension of q' on any example are at
        most those of q plus c (0 for w = 1).
    """
    num_dims = positive_int("num_dims", num_dims)
    weight = float(weight)
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"weight must be in (0, 1], got {weight!r}")
    return -math.log2(weight) / num_dims


def ode_log_density(v_model, x, num_steps: int = 10):
    """Exact log-density log p_1(x) [B] of a flow's samples (Chen et al. 2018), in nats.

    The flow moves N(0, I) noise at t = 0 to data at t = 1 along dx/dt = v(x, t) (chapter 05's
    convention). Along a path, d log p_t(x_t) / dt = -div v(x_t, t), so
    log p_1(x) = log N(x_0; 0, I) - integral_0^1 div v dt with x_0 the path's start. The path is
    followed backward from x at t = 1 with ``num_steps`` classical Runge-Kutta (RK4) steps, the
    divergence exactly (the trace of the Jacobian of v, one forward-mode pass per dimension:
    fine for D up to a few hundred).

    Args:
        v_model: ``v_model(x [B, D], t float [B]) -> [B, D]``, pure (jit-able).
        x: float [B, D], the points.
        num_steps: K >= 1 fixed RK4 steps of size 1 / K.

    Returns:
        float32 [B]. Call it under ``jax.jit`` (or :func:`flow_log_density` for a model).
    """
    x = float_array("x", x, min_ndim=2).astype(jnp.float32)
    if x.ndim != 2:
        raise ValueError(f"x must have shape [B, D], got {x.shape}")
    num_steps = positive_int("num_steps", num_steps)
    h = 1.0 / num_steps

    def v_one(xi, t):  # [D] -> [D]
        return v_model(xi[None], jnp.full((1,), t, jnp.float32))[0]

    def field(y, t):  # velocity [B, D] and divergence [B] at time t
        v = v_model(y, jnp.full((y.shape[0],), t, jnp.float32))
        jac = jax.vmap(jax.jacfwd(v_one), in_axes=(0, None))(y, t)  # (B, D, D)
        return v, jnp.trace(jac, axis1=-2, axis2=-1)

    def step(carry, k):  # one RK4 step backward in time, t -> t - h
        y, div_integral = carry
        t = 1.0 - k * h
        k1, d1 = field(y, t)
        k2, d2 = field(y - 0.5 * h * k1, t - 0.5 * h)
        k3, d3 = field(y - 0.5 * h * k2, t - 0.5 * h)
        k4, d4 = field(y - h * k3, t - h)
        y = y - h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        div_integral = div_integral + h / 6.0 * (d1 + 2.0 * d2 + 2.0 * d3 + d4)
        return (y, div_integral), None

    start = (x, jnp.zeros(x.shape[0], jnp.float32))
    (x0, div_integral), _ = jax.lax.scan(step, start, jnp.arange(num_steps, dtype=jnp.float32))
    log_noise = -0.5 * jnp.sum(x0**2, axis=-1) - 0.5 * x.shape[1] * math.log(2.0 * math.pi)
    return log_noise - div_integral


@nnx.jit(static_argnames=("num_steps",))
def flow_log_density(model, x, num_steps: int = 10):
    """:func:`ode_log_density` of a velocity model (``model(x [B, D], t [B])``), one compiled
    program: log p_1(x) [B] in nats for x [B, D] on the model's scale."""
    return ode_log_density(model, x, num_steps)


# --- feature statistics and the Fréchet distance -------------------------------------------------


def gaussian_stats(features):
    """Mean [D] and unbiased covariance [D, D] (ddof = 1) of features [N, D], N >= 2."""
    x = float_array("features", features, min_ndim=2)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must have shape [N, D] with N >= 2, got {x.shape}")
    mean = jnp.mean(x, axis=0)
    centered = x - mean
    cov = centered.T @ centered / (x.shape[0] - 1)
    return mean, cov


def _sym_sqrt(a: jax.Array) -> jax.Array:
    """Square root of a symmetric PSD matrix through its eigendecomposition (negative
    eigenvalues from rounding are clipped to 0)."""
    w, v = jnp.linalg.eigh(0.5 * (a + a.T))
    return (v * jnp.sqrt(jnp.clip(w, 0.0))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2):
    """Fréchet (2-Wasserstein squared) distance between N(mu1, cov1) and N(mu2, cov2).

    mu: [D]; cov: [D, D] symmetric positive semi-definite. The trace of (cov1 cov2)^(1/2) is
    computed as the trace of the symmetric matrix (s1 cov2 s1)^(1/2) with s1 = cov1^(1/2), both
    square roots by symmetric eigendecompositions (same eigenvalues, no complex numbers).

    Returns:
        float32 scalar >= 0 (rounding below 0 is clipped).
    """
    mu1, mu2 = float_array("mu1", mu1, min_ndim=1), float_array("mu2", mu2, min_ndim=1)
    cov1, cov2 = float_array("cov1", cov1, min_ndim=2), float_array("cov2", cov2, min_ndim=2)
    d = mu1.shape[-1]
    for name, value, shape in (("mu2", mu2, (d,)), ("cov1", cov1, (d, d)), ("cov2", cov2, (d, d))):
        if value.shape != shape:
            raise ValueError(f"{name} must have shape {shape} to match mu1 {mu1.shape}, "
                             f"got {value.shape}")  # fmt: skip
    s1 = _sym_sqrt(cov1)
    w = jnp.linalg.eigvalsh(s1 @ cov2 @ s1)
    trace_sqrt = jnp.sum(jnp.sqrt(jnp.clip(w, 0.0)))
    value = jnp.sum((mu1 - mu2) ** 2) + jnp.trace(cov1) + jnp.trace(cov2) - 2.0 * trace_sqrt
    return jnp.maximum(value, 0.0)


def feature_frechet(features_a, features_b):
    """Fréchet distance between Gaussian fits of two feature sets [N_a, D] and [N_b, D]."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


def feature_frechet_sqrtm(features_a, features_b) -> float:
    """:func:`feature_frechet` computed the way common FID code does it, as a peer to compare
    with: NumPy float64 means and covariances (ddof = 1) of features_a [N_a, D] and features_b
    [N_b, D], and the trace of ``scipy.linalg.sqrtm(cov_a @ cov_b)`` (a general, Schur-based
    square root; its real part). Needs SciPy. Returns a Python float."""
    import scipy.linalg

    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            "need features_a [N_a, D] and features_b [N_b, D] with N_a, N_b >= 2, "
            f"got {a.shape} and {b.shape}"
        )
    cov_a = np.atleast_2d(np.cov(a, rowvar=False, ddof=1))  # (D, D), also for D = 1
    cov_b = np.atleast_2d(np.cov(b, rowvar=False, ddof=1))
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    mean_gap = np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2)
    return float(mean_gap + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


def disjoint_subsets(features, n, key):
    """Two disjoint random subsets of n rows each of features [N, D]: the rows at positions
    [0, n) and [n, 2n) of ``jax.random.permutation(key, N)``, as two arrays [n, D]; needs
    2 <= n and 2n <= N."""
    x = float_array("features", features, min_ndim=2)
    n = positive_int("n", n)
    if x.ndim != 2 or n < 2 or 2 * n > x.shape[0]:
        raise ValueError(
            f"need features [N, D] and 2 <= n <= N / 2, got shape {x.shape} and n = {n}"
        )
    order = jax.random.permutation(key, x.shape[0])
    return x[order[:n]], x[order[n : 2 * n]]


def frechet_floor(features, n, key):
    """Fréchet distance between two disjoint random subsets of n rows of one feature set
    features [N, D]: what two samples of the same distribution score at sample size n (the
    bias every Fréchet distance at that n carries). The subsets are the rows at positions
    [0, n) and [n, 2n) of ``jax.random.permutation(key, N)`` (:func:`disjoint_subsets`); needs
    2 <= n and 2n <= N.

    Returns:
        float32 scalar >= 0.
    """
    return feature_frechet(*disjoint_subsets(features, n, key))


def kernel_distance(real, fake):
    """The kernel distance (KID, Bińkowski et al. 2018): an unbiased estimate of the squared
    maximum mean discrepancy between the distributions of real [N, D] and fake [M, D] features,
    with the cubic polynomial kernel k(x, y) = (x . y / D + 1)^3.

    Within each set the estimate averages k over pairs of *different* rows (N (N - 1) ordered
    pairs, the diagonal left out); across the sets it averages over all N M pairs. Its expected
    value is the population MMD^2 at every sample size, so it has no floor; a single estimate
    can be slightly negative. Needs N >= 2 and M >= 2.

    Returns:
        float32 scalar.
    """
    real, fake = float_array("real", real, min_ndim=2), float_array("fake", fake, min_ndim=2)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected real [N, D] and fake [M, D], got {real.shape} and {fake.shape}")
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(
            f"need at least 2 rows in each set, got {real.shape[0]} and {fake.shape[0]}"
        )
    return _kernel_distance(real, fake)


@jax.jit
def _kernel_distance(x, y):
    d = x.shape[1]
    kernel = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731
    n, m = x.shape[0], y.shape[0]
    kxx, kyy = kernel(x, x), kernel(y, y)
    within_x = (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1))
    within_y = (jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
    return within_x + within_y - 2.0 * jnp.mean(kernel(x, y))


# --- distances, k-NN precision and recall, memorisation ------------------------------------------


def pairwise_distances(a, b):
    """Euclidean distances [N, M] between rows of a [N, D] and b [M, D] (exact differences)."""
    a, b = float_array("a", a, min_ndim=2), float_array("b", b, min_ndim=2)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected a [N, D] and b [M, D], got {a.shape} and {b.shape}")
    return _pairwise(a, b)


@jax.jit
def _pairwise(a, b):
    row = lambda x: jnp.sqrt(jnp.sum((x[None, :] - b) ** 2, axis=-1))  # noqa: E731
    return jax.lax.map(row, a, batch_size=ROW_BLOCK)


def knn_radii(x, k: int):
    """Distance of each row of x [N, D] to its k-th nearest other row ([N]; itself excluded)."""
    x = float_array("x", x, min_ndim=2)
    k = positive_int("k", k)
    if x.ndim != 2 or x.shape[0] <= k:
        raise ValueError(f"x must be [N, D] with N > k = {k}, got shape {x.shape}")
    d = _pairwise(x, x)
    return jnp.sort(d, axis=1)[:, k]  # column 0 is the point itself (distance 0)


def knn_precision_recall(real, fake, k=3):
    """k-NN precision and recall (Kynkäänniemi et al. 2019) of fake [M, D] against real [N, D].

    Each point's radius is the distance to its k-th nearest neighbour in its own set (itself
    excluded). Precision: the fraction of fake points within (<=) the radius of at least one
    real point. Recall: the fraction of real points within the radius of at least one fake point.
    Both sets need more than k points.

    Returns:
        (precision, recall), two float32 scalars in [0, 1].
    """
    real, fake = float_array("real", real, min_ndim=2), float_array("fake", fake, min_ndim=2)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected real [N, D] and fake [M, D], got {real.shape} and {fake.shape}")
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    d = _pairwise(fake, real)  # (M, N)
    precision = jnp.mean(jnp.any(d <= r_real[None, :], axis=1))
    recall = jnp.mean(jnp.any(d <= r_fake[:, None], axis=0))
    return precision.astype(jnp.float32), recall.astype(jnp.float32)


def nearest_neighbor_distances(samples, reference):
    """Euclidean distance [N] of each of samples [N, D] to its nearest row of reference [M, D]."""
    samples = float_array("samples", samples, min_ndim=2)
    reference = float_array("reference", reference, min_ndim=2)
    if samples.ndim != 2 or reference.ndim != 2 or samples.shape[1] != reference.shape[1]:
        raise ValueError(f"expected samples [N, D] and reference [M, D], got {samples.shape} "
                         f"and {reference.shape}")  # fmt: skip
    if reference.shape[0] == 0:
        raise ValueError("reference must hold at least one row")
    return jnp.min(_pairwise(samples, reference), axis=1)


# --- a small VAE of the digits, trained once --------------------------------------------------

VAE_CONFIG = {"latent_dim": 8, "hidden_dim": 256, "steps": 3000, "batch": 128, "lr": 2e-3,
              "seed": 0}  # fmt: skip


def _train_vae(model: vae.VAE) -> None:
    (x, _), _ = digits_classifier.split()
    x = jnp.asarray(x)
    key = jax.random.key(VAE_CONFIG["seed"])

    @jax.jit  # one program per batch, not a dozen small ones (3x faster training, same weights)
    def batch(i):  # (a fresh binarisation of B training digits [B, 64], the step's key)
        k_batch, k_bin, k_step = jax.random.split(jax.random.fold_in(key, i), 3)
        index = jax.random.randint(k_batch, (VAE_CONFIG["batch"],), 0, x.shape[0])
        return vae.binarize(k_bin, x[index]), k_step

    step = nnx.jit(lambda model, optimizer, batch: vae.vae_train_step(model, optimizer, *batch))
    train.fit(step, model, nnx.Optimizer(model, optax.adam(VAE_CONFIG["lr"]), wrt=nnx.Param),
              batch, VAE_CONFIG["steps"], log_every=500,
              desc="training the digits VAE (once, then cached)")  # fmt: skip


def digits_vae() -> vae.VAE:
    """A VAE (8 latents, 256 hidden units) of the binarised 8x8 digits of the classifier's
    training split (:func:`genlab.digits_classifier.split`); trained on first use, then cached."""
    config = vae.VAEConfig(64, VAE_CONFIG["latent_dim"], VAE_CONFIG["hidden_dim"])
    return model_cache.cached_model(
        "digits-vae", VAE_CONFIG, lambda: vae.VAE(config, rngs=nnx.Rngs(VAE_CONFIG["seed"])),
        _train_vae,
    )  # fmt: skip


def vae_samples(model: vae.VAE, key, num_samples: int) -> jax.Array:
    """Mean images [num_samples, 64] (pixel probabilities in [0, 1]) decoded from z ~ N(0, I)."""
    z = jax.random.normal(key, (positive_int("num_samples", num_samples), model.config.latent_dim))
    return jax.nn.sigmoid(model.decode(z))


def vae_iwae_nll(model: vae.VAE, key, x, num_importance: int = 100) -> jax.Array:
    """The IWAE upper bound [N] on -log p(x) in nats for binary images x [N, 64]: K samples of
    q(z | x), log weights log p(x | z) + log p(z) - log q(z | x), logsumexp over K minus log K."""
    x = float_array("x", x, min_ndim=2)
    k = positive_int("num_importance", num_importance)
    mean, log_var = model.encode(x)  # (N, Z)
    eps = jax.random.normal(key, (k,) + mean.shape)
    z = mean + jnp.exp(0.5 * log_var) * eps  # (K, N, Z)
    log_px = vae.bernoulli_log_likelihood(x, model.decode(z))  # (K, N)
    log_pz = -0.5 * jnp.sum(z**2 + math.log(2 * math.pi), axis=-1)
    log_qz = -0.5 * jnp.sum(eps**2 + log_var + math.log(2 * math.pi), axis=-1)
    return -vae.iwae_bound(log_px + log_pz - log_qz)


# --- chapter 01's GAN of the digits, small ------------------------------------------------------

GAN_CONFIG = {"latent_dim": 16, "hidden": 256, "steps": 3000, "batch": 128, "lr": 2e-4, "b1": 0.5,
              "seed": 3, "data_seed": 2024}  # fmt: skip


class DigitGenerator(nnx.Module):
    """Chapter 01's generator: z [B, Z] -> images [B, 64] in (-1, 1), an MLP with a final tanh."""

    def __init__(self, latent_dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.latent_dim = latent_dim
        self.net = nn.MLP((latent_dim, hidden, hidden, 64), activation=jax.nn.leaky_relu, rngs=rngs)

    def __call__(self, z):
        return jnp.tanh(self.net(z))  # (B, 64)


def _train_gan(generator: DigitGenerator) -> None:
    (x, _), _ = digits_classifier.split()
    real = jnp.asarray(2.0 * x - 1.0)  # (N, 64) in [-1, 1], the generator's range
    hidden = GAN_CONFIG["hidden"]
    discriminator = nn.MLP((64, hidden, hidden, 1), activation=jax.nn.leaky_relu,
                           rngs=nnx.Rngs(GAN_CONFIG["seed"] + 1))  # fmt: skip
    adam = lambda: optax.adam(GAN_CONFIG["lr"], b1=GAN_CONFIG["b1"])  # noqa: E731
    optimizers = (nnx.Optimizer(generator, adam(), wrt=nnx.Param),
                  nnx.Optimizer(discriminator, adam(), wrt=nnx.Param))  # fmt: skip
    sample_real = lambda key, n: real[jax.random.randint(key, (n,), 0, real.shape[0])]  # noqa: E731
    step = gan.make_gan_step(sample_real, GAN_CONFIG["latent_dim"], GAN_CONFIG["batch"])
    key = jax.random.key(GAN_CONFIG["data_seed"])
    train.fit(step, (generator, discriminator), optimizers, lambda i: jax.random.fold_in(key, i),
              GAN_CONFIG["steps"], log_every=500,
              desc="training the digits GAN (once, then cached)")  # fmt: skip


def digits_gan() -> DigitGenerator:
    """Chapter 01's MLP GAN (non-saturating loss, Adam 2e-4, b1 = 0.5, 3000 steps) trained on the
    classifier's training split of the digits; its generator, trained on first use, then cached."""
    return model_cache.cached_model(
        "digits-gan", GAN_CONFIG,
        lambda: DigitGenerator(GAN_CONFIG["latent_dim"], GAN_CONFIG["hidden"],
                               rngs=nnx.Rngs(GAN_CONFIG["seed"])),
        _train_gan,
    )  # fmt: skip


def gan_samples(generator: DigitGenerator, key, num_samples: int) -> jax.Array:
    """Images [num_samples, 64] in [0, 1] from z ~ N(0, I)."""
    z = jax.random.normal(key, (positive_int("num_samples", num_samples), generator.latent_dim))
    return (generator(z) + 1.0) / 2.0


# --- chapter 05's flow-matching model of the digits, small --------------------------------------

FLOW_CONFIG = {"hidden": 256, "depth": 3, "steps": 5000, "batch": 128, "lr": 1e-3, "seed": 0,
               "data_seed": 20, "sample_steps": 50}  # fmt: skip


def _train_flow(model: diffusion.TimeMLP) -> None:
    (x, _), _ = digits_classifier.split()
    real = jnp.asarray(2.0 * x - 1.0)

    def loss(model, key):
        key_batch, key_loss = jax.random.split(key)
        index = jax.random.randint(key_batch, (FLOW_CONFIG["batch"],), 0, real.shape[0])
        return diffusion.flow_matching_loss(key_loss, model, real[index])

    key = jax.random.key(FLOW_CONFIG["data_seed"])
    train.fit(train.make_train_step(loss), model,
              nnx.Optimizer(model, optax.adam(FLOW_CONFIG["lr"]), wrt=nnx.Param),
              lambda i: jax.random.fold_in(key, i), FLOW_CONFIG["steps"], log_every=500,
              desc="training the digits flow model (once, then cached)")  # fmt: skip


def digits_flow() -> diffusion.TimeMLP:
    """Chapter 05's unconditional flow-matching model of the digits (a TimeMLP, 3 layers of 256,
    5000 Adam steps) on the classifier's training split; trained on first use, then cached."""
    return model_cache.cached_model(
        "digits-flow", FLOW_CONFIG,
        lambda: diffusion.TimeMLP(64, FLOW_CONFIG["hidden"], FLOW_CONFIG["depth"],
                                  rngs=nnx.Rngs(FLOW_CONFIG["seed"])),
        _train_flow,
    )  # fmt: skip


def flow_samples(model: diffusion.TimeMLP, key, num_samples: int) -> jax.Array:
    """Images [num_samples, 64] in [0, 1]: Euler steps of the velocity from N(0, I) noise."""
    shape = (positive_int("num_samples", num_samples), 64)
    x = diffusion.sample_flow(key, model, shape, FLOW_CONFIG["sample_steps"])
    return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)


DIGIT_LEVELS = diffusion.DIGIT_LEVELS  # the digits' pixels take the integer levels 0..16


def digit_levels(x) -> np.ndarray:
    """The integer levels int32 [N, 64] (0..16) of digits x [N, 64] in [0, 1] (levels / 16)."""
    return np.rint(np.asarray(x, np.float64) * (DIGIT_LEVELS - 1)).astype(np.int32)


def levels_to_flow_scale(levels_plus_u):
    """Dequantised levels k + u (u in [0, 1)) [..., 64] on the flow's scale [-1, 1]: the cell of
    level k is centred on the training value 2 k / 16 - 1, width 1/8 (``FLOW_BIN_WIDTH``)."""
    return (jnp.asarray(levels_plus_u, jnp.float32) - 0.5) * FLOW_BIN_WIDTH - 1.0


FLOW_BIN_WIDTH = 2.0 / (DIGIT_LEVELS - 1)  # one level step on the flow's data scale 2 x - 1


def flow_dequantized_log_density(model, key, levels, num_copies: int = 2, num_steps: int = 10):
    """Log-densities [N, K] (nats) of the flow at K uniformly dequantised copies of each digit:
    levels int [N, 64] (0..16) plus ``jax.random.uniform(key, (K, N, 64))``, mapped by
    :func:`levels_to_flow_scale`, scored by :func:`flow_log_density`."""
    levels = jnp.asarray(levels, jnp.float32)
    k = positive_int("num_copies", num_copies)
    u = jax.random.uniform(key, (k,) + levels.shape)
    y = levels_to_flow_scale(levels[None] + u).reshape(-1, levels.shape[-1])  # (K N, 64)
    log_p = flow_log_density(model, y, num_steps)
    return log_p.reshape(k, -1).T  # (N, K)


# --- memorisation of text as training goes on ---------------------------------------------------

MEMO_CONFIG = {"train_chars": 2_000, "snapshots": [100, 250, 500], "batch": 16, "lr": 3e-3,
               "data_seed": 5}  # fmt: skip


class GPTSnapshots(nnx.Module):
    """Copies of one GPT's weights at several points of its training: ``models[k]`` is the model
    after ``MEMO_CONFIG["snapshots"][k]`` steps."""

    def __init__(self, config: gpt.GPTConfig, count: int, *, rngs: nnx.Rngs):
        self.models = nnx.List([gpt.GPT(config, rngs=rngs) for _ in range(count)])


def memorisation_split() -> tuple[np.ndarray, np.ndarray]:
    """(train ids, held-out ids), int32 [MEMO_CONFIG["train_chars"]] each: the first characters
    of chapter 04's training split and as many of its held-out split (the same size, so that a
    50-character window has the same chance to occur in either by accident)."""
    corpus, size = char_gpt.corpus(), MEMO_CONFIG["train_chars"]
    return corpus.train_ids[:size], corpus.val_ids[:size]


def _train_snapshots(snapshots: GPTSnapshots) -> None:
    train_ids, _ = memorisation_split()
    model = char_gpt.pretrained()  # a fresh copy: chapter 04's weights, loaded from the cache
    optimizer = nnx.Optimizer(model, optax.adam(MEMO_CONFIG["lr"]), wrt=nnx.Param)
    key, block = jax.random.key(MEMO_CONFIG["data_seed"]), char_gpt.CONFIG["block_size"]
    step, done = nnx.jit(gpt.train_step), 0
    for snapshot, steps in zip(snapshots.models, MEMO_CONFIG["snapshots"]):

        def windows(i, first=done):  # the batches go on where the previous segment stopped
            key_i = jax.random.fold_in(key, first + i)
            return data.batch_windows(key_i, train_ids, MEMO_CONFIG["batch"], block + 1)[0]

        train.fit(step, model, optimizer, windows, steps - done, log_every=50,
                  desc=f"GPT on {len(train_ids):,} characters, to step {steps}"
                       " (once; then cached)")  # fmt: skip
        nnx.update(snapshot, nnx.state(model, nnx.Param))
        done = steps


def memorisation_gpts() -> list[gpt.GPT]:
    """Chapter 04's pretrained GPT (:func:`genlab.char_gpt.pretrained`) trained on, with Adam at a
    constant rate, on the first 2,000 characters of its training split only (a small data set
    seen again and again, as in fine-tuning: each step predicts 16 x 64 = 1,024 characters, so
    500 steps are 256 passes); the models after 100, 250 and 500 more steps
    (``MEMO_CONFIG``). Trained on first use, then cached (the key includes char_gpt's code: new
    base weights, new snapshots)."""
    base = model_cache.code_digest(inspect.getsource(char_gpt))
    snapshots = model_cache.cached_model(
        "char-gpt-snapshots", {**MEMO_CONFIG, "base": base, "gpt": char_gpt.CONFIG,
                               "vocab": char_gpt.corpus().tokenizer.vocab},
        lambda: GPTSnapshots(char_gpt.config(), len(MEMO_CONFIG["snapshots"]), rngs=nnx.Rngs(0)),
        _train_snapshots,
    )  # fmt: skip
    return list(snapshots.models)
