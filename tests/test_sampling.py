"""genlab.sampling against transformers' logits warpers (committed fixture) and by hand."""

from __future__ import annotations

import decimal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genlab import sampling

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "hf_warpers.npz"


@pytest.fixture(scope="module")
def warpers():
    return dict(np.load(FIXTURE))


def _kept(x) -> np.ndarray:
    return np.isfinite(np.asarray(x))


def test_apply_temperature_matches_transformers(warpers):
    for t in warpers["temperatures"]:
        got = sampling.apply_temperature(warpers["logits"], float(t))
        np.testing.assert_allclose(got, warpers[f"temperature_{t}"], rtol=1e-6)


def test_apply_temperature_rejects_nonpositive():
    for t in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            sampling.apply_temperature(jnp.zeros(3), t)
    with pytest.raises(TypeError, match="temperature"):
        sampling.apply_temperature(jnp.zeros(3), "hot")


def test_top_k_filter_matches_transformers_with_ties(warpers):
    for k in warpers["top_ks"]:
        got = np.asarray(sampling.top_k_filter(warpers["logits"], int(k)))
        np.testing.assert_array_equal(got, warpers[f"top_k_{k}"])


def test_top_k_filter_keeps_ties_at_threshold():
    got = sampling.top_k_filter(jnp.array([1.0, 3.0, 2.0, 2.0, 0.0]), 2)
    np.testing.assert_array_equal(_kept(got), [False, True, True, True, False])


def test_top_k_filter_large_k_keeps_everything():
    logits = jnp.array([[0.3, -1.0, 2.0]])
    np.testing.assert_array_equal(sampling.top_k_filter(logits, 3), logits)
    np.testing.assert_array_equal(sampling.top_k_filter(logits, 10), logits)


def test_top_k_filter_rejects_bad_k():
    with pytest.raises(ValueError, match="k"):
        sampling.top_k_filter(jnp.zeros(4), 0)
    with pytest.raises(TypeError, match="k"):
        sampling.top_k_filter(jnp.zeros(4), 2.5)
    with pytest.raises(ValueError, match="logits"):
        sampling.top_k_filter(jnp.array(1.0), 1)


def _boundary_tie(logits: np.ndarray, kept: np.ndarray) -> bool:
    """True if a dropped token has the same logit as a kept one (the cut falls inside a tie)."""
    finite_kept = logits[kept]
    dropped = logits[~kept & np.isfinite(logits)]
    return bool(finite_kept.size and dropped.size and dropped.max() >= finite_kept.min())


def _is_nucleus(logits: np.ndarray, kept: np.ndarray, p: float, m: int, tol: float = 1e-6) -> bool:
    """kept holds the most probable tokens, reaches mass p, and is minimal (up to float error)."""
    finite = np.isfinite(logits)
    probs = np.zeros_like(logits, dtype=np.float64)
    probs[finite] = np.exp(logits[finite] - logits[finite].max())
    probs /= probs.sum()
    dropped = ~kept & finite
    if dropped.any() and logits[dropped].max() > logits[kept].min():
        return False
    mass, smallest = probs[kept].sum(), probs[kept].min()
    minimal = kept.sum() <= m or mass - smallest < p + tol
    return bool(mass >= p - tol and minimal)


def test_top_p_filter_matches_transformers(warpers):
    """Exact agreement, except where the cut falls inside a run of equal logits: torch.sort
    orders ties arbitrarily (and sums in another order), so there both must be valid nuclei."""
    logits = warpers["logits"]
    for p, m in warpers["top_ps"]:
        want = warpers[f"top_p_{p}_{int(m)}"]
        got = np.asarray(sampling.top_p_filter(logits, float(p), int(m)))
        for row in range(logits.shape[0]):
            if _boundary_tie(logits[row], _kept(want[row])):
                for name, out in (("genlab", got), ("transformers", want)):
                    assert _is_nucleus(logits[row], _kept(out[row]), p, int(m)), (name, p, m, row)
                np.testing.assert_array_equal(
                    got[row][_kept(got[row])], logits[row][_kept(got[row])]
                )
            else:
                np.testing.assert_array_equal(got[row], want[row], err_msg=f"p={p} m={m} row {row}")


def test_top_p_filter_keeps_token_that_crosses_p():
    logits = jnp.log(jnp.array([0.5, 0.35, 0.1, 0.05]))
    np.testing.assert_array_equal(
        _kept(sampling.top_p_filter(logits, 0.9)), [True, True, True, False]
    )
    np.testing.assert_array_equal(
        _kept(sampling.top_p_filter(logits, 0.5)), [True, False, False, False]
    )
    np.testing.assert_array_equal(_kept(sampling.top_p_filter(logits, 1.0)), [True] * 4)


