"""genlab.evaluation and genlab.watermark against independent checks: scipy's matrix square root
and distances, closed forms for Gaussians, brute-force definitions, the binomial distribution,
Monte Carlo, and an exhaustive search for the substitution attack."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.special
import scipy.stats
from scipy.spatial.distance import cdist

from genlab import evaluation, watermark


def _spd(rng, d):
    a = rng.normal(size=(d, d + 3))
    return a @ a.T / (d + 3) + 0.05 * np.eye(d)


# --- likelihood and Gaussian statistics --------------------------------------------------------


def test_bits_per_dim_is_log2_per_dimension():
    nll = np.array([3.0, 100.0])
    np.testing.assert_allclose(
        evaluation.bits_per_dim(nll, 10), nll / 10 * math.log2(math.e), rtol=1e-6
    )
    with pytest.raises(ValueError, match="num_dims"):
        evaluation.bits_per_dim(1.0, 0)


def test_gaussian_stats_matches_numpy():
    x = np.random.default_rng(0).normal(size=(40, 5))
    mean, cov = evaluation.gaussian_stats(x)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        evaluation.gaussian_stats(x[:1])


@pytest.mark.parametrize("d", [1, 3, 10, 40])
def test_frechet_distance_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    c1, c2 = _spd(rng, d), _spd(rng, d) * 2.0
    want = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    got = float(evaluation.frechet_distance(mu1, c1, mu2, c2))
    assert got == pytest.approx(want, rel=2e-3, abs=2e-3)


def test_frechet_distance_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2; commuting diagonal covariances: sum of (sqrt a - sqrt b)^2
    assert float(evaluation.frechet_distance([0.0], [[1.0]], [3.0], [[9.0]])) == pytest.approx(
        13.0, rel=1e-5
    )
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 1.0])
    want = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = float(evaluation.frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)))
    assert got == pytest.approx(want, rel=1e-5)
    c = _spd(np.random.default_rng(1), 6)
    assert float(evaluation.frechet_distance(np.ones(6), c, np.ones(6), c)) == pytest.approx(
        0.0, abs=1e-4
    )


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="cov2"):
        evaluation.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(3))


# --- precision, recall and nearest neighbours ----------------------------------------------------


def _brute_force_precision_recall(real, fake, k):
    def radius(points, i):
        others = [np.linalg.norm(points[i] - points[j]) for j in range(len(points)) if j != i]
        return sorted(others)[k - 1]

    r_real = [radius(real, i) for i in range(len(real))]
    r_fake = [radius(fake, j) for j in range(len(fake))]
    precision = np.mean([any(np.linalg.norm(f - real[i]) <= r_real[i] for i in range(len(real)))
                         for f in fake])  # fmt: skip
    recall = np.mean([any(np.linalg.norm(r - fake[j]) <= r_fake[j] for j in range(len(fake)))
                      for r in real])  # fmt: skip
    return precision, recall


@pytest.mark.parametrize("k", [1, 3])
def test_knn_precision_recall_matches_brute_force(k):
    rng = np.random.default_rng(k)
    real = rng.normal(size=(40, 3))
    fake = rng.normal(size=(30, 3)) * 0.7 + 0.8
    got = evaluation.knn_precision_recall(real, fake, k=k)
    want = _brute_force_precision_recall(real, fake, k)
    np.testing.assert_allclose(np.array(got, dtype=float), want, atol=1e-6)


def test_knn_precision_recall_extremes():
    x = np.random.default_rng(0).normal(size=(20, 2))
    assert tuple(map(float, evaluation.knn_precision_recall(x, x))) == (1.0, 1.0)
    assert tuple(map(float, evaluation.knn_precision_recall(x, x + 100.0))) == (0.0, 0.0)
    with pytest.raises(ValueError, match="N > k"):
        evaluation.knn_precision_recall(x[:3], x, k=3)


def test_nearest_neighbor_distances_match_scipy_and_copies_are_zero():
    rng = np.random.default_rng(0)
    samples, reference = rng.uniform(size=(30, 64)), rng.uniform(size=(50, 64))
    got = np.asarray(evaluation.nearest_neighbor_distances(samples, reference))
    np.testing.assert_allclose(got, cdist(samples, reference).min(1), rtol=1e-5, atol=1e-5)
    copies = np.asarray(evaluation.nearest_neighbor_distances(reference[:5], reference))
    assert np.all(copies < 1e-6)  # exact differences, not the |a|^2 + |b|^2 - 2ab shortcut


def test_iwae_bound_tightens_with_more_samples():
    model = evaluation.vae.VAE(evaluation.vae.VAEConfig(64, 2, 16), rngs=evaluation.nnx.Rngs(0))
    x = (np.random.default_rng(0).uniform(size=(20, 64)) < 0.3).astype(np.float32)
    loose = float(evaluation.vae_iwae_nll(model, jax.random.key(0), x, 1).mean())
    tight = float(evaluation.vae_iwae_nll(model, jax.random.key(0), x, 200).mean())
    assert tight < loose


# --- the watermark --------------------------------------------------------------------------------


def test_green_mask_is_the_head_of_the_permutation():
    key = jax.random.key(4)
    mask = np.asarray(watermark.green_mask(key, 9, 103, 0.25))
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, 9), 103))
    assert mask.sum() == 25 and mask[order[:25]].all() and not mask[order[25:]].any()
    table = np.asarray(watermark.green_table(key, 103, 0.25))
    np.testing.assert_array_equal(table[9], mask)
    with pytest.raises(ValueError, match="gamma"):
        watermark.green_mask(key, 0, 10, 1.5)


def test_expected_green_fraction_matches_monte_carlo():
    assert watermark.expected_green_fraction(0.25, 2.0) == pytest.approx(0.7113, abs=1e-4)
    mask = jnp.arange(200) < 50
    draws = jax.random.categorical(jax.random.key(0),
                                   watermark.watermark_logits(jnp.zeros(200), mask, 2.0),
                                   shape=(400_000,))  # fmt: skip
    assert float(mask[draws].mean()) == pytest.approx(
        watermark.expected_green_fraction(0.25, 2.0), abs=3e-3
    )


def test_tokens_for_z_power_half_puts_the_expected_count_on_the_target():
    gamma, delta, target = 0.25, 2.0, 4.0
    t = watermark.tokens_for_z(gamma, delta, target, 0.5)
    g = watermark.expected_green_fraction(gamma, delta)
    # at power 1/2 the expected green count g T, standardised, is the target
    assert watermark.z_from_counts(g * t, t, gamma) == pytest.approx(target, rel=1e-9)
    assert watermark.tokens_for_z(gamma, delta, 2 * target, 0.5) == pytest.approx(4 * t)
    # delta -> infinity: every token green, target^2 gamma / (1 - gamma) at any power
    for power in (0.5, 0.9, 0.999):
        assert watermark.tokens_for_z(gamma, 40.0, target, power) == pytest.approx(16 / 3, rel=1e-6)


@pytest.mark.parametrize("gamma, delta, target, power", [(0.25, 1.0, 4.0, 0.9),
                                                         (0.25, 0.5, 4.0, 0.8),
                                                         (0.5, 0.7, 3.0, 0.95),
                                                         (0.1, 1.5, 5.0, 0.99)])  # fmt: skip
def test_tokens_for_z_reaches_the_power_by_the_exact_binomial_tail(gamma, delta, target, power):
    t = watermark.tokens_for_z(gamma, delta, target, power)
    g = watermark.expected_green_fraction(gamma, delta)
    # the normal approximation of Binomial(T, g) clears the threshold count with probability power
    threshold = gamma * t + target * math.sqrt(t * gamma * (1 - gamma))
    assert scipy.stats.norm.sf(threshold, g * t, math.sqrt(t * g * (1 - g))) == pytest.approx(power)
    # the exact binomial tail at the length rounded up is within 0.03 of the power (T >= 100 here)
    n = math.ceil(t)
    assert n >= 100
    count = math.ceil(gamma * n + target * math.sqrt(n * gamma * (1 - gamma)) - 1e-9)
    assert scipy.stats.binom.sf(count - 1, n, g) == pytest.approx(power, abs=0.03)
    # monotone: a surer detection or a weaker boost needs a longer text
    assert watermark.tokens_for_z(gamma, delta, target, (1 + power) / 2) > t
    assert watermark.tokens_for_z(gamma, delta / 2, target, power) > t


def test_tokens_for_z_rejects_bad_arguments():
    for bad in [(0.25, 0.0, 4.0, 0.9), (0.25, 2.0, 0.0, 0.9), (1.0, 2.0, 4.0, 0.9),
                (0.25, 2.0, 4.0, 1.0), (0.25, 2.0, 4.0, 0.4)]:  # fmt: skip
        with pytest.raises(ValueError):
            watermark.tokens_for_z(*bad)


def test_z_score_is_the_binomial_standardisation():
    key = jax.random.key(1)
    tokens = np.random.default_rng(0).integers(50, size=120)
    flags = watermark.green_flags(tokens, key, 50, 0.25, prompt_len=20)
    n = 120 - 20
    binom = scipy.stats.binom(n, 0.25)
    want = (flags.sum() - binom.mean()) / binom.std()
    assert watermark.watermark_z_score(tokens, key, 50, 0.25, prompt_len=20) == pytest.approx(want)
    assert watermark.z_scores(tokens[None], key, 50, 0.25, prompt_len=20)[0] == pytest.approx(want)
    # ignore_repeated: every distinct pair once
    repeated = np.array([3, 4] * 30)
    z = watermark.watermark_z_score(repeated, key, 50, 0.25, ignore_repeated=True)
    greens = int(watermark.green_mask(key, 3, 50, 0.25)[4]) + int(
        watermark.green_mask(key, 4, 50, 0.25)[3]
    )
    assert z == pytest.approx((greens - 0.5) / math.sqrt(2 * 0.1875))
    batched = watermark.z_scores(repeated[None], key, 50, 0.25, ignore_repeated=True)
    assert batched[0] == pytest.approx(z)


def test_z_scores_of_random_tokens_are_standard_normal():
    # gamma * V an integer (25 of 100): z has mean 0 and variance 1 under the null
    tokens = np.random.default_rng(3).integers(100, size=(500, 200))
    z = np.concatenate(
        [watermark.z_scores(tokens, jax.random.key(i), 100, 0.25) for i in range(10)]
    )
    assert abs(z.mean()) < 0.05 and 0.95 < z.std() < 1.05


def test_z_threshold_and_repeated_pairs():
    assert watermark.z_threshold(0.05) == pytest.approx(scipy.stats.norm.isf(0.05), rel=1e-5)
    assert watermark.z_threshold(scipy.stats.norm.sf(4.0)) == pytest.approx(4.0, rel=1e-4)
    assert watermark.repeated_pair_fraction(np.array([1, 2, 1, 2, 1, 2])) == pytest.approx(0.6)
    fraction = watermark.repeated_pair_fraction(np.array([5, 5, 5, 5]), prompt_len=2)
    assert fraction == pytest.approx(0.5)


def _brute_force_edits(flags, n, gamma, threshold):
    """Smallest set of edit positions (an edit at i clears flags i and i + 1) giving
    z < threshold."""
    for size in range(len(flags) + 1):
        for edits in itertools.combinations(range(len(flags)), size):
            left = list(flags)
            for i in edits:
                left[i] = False
                if i + 1 < len(left):
                    left[i + 1] = False
            if watermark.z_from_counts(sum(left), n, gamma) < threshold:
                return size
    raise AssertionError("unreachable")


@pytest.mark.parametrize("seed", range(6))
def test_min_substitutions_matches_exhaustive_search(seed):
    rng = np.random.default_rng(seed)
    key, vocab, gamma = jax.random.key(seed), 12, 0.25
    table = np.asarray(watermark.green_table(key, vocab, gamma))
    tokens = [int(rng.integers(vocab))]
    for _ in range(13):  # mostly green
        pool = np.flatnonzero(table[tokens[-1]] == (rng.uniform() < 0.8))
        tokens.append(int(rng.choice(pool)))
    tokens = np.array(tokens)
    flags = list(watermark.green_flags(tokens, key, vocab, gamma)[1:])
    for threshold in (0.5, 1.5, 2.5):
        want = _brute_force_edits(flags, len(flags), gamma, threshold)
        assert watermark.min_substitutions(tokens, key, vocab, gamma, threshold) == want


def test_substitution_attack_reaches_the_threshold_with_the_minimum():
    rng = np.random.default_rng(0)
    key, vocab, gamma = jax.random.key(9), 60, 0.25
    table = np.asarray(watermark.green_table(key, vocab, gamma))
    tokens = [3]
    for _ in range(199):
        pool = np.flatnonzero(table[tokens[-1]] == (rng.uniform() < 0.7))
        tokens.append(int(rng.choice(pool)))
    tokens = np.array(tokens)
    assert watermark.watermark_z_score(tokens, key, vocab, gamma, prompt_len=20) > 4
    new, edits = watermark.substitution_attack(tokens, key, vocab, gamma, 4.0, prompt_len=20)
    assert edits == watermark.min_substitutions(tokens, key, vocab, gamma, 4.0, prompt_len=20)
    assert (new != tokens).sum() == edits and (new[:20] == tokens[:20]).all()
    assert watermark.watermark_z_score(new, key, vocab, gamma, prompt_len=20) < 4


def _bigram_model(table):
    """A bigram model of the batched sampler's contract: each row's logits follow its last token."""
    return lambda tokens, lengths: table[tokens[jnp.arange(tokens.shape[0]), lengths - 1]]


def test_watermarked_sample_is_detected_and_keeps_each_prompt():
    table = jax.random.normal(jax.random.key(0), (30, 30)) * 2.0
    prompts = jnp.array([[1, 2, 3, 9], [5, 6, 6, 6], [7, 8, 6, 6]])
    lengths = np.array([4, 1, 2])
    out = np.asarray(watermark.watermarked_sample(jax.random.key(1), _bigram_model(table), prompts,
                                                  jnp.asarray(lengths), 120, jax.random.key(2),
                                                  0.25, 2.0))  # fmt: skip
    assert out.shape == (3, 124) and out.dtype == np.int32
    for row, length in zip(range(3), lengths):
        assert (out[row, :length] == np.asarray(prompts)[row, :length]).all()
        assert (out[row, length + 120 :] == 0).all()  # the padding is cleared, nothing written
        new = out[row, : length + 120]
        assert watermark.watermark_z_score(new, jax.random.key(2), 30, 0.25, prompt_len=length) > 4


def test_watermarked_sample_under_jit_draws_the_watermarked_chain():
    vocab, gamma, delta = 6, 0.5, 1.5
    table = jax.random.normal(jax.random.key(3), (vocab, vocab))
    wm_key = jax.random.key(4)
    # row 0: prompt [2] and a padding token 4 the model must not see; row 1: prompt [3, 2]
    prompts, lengths = jnp.array([[2, 4], [3, 2]]), jnp.array([1, 2])
    sampler = jax.jit(jax.vmap(lambda key: watermark.watermarked_sample(
        key, _bigram_model(table), prompts, lengths, 2, wm_key, gamma, delta)))  # fmt: skip
    out = np.asarray(sampler(jax.random.split(jax.random.key(5), 40_000)))  # (40000, 2, 4)
    # the new tokens against the chain's probabilities, computed independently
    green = np.array(
        [np.asarray(watermark.green_mask(wm_key, p, vocab, gamma)) for p in range(vocab)]
    )
    step = scipy.special.softmax(np.asarray(table, np.float64) + delta * green, axis=1)  # (V, V)
    pair = step[2][:, None] * step  # P(first = a, second = b) after the token 2
    both_rows = step[2][:, None] * step[2][None, :]  # the rows' first draws are independent
    limit = scipy.stats.chi2.isf(1e-4, vocab * vocab - 1)
    for first, second, expected in [(out[:, 0, 1], out[:, 0, 2], pair),
                                    (out[:, 1, 2], out[:, 1, 3], pair),
                                    (out[:, 0, 1], out[:, 1, 2], both_rows)]:  # fmt: skip
        counts = np.zeros((vocab, vocab))
        np.add.at(counts, (first, second), 1)
        assert np.sum((counts - 40_000 * expected) ** 2 / (40_000 * expected)) < limit
    assert (out[:, 0, 3] == 0).all()
    # the same key, the same tokens; a traced delta
    again = jax.jit(lambda d: watermark.watermarked_sample(jax.random.key(9), _bigram_model(table),
                                                           prompts, lengths, 5, wm_key, gamma,
                                                           d))  # fmt: skip
    assert np.array_equal(again(1.5), again(1.5))
    for bad_prompts, bad_lengths in [(jnp.array([1, 2]), jnp.array([1])),
                                     (prompts, jnp.array([1, 2, 2]))]:  # fmt: skip
        with pytest.raises(ValueError):
            watermark.watermarked_sample(jax.random.key(0), _bigram_model(table), bad_prompts,
                                         bad_lengths, 3, wm_key, gamma, delta)  # fmt: skip


def _mmd2_double_loop(x, y, unbiased=True):
    """MMD^2 with k(a, b) = (a . b / D + 1)^3 by explicit loops in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]

    def mean_k(a, b, skip_diagonal):
        values = [(a[i] @ b[j] / d + 1.0) ** 3 for i in range(len(a)) for j in range(len(b))
                  if not (skip_diagonal and i == j)]  # fmt: skip
        return np.mean(values)

    return mean_k(x, x, unbiased) + mean_k(y, y, unbiased) - 2 * mean_k(x, y, False)


