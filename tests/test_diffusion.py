"""genlab.diffusion against independent computations: float64 NumPy closed forms written from
the papers (Ho et al. 2020, Nichol & Dhariwal 2021), Monte Carlo, autodiff of exact densities and
ODE solutions; a peer, diffusers' DDPMScheduler and ClassifierFreeGuidance (a NumPy fixture made
offline by tests/fixtures/make_diffusers_fixtures.py); and the probes' behavioural thresholds."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genlab import data, diffusion, probing

from conftest import ROOT


def _np_schedule(T=1000, start=1e-4, end=0.02):
    betas = start + (end - start) * np.arange(T) / (T - 1)
    return betas, np.cumprod(1.0 - betas)


def test_linear_schedule_and_alpha_bars_match_float64_numpy():
    betas, ab = _np_schedule()
    np.testing.assert_allclose(diffusion.linear_beta_schedule(1000), betas, rtol=1e-6)
    np.testing.assert_allclose(diffusion.alpha_bars(betas), ab, rtol=2e-5)
    assert 4.0e-5 < ab[-1] < 4.1e-5  # the "alpha_bar_T about 4e-5" of the chapter
    assert diffusion.linear_beta_schedule(3).dtype == jnp.float32
    short = np.cumprod(1.0 - _np_schedule(100)[0])
    assert abs(short[-1] - 0.364) < 0.001  # T = 100 without rescaling beta
    np.testing.assert_allclose(diffusion.linear_beta_schedule(1, 0.3, 0.5), [0.3])


def test_cosine_schedule_matches_its_definition():
    T, s = 1000, 0.008
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
    betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
    np.testing.assert_allclose(diffusion.cosine_beta_schedule(T), betas, rtol=1e-4, atol=1e-7)
    ab = np.asarray(diffusion.alpha_bars(diffusion.cosine_beta_schedule(T)))
    np.testing.assert_allclose(ab[:900], (f[1:] / f[0])[:900], rtol=1e-4)  # before the clipping


def test_q_sample_has_the_closed_form_moments():
    _, ab = _np_schedule()
    x0 = jnp.full((200_000, 1), 2.0)
    t = jnp.full(200_000, 300)
    x_t, eps = diffusion.q_sample(jax.random.key(0), x0, t, jnp.asarray(ab, jnp.float32))
    assert abs(float(jnp.mean(x_t)) - np.sqrt(ab[300]) * 2.0) < 0.01
    assert abs(float(jnp.var(x_t)) - (1 - ab[300])) < 0.01
    np.testing.assert_allclose(eps, jax.random.normal(jax.random.key(0), x0.shape))


def test_q_sample_matches_the_step_by_step_chain():
    """The one-jump marginal equals T applications of q(x_t | x_{t-1}) (Monte Carlo moments)."""
    betas, ab = _np_schedule(50, 1e-3, 0.2)
    rng = np.random.default_rng(0)
    x = np.full(100_000, 1.5)
    for b in betas[:20]:
        x = np.sqrt(1 - b) * x + np.sqrt(b) * rng.normal(size=x.shape)
    jump, _ = diffusion.q_sample(jax.random.key(1), jnp.full((100_000, 1), 1.5),
                                 jnp.full(100_000, 19), jnp.asarray(ab, jnp.float32))  # fmt: skip
    assert abs(x.mean() - float(jnp.mean(jump))) < 0.02
    assert abs(x.var() - float(jnp.var(jump))) < 0.02


def test_posterior_matches_bayes_rule_in_precision_form():
    betas, ab = _np_schedule(50, 1e-3, 0.2)
    rng = np.random.default_rng(1)
    x_t, x0 = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    t = np.array([0, 1, 5, 20, 48, 49])
    f32 = [jnp.asarray(a, jnp.float32) for a in (x_t, x0, betas, ab)]
    mean, var = diffusion.posterior_mean_var(f32[0], f32[1], jnp.asarray(t), f32[2], f32[3])
    for i, step in enumerate(t):
        if step == 0:  # a point mass at x0 (up to float32's 1 - alpha_bar_0 != beta_0)
            np.testing.assert_allclose(mean[i], x0[i], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(var[i], 0.0, atol=1e-7)
            continue
        b, ab_prev = betas[step], ab[step - 1]
        precision = (1 - b) / b + 1 / (1 - ab_prev)
        want = (np.sqrt(1 - b) / b * x_t[i] + np.sqrt(ab_prev) / (1 - ab_prev) * x0[i]) / precision
        np.testing.assert_allclose(mean[i], want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(var[i], np.full(3, 1 / precision), rtol=1e-4)


def test_ddpm_loss_and_flow_matching_loss_follow_their_pinned_recipes():
    ab = diffusion.alpha_bars(diffusion.linear_beta_schedule(100))
    x0 = jax.random.normal(jax.random.key(2), (16, 3))
    seen = {}

    def model(x, t):
        seen["x"], seen["t"] = x, t
        return 0.5 * x

    loss = diffusion.ddpm_loss(jax.random.key(3), model, x0, ab)
    key_t, key_eps = jax.random.split(jax.random.key(3))
    t = jax.random.randint(key_t, (16,), 0, 100)
    eps = jax.random.normal(key_eps, x0.shape)
    x_t = np.sqrt(ab[t])[:, None] * x0 + np.sqrt(1 - ab[t])[:, None] * eps
    np.testing.assert_array_equal(seen["t"], t)
    np.testing.assert_allclose(loss, np.mean((0.5 * x_t - eps) ** 2), rtol=1e-5)

    x1 = jax.random.normal(jax.random.key(4), (8, 2, 2)) + 3.0
    loss = diffusion.flow_matching_loss(jax.random.key(5), model, x1)
    key_t, key_0 = jax.random.split(jax.random.key(5))
    t = np.asarray(jax.random.uniform(key_t, (8,)))
    noise = np.asarray(jax.random.normal(key_0, x1.shape))
    x_t = t[:, None, None] * np.asarray(x1) + (1 - t[:, None, None]) * noise
    np.testing.assert_allclose(seen["x"], x_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        loss, np.mean((0.5 * x_t - (np.asarray(x1) - noise)) ** 2), rtol=1e-5
    )


def test_ddpm_step_is_the_posterior_mean_plus_its_noise():
    betas, ab = _np_schedule(50, 1e-3, 0.2)
    x = np.random.default_rng(3).normal(size=(4, 2))
    eps_hat = np.tanh(x)
    for t in (0, 1, 30, 49):
        f32 = [jnp.asarray(a, jnp.float32) for a in (x, betas, ab)]
        got = diffusion.ddpm_step(
            jax.random.key(t), lambda x_, t_: jnp.tanh(x_), *f32[:1], t, *f32[1:]
        )
        x0_hat = (x - np.sqrt(1 - ab[t]) * eps_hat) / np.sqrt(ab[t])  # the same mean via x0
        ab_prev = ab[t - 1] if t > 0 else 1.0
        mean = (
            np.sqrt(ab_prev) * betas[t] * x0_hat + np.sqrt(1 - betas[t]) * (1 - ab_prev) * x
        ) / (1 - ab[t])
        std = np.sqrt((1 - ab_prev) / (1 - ab[t]) * betas[t])
        want = mean + std * np.asarray(jax.random.normal(jax.random.key(t), x.shape))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_ancestral_sampler_with_the_exact_score_recovers_a_gaussian():
    """With the exact eps of N(m, s^2) data, DDPM sampling reproduces its mean and std."""
    betas = diffusion.linear_beta_schedule(200, 5e-4, 0.1)
    ab = diffusion.alpha_bars(betas)
    m, s = 1.5, 0.3

    class ExactEps(nnx.Module):  # eps* = -sqrt(1 - ab) * score of N(sqrt(ab) m, ab s^2 + 1 - ab)
        def __call__(self, x, t):
            a = ab[t][:, None]
            return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * m) / (a * s**2 + 1 - a)

    exact_eps = ExactEps()

    samples = diffusion.ddpm_sample(jax.random.key(0), exact_eps, (20_000, 1), betas, ab)
    assert abs(float(samples.mean()) - m) < 0.02
    assert abs(float(samples.std()) - s) < 0.02
    short = diffusion.respace(ab, 50)
    samples = diffusion.ddpm_sample(jax.random.key(1), exact_eps, (20_000, 1), *short)
    # 50 coarse steps: the mean stays, the spread shrinks a little (measured 0.254 for 0.3)
    assert abs(float(samples.mean()) - m) < 0.03 and 0.2 < float(samples.std()) < s + 0.02


def test_respace_keeps_the_trained_signal_fractions():
    ab = diffusion.alpha_bars(diffusion.linear_beta_schedule(1000))
    betas, short, steps = diffusion.respace(ab, 10)
    np.testing.assert_allclose(short, ab[steps])
    np.testing.assert_allclose(diffusion.alpha_bars(betas), short, rtol=1e-4)
    assert int(steps[0]) == 0 and int(steps[-1]) == 999
    with pytest.raises(ValueError):
        diffusion.respace(ab, 1001)


def test_euler_sample_converges_to_the_ode_solution():
    # dx/dt = -x + 2t from x(0) = x0: x(1) = 2 (t - 1) + (x0 + 2) e^{-t} at t = 1 -> (x0 + 2) / e.
    x0 = jnp.array([[0.5, -1.0]])

    def velocity(x, t):
        return -x + 2 * t[:, None]

    exact = (np.asarray(x0) + 2) / np.e
    errors = [
        float(jnp.max(jnp.abs(diffusion.euler_sample(velocity, x0, k) - exact))) for k in (10, 100)
    ]
    assert errors[1] < errors[0] / 8  # first order
    assert errors[1] < 5e-3


def test_mixture_score_is_the_gradient_of_the_exact_log_density():
    centers = data.ring_centers(8, 1.0)
    x = jax.random.normal(jax.random.key(0), (50, 2)) * 1.5
    for alpha_bar in (1.0, 0.5, 0.02):
        std = np.sqrt(alpha_bar * 0.01 + 1 - alpha_bar)

        def log_q(p, a=alpha_bar, s=std):
            return jnp.sum(data.mixture_log_density(p, jnp.sqrt(a) * centers, s))

        got = diffusion.mixture_score(x, centers, 0.1, alpha_bar)
        np.testing.assert_allclose(got, jax.grad(log_q)(x), rtol=1e-3, atol=1e-3)


def test_cfg_combine_is_diffusers_convention_and_ho_salimans_is_shifted_by_one():
    cond, uncond = jax.random.normal(jax.random.key(0), (2, 4, 3))
    # diffusers: noise_uncond + guidance_scale * (noise_text - noise_uncond)
    for w in (0.0, 1.0, 7.5):
        np.testing.assert_allclose(
            diffusion.cfg_combine(cond, uncond, w), uncond + w * (cond - uncond), rtol=1e-6
        )
    ho = (1 + 2.0) * cond - 2.0 * uncond
    np.testing.assert_allclose(diffusion.cfg_combine(cond, uncond, 3.0), ho, rtol=1e-5, atol=1e-6)


def test_schedule_mismatch():
    """Bugs built by hand with NumPy indexing (a known offset or stride each), their rounding-level
    recomputation, and schedules with no relation; every kind of SCHEDULE_BUGS is exercised."""
    lin = np.asarray(diffusion.alpha_bars(diffusion.linear_beta_schedule(1000)), np.float64)
    cos = np.asarray(diffusion.alpha_bars(diffusion.cosine_beta_schedule(1000)), np.float64)
    lin64 = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))  # float64, computed another way
    rng = np.random.default_rng(0)
    small = np.cumprod(1.0 - rng.uniform(0.05, 0.2, size=12))

    def late(x, k):  # the sampler's index i reads the training entry i + k (k < 0: early)
        return np.array([x[i + k] if 0 <= i + k < x.size else 0.5 for i in range(x.size)])

    def strided(x, k, m):  # the sampler's paper step j = 1..m reads the training paper step k j
        return np.array([x[k * j - 1] for j in range(1, m + 1)])

    cases = [
        (lin, lin, ("same", 0)), (lin, lin64, ("same", 0)), (small[:1], small[:1], ("same", 0)),
        (lin, late(lin, 1), ("shift", 1)), (lin, late(lin, -1), ("shift", -1)),
        (lin, late(lin, 7), ("shift", 7)), (cos, late(cos, -40), ("shift", -40)),
        (small, late(small, 6), ("shift", 6)), (small, late(small, -3), ("shift", -3)),
        (lin, strided(lin, 10, 100), ("stride", 10)), (lin, strided(lin, 3, 333), ("stride", 3)),
        (lin, strided(lin, 4, 100), ("stride", 4)), (small, strided(small, 5, 2), ("stride", 5)),
        (lin, lin[::-1], ("reversed", 0)), (small, small[::-1], ("reversed", 0)),
        (lin, cos, ("other", 0)), (lin, lin * (1 - 1e-3), ("other", 0)),
        (lin, lin[:100], ("other", 0)), (lin, strided(lin, 10, 100) + 2e-5, ("other", 0)),
        (small, late(small, 7), ("other", 0)), (small[:1], small[1:2], ("other", 0)),
    ]  # fmt: skip
    assert {want[0] for _, _, want in cases} == set(diffusion.SCHEDULE_BUGS)
    for train, sample, want in cases:
        assert diffusion.schedule_mismatch(train, sample) == want
    # A shift of one index is invisible to a threshold on the largest gap in noise level.
    noise_gap = np.max(np.abs(np.sqrt(1 - lin[:-1]) - np.sqrt(1 - lin[1:])))
    assert noise_gap < 0.02 < np.max(np.abs(np.sqrt(1 - lin) - np.sqrt(1 - cos)))
    with pytest.raises(ValueError, match="shape"):
        diffusion.schedule_mismatch(lin[None], lin[None])
    with pytest.raises(ValueError, match="shape"):
        diffusion.schedule_mismatch(np.zeros(0), np.zeros(0))


def test_the_sampler_is_one_compiled_program():
    betas = diffusion.linear_beta_schedule(300)
    ab = diffusion.alpha_bars(betas)
    calls = []

    class Eps(nnx.Module):
        def __call__(self, x, t):
            calls.append(1)  # runs while tracing only
            return jnp.zeros_like(x)

    diffusion.ddpm_sample(jax.random.key(0), Eps(), (4, 2), betas, ab)
    assert len(calls) == 1, f"the model was traced {len(calls)} times for 300 steps"


def test_train_step_threshold_separates_the_reference_from_no_training():
    """The behavioural probe's threshold: the reference clears it, an untrained model does not."""
    from genlab.probes import diffusion as probes

    spec = probing.probes_for("05_diffusion")["train_step"]
    case = probing.make_cases(spec, 5)[-1]
    got = probing.to_plain(case.run(diffusion.train_step))
    case.compare(got, None, "reference")

    def no_update(model, optimizer, key, x0, alpha_bars):
        return diffusion.ddpm_loss(key, model, x0, alpha_bars)

    got = probing.to_plain(case.run(no_update))
    with pytest.raises(AssertionError, match="loss must fall|too far"):
        case.compare(got, None, "no update")
    assert probes.LOGLIK_THRESHOLD < -10


