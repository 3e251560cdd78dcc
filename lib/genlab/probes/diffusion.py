"""Probes of chapter 05, diffusion and flow matching (references in :mod:`genlab.diffusion`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import check, data, diffusion
from genlab.probing import Case, Probe, call, close, exact, f32, judged_alone, key_from

T_PROBE = 50


def _schedule(num_steps: int = T_PROBE):
    betas = diffusion.linear_beta_schedule(num_steps, 2e-3, 0.3)
    return betas, diffusion.alpha_bars(betas)


def _eps_model(weight: float, num_steps: int = T_PROBE):
    """A fixed "network" of any data shape that depends on each example's step t [B]."""

    def model(x, t):
        if t.shape != x.shape[:1]:
            raise ValueError(
                f"the model takes one step per example, t [B] = [{x.shape[0]}], "
                f"got t of shape {t.shape}"
            )
        shift = (t.astype(jnp.float32) / num_steps).reshape(t.shape + (1,) * (x.ndim - 1))
        return jnp.tanh(weight * x + shift)

    return model


# --- section 1: the forward process -----------------------------------------------------------


def linear_beta_schedule_cases(rng: np.random.Generator) -> list[Case]:
    f32_close = close(1e-6, 1e-8, dtype=jnp.float32)
    cases = [
        Case("linear_beta_schedule(1000) (the DDPM defaults)", call(1000), f32_close),
        Case("linear_beta_schedule(5, 0.1, 0.5)", call(5, 0.1, 0.5), f32_close),
        Case("linear_beta_schedule(1) = [beta_start]", call(1), f32_close),
        Case("linear_beta_schedule(4, beta_start=0.3, beta_end=0.3)",
             call(4, beta_start=0.3, beta_end=0.3), f32_close),
    ]  # fmt: skip
    for _ in range(2):
        n = int(rng.integers(2, 300))
        lo, hi = sorted(np.round(rng.uniform(1e-4, 0.4, size=2), 4))
        cases.append(Case(f"linear_beta_schedule({n}, beta_start={lo}, beta_end={hi})",
                          call(n, beta_start=float(lo), beta_end=float(hi)),
                          f32_close))  # fmt: skip
    return cases


def alpha_bars_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("alpha_bars([0.5, 0.5, 0.5]) = [1/2, 1/4, 1/8]", call(jnp.array([0.5, 0.5, 0.5]))),
        Case("alpha_bars(one step [0.1])", call(jnp.array([0.1]))),
        Case("alpha_bars of the DDPM schedule (T = 1000)",
             call(diffusion.linear_beta_schedule(1000)), close(1e-4, 1e-9, dtype=jnp.float32)),
        Case("alpha_bars with a step of beta = 1 (all later entries are 0)",
             call(jnp.array([0.2, 1.0, 0.3]))),
    ]  # fmt: skip
    betas = f32(rng.uniform(0.0, 0.3, size=40))
    cases.append(Case("alpha_bars(random betas (40,))", call(betas), close(1e-5, 1e-8)))
    return cases


def q_sample_cases(rng: np.random.Generator) -> list[Case]:
    _, ab = _schedule()
    cases = [
        Case("q_sample(x0 (2, 3), t = [0, T - 1])",
             call(jax.random.key(0), jnp.ones((2, 3)), jnp.array([0, T_PROBE - 1]), ab)),
        Case("q_sample(x0 (3, 3), t = [0, 10, 40]) (one step per row, B = D)",
             call(jax.random.key(1), jnp.arange(9.0).reshape(3, 3), jnp.array([0, 10, 40]), ab)),
        Case("q_sample with alpha_bars = [1, 0] (pure data, pure noise)",
             call(jax.random.key(2), jnp.full((2, 2), 3.0), jnp.array([0, 1]),
                  jnp.array([1.0, 0.0]))),
    ]  # fmt: skip
    for shape in [(6, 2), (4, 3, 2), (1, 5), (5, 8, 8)]:
        x0 = f32(rng.normal(size=shape))
        t = jnp.asarray(rng.integers(0, T_PROBE, size=shape[0]), jnp.int32)
        cases.append(Case(f"q_sample(x0 {shape}, random t [{shape[0]}]) vs the pinned recipe",
                          call(key_from(rng), x0, t, ab),
                          close(1e-5, 1e-5, dtype=jnp.float32)))  # fmt: skip
    return cases


# --- section 2: the posterior and the loss ----------------------------------------------------


