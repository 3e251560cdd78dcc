"""Probes of chapter 00, the JAX primer (references in :mod:`genlab.primer`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import check, primer
from genlab.probing import (
    AUTODIFF,
    Case,
    Probe,
    call,
    close,
    exact,
    f32,
    judged_alone,
    key_from,
)

# The exercise is to repair the formula: JAX's own log-sum-exp (and the softmaxes that contain
# one) would skip it.
LIBRARY_LOGSUMEXP = ("jax.nn.logsumexp", "jax.scipy.special.logsumexp", "jax.nn.log_softmax",
                     "jax.nn.softmax")  # fmt: skip


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


# --- statistics on the trusted side (sample_mixture, noisy_copies) ---------------------------
# Correct samplers pass every test below except with probability < 1e-6 per test: means within 6
# standard errors, Kolmogorov-Smirnov distances sqrt(n) D < 3 (P < 3e-8). The bugs they catch are
# far outside (variance used as std, a missing component, shared noise: see tests/mutants).

MEAN_SE = 6.0
KS_LIMIT = 3.0


def _normal_cdf(z):
    from scipy.special import ndtr

    return ndtr(z)


def ks_distance(samples, cdf) -> float:
    """sqrt(n) times the Kolmogorov-Smirnov distance between ``samples`` and the CDF ``cdf``."""
    u = np.sort(cdf(np.asarray(samples, np.float64).ravel()))
    n = u.size
    i = np.arange(1, n + 1)
    return float(np.sqrt(n) * max(np.max(i / n - u), np.max(u - (i - 1) / n)))


def _standard_normal_checks(where: str, noise) -> None:
    """``noise`` (any shape) must look like independent N(0, 1) draws."""
    z = np.asarray(noise, np.float64).ravel()
    n = z.size
    check.is_true(np.all(np.isfinite(z)), f"{where}: the noise holds inf or NaN")
    check.is_true(abs(z.mean()) < MEAN_SE / np.sqrt(n),
                  f"{where}: the noise has mean {z.mean():.3g}; standard normal noise over {n} "
                  f"values has mean 0 +- {MEAN_SE / np.sqrt(n):.2g}")  # fmt: skip
    limit = MEAN_SE * np.sqrt(2.0 / n)
    check.is_true(abs(z.var() - 1.0) < limit,
                  f"{where}: the noise has variance {z.var():.3g}; standard normal noise over {n} "
                  f"values has variance 1 +- {limit:.2g}")  # fmt: skip
    ks = ks_distance(z, _normal_cdf)
    check.is_true(ks < KS_LIMIT, f"{where}: the noise is not standard normal (Kolmogorov-Smirnov "
                                 f"sqrt(n) D = {ks:.2f}, expected below {KS_LIMIT})")  # fmt: skip


def _samples_checks(where: str, got, n: int) -> np.ndarray:
    check.shape(where, got, (n,))
    check.dtype(where, got, np.float32)
    check.finite(where, got)
    return np.asarray(got, np.float64)


def _separated_components(means, stds, n: int):
    """Compare: components far apart, so each sample's component is its nearest mean."""
    means, stds = np.asarray(means, np.float64), np.asarray(stds, np.float64)
    k = means.size

    @judged_alone
    def compare(got, want, label):
        x = _samples_checks(label, got, n)
        component = np.argmin(np.abs(x[:, None] - means[None, :]), axis=1)  # (n,)
        counts = np.bincount(component, minlength=k)
        limit = MEAN_SE * np.sqrt((1 / k) * (1 - 1 / k) / n)
        for j in range(k):
            check.is_true(
                abs(counts[j] / n - 1 / k) < limit,
                f"{label}: component {j} (mean {means[j]:g}) drew {counts[j] / n:.4f} "
                f"of the samples; equal weights give {1 / k:.4f} +- {limit:.2g}",
            )
        for j in range(k):
            z = (x[component == j] - means[j]) / stds[j]
            spread = np.std(x[component == j])
            message = (
                f"{label}: component {j}'s samples have standard deviation {spread:.4g}, "
                f"expected {stds[j]:g} (stds are standard deviations, not variances)"
            )
            check.is_true(abs(z.var() - 1.0) < MEAN_SE * np.sqrt(2.0 / z.size), message)
            _standard_normal_checks(f"{label}, component {j} standardised", z)

    return compare


