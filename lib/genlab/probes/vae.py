"""Probes of chapter 02, the VAE ELBO (references in :mod:`genlab.vae`).

Shape letters: B batch, D data dimensions, Z latent dimensions, K importance samples, N Monte
Carlo samples.
"""

from __future__ import annotations

import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import check, vae
from genlab.probing import Case, Probe, call, close, f32, judged_alone, key_from

LOG_2 = float(np.log(2.0))
LOG_4 = float(np.log(4.0))


def _nonnegative(rtol: float, atol: float):
    """A comparison for a KL: close to the reference and never below -1e-5."""
    matches = close(rtol, atol)

    def compare(got, want, label: str) -> None:
        matches(got, want, label)
        smallest = float(np.min(np.asarray(got), initial=np.inf))
        check.is_true(smallest >= -1e-5, f"{label}: a KL must be >= 0; got {smallest:.4g}")

    return compare


def _finite_close(rtol: float, atol: float):
    """A comparison that first names non-finite outputs (overflowing logits), then compares."""
    matches = close(rtol, atol)

    def compare(got, want, label: str) -> None:
        check.finite(label, got)
        matches(got, want, label)

    return compare


def _near(value, rtol: float = 1e-5, atol: float = 1e-6):
    """A comparison with a known value (a statistical property) instead of the reference."""

    @judged_alone
    def compare(got, want, label: str) -> None:
        check.allclose(label, got, value, rtol=rtol, atol=atol)

    return compare


# --- section 3: Gaussian KL and likelihoods --------------------------------------------------


def gaussian_kl_standard_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("gaussian_kl_standard at the prior, mean and log_var of shape (2, 3)",
             call(jnp.zeros((2, 3)), jnp.zeros((2, 3)))),
        Case("gaussian_kl_standard(mean=[1, 0], log_var=[0, 0])",
             call(jnp.array([1.0, 0.0]), jnp.zeros(2))),
        Case("gaussian_kl_standard(mean=[0], log_var=[log 2])",
             call(jnp.zeros(1), jnp.array([LOG_2]))),
        Case("gaussian_kl_standard(mean=[0], log_var=[log 0.25])",
             call(jnp.zeros(1), jnp.array([-LOG_4]))),
    ]  # fmt: skip
    for shape in [(5,), (4, 3), (2, 3, 6)]:
        mean = f32(rng.normal(scale=2.0, size=shape))
        log_var = f32(rng.uniform(-4.0, 3.0, size=shape))
        cases.append(Case(f"gaussian_kl_standard(mean, log_var of shape {shape})",
                          call(mean, log_var), _nonnegative(1e-5, 1e-5)))  # fmt: skip
    mean = jnp.array([[0.0, 0.0, 3.0], [0.1, -2.0, 0.0]])
    log_var = jnp.array([[-10.0, 5.0, 0.0], [0.0, -0.5, 2.0]])
    cases.append(Case("gaussian_kl_standard with extreme log-variances (-10 and 5)",
                      call(mean, log_var), _nonnegative(1e-5, 1e-5)))  # fmt: skip
    return cases


def gaussian_kl_cases(rng: np.random.Generator) -> list[Case]:
    m, v = jnp.array([[0.3, -1.0], [2.0, 0.5]]), jnp.array([[0.2, -1.0], [1.0, 0.0]])
    one, zero, log4 = jnp.array([1.0]), jnp.array([0.0]), jnp.array([LOG_4])
    cases = [
        Case("gaussian_kl(q, q) for q of shape (2, 2)", call(m, v, m, v), close(1e-5, 1e-6)),
        Case("gaussian_kl(N(1, 1) || N(0, 4)), 1-D Gaussians given as shape (1,)",
             call(one, zero, zero, log4)),
        Case("gaussian_kl(N(0, 4) || N(1, 1))", call(zero, log4, one, zero)),
        Case("gaussian_kl(q of shape (2, 2), p of shape (2,)) (broadcasting)",
             call(m, v, jnp.zeros(2), jnp.zeros(2))),
        # Exact everywhere: a grid of a numerical integral misses a narrow q and far means.
        Case("gaussian_kl(N(0.5, e^-12) || N(0, 1)): a narrow q, standard deviation 0.0025",
             call(f32([0.5]), f32([-12.0]), zero, zero)),
        Case("gaussian_kl with means 120 apart",
             call(f32([60.0, -1.0]), f32([0.5, 0.0]), f32([-60.0, 2.0]), f32([1.0, -0.5]))),
    ]  # fmt: skip
    for shape_q, shape_p in [((4,), (4,)), ((3, 5), (5,)), ((2, 3, 2), (3, 2))]:
        mq = f32(rng.normal(scale=2.0, size=shape_q))
        vq = f32(rng.uniform(-3.0, 2.0, size=shape_q))
        mp = f32(rng.normal(size=shape_p))
        vp = f32(rng.uniform(-2.0, 3.0, size=shape_p))
        cases.append(
            Case(
                f"gaussian_kl(q of shape {shape_q}, p of shape {shape_p})",
                call(mq, vq, mp, vp),
                _nonnegative(1e-5, 1e-5),
            )
        )
        cases.append(
            Case(
                f"gaussian_kl(p of shape {shape_p}, q of shape {shape_q}) (arguments swapped)",
                call(mp, vp, mq, vq),
                _nonnegative(1e-5, 1e-5),
            )
        )
    return cases