def posterior_mean_var_cases(rng: np.random.Generator) -> list[Case]:
    betas, ab = _schedule()
    x = jnp.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]])
    x0 = jnp.array([[0.0, 1.0], [1.0, 1.0], [-1.0, 2.0]])
    cases = [
        Case("posterior_mean_var at t = [0, 1, T - 1] (t = 0: mean x0, var 0)",
             call(x, x0, jnp.array([0, 1, T_PROBE - 1]), betas, ab), close(2e-4, 1e-5)),
        Case("posterior_mean_var of the DDPM schedule at t = [0, 500, 999]",
             call(x, x0, jnp.array([0, 500, 999]), diffusion.linear_beta_schedule(1000),
                  diffusion.alpha_bars(diffusion.linear_beta_schedule(1000))), close(2e-3, 1e-5)),
    ]  # fmt: skip
    for shape in [(5, 2), (3, 2, 4), (1, 3)]:
        x_t, x0 = f32(rng.normal(size=shape)), f32(rng.normal(size=shape))
        t = jnp.asarray(rng.integers(0, T_PROBE, size=shape[0]), jnp.int32)
        cases.append(Case(f"posterior_mean_var(x_t, x0 {shape}, random t)",
                          call(x_t, x0, t, betas, ab),
                          close(2e-4, 1e-5, dtype=jnp.float32)))  # fmt: skip
    return cases


def ddpm_loss_cases(rng: np.random.Generator) -> list[Case]:
    _, ab = _schedule()
    cases = [
        Case("ddpm_loss with a model that always predicts 0 (about 1: E eps^2)",
             call(jax.random.key(0), lambda x, t: jnp.zeros_like(x), jnp.ones((64, 2)), ab),
             close(1e-5, 1e-6)),
    ]  # fmt: skip
    for shape in [(8, 2), (5, 3, 2), (16, 4)]:
        x0 = f32(rng.normal(size=shape))
        weight = float(rng.uniform(0.3, 2.0))
        cases.append(Case(f"ddpm_loss(x0 {shape}, a fixed model of (x_t, t)) vs the pinned "
                          "recipe", call(key_from(rng), _eps_model(weight), x0, ab),
                          close(1e-5, 1e-6)))  # fmt: skip
    return cases


RING_STD = 0.1
TRAIN_STEPS, TRAIN_T, NUM_SAMPLES = 400, 100, 512
LOGLIK_THRESHOLD = -30.0  # the reference reaches about -12; no update or a wrong target below -1e5


def _toy_schedule():
    betas = diffusion.linear_beta_schedule(TRAIN_T, 1e-3, 0.2)
    return betas, diffusion.alpha_bars(betas)


def _one_step(seed: int, lr: float):
    def run(train_step):
        betas, ab = _toy_schedule()
        model = diffusion.TimeMLP(2, 32, 2, time_scale=TRAIN_T, rngs=nnx.Rngs(seed))
        optimizer = nnx.Optimizer(model, optax.sgd(lr), wrt=nnx.Param)
        x0 = data.gaussian_ring(jax.random.key(seed), 64, 8, 1.0, RING_STD)
        loss = train_step(model, optimizer, jax.random.key(seed + 1), x0, ab)
        return {"loss": loss, "parameters": tuple(jax.tree.leaves(nnx.state(model, nnx.Param)))}

    return run


def _train_and_sample(seed: int):
    def run(train_step):
        betas, ab = _toy_schedule()
        model = diffusion.TimeMLP(2, 64, 2, time_scale=TRAIN_T, rngs=nnx.Rngs(seed))
        optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
        step = nnx.jit(train_step)
        key = jax.random.key(seed)
        losses = []
        for i in range(TRAIN_STEPS):
            key_data, key_step = jax.random.split(jax.random.fold_in(key, i))
            x0 = data.gaussian_ring(key_data, 256, 8, 1.0, RING_STD)
            losses.append(step(model, optimizer, key_step, x0, ab))
        samples = diffusion.ddpm_sample(jax.random.key(seed + 7), model, (NUM_SAMPLES, 2), betas,
                                        ab)  # fmt: skip
        return {"losses": jnp.stack(losses), "samples": samples}

    return run


@judged_alone
def _compare_training(got, want, label: str) -> None:
    if not isinstance(got, dict) or set(got) != {"losses", "samples"}:
        check.is_true(False, f"{label}: expected the losses and the samples")
    losses, samples = np.asarray(got["losses"], np.float64), np.asarray(got["samples"])
    check.shape(f"{label}: losses", losses, (TRAIN_STEPS,))
    check.shape(f"{label}: samples", samples, (NUM_SAMPLES, 2))
    check.finite(f"{label}: losses", losses)
    first, last = losses[:20].mean(), losses[-50:].mean()
    check.is_true(last < 0.8 * first, f"{label}: the loss must fall; it went from {first:.3f} "
                                      f"(first 20 steps) to {last:.3f} (last 50)")  # fmt: skip
    samples = np.where(np.isfinite(samples), samples, 1e3)
    loglik = float(np.mean(data.mixture_log_density(samples, data.ring_centers(8, 1.0),
                                                    RING_STD)))  # fmt: skip
    check.is_true(loglik > LOGLIK_THRESHOLD,
                  f"{label}: the samples of the trained model are too far from the data: mean "
                  f"log-likelihood {loglik:.2f} under the true density, need > "
                  f"{LOGLIK_THRESHOLD}")  # fmt: skip


