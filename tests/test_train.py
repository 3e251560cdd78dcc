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


def test_genlab_gives_one_cpu_device_per_core_unless_told_otherwise():
    import genlab

    env = {}
    genlab._cpu_devices_flag(env)
    import os

    cores = min(len(os.sched_getaffinity(0)), 8)
    assert env.get("XLA_FLAGS", "") == (f"{genlab.DEVICES_FLAG}={cores}" if cores > 1 else "")
    env = {"GENLAB_CPU_DEVICES": "1"}
    genlab._cpu_devices_flag(env)
    assert "XLA_FLAGS" not in env
    env = {"XLA_FLAGS": f"--xla_dump_to=/x {genlab.DEVICES_FLAG}=3", "GENLAB_CPU_DEVICES": "2"}
    genlab._cpu_devices_flag(env)
    assert env["XLA_FLAGS"].endswith("=3"), "a user's own XLA_FLAGS decide"
    if cores > 1:
        assert len(jax.devices()) == cores, "the test run imports genlab before JAX starts"


def _regression(seed=0):
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
    return model, optimizer


def test_data_parallel_fit_makes_the_same_updates_and_returns_to_one_device():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
    y = x @ jnp.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]]) + 0.25
    key = jax.random.key(0)

    def loss_fn(model, batch):
        x, y, key = batch
        noise = 0.0 * jax.random.normal(key, ())  # a key in the batch is never split
        return jnp.mean((model(x) - y) ** 2) + noise

    step = make_train_step(loss_fn)
    runs = {}
    for data_parallel in (False, True):
        model, optimizer = _regression()
        history = fit(step, model, optimizer, lambda i: (x, y, key), 60,
                      progress=False, data_parallel=data_parallel)  # fmt: skip
        runs[data_parallel] = (history["loss"], model.kernel[...], model.bias[...])
        for leaf in jax.tree.leaves(nnx.state((model, optimizer))):
            assert leaf.sharding.device_set == {jax.devices()[0]}, "back on the first device"
    for single, parallel in zip(runs[False], runs[True], strict=True):
        np.testing.assert_allclose(parallel, single, rtol=1e-5, atol=1e-6)
    assert runs[True][0][-1] < 0.3 * runs[True][0][0], "the loss must fall"


def test_data_parallel_leaves_indivisible_arrays_whole():
    from genlab.train import _DataParallel

    layout = _DataParallel()
    n = len(layout.devices)
    odd, even = jnp.ones((2 * n + 1, 2)), jnp.ones((2 * n, 2))
    placed = layout.split({"odd": odd, "even": even, "key": jax.random.key(1), "n": 3})
    assert placed["odd"] is odd and placed["n"] == 3
    assert placed["even"].sharding.device_set == set(layout.devices)


def test_progress_outside_a_terminal_is_one_plain_line_with_the_final_state(capsys):
    fit(lambda m, o, b: {"loss": jnp.float32(b)}, None, None, lambda i: i, 30, log_every=10,
        desc="toy")  # fmt: skip
    err = capsys.readouterr().err
    assert err.strip() == err.strip().splitlines()[-1], err  # one line
    assert err.startswith("toy: 100% 30/30 [") and "loss=29" in err, err


def test_progress_in_an_executed_notebook_shows_the_final_state_not_zero(tmp_path):
    """nbclient keeps what the notebook shows after the run: the bar's last update."""
    import nbformat
    from nbclient import NotebookClient

    source = (
        "import jax.numpy as jnp\n"
        "from genlab.train import fit\n"
        "history = fit(lambda m, o, b: {'loss': jnp.float32(b)}, None, None, lambda i: i, 50,\n"
        "              log_every=10, desc='toy')"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    shown = [o for o in nb.cells[0].outputs if o.get("output_type") == "display_data"]
    assert len(shown) == 1, nb.cells[0].outputs
    text = shown[0]["data"]["text/plain"]
    assert text.startswith("toy: 100% 50/50 [") and "loss=49" in text, text
    assert "0%" not in text.replace("100%", ""), text
    assert "100%" in shown[0]["data"]["text/html"]