def gaussian_log_likelihood_cases(rng: np.random.Generator) -> list[Case]:
    x, m, v = jnp.array([0.5, -1.0, 2.0]), jnp.array([0.0, 1.0, 2.5]), jnp.array([0.0, 1.0, -2.0])
    zeros = jnp.zeros((2, 3))
    cases = [
        Case("gaussian_log_likelihood at the mean of N(0, I), shape (2, 3)",
             call(zeros, zeros, zeros), close(1e-6, 1e-6)),
        Case("gaussian_log_likelihood(x, mean, log_var of shape (3,)) vs norm.logpdf summed",
             call(x, m, v)),
        Case("gaussian_log_likelihood(x (4, 3), mean (3,), log_var (3,)) (broadcasting)",
             call(jnp.ones((4, 3)), m, v), close(1e-5, 1e-4)),
        Case("gaussian_log_likelihood(x (2, 3), 0.0, 0.0) (Python floats: the standard normal)",
             call(zeros, 0.0, 0.0), close(1e-6, 1e-6)),
        Case("gaussian_log_likelihood(x (4, 3), 1.5, -0.5) (Python floats)",
             call(jnp.ones((4, 3)), 1.5, -0.5), close(1e-5, 1e-5)),
    ]  # fmt: skip
    for shape in [(6,), (3, 4), (2, 2, 5)]:
        x = f32(rng.normal(scale=2.0, size=shape))
        m = f32(rng.normal(size=shape))
        v = f32(rng.uniform(-3.0, 3.0, size=shape))
        cases.append(Case(f"gaussian_log_likelihood(x, mean, log_var of shape {shape})",
                          call(x, m, v), close(1e-5, 1e-4)))  # fmt: skip
    x = f32(rng.normal(size=(5, 2)))
    m, v = f32(rng.normal(size=2)), f32(rng.uniform(-2.0, 2.0, size=2))
    cases.append(Case("gaussian_log_likelihood(x (5, 2), mean (2,), log_var (2,))",
                      call(x, m, v), close(1e-5, 1e-4)))  # fmt: skip
    return cases


def bernoulli_log_likelihood_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("bernoulli_log_likelihood(x (1, 3), logits 0 of shape (1, 3))",
             call(jnp.array([[1.0, 0.0, 0.3]]), jnp.zeros((1, 3))), close(1e-6, 1e-6)),
        Case("bernoulli_log_likelihood(x=[1, 0], logits=[2, 2])",
             call(jnp.array([1.0, 0.0]), jnp.array([2.0, 2.0]))),
        Case("bernoulli_log_likelihood with logits +-200",
             call(jnp.array([1.0, 0.0, 1.0]), jnp.array([-200.0, 200.0, 200.0])),
             _finite_close(1e-5, 1e-6)),
    ]  # fmt: skip
    for shape in [(8,), (3, 5), (2, 3, 4)]:
        x = f32(rng.uniform(0.0, 1.0, size=shape))
        logits = f32(rng.normal(scale=4.0, size=shape))
        cases.append(Case(f"bernoulli_log_likelihood(x, logits of shape {shape})",
                          call(x, logits), close(1e-5, 1e-4)))  # fmt: skip
    x = jnp.array([[0.0, 1.0, 0.5, 1.0], [1.0, 0.0, 0.25, 0.0]])
    logits = jnp.array([[-150.0, 150.0, 90.0, -90.0], [0.0, -300.0, -40.0, 1e-3]])
    cases.append(
        Case(
            "bernoulli_log_likelihood(x (2, 4), extreme logits up to +-300)",
            call(x, logits),
            _finite_close(1e-5, 1e-4),
        )
    )
    cases.append(
        Case(
            "bernoulli_log_likelihood(x (2, 4), logits (4,)) (broadcasting)",
            call(x, logits[0]),
            _finite_close(1e-5, 1e-4),
        )
    )
    return cases


# --- section 4: reparameterization and gradient estimators -----------------------------------


def _reparameterize_grads(key, mean, log_var, argnum: int):
    def run(reparameterize):
        return jax.grad(lambda m, v: reparameterize(key, m, v).sum(), argnums=argnum)(mean, log_var)

    return run


def _sample_variance(key, n: int, log_var: float):
    def run(reparameterize):
        return np.var(np.asarray(reparameterize(key, jnp.zeros(n), jnp.full(n, log_var))))

    return run


def reparameterize_cases(rng: np.random.Generator) -> list[Case]:
    key = jax.random.key(0)
    mean, log_var = jnp.array([[0.0, 1.0, -2.0]]), jnp.array([[0.0, LOG_4, -1.0]])
    cases = [
        Case("reparameterize(key, mean (1, 3), log_var (1, 3)) vs mean + exp(0.5 * log_var) "
             "* normal(key, mean.shape)", call(key, mean, log_var),
             close(1e-6, 1e-6, dtype=jnp.float32)),
        Case("reparameterize with log_var = -40 (gives the mean back)",
             call(key, mean, jnp.full((1, 3), -40.0))),
        Case("sample variance of 20,000 draws of reparameterize with log_var = log 4",
             _sample_variance(jax.random.key(1), 20_000, LOG_4), _near(4.0, rtol=0.05)),
        Case("d sum(reparameterize(key, mean, log_var)) / d mean",
             _reparameterize_grads(key, mean, log_var, 0), close(1e-6, 1e-6)),
        Case("d sum(reparameterize(key, mean, log_var)) / d log_var",
             _reparameterize_grads(key, mean, log_var, 1), close(1e-5, 1e-6)),
    ]  # fmt: skip
    for shape in [(4,), (3, 2), (2, 3, 5)]:
        mean = f32(rng.normal(scale=2.0, size=shape))
        log_var = f32(rng.uniform(-4.0, 3.0, size=shape))
        cases.append(
            Case(
                f"reparameterize(key, mean, log_var of shape {shape}) vs the pinned recipe",
                call(key_from(rng), mean, log_var),
                close(1e-5, 1e-5),
            )
        )
    return cases


def _estimator_cases(name: str, rng: np.random.Generator, recipe: str, atol: float):
    """The cases shared by the two gradient estimators (one visible MC tolerance differs)."""
    theta = jnp.array([-1.0, 0.0, 0.5, 2.0])
    cases = [
        Case(f"{name}(key, theta (4,), 5) vs the pinned recipe {recipe}",
             call(jax.random.key(0), theta, 5), close(1e-5, 1e-5)),
        Case(f"{name} with 200,000 samples vs the true gradient 2 theta",
             call(jax.random.key(1), theta, 200_000), _near(2.0 * np.asarray(theta), atol=atol)),
        Case(f"{name}(key, scalar theta, 3)", call(jax.random.key(0), jnp.float32(1.0), 3),
             close(1e-5, 1e-5)),
    ]  # fmt: skip
    for shape, n in [((), 1), ((3,), 7), ((2, 3), 16)]:
        theta = f32(rng.normal(size=shape))
        cases.append(Case(f"{name}(key, theta of shape {shape}, {n}) vs the pinned recipe",
                          call(key_from(rng), theta, n), close(1e-5, 1e-5)))  # fmt: skip
    return cases