def train_step_cases(rng: np.random.Generator) -> list[Case]:
    seeds = [int(s) for s in rng.integers(1 << 20, size=3)]
    return [
        Case("train_step: one SGD(0.1) step (the loss before the update, then the parameters)",
             _one_step(seeds[0], 0.1), close(1e-4, 1e-6)),
        Case("train_step: one SGD(1.0) step on another model", _one_step(seeds[1], 1.0),
             close(1e-4, 1e-5)),
        Case(f"train_step: {TRAIN_STEPS} Adam steps on the ring, then {NUM_SAMPLES} ancestral "
             "samples", _train_and_sample(seeds[2]), _compare_training),
    ]  # fmt: skip


# --- section 3: the exact score and flow matching ---------------------------------------------


def mixture_score_cases(rng: np.random.Generator) -> list[Case]:
    centers = data.ring_centers(4, 1.0)
    cases = [
        Case("mixture_score at alpha_bar = 1 (the data's own score), one center",
             call(jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.zeros((1, 2)), 0.5, 1.0)),
        Case("mixture_score of a 4-mode ring at alpha_bar = 0.5",
             call(jnp.array([[0.3, 0.1], [0.0, 0.0], [-1.0, 2.0]]), centers, 0.1, 0.5),
             close(1e-4, 1e-5)),
    ]  # fmt: skip
    for alpha_bar in (0.999, 0.3, 0.01):
        x = f32(rng.normal(size=(20, 2)))
        centers = f32(rng.normal(scale=2.0, size=(5, 2)))
        cases.append(Case(f"mixture_score(20 points, 5 random centers, std 0.2, alpha_bar = "
                          f"{alpha_bar})", call(x, centers, 0.2, alpha_bar),
                          close(1e-3, 1e-4)))  # fmt: skip
    x, centers = f32(rng.normal(size=(6, 3))), f32(rng.normal(size=(3, 3)))
    cases.append(Case("mixture_score in 3-D", call(x, centers, 0.5, 0.7), close(1e-4, 1e-5)))
    return cases


def flow_matching_loss_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("flow_matching_loss with a model that always predicts 0",
             call(jax.random.key(0), lambda x, t: jnp.zeros_like(x), jnp.ones((32, 2))),
             close(1e-5, 1e-6)),
    ]  # fmt: skip
    for shape in [(8, 2), (4, 3, 2), (16, 5)]:
        x1 = f32(rng.normal(2.0, 1.0, size=shape))
        weight = float(rng.uniform(0.3, 2.0))

        def model(x, t, w=weight):
            return jnp.tanh(w * x) + t.reshape(t.shape + (1,) * (x.ndim - 1))

        cases.append(Case(f"flow_matching_loss(x1 {shape}, a fixed model of (x_t, t)) vs the "
                          "pinned recipe", call(key_from(rng), model, x1),
                          close(1e-5, 1e-6)))  # fmt: skip
    return cases


def _affine_velocity(x, t):
    return -x + 2.0 * t.reshape(t.shape + (1,) * (x.ndim - 1))


def euler_sample_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("euler_sample with v = 1 everywhere, 4 steps (x moves by exactly 1)",
             call(lambda x, t: jnp.ones_like(x), jnp.zeros((3, 2)), 4)),
        Case("euler_sample with v = t, 2 steps (t_0 = 0, t_1 = 1/2)",
             call(lambda x, t: jnp.broadcast_to(t[:, None], x.shape), jnp.zeros((2, 1)), 2)),
        Case("euler_sample(v = -x + 2t, one step)", call(_affine_velocity, jnp.ones((2, 2)), 1)),
    ]  # fmt: skip
    for shape, steps in [((5, 2), 7), ((3, 2, 2), 3), ((4, 6), 20)]:
        x0 = f32(rng.normal(size=shape))
        cases.append(Case(f"euler_sample(v = -x + 2t, x0 {shape}, {steps} steps)",
                          call(_affine_velocity, x0, steps), close(1e-5, 1e-5)))  # fmt: skip
    return cases


# --- section 4: ancestral sampling ------------------------------------------------------------