def _mixture_distribution(means, stds, n: int):
    """Compare: moments and the Kolmogorov-Smirnov distance to the mixture's CDF."""
    means, stds = np.asarray(means, np.float64), np.asarray(stds, np.float64)
    mean = means.mean()
    variance = np.mean(stds**2 + means**2) - mean**2

    def cdf(x):
        return np.mean(_normal_cdf((x[:, None] - means) / stds), axis=1)

    @judged_alone
    def compare(got, want, label):
        x = _samples_checks(label, got, n)
        se = np.sqrt(variance / n)
        check.is_true(abs(x.mean() - mean) < MEAN_SE * se,
                      f"{label}: sample mean {x.mean():.4g}, the mixture's mean is {mean:.4g} "
                      f"+- {MEAN_SE * se:.2g}")  # fmt: skip
        fourth = np.mean((x - x.mean()) ** 4)
        se_var = np.sqrt(max(fourth - x.var() ** 2, 0.0) / n)
        check.is_true(abs(x.var() - variance) < MEAN_SE * se_var + 1e-6,
                      f"{label}: sample variance {x.var():.4g}, the mixture's variance is "
                      f"{variance:.4g} +- {MEAN_SE * se_var:.2g}")  # fmt: skip
        ks = ks_distance(x, cdf)
        check.is_true(ks < KS_LIMIT, f"{label}: the samples do not follow the mixture "
                                     f"(Kolmogorov-Smirnov sqrt(n) D = {ks:.2f}, expected below "
                                     f"{KS_LIMIT})")  # fmt: skip

    return compare


def _means_only(means, n: int):
    @judged_alone
    def compare(got, want, label):
        x = _samples_checks(label, got, n)
        hits = [float(np.mean(x == m)) for m in means]
        check.is_true(
            np.all(np.isin(x, means)),
            f"{label}: with stds = 0 every sample must be one of the means {means}",
        )
        limit = MEAN_SE * np.sqrt(0.25 / n)
        check.is_true(all(abs(h - 0.5) < limit for h in hits),
                      f"{label}: the two components were drawn with frequencies {hits}; "
                      f"expected 0.5 +- {limit:.2g} each")  # fmt: skip

    return compare


@judged_alone
def _same_key_twice(got, want, label):
    """Compare: (call with key a, call with key a again, call with key b)."""
    first, again, other = got
    check.equal(f"{label}: the same key twice", again, first)
    check.is_true(not np.array_equal(first, other), f"{label}: two different keys gave "
                                                     "identical outputs")  # fmt: skip


def sample_mixture_cases(rng: np.random.Generator) -> list[Case]:
    means2 = jnp.array([0.0, 10.0])
    key_a, key_b = key_from(rng), key_from(rng)
    cases = [
        Case("sample_mixture(key, means (0, 10), stds 0, n=4000)",
             call(key_from(rng), means2, jnp.zeros(2), 4000), _means_only([0.0, 10.0], 4000)),
        Case("sample_mixture: the same key gives the same samples, another key others",
             lambda f: (f(key_a, means2, jnp.ones(2), 50), f(key_a, means2, jnp.ones(2), 50),
                        f(key_b, means2, jnp.ones(2), 50)), _same_key_twice),
        Case("sample_mixture(key, means (2,), stds (3,), n=1)",
             call(key_from(rng), jnp.array([2.0]), jnp.array([3.0]), 1),
             lambda got, want, label: _samples_checks(label, got, 1)),
    ]  # fmt: skip
    order = rng.permutation(3)
    means = f32(30.0 * (np.arange(3) - 1) + rng.uniform(-3, 3))
    stds = f32(np.array([0.5, 1.0, 2.0])[order])
    n = 30_000
    cases.append(Case(f"sample_mixture(3 components far apart, stds {np.asarray(stds)}, n={n})",
                      call(key_from(rng), means, stds, n),
                      _separated_components(means, stds, n)))  # fmt: skip
    for k in (1, 4):
        means = f32(3.0 * rng.normal(size=k))
        stds = f32(rng.uniform(0.3, 2.0, size=k))
        n = 20_000
        cases.append(Case(f"sample_mixture(K={k} overlapping components, n={n})",
                          call(key_from(rng), means, stds, n),
                          _mixture_distribution(means, stds, n)))  # fmt: skip
    return cases