def score_function_grad_cases(rng: np.random.Generator) -> list[Case]:
    return _estimator_cases("score_function_grad", rng, "mean(z**2 * (z - theta), axis=0)", 0.15)


def reparameterization_grad_cases(rng: np.random.Generator) -> list[Case]:
    return _estimator_cases("reparameterization_grad", rng, "mean(2 (theta + eps), axis=0)", 0.03)


# --- section 5: the importance-weighted bound ------------------------------------------------


def iwae_bound_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("iwae_bound of equal log-weights -2.5, shape (4, 3)", call(jnp.full((4, 3), -2.5)),
             close(1e-6, 1e-6)),
        Case("iwae_bound([log 1, log 3])", call(jnp.log(jnp.array([1.0, 3.0]))),
             close(1e-6, 1e-6)),
        Case("iwae_bound with K = 1, shape (1, 2)", call(jnp.array([[0.7, -3.0]]))),
        Case("iwae_bound([-1000, -1001])", call(jnp.array([-1000.0, -1001.0])),
             _finite_close(1e-6, 1e-6)),
    ]  # fmt: skip
    for shape in [(5,), (7, 3), (3, 2, 4), (1, 6)]:
        log_weights = f32(50.0 * rng.normal(size=shape) - 300.0)
        cases.append(Case(f"iwae_bound(log_weights of shape {shape}, around -300)",
                          call(log_weights), close(1e-5, 1e-4)))  # fmt: skip
    inf = jnp.inf
    large = jnp.array([[1000.0, -inf, 3.0], [999.0, 2.0, -inf], [998.0, -1.0, 4.0]])
    cases.append(Case("iwae_bound(log_weights (3, 3) with entries near 1000 and -inf)",
                      call(large), close(1e-5, 1e-4)))  # fmt: skip
    some_inf = f32(rng.normal(size=(4, 3))).at[:, 1].set(-inf).at[2, 2].set(-inf)
    cases.append(Case("iwae_bound(log_weights (4, 3) with a column of -inf, so -inf there)",
                      call(some_inf), close(1e-5, 1e-4)))  # fmt: skip
    return cases


# --- section 6: the ELBO ---------------------------------------------------------------------


def _visible_pair(a):
    """The visible checks' linear encoder (log-variance -1) and decoder (3 z A^T)."""
    return (lambda x: (x @ a, jnp.full((x.shape[0], a.shape[1]), -1.0)),
            lambda z: 3.0 * z @ a.T)  # fmt: skip


def _random_pair(a_enc, a_dec):
    """A linear encoder with log-variances in (-1, 0) and a linear decoder; Z = a_dec rows."""
    z = a_dec.shape[0]
    return (lambda x: (x @ a_enc[:, :z], 0.5 * jnp.tanh(x @ a_enc[:, z:]) - 0.5),
            lambda latent: latent @ a_dec)  # fmt: skip


def _elbo_run(key, x, pair, *weights, beta=None, jit: bool = False):
    def run(elbo):
        encode, decode = pair(*weights)
        if jit:
            return jax.jit(lambda b: elbo(key, x, encode, decode, beta=b))(beta)
        if beta is None:
            return elbo(key, x, encode, decode)
        return elbo(key, x, encode, decode, beta=beta)

    return run


def _prior_pair(z: int, d: int):
    return (lambda x: (jnp.zeros((x.shape[0], z)), jnp.zeros((x.shape[0], z))),
            lambda latent: jnp.zeros((latent.shape[0], d)))  # fmt: skip


def elbo_cases(rng: np.random.Generator) -> list[Case]:
    key = jax.random.key(0)
    x = jnp.array([[1.0, 0.0, 0.5], [0.0, 0.0, 1.0]])  # (B, D) = (2, 3)
    a = jnp.array([[1.0, -0.5], [0.3, 0.2], [-1.0, 0.4]])  # (D, Z)
    cases = [
        Case("elbo(key, x (2, 3)) with a prior encoder and logits 0",
             _elbo_run(key, x, _prior_pair, 2, 3), close(1e-6, 1e-6)),
        Case("elbo(key, x (2, 3), linear encoder and decoder) with the default beta",
             _elbo_run(key, x, _visible_pair, a), close(1e-5, 1e-5)),
        Case("elbo(beta=0) is the reconstruction term",
             _elbo_run(key, x, _visible_pair, a, beta=0.0), close(1e-5, 1e-5)),
        Case("elbo(beta=4)", _elbo_run(key, x, _visible_pair, a, beta=4.0), close(1e-5, 1e-5)),
    ]  # fmt: skip
    for (b, d, z), beta in [((4, 5, 2), 1.0), ((3, 8, 3), 0.25), ((1, 6, 1), 3.0)]:
        x = f32(rng.uniform(size=(b, d)))
        a_enc = f32(rng.normal(size=(d, 2 * z)))
        a_dec = f32(2.0 * rng.normal(size=(z, d)))
        key = key_from(rng)
        cases.append(
            Case(
                f"elbo(key, x of shape {(b, d)}, linear encoder and decoder with "
                f"Z = {z}, beta={beta})",
                _elbo_run(key, x, _random_pair, a_enc, a_dec, beta=beta),
                close(1e-5, 1e-4),
            )
        )
    cases.append(
        Case(
            "elbo with a JAX scalar beta = float32(0.5)",
            _elbo_run(key, x, _random_pair, a_enc, a_dec, beta=jnp.float32(0.5)),
            close(1e-5, 1e-4),
        )
    )
    cases.append(
        Case(
            "elbo under jax.jit with a traced scalar beta = 0.5 (as in training)",
            _elbo_run(key, x, _random_pair, a_enc, a_dec, beta=jnp.float32(0.5), jit=True),
            close(1e-5, 1e-4),
        )
    )
    return cases


# --- section 5: the exact gap (challenge) ----------------------------------------------------


def _ppca(rng: np.random.Generator, d: int, z: int, orthogonal: bool):
    w = rng.normal(size=(d, z))
    if orthogonal:
        w = np.linalg.qr(w)[0] * rng.uniform(0.5, 2.0, size=z)
    return f32(w), f32(rng.normal(size=d)), jnp.float32(rng.uniform(0.1, 1.0))