def _scanned(model, x, start: int, seed: int):
    """Run the student's ddpm_step from t = start down to 0 inside jax.jit and lax.scan."""
    betas, ab = _schedule()

    def run(ddpm_step):
        @jax.jit
        def sample(x):
            keys = jax.random.split(jax.random.key(seed), start + 1)

            def body(x, t):
                return ddpm_step(keys[t], model, x, t, betas, ab), None

            return jax.lax.scan(body, x, jnp.arange(start, -1, -1))[0]

        return sample(x)

    return run


def ddpm_step_cases(rng: np.random.Generator) -> list[Case]:
    # rtol 2e-4: in float32, 1 - alpha_bar_0 differs from beta_0 in the 5th digit, so correct
    # formulas (through x0 and the posterior, or directly) differ that much at small t.
    tol = close(2e-4, 1e-5)
    betas, ab = _schedule()
    x = jnp.array([[1.0, -1.0], [0.5, 2.0]])
    model = _eps_model(0.7)
    cases = [
        Case("ddpm_step at t = 0 (the mean only, no noise)",
             call(jax.random.key(0), model, x, 0, betas, ab), tol),
        Case("ddpm_step at t = 1", call(jax.random.key(1), model, x, 1, betas, ab), tol),
        Case("ddpm_step at t = T - 1 with t a 0-d int32 array",
             call(jax.random.key(2), model, x, jnp.array(T_PROBE - 1, jnp.int32), betas, ab), tol),
    ]  # fmt: skip
    for shape in [(6, 2), (3, 4, 2)]:
        x = f32(rng.normal(size=shape))
        t = int(rng.integers(1, T_PROBE))
        cases.append(Case(f"ddpm_step(x_t {shape}, t = {t})",
                          call(key_from(rng), _eps_model(float(rng.uniform(0.3, 2.0))), x, t,
                               betas, ab), close(2e-4, 1e-5, dtype=jnp.float32)))  # fmt: skip
    x = f32(rng.normal(size=(4, 3)))
    cases.append(Case("ddpm_step called for t = 10, 9, ..., 0 inside jax.jit and lax.scan "
                      "(t is traced)", _scanned(model, x, 10, int(rng.integers(1 << 20))),
                      tol))  # fmt: skip
    return cases


def eps_to_flow_cases(rng: np.random.Generator) -> list[Case]:
    tol = close(1e-4, 1e-5)
    x, e = jnp.array([[1.0, -2.0], [0.5, 0.0]]), jnp.array([[0.3, 0.3], [-1.0, 2.0]])
    cases = [
        Case("eps_to_flow at alpha_bar = [1, 0.5] (1: tau = 1, z = x_t)",
             call(x, e, jnp.array([1.0, 0.5])), tol),
        Case("eps_to_flow at alpha_bar = [0.2, 0.8]", call(x, e, jnp.array([0.2, 0.8])), tol),
        Case("eps_to_flow with alpha_bar of different lengths raises ValueError",
             call(x, e, jnp.array([0.5, 0.5, 0.5])), raises=(ValueError,)),
    ]  # fmt: skip
    for shape in [(6, 2), (3, 4, 2), (1, 5)]:
        x_t, eps = f32(rng.normal(size=shape)), f32(rng.normal(size=shape))
        ab = f32(rng.uniform(0.01, 0.999, size=shape[0]))
        cases.append(Case(f"eps_to_flow(x_t, eps {shape}, random alpha_bar [{shape[0]}])",
                          call(x_t, eps, ab), close(1e-4, 1e-4, dtype=jnp.float32)))  # fmt: skip
    return cases


def _ddim_scanned(model, x, steps: list[int], eta: float = 0.0, seed: int = 0):
    """Run the student's ddim_step through ``steps`` (decreasing) in one jit, eta traced."""
    _, ab = _schedule()
    pairs = jnp.array(list(zip(steps[:-1], steps[1:])), jnp.int32)  # (K, 2)
    keys = jax.random.split(jax.random.key(seed), pairs.shape[0])

    def run(ddim_step):
        @jax.jit
        def sample(x, eta):
            def body(x, inputs):
                pair, key = inputs
                return ddim_step(model, x, pair[0], pair[1], ab, eta, key), None

            return jax.lax.scan(body, x, (pairs, keys))[0]

        return sample(x, jnp.float32(eta))

    return run


def _point_mass_model(center, ab):
    def model(x, t):
        a = ab[t].reshape(t.shape + (1,) * (x.ndim - 1))
        return (x - jnp.sqrt(a) * center) / jnp.sqrt(1.0 - a)

    return model


def _lands_on(center):
    @judged_alone
    def compare(got, want, label: str) -> None:
        check.allclose(f"{label}: every sample must land on the data point",
                       np.asarray(got), np.broadcast_to(np.asarray(center), np.shape(got)),
                       atol=1e-3)  # fmt: skip

    return compare