def mixture_moments_cases(rng: np.random.Generator) -> list[Case]:
    tight = close(1e-5, 1e-5, dtype="float")
    cases = [
        Case("mixture_moments of one component", call(f32([2.0]), f32([3.0])), tight),
        Case("mixture_moments of two points (stds = 0)", call(f32([0.0, 10.0]), f32([0.0, 0.0])),
             tight),
    ]  # fmt: skip
    for k in (2, 3, 5, 8):
        means, stds = f32(rng.normal(scale=3.0, size=k)), f32(rng.uniform(0.1, 2.5, size=k))
        cases.append(Case(f"mixture_moments with K={k} random components", call(means, stds),
                          close(1e-4, 1e-5)))  # fmt: skip
    means, stds = f32(rng.normal(size=4)), f32(rng.uniform(3.0, 5.0, size=4))
    cases.append(Case("mixture_moments with wide, overlapping components", call(means, stds),
                      close(1e-4, 1e-5)))  # fmt: skip
    means, stds = f32(rng.normal(size=6) + 10.0 * np.arange(6)), f32(rng.uniform(0.05, 0.5, 6))
    cases.append(Case("mixture_moments with components far apart, stds below 1",
                      call(means, stds), close(1e-4, 1e-5)))  # fmt: skip
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


# --- MLP: found by shapes, never by construction order ------------------------------------

ROLES = ("hidden kernel", "hidden bias", "out kernel", "out bias")


def _roles(sizes):
    d_in, h, d_out = sizes
    return {(d_in, h): ROLES[0], (h,): ROLES[1], (h, d_out): ROLES[2], (d_out,): ROLES[3]}


def _mlp_parameters(model, sizes):
    """``({role: array}, leaves, treedef)`` of the model's nnx.Params, each found by its shape."""
    roles = _roles(sizes)
    leaves, treedef = jax.tree.flatten(nnx.state(model, nnx.Param))
    shapes = [tuple(leaf.shape) for leaf in leaves]
    if sorted(shapes) != sorted(roles):
        raise ValueError(f"MLP{sizes} should hold exactly 4 nnx.Param arrays of shapes "
                         f"{sorted(roles)}; it holds {sorted(shapes)}")  # fmt: skip
    return {roles[shape]: leaf for shape, leaf in zip(shapes, leaves)}, leaves, treedef


def _with_weights(sizes, weights: dict, inputs):
    """Run: build the MLP, overwrite its parameters (found by shape) and call it on inputs."""

    def run(cls):
        model = cls(*sizes, rngs=nnx.Rngs(0))
        _, leaves, treedef = _mlp_parameters(model, sizes)
        roles = _roles(sizes)
        new = [weights[roles[tuple(leaf.shape)]] for leaf in leaves]
        nnx.update(model, jax.tree.unflatten(treedef, new))
        return {f"output on x of shape {x.shape}": model(x) for x in inputs}

    return run


def _init_run(sizes, seed: int):
    def run(cls):
        builds = {}
        for name, s in (("first", seed), ("second", seed), ("other seed", seed + 1)):
            found, _, _ = _mlp_parameters(cls(*sizes, rngs=nnx.Rngs(s)), sizes)
            builds[name] = found
        return builds

    return run


def _init_compare(sizes):
    fan_in = {ROLES[0]: sizes[0], ROLES[2]: sizes[1]}

    @judged_alone
    def compare(got, want, label):
        for role in ROLES:
            check.equal(f"{label}: {role}, built twice from nnx.Rngs with one seed",
                        got["second"][role], got["first"][role])  # fmt: skip
        for role, n in fan_in.items():
            kernel = np.asarray(got["first"][role], np.float64)
            spread = kernel.std() * np.sqrt(n)
            check.is_true(0.1 < spread < 10.0,
                          f"{label}: the {role} was not initialised like nnx.Linear's default "
                          f"(standard deviation {kernel.std():.3g}, expected about "
                          f"{1 / np.sqrt(n):.3g})")  # fmt: skip
            check.is_true(not np.array_equal(got["first"][role], got["other seed"][role]),
                          f"{label}: the {role} is the same for two seeds: initialise the layers "
                          "from rngs")  # fmt: skip

    return compare