def test_kernel_distance_matches_a_double_loop():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 4)), rng.normal(size=(9, 4)) * 1.3 + 0.4
    got = float(evaluation.kernel_distance(x.astype(np.float32), y.astype(np.float32)))
    assert got == pytest.approx(_mmd2_double_loop(x, y), rel=1e-4, abs=1e-5)
    with pytest.raises(ValueError):
        evaluation.kernel_distance(x[:1], y)
    with pytest.raises(ValueError):
        evaluation.kernel_distance(x, y[:, :3])


def test_kernel_distance_is_unbiased_where_the_plug_in_is_not():
    rng = np.random.default_rng(6)
    unbiased, plug_in = [], []
    for _ in range(400):
        x, y = rng.normal(size=(10, 2)), rng.normal(size=(10, 2))  # one distribution: MMD^2 = 0
        unbiased.append(
            float(evaluation.kernel_distance(x.astype(np.float32), y.astype(np.float32)))
        )
        plug_in.append(_mmd2_double_loop(x, y, unbiased=False))
    unbiased, plug_in = np.array(unbiased), np.array(plug_in)
    se = unbiased.std() / np.sqrt(len(unbiased))
    assert abs(unbiased.mean()) < 3 * se
    assert plug_in.mean() > 10 * plug_in.std() / np.sqrt(len(plug_in))
    # and a real difference is seen: shifted means give a clearly positive estimate
    x, y = rng.normal(size=(200, 2)), rng.normal(size=(200, 2)) + 1.0
    assert float(evaluation.kernel_distance(x, y)) > 0.5