def _forward_moments(center: float, alpha_bar: float):
    """Judge samples [N, 1] by the forward process's mean and standard deviation at alpha_bar."""

    @judged_alone
    def compare(got, want, label: str) -> None:
        got = np.asarray(got, np.float64)[:, 0]
        mean, std = np.sqrt(alpha_bar) * center, np.sqrt(1.0 - alpha_bar)
        check.allclose(f"{label}: mean of the outputs", got.mean(), mean, atol=0.03)
        check.allclose(f"{label}: standard deviation of the outputs", got.std(), std, rtol=0.03)

    return compare


def ddim_step_cases(rng: np.random.Generator) -> list[Case]:
    tol = close(2e-4, 1e-5)
    _, ab = _schedule()
    cos_ab = diffusion.alpha_bars(diffusion.cosine_beta_schedule(40))
    x = jnp.array([[1.0, -1.0], [0.5, 2.0]])
    model = _eps_model(0.7)
    key = key_from(rng)
    cases = [
        Case("ddim_step from t = 0 to clean data (t_prev = -1), eta = 0",
             call(model, x, 0, -1, ab, 0.0, key), tol),
        Case("ddim_step from t = T - 1 straight to clean data with eta = 1 (no noise there)",
             call(model, x, T_PROBE - 1, -1, ab, 1.0, key), tol),
        Case("ddim_step from t = T - 1 to t_prev = T - 2, eta = 0",
             call(model, x, T_PROBE - 1, T_PROBE - 2, ab, 0.0, key), tol),
        Case("ddim_step from t = 20 to t_prev = 19 with eta = 1 (the ancestral step)",
             call(model, x, 20, 19, ab, 1.0, key), tol),
        Case("ddim_step from t = 30 to t_prev = 5, as 0-d int32 arrays, eta = 1",
             call(model, x, jnp.array(30, jnp.int32), jnp.array(5, jnp.int32), ab, 1.0, key),
             tol),
        Case("ddim_step on a cosine schedule (T = 40) from t = 39 to t_prev = 10, eta = 0.5",
             call(model, x, 39, 10, cos_ab, 0.5, key), tol),
    ]  # fmt: skip
    for shape in [(6, 2), (3, 4, 2)]:
        x = f32(rng.normal(size=shape))
        t = int(rng.integers(2, T_PROBE))
        t_prev = int(rng.integers(0, t))
        eta = float(np.round(rng.uniform(0.1, 1.0), 2))
        cases.append(Case(f"ddim_step(x_t {shape}, t = {t}, t_prev = {t_prev}, eta = {eta})",
                          call(_eps_model(float(rng.uniform(0.3, 2.0))), x, t, t_prev, ab, eta,
                               key_from(rng)), close(2e-4, 1e-5, dtype=jnp.float32)))  # fmt: skip
    x = f32(rng.normal(size=(4, 3)))
    cases.append(Case("ddim_step on steps 45, 30, 12, 3, -1 inside jax.jit and lax.scan (t, "
                      "t_prev and eta = 0.6 traced)",
                      _ddim_scanned(model, x, [45, 30, 12, 3, -1], 0.6, int(rng.integers(1 << 20))),
                      tol))  # fmt: skip
    center = f32(rng.normal(size=(2,)))
    cases.append(Case("ddim_step with eta = 0 and the exact noise of data at one point: "
                      "5 steps from noise",
                      _ddim_scanned(_point_mass_model(center, ab), f32(rng.normal(size=(8, 2))),
                                    [49, 40, 25, 10, 0, -1]), _lands_on(center)))  # fmt: skip
    x = f32(rng.normal(size=(5, 2)))
    cases.append(Case("ddim_step with eta = 0 and the exact noise of data at one point: two "
                      "steps 45 -> 30 -> 12 land where one step 45 -> 12 does",
                      _ddim_scanned(_point_mass_model(center, ab), x, [45, 30, 12]),
                      tol))  # fmt: skip
    for eta, (t, t_prev) in [(0.7, (35, 8)), (1.0, (12, 11))]:
        c = float(np.round(rng.uniform(0.5, 1.5), 2))
        noise = rng.normal(size=(20_000, 1))
        x = f32(np.sqrt(float(cos_ab[t])) * c + np.sqrt(1.0 - float(cos_ab[t])) * noise)
        cases.append(Case(f"ddim_step with eta = {eta} on 20,000 forward samples of one point "
                          f"(cosine schedule, T = 40), t = {t} to t_prev = {t_prev}",
                          call(_point_mass_model(c, cos_ab), x, t, t_prev, cos_ab, eta,
                               key_from(rng)),
                          _forward_moments(c, float(cos_ab[t_prev]))))  # fmt: skip
    return cases


