from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from genlab.train import History, fit, make_train_step


def linear_data(n=64):
    x = jax.random.normal(jax.random.key(0), (n, 3))
    w = jnp.array([[1.0], [-2.0], [0.5]])
    return x, x @ w + 0.3


def mse(model, batch):
    x, y = batch
    return jnp.mean((model(x) - y) ** 2)


def test_make_train_step_matches_a_manual_optax_update():
    x, y = linear_data()
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    w0, b0 = model.kernel[...], model.bias[...]
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    metrics = make_train_step(mse)(model, optimizer, (x, y))

    residual = x @ w0 + b0 - y  # closed-form gradient of the mean squared error
    grad_w = 2 * x.T @ residual / residual.size
    grad_b = 2 * residual.mean(axis=0)
    np.testing.assert_allclose(metrics["loss"], jnp.mean(residual**2), rtol=1e-5)
    np.testing.assert_allclose(model.kernel[...], w0 - 0.1 * grad_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.bias[...], b0 - 0.1 * grad_b, rtol=1e-5, atol=1e-6)


def test_make_train_step_returns_aux_metrics():
    def loss_with_aux(model, batch):
        loss = mse(model, batch)
        return loss, {"rmse": jnp.sqrt(loss)}

    x, y = linear_data()
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    metrics = make_train_step(loss_with_aux, has_aux=True)(model, optimizer, (x, y))
    np.testing.assert_allclose(metrics["rmse"] ** 2, metrics["loss"], rtol=1e-5)


def test_fit_drives_linear_regression_to_zero_loss():
    x, y = linear_data()
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
    history = fit(make_train_step(mse), model, optimizer, lambda i: (x, y), 300, progress=False)
    assert history.steps[-1] == 300 and len(history["loss"]) == 30
    assert history["loss"][0] > 100 * history.last("loss")
    np.testing.assert_allclose(model.kernel[...].ravel(), [1.0, -2.0, 0.5], atol=1e-2)
    np.testing.assert_allclose(model.bias[...], [0.3], atol=1e-2)


def test_fit_nnx_jit_step_matches_the_same_update_without_jit():
    # fit binds an nnx.jit step with nnx.cached_partial; the result must be the plain update's.
    x, y = linear_data()

    def plain_step(model, optimizer, batch):
        loss, grads = nnx.value_and_grad(mse)(model, batch)
        optimizer.update(model, grads)
        return loss

    models = []
    for step in (nnx.jit(plain_step), plain_step):
        model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
        history = fit(step, model, optimizer, lambda i: (x, y), 20, log_every=5, progress=False)
        assert int(optimizer.step[...]) == 20
        models.append((model.kernel[...], history["loss"]))
    np.testing.assert_allclose(models[0][0], models[1][0], rtol=1e-5)
    np.testing.assert_allclose(models[0][1], models[1][1], rtol=1e-5)


def test_fit_accepts_an_iterable_and_plain_loss_steps():
    seen = []

    def step(model, optimizer, batch):
        seen.append(batch)
        return 1.0 / (len(seen))

    history = fit(step, None, None, iter(range(5)), 5, log_every=2, progress=False)
    assert seen == [0, 1, 2, 3, 4]
    assert history.steps == [2, 4, 5]
    np.testing.assert_allclose(history["loss"], [1 / 2, 1 / 4, 1 / 5])


def test_fit_reports_exhausted_batches_and_bad_arguments():
    with pytest.raises(ValueError, match="batches ran out after 2 of 5 steps"):
        fit(lambda m, o, b: 0.0, None, None, [1, 2], 5, progress=False)
    with pytest.raises(ValueError, match="num_steps"):
        fit(lambda m, o, b: 0.0, None, None, [1], 0)
    with pytest.raises(ValueError, match="log_every"):
        fit(lambda m, o, b: 0.0, None, None, [1], 1, log_every=0)


def test_history_rejects_unknown_and_changing_metrics():
    history = History()
    history.log(1, {"loss": 2.0})
    with pytest.raises(KeyError, match="'acc'.*recorded: \\['loss'\\]"):
        history["acc"]
    with pytest.raises(ValueError, match="metric names changed"):
        history.log(2, {"loss": 1.0, "acc": 0.5})