def test_frechet_floor_is_the_distance_of_two_disjoint_permuted_halves():
    x = np.random.default_rng(5).normal(size=(90, 3)) * np.array([1.0, 2.0, 0.5])
    key = jax.random.key(4)
    order = np.asarray(jax.random.permutation(key, 90))
    a, b = x[order[:30]], x[order[30:60]]
    assert not set(order[:30]) & set(order[30:60])
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    want = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(
        ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real
    )
    np.testing.assert_allclose(evaluation.frechet_floor(x, 30, key), want, rtol=2e-3, atol=1e-4)
    floors = [float(evaluation.frechet_floor(x, n, key)) for n in (5, 45)]
    assert floors[0] > floors[1] > 0
    for bad in (1, 46):
        with pytest.raises(ValueError, match="n"):
            evaluation.frechet_floor(x, bad, key)


def test_disjoint_subsets_are_the_two_first_blocks_of_the_permutation():
    x = np.arange(20.0).reshape(10, 2)
    key = jax.random.key(3)
    order = np.asarray(jax.random.permutation(key, 10))
    a, b = evaluation.disjoint_subsets(x, 4, key)
    np.testing.assert_array_equal(a, x[order[:4]])
    np.testing.assert_array_equal(b, x[order[4:8]])
    assert not set(np.asarray(a)[:, 0]) & set(np.asarray(b)[:, 0])
    for bad in (1, 6):
        with pytest.raises(ValueError, match="n"):
            evaluation.disjoint_subsets(x, bad, key)