# --- a peer: diffusers (the fixture of tests/fixtures/make_diffusers_fixtures.py) ---

DIFFUSERS = np.load(ROOT / "tests" / "fixtures" / "diffusers_ddpm.npz")
SCHEDULES = {"linear": diffusion.linear_beta_schedule, "cosine": diffusion.cosine_beta_schedule}
ULP = 2.0**-23  # float32's spacing just above 1; below 1 it is half that


def _conditioning_rtol(betas, t):
    """Relative tolerance at step t: 1e-5, plus one float32 ulp of 1 divided by beta_t.

    Both libraries compute 1 - alpha_bar_t (genlab) or 1 - alpha_bar_t / alpha_bar_{t-1}
    (diffusers' "current beta") in float32 from numbers near 1, so the difference carries an
    absolute error of about one ulp of 1 and a relative one of ulp / beta_t: 1e-3 at the DDPM
    schedule's t = 0 (beta 1e-4), 6e-6 at t = 999. The formulas agree in exact arithmetic.
    """
    return 1e-5 + ULP / float(betas[t])


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedules_and_alpha_bars_match_diffusers(name):
    betas = SCHEDULES[name](1000)
    np.testing.assert_allclose(betas, DIFFUSERS[f"{name}/betas"], rtol=2 * ULP, atol=0)
    # A running product of 1000 float32 factors: a few ulps apart (different summation order).
    np.testing.assert_allclose(diffusion.alpha_bars(betas), DIFFUSERS[f"{name}/alphas_cumprod"],
                               rtol=16 * ULP, atol=0)  # fmt: skip


