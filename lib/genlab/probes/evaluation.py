"""Probes of chapter 06, evaluation and watermarks (references in :mod:`genlab.evaluation` and
:mod:`genlab.watermark`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genlab import check, evaluation, watermark
from genlab.probing import Case, Probe, call, close, exact, f32, judged_alone, key_from

# --- section 1: likelihood ----------------------------------------------------------------------


def bits_per_dim_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("bits_per_dim(ln 2, 1) = 1", call(float(np.log(2.0)), 1)),
        Case("bits_per_dim(nll [3], 64)", call(jnp.array([10.0, 44.36, 0.0]), 64)),
        Case("bits_per_dim(an int NLL 100, 10)", call(100, 10)),
        Case("bits_per_dim(..., num_dims=0) raises ValueError", call(1.0, 0), raises=(ValueError,)),
    ]  # fmt: skip
    for shape in [(5,), (2, 3)]:
        nll = f32(rng.uniform(0, 200, size=shape))
        dims = int(rng.integers(1, 1000))
        cases.append(Case(f"bits_per_dim(nll {shape}, {dims})", call(nll, dims), close(1e-5, 1e-6)))
    return cases


def dequantized_bits_per_dim_cases(rng: np.random.Generator) -> list[Case]:
    tight = close(1e-5, 1e-5)
    cases = [
        Case("dequantized_bits_per_dim of the uniform density over 17 levels, step 2/16: log2 17",
             call(jnp.full((2, 3), -64 * np.log(17 * 0.125)), 64, 0.125), tight),
        Case("dequantized_bits_per_dim with one copy (K = 1), level step 1 (no Jacobian)",
             call(f32([[-30.0], [12.5]]), 10, 1.0), tight),
        Case("dequantized_bits_per_dim(..., bin_width=-0.5) raises ValueError",
             call(jnp.zeros((2, 2)), 4, -0.5), raises=(ValueError,)),
        Case("dequantized_bits_per_dim(..., bin_width=0) raises ValueError",
             call(jnp.zeros((2, 2)), 4, 0.0), raises=(ValueError,)),
        Case("dequantized_bits_per_dim(..., num_dims=0) raises ValueError",
             call(jnp.zeros((2, 2)), 0, 0.5), raises=(ValueError,)),
    ]  # fmt: skip
    for shape, dims in [((6, 4), 64), ((3,), 784), ((2, 3, 5), 3), ((5, 1), 12)]:
        width = float(np.exp(rng.uniform(np.log(0.003), np.log(4.0))))
        log_density = f32(rng.normal(0.0, 20.0, size=shape) + dims * rng.uniform(-3.0, 3.0))
        cases.append(Case(f"dequantized_bits_per_dim(log_density {shape}, {dims}, {width:.4f})",
                          call(log_density, dims, width), tight))  # fmt: skip
    return cases


def mixture_bits_cost_cases(rng: np.random.Generator) -> list[Case]:
    tight = close(1e-5, 1e-7)
    cases = [
        Case("mixture_bits_cost(1.0, 64) = 0 (no mixing)", call(1.0, 64), tight),
        Case("mixture_bits_cost(0.5, 1)", call(0.5, 1), tight),
        Case("mixture_bits_cost(0.0, 64) raises ValueError", call(0.0, 64), raises=(ValueError,)),
        Case("mixture_bits_cost(1.2, 64) raises ValueError", call(1.2, 64), raises=(ValueError,)),
        Case("mixture_bits_cost(-0.1, 64) raises ValueError", call(-0.1, 64), raises=(ValueError,)),
        Case("mixture_bits_cost(0.3, 0) raises ValueError", call(0.3, 0), raises=(ValueError,)),
    ]
    for _ in range(4):
        weight = float(np.exp(rng.uniform(np.log(1e-6), np.log(0.99))))
        dims = int(rng.integers(2, 5000))
        cases.append(Case(f"mixture_bits_cost({weight:.3g}, {dims})", call(weight, dims), tight))
    return cases


# --- section 2: Gaussian statistics, Fréchet distance, precision and recall ----------------------


def gaussian_stats_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("gaussian_stats of [[0, 0], [2, 4]] (two points: cov [[2, 4], [4, 8]])",
             call(jnp.array([[0.0, 0.0], [2.0, 4.0]]))),
    ]  # fmt: skip
    for n, d in [(50, 3), (7, 10), (200, 1), (30, 16)]:
        x = f32(rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=d) + rng.normal(size=d))
        cases.append(Case(f"gaussian_stats(features [{n}, {d}])", call(x), close(1e-4, 1e-5)))
    return cases


def _spd(rng: np.random.Generator, d: int, scale: float = 1.0) -> np.ndarray:
    a = rng.normal(size=(d, d + 2))
    return (scale * (a @ a.T / (d + 2) + 0.1 * np.eye(d))).astype(np.float32)


def frechet_distance_cases(rng: np.random.Generator) -> list[Case]:
    fd_close = close(2e-3, 2e-3)
    cov = _spd(rng, 3)
    cases = [
        Case("frechet_distance of 1-D N(0, 1) and N(1, 4) = 1 + (2 - 1)^2 = 2",
             call(jnp.zeros(1), jnp.eye(1), jnp.ones(1), 4.0 * jnp.eye(1)), fd_close),
        Case("frechet_distance of a Gaussian with itself = 0",
             call(jnp.ones(3), cov, jnp.ones(3), cov), close(1e-3, 2e-3)),
        Case("frechet_distance of diagonal covariances [1, 4] and [9, 1], equal means",
             call(jnp.zeros(2), jnp.diag(jnp.array([1.0, 4.0])), jnp.zeros(2),
                  jnp.diag(jnp.array([9.0, 1.0]))), fd_close),
    ]  # fmt: skip
    for d in (2, 5, 16, 48):
        mu1, mu2 = f32(rng.normal(size=d)), f32(rng.normal(size=d))
        cov1, cov2 = _spd(rng, d), _spd(rng, d, float(rng.uniform(0.3, 3.0)))
        cases.append(Case(f"frechet_distance of two random Gaussians in {d}-D (covariances that "
                          "do not commute)", call(mu1, cov1, mu2, cov2), fd_close))  # fmt: skip
    return cases


def kernel_distance_cases(rng: np.random.Generator) -> list[Case]:
    kid_close = close(2e-3, 2e-4)
    pair = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    cases = [
        Case("kernel_distance of two rows against the same two rows (diagonal excluded: "
             "not 0)", call(pair, pair), kid_close),
        Case("kernel_distance with the minimum of 2 rows per set",
             call(jnp.array([[0.5, -1.0], [2.0, 0.0]]), jnp.array([[1.0, 1.0], [-1.0, 0.5]])),
             kid_close),
    ]  # fmt: skip
    for n, m, d, shift in [(30, 30, 3, 0.0), (50, 20, 8, 0.7), (7, 40, 16, 0.0), (100, 80, 5, 1.5)]:
        x = f32(rng.normal(size=(n, d)))
        y = f32(rng.normal(size=(m, d)) * rng.uniform(0.7, 1.4) + shift)
        cases.append(Case(f"kernel_distance(real [{n}, {d}], fake [{m}, {d}]), means "
                          f"{shift} apart", call(x, y), kid_close))  # fmt: skip
    return cases


def _clouds(rng: np.random.Generator, n: int, m: int, d: int):
    real = rng.normal(size=(n, d))
    fake = rng.normal(size=(m, d)) * rng.uniform(0.4, 1.6) + rng.uniform(0.0, 1.5, size=d)
    return f32(real), f32(fake)


def _fractions(tolerance_points: int, n: int):
    """Two fractions over about n points may differ by ``tolerance_points`` points (distances
    within float rounding of a radius)."""
    return close(0.0, (tolerance_points + 0.5) / n)


def _duplicated_rows(rng: np.random.Generator):
    """Real rows, each twice, 10 apart; fake rows: half exact copies, half one unit off."""
    centres = 10.0 * rng.permutation(24)[:12, None] * np.eye(3)[0] + rng.integers(0, 3, (12, 3))
    real = np.concatenate([centres, centres])  # (24, 3)
    fake = np.concatenate([centres[:6], centres[6:] + np.eye(3)[1]])  # (12, 3)
    return f32(real), f32(fake)


def _far_lattices(rng: np.random.Generator):
    """Integer lattices offset by 4096 in 8 dimensions: exact distances are integers or square
    roots of integers, and the expansion of the square in float32 is off by several units."""
    offset = 4096.0 + rng.integers(0, 4, size=8)
    real = offset + np.stack([np.arange(20) * 2.0, *np.zeros((7, 20))], axis=1)  # spacing 2
    shift = np.zeros((20, 8))
    shift[:, 1] = rng.choice([1.0, 2.0, 3.0], size=20)  # 2 lies on a radius of 2, 3 outside
    fake = real + shift
    return f32(real), f32(fake)


def knn_precision_recall_cases(rng: np.random.Generator) -> list[Case]:
    grid = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cases = [
        Case("knn_precision_recall of a set against itself (k = 1) = (1, 1)",
             call(grid, grid, k=1)),
        Case("knn_precision_recall of 4 grid points vs 4 points far away (k = 2) = (0, 0)",
             call(grid, grid + 10.0, k=2)),
        Case("knn_precision_recall (k = 1): 4 grid points vs a tight cluster at a corner",
             call(grid, jnp.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.05, 0.05]]), k=1)),
    ]  # fmt: skip
    cases += [
        Case("knn_precision_recall (k = 1), every real row present twice: radii of 0",
             call(*_duplicated_rows(rng), k=1), close(0.0, 1e-6)),
        Case("knn_precision_recall (k = 2), points on lattices far from the origin: many fake "
             "points lie exactly on a radius", call(*_far_lattices(rng), k=2), close(0.0, 1e-6)),
    ]  # fmt: skip
    for n, m, d, k in [(80, 60, 2, 3), (100, 120, 8, 5), (60, 60, 4, 1), (90, 40, 16, 3)]:
        real, fake = _clouds(rng, n, m, d)
        cases.append(Case(f"knn_precision_recall(real [{n}, {d}], fake [{m}, {d}], k={k}), "
                          "partly overlapping clouds", call(real, fake, k=k),
                          _fractions(1, min(n, m))))  # fmt: skip
    return cases


def nearest_neighbor_distances_cases(rng: np.random.Generator) -> list[Case]:
    reference = f32(rng.uniform(size=(50, 64)))
    copies = reference[:5]
    cases = [
        Case("nearest_neighbor_distances of 1-D points [0.2, 3] to [0, 1, 2]",
             call(jnp.array([[0.2], [3.0]]), jnp.array([[0.0], [1.0], [2.0]]))),
        Case("nearest_neighbor_distances of exact copies of reference rows (all 0)",
             call(copies, reference), close(1e-4, 5e-3)),
    ]  # fmt: skip
    for n, m, d in [(30, 40, 2), (10, 200, 64), (100, 5, 8)]:
        samples, ref = f32(rng.normal(size=(n, d))), f32(rng.normal(size=(m, d)))
        cases.append(Case(f"nearest_neighbor_distances(samples [{n}, {d}], reference [{m}, {d}])",
                          call(samples, ref), close(1e-4, 5e-3)))  # fmt: skip
    return cases


# --- section 4: the watermark ---------------------------------------------------------------------


def green_mask_cases(rng: np.random.Generator) -> list[Case]:
    def traced(key, prev, vocab, gamma):
        return lambda f: jax.jit(lambda p: f(key, p, vocab, gamma))(jnp.int32(prev))

    cases = [
        Case("green_mask(key(0), 5, 100, 0.25): 25 green tokens",
             call(jax.random.key(0), 5, 100, 0.25), exact),
        Case("green_mask(key(1), 0, 10, 0.5)", call(jax.random.key(1), 0, 10, 0.5), exact),
        Case("green_mask with gamma * V not an integer (V = 103, gamma = 0.25: 25 green)",
             call(jax.random.key(2), 17, 103, 0.25), exact),
        Case("green_mask with prev_token traced inside jax.jit",
             traced(jax.random.key(3), 7, 50, 0.3), exact),
    ]  # fmt: skip
    for _ in range(3):
        vocab = int(rng.integers(5, 300))
        gamma = float(np.round(rng.uniform(0.1, 0.9), 2))
        prev = int(rng.integers(vocab))
        cases.append(Case(f"green_mask(random key, {prev}, {vocab}, {gamma})",
                          call(key_from(rng), prev, vocab, gamma), exact))  # fmt: skip
    return cases


def watermark_logits_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("watermark_logits([0, 1, 2], green [T, F, T], 2)",
             call(jnp.array([0.0, 1.0, 2.0]), jnp.array([True, False, True]), 2.0)),
        Case("watermark_logits with delta = 0 changes nothing",
             call(jnp.array([1.0, -3.0]), jnp.array([True, False]), 0.0)),
    ]  # fmt: skip
    for shape in [(20,), (4, 30), (2, 3, 7)]:
        logits = f32(rng.normal(size=shape) * 3)
        green = jnp.asarray(rng.uniform(size=shape[-1:]) < 0.3)
        delta = float(rng.uniform(0.5, 5.0))
        cases.append(Case(f"watermark_logits(logits {shape}, green [{shape[-1]}], {delta:.2f})",
                          call(logits, green, delta)))  # fmt: skip
    return cases


def expected_green_fraction_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("expected_green_fraction(0.25, 2) (about 0.711)", call(0.25, 2.0)),
        Case("expected_green_fraction(0.5, 0) = 0.5 (no watermark)", call(0.5, 0.0)),
    ]
    for _ in range(3):
        gamma, delta = float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.0, 8.0))
        cases.append(Case(f"expected_green_fraction({gamma:.3f}, {delta:.3f})",
                          call(gamma, delta), close(1e-5, 1e-7)))  # fmt: skip
    return cases


def tokens_for_z_cases(rng: np.random.Generator) -> list[Case]:
    t_close = close(1e-4, 1e-4)
    cases = [
        Case("tokens_for_z(0.5, 1.0, 2.0, 0.8)", call(0.5, 1.0, 2.0, 0.8), t_close),
        Case("tokens_for_z(0.1, 5.0, 3.0, 0.99): a strong boost, a short text",
             call(0.1, 5.0, 3.0, 0.99), t_close),
        Case("tokens_for_z(0.3, 1.5, 4.0, 0.5): power one half", call(0.3, 1.5, 4.0, 0.5),
             t_close),
        Case("tokens_for_z(0.25, 0.0, 4.0, 0.9) raises ValueError (no boost)",
             call(0.25, 0.0, 4.0, 0.9), raises=(ValueError,)),
        Case("tokens_for_z(0.25, 2.0, 0.0, 0.9) raises ValueError", call(0.25, 2.0, 0.0, 0.9),
             raises=(ValueError,)),
        Case("tokens_for_z(0.25, 2.0, 4.0, 1.0) raises ValueError (power 1)",
             call(0.25, 2.0, 4.0, 1.0), raises=(ValueError,)),
        Case("tokens_for_z(0.25, 2.0, 4.0, 0.3) raises ValueError (power below one half)",
             call(0.25, 2.0, 4.0, 0.3), raises=(ValueError,)),
    ]  # fmt: skip
    for _ in range(4):
        gamma, delta = float(rng.uniform(0.05, 0.9)), float(rng.uniform(0.3, 6.0))
        target, power = float(rng.uniform(1.0, 8.0)), float(rng.uniform(0.6, 0.999))
        cases.append(Case(f"tokens_for_z({gamma:.3f}, {delta:.3f}, {target:.3f}, {power:.3f})",
                          call(gamma, delta, target, power), t_close))  # fmt: skip
    return cases


def _watermarked_tokens(rng: np.random.Generator, key, vocab: int, gamma: float, length: int,
                        p_green: float) -> np.ndarray:  # fmt: skip
    """A token sequence whose tokens are green (under key) with probability p_green."""
    masks = np.asarray(watermark.green_table(key, vocab, gamma))
    tokens = [int(rng.integers(vocab))]
    for _ in range(length - 1):
        pool = np.flatnonzero(masks[tokens[-1]] == (rng.uniform() < p_green))
        tokens.append(int(rng.choice(pool)))
    return np.asarray(tokens, np.int32)


def _patterned_tokens(rng: np.random.Generator, key, vocab: int, gamma: float, length: int,
                      pattern: tuple[bool, ...]) -> np.ndarray:  # fmt: skip
    """A token sequence whose token i (i >= 1) is green exactly when pattern[(i - 1) % len]."""
    masks = np.asarray(watermark.green_table(key, vocab, gamma))
    tokens = [int(rng.integers(vocab))]
    for i in range(length - 1):
        tokens.append(
            int(rng.choice(np.flatnonzero(masks[tokens[-1]] == pattern[i % len(pattern)])))
        )
    return np.asarray(tokens, np.int32)


def watermark_z_score_cases(rng: np.random.Generator) -> list[Case]:
    z_close = close(1e-4, 1e-4)
    key = jax.random.key(11)
    marked = _watermarked_tokens(rng, key, 40, 0.25, 120, 0.7)
    cases = [
        Case("watermark_z_score of a 2-token sequence (one scored token)",
             call(jnp.array([3, 4]), key, 40, 0.25), z_close),
        Case("watermark_z_score of a watermarked sequence [120] (gamma 0.25)",
             call(marked, key, 40, 0.25), z_close),
        Case("watermark_z_score with prompt_len = 30 (the prompt is not scored)",
             call(marked, key, 40, 0.25, prompt_len=30), z_close),
        Case("watermark_z_score with prompt_len = 119 (only the last token is scored)",
             call(marked, key, 40, 0.25, prompt_len=119), z_close),
    ]  # fmt: skip
    for _ in range(2):
        vocab = int(rng.integers(3, 12))  # a small vocabulary: many repeated pairs
        gamma = float(np.round(rng.uniform(0.2, 0.6), 2))
        k = key_from(rng)
        tokens = _watermarked_tokens(rng, k, vocab, gamma, 150, 0.6)
        prompt = int(rng.integers(0, 20))
        for repeated in (False, True):
            cases.append(Case(f"watermark_z_score(tokens [150] over {vocab} tokens, gamma "
                              f"{gamma}, prompt_len={prompt}, ignore_repeated={repeated})",
                              call(tokens, k, vocab, gamma, prompt_len=prompt,
                                   ignore_repeated=repeated), z_close))  # fmt: skip
    return cases


# --- the watermarked sampler, graded by behaviour ------------------------------------------------

SAMPLE_VOCAB, SAMPLE_WIDTH, SAMPLE_NEW = 40, 6, 100
# hidden prompt lengths: a full row, a one-token prompt, and two rows with the same prompt
SAMPLE_LENGTHS = (6, 1, 4, 4)
WATERMARK_Z_MIN = 4.0  # the reference reaches about 6-11; an unwatermarked or mis-seeded list ~0
LIKELIHOOD_Z_MAX = 5.0  # |standardised log-likelihood| of correct sampling is N(0, 1)
DISTINCT_MIN = 25  # 100 uniform draws over 40 tokens show about 36.8 distinct ones (sd 1.5)


def _bigram(seed: int):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(SAMPLE_VOCAB, SAMPLE_VOCAB)) * 2.0,
                       jnp.float32)  # fmt: skip


def _sample_prompts(seed: int) -> np.ndarray:
    """Prompts [B, T0]: random tokens, padding included (nonzero: the output must clear it);
    the last two rows hold the same prompt."""
    shape = (len(SAMPLE_LENGTHS), SAMPLE_WIDTH)
    prompts = np.random.default_rng(seed + 1).integers(1, SAMPLE_VOCAB, size=shape)
    prompts[-1, : SAMPLE_LENGTHS[-1]] = prompts[-2, : SAMPLE_LENGTHS[-2]]
    return prompts.astype(np.int32)


def _batched_bigram(table):
    rows = jnp.arange(len(SAMPLE_LENGTHS))
    return lambda tokens, lengths: table[tokens[rows, lengths - 1]]  # (B, V)


def _sample_case(seed: int, gamma: float, delta: float, flat: bool, compiled: dict):
    # a uniform model is a bigram table of zeros: one compiled sampler per gamma serves both
    table = jnp.zeros((SAMPLE_VOCAB, SAMPLE_VOCAB), jnp.float32) if flat else _bigram(seed)
    prompts = jnp.asarray(_sample_prompts(seed))
    lengths = jnp.asarray(SAMPLE_LENGTHS, jnp.int32)

    def run(function):
        if (function, gamma) not in compiled:
            # each row's model reads its token before index lengths[b]; gamma and the number of
            # new tokens are static, the keys, the table, the prompts, lengths and delta traced
            compiled[function, gamma] = jax.jit(
                lambda key, table, prompts, lengths, wm_key, delta: function(
                    key, _batched_bigram(table), prompts, lengths, SAMPLE_NEW, wm_key, gamma,
                    delta))  # fmt: skip
        sampler = compiled[function, gamma]
        wm_key = jax.random.key(seed + 3)
        runs = [sampler(jax.random.key(seed + 2 + k), table, prompts, lengths, wm_key,
                        jnp.float32(delta)) for k in (0, 7, 0)]  # fmt: skip
        return {"tokens": [jnp.asarray(r) for r in runs], "prompts": prompts}

    return run


def _likelihood_z(tokens: np.ndarray, start: int, table: np.ndarray, key, gamma: float,
                  delta: float) -> float:  # fmt: skip
    """Standardised log-likelihood of the tokens from index ``start`` on under the watermarked
    next-token distributions: N(0, 1) for a correct sampler, far off for greedy or a wrong
    distribution."""
    total, variance = 0.0, 0.0
    greens = np.asarray(watermark.green_table(key, SAMPLE_VOCAB, gamma))
    for i in range(start, len(tokens)):
        green = greens[tokens[i - 1]]
        logits = table[tokens[i - 1]].astype(np.float64) + delta * green
        logq = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
        q = np.exp(logq)
        mean = np.sum(q * logq)
        total += logq[tokens[i]] - mean
        variance += np.sum(q * (logq - mean) ** 2)
    return float(total / np.sqrt(variance))


def _check_row(where: str, row: np.ndarray, prompt: np.ndarray, length: int, seed: int,
               gamma: float, delta: float, flat: bool) -> None:  # fmt: skip
    """One output row: its prompt, N new tokens drawn from the watermarked chain, then zeros."""
    check.equal(f"{where}: the first {length} tokens (this row's prompt)", row[:length],
                prompt[:length])  # fmt: skip
    check.equal(f"{where}: the {SAMPLE_WIDTH - length} entries after the {SAMPLE_NEW} new tokens",
                row[length + SAMPLE_NEW :], np.zeros(SAMPLE_WIDTH - length, row.dtype))  # fmt: skip
    check.is_true(((row >= 0) & (row < SAMPLE_VOCAB)).all(),
                  f"{where}: tokens must be in [0, {SAMPLE_VOCAB})")  # fmt: skip
    sequence = row[: length + SAMPLE_NEW]
    if flat:
        distinct = len(np.unique(sequence[length:]))
        check.is_true(distinct >= DISTINCT_MIN,
                      f"{where}: {SAMPLE_NEW} draws from a uniform model over {SAMPLE_VOCAB} "
                      f"tokens show only {distinct} distinct tokens (about 37 expected): the "
                      "draws are not independent")  # fmt: skip
        return
    key = jax.random.key(seed + 3)
    if delta > 0:
        z = watermark.watermark_z_score(sequence, key, SAMPLE_VOCAB, gamma, prompt_len=length)
        check.is_true(z > WATERMARK_Z_MIN,
                      f"{where}: the detector (same key, gamma, green list of the previous "
                      f"token, scoring from this row's prompt length) finds no watermark: "
                      f"z = {z:.2f}, need > {WATERMARK_Z_MIN}")  # fmt: skip
    lz = _likelihood_z(sequence, length, np.asarray(_bigram(seed)), key, gamma, delta)
    check.is_true(abs(lz) < LIKELIHOOD_Z_MAX,
                  f"{where}: the tokens do not look sampled from the watermarked distribution: "
                  f"their standardised log-likelihood is {lz:.1f} (a correct sampler gives "
                  f"|z| < {LIKELIHOOD_Z_MAX}; greedy or a wrong distribution gives far "
                  "more)")  # fmt: skip


def _compare_sample(seed: int, gamma: float, delta: float, flat: bool):
    @judged_alone
    def compare(got, want, label: str) -> None:
        if (
            not isinstance(got, dict)
            or set(got) != {"tokens", "prompts"}
            or len(got["tokens"]) != 3
        ):
            check.is_true(False, f"{label}: expected the generated tokens")
        runs = [np.asarray(tokens) for tokens in got["tokens"]]
        prompts = np.asarray(got["prompts"])
        batch = len(SAMPLE_LENGTHS)
        for tokens, which in zip(runs[:2], ("the first key", "another key")):
            check.shape(f"{label}, {which}: output", tokens, (batch, SAMPLE_WIDTH + SAMPLE_NEW))
            check.dtype(f"{label}, {which}: output", tokens, "int")
            for b, length in enumerate(SAMPLE_LENGTHS):
                _check_row(f"{label}, {which}, row {b} (prompt of {length} tokens)", tokens[b],
                           prompts[b], length, seed, gamma, delta, flat)  # fmt: skip
            check.is_true(not np.array_equal(tokens[-2], tokens[-1]),
                          f"{label}, {which}: two rows with the same prompt got the same "
                          f"{SAMPLE_NEW} new tokens: the rows' draws are not "
                          "independent")  # fmt: skip
        check.equal(f"{label}: the same key twice gives the same tokens", runs[2], runs[0])
        check.is_true(not np.array_equal(runs[0], runs[1]),
                      f"{label}: another key gives the same tokens")  # fmt: skip

    return compare


def watermarked_sample_cases(rng: np.random.Generator) -> list[Case]:
    seeds = [int(s) for s in rng.integers(1 << 20, size=3)]
    settings = [(0.25, 2.0, False), (0.4, 3.0, False), (0.25, 0.0, True)]
    compiled = {}  # (function, gamma) -> the function under jax.jit, shared by this probe's cases
    return [Case(f"watermarked_sample under jax.jit: {len(SAMPLE_LENGTHS)} prompts of different "
                 f"lengths, {SAMPLE_NEW} new tokens each, from a "
                 f"{'uniform' if flat else 'bigram'} model, gamma {g}, delta {d}",
                 _sample_case(s, g, d, flat, compiled), _compare_sample(s, g, d, flat))
            for s, (g, d, flat) in zip(seeds, settings)]  # fmt: skip


# --- section 5: pitfalls --------------------------------------------------------------------------


def z_threshold_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("z_threshold(0.5) = 0", call(0.5), close(1e-5, 1e-5)),
        Case("z_threshold(0.05) (about 1.645)", call(0.05), close(1e-4, 1e-4)),
        Case("z_threshold(3.17e-5) (about 4)", call(3.17e-5), close(1e-4, 1e-4)),
        Case("z_threshold(0) raises ValueError", call(0.0), raises=(ValueError,)),
        Case("z_threshold(1.5) raises ValueError", call(1.5), raises=(ValueError,)),
    ]  # fmt: skip
    for rate in 10.0 ** rng.uniform(-6, -0.5, size=2):
        cases.append(Case(f"z_threshold({rate:.3g})", call(float(rate)), close(1e-4, 1e-4)))
    return cases


def repeated_pair_fraction_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("repeated_pair_fraction([1, 2, 1, 2, 1, 2]) = 3/5 (pairs 12 21 12 21 12)",
             call(jnp.array([1, 2, 1, 2, 1, 2]))),
        Case("repeated_pair_fraction of distinct pairs = 0", call(jnp.arange(10))),
        Case("repeated_pair_fraction([5, 5, 5, 5], prompt_len=2) = 1/2",
             call(jnp.array([5, 5, 5, 5]), prompt_len=2)),
        Case("repeated_pair_fraction of one token = 0 (nothing scored)", call(jnp.array([3]))),
    ]  # fmt: skip
    for vocab, length in [(3, 40), (6, 100), (50, 60)]:
        tokens = jnp.asarray(rng.integers(vocab, size=length), jnp.int32)
        prompt = int(rng.integers(0, 10))
        cases.append(Case(f"repeated_pair_fraction(tokens [{length}] over {vocab} tokens, "
                          f"prompt_len={prompt})", call(tokens, prompt_len=prompt),
                          close(1e-6, 1e-6)))  # fmt: skip
    return cases


def min_substitutions_cases(rng: np.random.Generator) -> list[Case]:
    key = jax.random.key(5)
    strong = _watermarked_tokens(rng, key, 30, 0.25, 200, 0.75)
    cases = [
        Case("min_substitutions of a strongly watermarked sequence [200], threshold 4",
             call(strong, key, 30, 0.25, 4.0), exact),
        Case("min_substitutions with threshold 2 and prompt_len 50",
             call(strong, key, 30, 0.25, 2.0, prompt_len=50), exact),
        Case("min_substitutions when z is already below the threshold = 0",
             call(strong, key, 30, 0.25, 1e3), exact),
    ]  # fmt: skip
    for pattern, threshold, what in [
        ((True, False), 2.0, "green and red alternate: no edit removes two"),
        ((True, True, True, False), -0.5, "runs of three greens"),
    ]:
        k = key_from(rng)
        tokens = _patterned_tokens(rng, k, 40, 0.25, int(rng.integers(120, 200)), pattern)
        cases.append(Case(f"min_substitutions(tokens [{len(tokens)}], threshold {threshold}): "
                          f"{what}", call(tokens, k, 40, 0.25, threshold), exact))  # fmt: skip
    for _ in range(3):
        k = key_from(rng)
        vocab = int(rng.integers(8, 60))
        gamma = float(np.round(rng.uniform(0.2, 0.5), 2))
        tokens = _watermarked_tokens(rng, k, vocab, gamma, int(rng.integers(60, 250)),
                                     float(rng.uniform(0.5, 0.95)))  # fmt: skip
        threshold = float(np.round(rng.uniform(1.0, 4.0), 2))
        cases.append(Case(f"min_substitutions(tokens [{len(tokens)}], V = {vocab}, gamma {gamma}, "
                          f"threshold {threshold})", call(tokens, k, vocab, gamma, threshold),
                          exact))  # fmt: skip
    return cases


def frechet_floor_cases(rng: np.random.Generator) -> list[Case]:
    fd_close = close(2e-3, 2e-3)
    cases = [
        Case("frechet_floor of 4 identical rows (n = 2): 0",
             call(jnp.ones((4, 3)), 2, jax.random.key(0)), close(1e-3, 1e-4)),
        Case("frechet_floor with n = 1 raises ValueError",
             call(f32(rng.normal(size=(10, 2))), 1, jax.random.key(1)), raises=(ValueError,)),
        Case("frechet_floor with 2 n > N raises ValueError",
             call(f32(rng.normal(size=(10, 2))), 6, jax.random.key(1)), raises=(ValueError,)),
    ]  # fmt: skip
    for num, d, n in [(40, 2, 20), (100, 5, 30), (301, 8, 150), (64, 3, 2)]:
        x = f32(rng.normal(size=(num, d)) * rng.uniform(0.5, 2.0, size=d))
        cases.append(Case(f"frechet_floor(features [{num}, {d}], n = {n}, random key)",
                          call(x, n, key_from(rng)), fd_close))  # fmt: skip
    return cases


# the library's detectors, which compute what watermark_z_score asks for
DETECTORS = ("genlab.watermark.green_flags", "genlab.watermark.z_scores",
             "genlab.watermark.table_z_scores")  # fmt: skip

PROBES = [
    Probe("bits_per_dim", evaluation.bits_per_dim, bits_per_dim_cases),
    Probe("dequantized_bits_per_dim", evaluation.dequantized_bits_per_dim,
          dequantized_bits_per_dim_cases),
    Probe("mixture_bits_cost", evaluation.mixture_bits_cost, mixture_bits_cost_cases),
    Probe("gaussian_stats", evaluation.gaussian_stats, gaussian_stats_cases),
    Probe("frechet_distance", evaluation.frechet_distance, frechet_distance_cases),
    Probe("kernel_distance", evaluation.kernel_distance, kernel_distance_cases),
    Probe("knn_precision_recall", evaluation.knn_precision_recall, knn_precision_recall_cases),
    Probe("nearest_neighbor_distances", evaluation.nearest_neighbor_distances,
          nearest_neighbor_distances_cases),
    Probe("green_mask", watermark.green_mask, green_mask_cases),
    Probe("watermark_logits", watermark.watermark_logits, watermark_logits_cases),
    Probe("expected_green_fraction", watermark.expected_green_fraction,
          expected_green_fraction_cases),
    Probe("watermark_z_score", watermark.watermark_z_score, watermark_z_score_cases,
          uses=("green_mask",), forbidden=DETECTORS),
    Probe("watermarked_sample", watermark.watermarked_sample, watermarked_sample_cases,
          uses=("green_mask", "watermark_logits")),
    Probe("tokens_for_z", watermark.tokens_for_z, tokens_for_z_cases,
          uses=("expected_green_fraction",)),
    Probe("z_threshold", watermark.z_threshold, z_threshold_cases),
    Probe("repeated_pair_fraction", watermark.repeated_pair_fraction, repeated_pair_fraction_cases),
    Probe("frechet_floor", evaluation.frechet_floor, frechet_floor_cases,
          uses=("gaussian_stats", "frechet_distance"),
          forbidden=("genlab.evaluation.disjoint_subsets",
                     "genlab.evaluation.feature_frechet_sqrtm")),
    Probe("min_substitutions", watermark.min_substitutions, min_substitutions_cases,
          uses=("green_mask", "watermark_z_score")),
]  # fmt: skip