def test_feature_frechet_sqrtm_agrees_with_the_eigendecomposition_route():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(60, 4)) * np.array([1.0, 2.0, 0.5, 1.0])
    want = float(evaluation.feature_frechet(a, b))
    assert evaluation.feature_frechet_sqrtm(a, b) == pytest.approx(want, rel=1e-3)
    # 1-D closed form: (m1 - m2)^2 + (s1 - s2)^2 with the ddof = 1 standard deviations
    u, v = np.array([[0.0], [2.0]]), np.array([[1.0], [5.0], [3.0]])
    want = (1.0 - 3.0) ** 2 + (np.sqrt(2.0) - 2.0) ** 2
    assert evaluation.feature_frechet_sqrtm(u, v) == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="features_a"):
        evaluation.feature_frechet_sqrtm(a[:, :3], b)


# --- a flow's likelihood, dequantisation, mixtures ------------------------------------------------


def _gaussian_flow(mean, std):
    """The exact velocity of the linear noise-to-data path when the data are N(mean, diag std^2):
    p_t = N(t mean, (t^2 std^2 + (1 - t)^2) I), transported by v = mean + s_t'/s_t (x - t mean)."""

    def v(x, t):  # x [B, D], t [B]
        t = t[:, None]
        var = t**2 * std**2 + (1.0 - t) ** 2
        return mean + (t * std**2 - (1.0 - t)) / var * (x - t * mean)

    return v