def mlp_cases(rng: np.random.Generator) -> list[Case]:
    hand = {ROLES[0]: jnp.array([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]]), ROLES[1]: jnp.zeros(3),
            ROLES[2]: jnp.array([[1.0], [2.0], [-1.0]]), ROLES[3]: jnp.array([0.5])}  # fmt: skip
    x = jnp.array([[1.0, 3.0], [3.0, 1.0]])
    cases = [Case("MLP(2, 3, 1) with hand-set weights (relu on the hidden layer only)",
                  _with_weights((2, 3, 1), hand, [x]))]  # fmt: skip
    for sizes in [(3, 7, 2), (5, 4, 1)]:
        weights = {role: f32(rng.normal(size=shape)) for shape, role in _roles(sizes).items()}
        inputs = [f32(2.0 * rng.normal(size=(*batch, sizes[0]))) for batch in [(), (8,), (2, 3)]]
        cases.append(Case(f"MLP{sizes} with random weights copied in: outputs",
                          _with_weights(sizes, weights, inputs), close(1e-5, 1e-5)))  # fmt: skip
    sizes = (4, 6, 3)
    seed = int(rng.integers(1 << 16))
    cases.append(Case(f"MLP{sizes} initialised from nnx.Rngs({seed})", _init_run(sizes, seed),
                      _init_compare(sizes)))  # fmt: skip
    return cases


# --- train_step: judged by what the step does to the parameters ---------------------------


def _sgd_linear_run(x, y, seed: int, learning_rate: float):
    def run(train_step):
        model = nnx.Linear(x.shape[1], y.shape[1], rngs=nnx.Rngs(seed))
        before = {"kernel": model.kernel[...], "bias": model.bias[...]}
        optimizer = nnx.Optimizer(model, optax.sgd(learning_rate), wrt=nnx.Param)
        loss = train_step(model, optimizer, x, y)
        return {"loss": loss, "before": before,
                "after": {"kernel": model.kernel[...], "bias": model.bias[...]}}  # fmt: skip

    return run


def _sgd_linear_compare(x, y, learning_rate: float):
    xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)

    @judged_alone
    def compare(got, want, label):
        w = np.asarray(got["before"]["kernel"], np.float64)
        b = np.asarray(got["before"]["bias"], np.float64)
        observed = ~np.isnan(yn)  # (N, D_out) NaN targets are missing
        count = max(int(observed.sum()), 1)
        residual = np.where(observed, xn @ w + b - np.nan_to_num(yn), 0.0)  # (N, D_out)
        loss = np.sum(residual**2) / count
        grads = {"kernel": 2.0 / count * xn.T @ residual,
                 "bias": 2.0 / count * residual.sum(axis=0)}  # fmt: skip
        check.shape(f"{label}: the returned loss", got["loss"], ())
        after = got["after"]
        w1, b1 = np.asarray(after["kernel"], np.float64), np.asarray(after["bias"], np.float64)
        check.finite(f"{label}: the loss", got["loss"])
        check.finite(f"{label}: the kernel after the step", w1)
        check.finite(f"{label}: the bias after the step", b1)
        loss_after = np.sum(np.where(observed, xn @ w1 + b1 - np.nan_to_num(yn), 0.0) ** 2) / count
        value = float(got["loss"])
        if not np.isclose(value, loss, rtol=1e-4, atol=1e-6):
            hint = (" (that is the loss after the update)"
                    if np.isclose(value, loss_after, rtol=1e-4) else "")  # fmt: skip
            check.is_true(False, f"{label}: returned loss {value:.6g}{hint}; the mean squared "
                                 f"error before the update is {loss:.6g}")  # fmt: skip
        for name, grad in grads.items():
            step = -learning_rate * grad
            moved = np.asarray(after[name], np.float64) - np.asarray(got["before"][name])
            if np.allclose(moved, step, rtol=1e-3, atol=1e-6):
                continue
            if not np.any(step):
                biggest = float(np.max(np.abs(moved)))
                check.is_true(False, f"{label}: no target is observed, so the {name} must not "
                                     f"move; it moved by up to {biggest:.3g}")  # fmt: skip
            ratio = float(np.sum(moved * step) / np.sum(step * step))
            check.is_true(False, f"{label}: the {name} moved by {ratio:.3g} times the SGD step "
                                 "-learning_rate * dL/d" + name + " (1 expected; 0 means no "
                                 "update, -1 gradient ascent, 2 two updates, the number of "
                                 "entries a sum instead of a mean)")  # fmt: skip

    return compare