def test_top_p_filter_min_tokens_to_keep():
    logits = jnp.array([10.0, 0.0, -1.0, -2.0])
    np.testing.assert_array_equal(_kept(sampling.top_p_filter(logits, 0.5, 3)), [1, 1, 1, 0])


def test_top_p_filter_rejects_bad_p():
    for p in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="p"):
            sampling.top_p_filter(jnp.zeros(4), p)
    with pytest.raises(ValueError, match="min_tokens_to_keep"):
        sampling.top_p_filter(jnp.zeros(4), 0.5, 0)


def test_top_p_filter_matches_numpy_loop():
    """An independent, obviously-correct loop over sorted probabilities."""
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=2.0, size=(50, 12)).astype(np.float32)
    for p in (0.2, 0.7, 0.95):
        got = _kept(sampling.top_p_filter(logits, p))
        for row in range(len(logits)):
            probs = np.exp(logits[row] - logits[row].max())
            probs /= probs.sum()
            want, total = np.zeros(12, bool), 0.0
            for index in np.argsort(-probs):
                want[index] = True
                total += probs[index]
                if total >= p:
                    break
            np.testing.assert_array_equal(got[row], want)


def test_sample_next_token_frequencies_match_filtered_softmax():
    logits = jnp.array([2.0, 1.0, 0.5, 0.0, -1.0])
    keys = jax.random.split(jax.random.key(0), 20000)
    draws = jax.vmap(lambda k: sampling.sample_next_token(k, logits, 0.7, top_k=4, top_p=0.9))(keys)
    filtered = sampling.top_p_filter(sampling.top_k_filter(logits / 0.7, 4), 0.9)
    want = np.asarray(jax.nn.softmax(filtered))
    freq = np.bincount(np.asarray(draws), minlength=5) / len(keys)
    np.testing.assert_allclose(freq, want, atol=0.015)
    assert freq[want == 0].sum() == 0


def test_sample_next_token_uses_categorical_with_key():
    key = jax.random.key(5)
    logits = jax.random.normal(jax.random.key(1), (3, 7))
    got = sampling.sample_next_token(key, logits, 1.3, top_k=5)
    want = jax.random.categorical(key, sampling.top_k_filter(logits / 1.3, 5), axis=-1)
    np.testing.assert_array_equal(got, want)
    assert got.shape == (3,) and got.dtype == jnp.int32


def test_sample_next_token_rejects_bad_arguments():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="temperature"):
        sampling.sample_next_token(key, jnp.zeros(3), temperature=0.0)
    with pytest.raises(ValueError, match="top-k"):
        sampling.sample_next_token(key, jnp.zeros(3), top_k=0)
    with pytest.raises(ValueError, match="top-p"):
        sampling.sample_next_token(key, jnp.zeros(3), top_p=1.2)


def test_entropy_known_values():
    np.testing.assert_allclose(sampling.entropy(jnp.zeros(8)), np.log(8), rtol=1e-6)
    np.testing.assert_allclose(sampling.entropy(jnp.array([0.0, -jnp.inf])), 0.0, atol=1e-7)
    p = np.array([0.5, 0.25, 0.25])
    np.testing.assert_allclose(sampling.entropy(jnp.log(p)), -(p * np.log(p)).sum(), rtol=1e-6)


def test_distinct_ngrams_counts():
    assert sampling.distinct_ngrams([1, 2, 1, 2, 1], 2) == pytest.approx(2 / 4)
    assert sampling.distinct_ngrams(np.array([[1, 2, 3], [1, 2, 3]]), 3) == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="n"):
        sampling.distinct_ngrams([1, 2], 3)


def _bigram_logits_fn(table):
    """A causal 'model' whose logits at t depend only on token t: logits = table[tokens]."""
    return lambda tokens: table[tokens]


def test_generate_greedy_follows_argmax_chain():
    table = jnp.full((4, 4), -5.0).at[jnp.arange(4), (jnp.arange(4) + 1) % 4].set(5.0)
    out = sampling.generate(
        jax.random.key(0), _bigram_logits_fn(table), jnp.array([[2]]), 5, greedy=True
    )
    np.testing.assert_array_equal(out, [[2, 3, 0, 1, 2, 3]])