def test_ode_log_density_matches_gaussian_closed_form():
    mean = jnp.array([0.5, -1.0, 2.0])
    std = jnp.array([0.3, 1.5, 0.8])
    noise = np.random.default_rng(0).normal(size=(6, 3))
    x = jnp.asarray(noise * np.asarray(std) + np.asarray(mean), jnp.float32)
    got = jax.jit(lambda x: evaluation.ode_log_density(_gaussian_flow(mean, std), x, 20))(x)
    want = scipy.stats.norm.logpdf(np.asarray(x), np.asarray(mean), np.asarray(std)).sum(axis=1)
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-3)


def test_ode_log_density_converges_with_steps():
    v = _gaussian_flow(jnp.zeros(2), jnp.array([0.2, 0.4]))
    x = jnp.array([[0.1, -0.3], [0.0, 0.5]])
    coarse, fine = (jax.jit(lambda x, k=k: evaluation.ode_log_density(v, x, k))(x) for k in (5, 40))
    want = scipy.stats.norm.logpdf(np.asarray(x), 0.0, [0.2, 0.4]).sum(axis=1)
    assert (
        np.max(np.abs(np.asarray(fine) - want)) < np.max(np.abs(np.asarray(coarse) - want)) + 1e-6
    )
    np.testing.assert_allclose(np.asarray(fine), want, atol=1e-3)