class FrozenScaleLinear(nnx.Module):
    """A linear layer whose output is multiplied by a fixed scale held in a non-Param variable."""

    def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(d_in, d_out, rngs=rngs)
        self.scale = nnx.Variable(jnp.array(2.0))  # not an nnx.Param: training must not move it

    def __call__(self, x):
        return self.linear(x) * self.scale[...]


def _parameters_run(x, y, seed: int):
    def run(train_step):
        model = FrozenScaleLinear(x.shape[1], y.shape[1], rngs=nnx.Rngs(seed))
        optimizer = nnx.Optimizer(model, optax.sgd(0.05), wrt=nnx.Param)
        before = jax.tree.map(jnp.copy, nnx.state(model))
        for _ in range(2):
            train_step(model, optimizer, x, y)
        return {"before": nnx.to_pure_dict(before), "after": nnx.to_pure_dict(nnx.state(model))}

    return run


def _parameters_compare(got, want, label):
    for name in ("kernel", "bias"):
        after, before = got["after"]["linear"][name], got["before"]["linear"][name]
        check.is_true(
            not np.array_equal(after, before),
            f"{label}: the parameter linear.{name} did not change in two steps",
        )
    check.equal(f"{label}: the non-Param variable `scale` (it must not be trained)",
                got["after"]["scale"], got["before"]["scale"])  # fmt: skip
    close(1e-4, 1e-5)(got["after"], want["after"], f"{label}: parameters after two SGD steps")


def _trajectory_run(make_model, make_tx, x, y, steps: int):
    def run(train_step):
        model = make_model()
        optimizer = nnx.Optimizer(model, make_tx(), wrt=nnx.Param)
        losses = [train_step(model, optimizer, x, y) for _ in range(steps)]
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        return {"losses": jnp.stack(losses), "parameters after the steps": params}

    return run


FIT_STEPS, FIT_RATIO = 15, 0.4  # measured ratios 0.03-0.12 over six seeds


def _loss_falls(got, want, label):
    losses = np.asarray(got["losses"], np.float64)
    check.shape(f"{label}: the losses", losses, (FIT_STEPS,))
    check.allclose(f"{label}: the first loss (before any update)", losses[0],
                   want["losses"][0], rtol=1e-4)  # fmt: skip
    check.finite(f"{label}: the losses", losses)
    check.is_true(losses[-1] < FIT_RATIO * losses[0],
                  f"{label}: the loss went from {losses[0]:.4g} to {losses[-1]:.4g} in "
                  f"{FIT_STEPS} steps; a working step divides it by more than "
                  f"{1 / FIT_RATIO:.3g}")  # fmt: skip


