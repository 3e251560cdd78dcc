"""The references of chapter 02 (genlab.vae) against independent checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
from flax import nnx

from genlab import vae


def _random(seed, shape, scale=1.0, low=None, high=None):
    rng = np.random.default_rng(seed)
    if low is not None:
        return jnp.asarray(rng.uniform(low, high, size=shape), jnp.float32)
    return jnp.asarray(scale * rng.normal(size=shape), jnp.float32)


# --- gaussian_kl_standard and gaussian_kl -----------------------------------------------------


def test_gaussian_kl_standard_is_zero_only_at_the_prior():
    np.testing.assert_allclose(vae.gaussian_kl_standard(jnp.zeros((3, 4)), jnp.zeros((3, 4))), 0.0)
    mean, log_var = _random(0, (50, 3), 2.0), _random(1, (50, 3), low=-4.0, high=3.0)
    assert np.all(np.asarray(vae.gaussian_kl_standard(mean, log_var)) > 0.0)


def test_gaussian_kl_standard_matches_monte_carlo():
    mean, log_var = jnp.array([0.7, -1.2, 0.0]), jnp.array([-0.8, 0.6, -2.0])
    std = np.exp(0.5 * np.asarray(log_var, np.float64))
    z = np.random.default_rng(0).normal(size=(400_000, 3)) * std + np.asarray(mean, np.float64)
    log_q = scipy.stats.norm.logpdf(z, np.asarray(mean, np.float64), std).sum(-1)
    log_p = scipy.stats.norm.logpdf(z).sum(-1)
    samples = log_q - log_p
    standard_error = samples.std() / np.sqrt(samples.size)
    got = float(vae.gaussian_kl_standard(mean, log_var))
    assert abs(got - samples.mean()) < 5 * standard_error


@pytest.mark.parametrize("mq, vq, mp, vp", [(0.5, -1.0, 0.0, 0.0), (-2.0, 1.0, 1.0, -0.5)])
def test_gaussian_kl_matches_numerical_integration(mq, vq, mp, vp):
    sq, sp = np.exp(0.5 * vq), np.exp(0.5 * vp)

    def integrand(z):
        log_q = scipy.stats.norm.logpdf(z, mq, sq)
        return np.exp(log_q) * (log_q - scipy.stats.norm.logpdf(z, mp, sp))

    want, _ = scipy.integrate.quad(integrand, mq - 30 * sq, mq + 30 * sq, limit=200)
    got = vae.gaussian_kl(jnp.array([mq]), jnp.array([vq]), jnp.array([mp]), jnp.array([vp]))
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-7)


def test_gaussian_kl_with_standard_prior_equals_gaussian_kl_standard():
    mean, log_var = _random(2, (4, 5), 1.5), _random(3, (4, 5), low=-3.0, high=2.0)
    np.testing.assert_allclose(
        vae.gaussian_kl(mean, log_var, jnp.zeros(5), jnp.zeros(5)),
        vae.gaussian_kl_standard(mean, log_var),
        rtol=1e-5,
    )


def test_gaussian_kl_is_a_sum_over_the_last_axis_and_broadcasts():
    mq, vq = _random(4, (2, 3, 4)), _random(5, (2, 3, 4), low=-1.0, high=1.0)
    mp, vp = _random(6, (4,)), _random(7, (4,), low=-1.0, high=1.0)
    got = vae.gaussian_kl(mq, vq, mp, vp)
    assert got.shape == (2, 3)
    per_dim = [
        vae.gaussian_kl(mq[..., j : j + 1], vq[..., j : j + 1], mp[j : j + 1], vp[j : j + 1])
        for j in range(4)
    ]
    np.testing.assert_allclose(got, sum(per_dim), rtol=1e-5)


def test_kl_functions_reject_bad_input():
    with pytest.raises(TypeError, match="mean"):
        vae.gaussian_kl_standard(jnp.zeros(3, jnp.int32), jnp.zeros(3))
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        vae.gaussian_kl_standard(jnp.zeros(3), jnp.zeros(4))
    with pytest.raises(ValueError, match="at least one axis"):
        vae.gaussian_kl(jnp.float32(0), jnp.float32(0), jnp.float32(0), jnp.float32(0))
    with pytest.raises(TypeError, match="log_var_p"):
        vae.gaussian_kl(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), jnp.zeros(2, jnp.int32))


# --- likelihoods -----------------------------------------------------------------------------


def test_gaussian_log_likelihood_matches_norm_logpdf():
    x, mean = _random(8, (3, 5), 2.0), _random(9, (3, 5))
    log_var = _random(10, (3, 5), low=-3.0, high=3.0)
    want = jax.scipy.stats.norm.logpdf(x, mean, jnp.exp(0.5 * log_var)).sum(-1)
    np.testing.assert_allclose(vae.gaussian_log_likelihood(x, mean, log_var), want, rtol=1e-5)
    want64 = scipy.stats.norm.logpdf(
        np.asarray(x, np.float64),
        np.asarray(mean, np.float64),
        np.exp(0.5 * np.asarray(log_var, np.float64)),
    ).sum(-1)
    np.testing.assert_allclose(vae.gaussian_log_likelihood(x, mean, log_var), want64, rtol=1e-5)


def test_bernoulli_log_likelihood_matches_scipy_and_is_stable():
    x = (np.random.default_rng(11).uniform(size=(4, 6)) > 0.5).astype(np.float32)
    logits = _random(12, (4, 6), 3.0)
    p = scipy.special.expit(np.asarray(logits, np.float64))
    want = scipy.stats.bernoulli.logpmf(x, p).sum(-1)
    np.testing.assert_allclose(
        vae.bernoulli_log_likelihood(jnp.asarray(x), logits), want, rtol=1e-5
    )
    extreme = vae.bernoulli_log_likelihood(
        jnp.array([1.0, 0.0, 0.5]), jnp.array([-500.0, 500.0, 80.0])
    )
    np.testing.assert_allclose(float(extreme), -1040.0, rtol=1e-6)


def test_bernoulli_log_likelihood_accepts_intensities():
    x, logits = jnp.array([[0.25]]), jnp.array([[1.3]])
    want = 0.25 * np.log(scipy.special.expit(1.3)) + 0.75 * np.log(scipy.special.expit(-1.3))
    np.testing.assert_allclose(vae.bernoulli_log_likelihood(x, logits), [want], rtol=1e-6)


def test_likelihoods_reject_bad_input():
    with pytest.raises(TypeError, match="logits"):
        vae.bernoulli_log_likelihood(jnp.zeros(3), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="at least one axis"):
        vae.gaussian_log_likelihood(jnp.float32(0), jnp.float32(0), jnp.float32(0))
    with pytest.raises(ValueError, match="shapes do not broadcast"):
        vae.gaussian_log_likelihood(jnp.zeros(3), jnp.zeros(2), jnp.zeros(3))


# --- reparameterize and the gradient estimators ----------------------------------------------


def test_reparameterize_has_the_right_moments_and_gradients():
    mean, log_var = jnp.array([1.0, -2.0]), jnp.array([np.log(4.0), -1.0])
    z = vae.reparameterize(
        jax.random.key(0),
        jnp.broadcast_to(mean, (200_000, 2)),
        jnp.broadcast_to(log_var, (200_000, 2)),
    )
    np.testing.assert_allclose(np.asarray(z).mean(0), mean, atol=0.02)
    np.testing.assert_allclose(np.asarray(z).var(0), np.exp(np.asarray(log_var)), rtol=0.02)
    eps = jax.random.normal(jax.random.key(1), (2,))
    grad_mean, grad_log_var = jax.grad(
        lambda m, v: vae.reparameterize(jax.random.key(1), m, v).sum(), argnums=(0, 1)
    )(mean, log_var)
    np.testing.assert_allclose(grad_mean, np.ones(2))
    np.testing.assert_allclose(
        grad_log_var, 0.5 * np.exp(0.5 * np.asarray(log_var)) * np.asarray(eps), rtol=1e-5
    )


def test_reparameterize_rejects_bad_input():
    with pytest.raises(ValueError, match="log_var"):
        vae.reparameterize(jax.random.key(0), jnp.zeros(3), jnp.zeros(2))
    with pytest.raises(TypeError, match="mean"):
        vae.reparameterize(jax.random.key(0), jnp.zeros(3, jnp.int32), jnp.zeros(3))


@pytest.mark.parametrize(
    "estimator, variance",
    [
        (vae.score_function_grad, lambda t: t**4 + 14 * t**2 + 15),
        (vae.reparameterization_grad, lambda t: 4.0 + 0 * t),
    ],
)
def test_gradient_estimators_are_unbiased_with_the_predicted_variance(estimator, variance):
    theta = jnp.array([-1.0, 0.0, 1.5])
    keys = jax.random.split(jax.random.key(3), 4000)
    estimates = np.asarray(jax.vmap(lambda k: estimator(k, theta, 8))(keys))  # (R, 3)
    predicted = variance(np.asarray(theta, np.float64)) / 8
    standard_error = np.sqrt(predicted / len(keys))
    assert np.all(np.abs(estimates.mean(0) - 2 * np.asarray(theta)) < 5 * standard_error)
    np.testing.assert_allclose(estimates.var(0), predicted, rtol=0.15)


def test_reparameterization_grad_equals_autodiff_of_the_sample_mean():
    theta = jnp.array([0.3, -0.7])
    eps = jax.random.normal(jax.random.key(4), (16, 2))
    want = jax.grad(lambda t: jnp.sum(jnp.mean((t + eps) ** 2, axis=0)))(theta)
    np.testing.assert_allclose(
        vae.reparameterization_grad(jax.random.key(4), theta, 16), want, rtol=1e-6
    )


def test_estimators_reject_bad_num_samples():
    with pytest.raises(ValueError, match="num_samples"):
        vae.score_function_grad(jax.random.key(0), jnp.zeros(2), 0)
    with pytest.raises(TypeError, match="num_samples"):
        vae.reparameterization_grad(jax.random.key(0), jnp.zeros(2), 2.5)


# --- iwae_bound and the linear-Gaussian model ------------------------------------------------


def test_iwae_bound_matches_scipy_logsumexp():
    lw = np.random.default_rng(13).normal(scale=40.0, size=(9, 3, 2)) - 500.0
    want = scipy.special.logsumexp(lw, axis=0) - np.log(9)
    np.testing.assert_allclose(vae.iwae_bound(jnp.asarray(lw, jnp.float32)), want, rtol=1e-5)
    np.testing.assert_allclose(vae.iwae_bound(jnp.array([[-jnp.inf, 1.0]]))[1], 1.0)
    with pytest.raises(ValueError, match="log_weights"):
        vae.iwae_bound(jnp.float32(1.0))


def _linear_gaussian(seed=0, d=5, z=3, orthogonal=False):
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(d, z))
    if orthogonal:
        weight = np.linalg.qr(weight)[0] * np.array([2.0, 1.0, 0.5])[:z]
    return (
        jnp.asarray(weight, jnp.float32),
        jnp.asarray(rng.normal(size=d), jnp.float32),
        jnp.float32(0.4),
    )


def test_linear_gaussian_log_marginal_matches_multivariate_normal():
    weight, bias, noise_var = _linear_gaussian()
    x = _random(14, (4, 5), 2.0)
    cov = np.asarray(weight, np.float64) @ np.asarray(weight, np.float64).T + 0.4 * np.eye(5)
    want_scipy = scipy.stats.multivariate_normal(np.asarray(bias, np.float64), cov).logpdf(
        np.asarray(x, np.float64)
    )
    want_jax = jax.scipy.stats.multivariate_normal.logpdf(x, bias, jnp.asarray(cov, jnp.float32))
    got = vae.linear_gaussian_log_marginal(x, weight, bias, noise_var)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, want_scipy, rtol=1e-4)
    np.testing.assert_allclose(got, want_jax, rtol=1e-4)


def test_linear_gaussian_posterior_makes_the_elbo_exact():
    weight, bias, noise_var = _linear_gaussian(orthogonal=True)
    x = _random(15, (5,), 2.0)
    mean, cov = vae.linear_gaussian_posterior(x, weight, bias, noise_var)
    np.testing.assert_allclose(cov, np.diag(np.diag(cov)), atol=1e-5)  # orthogonal columns
    log_var = jnp.log(jnp.diag(cov))
    z = vae.reparameterize(
        jax.random.key(5), jnp.broadcast_to(mean, (1000, 3)), jnp.broadcast_to(log_var, (1000, 3))
    )
    log_w = (
        vae.gaussian_log_likelihood(x, z @ weight.T + bias, jnp.log(noise_var))
        + vae.gaussian_log_likelihood(z, 0.0, 0.0)
        - vae.gaussian_log_likelihood(z, mean, log_var)
    )
    exact = vae.linear_gaussian_log_marginal(x, weight, bias, noise_var)
    np.testing.assert_allclose(log_w, np.full(1000, float(exact)), rtol=1e-4)


def test_iwae_is_monotone_in_k_on_average_and_below_log_p():
    weight, bias, noise_var = _linear_gaussian(seed=1, orthogonal=True)
    x = _random(16, (5,), 2.0)
    mean, cov = vae.linear_gaussian_posterior(x, weight, bias, noise_var)
    mean_q, log_var_q = mean + 0.8, jnp.log(jnp.diag(cov)) + 1.0
    exact = float(vae.linear_gaussian_log_marginal(x, weight, bias, noise_var))

    def bound(key, k):
        z = vae.reparameterize(
            key, jnp.broadcast_to(mean_q, (k, 3)), jnp.broadcast_to(log_var_q, (k, 3))
        )
        lw = (
            vae.gaussian_log_likelihood(x, z @ weight.T + bias, jnp.log(noise_var))
            + vae.gaussian_log_likelihood(z, 0.0, 0.0)
            - vae.gaussian_log_likelihood(z, mean_q, log_var_q)
        )
        return vae.iwae_bound(lw)

    values = []
    for k in (1, 4, 16, 64):
        keys = jax.random.split(jax.random.fold_in(jax.random.key(6), k), 2000)
        values.append(float(jnp.mean(jax.vmap(lambda key, k=k: bound(key, k))(keys))))
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert values[-1] < exact
    elbo_gap = exact - values[0]
    kl = float(vae.gaussian_kl(mean_q, log_var_q, mean, jnp.log(jnp.diag(cov))))
    np.testing.assert_allclose(elbo_gap, kl, rtol=0.1)


def test_linear_gaussian_rejects_bad_shapes():
    weight, bias, noise_var = _linear_gaussian()
    with pytest.raises(ValueError, match="x"):
        vae.linear_gaussian_log_marginal(jnp.zeros(4), weight, bias, noise_var)
    with pytest.raises(ValueError, match="bias"):
        vae.linear_gaussian_posterior(jnp.zeros(5), weight, bias[:3], noise_var)
    with pytest.raises(ValueError, match="weight"):
        vae.linear_gaussian_log_marginal(jnp.zeros(5), bias, bias, noise_var)


# --- elbo and the model ----------------------------------------------------------------------


def test_elbo_is_reconstruction_minus_beta_kl():
    model = vae.VAE(vae.VAEConfig(data_dim=6, latent_dim=2, hidden_dim=8), rngs=nnx.Rngs(0))
    x = _random(17, (4, 6), low=0.0, high=1.0)
    key = jax.random.key(7)
    mean, log_var = model.encode(x)
    z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape)
    logits = np.asarray(model.decode(z), np.float64)
    xs = np.asarray(x, np.float64)
    recon = np.sum(
        xs * np.log(scipy.special.expit(logits)) + (1 - xs) * np.log(scipy.special.expit(-logits)),
        -1,
    )
    m, v = np.asarray(mean, np.float64), np.asarray(log_var, np.float64)
    kl = 0.5 * np.sum(np.exp(v) + m**2 - 1 - v, -1)
    for beta in (0.0, 1.0, 2.5):
        got = vae.elbo(key, x, model.encode, model.decode, beta=beta)
        assert got.shape == (4,)
        np.testing.assert_allclose(got, recon - beta * kl, rtol=1e-4, atol=1e-4)


def test_elbo_rejects_bad_input():
    model = vae.VAE(vae.VAEConfig(data_dim=6, latent_dim=2, hidden_dim=8), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="x"):
        vae.elbo(jax.random.key(0), jnp.zeros(6), model.encode, model.decode)
    with pytest.raises(ValueError, match="decode"):
        vae.elbo(jax.random.key(0), jnp.zeros((2, 6)), model.encode, lambda z: z)


def test_vae_shapes_and_training_raise_the_elbo():
    config = vae.VAEConfig(data_dim=16, latent_dim=2, hidden_dim=32)
    model = vae.VAE(config, rngs=nnx.Rngs(1))
    mean, log_var = model.encode(jnp.zeros((3, 16)))
    assert mean.shape == log_var.shape == (3, 2)
    assert model.decode(jnp.zeros((5, 2))).shape == (5, 16)
    x = (np.random.default_rng(18).uniform(size=(64, 16)) > 0.7).astype(np.float32)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, key):
        loss, grads = nnx.value_and_grad(lambda m: -jnp.mean(vae.elbo(key, x, m.encode, m.decode)))(
            model
        )
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, jax.random.key(i))) for i in range(150)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 1.0
    with pytest.raises(ValueError, match="latent_dim"):
        vae.VAE(vae.VAEConfig(latent_dim=0), rngs=nnx.Rngs(0))


# --- the likelihood is a probability of binary data ------------------------------------------


def test_bernoulli_log_likelihood_sums_to_one_over_binary_images():
    import itertools

    logits = np.asarray(_random(19, (5,), 2.0), np.float64)
    p = scipy.special.expit(logits)
    every = np.array(list(itertools.product([0.0, 1.0], repeat=5)))  # (32, 5)
    want = scipy.stats.bernoulli.logpmf(every, p).sum(-1)
    got = vae.bernoulli_log_likelihood(
        jnp.asarray(every, jnp.float32), jnp.asarray(logits, jnp.float32)
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.exp(want).sum(), 1.0, rtol=1e-12)


def test_gaussian_log_likelihood_accepts_python_scalars():
    x = _random(20, (3, 4), 1.5)
    want = scipy.stats.norm.logpdf(np.asarray(x, np.float64), 1.5, np.exp(-0.25)).sum(-1)
    np.testing.assert_allclose(vae.gaussian_log_likelihood(x, 1.5, -0.5), want, rtol=1e-5)
    np.testing.assert_allclose(
        vae.gaussian_log_likelihood(x, 0.0, 0),
        scipy.stats.norm.logpdf(np.asarray(x)).sum(-1),
        rtol=1e-5,
    )


def test_binarize_draws_bernoulli_pixels_with_the_intensities():
    x = jnp.tile(jnp.array([0.0, 0.25, 0.5, 1.0]), (20_000, 1))  # (N, 4)
    b = vae.binarize(jax.random.key(0), x)
    assert b.dtype == jnp.float32 and set(np.unique(np.asarray(b))) <= {0.0, 1.0}
    np.testing.assert_allclose(np.asarray(b).mean(0), [0.0, 0.25, 0.5, 1.0], atol=0.015)
    assert not np.array_equal(b, vae.binarize(jax.random.key(1), x))


# --- the training step -----------------------------------------------------------------------


def test_vae_train_step_is_one_adam_step_on_the_negative_elbo():
    config = vae.VAEConfig(data_dim=6, latent_dim=2, hidden_dim=8)
    model = vae.VAE(config, rngs=nnx.Rngs(3))
    x = jnp.asarray((np.random.default_rng(21).uniform(size=(5, 6)) > 0.5), jnp.float32)
    key, beta = jax.random.key(4), 0.7
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p):  # the same objective, differentiated by plain jax.grad on the split state
        m = nnx.merge(graphdef, p)
        return -jnp.mean(vae.elbo(key, x, m.encode, m.decode, beta))

    want_loss, grads = jax.value_and_grad(loss)(params)
    tx = optax.adam(1e-2)
    updates, _ = tx.update(grads, tx.init(params), params)
    want_params = optax.apply_updates(params, updates)

    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    got_loss = vae.vae_train_step(model, optimizer, x, key, beta)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    got_params = nnx.state(model, nnx.Param)
    for g, w in zip(jax.tree_util.tree_leaves(got_params), jax.tree_util.tree_leaves(want_params)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_vae_train_step_ignores_padded_rows_whatever_they_hold():
    config = vae.VAEConfig(data_dim=6, latent_dim=2, hidden_dim=8)
    x = jnp.asarray((np.random.default_rng(23).uniform(size=(5, 6)) > 0.5), jnp.float32)
    valid = jnp.array([True, False, True, True, False])
    key, beta = jax.random.key(7), 1.3
    # Independent: the per-row ELBO written out on the valid rows only, with the noise rows the
    # full-batch draw gives them, differentiated by jax.grad on the split state.
    eps = jax.random.normal(key, (5, 2))[np.asarray(valid)]  # (3, Z)
    x_valid = x[np.asarray(valid)]  # (3, D)
    graphdef, params = nnx.split(vae.VAE(config, rngs=nnx.Rngs(6)), nnx.Param)

    def loss(p):
        m = nnx.merge(graphdef, p)
        mean, log_var = m.encode(x_valid)
        logits = m.decode(mean + jnp.exp(0.5 * log_var) * eps)
        rec = jnp.sum(x_valid * jax.nn.log_sigmoid(logits)
                      + (1 - x_valid) * jax.nn.log_sigmoid(-logits), axis=-1)  # fmt: skip
        kl = 0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1.0 - log_var, axis=-1)
        return -jnp.mean(rec - beta * kl)

    want_loss, grads = jax.value_and_grad(loss)(params)
    tx = optax.adam(1e-2)
    updates, _ = tx.update(grads, tx.init(params), params)
    want_params = optax.apply_updates(params, updates)
    for fill in [0.0, np.nan, np.inf, -1e30]:
        padded = jnp.where(valid[:, None], x, fill)
        model = vae.VAE(config, rngs=nnx.Rngs(6))
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        got_loss = vae.vae_train_step(model, optimizer, padded, key, beta, valid)
        np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
        got_params = nnx.state(model, nnx.Param)
        for g, w in zip(jax.tree_util.tree_leaves(got_params),
                        jax.tree_util.tree_leaves(want_params)):  # fmt: skip
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="valid"):
        vae.vae_train_step(model, optimizer, x, key, beta, valid[:3])


# --- diagnostics -----------------------------------------------------------------------------


def test_encoder_decoder_grad_norms_match_optax_global_norm():
    model = vae.VAE(vae.VAEConfig(data_dim=6, latent_dim=2, hidden_dim=8), rngs=nnx.Rngs(5))
    x = jnp.asarray((np.random.default_rng(22).uniform(size=(3, 6)) > 0.5), jnp.float32)

    def elbo_loss(m, batch):
        return -jnp.mean(vae.elbo(jax.random.key(0), batch, m.encode, m.decode))

    graphdef, params = nnx.split(model, nnx.Param)
    grads = jax.grad(lambda p: elbo_loss(nnx.merge(graphdef, p), x))(params)
    enc, dec = vae.encoder_decoder_grad_norms(elbo_loss, model, x)
    np.testing.assert_allclose(enc, optax.global_norm(grads["encoder"]), rtol=1e-6)
    np.testing.assert_allclose(dec, optax.global_norm(grads["decoder"]), rtol=1e-6)

    def decoder_only(m, batch):
        return jnp.sum(m.decode(jnp.ones((batch.shape[0], 2))) ** 2)

    enc, dec = vae.encoder_decoder_grad_norms(decoder_only, model, x)
    assert float(enc) == 0.0 and float(dec) > 0.0


def test_kl_diagnostics_names_the_symptoms_numpy_finds():
    def circulating(mean, log_var):
        std = jnp.exp(0.5 * log_var)
        return jnp.sum(mean * jnp.log(mean / std) + std - 1.0, axis=-1)

    # the symptoms, found independently with numpy in float64 at points chosen by hand
    with np.errstate(all="ignore"):
        assert np.isnan(0.0 * np.log(0.0))  # at the prior: 0 log 0
        assert 1 / np.e * np.log(1 / np.e) + 1.0 - 1.0 < 0  # negative at mu = 1/e, sigma = 1
        assert np.isnan(-1.0 * np.log(-1.0))  # NaN for a negative mean
    assert vae.kl_diagnostics(circulating) == set(vae.KL_SYMPTOMS)
    assert vae.kl_diagnostics(vae.gaussian_kl_standard) == frozenset()

    def numpy_kl(mean, log_var):  # the true KL in float64 numpy: no symptom
        m, v = np.asarray(mean, np.float64), np.asarray(log_var, np.float64)
        return np.sum(0.5 * (np.exp(v) + m**2 - 1.0 - v), axis=-1)

    assert vae.kl_diagnostics(numpy_kl) == frozenset()
    # without the log term: negative only where exp(v) - 1 + mu^2 < 0, e.g. at (0, -1)
    assert 0.5 * (np.exp(-1.0) - 1.0) < 0

    def no_log_term(mean, log_var):
        return numpy_kl(mean, log_var) + 0.5 * np.sum(np.asarray(log_var, np.float64), axis=-1)

    assert vae.kl_diagnostics(no_log_term) == {"negative"}
    assert vae.kl_diagnostics(lambda m, v: numpy_kl(m, v) + 0.5) == {"nonzero at the prior"}


def test_log_normalizer_matches_an_explicit_sum():
    import itertools

    logits = _random(23, (6,), 2.0)

    def sigmoid_distance(x, logits):
        return -jnp.sum(jax.nn.sigmoid(x - jax.nn.sigmoid(logits)), axis=-1)

    total = sum(
        np.exp(float(sigmoid_distance(jnp.array([bits], jnp.float32), logits)[0]))
        for bits in itertools.product([0.0, 1.0], repeat=6)
    )
    np.testing.assert_allclose(
        vae.log_normalizer(sigmoid_distance, logits), np.log(total), rtol=1e-5
    )
    np.testing.assert_allclose(vae.log_normalizer(vae.bernoulli_log_likelihood, logits), 0.0,
                               atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match="logits"):
        vae.log_normalizer(vae.bernoulli_log_likelihood, jnp.zeros(17))


def test_active_latents_uses_the_population_variance():
    mean = _random(24, (40, 5), 1.0) * jnp.array([0.0, 0.05, 0.11, 1.0, 3.0])
    np.testing.assert_array_equal(vae.active_latents(mean), np.var(np.asarray(mean), 0) > 0.01)
    np.testing.assert_array_equal(vae.active_latents(jnp.array([[0.0], [0.16]])), [False])
    with pytest.raises(ValueError, match="N >= 2"):
        vae.active_latents(jnp.zeros((1, 3)))


def test_latent_activity_is_the_population_variance_of_each_column():
    mean = _random(26, (30, 4), 1.0) * jnp.array([0.0, 0.1, 1.0, 2.0])
    columns = np.asarray(mean, np.float64)
    by_hand = [np.mean((c - np.mean(c)) ** 2) for c in columns.T]  # divide by N, column by column
    np.testing.assert_allclose(vae.latent_activity(mean), by_hand, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(vae.latent_activity(jnp.array([[0.0], [0.16]])), [0.0064], rtol=1e-5)
    with pytest.raises(ValueError, match="N >= 2"):
        vae.latent_activity(jnp.zeros((1, 3)))


def test_elbo_gap_is_the_full_covariance_kl_and_matches_monte_carlo():
    rng = np.random.default_rng(25)
    w = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)  # not orthogonal: full posterior
    b, s = jnp.asarray(rng.normal(size=5), jnp.float32), jnp.float32(0.4)
    x = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
    mq = jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)
    lvq = jnp.asarray(rng.uniform(-1.5, 0.5, size=(3, 2)), jnp.float32)
    got = np.asarray(vae.elbo_gap(x, w, b, s, mq, lvq))
    # KL(N(mq, diag) || N(post_mean, post_cov)) in float64 with numpy, from the textbook formula
    w64, x64, b64 = (np.asarray(a, np.float64) for a in (w, x, b))
    cov = np.linalg.inv(w64.T @ w64 / 0.4 + np.eye(2))
    post = (x64 - b64) @ w64 @ cov / 0.4
    for i in range(3):
        sq = np.diag(np.exp(np.asarray(lvq[i], np.float64)))
        d = post[i] - np.asarray(mq[i], np.float64)
        prec = np.linalg.inv(cov)
        kl = 0.5 * (
            np.trace(prec @ sq) + d @ prec @ d - 2 + np.log(np.linalg.det(cov) / np.linalg.det(sq))
        )
        np.testing.assert_allclose(got[i], kl, rtol=1e-4, atol=1e-5)
    # and log p(x) - mean log-weight with samples from q
    z = mq[0] + jnp.exp(0.5 * lvq[0]) * jax.random.normal(jax.random.key(0), (200_000, 2))
    lw = (
        vae.gaussian_log_likelihood(x[0], z @ w.T + b, jnp.log(s))
        + vae.gaussian_log_likelihood(z, 0.0, 0.0)
        - vae.gaussian_log_likelihood(z, mq[0], lvq[0])
    )
    mc = float(vae.linear_gaussian_log_marginal(x[0], w, b, s) - lw.mean())
    assert abs(mc - got[0]) < 5 * float(lw.std()) / np.sqrt(lw.size) + 1e-3


def _kl_numpy(mq, vq, mp, vp):
    """KL(N(mq, vq) || N(mp, vp)) per dimension in float64, from variances (not log-variances)."""
    return 0.5 * (np.log(vp / vq) + (vq + (mq - mp) ** 2) / vp - 1.0)


def test_smallest_kl_against_scipy_in_float64_and_the_sigmoid_corner():
    from scipy.optimize import minimize

    def sig(t):
        return 1.0 / (1.0 + np.exp(-t))

    # The sigmoid head: the KL grows with a positive mean and falls as sigma rises to 1, so the
    # smallest value over [-2, 2]^2 is at the corner a = -2, b = 2 (float64, by hand).
    corner = _kl_numpy(sig(-2.0), sig(2.0) ** 2, 0.0, 1.0)
    np.testing.assert_allclose(
        vae.smallest_kl(lambda a, b: (jax.nn.sigmoid(a), 2.0 * jnp.log(jax.nn.sigmoid(b))),
                        -2.0, 2.0),
        corner, rtol=1e-4,
    )  # fmt: skip
    # A head that mixes a and b, minimum inside the box: scipy in float64 from several starts.
    heads = {
        "mixed": (lambda a, b: (a * jax.nn.sigmoid(b) - 0.3, b - 0.2 * a - 0.4),
                  lambda a, b: (a * sig(b) - 0.3, b - 0.2 * a - 0.4)),
        "tanh, softplus": (lambda a, b: (jnp.tanh(a) + 0.2, jnp.log(jax.nn.softplus(b))),
                           lambda a, b: (np.tanh(a) + 0.2, np.log(np.log1p(np.exp(b))))),
    }  # fmt: skip
    starts = np.random.default_rng(6).uniform(-1.5, 1.5, size=(8, 2))
    for name, (jax_head, numpy_head) in heads.items():

        def kl64(x, head=numpy_head):
            mean, log_var = head(x[0], x[1])
            return 0.5 * (np.exp(log_var) + mean**2 - 1.0 - log_var)

        best = min(minimize(kl64, x0, bounds=[(-1.5, 1.5)] * 2, method="L-BFGS-B").fun
                   for x0 in starts)  # fmt: skip
        got = float(vae.smallest_kl(jax_head, -1.5, 1.5))
        assert abs(got - best) <= 1e-6 + 1e-3 * best, (name, got, best)
    shifted = vae.smallest_kl(lambda a, b: (a - 0.3137, 2.0 * (b - 0.7071)), -1.0, 1.0)
    assert 0.0 <= float(shifted) < 1e-7
    np.testing.assert_allclose(
        vae.smallest_kl(lambda a, b: (a, 2.0 * b), 0.5, 2.0),
        _kl_numpy(0.5, np.exp(1.0), 0.0, 1.0),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="low < high"):
        vae.smallest_kl(lambda a, b: (a, b), 1.0, 1.0)


def test_kl_direction_against_float64_suspects_and_equal_variances():
    def forward(mq, vq, mp, vp):  # KL(q || p) in float64 numpy, from variances
        args = [np.asarray(a, np.float64) for a in (mq, vq, mp, vp)]
        return _kl_numpy(args[0], np.exp(args[1]), args[2], np.exp(args[3])).sum(-1)

    def reverse(mq, vq, mp, vp):
        return forward(mp, vp, mq, vq)

    def average(mq, vq, mp, vp):
        return 0.5 * (forward(mq, vq, mp, vp) + reverse(mq, vq, mp, vp))

    def mean_over_z(mq, vq, mp, vp):
        return forward(mq, vq, mp, vp) / np.shape(mq)[-1]

    # On equal variances all four agree in one dimension: those inputs cannot decide.
    rng = np.random.default_rng(4)
    mq, mp, v = rng.uniform(-3.0, 3.0, size=(3, 50, 1))
    for suspect in (reverse, average, mean_over_z):
        np.testing.assert_allclose(suspect(mq, v, mp, v), forward(mq, v, mp, v), rtol=1e-12)
    assert vae.kl_direction(forward) == "forward"
    assert vae.kl_direction(reverse) == "reverse"
    assert vae.kl_direction(average) == "neither"
    assert vae.kl_direction(mean_over_z) == "neither"
    assert vae.kl_direction(lambda mq, vq, mp, vp: 2.0 * forward(mq, vq, mp, vp)) == "neither"
    assert vae.kl_direction(vae.gaussian_kl) == "forward"


def test_the_measured_elbo_gap_is_the_forward_kl():
    """The notebook's use: log p(x) - ELBO(q), measured by Monte Carlo on a linear-Gaussian model
    with an exact log p(x), is KL(q || posterior) within its error and far from KL(posterior || q).
    """
    weight, bias, noise_var = _linear_gaussian(orthogonal=True)
    x = _random(21, (5,), 2.0)
    post_mean, cov = vae.linear_gaussian_posterior(x, weight, bias, noise_var)
    post_log_var = jnp.log(jnp.diag(cov))  # (Z,)
    log_px = vae.linear_gaussian_log_marginal(x, weight, bias, noise_var)
    shifts = _random(22, (6, 3), 1.0)
    factors = _random(23, (6, 3), low=0.25, high=4.0)
    mean_q, log_var_q = post_mean + shifts, post_log_var + jnp.log(factors)  # (P, Z)
    num = 50_000

    def log_weights(key, m, v):  # (K,)
        z = vae.reparameterize(key, jnp.broadcast_to(m, (num, 3)), jnp.broadcast_to(v, (num, 3)))
        return (
            vae.gaussian_log_likelihood(x, z @ weight.T + bias, jnp.log(noise_var))
            + vae.gaussian_log_likelihood(z, 0.0, 0.0)
            - vae.gaussian_log_likelihood(z, m, v)
        )

    keys = jax.random.split(jax.random.key(24), 6)
    lw = jax.vmap(log_weights)(keys, mean_q, log_var_q)  # (P, K)
    error = float(jnp.max(jnp.std(lw, axis=1))) / np.sqrt(num)

    measured_gap = log_px - jnp.mean(lw, axis=1)  # (P,)
    posterior = (jnp.broadcast_to(post_mean, (6, 3)), jnp.broadcast_to(post_log_var, (6, 3)))
    forward = jnp.max(jnp.abs(measured_gap - vae.gaussian_kl(mean_q, log_var_q, *posterior)))
    reverse = jnp.max(jnp.abs(measured_gap - vae.gaussian_kl(*posterior, mean_q, log_var_q)))
    assert float(forward) < 5 * error + 1e-3
    assert float(reverse) > 20 * error
