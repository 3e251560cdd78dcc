"""Probes of chapter 00, the JAX primer (references in :mod:`genlab.primer`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import primer
from genlab.probing import Case, Probe, call, close, exact, f32, key_from


def logsumexp_cases(rng: np.random.Generator) -> list[Case]:
    x = jnp.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    cases = [
        Case("logsumexp([0, 0])", call(jnp.array([0.0, 0.0]))),
        Case("logsumexp([1, 2, 3])", call(jnp.array([1.0, 2.0, 3.0]))),
        Case("logsumexp([1000, 1000])", call(jnp.array([1000.0, 1000.0]))),
        Case("logsumexp([-1000, -1000])", call(jnp.array([-1000.0, -1000.0]))),
        Case("logsumexp(x of shape (2, 3), axis=0)", call(x, axis=0)),
        Case("logsumexp(x of shape (2, 3)) over the default axis", call(x)),
        Case("logsumexp([-inf, 0])", call(jnp.array([-jnp.inf, 0.0]))),
        Case("logsumexp([-inf, -inf])", call(jnp.array([-jnp.inf, -jnp.inf]))),
    ]
    for shape in [(5,), (4, 6), (2, 3, 4), (3, 1, 5)]:
        axis = int(rng.integers(-len(shape), len(shape)))
        x = f32(30.0 * rng.normal(size=shape))
        cases.append(Case(f"logsumexp(x of shape {shape}, axis={axis})", call(x, axis=axis),
                          close(1e-5, 1e-5, dtype="float")))  # fmt: skip
    scales = f32(rng.choice([1.0, 1e3, 3e4], size=(4, 1)) * rng.normal(size=(4, 5)))
    extreme = scales.at[3, 1].set(-jnp.inf)
    for axis in (0, -1):
        cases.append(Case(f"logsumexp(rows on very different scales, axis={axis})",
                          call(extreme, axis=axis), close(1e-5, 1e-5)))  # fmt: skip
    partly = jnp.array([[-jnp.inf, 0.0, -jnp.inf], [-jnp.inf, -jnp.inf, 1.0],
                        [-jnp.inf, -jnp.inf, -jnp.inf]])  # fmt: skip
    for axis in (0, 1):
        cases.append(Case(f"logsumexp(slices with -inf entries, axis={axis})",
                          call(partly, axis=axis)))  # fmt: skip
    return cases


def sample_mixture_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("sample_mixture with stds = 0 (every sample is a mean)",
             call(jax.random.key(0), jnp.array([0.0, 10.0]), jnp.zeros(2), 20), exact),
        Case("sample_mixture with one component, mean 2 and std 3",
             call(jax.random.key(2), jnp.array([2.0]), jnp.array([3.0]), 20)),
    ]  # fmt: skip
    for num_components, n in [(1, 20), (3, 20), (8, 64)]:
        means = f32(5.0 * rng.normal(size=num_components))
        stds = jnp.linspace(0.25, 2.0, num_components)
        key = key_from(rng)
        cases.append(
            Case(
                f"sample_mixture(K={num_components}, n={n}) vs the pinned recipe",
                call(key, means, stds, n),
                close(1e-6, 1e-6, dtype=jnp.float32),
            )
        )
    return cases


def _regression(rng: np.random.Generator, n: int, d: int):
    return f32(rng.normal(size=d)), f32(rng.normal(size=(n, d))), f32(3.0 * rng.normal(size=n))


def mse_grad_cases(rng: np.random.Generator) -> list[Case]:
    w, x = jnp.array([1.0, 2.0]), jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cases = [
        Case("mse_grad on the hand example", call(w, x, jnp.zeros(3))),
        Case("mse_grad where x w = y exactly", call(w, x, x @ w)),
    ]
    for n, d in [(1, 4), (7, 3), (20, 5)]:
        cases.append(Case(f"mse_grad with N={n}, D={d}", call(*_regression(rng, n, d)),
                          close(1e-5, 1e-5)))  # fmt: skip
    return cases


def per_example_grads_cases(rng: np.random.Generator) -> list[Case]:
    w, x = jnp.array([1.0, 2.0]), jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cases = [Case("per_example_grads on the hand example", call(w, x, jnp.zeros(3)))]
    for n, d in [(1, 3), (2, 5), (9, 4)]:
        cases.append(Case(f"per_example_grads with N={n}, D={d}", call(*_regression(rng, n, d)),
                          close(1e-5, 1e-5)))  # fmt: skip
    return cases


def _is_jitted(function):
    return np.asarray(hasattr(function, "lower"))


def power_sum_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("power_sum is compiled by jax.jit (keep the decorator)", _is_jitted, exact),
        Case("power_sum(2, 3) = 2 + 4 + 8", call(jnp.array(2.0), 3)),
        Case("power_sum(x, n=1) = x", call(jnp.array([-1.0, 0.5, 3.0]), n=1)),
        Case("power_sum(-1, 4)", call(-jnp.ones(2), n=4)),
        Case("power_sum at 1, -1, 0, 2, -2 with n=6", call(jnp.array([1.0, -1.0, 0, 2, -2]), 6)),
    ]
    for n, shape in [(1, (4,)), (2, (3, 2)), (3, ()), (4, (5,)), (5, (2, 2, 2)), (7, (6,))]:
        x = f32(rng.uniform(-1.5, 1.5, size=shape))
        cases.append(Case(f"power_sum(x of shape {shape}, {n})", call(x, n), close(1e-5, 1e-5)))
        cases.append(Case(f"power_sum(x of shape {shape}, n={n})", call(x, n=n),
                          close(1e-5, 1e-5)))  # fmt: skip
    return cases


def _mlp_outputs(sizes, seed: int, inputs):
    def run(cls):
        model = cls(*sizes, rngs=nnx.Rngs(seed))
        count = sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
        params = {f"{layer}.{name}": getattr(getattr(model, layer), name)[...]
                  for layer in ("hidden", "out") for name in ("kernel", "bias")}  # fmt: skip
        return {"number of parameters": count, **params,
                **{f"output on x of shape {x.shape}": model(x) for x in inputs}}  # fmt: skip

    return run


def _mlp_hand_weights(cls):
    model = cls(2, 3, 1, rngs=nnx.Rngs(0))
    model.hidden.kernel[...] = jnp.array([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]])
    model.hidden.bias[...] = jnp.zeros(3)
    model.out.kernel[...] = jnp.array([[1.0], [2.0], [-1.0]])
    model.out.bias[...] = jnp.array([0.5])
    return model(jnp.array([[1.0, 3.0], [3.0, 1.0]]))


def mlp_cases(rng: np.random.Generator) -> list[Case]:
    cases = [Case("MLP(2, 3, 1) with hand-set weights (relu on the hidden layer only)",
                  _mlp_hand_weights)]  # fmt: skip
    for sizes in [(2, 3, 1), (3, 7, 2)]:
        seed = int(rng.integers(1 << 16))
        inputs = [
            f32(2.0 * rng.normal(size=shape))
            for shape in [(sizes[0],), (8, sizes[0]), (2, 3, sizes[0])]
        ]
        cases.append(Case(f"MLP{sizes} built with nnx.Rngs({seed}): parameters at "
                          "initialisation (create hidden before out) and outputs",
                          _mlp_outputs(sizes, seed, inputs), close(1e-5, 1e-5)))  # fmt: skip
    return cases


def _train_run(make_model, make_tx, x, y, steps: int):
    def run(train_step):
        model = make_model()
        optimizer = nnx.Optimizer(model, make_tx(), wrt=nnx.Param)
        losses = [train_step(model, optimizer, x, y) for _ in range(steps)]
        params = jax.tree.leaves(nnx.state(model, nnx.Param))
        return {"losses": jnp.stack(losses), "parameters after the steps": tuple(params)}

    return run


def _zero_linear():
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    model.kernel[...] = jnp.zeros((2, 1))
    model.bias[...] = jnp.zeros(1)
    return model


def train_step_cases(rng: np.random.Generator) -> list[Case]:
    x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    x_fit = f32(rng.normal(size=(32, 2)))
    cases = [
        Case("train_step: one SGD(0.1) step of a zero linear model (loss before the update, "
             "then the parameters)", _train_run(_zero_linear, lambda: optax.sgd(0.1), x,
                                                jnp.array([[1.0], [2.0]]), 1)),
        Case("train_step: 40 Adam(0.1) steps on y = 3 x0 - x1 + 0.5",
             _train_run(lambda: nnx.Linear(2, 1, rngs=nnx.Rngs(1)), lambda: optax.adam(0.1),
                        x_fit, x_fit @ jnp.array([[3.0], [-1.0]]) + 0.5, 40), close(1e-4, 1e-5)),
    ]  # fmt: skip
    x, y = f32(rng.normal(size=(16, 3))), f32(rng.normal(size=(16, 2)))
    seed = int(rng.integers(1 << 16))
    for tx_name, make_tx in [("sgd(0.05)", lambda: optax.sgd(0.05)),
                             ("adam(0.01)", lambda: optax.adam(0.01))]:  # fmt: skip
        cases.append(Case(f"train_step: 3 steps of optax.{tx_name} on an MLP(3, 8, 2)",
                          _train_run(lambda: primer.MLP(3, 8, 2, rngs=nnx.Rngs(seed)), make_tx,
                                     x, y, 3), close(1e-5, 1e-6)))  # fmt: skip
    return cases


def noisy_copies_cases(rng: np.random.Generator) -> list[Case]:
    cases = [Case("noisy_copies(key, x of shape (3,), 4)",
                  call(jax.random.key(0), jnp.array([1.0, 2.0, 3.0]), 4))]  # fmt: skip
    for shape, num_copies in [((), 1), ((2, 3), 5), ((4,), 3)]:
        key = key_from(rng)
        x = jnp.arange(float(np.prod(shape, dtype=int))).reshape(shape) - 2.0
        cases.append(
            Case(
                f"noisy_copies(key, x of shape {shape}, {num_copies}) vs the pinned recipe",
                call(key, x, num_copies),
                close(1e-6, 1e-6, dtype=jnp.float32),
            )
        )
    return cases


PROBES = [
    Probe("logsumexp", primer.logsumexp, logsumexp_cases),
    Probe("sample_mixture", primer.sample_mixture, sample_mixture_cases),
    Probe("mse_grad", primer.mse_grad, mse_grad_cases),
    Probe("per_example_grads", primer.per_example_grads, per_example_grads_cases),
    Probe("power_sum", primer.power_sum, power_sum_cases),
    Probe("MLP", primer.MLP, mlp_cases),
    Probe("train_step", primer.train_step, train_step_cases),
    Probe("noisy_copies", primer.noisy_copies, noisy_copies_cases),
]