def elbo_gap_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    w, b, s = _ppca(rng, 5, 2, orthogonal=True)
    x = f32(rng.normal(size=(3, 5)))
    post_mean, post_cov = vae.linear_gaussian_posterior(x, w, b, s)
    post_log_var = jnp.broadcast_to(jnp.log(jnp.diag(post_cov)), post_mean.shape)
    cases.append(Case("elbo_gap with q = the exact (diagonal) posterior is 0",
                      call(x, w, b, s, post_mean, post_log_var), close(1e-4, 2e-4)))  # fmt: skip
    cases.append(Case("elbo_gap with the posterior mean shifted by 1 (orthogonal W)",
                      call(x, w, b, s, post_mean + 1.0, post_log_var),
                      close(1e-4, 2e-4)))  # fmt: skip
    for (d, z), batch in [((5, 2), (3,)), ((4, 3), (2, 2)), ((5, 2), ())]:
        w, b, s = _ppca(rng, d, z, orthogonal=False)
        x = f32(rng.normal(size=(*batch, d)))
        mean_q = f32(rng.normal(size=(*batch, z)))
        log_var_q = f32(rng.uniform(-2.0, 1.0, size=(*batch, z)))
        cases.append(Case(f"elbo_gap(x of shape {(*batch, d)}, W {(d, z)}, q of shape "
                          f"{(*batch, z)}) (full-covariance posterior)",
                          call(x, w, b, s, mean_q, log_var_q), close(1e-4, 2e-4)))  # fmt: skip
    return cases


# --- section 6: the training step ------------------------------------------------------------

STEP_CONFIG = vae.VAEConfig(data_dim=64, latent_dim=2, hidden_dim=128)
STEP_LR, STEP_BATCH, STEP_COUNT = 3e-3, 128, 200
# Held-out ELBO (nats per image, binarised digits, 10 samples per image) after STEP_COUNT steps,
# measured for probe seeds 1-3: correct steps (the reference and three alternative styles)
# -25.42, -25.66, -25.87; steps that leave the encoder untrained (the seed's KL(p(x|z) || p(x))
# loss, a detached encoder) -27.5 to -27.9; no update at all -47 to -53; gradient ascent diverges.
STEP_MIN_ELBO = -26.7
_HELD_OUT = 300


def _digits():
    from genlab import data

    images, _ = data.load_digits()
    order = np.random.default_rng(0).permutation(len(images))
    return jnp.asarray(images[order[_HELD_OUT:]]), jnp.asarray(images[order[:_HELD_OUT]])


def _flat(model) -> dict:
    """The model's parameters as one vector per submodule (leaves in NNX's order)."""
    out = {}
    for part in ("encoder", "decoder"):
        leaves = jax.tree_util.tree_leaves(nnx.state(getattr(model, part), nnx.Param))
        out[part] = np.concatenate([np.asarray(leaf).ravel() for leaf in leaves])
    return out


def _unflat(template, params: dict):
    """A copy of ``template`` with the parameters of ``params`` (as made by :func:`_flat`)."""
    model = nnx.clone(template)
    for part in ("encoder", "decoder"):
        state = nnx.state(getattr(model, part), nnx.Param)
        leaves, treedef = jax.tree_util.tree_flatten(state)
        sizes = [leaf.size for leaf in leaves]
        vector = np.asarray(params[part])
        check.is_true(vector.shape == (sum(sizes),),
                      f"the {part} has {vector.size} parameters, "
                      f"expected {sum(sizes)}")  # fmt: skip
        pieces = np.split(vector, np.cumsum(sizes)[:-1])
        new = [jnp.asarray(p.reshape(leaf.shape), leaf.dtype) for p, leaf in zip(pieces, leaves)]
        nnx.update(getattr(model, part), jax.tree_util.tree_unflatten(treedef, new))
    return model


_JITTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _jitted(step):
    """``nnx.jit(step)``, made once per function (each new wrapper would compile again)."""
    try:
        return _JITTED.setdefault(step, nnx.jit(step))
    except TypeError:  # not weak-referenceable
        return nnx.jit(step)


def _training_run(seed: int):
    def run(vae_train_step):
        x_train, _ = _digits()
        model = vae.VAE(STEP_CONFIG, rngs=nnx.Rngs(seed))
        optimizer = nnx.Optimizer(model, optax.adam(STEP_LR), wrt=nnx.Param)
        k_idx, k_bin, k_elbo = jax.random.split(jax.random.key(seed), 3)
        idx = jax.random.randint(k_idx, (STEP_COUNT, STEP_BATCH), 0, x_train.shape[0])
        batches = vae.binarize(k_bin, x_train[idx])  # (S, B, D)
        keys = jax.random.split(k_elbo, STEP_COUNT)
        step = _jitted(vae_train_step)
        before = _flat(model)
        one = jnp.float32(1.0)
        losses = [step(model, optimizer, batches[0], keys[0], one)]
        after_one = _flat(model)
        for i in range(1, STEP_COUNT):
            losses.append(step(model, optimizer, batches[i], keys[i], one))
        return {"before": before, "after_one": after_one, "final": _flat(model),
                "losses": np.asarray(jnp.stack([jnp.asarray(v) for v in losses]))}  # fmt: skip

    return run


def held_out_elbo(params: dict, seed: int, num_samples: int = 10) -> float:
    """The held-out ELBO (nats per image, trusted side) of a VAE with ``params``."""
    _, x_test = _digits()
    model = _unflat(vae.VAE(STEP_CONFIG, rngs=nnx.Rngs(0)), params)
    k_bin, k_z = jax.random.split(jax.random.key(10_000 + seed))
    x = vae.binarize(k_bin, x_test)
    keys = jax.random.split(k_z, num_samples)
    values = jax.vmap(lambda k: vae.elbo(k, x, model.encode, model.decode))(keys)  # (S, B)
    return float(jnp.mean(values))