def test_generate_splits_key_once_per_step():
    table = jax.random.normal(jax.random.key(2), (6, 6))
    prompt = jnp.array([[1, 4], [0, 5]])
    out = sampling.generate(jax.random.key(7), _bigram_logits_fn(table), prompt, 4, top_k=3)
    key, tokens = jax.random.key(7), prompt
    for _ in range(4):
        key, subkey = jax.random.split(key)
        nxt = sampling.sample_next_token(subkey, table[tokens[:, -1]], top_k=3)
        tokens = jnp.concatenate([tokens, nxt[:, None]], axis=1)
    np.testing.assert_array_equal(out, tokens)


def test_generate_rejects_bad_prompt():
    with pytest.raises(ValueError, match="prompt"):
        sampling.generate(jax.random.key(0), lambda t: t, jnp.array([1, 2]), 3)
    with pytest.raises(ValueError, match="num_new_tokens"):
        sampling.generate(jax.random.key(0), lambda t: t, jnp.array([[1, 2]]), -1)


def test_step_keys_match_split_loop():
    keys = sampling.step_keys(jax.random.key(3), 5)
    key, want = jax.random.key(3), []
    for _ in range(5):
        key, sub = jax.random.split(key)
        want.append(jax.random.key_data(sub))
    np.testing.assert_array_equal(jax.random.key_data(keys), np.stack(want))
    with pytest.raises(ValueError, match="num_steps"):
        sampling.step_keys(jax.random.key(0), 0)


def test_nucleus_size_grows_with_temperature():
    logits = jnp.log(jnp.array([0.5, 0.35, 0.1, 0.05]))
    assert int(sampling.nucleus_size(logits, 0.9)) == 3
    assert int(sampling.nucleus_size(logits, 0.9, 0.1)) == 1
    assert int(sampling.nucleus_size(logits, 0.9, 5.0)) == 4


@pytest.mark.parametrize(
    "settings", [{}, {"top_k": 3}, {"top_p": 0.7}, {"top_k": 30, "top_p": 0.5}]
)
def test_sample_traced_matches_sample_next_token(settings):
    logits = jax.random.normal(jax.random.key(8), (16, 20)) * 2
    key = jax.random.key(9)
    want = sampling.sample_next_token(key, logits, 0.8, **settings)
    got = jax.jit(sampling.sample_traced, static_argnums=(5, 6))(
        key,
        logits,
        0.8,
        settings.get("top_k", 1),
        settings.get("top_p", 1.0),
        "top_k" in settings,
        "top_p" in settings,
    )
    np.testing.assert_array_equal(got, want)


def test_top_p_filter_at_p_1_keeps_tails_that_float32_rounds_away():
    logits = jnp.array([30.0, 0.0, 0.0, 0.0, -1.0])  # tail probabilities about 1e-13
    probs = jax.nn.softmax(logits)
    assert float(jnp.cumsum(probs)[0]) == 1.0 and bool(jnp.all(probs > 0))  # the trap is real
    np.testing.assert_array_equal(np.isfinite(sampling.top_p_filter(logits, 1.0)), [True] * 5)


def test_known_word_fraction_counts_words_of_two_letters_or_more():
    vocabulary = set(sampling.words("The cat sat on the mat."))
    assert sampling.words("Don't stop") == ["don", "t", "stop"]
    assert sampling.known_word_fraction(["the cat", "a dog"], vocabulary) == 2 / 3  # "a" skipped
    assert sampling.known_word_fraction("x y z", vocabulary) == 0.0
    assert sampling.known_word_fraction("x y", vocabulary, min_length=1) == 0.0


def _typical_numpy(row, mass):
    """Locally typical filter of one row, written out in float64 loops."""
    p = np.exp(row - row.max())
    p /= p.sum()
    entropy = -sum(q * np.log(q) for q in p if q > 0)
    ranked = sorted(
        range(len(p)), key=lambda i: (abs(-np.log(p[i]) - entropy) if p[i] > 0 else np.inf, i)
    )
    keep, total = set(), 0.0
    for rank, i in enumerate(ranked):
        if rank == 0 or (total < mass and p[i] > 0):
            keep.add(i)
        total += p[i]
    return np.array([i in keep for i in range(len(p))])


@pytest.mark.parametrize("mass", [0.2, 0.5, 0.9, 1.0])
def test_typical_filter_matches_a_float64_loop(mass):
    rows = np.random.default_rng(3).normal(scale=2.0, size=(20, 9))
    got = np.isfinite(np.asarray(sampling.typical_filter(jnp.asarray(rows, jnp.float32), mass)))
    want = np.stack([_typical_numpy(r, mass) for r in rows])
    np.testing.assert_array_equal(got, want)