# --- section 5: guidance ----------------------------------------------------------------------


def cfg_combine_cases(rng: np.random.Generator) -> list[Case]:
    cond, uncond = jnp.array([1.0, 2.0]), jnp.array([0.0, 1.0])
    cases = [
        Case("cfg_combine(w = 0) is the unconditional prediction", call(cond, uncond, 0.0)),
        Case("cfg_combine(w = 1) is the conditional prediction", call(cond, uncond, 1.0)),
        Case("cfg_combine([1, 2], [0, 1], w = 3)", call(cond, uncond, 3.0)),
    ]
    for shape, w in [((4, 2), 2.0), ((2, 8, 8), 7.5), ((5,), 0.5)]:
        c, u = f32(rng.normal(size=shape)), f32(rng.normal(size=shape))
        cases.append(Case(f"cfg_combine(eps {shape}, w = {w})", call(c, u, w), close(1e-5, 1e-6)))
    c, u = f32(rng.normal(size=(3, 2))), f32(rng.normal(size=(3, 2)))
    cases.append(Case("cfg_combine(eps (3, 2), one w per example [3, 1])",
                      call(c, u, jnp.array([[0.0], [1.0], [4.0]])), close(1e-5, 1e-6)))  # fmt: skip
    return cases


def classifier_guided_eps_cases(rng: np.random.Generator) -> list[Case]:
    eps, grad = jnp.array([[1.0, 0.0]]), jnp.array([[2.0, -1.0]])
    cases = [
        Case("classifier_guided_eps(w = 0) is the unconditional prediction",
             call(eps, grad, 0.5, 0.0)),
        Case("classifier_guided_eps([[1, 0]], [[2, -1]], alpha_bar = 0.75, w = 1)",
             call(eps, grad, 0.75, 1.0), close(1e-5, 1e-6)),
        Case("classifier_guided_eps at alpha_bar = 0 (pure noise), w = 2",
             call(eps, grad, 0.0, 2.0), close(1e-5, 1e-6)),
    ]  # fmt: skip
    for shape, ab, w in [((4, 2), 0.3, 3.0), ((2, 8, 8), 0.95, 0.5), ((5,), 0.01, 7.5)]:
        e, g = f32(rng.normal(size=shape)), f32(rng.normal(size=shape))
        cases.append(Case(f"classifier_guided_eps({shape}, alpha_bar = {ab}, w = {w})",
                          call(e, g, ab, w), close(1e-5, 1e-6)))  # fmt: skip
    e, g = f32(rng.normal(size=(3, 2))), f32(rng.normal(size=(3, 2)))
    cases.append(Case("classifier_guided_eps with one alpha_bar and one w per example [3, 1]",
                      call(e, g, f32([[0.1], [0.5], [0.9]]), f32([[1.0], [2.0], [0.0]])),
                      close(1e-5, 1e-6)))  # fmt: skip
    return cases


# --- section 6: the bound in bits per dimension -----------------------------------------------


def _on_levels(rng: np.random.Generator, shape, num_levels: int):
    """Data of ``shape`` whose entries are random levels of ``num_levels`` in [-1, 1]."""
    k = rng.integers(0, num_levels, size=shape)
    return f32(-1.0 + 2.0 * k / (num_levels - 1))


def _level_sums(num_levels: int, mean: float, std: float):
    """Runs the function once per level (one example each); returns the K probabilities' sum."""

    def run(function):
        levels = f32(np.linspace(-1.0, 1.0, num_levels)[:, None])  # (K, 1)
        log_p = function(levels, f32(np.full((num_levels, 1), mean)), std, num_levels)
        return jnp.sum(jnp.exp(jnp.asarray(log_p, jnp.float32)))

    return run