def _judge_training(seed: int):
    def compare(got, want, label: str) -> None:
        check.is_true(isinstance(got, dict) and set(got) >= {"before", "after_one", "final",
                                                             "losses"},
                      f"{label}: the probe's outputs are incomplete")  # fmt: skip
        losses = np.asarray(got["losses"], np.float64)
        check.shape(f"{label}: losses", losses, (STEP_COUNT,))
        check.is_true(np.all(np.isfinite(losses)),
                      f"{label}: the loss became NaN or infinite at step "
                      f"{int(np.argmin(np.isfinite(losses)))}")  # fmt: skip
        first = float(np.asarray(want["losses"])[0])
        check.is_true(abs(losses[0] - first) <= 1e-3 * abs(first) + 1e-3,
                      f"{label}: the first returned loss is {losses[0]:.4f}, but the batch mean of "
                      f"the negative ELBO before the update is {first:.4f}")  # fmt: skip
        for part in ("encoder", "decoder"):
            moved = np.max(np.abs(np.asarray(got["after_one"][part])
                                  - np.asarray(got["before"][part])))  # fmt: skip
            check.is_true(moved > 0.0, f"{label}: the first step left every {part} parameter "
                          f"unchanged: the gradient does not reach the {part}")  # fmt: skip
        early, late = losses[:20].mean(), losses[-20:].mean()
        check.is_true(late < early - 5.0, f"{label}: the loss did not fall (mean of the first 20 "
                      f"steps {early:.2f}, of the last 20 {late:.2f} nats)")  # fmt: skip
        value = held_out_elbo(got["final"], seed)
        check.is_true(value >= STEP_MIN_ELBO,
                      f"{label}: held-out ELBO {value:.2f} nats per image after {STEP_COUNT} "
                      f"steps; a correct step reaches at least {STEP_MIN_ELBO}")  # fmt: skip

    return compare


def _one_step(seed: int, beta):
    def run(vae_train_step):
        x_train, _ = _digits()
        model = vae.VAE(STEP_CONFIG, rngs=nnx.Rngs(seed))
        optimizer = nnx.Optimizer(model, optax.adam(STEP_LR), wrt=nnx.Param)
        x = vae.binarize(jax.random.key(seed), x_train[:STEP_BATCH])
        step = _jitted(vae_train_step)
        loss = step(model, optimizer, x, jax.random.key(seed + 1), jnp.float32(beta))
        return loss, _flat(model)

    return run


_PAD_FILLS = ("other digits", "NaN", "+-infinity", "1e30", "0.5")


def _masked_step(seed: int, beta, fill: str, share: float):
    """One step on a batch whose padded rows (valid False) hold ``fill``; loss and parameters."""

    def run(vae_train_step):
        x_train, _ = _digits()
        model = vae.VAE(STEP_CONFIG, rngs=nnx.Rngs(seed))
        optimizer = nnx.Optimizer(model, optax.adam(STEP_LR), wrt=nnx.Param)
        rng = np.random.default_rng(seed)
        valid = rng.uniform(size=STEP_BATCH) < share
        valid[rng.integers(STEP_BATCH)] = True  # at least one valid row
        x = np.asarray(vae.binarize(jax.random.key(seed), x_train[:STEP_BATCH]))
        if fill == "other digits":
            pad = np.asarray(vae.binarize(jax.random.key(seed + 7), x_train[-STEP_BATCH:]))
        elif fill == "+-infinity":
            pad = np.where(rng.uniform(size=x.shape) < 0.5, np.inf, -np.inf)
        else:
            pad = np.full(x.shape, {"NaN": np.nan, "1e30": 1e30, "0.5": 0.5}[fill])
        x = jnp.asarray(np.where(valid[:, None], x, pad), jnp.float32)
        step = _jitted(vae_train_step)
        loss = step(model, optimizer, x, jax.random.key(seed + 1), jnp.float32(beta),
                    jnp.asarray(valid))  # fmt: skip
        return loss, _flat(model)

    return run


def vae_train_step_cases(rng: np.random.Generator) -> list[Case]:
    seed = int(rng.integers(1 << 20))
    fills = [str(f) for f in rng.permutation(_PAD_FILLS)]
    masked = [
        Case(f"vae_train_step(..., valid): about {share:.0%} of the {STEP_BATCH} rows valid, the "
             f"padded rows filled with {fill}, beta {beta}: the loss and the parameters after one "
             f"step", _masked_step(seed + 10 + i, beta, fill, share), close(1e-4, 1e-3))
        for i, (fill, beta, share) in enumerate(zip(fills, [1.0, 2.5, 1.0, 0.5, 1.0],
                                                    [0.6, 0.3, 0.9, 0.5, 0.02]))
    ]  # fmt: skip
    return [
        Case(f"vae_train_step: {STEP_COUNT} steps of Adam({STEP_LR}) on binarised digits, batch "
             f"{STEP_BATCH}, from VAE seed {seed}", _training_run(seed), _judge_training(seed)),
        Case("vae_train_step(..., beta=4.0): the loss returned and the parameters after one step",
             _one_step(seed + 1, 4.0), close(1e-4, 1e-3)),
        Case("vae_train_step(..., beta=0.0): the loss returned and the parameters after one step",
             _one_step(seed + 2, 0.0), close(1e-4, 1e-3)),
    ] + masked  # fmt: skip


# --- section 7: diagnostics ------------------------------------------------------------------


def _small_vae(seed: int):
    return vae.VAE(vae.VAEConfig(data_dim=6, latent_dim=2, hidden_dim=5), rngs=nnx.Rngs(seed))


def _loss(name: str):
    key = jax.random.key(3)

    def elbo_loss(model, x):
        return -jnp.mean(vae.elbo(key, x, model.encode, model.decode))

    def prior_decoder_loss(model, x):  # decodes prior samples: the encoder is never called
        z = jax.random.normal(key, (x.shape[0], 2))
        return -jnp.mean(vae.bernoulli_log_likelihood(x, model.decode(z)))

    def kl_only(model, x):
        return jnp.mean(vae.gaussian_kl_standard(*model.encode(x)))

    def detached_encoder(model, x):
        def encode(v):
            return jax.tree_util.tree_map(jax.lax.stop_gradient, model.encode(v))

        return -jnp.mean(vae.elbo(key, x, encode, model.decode))

    def weight_decay(model, x):
        leaves = jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))
        return 0.5 * sum(jnp.sum(leaf**2) for leaf in leaves) + 0.0 * jnp.sum(x)

    return {"the negative ELBO": elbo_loss, "a decoder loss on prior samples": prior_decoder_loss,
            "the KL term alone": kl_only, "the ELBO with a detached encoder": detached_encoder,
            "half the squared norm of all parameters": weight_decay}[name]  # fmt: skip