@pytest.mark.parametrize("name", SCHEDULES)
def test_forward_process_and_predicted_x0_use_diffusers_step_index(name):
    """diffusers' t indexes alphas_cumprod directly (t = 0 is the first noising step), as here."""
    ab = np.asarray(diffusion.alpha_bars(SCHEDULES[name](1000)), np.float64)
    fx = {k: DIFFUSERS[f"{name}/{k}"].astype(np.float64) for k in ("x0", "noise", "sample",
          "model_output", "pred_original_sample")}  # fmt: skip
    for i, t in enumerate(DIFFUSERS["timesteps"]):
        x_t = np.sqrt(ab[t]) * fx["x0"][i] + np.sqrt(1 - ab[t]) * fx["noise"][i]  # add_noise
        np.testing.assert_allclose(x_t, fx["sample"][i], rtol=1e-5, atol=1e-6)
        x0_hat = (fx["sample"][i] - np.sqrt(1 - ab[t]) * fx["model_output"][i]) / np.sqrt(ab[t])
        # 1 / sqrt(alpha_bar_999) = 156 amplifies the float32 rounding of the sample: atol scales.
        np.testing.assert_allclose(x0_hat, fx["pred_original_sample"][i], rtol=1e-5,
                                   atol=1e-6 / np.sqrt(ab[t]))  # fmt: skip