def test_dequantized_bits_per_dim_bounds_the_exact_probability():
    # a 1-D density N(0, 1) on the model's scale, levels k at y = a (k + u) + b: exact P(k) from
    # the normal CDF, the bound from many uniform draws of u
    a, b, u = 0.25, -2.0, np.random.default_rng(1).uniform(size=20_000)
    for level in (3, 8, 12):
        exact = -np.log2(
            scipy.stats.norm.cdf(a * (level + 1) + b) - scipy.stats.norm.cdf(a * level + b)
        )
        log_p = scipy.stats.norm.logpdf(a * (level + u) + b)[None]  # (1, K)
        bound = float(evaluation.dequantized_bits_per_dim(log_p, 1, a)[0])
        assert exact - 1e-3 <= bound <= exact + 0.01, (level, exact, bound)


def test_dequantized_bits_per_dim_uniform_is_log2_levels_and_rejects_bad_input():
    for width in (1.0, 0.125, 3.0):
        value = evaluation.dequantized_bits_per_dim(
            jnp.full((4, 2), -64 * np.log(17 * width)), 64, width
        )
        np.testing.assert_allclose(np.asarray(value), np.log2(17), rtol=1e-5)
    for args in (
        (jnp.zeros((2, 1)), 0, 0.5),
        (jnp.zeros((2, 1)), 4, 0.0),
        (jnp.zeros((2, 0)), 4, 1.0),
    ):
        with pytest.raises(ValueError):
            evaluation.dequantized_bits_per_dim(*args)


def test_mixture_bits_cost_is_the_worst_case_of_a_mixture():
    rng = np.random.default_rng(2)
    for weight, dims in ((0.01, 64), (0.3, 5), (1.0, 10)):
        cost = evaluation.mixture_bits_cost(weight, dims)
        q = rng.uniform(1e-30, 1e-3, size=1000)  # the model's probability of 1,000 examples
        for r in (rng.uniform(0.0, 1e-3, size=1000), np.zeros(1000)):  # any other component
            increase = (-np.log2(weight * q + (1 - weight) * r) + np.log2(q)) / dims
            assert np.all(increase <= cost + 1e-9)
        np.testing.assert_allclose(increase, cost, rtol=1e-9)  # reached where r = 0
    for weight, dims in ((0.0, 4), (1.5, 4), (0.5, 0)):
        with pytest.raises(ValueError):
            evaluation.mixture_bits_cost(weight, dims)