def _grad_norms_run(loss_name: str, seed: int, x):
    def run(encoder_decoder_grad_norms):
        return encoder_decoder_grad_norms(_loss(loss_name), _small_vae(seed), x)

    return run


def encoder_decoder_grad_norms_cases(rng: np.random.Generator) -> list[Case]:
    x = jnp.array([[1.0, 0.0, 1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]])
    cases = [Case("encoder_decoder_grad_norms(the negative ELBO, VAE seed 0, x (2, 6))",
                  _grad_norms_run("the negative ELBO", 0, x), close(1e-4, 1e-6))]  # fmt: skip
    names = [
        "a decoder loss on prior samples",
        "the KL term alone",
        "the ELBO with a detached encoder",
        "half the squared norm of all parameters",
    ]
    for name in names:
        seed = int(rng.integers(1000))
        x = f32(rng.integers(0, 2, size=(3, 6)))
        cases.append(Case(f"encoder_decoder_grad_norms({name}, VAE seed {seed}, x (3, 6))",
                          _grad_norms_run(name, seed, x), close(1e-4, 1e-6)))  # fmt: skip
    return cases


def _kl_suspects() -> dict[str, tuple[object, frozenset[str]]]:
    """Functions claiming to be KL(q || N(0, I)), each with the symptoms it really has."""

    def circulating(mean, log_var):  # sum[mu log(mu / sigma) + sigma - 1], as it circulates
        std = jnp.exp(0.5 * log_var)
        return jnp.sum(mean * jnp.log(mean / std) + std - 1.0, axis=-1)

    def expm1_style(mean, log_var):
        return 0.5 * jnp.sum(mean**2 + jnp.expm1(log_var) - log_var, axis=-1)

    def from_std(mean, log_var):
        std = jnp.exp(0.5 * log_var)
        return jnp.sum(-jnp.log(std) + 0.5 * (std**2 + mean**2) - 0.5, axis=-1)

    def symptoms(*names):
        return frozenset(names)

    none = frozenset()
    everything = frozenset(vae.KL_SYMPTOMS)
    return {
        "a: written with the variance": (vae.gaussian_kl_standard, none),
        "b: written with expm1": (expm1_style, none),
        "c: written with the standard deviation": (from_std, none),
        "d: the circulating formula": (circulating, everything),
        "e: a KL without the -1": (
            lambda m, v: 0.5 * jnp.sum(jnp.exp(v) + m**2 - v, axis=-1),
            symptoms("nonzero at the prior")),
        "f: a KL with its sign flipped": (
            lambda m, v: -vae.gaussian_kl_standard(m, v), symptoms("negative")),
        "g: a KL without its log term": (
            lambda m, v: 0.5 * jnp.sum(jnp.exp(v) + m**2 - 1.0, axis=-1), symptoms("negative")),
        "h: the mean where its square belongs": (
            lambda m, v: 0.5 * jnp.sum(jnp.exp(v) + m - 1.0 - v, axis=-1), symptoms("negative")),
        "i: the log-variance used as the variance": (
            lambda m, v: 0.5 * jnp.sum(v + m**2 - 1.0 - jnp.log(v), axis=-1),
            symptoms("nonzero at the prior", "not finite")),
        "j: the reverse KL(N(0, I) || q)": (
            lambda m, v: 0.5 * jnp.sum((1.0 + m**2) * jnp.exp(-v) - 1.0 + v, axis=-1), none),
        "k: the KL averaged over dimensions": (
            lambda m, v: 0.5 * jnp.mean(jnp.exp(v) + m**2 - 1.0 - v, axis=-1), none),
        "l: the log of the true KL": (
            lambda m, v: jnp.log(vae.gaussian_kl_standard(m, v)), everything),
        "m: a square root of the mean in the mean term": (
            lambda m, v: 0.5 * jnp.sum(jnp.exp(v) + jnp.sqrt(m) ** 4 - 1.0 - v, axis=-1),
            symptoms("not finite")),
        "n: the standard deviation where the variance belongs": (
            lambda m, v: 0.5 * jnp.sum(jnp.exp(0.5 * v) + m**2 - 1.0 - 0.5 * v, axis=-1), none),
    }  # fmt: skip


def _symptoms_as_flags(answer) -> np.ndarray:
    """A student's answer (a collection of symptom names) as one flag per name of the
    vocabulary; a name outside it is an error that names the vocabulary."""
    if isinstance(answer, str):
        raise TypeError(f"kl_diagnostics must return a set of symptom names, got the string "
                        f"{answer!r}")  # fmt: skip
    names = set(answer)
    unknown = names - set(vae.KL_SYMPTOMS)
    if unknown:
        raise ValueError(f"unknown symptom names {sorted(map(str, unknown))}; use only "
                         f"{list(vae.KL_SYMPTOMS)}")  # fmt: skip
    return np.array([name in names for name in vae.KL_SYMPTOMS])


def _symptoms_are(truth: frozenset[str]):
    @judged_alone
    def compare(got, want, label: str) -> None:
        found = {n for n, flag in zip(vae.KL_SYMPTOMS, np.asarray(got).tolist()) if flag}
        check.is_true(found == set(truth), f"{label}: reported {sorted(found)}; the suspect "
                      f"has {sorted(truth)}")  # fmt: skip

    return compare


def kl_diagnostics_cases(rng: np.random.Generator) -> list[Case]:
    suspects = _kl_suspects()
    order = rng.permutation(len(suspects))
    names = list(suspects)
    cases = []
    for i in order:
        function, truth = suspects[names[i]]
        cases.append(Case(f"kl_diagnostics(suspect {names[i][0]})",
                          (lambda f, fn=function: _symptoms_as_flags(f(fn))),
                          _symptoms_are(truth)))  # fmt: skip
    return cases