@pytest.mark.parametrize("name", SCHEDULES)
def test_posterior_mean_var_matches_diffusers_step_mean_and_fixed_small_variance(name):
    """diffusers' step mean is the posterior mean at its predicted x0 (clip_sample=False), and
    its "fixed_small" variance is the posterior variance (0 at t = 0, where it adds no noise)."""
    betas = jnp.asarray(DIFFUSERS[f"{name}/betas"])
    ab = jnp.asarray(DIFFUSERS[f"{name}/alphas_cumprod"])
    for i, t in enumerate(DIFFUSERS["timesteps"]):
        x_t, x0_hat = DIFFUSERS[f"{name}/sample"][i], DIFFUSERS[f"{name}/pred_original_sample"][i]
        mean, var = diffusion.posterior_mean_var(x_t, x0_hat, jnp.full(len(x_t), t), betas, ab)
        rtol = _conditioning_rtol(betas, t)
        np.testing.assert_allclose(mean, DIFFUSERS[f"{name}/mean"][i], rtol=rtol, atol=1e-6)
        want_var = DIFFUSERS[f"{name}/variance"][i] if t > 0 else 0.0  # diffusers clamps to 1e-20
        np.testing.assert_allclose(var, np.full(x_t.shape, want_var), rtol=rtol, atol=1e-20)


@pytest.mark.parametrize("name", SCHEDULES)
def test_ddpm_step_matches_diffusers_step_with_the_same_noise(name):
    """genlab's step with key k equals diffusers' mean + sqrt(variance) * z for the z = normal(k)
    genlab draws; diffusers' own seeded step is that same sum with torch's z."""
    betas = jnp.asarray(DIFFUSERS[f"{name}/betas"])
    ab = jnp.asarray(DIFFUSERS[f"{name}/alphas_cumprod"])
    for i, t in enumerate(DIFFUSERS["timesteps"]):
        x_t, eps_hat = DIFFUSERS[f"{name}/sample"][i], DIFFUSERS[f"{name}/model_output"][i]
        mean, var = DIFFUSERS[f"{name}/mean"][i], DIFFUSERS[f"{name}/variance"][i]
        std = np.sqrt(var) if t > 0 else 0.0
        torch_z = DIFFUSERS[f"{name}/step_noise"][i]
        np.testing.assert_allclose(DIFFUSERS[f"{name}/prev_sample"][i], mean + std * torch_z,
                                   rtol=1e-6, atol=1e-7)  # fmt: skip
        key = jax.random.key(int(t))
        got = diffusion.ddpm_step(
            key, lambda x, t_, e=eps_hat: jnp.asarray(e), x_t, int(t), betas, ab
        )
        want = mean + std * np.asarray(jax.random.normal(key, x_t.shape))
        np.testing.assert_allclose(got, want, rtol=_conditioning_rtol(betas, t), atol=1e-6)