def discretized_gaussian_log_prob_cases(rng: np.random.Generator) -> list[Case]:
    # Few shapes on purpose: the student's function runs op by op, compiled once per shape.
    log_close = close(1e-4, 1e-4)
    cases = [
        Case("discretized_gaussian_log_prob, K = 2, means at 0 (each level gets half)",
             call(f32([[-1.0, 1.0, 1.0]]), f32([[0.0, 0.0, 0.0]]), 0.5, 2), log_close),
        Case("discretized_gaussian_log_prob, K = 3, std about the spacing",
             call(f32([[-1.0, 0.0, 1.0]]), f32([[-0.7, 0.2, 0.4]]), 0.6, 3), log_close),
        Case("discretized_gaussian_log_prob, K = 17, the means on the levels, std 0.01",
             call(f32([[0.25, -1.0, 1.0]]), f32([[0.25, -1.0, 1.0]]), 0.01, 17), log_close),
        Case("discretized_gaussian_log_prob, K = 9, means a third of a spacing off, std 0.05",
             call(f32([[0.0, 0.5, -0.25]]), f32([[0.08, 0.42, -0.33]]), 0.05, 9), log_close),
        Case("discretized_gaussian_log_prob, the extreme levels with means beyond [-1, 1]",
             call(f32([[-1.0, 1.0, -1.0]]), f32([[-3.0, 2.5, 0.9]]), 0.3, 17), log_close),
        Case("discretized_gaussian_log_prob, levels 20-60 std right of the mean",
             call(f32([[0.5, 0.75, 1.0]]), f32([[0.2, 0.1, 0.4]]), 0.01, 17), close(1e-4, 1e-3)),
        Case("discretized_gaussian_log_prob, levels 20-60 std left of the mean",
             call(f32([[-0.5, -0.75, -1.0]]), f32([[-0.2, -0.1, -0.4]]), 0.01, 17),
             close(1e-4, 1e-3)),
        Case("discretized_gaussian_log_prob, std 5 (much wider than the range)",
             call(f32([[-1.0, 0.0, 0.5]]), f32([[0.0, 0.0, 3.0]]), 5.0, 5), log_close),
        Case("discretized_gaussian_log_prob, 256 levels (8-bit images)",
             call(f32([[1.0 / 255, -1.0, 253.0 / 255]]), f32([[0.0, -0.99, 1.0]]), 0.004, 256),
             log_close),
    ]  # fmt: skip
    for num_levels, mean, std in [(17, 0.37, 0.04), (17, -1.2, 0.7), (4, 2.0, 0.3)]:
        cases.append(Case(f"discretized_gaussian_log_prob: the {num_levels} levels' probabilities "
                          f"sum to 1 (mean {mean}, std {std})",
                          _level_sums(num_levels, mean, std), close(1e-4, 1e-5)))  # fmt: skip
    for shape, num_levels in [((5, 64), 17), ((3, 8, 8), 17), ((5, 64), 6)]:
        x0 = _on_levels(rng, shape, num_levels)
        mean = f32(np.asarray(x0) + rng.normal(scale=0.1, size=shape))
        std = float(rng.uniform(0.02, 0.3))
        cases.append(Case(f"discretized_gaussian_log_prob(x0 {shape}, K = {num_levels}, "
                          "random means near the levels)",
                          call(x0, mean, std, num_levels),
                          close(1e-4, 1e-3, dtype=jnp.float32)))  # fmt: skip
    x0 = _on_levels(rng, (3, 8, 8), 17)
    mean = f32(np.asarray(x0) + rng.normal(scale=0.2, size=(3, 8, 8)))
    cases.append(Case("discretized_gaussian_log_prob with one std per example [3, 1, 1]",
                      call(x0, mean, f32([[[0.01]], [[0.1]], [[1.0]]]), 17),
                      close(1e-4, 1e-3)))  # fmt: skip
    return cases


# --- section 7: the diagnostic ----------------------------------------------------------------


def _verdict(train, sample):
    """Run the student's diagnostic on one pair; its (kind, k) as two int32 (the kind's index in
    the vocabulary); a kind outside the vocabulary, or not a pair, fails the case."""

    def run(schedule_mismatch):
        verdict = schedule_mismatch(train, sample)
        if not (isinstance(verdict, tuple) and len(verdict) == 2):
            raise TypeError(f"the verdict must be a pair (kind, k), got {verdict!r}")
        kind, k = verdict
        if not isinstance(kind, str) or kind not in diffusion.SCHEDULE_BUGS:
            raise TypeError(f"the kind must be one of {diffusion.SCHEDULE_BUGS}, got {kind!r}")
        if int(k) != k:
            raise TypeError(f"the parameter k must be an integer, got {k!r}")
        return np.array([diffusion.SCHEDULE_BUGS.index(kind), int(k)], np.int32)

    return run


def _late(schedule: np.ndarray, k: int, fill: float) -> np.ndarray:
    """The sampler's index i reads the training entry i + k; ``fill`` where none exists."""
    index = np.arange(schedule.size) + k
    inside = (index >= 0) & (index < schedule.size)
    return np.where(inside, schedule[np.clip(index, 0, schedule.size - 1)], fill)


def _strided(schedule: np.ndarray, k: int, length: int) -> np.ndarray:
    """The sampler's paper step j = 1..length reads the training paper step k j."""
    return schedule[k * np.arange(1, length + 1) - 1]