def train_step_cases(rng: np.random.Generator) -> list[Case]:
    x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    y = jnp.array([[1.0], [2.0]])
    cases = [Case("train_step: one SGD(0.1) step of nnx.Linear(2, 1) on the visible data",
                  _sgd_linear_run(x, y, 0, 0.1), _sgd_linear_compare(x, y, 0.1))]  # fmt: skip
    x, y = f32(rng.normal(size=(8, 3))), f32(rng.normal(size=(8, 2)))
    seed = int(rng.integers(1 << 16))
    label = f"train_step: one SGD(0.3) step of nnx.Linear(3, 2) from nnx.Rngs({seed})"
    cases.append(Case(label, _sgd_linear_run(x, y, seed, 0.3), _sgd_linear_compare(x, y, 0.3)))
    cases.append(Case("train_step: two SGD steps of a linear layer scaled by a non-Param variable",
                      _parameters_run(x, y, seed), _parameters_compare))  # fmt: skip
    x, y = f32(rng.normal(size=(16, 3))), f32(rng.normal(size=(16, 2)))
    seed = int(rng.integers(1 << 16))
    for tx_name, make_tx in [("sgd(0.05, momentum=0.9)", lambda: optax.sgd(0.05, momentum=0.9)),
                             ("adamw(0.01, weight_decay=0.1)",
                              lambda: optax.adamw(0.01, weight_decay=0.1))]:  # fmt: skip
        cases.append(Case(f"train_step: 2 steps of optax.{tx_name} on an MLP(3, 8, 2)",
                          _trajectory_run(lambda: primer.MLP(3, 8, 2, rngs=nnx.Rngs(seed)),
                                          make_tx, x, y, 2), close(1e-4, 1e-5)))  # fmt: skip
    # Missing targets (NaN): a random third of the entries, whole examples, every entry.
    x, y = f32(rng.normal(size=(10, 3))), rng.normal(size=(10, 2))
    y[rng.random(size=y.shape) < 0.35] = np.nan
    y[rng.choice(10, size=2, replace=False)] = np.nan
    y, seed = f32(y), int(rng.integers(1 << 16))
    gaps = int(np.isnan(y).sum())
    cases.append(Case(f"train_step: one SGD(0.2) step of nnx.Linear(3, 2) with {gaps} of 20 "
                      "targets missing (NaN)",
                      _sgd_linear_run(x, y, seed, 0.2),
                      _sgd_linear_compare(x, y, 0.2)))  # fmt: skip
    y_none = f32(np.full((4, 2), np.nan))
    cases.append(Case("train_step: one SGD(0.2) step with every target missing",
                      _sgd_linear_run(x[:4], y_none, seed, 0.2),
                      _sgd_linear_compare(x[:4], y_none, 0.2)))  # fmt: skip
    x, y = f32(rng.normal(size=(16, 3))), rng.normal(size=(16, 2))
    y[rng.random(size=y.shape) < 0.25] = np.nan
    y, seed = f32(y), int(rng.integers(1 << 16))
    cases.append(Case("train_step: 2 steps of optax.adam(0.01) on an MLP(3, 8, 2), a quarter of "
                      "the targets missing (NaN)",
                      _trajectory_run(lambda: primer.MLP(3, 8, 2, rngs=nnx.Rngs(seed)),
                                      lambda: optax.adam(0.01), x, y, 2),
                      close(1e-4, 1e-5)))  # fmt: skip
    x = f32(rng.uniform(-2, 2, size=(64, 2)))
    y = jnp.sin(x[:, :1]) + 0.5 * x[:, 1:] ** 2  # (64, 1)
    seed = int(rng.integers(1 << 16))
    cases.append(Case(f"train_step: {FIT_STEPS} Adam(0.05) steps of an MLP(2, 16, 1) on fixed "
                      "data: the loss falls",
                      _trajectory_run(lambda: primer.MLP(2, 16, 1, rngs=nnx.Rngs(seed)),
                                      lambda: optax.adam(0.05), x, y, FIT_STEPS),
                      _loss_falls))  # fmt: skip
    return cases


# --- noisy_copies: judged by the properties of the noise ------------------------------------


def _noise_compare(x, num_copies: int):
    x64 = np.asarray(x, np.float64)

    @judged_alone
    def compare(got, want, label):
        check.shape(label, got, (num_copies, *x.shape))
        check.dtype(label, got, x.dtype)
        noise = np.asarray(got, np.float64) - x64  # (C, ...)
        rows = noise.reshape(num_copies, -1)
        for i in range(num_copies):
            for j in range(i + 1, num_copies):
                check.is_true(
                    not np.array_equal(rows[i], rows[j]),
                    f"{label}: copies {i} and {j} are identical (one key reused?)",
                )
        _standard_normal_checks(f"{label}: copies minus x", noise)
        size = rows.shape[1]
        if size >= 100:
            for i in range(num_copies):
                _standard_normal_checks(f"{label}: copy {i} minus x", rows[i])
            corr = np.corrcoef(rows)
            limit = MEAN_SE / np.sqrt(size)
            worst = np.max(np.abs(corr - np.eye(num_copies)))
            check.is_true(worst < limit,
                          f"{label}: the noises of two copies have correlation {worst:.3f}; "
                          f"independent draws give 0 +- {limit:.2g}")  # fmt: skip

    return compare