def test_typical_filter_worked_example_and_errors():
    logits = jnp.log(jnp.array([0.5, 0.25, 0.125, 0.125]))  # H = 1.213; token 1 most typical
    np.testing.assert_array_equal(np.isfinite(sampling.typical_filter(logits, 0.2)), [0, 1, 0, 0])
    np.testing.assert_array_equal(np.isfinite(sampling.typical_filter(logits, 0.5)), [1, 1, 0, 0])
    with pytest.raises(ValueError, match="mass"):
        sampling.typical_filter(logits, 0.0)


def _entropy64(logits, t):
    x = np.asarray(logits, np.float64) / t
    log_p = x - np.max(x, -1, keepdims=True)
    log_p = log_p - np.log(np.sum(np.exp(log_p), -1, keepdims=True))
    return -np.sum(np.exp(log_p) * log_p, -1)


@pytest.mark.parametrize("t", [0.3, 1.0, 2.5])
def test_entropy_temperature_slope_matches_finite_differences(t):
    logits = np.random.default_rng(0).normal(scale=3.0, size=(4, 9)).astype(np.float32)
    h = 1e-5 * t
    want = (_entropy64(logits, t + h) - _entropy64(logits, t - h)) / (2 * h)
    got = sampling.entropy_temperature_slope(jnp.asarray(logits), t)
    assert got.shape == (4,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def _entropy_decimal(row, t):
    """The entropy of softmax(row / t) with 60 significant digits (decimal arithmetic)."""
    z = [decimal.Decimal(float(x)) / t for x in row]
    top = max(z)
    weights = [(v - top).exp() for v in z]
    total = sum(weights)
    return -sum(w / total * (w / total).ln() for w in weights if w > 0)


@pytest.mark.parametrize(("scale", "t"), [(2.0, 0.1), (4.0, 0.2), (2.0, 300.0)])
def test_entropy_temperature_slope_is_accurate_where_the_slope_is_tiny(scale, t):
    # Far below the gaps between the logits the slope is as small as 1e-21 and far above their
    # spread as small as 1e-7; a 60-digit central difference of H gives the exact value.
    logits = np.random.default_rng(3).normal(scale=scale, size=(3, 9)).astype(np.float32)
    with decimal.localcontext() as context:
        context.prec = 60
        h, t_exact = decimal.Decimal("1e-20"), decimal.Decimal(t)
        want = [float((_entropy_decimal(row, t_exact + h) - _entropy_decimal(row, t_exact - h))
                      / (2 * h)) for row in logits]  # fmt: skip
    got = sampling.entropy_temperature_slope(jnp.asarray(logits), t)
    assert min(want) < 1e-6
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=0.0)


def test_generate_with_an_end_token_repeats_it_after_the_first_one():
    table = jax.random.normal(jax.random.key(3), (5, 5)) * 2
    prompt = jnp.tile(jnp.arange(5)[:, None], (40, 2))  # (200, 2)
    key = jax.random.key(4)
    free = np.asarray(sampling.generate(key, _bigram_logits_fn(table), prompt, 6))
    ended = np.asarray(sampling.generate(key, _bigram_logits_fn(table), prompt, 6, end_id=1))
    for row_free, row_ended in zip(free, ended):
        new = row_free[2:].tolist()
        first = new.index(1) if 1 in new else len(new)
        want = new[: first + 1] + [1] * (len(new) - first - 1)
        assert row_ended[2:].tolist() == want
        np.testing.assert_array_equal(row_ended[:2], row_free[:2])
    assert (ended[:, 2:] == 1).any(axis=1).mean() > 0.3


def test_entropy_temperature_slope_is_zero_for_uniform_and_two_token_closed_form():
    np.testing.assert_allclose(sampling.entropy_temperature_slope(jnp.zeros((2, 6)), 0.8), 0.0)
    # Two tokens with logits 0 and 1: the variance of the logits is q (1 - q), q = sigmoid(1 / t).
    for t in (0.5, 2.0):
        q = 1 / (1 + np.exp(-1 / t))
        want = q * (1 - q) / t**3
        got = sampling.entropy_temperature_slope(jnp.array([0.0, 1.0]), t)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        sampling.entropy_temperature_slope(jnp.zeros(3), 0.0)