def _likelihood(name: str):
    def sigmoid_distance(x, logits):  # a "reconstruction term" sum sigma(x - x')
        return -jnp.sum(jax.nn.sigmoid(x - jax.nn.sigmoid(logits)), axis=-1)

    return {
        "the Bernoulli log-likelihood": vae.bernoulli_log_likelihood,
        "-sum sigmoid(x - x')": sigmoid_distance,
        "the Bernoulli log-likelihood averaged over pixels":
            lambda x, logits: jnp.mean(x * jax.nn.log_sigmoid(logits)
                                       + (1 - x) * jax.nn.log_sigmoid(-logits), -1),
        "a unit-variance Gaussian at sigmoid(logits)":
            lambda x, logits: vae.gaussian_log_likelihood(x, jax.nn.sigmoid(logits), 0.0),
        "minus the squared error to sigmoid(logits)":
            lambda x, logits: -jnp.sum((x - jax.nn.sigmoid(logits)) ** 2, axis=-1),
        "a hundredfold Bernoulli log-likelihood":
            lambda x, logits: 100.0 * vae.bernoulli_log_likelihood(x, logits),
    }[name]  # fmt: skip


def log_normalizer_cases(rng: np.random.Generator) -> list[Case]:
    logits = jnp.array([0.5, -1.0, 2.0])
    cases = [
        Case("log_normalizer(the Bernoulli log-likelihood, logits (3,)) = 0",
             lambda f: f(vae.bernoulli_log_likelihood, logits), close(1e-5, 1e-5)),
        Case("log_normalizer(-sum sigmoid(x - x'), logits (3,))",
             lambda f: f(_likelihood("-sum sigmoid(x - x')"), logits), close(1e-5, 1e-5)),
        Case("log_normalizer with D = 1", lambda f: f(vae.bernoulli_log_likelihood,
                                                     jnp.array([3.0])), close(1e-5, 1e-5)),
    ]  # fmt: skip
    names = [
        "the Bernoulli log-likelihood",
        "-sum sigmoid(x - x')",
        "the Bernoulli log-likelihood averaged over pixels",
        "a unit-variance Gaussian at sigmoid(logits)",
        "minus the squared error to sigmoid(logits)",
        "a hundredfold Bernoulli log-likelihood",
    ]
    for name in names:
        d = int(rng.choice([3, 8]))
        logits = f32(rng.normal(scale=2.0, size=d))
        cases.append(
            Case(
                f"log_normalizer({name}, logits of shape ({d},))",
                (lambda f, n=name, logits=logits: f(_likelihood(n), logits)),
                close(1e-5, 1e-4),
            )
        )
    return cases


def active_latents_cases(rng: np.random.Generator) -> list[Case]:
    exact = close(0.0, 0.0, dtype="bool")
    spread = jnp.array([[0.0, 1.0, 0.3], [0.0, -1.0, 0.3], [0.02, 0.5, 0.3], [-0.02, -0.5, 0.3]])
    cases = [
        Case("active_latents(mean (4, 3): a spread, a constant and a nearly constant column)",
             call(spread), exact),
        Case("active_latents(mean (2, 1) = [[0], [0.16]]): population variance 0.0064, not 0.0128",
             call(jnp.array([[0.0], [0.16]])), exact),
        Case("active_latents(mean (4, 3), threshold=0.5)", call(spread, 0.5), exact),
        Case("active_latents(mean (4, 3), threshold=0.0)", call(spread, 0.0), exact),
    ]  # fmt: skip
    for n, z in [(50, 4), (200, 8), (3, 6)]:
        scales = rng.choice([0.0, 0.03, 0.08, 0.2, 1.0, 3.0], size=z)
        mean = f32(rng.normal(size=(n, z)) * scales + rng.normal(size=z))
        cases.append(Case(f"active_latents(mean of shape {(n, z)} with per-dimension spreads)",
                          call(mean), exact))  # fmt: skip
        threshold = float(rng.choice([0.001, 0.05, 1.0]))
        cases.append(Case(f"active_latents(mean of shape {(n, z)}, threshold={threshold})",
                          call(mean, threshold), exact))  # fmt: skip
    return cases


def _direction_suspects() -> dict[str, tuple[object, str]]:
    """Functions claiming to be KL(q || p) of diagonal Gaussians, each with what it computes.
    Several agree with both directions whenever the two variances are equal."""

    def with_std(m1, v1, m2, v2):  # KL(N(m1, s1^2) || N(m2, s2^2)) from standard deviations
        s1, s2 = jnp.exp(0.5 * v1), jnp.exp(0.5 * v2)
        return jnp.sum(jnp.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2.0 * s2**2) - 0.5, -1)

    def cross_entropy(m1, v1, m2, v2):  # H(q, p) - H(q)
        h_qp = 0.5 * (jnp.log(2 * jnp.pi) + v2 + (jnp.exp(v1) + (m1 - m2) ** 2) * jnp.exp(-v2))
        h_q = 0.5 * (jnp.log(2 * jnp.pi) + v1 + 1.0)
        return jnp.sum(h_qp - h_q, axis=-1)

    def terms(m1, v1, m2, v2, mean_over, ratio_sign=1.0, log_sign=1.0):
        ratio = jnp.exp(ratio_sign * (v1 - v2))
        return 0.5 * (log_sign * (v2 - v1) + ratio + (m1 - m2) ** 2 * jnp.exp(-mean_over) - 1.0)

    kl, std_kl = vae.gaussian_kl, vae.gaussian_kl_standard
    return {
        "A": (kl, "forward"),
        "B": (with_std, "forward"),
        "C": (cross_entropy, "forward"),
        "D": (lambda mq, vq, mp, vp: kl(mp, vp, mq, vq), "reverse"),
        "E": (lambda mq, vq, mp, vp: with_std(mp, vp, mq, vq), "reverse"),
        "F": (lambda mq, vq, mp, vp: cross_entropy(mp, vp, mq, vq), "reverse"),
        "G": (lambda mq, vq, mp, vp: jnp.sum(terms(mq, vq, mp, vp, vq), -1), "neither"),
        "H": (lambda mq, vq, mp, vp: 0.5 * (kl(mq, vq, mp, vp) + kl(mp, vp, mq, vq)), "neither"),
        "I": (lambda mq, vq, mp, vp: jnp.sum(terms(mq, vq, mp, vp, vp, log_sign=-1.0), -1),
              "neither"),
        "J": (lambda mq, vq, mp, vp: jnp.sum(terms(mq, vq, mp, vp, vp, ratio_sign=-1.0), -1),
              "neither"),
        "K": (lambda mq, vq, mp, vp: jnp.mean(terms(mq, vq, mp, vp, vp), -1), "neither"),
        "L": (lambda mq, vq, mp, vp: 2.0 * kl(mq, vq, mp, vp), "neither"),
        "M": (lambda mq, vq, mp, vp: kl(mq, vq, 0.0 * mp, vp), "neither"),
        "N": (lambda mq, vq, mp, vp: std_kl(mq, vq), "neither"),
        "O": (lambda mq, vq, mp, vp: jnp.sum(terms(mq, vq, mp, vp, vp, ratio_sign=0.5), -1),
              "neither"),
    }  # fmt: skip