def test_cfg_combine_matches_diffusers_guider_in_both_conventions():
    """ClassifierFreeGuidance's default formula is cfg_combine; its use_original_formulation
    (Ho & Salimans) at scale w is cfg_combine at w + 1."""
    cond, uncond = DIFFUSERS["cfg/cond"], DIFFUSERS["cfg/uncond"]
    for j, w in enumerate(DIFFUSERS["cfg/scales"]):
        # w = 1: diffusers skips guidance and returns cond itself (1 ulp from the formula).
        np.testing.assert_allclose(diffusion.cfg_combine(cond, uncond, float(w)),
                                   DIFFUSERS["cfg/native"][j], rtol=4 * ULP, atol=1e-7)  # fmt: skip
        np.testing.assert_allclose(
            diffusion.cfg_combine(cond, uncond, float(w) + 1.0),
            DIFFUSERS["cfg/original"][j],
            rtol=8 * ULP,
            atol=1e-6,
        )


# --- deterministic sampling and guidance (sections 4 and 5) ----------------------------------


def test_eps_to_flow_puts_the_point_on_the_straight_path():
    rng = np.random.default_rng(5)
    x0, eps = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    ab = np.array([1.0, 0.999, 0.7, 0.3, 0.01, 1e-4])
    x_t = np.sqrt(ab)[:, None] * x0 + np.sqrt(1 - ab)[:, None] * eps
    z, tau, velocity = diffusion.eps_to_flow(x_t, eps, ab)
    # float64: the straight path through (x0, eps) at the time whose ratio of data to noise
    # weights is sqrt(ab) : sqrt(1 - ab)
    ratio = np.sqrt(ab / (1 - np.where(ab < 1, ab, 0.5)))
    want_tau = np.where(ab < 1, ratio / (1 + ratio), 1.0)
    np.testing.assert_allclose(tau, want_tau, rtol=1e-5)
    np.testing.assert_allclose(z, want_tau[:, None] * x0 + (1 - want_tau[:, None]) * eps,
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(velocity, x0 - eps, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError):
        diffusion.eps_to_flow(x_t, eps, ab[:3])


def test_ddim_step_with_the_exact_noise_of_a_point_mass_lands_on_it():
    """Data at one point c: the exact eps is (x - sqrt(ab) c) / sqrt(1 - ab); DDIM is exact."""
    ab = diffusion.alpha_bars(diffusion.linear_beta_schedule(100, 1e-3, 0.2))
    c = jnp.array([0.7, -1.2])

    def exact(x, t):
        a = ab[t][:, None]
        return (x - jnp.sqrt(a) * c) / jnp.sqrt(1 - a)

    x = jax.random.normal(jax.random.key(0), (5, 2))
    for t, t_prev in ((99, 50), (99, -1), (10, 9)):
        got = diffusion.ddim_step(exact, x, t, t_prev, ab, 0.0, jax.random.key(5))
        a_prev = 1.0 if t_prev < 0 else float(ab[t_prev])
        e = exact(x, jnp.full(5, t))
        np.testing.assert_allclose(got, np.sqrt(a_prev) * c + np.sqrt(1 - a_prev) * e, atol=1e-4)

    class Exact(nnx.Module):
        def __call__(self, x, t):
            return exact(x, t)

    samples = diffusion.ddim_sample(jax.random.key(1), Exact(), (5, 2), ab, jnp.arange(0, 100, 11))
    np.testing.assert_allclose(samples, np.broadcast_to(c, (5, 2)), atol=1e-3)


def test_ddim_step_is_an_euler_step_on_the_straight_path():
    """DDIM in the coordinates of eps_to_flow: z' = z + (tau' - tau) v, then rescaled."""
    ab = diffusion.alpha_bars(diffusion.linear_beta_schedule(50, 2e-3, 0.3))
    x = jax.random.normal(jax.random.key(2), (4, 3))

    def model(x_, t_):
        return jnp.tanh(0.8 * x_ + t_[:, None] / 50.0)

    t, t_prev = 40, 25
    z, tau, v = diffusion.eps_to_flow(x, model(x, jnp.full(4, t)), jnp.full(4, ab[t]))
    a = float(ab[t_prev])
    tau_prev = np.sqrt(a) / (np.sqrt(a) + np.sqrt(1 - a))
    want = (np.asarray(z) + (tau_prev - np.asarray(tau))[:, None] * np.asarray(v)) * (
        np.sqrt(a) + np.sqrt(1 - a)
    )
    got = diffusion.ddim_step(model, x, t, t_prev, ab, 0.0, jax.random.key(3))
    np.testing.assert_allclose(got, want, rtol=1e-4,
                               atol=1e-5)  # fmt: skip
    traced = jax.jit(
        lambda x_, t_, p_: diffusion.ddim_step(model, x_, t_, p_, ab, 0.0, jax.random.key(4))
    )
    np.testing.assert_allclose(traced(x, t, t_prev), want, rtol=1e-4, atol=1e-5)


def test_ddim_step_at_eta_1_is_the_forward_posterior_with_the_same_noise():
    """eta = 1 across skipped steps: the Gaussian posterior q(x_s | x_t, x0_hat), written in
    float64 from the precisions of q(x_t | x_s) = N(sqrt(ab_t / ab_s) x_s, 1 - ab_t / ab_s) and
    q(x_s | x0) = N(sqrt(ab_s) x0, 1 - ab_s); the noise is jax.random.normal(key, shape)."""
    ab = diffusion.alpha_bars(diffusion.linear_beta_schedule(60, 1e-3, 0.2))
    x = jax.random.normal(jax.random.key(6), (5, 3))

    def model(x_, t_):
        return jnp.tanh(0.6 * x_ - t_[:, None] / 60.0)

    for t, s in ((40, 39), (40, 12), (7, 0)):
        key = jax.random.key(t)
        eps = np.asarray(model(x, jnp.full(5, t)), np.float64)
        a_t, a_s = float(ab[t]), float(ab[s])
        x64 = np.asarray(x, np.float64)
        x0_hat = (x64 - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
        step_var = 1 - a_t / a_s
        precision = a_t / a_s / step_var + 1 / (1 - a_s)
        mean = (np.sqrt(a_t / a_s) * x64 / step_var + np.sqrt(a_s) * x0_hat / (1 - a_s)) / precision
        z = np.asarray(jax.random.normal(key, x.shape), np.float64)
        got = diffusion.ddim_step(model, x, t, s, ab, 1.0, key)
        np.testing.assert_allclose(got, mean + z / np.sqrt(precision), rtol=2e-4, atol=2e-5)


def test_ddim_step_keeps_the_marginal_of_a_point_mass_for_every_eta():
    """Monte Carlo: forward samples of one point at t, moved to t_prev (one key: the noise is
    independent across the batch), have the forward process's mean sqrt(ab_prev) c and standard
    deviation sqrt(1 - ab_prev); at eta = 0 the key does not matter."""
    ab = diffusion.alpha_bars(diffusion.linear_beta_schedule(30, 1e-2, 0.3))
    c = 0.8
    t, t_prev, n = 25, 6, 40_000

    def exact(x, t_):
        a = ab[t_][:, None]
        return (x - jnp.sqrt(a) * c) / jnp.sqrt(1 - a)

    x = np.sqrt(ab[t]) * c + np.sqrt(1 - ab[t]) * jax.random.normal(jax.random.key(7), (n, 1))
    for eta in (0.0, 0.5, 1.0):
        moved = np.asarray(diffusion.ddim_step(exact, x, t, t_prev, ab, eta, jax.random.key(8)))
        assert abs(moved.mean() - np.sqrt(float(ab[t_prev])) * c) < 0.02
        assert abs(moved.std() - np.sqrt(1 - float(ab[t_prev]))) < 0.01
    same = [
        diffusion.ddim_step(exact, x[:4], t, t_prev, ab, 0.0, jax.random.key(k)) for k in (1, 2)
    ]
    np.testing.assert_array_equal(same[0], same[1])


def test_ddim_sampler_with_the_exact_score_recovers_a_gaussian():
    """With the exact eps of N(m, s^2) data, 100 deterministic steps give its mean and std."""
    ab = diffusion.alpha_bars(diffusion.linear_beta_schedule(1000))
    m, s = 1.5, 0.3

    class ExactEps(nnx.Module):
        def __call__(self, x, t):
            a = ab[t][:, None]
            return jnp.sqrt(1 - a) * (x - jnp.sqrt(a) * m) / (a * s**2 + 1 - a)

    _, _, steps = diffusion.respace(ab, 100)
    samples = diffusion.ddim_sample(jax.random.key(0), ExactEps(), (20_000, 1), ab, steps)
    assert abs(float(samples.mean()) - m) < 0.02
    assert abs(float(samples.std()) - s) < 0.02


def test_score_from_noise_matches_the_regression_of_the_noise_on_x_t():
    """x0 ~ N(0, 1): p_t = N(0, 1), score -x, E[eps | x_t] the regression sqrt(1 - ab) x_t."""
    ab = 0.64
    k0, k1 = jax.random.split(jax.random.key(5))
    x0, eps = jax.random.normal(k0, (200_000,)), jax.random.normal(k1, (200_000,))
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
    slope = float(jnp.sum(eps * x_t) / jnp.sum(x_t**2))  # least squares E[eps | x_t] = slope x_t
    assert slope == pytest.approx(np.sqrt(1 - ab), abs=5e-3)
    x = jnp.linspace(-2.0, 2.0, 9)[:, None]  # (9, 1)
    np.testing.assert_allclose(diffusion.score_from_noise(slope * x, ab), -x, atol=2e-2)
    with pytest.raises(ValueError, match="alpha_bar"):
        diffusion.score_from_noise(x, 1.0)


def test_classifier_guided_eps_is_the_score_of_the_tilted_density():
    """p(x) p(y|x)^w with Gaussian p and a Gaussian likelihood: compare with autodiff."""
    x = jax.random.normal(jax.random.key(3), (5, 2))
    v, m, u, ab = 1.3, jnp.array([1.0, -0.5]), 0.4, 0.6

    def log_p(p):
        return -0.5 * jnp.sum(p**2) / v

    def log_classifier(p):
        return -0.5 * jnp.sum((p - m) ** 2) / u

    for w in (0.0, 1.0, 3.0):
        tilted = jax.grad(lambda p, w=w: log_p(p) + w * log_classifier(p))(x)
        got = diffusion.classifier_guided_eps(-np.sqrt(1 - ab) * jax.grad(log_p)(x),
                                              jax.grad(log_classifier)(x), ab, w)  # fmt: skip
        np.testing.assert_allclose(got, -np.sqrt(1 - ab) * tilted, rtol=1e-5, atol=1e-6)
    # classifier-free guidance: the implicit classifier's gradient is s_cond - s_uncond
    cond, uncond = jax.random.normal(jax.random.key(4), (2, 5, 2))
    implicit = -(cond - uncond) / np.sqrt(1 - ab)
    np.testing.assert_allclose(diffusion.classifier_guided_eps(uncond, implicit, ab, 2.5),
                               diffusion.cfg_combine(cond, uncond, 2.5), rtol=1e-5,
                               atol=1e-6)  # fmt: skip


# --- section 6: the bound in bits per dimension ----------------------------------------------


def _np_discretized_log_prob(x0, mean, std, num_levels):
    """Float64 SciPy version of the discretised Gaussian, written from its definition."""
    from scipy.stats import norm

    half = 1.0 / (num_levels - 1)
    upper = np.where(x0 > 1 - half, np.inf, x0 + half)
    lower = np.where(x0 < -1 + half, -np.inf, x0 - half)
    # the mass of [lower, upper) from the tail farther from the mean: no cancellation
    right = (lower + upper) / 2 > mean
    with np.errstate(divide="ignore"):
        left_mass = np.log(norm.cdf(upper, mean, std) - norm.cdf(lower, mean, std))
        right_mass = np.log(norm.sf(lower, mean, std) - norm.sf(upper, mean, std))
    return np.where(right, right_mass, left_mass)


@pytest.mark.parametrize(
    "num_levels, std", [(2, 0.5), (5, 0.2), (17, 0.01), (17, 0.08), (256, 0.01)]
)
def test_discretized_gaussian_log_prob_matches_scipy_and_sums_to_one(num_levels, std):
    rng = np.random.default_rng(num_levels)
    levels = np.linspace(-1.0, 1.0, num_levels)
    for mean in [-1.3, -0.41, 0.0, 0.27, 1.05]:
        got = diffusion.discretized_gaussian_log_prob(
            jnp.asarray(levels[:, None], jnp.float32),
            jnp.full((num_levels, 1), mean, jnp.float32),
            std,
            num_levels,
        )
        assert float(jax.scipy.special.logsumexp(got)) == pytest.approx(0.0, abs=2e-5)
        want = _np_discretized_log_prob(levels, mean, std, num_levels)
        finite = want > -80  # float64 CDF differences underflow further out
        np.testing.assert_allclose(np.asarray(got)[finite], want[finite], rtol=2e-4, atol=2e-5)
    x0 = rng.choice(levels, size=(3, 4))
    mean = x0 + rng.normal(scale=2 * std, size=x0.shape)
    got = diffusion.discretized_gaussian_log_prob(
        jnp.asarray(x0), jnp.asarray(mean), std, num_levels
    )
    want = _np_discretized_log_prob(x0, mean, std, num_levels).sum(-1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=1e-4)


def test_discretized_gaussian_log_prob_is_finite_and_accurate_far_in_the_tails():
    from scipy.stats import norm

    # level 0 of 17, cell [-1/16, 1/16), mean 0.5 with std 0.01: 43.75 to 56.25 std below the mean
    got = float(
        diffusion.discretized_gaussian_log_prob(jnp.array([[0.0]]), jnp.array([[0.5]]), 0.01)[0]
    )
    want = norm.logcdf(-43.75) + np.log1p(-np.exp(norm.logcdf(-56.25) - norm.logcdf(-43.75)))
    assert got == pytest.approx(want, rel=1e-5)
    # the top level collects everything above its lower edge, from far below
    got = float(
        diffusion.discretized_gaussian_log_prob(jnp.array([[1.0]]), jnp.array([[-1.0]]), 0.02)[0]
    )
    assert got == pytest.approx(norm.logsf((1 - 1 / 16 + 1) / 0.02), rel=1e-5)
    with pytest.raises(ValueError, match="num_levels"):
        diffusion.discretized_gaussian_log_prob(jnp.zeros((1, 1)), jnp.zeros((1, 1)), 1.0, 1)
    with pytest.raises(ValueError, match="one shape"):
        diffusion.discretized_gaussian_log_prob(jnp.zeros((1, 2)), jnp.zeros((1, 3)), 1.0)


def test_prior_kl_matches_a_monte_carlo_kl():
    ab_T = 0.3  # far from 0, so that the term is not negligible
    x0 = jnp.array([[0.5, -1.0], [1.0, 0.0]])
    got = np.asarray(diffusion.prior_kl(x0, jnp.array([0.9, ab_T])))
    z = np.random.default_rng(0).normal(size=(400_000, 1, 2))
    m, s = np.sqrt(ab_T) * np.asarray(x0), np.sqrt(1 - ab_T)
    x_T = m + s * z  # samples of q(x_T | x_0)
    log_q = -0.5 * z**2 - np.log(s) - 0.5 * np.log(2 * np.pi)
    log_p = -0.5 * x_T**2 - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(got, (log_q - log_p).sum(-1).mean(0), rtol=2e-2, atol=2e-3)


def test_vlb_terms_are_the_gaussian_kl_of_posterior_and_model_steps():
    betas = diffusion.linear_beta_schedule(30, 1e-3, 0.3)
    ab = diffusion.alpha_bars(betas)
    model = lambda x, t: jnp.tanh(0.7 * x + t[:, None] / 30.0)  # noqa: E731
    x0 = jnp.asarray(
        np.random.default_rng(1).choice(np.linspace(-1, 1, 17), size=(6, 5)), jnp.float32
    )
    t = jnp.array([1, 2, 7, 15, 29, 3])
    key = jax.random.key(3)
    got = np.asarray(diffusion.vlb_terms(key, model, x0, t, betas, ab))
    x_t, eps = diffusion.q_sample(key, x0, t, ab)
    mean_q, var = diffusion.posterior_mean_var(x_t, x0, t, betas, ab)
    b, a = np.asarray(betas, np.float64)[t][:, None], np.asarray(ab, np.float64)[t][:, None]
    mean_p = (np.asarray(x_t) - b / np.sqrt(1 - a) * np.asarray(model(x_t, t))) / np.sqrt(1 - b)
    # KL of two Gaussians with the same variance v: (difference of means)^2 / (2 v)
    want = ((np.asarray(mean_q, np.float64) - mean_p) ** 2 / (2 * np.asarray(var, np.float64))).sum(
        -1
    )
    np.testing.assert_allclose(got, want, rtol=2e-3)
    # at t = 0 the term is the discretised decoder around the model's mean, std sqrt(beta_0)
    zero = jnp.zeros(6, jnp.int32)
    x_1, _ = diffusion.q_sample(key, x0, zero, ab)
    mean_0 = (x_1 - betas[0] / jnp.sqrt(1 - ab[0]) * model(x_1, zero)) / jnp.sqrt(1 - betas[0])
    want_0 = -diffusion.discretized_gaussian_log_prob(x0, mean_0, jnp.sqrt(betas[0]), 17)
    np.testing.assert_allclose(
        diffusion.vlb_terms(key, model, x0, zero, betas, ab), want_0, rtol=1e-5
    )


def test_vlb_estimate_is_unbiased_for_the_sum_over_steps():
    num_steps = 20
    betas = diffusion.linear_beta_schedule(num_steps, 1e-2, 0.4)
    ab = diffusion.alpha_bars(betas)
    model = lambda x, t: 0.5 * x  # noqa: E731
    x0 = jnp.array([[0.25, -0.5, 1.0]])
    reps = 4000
    many = jnp.repeat(x0, reps, axis=0)
    per_step = [
        float(
            jnp.mean(
                diffusion.vlb_terms(jax.random.key(t), model, many, jnp.full(reps, t), betas, ab)
            )
        )
        for t in range(num_steps)
    ]
    full = float(diffusion.prior_kl(x0, ab)[0]) + sum(per_step)
    draws = np.concatenate(
        [
            np.asarray(diffusion.vlb_estimate(jax.random.key(100 + i), model, many, betas, ab))
            for i in range(10)
        ]
    )
    se = draws.std() / np.sqrt(draws.size)
    assert abs(draws.mean() - full) < 4 * se + 1e-3 * full


def test_the_bound_of_the_exact_model_of_one_point_is_its_prior_term():
    betas = diffusion.linear_beta_schedule(50, 1e-4, 0.2)
    ab = diffusion.alpha_bars(betas)
    point = jnp.array([[0.125, -1.0, 1.0, 0.5]])  # on the 17 levels

    def exact(x_t, t):  # the noise in x_t is known when the data is one point
        a = ab[t][:, None]
        return (x_t - jnp.sqrt(a) * point) / jnp.sqrt(1 - a)

    many = jnp.repeat(point, 64, axis=0)
    got = diffusion.vlb_estimate(jax.random.key(0), exact, many, betas, ab)
    np.testing.assert_allclose(got, diffusion.prior_kl(many, ab), atol=1e-3)
    weights = diffusion.vlb_weights(betas, ab)
    assert float(weights[0]) == 0.0 and bool(jnp.all(weights[1:] > 0))
