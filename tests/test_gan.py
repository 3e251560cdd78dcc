"""The references of chapter 01 (genlab.gan) against independent checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.spatial.distance
import scipy.special
import scipy.stats
from flax import nnx

from genlab import data, gan, nn


def _probabilities(rng, shape, zeros=0):
    p = rng.random(shape)
    if zeros:
        p[..., :zeros] = 0.0
        rng.permuted(p, axis=-1, out=p)
    return (p / p.sum(axis=-1, keepdims=True)).astype(np.float32)


# --- bce_with_logits ------------------------------------------------------------------------


def test_bce_with_logits_matches_optax():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=10.0, size=(4, 7)).astype(np.float32)
    labels = rng.random((4, 7)).astype(np.float32)
    got = gan.bce_with_logits(logits, labels)
    want = optax.sigmoid_binary_cross_entropy(logits, labels)
    assert got.shape == (4, 7) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bce_with_logits_gradient_is_sigmoid_minus_label_even_at_zero():
    logits = jnp.array([-3.0, 0.0, 0.0, 2.0])
    labels = jnp.array([1.0, 0.0, 1.0, 0.3])
    got = jax.grad(lambda x: jnp.sum(gan.bce_with_logits(x, labels)))(logits)
    np.testing.assert_allclose(got, jax.nn.sigmoid(logits) - labels, atol=1e-6)


def test_bce_with_logits_matches_probability_form_in_float64():
    x = np.linspace(-30.0, 30.0, 61)
    for y in (0.0, 1.0, 0.3):
        s = scipy.special.expit(x)
        want = -(y * np.log(s) + (1 - y) * np.log1p(-s))
        np.testing.assert_allclose(gan.bce_with_logits(x, y), want, rtol=1e-4, atol=1e-6)


def test_bce_with_logits_is_stable_for_huge_logits():
    logits = jnp.array([1e4, -1e4, 1e4, -1e4, 0.0])
    labels = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0])
    got = np.asarray(gan.bce_with_logits(logits, labels))
    np.testing.assert_allclose(got, [0.0, 0.0, 1e4, 1e4, np.log(2.0)], rtol=1e-6)


def test_bce_with_logits_gradient_is_sigmoid_minus_label():
    x, y = jnp.array([-3.0, 0.5, 2.0]), jnp.array([1.0, 0.0, 0.25])
    grad = jax.grad(lambda v: jnp.sum(gan.bce_with_logits(v, y)))(x)
    np.testing.assert_allclose(grad, scipy.special.expit(np.asarray(x)) - np.asarray(y), rtol=1e-5)


def test_bce_with_logits_rejects_bad_input():
    with pytest.raises(ValueError, match="logits"):
        gan.bce_with_logits(jnp.zeros(3), jnp.zeros(4))
    with pytest.raises(TypeError, match="labels"):
        gan.bce_with_logits(jnp.zeros(3), "ones")


# --- discriminator_loss and generator_loss --------------------------------------------------


def test_discriminator_loss_is_two_means_of_optax_bce():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(8, 1)).astype(np.float32)
    fake = rng.normal(size=(5, 1)).astype(np.float32)
    want = np.mean(optax.sigmoid_binary_cross_entropy(real, np.ones_like(real))) + np.mean(
        optax.sigmoid_binary_cross_entropy(fake, np.zeros_like(fake))
    )
    got = gan.discriminator_loss(real, fake)
    assert got.shape == ()
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_discriminator_loss_at_chance_is_log_4():
    np.testing.assert_allclose(gan.discriminator_loss(jnp.zeros(3), jnp.zeros(9)), np.log(4.0))


def test_discriminator_loss_rejects_empty_batch():
    with pytest.raises(ValueError, match="fake_logits"):
        gan.discriminator_loss(jnp.zeros(3), jnp.zeros(0))


def test_generator_loss_matches_probability_forms():
    x = np.array([-4.0, -1.0, 0.0, 2.0])
    d = scipy.special.expit(x)
    np.testing.assert_allclose(gan.generator_loss(x), -np.mean(np.log(d)), rtol=1e-5)
    np.testing.assert_allclose(
        gan.generator_loss(x, non_saturating=False), np.mean(np.log1p(-d)), rtol=1e-5
    )


def test_generator_losses_gradients_match_finite_differences_and_saturate():
    h = 1e-3
    for non_saturating in (True, False):

        def loss(v, ns=non_saturating):
            return gan.generator_loss(v, non_saturating=ns)

        for x0 in (-8.0, -1.0, 1.5):
            x = jnp.array([x0], jnp.float32)
            grad = float(jax.grad(loss)(x)[0])
            numeric = (float(loss(x + h)) - float(loss(x - h))) / (2 * h)
            np.testing.assert_allclose(grad, numeric, rtol=2e-2, atol=1e-4)
    # dL/dx: -(1 - D) non-saturating, -D saturating; with D = sigmoid(-8) the second vanishes.
    x = jnp.array([-8.0])
    ns = float(jax.grad(lambda v: gan.generator_loss(v))(x)[0])
    sat = float(jax.grad(lambda v: gan.generator_loss(v, non_saturating=False))(x)[0])
    np.testing.assert_allclose(ns, -(1 - scipy.special.expit(-8.0)), rtol=1e-5)
    np.testing.assert_allclose(sat, -scipy.special.expit(-8.0), rtol=1e-4)
    assert abs(sat) < 1e-3 < abs(ns)


def test_generator_loss_rejects_non_bool_flag():
    with pytest.raises(TypeError, match="non_saturating"):
        gan.generator_loss(jnp.zeros(2), non_saturating="yes")


# --- optimal discriminator, divergences, Theorem 1 ------------------------------------------


def test_optimal_discriminator_ratio_and_zero_case():
    p_data = jnp.array([0.2, 0.0, 0.0, 0.5])
    p_g = jnp.array([0.6, 0.3, 0.0, 0.5])
    np.testing.assert_allclose(gan.optimal_discriminator(p_data, p_g), [0.25, 0.0, 0.5, 0.5])
    grad = jax.grad(lambda p: jnp.sum(gan.optimal_discriminator(p, p_g)))(p_data)
    assert np.all(np.isfinite(grad))


def test_optimal_discriminator_maximises_the_pointwise_objective():
    # a log y + b log(1 - y) is maximised at y = a / (a + b): check on a grid.
    y = np.linspace(1e-4, 1 - 1e-4, 20001)
    for a, b in [(0.3, 0.1), (0.05, 0.7), (1.0, 1.0)]:
        best = y[np.argmax(a * np.log(y) + b * np.log1p(-y))]
        np.testing.assert_allclose(gan.optimal_discriminator(a, b), best, atol=1e-3)


def test_kl_divergence_matches_scipy_entropy():
    rng = np.random.default_rng(2)
    p, q = _probabilities(rng, (3, 6), zeros=2), _probabilities(rng, (3, 6))
    got = gan.kl_divergence(p, q)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, scipy.stats.entropy(p, q, axis=-1), rtol=1e-5, atol=1e-6)


def test_kl_divergence_infinite_when_q_misses_support():
    assert gan.kl_divergence(jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0])) == np.inf
    assert gan.kl_divergence(jnp.array([1.0, 0.0]), jnp.array([0.5, 0.5])) == pytest.approx(
        np.log(2.0)
    )


def test_js_divergence_matches_scipy_squared():
    rng = np.random.default_rng(3)
    p, q = _probabilities(rng, (4, 5), zeros=1), _probabilities(rng, (4, 5), zeros=2)
    want = scipy.spatial.distance.jensenshannon(p, q, axis=-1) ** 2
    np.testing.assert_allclose(gan.js_divergence(p, q), want, rtol=1e-4, atol=1e-6)


def test_js_divergence_bounds_and_symmetry():
    p, q = jnp.array([0.5, 0.5, 0.0, 0.0]), jnp.array([0.0, 0.0, 0.25, 0.75])
    np.testing.assert_allclose(gan.js_divergence(p, q), np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(gan.js_divergence(p, p), 0.0, atol=1e-7)
    r = jnp.array([0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(gan.js_divergence(p, r), gan.js_divergence(r, p), rtol=1e-6)


def test_divergences_reject_mismatched_support():
    with pytest.raises(ValueError, match="support"):
        gan.js_divergence(jnp.ones(3) / 3, jnp.ones(4) / 4)
    with pytest.raises(ValueError, match="p"):
        gan.kl_divergence(jnp.float32(1.0), jnp.ones(2) / 2)


def test_gan_value_brute_force_and_zero_convention():
    rng = np.random.default_rng(4)
    p, q = _probabilities(rng, (6,)), _probabilities(rng, (6,))
    d = rng.uniform(0.05, 0.95, size=6).astype(np.float32)
    want = sum(p[k] * np.log(d[k]) + q[k] * np.log(1 - d[k]) for k in range(6))
    np.testing.assert_allclose(gan.gan_value(p, q, d), want, rtol=1e-5)
    # p_data = 0 where d = 0 and p_g = 0 where d = 1: those terms vanish.
    got = gan.gan_value(jnp.array([0.0, 1.0]), jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))
    assert got == 0.0


def test_theorem_1_on_discrete_distributions():
    rng = np.random.default_rng(5)
    p, q = _probabilities(rng, (5, 10), zeros=3), _probabilities(rng, (5, 10), zeros=3)
    d_star = gan.optimal_discriminator(p, q)
    value = gan.gan_value(p, q, d_star)
    np.testing.assert_allclose(value, -np.log(4.0) + 2 * gan.js_divergence(p, q), atol=1e-5)
    # Any other discriminator does worse: V(D, G) <= V(D*, G).
    other = np.clip(np.asarray(d_star) + rng.uniform(-0.2, 0.2, size=d_star.shape), 0.01, 0.99)
    assert np.all(np.asarray(gan.gan_value(p, q, other)) <= np.asarray(value) + 1e-6)
    # And the minimum over G is -log 4, reached at p_g = p_data.
    np.testing.assert_allclose(gan.gan_value(p, p, gan.optimal_discriminator(p, p)), -np.log(4.0))


def test_theorem_1_on_densities_on_a_grid():
    # Two Beta densities on [0, 1] (midpoint rule); V(D*, G) as an integral, JSD from the cells.
    dx = 1.0 / 4000
    x = (np.arange(4000) + 0.5) * dx
    p_data = scipy.stats.beta.pdf(x, 2.0, 5.0)
    p_g = scipy.stats.beta.pdf(x, 3.0, 2.0)
    d_star = np.asarray(gan.optimal_discriminator(p_data, p_g), np.float64)
    np.testing.assert_allclose(d_star, p_data / (p_data + p_g), rtol=1e-5)
    value = np.sum(p_data * np.log(d_star) + p_g * np.log1p(-d_star)) * dx
    jsd = float(gan.js_divergence(p_data * dx, p_g * dx))
    np.testing.assert_allclose(value, -np.log(4.0) + 2 * jsd, atol=1e-4)
    assert value > -np.log(4.0) + 0.1  # different densities: strictly above the minimum


# --- mode coverage --------------------------------------------------------------------------


def test_mode_coverage_counts_modes_and_quality_by_brute_force():
    centers = data.ring_centers(8, 2.0)
    rng = np.random.default_rng(6)
    modes = rng.choice([0, 1, 2, 5], size=300)
    samples = np.asarray(centers)[modes] + 0.05 * rng.normal(size=(300, 2))
    samples[:50] = rng.uniform(-3, 3, size=(50, 2))
    quality = 0.9
    covered, share = gan.mode_coverage(samples, centers, std=0.05, quality=quality, min_count=5)
    radius = 0.05 * np.sqrt(scipy.stats.chi2.ppf(quality, df=2))  # independent of the closed form
    c = np.asarray(centers, np.float64)
    dist = np.sqrt(((samples[:, None, :] - c[None]) ** 2).sum(-1))
    close = dist.min(1) <= radius
    counts = np.bincount(dist.argmin(1)[close], minlength=8)
    assert int(covered) == int((counts >= 5).sum())
    np.testing.assert_allclose(share, close.mean(), rtol=1e-6)
    assert covered.dtype == jnp.int32 and share.dtype == jnp.float32


@pytest.mark.parametrize("quality", [0.3, 0.5, 0.9, 0.999])
def test_quality_radius_matches_the_chi_square_quantile_and_monte_carlo(quality):
    std = 0.37
    want = std * np.sqrt(scipy.stats.chi2.ppf(quality, df=2))
    assert gan.quality_radius(std, quality) == pytest.approx(want, rel=1e-10)
    points = np.random.default_rng(1).normal(scale=std, size=(400_000, 2))
    inside = np.mean(np.linalg.norm(points, axis=1) <= gan.quality_radius(std, quality))
    assert inside == pytest.approx(quality, abs=3e-3)


def test_mode_coverage_data_from_the_ring_covers_everything():
    centers = data.ring_centers()
    samples = data.gaussian_ring(jax.random.key(0), 4000, std=0.05)
    for quality in (0.5, 0.95):
        covered, share = gan.mode_coverage(samples, centers, 0.05, quality, min_count=20)
        assert int(covered) == 8
        np.testing.assert_allclose(share, quality, atol=0.02)  # a perfect generator scores quality
    collapsed = jnp.tile(centers[:1], (100, 1))
    covered, share = gan.mode_coverage(collapsed, centers, std=0.05, quality=0.9)
    assert int(covered) == 1 and float(share) == 1.0


def test_largest_mode_share_matches_brute_force_counts():
    centers = data.ring_centers(8, 2.0)
    rng = np.random.default_rng(7)
    modes = rng.choice([0, 0, 0, 3, 6], size=200)
    samples = np.asarray(centers)[modes] + 0.05 * rng.normal(size=(200, 2))
    samples[:30] = rng.uniform(-3, 3, size=(30, 2))
    radius = 0.05 * np.sqrt(scipy.stats.chi2.ppf(0.9, df=2))
    dist = np.sqrt(((samples[:, None, :] - np.asarray(centers, np.float64)[None]) ** 2).sum(-1))
    close = dist.min(1) <= radius
    counts = np.bincount(dist.argmin(1)[close], minlength=8)
    share = gan.largest_mode_share(samples, centers, 0.05, 0.9)
    assert share == pytest.approx(counts.max() / counts.sum(), rel=1e-6)
    assert gan.largest_mode_share(jnp.tile(centers[:1], (10, 1)), centers, 0.05, 0.9) == 1.0
    assert gan.largest_mode_share(jnp.zeros((5, 2)), centers, 0.05, 0.9) == 0.0  # nothing good
    with pytest.raises(ValueError, match="quality"):
        gan.largest_mode_share(samples, centers, 0.05, 1.5)


def test_mode_coverage_rejects_bad_input():
    centers = data.ring_centers()
    with pytest.raises(ValueError, match="samples"):
        gan.mode_coverage(jnp.zeros((4, 3)), centers, std=0.1, quality=0.9)
    with pytest.raises(ValueError, match="std"):
        gan.mode_coverage(jnp.zeros((4, 2)), centers, std=0.0, quality=0.9)
    for quality in (0.0, 1.0, 3.0):
        with pytest.raises(ValueError, match="quality"):
            gan.mode_coverage(jnp.zeros((4, 2)), centers, std=0.1, quality=quality)
    with pytest.raises(ValueError, match="min_count"):
        gan.mode_coverage(jnp.zeros((4, 2)), centers, std=0.1, quality=0.9, min_count=0)


# --- gradient penalty -----------------------------------------------------------------------


def test_gradient_penalty_linear_critic_closed_form():
    # critic(x) = x . w has gradient w everywhere: penalty = (|w| - 1)^2 for any interpolation.
    w = jnp.array([3.0, 4.0])
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    got = gan.gradient_penalty(lambda x: x @ w, real, fake, jax.random.key(0))
    np.testing.assert_allclose(got, 16.0, rtol=1e-6)


def test_gradient_penalty_matches_per_example_finite_differences():
    def critic(x):  # (B, 2, 3) -> (B,)
        return jnp.sum(jnp.sin(x) * jnp.arange(1.0, 7.0).reshape(2, 3), axis=(1, 2))

    rng = np.random.default_rng(8)
    real = rng.normal(size=(4, 2, 3)).astype(np.float64)
    fake = rng.normal(size=(4, 2, 3)).astype(np.float64)
    key = jax.random.key(1)
    eps = np.asarray(jax.random.uniform(key, (4, 1, 1)), np.float64)
    x_hat = eps * real + (1 - eps) * fake
    h = 1e-4
    norms = []
    for b in range(4):
        grad = np.zeros((2, 3))
        for idx in np.ndindex(2, 3):
            step = np.zeros((1, 2, 3))
            step[(0, *idx)] = h
            up = float(critic(jnp.asarray(x_hat[b : b + 1] + step, jnp.float32))[0])
            down = float(critic(jnp.asarray(x_hat[b : b + 1] - step, jnp.float32))[0])
            grad[idx] = (up - down) / (2 * h)
        norms.append(np.linalg.norm(grad))
    want = np.mean((np.array(norms) - 1.0) ** 2)
    got = gan.gradient_penalty(critic, real.astype(np.float32), fake.astype(np.float32), key)
    np.testing.assert_allclose(got, want, rtol=2e-2)


def test_gradient_penalty_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="fake"):
        gan.gradient_penalty(
            lambda x: x[:, 0], jnp.zeros((3, 2)), jnp.zeros((4, 2)), jax.random.key(0)
        )
    with pytest.raises(TypeError, match="critic_fn"):
        gan.gradient_penalty(None, jnp.zeros((3, 2)), jnp.zeros((3, 2)), jax.random.key(0))


# --- WGAN-GP losses -------------------------------------------------------------------------


def test_wgan_critic_loss_linear_critic_closed_form():
    # f(x) = x . w: E f(fake) - E f(real) = (mean fake - mean real) . w, and GP = (|w| - 1)^2.
    w = np.array([3.0, 4.0], np.float32)
    rng = np.random.default_rng(11)
    real = rng.normal(size=(8, 2)).astype(np.float32)
    fake = rng.normal(2.0, 1.0, size=(8, 2)).astype(np.float32)
    for weight in (0.0, 2.5, 10.0):
        got = gan.wgan_critic_loss(lambda x: x @ w, real, fake, jax.random.key(3), weight)
        want = (fake.mean(0) - real.mean(0)) @ w + weight * 16.0
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_wgan_critic_loss_estimates_minus_w1_with_the_best_critic():
    # Between N(0, 1) and N(5, 1) the best 1-Lipschitz critic is f(x) = -x (real scored high);
    # its gradient norm is 1 everywhere, so the loss is -W1 = -5 up to sampling noise.
    rng = np.random.default_rng(12)
    real = rng.normal(size=(4000, 1)).astype(np.float32)
    fake = (5.0 + rng.normal(size=(4000, 1))).astype(np.float32)
    got = gan.wgan_critic_loss(lambda x: -x[:, 0], real, fake, jax.random.key(4))
    w1 = scipy.stats.wasserstein_distance(real[:, 0], fake[:, 0])
    np.testing.assert_allclose(got, -w1, atol=0.05)


def test_wgan_critic_loss_rejects_negative_weight():
    with pytest.raises(ValueError, match="gp_weight"):
        gan.wgan_critic_loss(
            lambda x: x[:, 0], jnp.zeros((3, 1)), jnp.ones((3, 1)), jax.random.key(0), -1.0
        )


def test_wgan_generator_loss_is_minus_the_mean_score():
    np.testing.assert_allclose(gan.wgan_generator_loss(jnp.array([[1.0], [2.0], [6.0]])), -3.0)
    with pytest.raises(ValueError, match="fake_scores"):
        gan.wgan_generator_loss(jnp.zeros((0, 1)))


# --- training steps --------------------------------------------------------------------------


def _sample_1d(key, n):  # the target N(3, 0.5^2), [n, 1]
    return 3.0 + 0.5 * jax.random.normal(key, (n, 1))


def _gan_pair(seed, lr, b1, b2=0.999):
    rngs = nnx.Rngs(seed)
    models = (nn.MLP((1, 16, 1), rngs=rngs), nn.MLP((1, 32, 32, 1), rngs=rngs))
    optimizers = tuple(
        nnx.Optimizer(m, optax.adam(lr, b1=b1, b2=b2), wrt=nnx.Param) for m in models
    )
    return models, optimizers


def _train(step, models, optimizers, num_steps):
    for i in range(num_steps):
        metrics = step(models, optimizers, jax.random.key(i))
    return metrics


def test_make_gan_step_counts_updates_of_each_network():
    models, optimizers = _gan_pair(0, 1e-3, 0.5)
    step = gan.make_gan_step(_sample_1d, 1, 32, d_steps=3, g_steps=2)
    metrics = _train(step, models, optimizers, 2)
    assert int(optimizers[0].step[...]) == 4 and int(optimizers[1].step[...]) == 6
    assert set(metrics) == {"d_loss", "g_loss"}
    assert all(np.isfinite(float(v)) for v in metrics.values())


def test_make_gan_step_moves_the_generator_to_the_data():
    models, optimizers = _gan_pair(1, 2e-3, 0.5)
    _train(gan.make_gan_step(_sample_1d, 1, 128), models, optimizers, 1500)
    fakes = np.asarray(models[0](jax.random.normal(jax.random.key(99), (4000, 1))))
    assert abs(fakes.mean() - 3.0) < 0.3, fakes.mean()


def test_make_gan_step_uses_the_losses_passed_in():
    models, optimizers = _gan_pair(2, 1e-3, 0.5)
    calls = []

    def d_loss(real_logits, fake_logits):
        calls.append("d")
        return gan.discriminator_loss(real_logits, fake_logits)

    def g_loss(fake_logits):
        calls.append("g")
        return gan.generator_loss(fake_logits, non_saturating=False)

    metrics = _train(
        gan.make_gan_step(
            _sample_1d, 1, 16, discriminator_loss_fn=d_loss, generator_loss_fn=g_loss
        ),
        models,
        optimizers,
        1,
    )
    # Each loss is traced (nnx.fori_loop traces a loop's body twice), the discriminator's first.
    assert calls[0] == "d" and set(calls) == {"d", "g"}
    assert float(metrics["g_loss"]) < 0  # the saturating loss is log(1 - D) < 0


def test_make_wgan_gp_step_moves_the_generator_to_the_data():
    models, optimizers = _gan_pair(3, 1e-3, 0.0, 0.9)
    step = gan.make_wgan_gp_step(_sample_1d, 1, 128, critic_steps=5)
    _train(step, models, optimizers, 400)
    assert int(optimizers[1].step[...]) == 5 * int(optimizers[0].step[...]) == 2000
    fakes = np.asarray(models[0](jax.random.normal(jax.random.key(98), (4000, 1))))
    assert abs(fakes.mean() - 3.0) < 0.3, fakes.mean()


def test_make_gan_step_rejects_bad_arguments():
    with pytest.raises(ValueError, match="d_steps"):
        gan.make_gan_step(_sample_1d, 1, 8, d_steps=0)
    with pytest.raises(TypeError, match="sample_real"):
        gan.make_gan_step(None, 1, 8)
    with pytest.raises(ValueError, match="gp_weight"):
        gan.make_wgan_gp_step(_sample_1d, 1, 8, gp_weight=-1)


# --- wasserstein_1d -------------------------------------------------------------------------


def test_wasserstein_1d_matches_scipy():
    rng = np.random.default_rng(9)
    for n in (1, 7, 500):
        x, y = rng.normal(size=n), rng.standard_t(3, size=n) + 0.5
        np.testing.assert_allclose(
            gan.wasserstein_1d(x.astype(np.float32), y.astype(np.float32)),
            scipy.stats.wasserstein_distance(x, y),
            rtol=1e-4,
            atol=1e-5,
        )


def test_wasserstein_1d_batched_and_shift():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(3, 50)).astype(np.float32)
    got = gan.wasserstein_1d(x, x + 2.0)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, 2.0, rtol=1e-5)


def test_wasserstein_1d_rejects_unequal_counts():
    with pytest.raises(ValueError, match="same number"):
        gan.wasserstein_1d(jnp.zeros(3), jnp.zeros(4))


# --- gan_step ---------------------------------------------------------------------------------


def _players(seed=0):
    rngs = nnx.Rngs(seed)
    return nn.MLP((2, 8, 2), rngs=rngs), nn.MLP((2, 8, 1), activation=jnp.tanh, rngs=rngs)


def _sgd(module, lr):
    return nnx.Optimizer(module, optax.sgd(lr), wrt=nnx.Param)


def test_gan_step_is_one_sgd_step_of_each_loss_computed_functionally():
    generator, discriminator = _players()
    real = jax.random.normal(jax.random.key(1), (16, 2)) + 1.0
    z = jax.random.normal(jax.random.key(2), (12, 2))
    g_graph, g_params = nnx.split(generator, nnx.Param)
    d_graph, d_params = nnx.split(discriminator, nnx.Param)

    def d_loss(dp, gp):  # the discriminator's loss as a pure function of both parameter trees
        g, d = nnx.merge(g_graph, gp), nnx.merge(d_graph, dp)
        fake = g(z)
        return -jnp.mean(jax.nn.log_sigmoid(d(real))) - jnp.mean(jax.nn.log_sigmoid(-d(fake)))

    def g_loss(gp, dp):
        g, d = nnx.merge(g_graph, gp), nnx.merge(d_graph, dp)
        return -jnp.mean(jax.nn.log_sigmoid(d(g(z))))

    lr = 0.1
    want_d = jax.tree.map(lambda p, g: p - lr * g, d_params, jax.grad(d_loss)(d_params, g_params))
    want_g = jax.tree.map(lambda p, g: p - lr * g, g_params, jax.grad(g_loss)(g_params, want_d))
    want_losses = (float(d_loss(d_params, g_params)), float(g_loss(g_params, want_d)))
    want_d, want_g = (jax.tree.map(np.array, t) for t in (want_d, want_g))  # before the step
    losses = gan.gan_step(generator, discriminator, _sgd(generator, lr), _sgd(discriminator, lr),
                          real, z)  # fmt: skip
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5)
    for got, want in ((discriminator, want_d), (generator, want_g)):
        for a, b in zip(jax.tree.leaves(nnx.state(got, nnx.Param)), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_gan_step_generator_update_leaves_the_discriminator_alone():
    generator, discriminator = _players(3)
    before = [np.asarray(a) for a in jax.tree.leaves(nnx.state(discriminator, nnx.Param))]
    real, z = jnp.ones((8, 2)), jax.random.normal(jax.random.key(0), (8, 2))
    gan.gan_step(generator, discriminator, _sgd(generator, 0.1), _sgd(discriminator, 0.0), real, z)
    after = jax.tree.leaves(nnx.state(discriminator, nnx.Param))
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_generator_objective_is_the_loss_of_the_fakes_and_reaches_the_generator():
    generator, discriminator = _players(4)
    z = jax.random.normal(jax.random.key(3), (10, 2))
    want = -jnp.mean(jax.nn.log_sigmoid(discriminator(generator(z))))  # probability form
    right, buggy = gan.generator_objective(), gan.generator_objective(fakes_as_constants=True)
    np.testing.assert_allclose(right(generator, discriminator, z), want, rtol=1e-5)
    np.testing.assert_allclose(buggy(generator, discriminator, z), want, rtol=1e-5)
    assert float(optax.global_norm(nnx.grad(right)(generator, discriminator, z))) > 0.0
    assert float(optax.global_norm(nnx.grad(buggy)(generator, discriminator, z))) == 0.0
    value = gan.generator_objective(jnp.sum)(generator, discriminator, z)
    np.testing.assert_allclose(value, jnp.sum(discriminator(generator(z))), rtol=1e-5)
    with pytest.raises(TypeError, match="loss_fn"):
        gan.generator_objective(None)


def test_fixed_fakes_objective_is_the_discriminator_loss_with_constant_fakes():
    generator, discriminator = _players(5)
    real = jax.random.normal(jax.random.key(6), (9, 2))
    fakes = generator(jax.random.normal(jax.random.key(7), (7, 2)))
    objective = gan.fixed_fakes_objective(fakes)
    want = -jnp.mean(jax.nn.log_sigmoid(discriminator(real))) - jnp.mean(
        jax.nn.log_sigmoid(-discriminator(fakes))
    )
    np.testing.assert_allclose(objective(discriminator, real), want, rtol=1e-5)
    # Linear in its loss: a custom loss sees the real and fake logits in that order.
    custom = gan.fixed_fakes_objective(fakes, lambda r, f: jnp.mean(r) - jnp.mean(f))
    np.testing.assert_allclose(
        custom(discriminator, real),
        jnp.mean(discriminator(real)) - jnp.mean(discriminator(fakes)),
        rtol=1e-5,
        atol=1e-7,
    )


def test_gan_step_covers_the_ring_in_the_probe_budget():
    from genlab.probes import gan as probes

    modes = probes.ring_modes(probes.ring_training_samples(gan.gan_step, seed=5))
    assert max(modes.values()) >= probes.RING_MIN_MODES, modes


# --- diagnostics ------------------------------------------------------------------------------


def test_generator_grad_norm_matches_the_linear_closed_form_and_is_zero_outside_the_tape():
    generator = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    _, discriminator = _players()
    z = jnp.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    got = gan.generator_grad_norm(lambda g, d, z: jnp.sum(g(z)), generator, discriminator, z)
    want = np.sqrt(2 * np.sum(np.asarray(z).sum(0) ** 2) + 2 * 2**2)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    outside = gan.generator_grad_norm(
        lambda g, d, z: jnp.sum(d(jax.lax.stop_gradient(g(z))[:, :2])), generator, discriminator, z
    )
    assert float(outside) == 0.0


def test_logit_gradient_matches_the_closed_forms_of_section_3():
    logits = jnp.linspace(-6.0, 6.0, 13)
    d = scipy.special.expit(np.asarray(logits, np.float64))
    ns = gan.logit_gradient(gan.generator_loss, logits)
    sat = gan.logit_gradient(
        lambda logits: gan.generator_loss(logits, non_saturating=False), logits
    )
    np.testing.assert_allclose(ns, -(1 - d), atol=1e-6)
    np.testing.assert_allclose(sat, -d, atol=1e-6)
    assert gan.logit_gradient(lambda logits: jnp.sum(logits**2), jnp.ones((2, 3))).shape == (2, 3)


# --- Wasserstein beyond one dimension ---------------------------------------------------------


def test_wasserstein_assignment_matches_brute_force_and_sorting():
    import itertools

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(6, 2))
    brute = min(np.mean(np.linalg.norm(x - y[list(p)], axis=1))
                for p in itertools.permutations(range(6)))  # fmt: skip
    np.testing.assert_allclose(gan.wasserstein_assignment(x, y), brute, rtol=1e-12)
    a, b = rng.normal(size=(40, 1)), rng.standard_t(2.0, size=(40, 1))
    np.testing.assert_allclose(
        gan.wasserstein_assignment(a, b),
        scipy.stats.wasserstein_distance(a[:, 0], b[:, 0]),
        rtol=1e-10,
    )


def test_sliced_wasserstein_of_a_shift_is_the_mean_projected_shift():
    x = jax.random.normal(jax.random.key(0), (50, 2))
    shift = jnp.array([3.0, 4.0])
    got = gan.sliced_wasserstein(jax.random.key(1), x, x + shift, 4000)
    np.testing.assert_allclose(got, 2 / np.pi * 5.0, rtol=0.02)  # E|cos| = 2 / pi on the circle
    assert float(got) <= gan.wasserstein_assignment(x, x + shift) + 1e-4


def test_sliced_wasserstein_in_one_dimension_is_the_sorted_distance():
    x, y = jnp.array([[0.0], [2.0], [5.0]]), jnp.ones((3, 1))
    got = gan.sliced_wasserstein(jax.random.key(3), x, y, 5)
    np.testing.assert_allclose(got, gan.wasserstein_1d(x[:, 0], y[:, 0]), rtol=1e-6)


# --- generator_sample_grad ------------------------------------------------------------------


@pytest.mark.parametrize("non_saturating", [True, False])
def test_generator_sample_grad_matches_finite_differences(non_saturating):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 3))
    w, b = rng.normal(size=3), 0.7

    def loss(row):  # float64 NumPy: each fake's own loss
        d = scipy.special.expit(row @ w + b)
        return -np.log(d) if non_saturating else np.log1p(-d)

    h, want = 1e-6, np.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            step = np.zeros(3)
            step[j] = h
            want[i, j] = (loss(x[i] + step) - loss(x[i] - step)) / (2 * h)
    got = gan.generator_sample_grad(x, w, b, non_saturating)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("non_saturating", [True, False])
def test_generator_sample_grad_is_exact_to_float64_by_complex_step(non_saturating):
    # Complex-step differentiation: Im f(x + i h) / h is the derivative to float64 rounding.
    rng = np.random.default_rng(8)
    x, w, b = rng.normal(scale=4.0, size=(6, 4)), rng.normal(size=4), -0.3
    x[0] = 9.0 * w / np.dot(w, w)  # a confident "real" (logit about 8.7): 1 - D is tiny

    def loss(row):  # -log D = log(1 + e^-l), log(1 - D) = -log(1 + e^l), complex-safe
        logit = row @ w + b
        return np.log1p(np.exp(-logit)) if non_saturating else -np.log1p(np.exp(logit))

    h, eye = 1e-30, np.eye(4)
    want = np.array([[loss(x[i] + 1j * h * eye[j]).imag / h for j in range(4)] for i in range(6)])
    got = gan.generator_sample_grad(x, w, b, non_saturating)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0.0)


def test_generator_sample_grad_points_along_w_and_saturates():
    w = jnp.array([3.0, -4.0])
    x = jnp.array([[1e4, 0.0], [-1e4, 0.0], [0.0, 0.0]])  # logits 3e4, -3e4, 0
    ns = gan.generator_sample_grad(x, w, 0.0)
    sat = gan.generator_sample_grad(x, w, 0.0, non_saturating=False)
    assert np.all(np.isfinite(ns)) and np.all(np.isfinite(sat))
    # rejected fake (logit -3e4): the non-saturating push is -w, the saturating one 0
    np.testing.assert_allclose(ns[1], -w, atol=1e-6)
    np.testing.assert_allclose(sat[1], 0.0, atol=1e-6)
    np.testing.assert_allclose(ns[2], sat[2], atol=1e-7)  # D = 1/2: the same push
    with pytest.raises(ValueError, match="w"):
        gan.generator_sample_grad(x, jnp.ones(3), 0.0)


# --- diagnose_generator_loss ----------------------------------------------------------------


def _band(s, start, width):  # 0 below start, s - start on the band, width above it
    return jax.nn.relu(s - start) - jax.nn.relu(s - start - width)


def test_diagnose_generator_loss_matches_closed_form_endpoints():
    tol = gan.DIAGNOSIS_SPACING  # the reference cuts halfway between grid points
    for f in (0.01, 0.3):
        # non-saturating: push sigmoid(-s), largest at -7; weak where sigmoid(-s) < f sigmoid(7)
        cut = -scipy.special.logit(f * scipy.special.expit(7.0))
        got = gan.diagnose_generator_loss(lambda s: jnp.mean(jax.nn.softplus(-s)), f)
        np.testing.assert_allclose(got, [[cut, 7.0]], atol=tol)
        got = gan.diagnose_generator_loss(lambda s: -jnp.mean(jax.nn.softplus(s)), f)
        np.testing.assert_allclose(got, [[-7.0, -cut]], atol=tol)  # saturating: the mirror image
        # exp(-s): push e^-s, largest e^7; weak where s > -7 - log f
        got = gan.diagnose_generator_loss(lambda s: jnp.mean(jnp.exp(-s)), f)
        np.testing.assert_allclose(got, [[-7.0 - np.log(f), 7.0]], atol=tol)
        # -s - sin s: push 1 + cos s, largest 2; weak where |s -+ pi| < arccos(1 - 2 f)
        half = np.arccos(1.0 - 2.0 * f)
        got = gan.diagnose_generator_loss(lambda s: jnp.mean(-s - jnp.sin(s)), f)
        want = [[-np.pi - half, -np.pi + half], [np.pi - half, np.pi + half]]
        np.testing.assert_allclose(got, want, atol=tol)
        assert got.dtype == np.float64 and got.shape == (2, 2)


def test_diagnose_generator_loss_no_push_everywhere_nowhere_and_a_narrow_wrong_band():
    whole = np.array([[-7.0, 7.0]])
    for loss in (lambda s: 0.0 * jnp.sum(s) + 3.0, lambda s: jnp.mean(s),
                 lambda s: jnp.mean(jax.nn.softplus(jax.lax.stop_gradient(s)))):  # fmt: skip
        np.testing.assert_array_equal(gan.diagnose_generator_loss(loss, 0.01), whole)
    none = gan.diagnose_generator_loss(lambda s: -jnp.mean(s), 0.01)
    assert none.shape == (0, 2)
    # The hinge loss pushed the wrong way on [0.3, 0.4] (slope -1 + 3 there): exactly that band.
    got = gan.diagnose_generator_loss(lambda s: jnp.mean(-s + 3.0 * _band(s, 0.3, 0.1)), 0.5)
    np.testing.assert_allclose(got, [[0.3, 0.4]], atol=gan.DIAGNOSIS_SPACING)
    # The only push on [-2, -1.8]: weak everywhere else, in two pieces.
    got = gan.diagnose_generator_loss(lambda s: -jnp.mean(_band(s, -2.0, 0.2)), 0.01)
    np.testing.assert_allclose(got, [[-7.0, -2.0], [-1.8, 7.0]], atol=gan.DIAGNOSIS_SPACING)


def test_diagnose_generator_loss_rejects_bad_input():
    with pytest.raises(TypeError, match="loss_fn"):
        gan.diagnose_generator_loss(3.0, 0.01)
    for fraction in (0.0, 1.0, -0.5, True):
        with pytest.raises(ValueError, match="fraction"):
            gan.diagnose_generator_loss(lambda s: jnp.mean(s), fraction)


# --- sliced_shift_factor ----------------------------------------------------------------------


@pytest.mark.parametrize("dim", [1, 2, 3, 4, 7])
def test_sliced_shift_factor_matches_numerical_integration(dim):
    # u_1 of a uniform point on the sphere has density proportional to (1 - t^2)^((D - 3) / 2)
    if dim == 1:
        assert gan.sliced_shift_factor(1) == pytest.approx(1.0)
        return
    t = np.linspace(-1.0, 1.0, 400_001)[1:-1]
    density = (1.0 - t**2) ** ((dim - 3) / 2)
    want = np.trapezoid(np.abs(t) * density, t) / np.trapezoid(density, t)
    assert gan.sliced_shift_factor(dim) == pytest.approx(want, rel=2e-3 if dim == 2 else 1e-5)


def test_sliced_shift_factor_closed_forms_and_monte_carlo():
    assert gan.sliced_shift_factor(2) == pytest.approx(2 / np.pi)
    assert gan.sliced_shift_factor(3) == pytest.approx(0.5)
    u = np.random.default_rng(0).normal(size=(400_000, 10))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    assert gan.sliced_shift_factor(10) == pytest.approx(np.abs(u[:, 0]).mean(), rel=5e-3)
    assert gan.sliced_shift_factor(100_000) == pytest.approx(np.sqrt(2 / (np.pi * 1e5)), rel=1e-4)
    with pytest.raises(ValueError, match="dim"):
        gan.sliced_shift_factor(0)
