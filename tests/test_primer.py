"""The references of chapter 00 (genlab.primer) against independent checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
from flax import nnx

from genlab import primer

# --- logsumexp ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, axis", [((7,), -1), ((3, 5), 0), ((3, 5), 1), ((2, 3, 4), -2)])
def test_logsumexp_matches_scipy(shape, axis):
    x = np.random.default_rng(0).normal(scale=5.0, size=shape).astype(np.float32)
    got = primer.logsumexp(jnp.asarray(x), axis=axis)
    want = scipy.special.logsumexp(x.astype(np.float64), axis=axis)
    assert got.shape == want.shape
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


def test_logsumexp_extreme_values_stay_finite():
    x = np.array([[1000.0, 1000.0, 999.0], [-1000.0, -1000.0, -1001.0], [1e30, -1e30, 0.0]])
    got = primer.logsumexp(jnp.asarray(x, jnp.float32))
    want = scipy.special.logsumexp(x, axis=-1)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got[0], 1000.0 + np.log(2.0 + np.exp(-1.0)), rtol=1e-6)


def test_logsumexp_all_neg_inf_gives_neg_inf():
    x = jnp.array([[-jnp.inf, -jnp.inf], [-jnp.inf, 0.0], [2.0, -jnp.inf]])
    got = np.asarray(primer.logsumexp(x))
    assert got[0] == -np.inf
    np.testing.assert_allclose(got[1:], [0.0, 2.0])
    assert not np.any(np.isnan(got))


def test_logsumexp_gradient_is_softmax():
    x = jnp.array([1.0, 2.0, 3.0])
    grad = jax.grad(lambda v: primer.logsumexp(v))(x)
    np.testing.assert_allclose(grad, scipy.special.softmax(np.asarray(x)), rtol=1e-6)


def test_logsumexp_rejects_bad_input():
    with pytest.raises(ValueError, match="axis"):
        primer.logsumexp(jnp.zeros((2, 3)), axis=2)
    with pytest.raises(ValueError, match="x"):
        primer.logsumexp(jnp.float32(1.0))
    with pytest.raises(TypeError, match="x"):
        primer.logsumexp(jnp.arange(3))


# --- sample_mixture -------------------------------------------------------------------------


def test_sample_mixture_uses_two_keys_of_one_split():
    key = jax.random.key(3)
    means, stds = jnp.array([-2.0, 0.5, 4.0]), jnp.array([0.3, 1.0, 2.0])
    got = primer.sample_mixture(key, means, stds, 50)
    k_component, k_noise = jax.random.split(key)
    components = np.asarray(jax.random.randint(k_component, (50,), 0, 3))
    noise = np.asarray(jax.random.normal(k_noise, (50,)))
    want = np.asarray(means)[components] + np.asarray(stds)[components] * noise
    assert got.shape == (50,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_sample_mixture_moments_match_closed_form():
    means, stds = np.array([-3.0, 1.0, 2.5]), np.array([0.5, 1.5, 0.25])
    samples = np.asarray(primer.sample_mixture(jax.random.key(0), means, stds, 200_000))
    mean = means.mean()  # E[x] = (1/K) sum_k mu_k
    variance = (stds**2 + means**2).mean() - mean**2  # E[x^2] - E[x]^2
    standard_error = np.sqrt(variance / samples.size)
    assert abs(samples.mean() - mean) < 5 * standard_error
    assert abs(samples.var() - variance) < 0.02 * variance
    # the mixture's CDF at a point is the average of the components' CDFs
    cdf = np.mean(scipy.stats.norm.cdf(-1.5, loc=means, scale=stds))
    np.testing.assert_allclose(np.mean(samples < -1.5), cdf, atol=0.005)


def test_sample_mixture_zero_std_hits_the_means():
    samples = np.asarray(primer.sample_mixture(jax.random.key(1), [0.0, 10.0], [0.0, 0.0], 64))
    assert set(np.unique(samples)) == {0.0, 10.0}


def test_sample_mixture_rejects_bad_input():
    with pytest.raises(ValueError, match="n"):
        primer.sample_mixture(jax.random.key(0), jnp.zeros(2), jnp.ones(2), 0)
    with pytest.raises(ValueError, match="stds"):
        primer.sample_mixture(jax.random.key(0), jnp.zeros(2), jnp.ones(3), 4)
    with pytest.raises(ValueError, match="means"):
        primer.sample_mixture(jax.random.key(0), jnp.zeros((2, 2)), jnp.ones((2, 2)), 4)


# --- mixture_moments ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixture_moments_match_numerical_integration(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 6))
    means, stds = rng.normal(scale=3.0, size=k), rng.uniform(0.2, 2.0, size=k)
    grid = np.linspace(means.min() - 12 * stds.max(), means.max() + 12 * stds.max(), 200_001)
    density = scipy.stats.norm.pdf(grid[:, None], loc=means, scale=stds).mean(axis=1)
    mean = scipy.integrate.trapezoid(grid * density, grid)
    variance = scipy.integrate.trapezoid((grid - mean) ** 2 * density, grid)
    got_mean, got_variance = primer.mixture_moments(jnp.asarray(means), jnp.asarray(stds))
    assert got_mean.shape == () and got_variance.shape == ()
    assert got_mean.dtype == jnp.float32 and got_variance.dtype == jnp.float32
    np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_variance, variance, rtol=1e-5)


def test_mixture_moments_match_samples_of_sample_mixture():
    means, stds = jnp.array([-3.0, 1.0, 2.5]), jnp.array([0.5, 1.5, 0.25])
    samples = np.asarray(primer.sample_mixture(jax.random.key(4), means, stds, 400_000))
    mean, variance = primer.mixture_moments(means, stds)
    assert abs(samples.mean() - float(mean)) < 5 * np.sqrt(float(variance) / samples.size)
    assert abs(samples.var() / float(variance) - 1.0) < 0.01


def test_mixture_moments_special_cases_and_precision():
    mean, variance = primer.mixture_moments(jnp.array([2.0]), jnp.array([3.0]))  # one Gaussian
    np.testing.assert_allclose([mean, variance], [2.0, 9.0])
    mean, variance = primer.mixture_moments(jnp.array([0.0, 10.0]), jnp.zeros(2))  # two points
    np.testing.assert_allclose([mean, variance], [5.0, 25.0])
    # far from the origin: computed around the mean, float32 keeps the small variance
    mean, variance = primer.mixture_moments(jnp.array([1e4, 1e4 + 2.0]), jnp.array([1.0, 1.0]))
    np.testing.assert_allclose([mean, variance], [1e4 + 1.0, 2.0], rtol=1e-6)


def test_mixture_moments_rejects_bad_input():
    with pytest.raises(ValueError, match="stds"):
        primer.mixture_moments(jnp.zeros(2), jnp.ones(3))
    with pytest.raises(ValueError, match="means"):
        primer.mixture_moments(jnp.zeros((2, 2)), jnp.ones((2, 2)))


# --- mse_grad and per_example_grads ---------------------------------------------------------


def _regression(seed, n=9, d=4):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.normal(size=n).astype(np.float32)
    return w, x, y


def test_mse_grad_matches_closed_form():
    w, x, y = _regression(0)
    want = 2.0 / len(y) * x.astype(np.float64).T @ (x @ w - y)
    np.testing.assert_allclose(primer.mse_grad(w, x, y), want, rtol=1e-5, atol=1e-6)


def test_mse_grad_matches_finite_differences():
    w, x, y = _regression(1, n=5, d=3)
    w, x, y = (a.astype(np.float64) for a in (w, x, y))

    def loss(v):
        return np.mean((x @ v - y) ** 2)

    eps = 1e-6
    fd = [(loss(w + eps * e) - loss(w - eps * e)) / (2 * eps) for e in np.eye(3)]
    np.testing.assert_allclose(primer.mse_grad(w, x, y), fd, rtol=1e-4, atol=1e-5)


def test_per_example_grads_match_closed_form():
    w, x, y = _regression(2)
    want = 2.0 * x * (x @ w - y)[:, None]  # row n: 2 x_n (x_n . w - y_n)
    got = primer.per_example_grads(w, x, y)
    assert got.shape == (9, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_per_example_grads_average_to_mse_grad():
    w, x, y = _regression(3, n=16, d=5)
    mean_of_rows = primer.per_example_grads(w, x, y).mean(axis=0)
    np.testing.assert_allclose(mean_of_rows, primer.mse_grad(w, x, y), rtol=1e-5, atol=1e-6)


def test_mse_grad_rejects_mismatched_shapes():
    w, x, y = _regression(4)
    with pytest.raises(ValueError, match="y"):
        primer.mse_grad(w, x, y[:-1])
    with pytest.raises(ValueError, match="x"):
        primer.per_example_grads(w, x[:, :-1], y)


# --- power_sum ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_power_sum_matches_geometric_series(n):
    x = np.linspace(-1.5, 1.5, 13).astype(np.float32)
    x = x[np.abs(x - 1.0) > 1e-6]  # the closed form divides by 1 - x
    want = x.astype(np.float64) * (1 - x.astype(np.float64) ** n) / (1 - x)
    np.testing.assert_allclose(primer.power_sum(x, n), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(primer.power_sum(jnp.asarray(x), n=n), want, rtol=1e-5, atol=1e-6)


def test_power_sum_is_jitted_with_static_n():
    x = jnp.ones((2, 3))
    assert hasattr(primer.power_sum, "lower")
    text = primer.power_sum.lower(x, n=4).as_text()
    assert "while" not in text  # the Python loop is unrolled at trace time
    np.testing.assert_allclose(primer.power_sum(x, 4), np.full((2, 3), 4.0))


def test_power_sum_rejects_n_below_one():
    with pytest.raises(ValueError, match="n"):
        primer.power_sum(jnp.ones(3), 0)
    with pytest.raises(TypeError, match="n"):
        primer.power_sum(jnp.ones(3), 2.0)


# --- MLP ------------------------------------------------------------------------------------


def test_mlp_matches_numpy_forward():
    model = primer.MLP(3, 7, 2, rngs=nnx.Rngs(0))
    w1, b1 = np.asarray(model.hidden.kernel[...]), np.asarray(model.hidden.bias[...])
    w2, b2 = np.asarray(model.out.kernel[...]), np.asarray(model.out.bias[...])
    assert (w1.shape, b1.shape, w2.shape, b2.shape) == ((3, 7), (7,), (7, 2), (2,))
    x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32)
    want = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
    got = model(jnp.asarray(x))
    assert got.shape == (4, 5, 2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model(jnp.asarray(x[0, 0])), want[0, 0], rtol=1e-5, atol=1e-5)


def test_mlp_parameter_count_and_init_order():
    model = primer.MLP(3, 7, 2, rngs=nnx.Rngs(5))
    count = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert count == 3 * 7 + 7 + 7 * 2 + 2
    rngs = nnx.Rngs(5)
    hidden = nnx.Linear(3, 7, rngs=rngs)
    out = nnx.Linear(7, 2, rngs=rngs)
    np.testing.assert_array_equal(model.hidden.kernel[...], hidden.kernel[...])
    np.testing.assert_array_equal(model.out.kernel[...], out.kernel[...])


def test_mlp_rejects_bad_sizes():
    with pytest.raises(ValueError, match="d_hidden"):
        primer.MLP(3, 0, 2, rngs=nnx.Rngs(0))


# --- train_step -----------------------------------------------------------------------------


def _linear_problem():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(12, 3)).astype(np.float32))
    y = jnp.asarray(rng.normal(size=(12, 2)).astype(np.float32))
    return x, y


def test_train_step_sgd_matches_closed_form_gradient():
    x, y = _linear_problem()
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    w, b = np.asarray(model.kernel[...], np.float64), np.asarray(model.bias[...], np.float64)
    xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)
    residual = xn @ w + b - yn  # (N, 2)
    count = residual.size  # the mean runs over all N * 2 entries
    grad_w, grad_b = 2.0 / count * xn.T @ residual, 2.0 / count * residual.sum(axis=0)
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    loss = primer.train_step(model, optimizer, x, y)
    assert loss.shape == ()
    np.testing.assert_allclose(loss, np.mean(residual**2), rtol=1e-5)
    np.testing.assert_allclose(model.kernel[...], w - 0.1 * grad_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.bias[...], b - 0.1 * grad_b, rtol=1e-5, atol=1e-6)


def test_train_step_adam_matches_functional_optax():
    x, y = _linear_problem()
    model = primer.MLP(3, 8, 2, rngs=nnx.Rngs(1))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    def loss_fn(p):
        return jnp.mean((nnx.merge(graphdef, p)(x) - y) ** 2)

    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    for _ in range(3):
        want_loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        np.testing.assert_allclose(primer.train_step(model, optimizer, x, y), want_loss, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(params)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_train_step_reduces_loss():
    x, y = _linear_problem()
    y = x @ jnp.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]])  # realisable targets
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(2))
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
    losses = [float(primer.train_step(model, optimizer, x, y)) for _ in range(200)]
    assert losses[-1] < 1e-3 * losses[0]


def test_train_step_nan_targets_match_a_step_on_the_observed_rows():
    # Whole examples missing: the step must equal a plain step on the observed examples alone.
    x, y = _linear_problem()
    missing = np.array([1, 4, 5, 9])
    y_gaps = y.at[missing].set(jnp.nan)
    keep = np.setdiff1d(np.arange(x.shape[0]), missing)
    want_model = nnx.Linear(3, 2, rngs=nnx.Rngs(3))
    got_model = nnx.Linear(3, 2, rngs=nnx.Rngs(3))
    want_opt = nnx.Optimizer(want_model, optax.adam(0.05), wrt=nnx.Param)
    got_opt = nnx.Optimizer(got_model, optax.adam(0.05), wrt=nnx.Param)
    for _ in range(3):
        want = primer.train_step(want_model, want_opt, x[keep], y[keep])
        got = primer.train_step(got_model, got_opt, x, y_gaps)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(nnx.state(got_model, nnx.Param)),
                    jax.tree.leaves(nnx.state(want_model, nnx.Param))):  # fmt: skip
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_train_step_nan_entries_match_the_closed_form_masked_gradient():
    x, y = _linear_problem()
    mask = np.random.default_rng(5).random(y.shape) < 0.3  # (N, 2) True = missing
    y_gaps = jnp.where(mask, jnp.nan, y)
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(4))
    w, b = np.asarray(model.kernel[...], np.float64), np.asarray(model.bias[...], np.float64)
    xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)
    residual = np.where(mask, 0.0, xn @ w + b - yn)  # (N, 2)
    count = np.sum(~mask)
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    loss = primer.train_step(model, optimizer, x, y_gaps)
    np.testing.assert_allclose(loss, np.sum(residual**2) / count, rtol=1e-5)
    np.testing.assert_allclose(model.kernel[...], w - 0.2 / count * xn.T @ residual,
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(model.bias[...], b - 0.2 / count * residual.sum(axis=0),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_train_step_with_no_observed_target_has_loss_zero_and_moves_nothing():
    x, _ = _linear_problem()
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(5))
    before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    loss = primer.train_step(model, optimizer, x, jnp.full((12, 2), jnp.nan))
    assert float(loss) == 0.0
    for g, w in zip(jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param))),
                    jax.tree.leaves(before)):  # fmt: skip
        np.testing.assert_array_equal(g, w)


# --- noisy_copies ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(), (4,), (2, 3)])
def test_noisy_copies_row_i_uses_the_ith_key_of_a_split(shape):
    key = jax.random.key(7)
    x = jnp.arange(np.prod(shape, dtype=int), dtype=jnp.float32).reshape(shape)
    got = primer.noisy_copies(key, x, 5)
    assert got.shape == (5, *shape) and got.dtype == jnp.float32
    keys = jax.random.split(key, 5)
    for i in range(5):
        want = x + jax.random.normal(keys[i], shape, jnp.float32)
        np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-6)


def test_noisy_copies_rows_differ():
    got = np.asarray(primer.noisy_copies(jax.random.key(0), jnp.zeros(16), 4))
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(got[i], got[j])
    assert abs(got.mean()) < 0.5 and 0.5 < got.std() < 1.5


def test_noisy_copies_keeps_dtype():
    got = primer.noisy_copies(jax.random.key(0), jnp.zeros(3, jnp.bfloat16), 2)
    assert got.dtype == jnp.bfloat16


def test_noisy_copies_rejects_bad_input():
    with pytest.raises(ValueError, match="num_copies"):
        primer.noisy_copies(jax.random.key(0), jnp.zeros(3), 0)
    with pytest.raises(TypeError, match="x"):
        primer.noisy_copies(jax.random.key(0), jnp.arange(3), 2)


def test_noisy_copies_same_key_same_copies_and_independent_rows():
    key = jax.random.key(11)
    a = np.asarray(primer.noisy_copies(key, jnp.zeros(2000), 6))
    np.testing.assert_array_equal(a, primer.noisy_copies(key, jnp.zeros(2000), 6))
    corr = np.corrcoef(a)
    assert np.max(np.abs(corr - np.eye(6))) < 6 / np.sqrt(2000)
    assert scipy.stats.kstest(a.ravel(), "norm").pvalue > 1e-6


# --- clipped_mean_grad ----------------------------------------------------------------------


def _clip_problem(seed=0, n=7):
    rng = np.random.default_rng(seed)
    model = primer.MLP(3, 4, 2, rngs=nnx.Rngs(seed))
    x = jnp.asarray(rng.normal(size=(n, 3)).astype(np.float32))
    y = jnp.asarray(3.0 * rng.normal(size=(n, 2)).astype(np.float32))
    return model, x, y


def _loop_reference(model, x, y, max_norm):
    """One example at a time in float64 NumPy-land: grads by nnx.grad, clipping by hand."""
    total = None
    for n in range(x.shape[0]):
        x_n, y_n = x[n : n + 1], y[n : n + 1]
        g = nnx.grad(lambda m, x_n=x_n, y_n=y_n: jnp.mean((m(x_n) - y_n) ** 2))(model)
        leaves = [np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(g)]
        norm = np.sqrt(sum(np.sum(leaf**2) for leaf in leaves))
        scale = 1.0 if norm <= max_norm else max_norm / norm
        leaves = [scale * leaf for leaf in leaves]
        total = leaves if total is None else [t + leaf for t, leaf in zip(total, leaves)]
    return [t / x.shape[0] for t in total]


@pytest.mark.parametrize("max_norm", [1e6, 1.0, 0.05])
def test_clipped_mean_grad_matches_a_loop_over_examples(max_norm):
    model, x, y = _clip_problem()
    got = jax.tree.leaves(primer.clipped_mean_grad(model, x, y, max_norm))
    for g, w in zip(got, _loop_reference(model, x, y, max_norm)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7)


def test_clipped_mean_grad_without_clipping_is_the_train_step_gradient():
    model, x, y = _clip_problem(1)
    want = nnx.grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
    got = primer.clipped_mean_grad(model, x, y, 1e9)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_clipped_mean_grad_matches_optax_per_example_clipping():
    model, x, y = _clip_problem(2)
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p, x_n, y_n):
        return jnp.mean((nnx.merge(graphdef, p)(x_n[None]) - y_n[None]) ** 2)

    per_example = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, x, y)
    # the peer: optax.clip_by_global_norm applied to each example's gradient tree
    clip = optax.clip_by_global_norm(0.3)
    rows = [jax.tree.map(lambda g, n=n: g[n], per_example) for n in range(x.shape[0])]
    clipped = [clip.update(r, clip.init(r))[0] for r in rows]
    mean = jax.tree.map(lambda *gs: sum(gs) / len(gs), *clipped)
    got = primer.clipped_mean_grad(model, x, y, 0.3)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(mean)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_clipped_mean_grad_zero_gradient_stays_zero_and_norm_is_bounded():
    model, x, y = _clip_problem(3)
    y = model(x)  # every example fitted exactly: every per-example gradient is 0
    got = jax.tree.leaves(primer.clipped_mean_grad(model, x, y, 0.01))
    assert all(np.all(np.asarray(g) == 0.0) for g in got)
    model, x, y = _clip_problem(4)
    got = jax.tree.leaves(primer.clipped_mean_grad(model, x, y, 0.01))
    assert np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in got)) <= 0.01 * (1 + 1e-5)


def test_clipped_mean_grad_leaves_the_model_alone_and_rejects_bad_input():
    model, x, y = _clip_problem(5)
    before = [np.asarray(p) for p in jax.tree.leaves(nnx.state(model, nnx.Param))]
    primer.clipped_mean_grad(model, x, y, 0.5)
    for b, a in zip(before, jax.tree.leaves(nnx.state(model, nnx.Param))):
        np.testing.assert_array_equal(a, b)
    for bad in (0.0, -1.0, "1", None):
        with pytest.raises(ValueError, match="max_norm"):
            primer.clipped_mean_grad(model, x, y, bad)
    with pytest.raises(ValueError, match="same N"):
        primer.clipped_mean_grad(model, x, y[:-1], 1.0)