def noisy_copies_cases(rng: np.random.Generator) -> list[Case]:
    x = jnp.array([1.0, 2.0, 3.0])
    key_a, key_b = key_from(rng), key_from(rng)
    cases = [
        Case("noisy_copies(key, x of shape (3,), 4)", call(key_from(rng), x, 4),
             _noise_compare(x, 4)),
        Case("noisy_copies: the same key gives the same copies, another key others",
             lambda f: (f(key_a, x, 3), f(key_a, x, 3), f(key_b, x, 3)), _same_key_twice),
        Case("noisy_copies(key, a scalar x, 1)", call(key_from(rng), jnp.float32(-2.0), 1),
             _noise_compare(jnp.float32(-2.0), 1)),
    ]  # fmt: skip
    for shape, num_copies, scale in [((400,), 6, 0.0), ((4, 10, 12), 5, 100.0)]:
        x = f32(scale * rng.normal(size=shape))
        cases.append(
            Case(
                f"noisy_copies(key, x of shape {shape}, {num_copies})",
                call(key_from(rng), x, num_copies),
                _noise_compare(x, num_copies),
            )
        )
    x = jnp.asarray(rng.normal(size=(300,)), jnp.float16)
    cases.append(Case("noisy_copies(key, float16 x of shape (300,), 3) keeps the dtype",
                      call(key_from(rng), x, 3), _noise_compare(x, 3)))  # fmt: skip
    return cases


# --- clipped_mean_grad (challenge) ------------------------------------------------------------


def _path_name(path) -> str:
    return jax.tree_util.keystr(path).replace(".value", "").replace("']['", ".").strip("[']")


def _grad_dict(tree) -> dict:
    """A gradient tree (nnx.State or nested dict) as {"hidden.kernel": array, ...}."""
    return {_path_name(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _clipped_run(make_model, x, y, max_norm, exact_example: bool = False):
    def run(clipped_mean_grad):
        model = make_model()
        targets = y.at[0].set(model(x[:1])[0]) if exact_example else y
        before = _grad_dict(nnx.state(model, nnx.Param))
        grads = clipped_mean_grad(model, x, targets, max_norm)
        after = _grad_dict(nnx.state(model, nnx.Param))
        unchanged = {name: after[name] - before[name] for name in before}
        return {"gradient": _grad_dict(grads), "parameters after minus before": unchanged}

    return run


def clipped_mean_grad_cases(rng: np.random.Generator) -> list[Case]:
    seed = int(rng.integers(1 << 16))
    x, y = f32(rng.normal(size=(4, 3))), f32(2.0 * rng.normal(size=(4, 2)))

    def mlp():
        return primer.MLP(3, 5, 2, rngs=nnx.Rngs(seed))

    cases = []
    for max_norm, what in [(1e6, "no example clipped"), (2.0, "moderate clipping"),
                           (0.05, "strong clipping")]:  # fmt: skip
        cases.append(Case(f"clipped_mean_grad(MLP(3, 5, 2), N=4, max_norm={max_norm}): {what}",
                          _clipped_run(mlp, x, y, max_norm), close(1e-4, 1e-6)))  # fmt: skip
    cases.append(
        Case(
            "clipped_mean_grad(max_norm=0.05) where example 0 is fitted exactly "
            "(its gradient is 0: no NaN)",
            _clipped_run(mlp, x, y, 0.05, exact_example=True),
            close(1e-4, 1e-6),
        )
    )
    x2, y2 = f32(rng.normal(size=(5, 4))), f32(rng.normal(size=(5, 1)))
    cases.append(Case("clipped_mean_grad(nnx.Linear(4, 1), N=5, max_norm=0.5)",
                      _clipped_run(lambda: nnx.Linear(4, 1, rngs=nnx.Rngs(seed)), x2, y2, 0.5),
                      close(1e-4, 1e-6)))  # fmt: skip
    for bad in (0.0, -1.0):
        cases.append(Case(f"clipped_mean_grad(max_norm={bad}) raises ValueError",
                          _clipped_run(mlp, x, y, bad), raises=(ValueError,)))  # fmt: skip
    return cases


PROBES = [
    Probe("logsumexp", primer.logsumexp, logsumexp_cases, forbidden=LIBRARY_LOGSUMEXP),
    Probe("sample_mixture", primer.sample_mixture, sample_mixture_cases),
    Probe("mixture_moments", primer.mixture_moments, mixture_moments_cases),
    Probe("mse_grad", primer.mse_grad, mse_grad_cases, forbidden=AUTODIFF),
    Probe("per_example_grads", primer.per_example_grads, per_example_grads_cases),
    Probe("power_sum", primer.power_sum, power_sum_cases),
    Probe("MLP", primer.MLP, mlp_cases),
    Probe("train_step", primer.train_step, train_step_cases),
    Probe("noisy_copies", primer.noisy_copies, noisy_copies_cases),
    Probe("clipped_mean_grad", primer.clipped_mean_grad, clipped_mean_grad_cases),
]