def schedule_mismatch_cases(rng: np.random.Generator) -> list[Case]:
    lin = np.asarray(diffusion.alpha_bars(diffusion.linear_beta_schedule(1000)))
    cos = np.asarray(diffusion.alpha_bars(diffusion.cosine_beta_schedule(1000)))
    short = np.asarray(diffusion.alpha_bars(diffusion.linear_beta_schedule(100)))
    rescaled = np.asarray(diffusion.alpha_bars(diffusion.linear_beta_schedule(100, 1e-3, 0.2)))
    lin64 = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))  # float64, rounding-level differences
    offset, stride = int(rng.integers(2, 60)), int(rng.integers(5, 13))
    pairs = [
        ("a schedule with itself", lin, lin),
        ("a float32 schedule with its float64 recomputation", f32(lin64), lin),
        ("linear with cosine, T = 1000", lin, cos),
        ("T = 100 with beta rescaled against T = 100 without", rescaled, short),
        ("linear read one index late (T = 1000)", lin, f32(_late(lin, 1, 0.0))),
        ("linear read one index early (T = 1000)", lin, f32(_late(lin, -1, 1.0))),
        ("cosine read a hidden number of indices late", cos, f32(_late(cos, offset, 0.0))),
        ("linear read a hidden number of indices early", lin, f32(_late(lin, -offset - 3, 1.0))),
        ("linear read at a hidden stride", lin, f32(_strided(lin, stride, 1000 // stride))),
        ("cosine read at a stride of 2, first 300 steps", cos, f32(_strided(cos, 2, 300))),
        ("linear read at a stride of 10 from index 0 (paper step 10 j + 1)", lin,
         f32(lin[10 * np.arange(100)])),
        ("linear scaled by 1 - 1e-3", lin, f32(lin * (1 - 1e-3))),
        ("linear walked backwards", lin, lin[::-1].copy()),
        ("T = 1000 against its first 100 steps", lin, lin[:100].copy()),
        ("one step against an equal step", f32([0.3]), f32([0.3])),
        ("one step against another", f32([0.3]), f32([0.6])),
    ]  # fmt: skip
    for _ in range(2):
        a = np.asarray(diffusion.alpha_bars(f32(rng.uniform(0.01, 0.1, size=30))))
        b = np.asarray(diffusion.alpha_bars(f32(rng.uniform(0.01, 0.1, size=30))))
        k = int(rng.integers(2, 15)) * int(rng.choice([-1, 1]))
        pairs += [("two random schedules, T = 30", a, b),
                  ("a random schedule read a hidden number of indices off, T = 30", a,
                   f32(_late(a, k, 0.9))),
                  ("a random schedule at a hidden stride, T = 30", a,
                   f32(_strided(a, abs(k), 30 // abs(k)))),
                  ("a random schedule walked backwards, T = 30", b, b[::-1].copy())]  # fmt: skip
    cases = [Case(f"schedule_mismatch: {label}", _verdict(a, b), exact) for label, a, b in pairs]
    cases.append(Case("schedule_mismatch of a [1, T] array raises ValueError",
                      call(lin[None], lin[None]), raises=(ValueError,)))  # fmt: skip
    return cases


PROBES = [
    Probe("linear_beta_schedule", diffusion.linear_beta_schedule, linear_beta_schedule_cases),
    Probe("alpha_bars", diffusion.alpha_bars, alpha_bars_cases),
    Probe("q_sample", diffusion.q_sample, q_sample_cases),
    Probe("posterior_mean_var", diffusion.posterior_mean_var, posterior_mean_var_cases),
    Probe("ddpm_loss", diffusion.ddpm_loss, ddpm_loss_cases, uses=("q_sample",)),
    Probe(
        "train_step",
        diffusion.train_step,
        train_step_cases,
        uses=("ddpm_loss",),
        forbidden=("genlab.train.make_train_step",),
    ),
    Probe("mixture_score", diffusion.mixture_score, mixture_score_cases),
    Probe("flow_matching_loss", diffusion.flow_matching_loss, flow_matching_loss_cases),
    Probe("euler_sample", diffusion.euler_sample, euler_sample_cases),
    Probe("ddpm_step", diffusion.ddpm_step, ddpm_step_cases, uses=("posterior_mean_var",)),
    Probe("eps_to_flow", diffusion.eps_to_flow, eps_to_flow_cases),
    Probe("ddim_step", diffusion.ddim_step, ddim_step_cases),
    Probe("cfg_combine", diffusion.cfg_combine, cfg_combine_cases),
    Probe(
        "classifier_guided_eps",
        diffusion.classifier_guided_eps,
        classifier_guided_eps_cases,
        forbidden=("genlab.diffusion.score_from_noise",),
    ),
    Probe(
        "discretized_gaussian_log_prob",
        diffusion.discretized_gaussian_log_prob,
        discretized_gaussian_log_prob_cases,
    ),
    Probe("schedule_mismatch", diffusion.schedule_mismatch, schedule_mismatch_cases),
]
