"""Probes of chapter 01, GAN math (references in :mod:`genlab.gan`)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import check, data, gan, nn
from genlab.probing import Case, Probe, call, close, f32, judged_alone, key_from


def _distributions(rng: np.random.Generator, shape, zero_share: float) -> jax.Array:
    """Probability vectors on the last axis, about ``zero_share`` of the entries exactly 0."""
    p = rng.random(shape) * (rng.random(shape) >= zero_share)
    p[..., 0] += 1e-3  # no all-zero rows
    return f32(p / p.sum(axis=-1, keepdims=True))


# --- section 1: the game --------------------------------------------------------------------


def bce_with_logits_cases(rng: np.random.Generator) -> list[Case]:
    extreme = jnp.array([100.0, -100.0, 100.0, -100.0])
    cases = [
        Case("bce_with_logits(0, 1)", call(jnp.array(0.0), 1.0)),
        Case("bce_with_logits(0, 0)", call(jnp.array(0.0), 0.0)),
        Case("bce_with_logits(2, 1)", call(jnp.array(2.0), 1.0)),
        Case("bce_with_logits(2, 0)", call(jnp.array(2.0), 0.0)),
        Case("bce_with_logits([100, -100, 100, -100], [1, 0, 0, 1])",
             call(extreme, jnp.array([1.0, 0.0, 0.0, 1.0])), close(1e-5, 1e-5)),
        Case("bce_with_logits(logits (3, 1), labels (2,)) broadcasts to (3, 2)",
             call(jnp.array([[-1.0], [0.0], [1.0]]), jnp.array([0.0, 1.0]))),
    ]  # fmt: skip
    logits, labels = f32(rng.normal(scale=20.0, size=(5, 7))), f32(rng.random((5, 7)))
    cases.append(Case("bce_with_logits(random logits (5, 7), soft labels)", call(logits, labels),
                      close(1e-5, 1e-5, dtype="float")))  # fmt: skip
    logits = jnp.array([1e4, -1e4, 1e4, -1e4, 30.0, -30.0, 1e-3, 0.0])
    for label in (0.0, 1.0, float(np.round(rng.uniform(0.05, 0.95), 2))):
        labels = jnp.full(logits.shape, label)
        cases.append(Case(f"bce_with_logits(logits +-1e4, +-30, 1e-3, 0 with labels = {label})",
                          call(logits, labels), close(1e-5, 1e-5)))  # fmt: skip
    logits = f32(rng.normal(scale=3.0, size=(2, 3, 4)))
    cases.append(Case("bce_with_logits(logits (2, 3, 4), Python float label 1.0)",
                      call(logits, 1.0), close(1e-5, 1e-6)))  # fmt: skip
    return cases


def discriminator_loss_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("discriminator_loss(zeros (4, 1), zeros (6, 1)) = log 4",
             call(jnp.zeros((4, 1)), jnp.zeros((6, 1)))),
        Case("discriminator_loss([[2], [-1]], [[0.5]])",
             call(jnp.array([[2.0], [-1.0]]), jnp.array([[0.5]]))),
        Case("discriminator_loss(zeros (10,), [3.0]) (means over each batch separately)",
             call(jnp.zeros(10), jnp.array([3.0]))),
        Case("discriminator_loss(confident logits [200, 50], [-200, -80])",
             call(jnp.array([200.0, 50.0]), jnp.array([-200.0, -80.0]))),
    ]  # fmt: skip
    for shape_r, shape_f in [((8, 1), (5, 1)), ((6,), (3,)), ((4, 2), (4, 2))]:
        real = f32(rng.normal(scale=3.0, size=shape_r))
        fake = f32(rng.normal(scale=3.0, size=shape_f))
        cases.append(Case(f"discriminator_loss(real {shape_r}, fake {shape_f})", call(real, fake),
                          close(1e-5, 1e-6)))  # fmt: skip
    real, fake = jnp.array([-300.0, 2.0, 1e4]), jnp.array([300.0, -1e4, 0.0, 5.0])
    cases.append(Case("discriminator_loss(extreme logits, +-300 and +-1e4)", call(real, fake),
                      close(1e-5, 1e-6)))  # fmt: skip
    return cases


def _falls_when_fooled(non_saturating: bool):
    def run(function):
        return (function(jnp.array([2.0]), non_saturating),
                function(jnp.array([-2.0]), non_saturating))  # fmt: skip

    return run


def _compare_falls(got, want, label: str) -> None:
    if isinstance(got, tuple) and len(got) == 2 and all(np.size(g) == 1 for g in got):
        check.is_true(float(np.ravel(got[0])[0]) < float(np.ravel(got[1])[0]),
                      f"{label}: the loss must be smaller when D(G(z)) is larger "
                      "(the generator minimises it)")  # fmt: skip
    close()(got, want, label)


FLAGS = (True, False)


def _both_ways(fake, keyword: bool = True):
    def run(function):
        if keyword:
            return {f"non_saturating={ns}": function(fake, non_saturating=ns) for ns in FLAGS}
        return {f"non_saturating={ns}": function(fake, ns) for ns in FLAGS}

    return run


def generator_loss_cases(rng: np.random.Generator) -> list[Case]:
    zeros, logits = jnp.zeros((5, 1)), jnp.array([-3.0, 1.0])
    cases = [
        Case("generator_loss(zeros (5, 1)) (non-saturating by default: log 2)", call(zeros)),
        Case("generator_loss(zeros (5, 1), non_saturating=False) = -log 2",
             call(zeros, non_saturating=False)),
        Case("generator_loss([-3, 1]) (non-saturating: -mean log D)", call(logits)),
        Case("generator_loss([-3, 1], non_saturating=False) (mean log(1 - D))",
             call(logits, non_saturating=False)),
    ]  # fmt: skip
    for ns in (True, False):
        cases.append(Case(f"generator_loss(non_saturating={ns}) at fake logits 2 and -2",
                          _falls_when_fooled(ns), _compare_falls))  # fmt: skip
    cases.append(Case("generator_loss([1e4, -1e4]) both ways (finite)",
                      _both_ways(jnp.array([1e4, -1e4]))))  # fmt: skip
    for shape in [(7,), (6, 1), (2, 3)]:
        fake = f32(rng.normal(scale=4.0, size=shape))
        cases.append(Case(f"generator_loss(fake {shape}) both ways", _both_ways(fake),
                          close(1e-5, 1e-6)))  # fmt: skip
    fake = jnp.array([-500.0, 1e4, 3.0, -1e4])
    label = "generator_loss(extreme logits, +-1e4 and -500) both ways, flag passed positionally"
    cases.append(Case(label, _both_ways(fake, keyword=False), close(1e-5, 1e-6)))
    return cases


# --- section 3: where the generator's gradient points ----------------------------------------


FLOAT64_EXACT = close(1e-10, 1e-300, np.float64)  # float64 rounding, however small the entry


def generator_sample_grad_cases(rng: np.random.Generator) -> list[Case]:
    x = np.array([[1.0, 0.0], [0.0, -2.0], [0.5, 0.5]])
    w = np.array([2.0, -1.0])
    cases = [
        Case("generator_sample_grad(x (3, 2), w = (2, -1), b = 0) non-saturating",
             call(x, w, 0.0), FLOAT64_EXACT),
        Case("generator_sample_grad(x (3, 2), w = (2, -1), b = 0, non_saturating=False)",
             call(x, w, 0.0, non_saturating=False), FLOAT64_EXACT),
    ]  # fmt: skip
    for n, d, scale in [(7, 3, 1.0), (5, 1, 4.0), (4, 6, 0.5)]:
        x = rng.normal(scale=scale, size=(n, d))
        w, b = rng.normal(size=d), float(rng.normal())
        for ns in (True, False):
            label = f"generator_sample_grad(x ({n}, {d}), w ({d},), b, non_saturating={ns})"
            cases.append(Case(label, call(x, w, b, ns), FLOAT64_EXACT))
    w = rng.normal(size=3)
    u = w / np.dot(w, w)  # x = t u has logit t (b = 0)
    x = np.stack([u * 1e4, -u * 1e4, u * 30.0, -u * 30.0, u * 12.5, -u * 17.0, np.zeros(3)])
    for ns in (True, False):
        label = f"generator_sample_grad(logits +-1e4, +-30, 12.5, -17, 0, non_saturating={ns})"
        cases.append(Case(label, call(x, w, 0.0, non_saturating=ns), FLOAT64_EXACT))
    return cases


# --- section 2: the optimal discriminator and divergences ------------------------------------


def optimal_discriminator_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("optimal_discriminator(p_data (5,), p_g (5,)) with one-sided and all-zero points",
             call(jnp.array([0.2, 0.5, 0.0, 0.3, 0.0]), jnp.array([0.6, 0.5, 0.4, 0.0, 0.0]))),
        Case("optimal_discriminator(p_data (2, 1), p_g (3,)) with densities above 1",
             call(jnp.array([[4.0], [0.0]]), jnp.array([1.0, 4.0, 0.0]))),
    ]  # fmt: skip
    p_data = f32(rng.exponential(size=(6, 5)) * (rng.random((6, 5)) < 0.6))
    p_g = f32(rng.exponential(size=(6, 5)) * (rng.random((6, 5)) < 0.6))
    cases += [
        Case("optimal_discriminator(random densities (6, 5) with zeros)", call(p_data, p_g),
             close(1e-6, 1e-7)),
        Case("optimal_discriminator(zeros (3, 2), zeros (3, 2)) = 0.5",
             call(jnp.zeros((3, 2)), jnp.zeros((3, 2)))),
        Case("optimal_discriminator(tiny (1e-30) and large (3e5) densities)",
             call(jnp.array([1e-30, 50.0, 3.0]), jnp.array([1e-30, 1e-3, 3e5])), close(1e-5, 1e-7)),
    ]  # fmt: skip
    return cases


def kl_divergence_cases(rng: np.random.Generator) -> list[Case]:
    half = jnp.array([0.5, 0.5])
    cases = [
        Case("kl_divergence(p, p) = 0", call(half, half), close(1e-5, 1e-7)),
        Case("kl_divergence([1, 0], [0.5, 0.5]) (0 log 0 = 0)", call(jnp.array([1.0, 0.0]), half)),
        Case("kl_divergence([0.5, 0.5], [1, 0]) = +inf", call(half, jnp.array([1.0, 0.0]))),
        Case("kl_divergence(p (2, 3), q (3,)) over the last axis only",
             call(jnp.array([[0.2, 0.3, 0.5], [0.0, 0.5, 0.5]]), jnp.array([0.25, 0.25, 0.5]))),
    ]  # fmt: skip
    for shape_p, shape_q, zeros_p, zeros_q, what in [
        ((4, 6), (4, 6), 0.3, 0.0, "zeros in p"),
        ((2, 3, 5), (5,), 0.0, 0.0, "no zeros"),
        ((3, 4), (3, 4), 0.0, 0.4, "zeros in q (+inf)"),
    ]:
        p, q = _distributions(rng, shape_p, zeros_p), _distributions(rng, shape_q, zeros_q)
        cases.append(Case(f"kl_divergence(p {shape_p}, q {shape_q}) with {what}", call(p, q),
                          close(1e-5, 1e-6)))  # fmt: skip
    return cases


def js_divergence_cases(rng: np.random.Generator) -> list[Case]:
    p = jnp.array([0.5, 0.5, 0.0, 0.0])
    q = jnp.array([0.0, 0.0, 0.25, 0.75])
    one, half = jnp.array([1.0, 0.0]), jnp.array([0.5, 0.5])
    cases = [
        Case("js_divergence(p, p) = 0", call(p, p), close(1e-5, 1e-7)),
        Case("js_divergence(disjoint p, q) = log 2 (natural log)", call(p, q)),
        Case("js_divergence([1, 0], [0.5, 0.5])", call(one, half)),
        Case("js_divergence([0.5, 0.5], [1, 0]) (symmetric)", call(half, one)),
        Case("js_divergence(p (3, 4), q (4,))", call(jnp.tile(p, (3, 1)), q)),
    ]
    for shape_p, shape_q in [((5, 6), (5, 6)), ((2, 3, 4), (4,)), ((7,), (3, 7))]:
        p, q = _distributions(rng, shape_p, 0.3), _distributions(rng, shape_q, 0.3)
        cases.append(Case(f"js_divergence(p {shape_p}, q {shape_q}) with zeros", call(p, q),
                          close(1e-5, 1e-6)))  # fmt: skip
    return cases


def gan_value_cases(rng: np.random.Generator) -> list[Case]:
    half, one, other = jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    cases = [
        Case("gan_value(p, p, d = 1/2) = -log 4", call(half, half, half)),
        Case("gan_value([0.9, 0.1], [0.2, 0.8], d = 1/2) = -log 4",
             call(jnp.array([0.9, 0.1]), jnp.array([0.2, 0.8]), half)),
        Case("gan_value(disjoint supports, perfect d) (0 log 0 = 0)", call(one, other, one)),
        Case("gan_value([1, 0], [0.5, 0.5], d = [0, 0.5]) = -inf",
             call(one, half, jnp.array([0.0, 0.5]))),
        Case("gan_value(p_data (2, 2), p_g (2,), d (2,))",
             call(jnp.array([[0.25, 0.75], [1.0, 0.0]]), half, jnp.array([0.5, 0.8]))),
    ]  # fmt: skip
    p_data, p_g = _distributions(rng, (4, 6), 0.3), _distributions(rng, (4, 6), 0.3)
    d = f32(rng.uniform(0.02, 0.98, size=(4, 6)))
    d_star = gan.optimal_discriminator(p_data, p_g)  # 0 or 1 exactly where one side is 0
    cases += [
        Case("gan_value(random p_data, p_g, d (4, 6))", call(p_data, p_g, d), close(1e-5, 1e-6)),
        Case("gan_value(p_data, p_g, D*) with zeros in p_data and p_g (d is 0 or 1 there)",
             call(p_data, p_g, d_star), close(1e-5, 1e-6)),
    ]  # fmt: skip
    p_data, p_g = _distributions(rng, (2, 3, 5), 0.0), _distributions(rng, (5,), 0.0)
    d = f32(rng.uniform(0.1, 0.9, size=(5,)))
    cases.append(Case("gan_value(p_data (2, 3, 5), p_g (5,), d (5,))", call(p_data, p_g, d),
                      close(1e-5, 1e-6)))  # fmt: skip
    return cases


# --- section 4: mode coverage ----------------------------------------------------------------


def _compare_coverage(atol: float = 1e-6):
    def compare(got, want, label: str) -> None:
        if not isinstance(got, tuple) or len(got) != 2:
            check.is_true(False, f"{label}: expected a tuple (covered, high_quality), got "
                                 f"{type(got).__name__}")  # fmt: skip
        check.shape(f"{label}: covered", got[0], ())
        check.dtype(f"{label}: covered", got[0], "int")
        check.equal(f"{label}: covered", np.asarray(got[0]).astype(np.int64),
                    np.asarray(want[0]).astype(np.int64))  # fmt: skip
        check.shape(f"{label}: high_quality", got[1], ())
        check.allclose(f"{label}: high_quality", got[1], want[1], atol=atol)

    return compare


def _ring_samples(rng: np.random.Generator, centers: np.ndarray, std: float) -> jax.Array:
    modes = rng.choice([0, 1, 3, 4, 6], size=160, p=[0.4, 0.3, 0.2, 0.06, 0.04])
    samples = centers[modes] + 1.2 * std * rng.normal(size=(160, 2))
    samples[:30] = rng.uniform(-2.5, 2.5, size=(30, 2))  # strays
    return f32(samples)


def _around_the_radius(rng: np.random.Generator, centers: np.ndarray, radius: float) -> jax.Array:
    """Samples at chosen multiples of the exact radius from chosen centers (none near a tie).

    Mode 1 gets 3 samples just inside (0.995 r) and mode 2 three just outside (1.005 r): the
    count decides coverage at min_count 3. Modes 0 and 5 get samples well inside and outside.
    """
    plan = [(1, 0.995)] * 3 + [(2, 1.005)] * 3 + [(0, 0.5), (0, 0.9), (0, 1.3), (5, 0.97),
                                                    (5, 0.2), (5, 0.6), (5, 2.0)]  # fmt: skip
    angles = rng.uniform(0.0, 2.0 * np.pi, size=len(plan))
    rows = [centers[m] + f * radius * np.array([np.cos(t), np.sin(t)])
            for (m, f), t in zip(plan, angles)]  # fmt: skip
    return f32(np.stack(rows))


def mode_coverage_cases(rng: np.random.Generator) -> list[Case]:
    centers = data.ring_centers(8, 2.0)  # (8, 2)
    offsets = jnp.array([[0.1, 0.0], [0.0, -0.1], [0.05, 0.05]])
    samples = jnp.concatenate([jnp.tile(centers[0], (5, 1)), centers[3] + offsets,
                               jnp.zeros((1, 2))])  # fmt: skip
    compare = _compare_coverage()
    cases = [Case(f"mode_coverage(9 samples near modes 0 and 3, std=0.05, quality=0.99, "
                  f"min_count={min_count})",
                  call(samples, centers, 0.05, 0.99, min_count=min_count), compare)
             for min_count in (1, 4, 6)]  # fmt: skip
    ring = np.asarray(centers)
    for std in (0.05, 0.2):
        for quality in (0.5, 0.9, 0.999, float(np.round(rng.uniform(0.6, 0.8), 3))):
            near = _around_the_radius(rng, ring, gan.quality_radius(std, quality))
            cases.append(Case(f"mode_coverage(samples near the radius of std={std}, "
                              f"quality={quality}, min_count=3)",
                              call(near, centers, std, quality, min_count=3), compare))  # fmt: skip
    for std, quality, min_count in [(0.05, 0.95, 1), (0.1, 0.8, 5), (0.02, 0.99, 10)]:
        cases.append(Case(f"mode_coverage(160 ring samples with strays, std={std}, "
                          f"quality={quality}, min_count={min_count})",
                          call(_ring_samples(rng, ring, std), centers, std, quality,
                               min_count=min_count), compare))  # fmt: skip
    # Exact ties (a point with x = 0 is as far from (-1, 0) as from (1, 0)) go to the lower index:
    # mode 0 is then covered too (the radius, 1.29, holds every bisector point, at most 1.12 away).
    pair = jnp.array([[-1.0, 0.0], [1.0, 0.0]])
    on_bisector = f32(np.c_[np.zeros(3), rng.uniform(-0.5, 0.5, size=3)])
    near_one = jnp.array([[1.0, 0.1], [1.0, -0.1], [1.1, 0.0]])
    cases.append(Case("mode_coverage: samples equidistant from two centers (ties go to the lower "
                      "index, as jnp.argmin), std=0.6, quality=0.9, min_count=3",
                      call(jnp.concatenate([on_bisector, near_one]), pair, 0.6, 0.9, min_count=3),
                      compare))  # fmt: skip
    return cases


# --- section 6: the 1-D Wasserstein distance -------------------------------------------------


def wasserstein_1d_cases(rng: np.random.Generator) -> list[Case]:
    x = jnp.array([[0.0, 0.0, 1.0, 1.0], [4.0, -1.0, 2.0, 0.0]])
    y = jnp.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    cases = [
        Case("wasserstein_1d([0, 1, 2], [1, 2, 3]) = 1 (a shift by 1)",
             call(jnp.array([0.0, 1.0, 2.0]), jnp.array([1.0, 2.0, 3.0]))),
        Case("wasserstein_1d([3, 0, 1], [2, 1, 0]) (unsorted samples)",
             call(jnp.array([3.0, 0.0, 1.0]), jnp.array([2.0, 1.0, 0.0]))),
        Case("wasserstein_1d(x (2, 4), y (2, 4)), one distance per row", call(x, y)),
    ]  # fmt: skip
    for shape_x, shape_y in [((50,), (50,)), ((3, 20), (3, 20)), ((2, 3, 9), (9,))]:
        x = f32(rng.standard_t(2.0, size=shape_x))
        y = f32(rng.normal(1.0, 2.0, size=shape_y))
        cases.append(Case(f"wasserstein_1d(heavy-tailed x {shape_x}, y {shape_y})", call(x, y),
                          close(1e-5, 1e-5)))  # fmt: skip
    return cases


# --- section 6: WGAN-GP -------------------------------------------------------------------------


def _linear_critic(w):
    return lambda x: x @ w


def _squared_norm_critic(x):
    return jnp.sum(x**2, axis=1)


def _tanh_critic(w1, w2, column: bool = False):
    def critic(x):  # (B, ...) -> (B,), or (B, 1) with column
        scores = jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2
        return scores[:, None] if column else scores

    return critic


def _with_critic(make_critic, real, fake, seed: int, **kwargs):
    return lambda function: function(make_critic(), real, fake, jax.random.key(seed), **kwargs)


def _tanh_weights(rng: np.random.Generator):
    return f32(rng.normal(size=(6, 8))), f32(rng.normal(size=(8,)))


_REAL = jnp.array([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]])
_FAKE = jnp.array([[0.0, 0.0], [2.0, 2.0], [-1.0, 1.0]])


def gradient_penalty_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("gradient_penalty(linear critic with |w| = 5) = 16",
             _with_critic(lambda: _linear_critic(jnp.array([3.0, 4.0])), _REAL, _FAKE, 0)),
        Case("gradient_penalty(linear critic with |w| = 1) = 0",
             _with_critic(lambda: _linear_critic(jnp.array([0.6, 0.8])), _REAL, _FAKE, 0)),
        Case("gradient_penalty(critic |x|^2) with the pinned interpolation",
             _with_critic(lambda: _squared_norm_critic, _REAL, _FAKE, 0)),
    ]  # fmt: skip
    w1, w2 = _tanh_weights(rng)
    for shape in [(5, 6), (4, 2, 3), (1, 6)]:
        real, fake = f32(rng.normal(size=shape)), f32(rng.normal(2.0, 1.0, size=shape))
        seed = int(rng.integers(1 << 30))
        cases.append(Case(f"gradient_penalty(tanh critic, real {shape})",
                          _with_critic(lambda: _tanh_critic(w1, w2), real, fake, seed),
                          close(1e-4, 1e-6)))  # fmt: skip
    real, fake = f32(rng.normal(size=(4, 6))), f32(rng.normal(size=(4, 6)))
    seed = int(rng.integers(1 << 30))
    cases.append(Case("gradient_penalty(tanh critic with [B, 1] output, real (4, 6))",
                      _with_critic(lambda: _tanh_critic(w1, w2, column=True), real, fake, seed),
                      close(1e-4, 1e-6)))  # fmt: skip
    return cases


def wgan_critic_loss_cases(rng: np.random.Generator) -> list[Case]:
    unit, five = jnp.array([0.6, 0.8]), jnp.array([3.0, 4.0])
    cases = [
        Case("wgan_critic_loss(linear critic with |w| = 1) (no penalty)",
             _with_critic(lambda: _linear_critic(unit), _REAL, _FAKE, 0)),
        Case("wgan_critic_loss(linear critic with |w| = 5, default gp_weight=10)",
             _with_critic(lambda: _linear_critic(five), _REAL, _FAKE, 0)),
        Case("wgan_critic_loss(linear critic with |w| = 5, gp_weight=0.5)",
             _with_critic(lambda: _linear_critic(five), _REAL, _FAKE, 0, gp_weight=0.5)),
    ]  # fmt: skip
    w1, w2 = _tanh_weights(rng)
    for shape, weight, column in [((5, 6), 10.0, False), ((4, 2, 3), 2.5, False),
                                  ((7, 6), 0.0, True), ((3, 6), 1.0, True)]:  # fmt: skip
        real, fake = f32(rng.normal(size=shape)), f32(rng.normal(1.5, 2.0, size=shape))
        seed = int(rng.integers(1 << 30))
        output = "[B, 1]" if column else "[B]"
        cases.append(Case(f"wgan_critic_loss(tanh critic with {output} output, real {shape}, "
                          f"gp_weight={weight})",
                          _with_critic(lambda c=column: _tanh_critic(w1, w2, column=c), real,
                                       fake, seed, gp_weight=weight),
                          close(1e-4, 1e-5)))  # fmt: skip
    return cases


# --- section 4: the alternating step, written by the student ------------------------------------


def _params(module) -> tuple:
    """Copies of the module's parameter arrays (NumPy, so later updates cannot reach them)."""
    return tuple(np.array(leaf) for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _sgd_step_run(seed: int, real, z, lr: float):
    """One call of the step on small MLPs with plain SGD: losses and parameters before/after."""

    def run(gan_step):
        rngs = nnx.Rngs(seed)
        generator = nn.MLP((z.shape[1], 16, real.shape[1]), rngs=rngs)
        discriminator = nn.MLP((real.shape[1], 16, 1), activation=jnp.tanh, rngs=rngs)
        opt_g = nnx.Optimizer(generator, optax.sgd(lr), wrt=nnx.Param)
        opt_d = nnx.Optimizer(discriminator, optax.sgd(lr), wrt=nnx.Param)
        g_before, d_before = _params(generator), _params(discriminator)
        # compiled, as callers do
        losses = nnx.jit(gan_step)(generator, discriminator, opt_g, opt_d, real, z)
        if not isinstance(losses, (tuple, list)) or len(losses) != 2:
            raise TypeError(
                f"gan_step must return a tuple (d_loss, g_loss), got {type(losses).__name__}"
            )
        return {
            "d_loss": losses[0],
            "g_loss": losses[1],
            "generator before": g_before,
            "generator after": _params(generator),
            "discriminator before": d_before,
            "discriminator after": _params(discriminator),
        }

    return run


def _moved(before, after) -> bool:
    return any(not np.array_equal(b, a) for b, a in zip(before, after))


def _matches(got, want, rtol=2e-4, atol=2e-6) -> bool:
    return all(np.allclose(g, w, rtol=rtol, atol=atol) for g, w in zip(got, want))


def _close_loss(got, want, label: str, name: str, meaning: str) -> None:
    check.allclose(f"{label}: {name} ({meaning})", got[name], want[name], rtol=1e-4, atol=1e-6)


def _compare_sgd_step(got, want, label: str) -> None:
    if not isinstance(got, dict) or set(got) != set(want):
        check.is_true(False, f"{label}: gan_step must return (d_loss, g_loss) and update in place")
    for name in ("d_loss", "g_loss"):
        check.shape(f"{label}: {name}", got[name], ())
    _close_loss(got, want, label, "d_loss", "discriminator_loss before the discriminator's update")
    d_before, d_after = got["discriminator before"], got["discriminator after"]
    check.is_true(
        _moved(d_before, d_after),
        f"{label}: the discriminator's parameters did not change (no opt_d.update?)",
    )
    check.is_true(
        _matches(d_after, want["discriminator after"]),
        f"{label}: the discriminator did not move by one step on discriminator_loss with "
        "the fakes held constant (did a generator loss reach the discriminator's "
        "parameters, or were the labels or the losses changed?)",
    )
    g_before, g_after = got["generator before"], got["generator after"]
    check.is_true(
        _moved(g_before, g_after),
        f"{label}: the generator's parameters did not change: its gradient was 0 "
        "(were its fakes computed outside the differentiated function?)",
    )
    _close_loss(got, want, label, "g_loss",
                "non-saturating generator_loss through the updated discriminator")  # fmt: skip
    check.is_true(
        _matches(g_after, want["generator after"]),
        f"{label}: the generator did not move by one step of the non-saturating "
        "generator_loss through the updated discriminator (old discriminator, another "
        "loss, or a discriminator loss added to it?)",
    )


RING_STD, RING_STEPS, RING_LR, RING_BATCH = 0.1, 500, 4e-3, 256
RING_CHECKPOINTS = (400, 450, 500)
RING_MIN_MODES, RING_MIN_COUNT, RING_SHOWN = 6, 10, 2000
RING_QUALITY = 1.0 - np.exp(-4.5)  # good samples within 3 RING_STD of their mode


def ring_training_samples(gan_step, seed: int, checkpoints=RING_CHECKPOINTS) -> dict:
    """Train a small ring GAN with ``gan_step``; generator samples at each checkpoint (a step
    count; the last one is the length of the run).

    The ring has 8 modes of std ``RING_STD`` on a circle of radius 2; Adam(``RING_LR``,
    b1 = 0.5) for both players, batch ``RING_BATCH``, latent dimension 2.
    """
    rngs = nnx.Rngs(seed)
    generator = nn.MLP((2, 128, 128, 2), rngs=rngs)
    discriminator = nn.MLP((2, 128, 128, 1), rngs=rngs)
    opt_g = nnx.Optimizer(generator, optax.adam(RING_LR, b1=0.5), wrt=nnx.Param)
    opt_d = nnx.Optimizer(discriminator, optax.adam(RING_LR, b1=0.5), wrt=nnx.Param)
    graphdef, state = nnx.split((generator, discriminator, opt_g, opt_d))
    key = jax.random.key(seed)

    def batch(i):
        k_real, k_z = jax.random.split(jax.random.fold_in(key, i))
        real = data.gaussian_ring(k_real, RING_BATCH, std=RING_STD)  # (B, 2)
        return real, jax.random.normal(k_z, (RING_BATCH, 2))  # (B, 2), (B, Z)

    @functools.partial(jax.jit, static_argnums=2)
    def run(state, start, num):  # num steps in one compiled loop (no Python per step)
        def body(i, state):
            players = nnx.merge(graphdef, state)
            gan_step(*players, *batch(start + i))
            return nnx.state(players)

        return jax.lax.fori_loop(0, num, body, state)

    z_show = jax.random.normal(jax.random.fold_in(key, 1 << 20), (RING_SHOWN, 2))  # (N, Z)
    samples, done = {}, 0
    for checkpoint in sorted(checkpoints):
        state = run(state, done, checkpoint - done)
        done = checkpoint
        samples[f"step {checkpoint}"] = nnx.merge(graphdef, state)[0](z_show)  # (N, 2)
    return samples


def ring_modes(samples: dict) -> dict:
    """Modes covered by each checkpoint's samples (computed on the trusted side)."""
    centers = data.ring_centers(8, 2.0)
    return {name: int(gan.mode_coverage(jnp.asarray(s, jnp.float32), centers, RING_STD,
                                        RING_QUALITY, min_count=RING_MIN_COUNT)[0])
            for name, s in samples.items()}  # fmt: skip


@judged_alone
def _compare_ring(got, want, label: str) -> None:
    names = [f"step {n}" for n in RING_CHECKPOINTS]
    check.is_true(isinstance(got, dict) and set(got) == set(names),
                  f"{label}: expected samples at {names}")  # fmt: skip
    for name in names:
        check.shape(f"{label}: samples at {name}", got[name], (RING_SHOWN, 2))
        check.finite(f"{label}: samples at {name}", got[name])
    modes = ring_modes(got)
    best = max(modes.values())
    check.is_true(best >= RING_MIN_MODES,
                  f"{label}: the generator covers at most {best} of 8 modes "
                  f"({', '.join(f'{k}: {v}' for k, v in modes.items())}); a correct step covers "
                  f"at least {RING_MIN_MODES} after {RING_STEPS} steps")  # fmt: skip


def gan_step_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for n_real, n_fake, dim, latent, lr in [(32, 32, 2, 2, 0.1), (24, 40, 3, 4, 0.05)]:
        seed = int(rng.integers(1 << 16))
        real = f32(rng.normal(1.0, 0.5, size=(n_real, dim)))
        z = f32(rng.normal(size=(n_fake, latent)))
        cases.append(Case(f"gan_step: one call with SGD({lr}), real ({n_real}, {dim}), "
                          f"z ({n_fake}, {latent}): losses and parameters after the call",
                          _sgd_step_run(seed, real, z, lr), _compare_sgd_step))  # fmt: skip
    seed = int(rng.integers(1 << 16))
    cases.append(
        Case(
            f"gan_step: {RING_STEPS} steps on the 8-Gaussian ring (Adam {RING_LR}, "
            f"modes covered by {RING_SHOWN} samples, min_count {RING_MIN_COUNT})",
            lambda gan_step: ring_training_samples(gan_step, seed),
            _compare_ring,
        )
    )
    return cases


# --- section 5: diagnostics -----------------------------------------------------------------


def _toy_players(seed: int, latent: int, width: int):
    rngs = nnx.Rngs(seed)
    return (nn.MLP((latent, width, 2), rngs=rngs),
            nn.MLP((2, width, 1), activation=jnp.tanh, rngs=rngs))  # fmt: skip


def g_objectives():
    """Candidate generator objectives ``(generator, discriminator, z) -> []`` by name."""
    ns, d_loss = gan.generator_loss, gan.discriminator_loss

    def right(g, d, z):
        return ns(d(g(z)))

    def outside_the_tape(g, d, z):
        return ns(d(jax.lax.stop_gradient(g(z))))

    def toward_fake_label(g, d, z):
        return jnp.mean(jax.nn.softplus(d(g(z))))

    def joint_saturating(g, d, z):
        fake = d(g(z))
        real = jnp.ones((z.shape[0], 2))  # (B, 2): any data; the discriminator's real term
        return gan.generator_loss(fake, non_saturating=False) + d_loss(d(real), fake)

    def squared(g, d, z):
        return jnp.mean(g(z) ** 2) + 0.0 * jnp.sum(d(g(z)))

    return {
        "non-saturating through G": right,
        "fakes outside the tape": outside_the_tape,
        "toward the fake label": toward_fake_label,
        "saturating + discriminator loss": joint_saturating,
        "mean squared output": squared,
    }


def _grad_norm_run(name: str, seed: int, latent: int, width: int, z):
    def run(generator_grad_norm):
        generator, discriminator = _toy_players(seed, latent, width)
        before = _params(generator)
        norm = generator_grad_norm(g_objectives()[name], generator, discriminator, z)
        check.is_true(not _moved(before, _params(generator)),
                      "generator_grad_norm must not change the generator")  # fmt: skip
        return norm

    return run


def generator_grad_norm_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for i, name in enumerate(g_objectives()):
        seed, latent, width = int(rng.integers(1 << 16)), [2, 3, 2, 4, 2][i], [8, 16, 12, 8, 6][i]
        z = f32(rng.normal(size=(int(rng.integers(5, 40)), latent)))
        atol = 1e-6 if name in ("fakes outside the tape",) else 1e-5
        cases.append(
            Case(
                f"generator_grad_norm({name}, MLP generator {latent} -> {width} -> 2)",
                _grad_norm_run(name, seed, latent, width, z),
                close(1e-4, atol),
            )
        )
    return cases


def logit_losses():
    """Candidate losses of the fake logits ``[...] -> []`` by name (the pitfalls of section 5)."""
    real = jnp.linspace(-2.0, 3.0, 7)
    ns = lambda logits: jnp.mean(jax.nn.softplus(-logits))  # noqa: E731
    return {
        "non-saturating": ns,
        "saturating": lambda logits: -jnp.mean(jax.nn.softplus(logits)),
        "toward the fake label": lambda logits: jnp.mean(jax.nn.softplus(logits)),
        "double sigmoid": lambda logits: ns(jax.nn.sigmoid(logits)),
        "L1 'Wasserstein' on D": lambda logits: jnp.mean(jax.nn.sigmoid(logits)),
        "fake term on the real logits": lambda logits: (
            gan.discriminator_loss(real, real) + 0.0 * logits.sum()
        ),
        "generator + discriminator loss": lambda logits: (
            ns(logits) + gan.discriminator_loss(real, logits)
        ),
        "a cubic": lambda logits: jnp.mean(logits**3) / 3.0,
        "a sum, not a mean": lambda logits: jnp.sum(jnp.tanh(logits)),
    }


def _logit_run(name: str, logits):
    return lambda logit_gradient: logit_gradient(logit_losses()[name], logits)


def logit_gradient_cases(rng: np.random.Generator) -> list[Case]:
    cases = [Case("logit_gradient(non-saturating loss, logits [-7, 0, 7])",
                  _logit_run("non-saturating", jnp.array([-7.0, 0.0, 7.0])))]  # fmt: skip
    shapes = [(6,), (5, 1), (2, 3), (8,), (3, 1), (4,), (7,), (2, 2), (9,)]
    for shape, name in zip(shapes, logit_losses()):
        logits = f32(rng.normal(scale=3.0, size=shape))
        cases.append(Case(f"logit_gradient({name}, logits {shape})", _logit_run(name, logits),
                          close(1e-4, 1e-6)))  # fmt: skip
    return cases


def _band(s, start: float, width: float):
    """0 below start, rising with slope 1 on [start, start + width], constant above."""
    return jax.nn.relu(s - start) - jax.nn.relu(s - start - width)


def probe_losses(rng: np.random.Generator) -> dict:
    """Candidate generator losses of the fake logits and a fraction for each (name: (loss, f)).

    None of them is shown in the chapter. Their weak intervals, and the gaps between them, are
    at least 0.15 wide, and every push crosses its threshold cleanly.
    """
    a = float(np.round(rng.uniform(2.2, 3.0), 2))
    t = float(np.round(rng.uniform(2.0, 4.0), 2))
    wrong_at, push_at = (float(np.round(rng.uniform(-5.5, 5.5), 2)) for _ in range(2))
    f_exp, f_grow = (float(np.round(rng.uniform(0.002, 0.2), 3)) for _ in range(2))
    return {
        "the hinge generator loss -mean(s)": (lambda s: -jnp.mean(s), 0.01),
        "its sign flipped, mean(s)": (lambda s: jnp.mean(s), 0.01),
        "least squares on D towards 1": (lambda s: jnp.mean((jax.nn.sigmoid(s) - 1.0) ** 2), 0.01),
        "least squares on D towards 0": (lambda s: jnp.mean(jax.nn.sigmoid(s) ** 2), 0.01),
        "a constant": (lambda s: 0.0 * jnp.sum(s) + 3.0, 0.2),
        "non-saturating on stopped logits": (
            lambda s: jnp.mean(jax.nn.softplus(-jax.lax.stop_gradient(s))),
            0.01,
        ),
        f"{a} x non-saturating minus saturating": (
            lambda s: jnp.mean(a * jax.nn.softplus(-s) - jax.nn.softplus(s)),
            0.6,
        ),
        "saturating on doubled logits": (lambda s: -jnp.mean(jax.nn.softplus(2.0 * s)), 0.05),
        f"non-saturating plus a penalty above logit {t}": (
            lambda s: jnp.mean(jax.nn.softplus(-s) + 0.3 * jax.nn.relu(s - t)),
            0.01,
        ),
        "exp(-s), an unbounded push": (lambda s: jnp.mean(jnp.exp(-s)), f_exp),
        "-exp(s / 2), a push that grows with D": (lambda s: -jnp.mean(jnp.exp(0.5 * s)), f_grow),
        "1e-5 times the non-saturating loss": (lambda s: 1e-5 * jnp.mean(jax.nn.softplus(-s)), 0.3),
        "1e-5 times the loss toward the fake label": (
            lambda s: 1e-5 * jnp.mean(jax.nn.softplus(s)),
            0.01,
        ),
        f"the hinge loss pushed the wrong way on [{wrong_at}, {wrong_at + 0.15:.2f}]": (
            lambda s: jnp.mean(-s + 3.0 * _band(s, wrong_at, 0.15)),
            0.5,
        ),
        f"a push only on [{push_at}, {push_at + 0.15:.2f}]": (
            lambda s: -jnp.mean(_band(s, push_at, 0.15)),
            0.01,
        ),
        "-s - 0.8 sin(1.3 s), a push that rises and falls": (
            lambda s: jnp.mean(-s - 0.8 * jnp.sin(1.3 * s)),
            0.15,
        ),
    }


def _compare_intervals(got, want, label: str) -> None:
    try:
        got = np.asarray(got, np.float64)
    except (TypeError, ValueError):
        check.is_true(False, f"{label}: expected a float array [K, 2] of (start, end) rows")
    if got.size == 0:
        got = got.reshape(0, 2)
    check.is_true(got.ndim == 2 and got.shape[1] == 2,
                  f"{label}: expected a float array [K, 2] of (start, end) rows, got shape "
                  f"{got.shape}")  # fmt: skip
    want = np.asarray(want, np.float64).reshape(-1, 2)
    check.is_true(len(got) == len(want),
                  f"{label}: expected {len(want)} weak interval(s), got {len(got)}")  # fmt: skip
    check.allclose(f"{label}: interval endpoints", got, want, atol=gan.ENDPOINT_TOLERANCE, rtol=0.0)


def diagnose_generator_loss_cases(rng: np.random.Generator) -> list[Case]:
    shown = {
        "non-saturating (shown)": (lambda s: jnp.mean(jax.nn.softplus(-s)), 0.01),
        "saturating (shown)": (lambda s: -jnp.mean(jax.nn.softplus(s)), 0.01),
        "non-saturating": (lambda s: jnp.mean(jax.nn.softplus(-s)), 0.5),
    }
    losses = {**shown, **probe_losses(rng)}
    return [Case(f"diagnose_generator_loss({name}, fraction {f})", call(loss, f),
                 _compare_intervals) for name, (loss, f) in losses.items()]  # fmt: skip


# --- section 6: the sliced Wasserstein distance (challenge) --------------------------------------


def sliced_wasserstein_cases(rng: np.random.Generator) -> list[Case]:
    square = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cases = [
        Case("sliced_wasserstein(key 0, x, x, 16) = 0 (identical samples)",
             call(jax.random.key(0), square, square, 16), close(1e-5, 1e-6)),
        Case("sliced_wasserstein(key 0, square, square shifted by (3, 4), 1)",
             call(jax.random.key(0), square, square + jnp.array([3.0, 4.0]), 1), close(1e-5, 1e-5)),
        Case("sliced_wasserstein(key 1, 1-D samples, 3) = the 1-D distance",
             call(jax.random.key(1), jnp.array([[0.0], [2.0], [5.0]]),
                  jnp.array([[1.0], [1.0], [1.0]]), 3), close(1e-5, 1e-5)),
    ]  # fmt: skip
    for n, d, p in [(50, 2, 8), (30, 5, 32), (7, 3, 1)]:
        x, y = f32(rng.normal(size=(n, d))), f32(rng.standard_t(3.0, size=(n, d)) + 1.0)
        cases.append(Case(f"sliced_wasserstein(key, x ({n}, {d}), y ({n}, {d}), {p})",
                          call(key_from(rng), x, y, p), close(1e-4, 1e-5)))  # fmt: skip
    return cases


def sliced_shift_factor_cases(rng: np.random.Generator) -> list[Case]:
    dims = [
        1,
        2,
        3,
        int(rng.integers(4, 12)),
        int(rng.integers(12, 80)),
        int(rng.integers(200, 1001)),
    ]
    return [Case(f"sliced_shift_factor({d})", call(d), close(1e-3, 0.0)) for d in dims]


PROBES = [
    Probe("bce_with_logits", gan.bce_with_logits, bce_with_logits_cases),
    Probe("discriminator_loss", gan.discriminator_loss, discriminator_loss_cases),
    Probe("generator_loss", gan.generator_loss, generator_loss_cases),
    Probe("optimal_discriminator", gan.optimal_discriminator, optimal_discriminator_cases),
    Probe("kl_divergence", gan.kl_divergence, kl_divergence_cases),
    Probe("js_divergence", gan.js_divergence, js_divergence_cases),
    Probe("gan_value", gan.gan_value, gan_value_cases),
    Probe("generator_sample_grad", gan.generator_sample_grad, generator_sample_grad_cases),
    Probe("mode_coverage", gan.mode_coverage, mode_coverage_cases),
    Probe("gan_step", gan.gan_step, gan_step_cases, uses=("discriminator_loss", "generator_loss")),
    Probe("generator_grad_norm", gan.generator_grad_norm, generator_grad_norm_cases),
    Probe("logit_gradient", gan.logit_gradient, logit_gradient_cases),
    Probe("diagnose_generator_loss", gan.diagnose_generator_loss, diagnose_generator_loss_cases,
          uses=("logit_gradient",)),
    Probe("wasserstein_1d", gan.wasserstein_1d, wasserstein_1d_cases),
    Probe("gradient_penalty", gan.gradient_penalty, gradient_penalty_cases),
    Probe("wgan_critic_loss", gan.wgan_critic_loss, wgan_critic_loss_cases,
          uses=("gradient_penalty",)),
    Probe("sliced_wasserstein", gan.sliced_wasserstein, sliced_wasserstein_cases,
          uses=("wasserstein_1d",)),
    Probe("sliced_shift_factor", gan.sliced_shift_factor, sliced_shift_factor_cases),
]  # fmt: skip
