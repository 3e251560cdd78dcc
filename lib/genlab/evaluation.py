"""Measuring generative models: likelihood in bits, feature statistics, Fréchet distance, kernel
distance (KID), k-NN precision and recall, nearest-neighbour (memorisation) distances (chapter 06).

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


def frechet_floor(features, n, key):
    """Fréchet distance between two disjoint random subsets of n rows of one feature set
    features [N, D]: what two samples of the same distribution score at sample size n (the
    bias every Fréchet distance at that n carries). The subsets are the rows at positions
    [0, n) and [n, 2n) of ``jax.random.permutation(key, N)``; needs 2 <= n and 2n <= N.

    Returns:
        float32 scalar >= 0.
    """
    x = float_array("features", features, min_ndim=2)
    n = positive_int("n", n)
    if x.ndim != 2 or n < 2 or 2 * n > x.shape[0]:
        raise ValueError(
            f"need features [N, D] and 2 <= n <= N / 2, got shape {x.shape} and n = {n}"
        )
    order = jax.random.permutation(key, x.shape[0])
    return feature_frechet(x[order[:n]], x[order[n : 2 * n]])


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