def _direction_code(answer) -> np.ndarray:
    if not isinstance(answer, str) or answer not in vae.KL_DIRECTIONS:
        raise ValueError(f"kl_direction must return one of {list(vae.KL_DIRECTIONS)}, got "
                         f"{answer!r}")  # fmt: skip
    return np.int32(vae.KL_DIRECTIONS.index(answer))


def _direction_is(truth: str):
    @judged_alone
    def compare(got, want, label: str) -> None:
        answer = vae.KL_DIRECTIONS[int(np.asarray(got))]
        check.is_true(answer == truth, f"{label}: answered {answer!r}, the suspect computes "
                      f"{truth!r}")  # fmt: skip

    return compare


def kl_direction_cases(rng: np.random.Generator) -> list[Case]:
    suspects = _direction_suspects()
    names = list(suspects)
    cases = []
    for i in rng.permutation(len(names)):
        function, truth = suspects[names[i]]
        cases.append(Case(f"kl_direction(suspect {names[i]})",
                          (lambda f, fn=function: _direction_code(f(fn))),
                          _direction_is(truth)))  # fmt: skip
    return cases


def _head(name: str, shift: tuple[float, float] = (0.0, 0.0)):
    sa, sb = shift
    return {
        "identity mean, exp scale": lambda a, b: (a, 2.0 * b),
        "sigmoid mean and sigmoid sigma": lambda a, b: (
            jax.nn.sigmoid(a), 2.0 * jnp.log(jax.nn.sigmoid(b))),
        "tanh mean, softplus variance": lambda a, b: (jnp.tanh(a), jnp.log(jax.nn.softplus(b))),
        "exp mean, sigmoid variance": lambda a, b: (jnp.exp(a), jax.nn.log_sigmoid(b)),
        "2 sigmoid - 1 mean, 2 sigmoid sigma": lambda a, b: (
            2.0 * jax.nn.sigmoid(a) - 1.0, 2.0 * jnp.log(2.0 * jax.nn.sigmoid(b))),
        "softplus mean, 2 tanh log-variance": lambda a, b: (
            jax.nn.softplus(a), 2.0 * jnp.tanh(b)),
        "a shifted identity head": lambda a, b: (a - sa, 2.0 * (b - sb)),
        "a head that mixes a and b": lambda a, b: (a * jax.nn.sigmoid(b) - sa, b - 0.2 * a - sb),
    }[name]  # fmt: skip


def _smallest_run(name: str, shift, low: float, high: float):
    return lambda smallest_kl: smallest_kl(_head(name, shift), low, high)


def smallest_kl_cases(rng: np.random.Generator) -> list[Case]:
    low, high = float(rng.uniform(-4.0, -0.5)), float(rng.uniform(0.5, 4.0))
    boxes = [(-6.0, 6.0), (-2.0, 2.0), (0.5, 2.0), (round(low, 3), round(high, 3))]
    shift = (float(rng.uniform(-0.45, 0.45)), float(rng.uniform(-0.45, 0.45)))
    cases = []
    for head in [
        "identity mean, exp scale",
        "sigmoid mean and sigmoid sigma",
        "tanh mean, softplus variance",
        "exp mean, sigmoid variance",
        "2 sigmoid - 1 mean, 2 sigmoid sigma",
        "softplus mean, 2 tanh log-variance",
        "a shifted identity head",
        "a head that mixes a and b",
    ]:
        for i in rng.choice(len(boxes), size=2, replace=False):
            box = boxes[int(i)]
            cases.append(Case(f"smallest_kl({head}, box [{box[0]:g}, {box[1]:g}])",
                              _smallest_run(head, shift, *box), close(1e-2, 2e-6)))  # fmt: skip
    return cases


PROBES = [
    Probe("gaussian_kl_standard", vae.gaussian_kl_standard, gaussian_kl_standard_cases),
    Probe("gaussian_kl", vae.gaussian_kl, gaussian_kl_cases),
    Probe("gaussian_log_likelihood", vae.gaussian_log_likelihood, gaussian_log_likelihood_cases),
    Probe("bernoulli_log_likelihood", vae.bernoulli_log_likelihood,
          bernoulli_log_likelihood_cases),
    Probe("reparameterize", vae.reparameterize, reparameterize_cases),
    Probe("score_function_grad", vae.score_function_grad, score_function_grad_cases),
    Probe("reparameterization_grad", vae.reparameterization_grad, reparameterization_grad_cases),
    Probe("iwae_bound", vae.iwae_bound, iwae_bound_cases),
    Probe("elbo", vae.elbo, elbo_cases,
          uses=("reparameterize", "bernoulli_log_likelihood", "gaussian_kl_standard")),
    Probe("vae_train_step", vae.vae_train_step, vae_train_step_cases, uses=("elbo",)),
    Probe("encoder_decoder_grad_norms", vae.encoder_decoder_grad_norms,
          encoder_decoder_grad_norms_cases),
    Probe("kl_direction", vae.kl_direction, kl_direction_cases, uses=("gaussian_kl",)),
    Probe("kl_diagnostics", vae.kl_diagnostics, kl_diagnostics_cases,
          uses=("gaussian_kl_standard",)),
    Probe("log_normalizer", vae.log_normalizer, log_normalizer_cases),
    Probe("smallest_kl", vae.smallest_kl, smallest_kl_cases, uses=("gaussian_kl_standard",)),
    Probe("active_latents", vae.active_latents, active_latents_cases,
          forbidden=("genlab.vae.latent_activity",)),
    Probe("elbo_gap", vae.elbo_gap, elbo_gap_cases),
]  # fmt: skip
