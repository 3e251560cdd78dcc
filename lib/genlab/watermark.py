"""A statistical watermark for generated text (Kirchenbauer et al. 2023) and its detector
(chapter 06).

At every step the previous token and a secret key pick a "green list" of ``int(gamma * V)``
tokens; the generator adds ``delta`` to their logits, so green tokens become more likely. The
detector, who knows the key but not the model, counts green tokens and computes a one-sided
z-score against the null hypothesis "the text was written without the key" (each scored token
green with probability gamma).

Seeding, stated rather than copied: here the green list of a step is the first ``int(gamma * V)``
entries of ``jax.random.permutation(jax.random.fold_in(key, previous_token), V)``. The reference
implementation and ``transformers``' ``WatermarkLogitsProcessor`` ("lefthash", context width 1)
seed torch's generator with ``hash_key * previous_token`` instead; the statistics (a uniformly
random green list per previous token, gamma = 0.25, delta = 2 as defaults) are the same, the
green lists themselves are not.
"""

from __future__ import annotations

import math
import statistics
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genlab.validate import float_array, positive_int


def _gamma(gamma) -> float:
    gamma = float(gamma)
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must be in (0, 1), got {gamma}")
    return gamma


def _num_green(vocab_size, gamma) -> int:
    vocab_size = positive_int("vocab_size", vocab_size)
    count = int(_gamma(gamma) * vocab_size)
    if count < 1:
        raise ValueError(f"gamma * vocab_size = {gamma * vocab_size} leaves no green token")
    return count


@partial(jax.jit, static_argnames=("vocab_size", "count"))
def _green(key, prev_token, vocab_size: int, count: int):
    order = jax.random.permutation(jax.random.fold_in(key, prev_token), vocab_size)
    return jnp.zeros(vocab_size, dtype=bool).at[order[:count]].set(True)


def green_mask(key, prev_token, vocab_size, gamma):
    """The green list after ``prev_token``: bool [V] with ``int(gamma * V)`` True entries, the
    first ones of ``jax.random.permutation(jax.random.fold_in(key, prev_token), V)``.

    ``prev_token`` may be a traced integer scalar (inside ``jit`` or ``lax.scan``).
    """
    return _green(key, prev_token, vocab_size, _num_green(vocab_size, gamma))


def watermark_logits(logits, green, delta):
    """logits [..., V] with ``delta`` added where green [..., V] (broadcast) is True."""
    logits = float_array("logits", logits, min_ndim=1)
    return logits + delta * jnp.asarray(green, logits.dtype)


def expected_green_fraction(gamma, delta):
    """Probability that the next token is green when the unwatermarked next-token distribution
    is uniform: gamma e^delta / (gamma e^delta + 1 - gamma)."""
    gamma = _gamma(gamma)
    boost = gamma * math.exp(float(delta))
    return boost / (boost + 1.0 - gamma)


def tokens_for_z(gamma, delta, target_z, power):
    """How many scored tokens a watermarked text needs for the detector to reach target_z with
    probability ``power``, when the model's own next-token distribution is uniform.

    A power calculation. Under the watermark every scored token is green independently with the
    probability g of :func:`expected_green_fraction`, so the green count of T tokens is
    Binomial(T, g) with mean g T and variance T g (1 - g) (not the null's T gamma (1 - gamma)).
    In the normal approximation, ``P(z >= target_z) = power`` when

        sqrt(T) (g - gamma) = target_z sqrt(gamma (1 - gamma)) + z_p sqrt(g (1 - g)),

    with z_p = Phi^-1(power); the result is the square of the T that solves it (a real number,
    not rounded). ``power = 1/2`` gives the length at which the z-score of the expected count
    equals target_z; as delta grows it tends to target_z^2 gamma / (1 - gamma).

    Needs gamma in (0, 1), delta > 0 (no boost: never detected), target_z > 0 and power in
    [1/2, 1); anything else raises ValueError.

    Returns:
        A Python float > 0.
    """
    gamma = _gamma(gamma)
    if not float(delta) > 0.0:
        raise ValueError(f"delta must be > 0 (without a boost no length suffices), got {delta}")
    if not float(target_z) > 0.0:
        raise ValueError(f"target_z must be > 0, got {target_z}")
    if not 0.5 <= float(power) < 1.0:
        raise ValueError(f"power must be in [1/2, 1), got {power}")
    g = expected_green_fraction(gamma, delta)
    z_power = statistics.NormalDist().inv_cdf(float(power))
    root = float(target_z) * math.sqrt(gamma * (1.0 - gamma)) + z_power * math.sqrt(g * (1.0 - g))
    return (root / (g - gamma)) ** 2


def _tokens(tokens) -> np.ndarray:
    array = np.asarray(tokens)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"tokens must be a 1-D integer array, got shape {array.shape} and dtype "
                         f"{array.dtype}")  # fmt: skip
    return array


@partial(jax.jit, static_argnames=("vocab_size", "count"))
def _green_table(key, vocab_size: int, count: int):
    return jax.vmap(lambda p: _green(key, p, vocab_size, count))(jnp.arange(vocab_size))


def green_table(key, vocab_size, gamma) -> jax.Array:
    """bool [V, V]: row p is the green list after token p (every list at once)."""
    return _green_table(key, vocab_size, _num_green(vocab_size, gamma))


def green_flags(tokens, key, vocab_size, gamma, prompt_len=0) -> np.ndarray:
    """bool [T]: token i is green in the list of token i - 1 (False at unscored positions
    i < max(prompt_len, 1))."""
    tokens = _tokens(tokens)
    start = max(int(prompt_len), 1)
    flags = np.zeros(len(tokens), dtype=bool)
    if len(tokens) > start:
        table = np.asarray(green_table(key, vocab_size, gamma))
        flags[start:] = table[tokens[start - 1 : -1], tokens[start:]]
    return flags


def z_from_counts(greens, n, gamma):
    """One-sided z of ``greens`` green tokens among ``n`` scored ones (arrays broadcast)."""
    greens, n = np.asarray(greens, np.float64), np.asarray(n, np.float64)
    return (greens - gamma * n) / np.sqrt(n * gamma * (1.0 - gamma))


def watermark_z_score(tokens, key, vocab_size, gamma, prompt_len=0, ignore_repeated=False):
    """The detector's z-score of tokens [T] (int): tokens at positions i >= max(prompt_len, 1)
    are scored with the green list of token i - 1; with ``ignore_repeated`` each distinct
    (previous, token) pair counts once. Raises ValueError when nothing is scored."""
    tokens = _tokens(tokens)
    start = max(int(prompt_len), 1)
    if len(tokens) <= start:
        raise ValueError(f"no token to score: {len(tokens)} tokens, scoring starts at {start}")
    flags = green_flags(tokens, key, vocab_size, gamma, prompt_len)[start:]
    if ignore_repeated:
        pairs = np.stack([tokens[start - 1 : -1], tokens[start:]], axis=1)
        _, first = np.unique(pairs, axis=0, return_index=True)
        flags = flags[first]
    return float(z_from_counts(flags.sum(), len(flags), _gamma(gamma)))


def z_threshold(false_positive_rate):
    """The one-sided z threshold whose false-positive rate under the null (a standard normal
    z-score) is ``false_positive_rate`` in (0, 1)."""
    rate = float(false_positive_rate)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"false_positive_rate must be in (0, 1), got {rate}")
    return float(-jax.scipy.special.ndtri(rate))


def repeated_pair_fraction(tokens, prompt_len=0):
    """Fraction of the scored (previous, token) pairs (positions i >= max(prompt_len, 1) of
    tokens [T]) that repeat a pair seen at an earlier scored position; 0.0 with nothing scored."""
    tokens = _tokens(tokens)
    start = max(int(prompt_len), 1)
    if len(tokens) <= start:
        return 0.0
    pairs = np.stack([tokens[start - 1 : -1], tokens[start:]], axis=1)
    distinct = len(np.unique(pairs, axis=0))
    return float(1.0 - distinct / len(pairs))


# --- generation ---------------------------------------------------------------------------------


def watermarked_sample(key, next_logits, prompts, lengths, num_new_tokens, wm_key, gamma, delta):
    """Watermarked continuations of a batch of prompts of different lengths, as one
    jit-compatible program.

    Args:
        key: the jax.random key of the sampling (its only randomness).
        next_logits: the model, ``next_logits(tokens, lengths) -> [B, V]``: ``tokens`` int32
            [B, T0 + N] whose row b holds its sequence so far in its first ``lengths[b]``
            entries (``lengths`` int32 [B], traced), the logits of each row's token at index
            ``lengths[b]``.
        prompts: int [B, T0], row b's prompt in its first ``lengths[b]`` entries, padding after.
        lengths: int [B], 1 <= lengths[b] <= T0 (may be traced, so not checked under jit).
        num_new_tokens: N, a Python int >= 1.
        wm_key: the watermark key. gamma: a Python float (static). delta: may be traced.

    Returns:
        int32 [B, T0 + N]: row b holds its prompt, then N new tokens at indices lengths[b] to
        lengths[b] + N - 1, then zeros. Each new token is drawn from the softmax of its row's
        logits with the green list of the row's previous token boosted by delta; the step keys
        are ``jax.random.split(key, N)`` and ``jax.random.categorical`` draws every row at once.
    """
    prompts, lengths = jnp.asarray(prompts), jnp.asarray(lengths)
    if prompts.ndim != 2 or prompts.shape[1] < 1 or not jnp.issubdtype(prompts.dtype, jnp.integer):
        raise ValueError(f"prompts must be a 2-D integer array [B, T0] with T0 >= 1, got shape "
                         f"{prompts.shape} and dtype {prompts.dtype}")  # fmt: skip
    if lengths.shape != prompts.shape[:1] or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(f"lengths must be an integer array [B] = {prompts.shape[:1]}, got shape "
                         f"{lengths.shape} and dtype {lengths.dtype}")  # fmt: skip
    num_new_tokens = positive_int("num_new_tokens", num_new_tokens)
    batch, t0 = prompts.shape
    lengths = lengths.astype(jnp.int32)
    padded = jnp.pad(prompts.astype(jnp.int32), ((0, 0), (0, num_new_tokens)))  # (B, T0 + N)
    kept = jnp.arange(t0 + num_new_tokens)[None, :] < lengths[:, None]  # (B, T0 + N)
    buffer = jnp.where(kept, padded, 0)
    rows = jnp.arange(batch)

    def step(carry, step_key):
        buffer, length = carry  # (B, T0 + N), (B,): each row's index of the token drawn now
        logits = jnp.asarray(next_logits(buffer, length))  # (B, V)
        previous = buffer[rows, length - 1]  # (B,)
        green = jax.vmap(lambda p: green_mask(wm_key, p, logits.shape[-1], gamma))(previous)
        token = jax.random.categorical(step_key, watermark_logits(logits, green, delta))  # (B,)
        return (buffer.at[rows, length].set(token.astype(jnp.int32)), length + 1), None

    keys = jax.random.split(key, num_new_tokens)
    (buffer, _), _ = jax.lax.scan(step, (buffer, lengths), keys)
    return buffer


@partial(jax.jit, static_argnames=("graphdef", "num_new_tokens", "window", "gamma"))
def _generate(graphdef, state, key, wm_key, prompt, delta, num_new_tokens, window, gamma):
    model = nnx.merge(graphdef, state)
    batch, t0 = prompt.shape
    vocab = model.config.vocab_size
    buffer = jnp.concatenate([prompt, jnp.zeros((batch, num_new_tokens), jnp.int32)], axis=1)

    def step(carry, _):
        key, buffer, pos = carry  # pos: index of the next token
        context = jax.lax.dynamic_slice(buffer, (0, pos - window), (batch, window))
        logits = model(context)[:, -1]  # (B, V)
        green = jax.vmap(lambda p: green_mask(wm_key, p, vocab, gamma))(context[:, -1])
        key, subkey = jax.random.split(key)
        token = jax.random.categorical(subkey, watermark_logits(logits, green, delta))
        buffer = jax.lax.dynamic_update_slice(buffer, token[:, None].astype(jnp.int32), (0, pos))
        log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), token[:, None], axis=1)[:, 0]
        return (key, buffer, pos + 1), log_p

    (_, buffer, _), log_p = jax.lax.scan(step, (key, buffer, jnp.int32(t0)), None,
                                         length=num_new_tokens)  # fmt: skip
    return buffer, log_p.T


def generate(model, key, prompt, num_new_tokens, wm_key, gamma=0.25, delta=2.0):
    """Watermarked sampling from a :class:`genlab.gpt.GPT`, a batch at a time, compiled as one
    ``lax.scan``; the model sees the last ``block_size`` tokens (a sliding window).

    Args:
        prompt: int [B, T0] with T0 >= the model's block_size (the window is always full).
        delta: 0 gives plain sampling (the same program).

    Returns:
        (tokens int32 [B, T0 + num_new_tokens], log_probs float32 [B, num_new_tokens]): the
        log-probability of each new token under the model's plain (unwatermarked) logits.
    """
    prompt = jnp.asarray(prompt, jnp.int32)
    window = model.config.block_size
    if prompt.ndim != 2 or prompt.shape[1] < window:
        raise ValueError(f"prompt must be [B, T0] with T0 >= block_size {window}, got "
                         f"{prompt.shape}")  # fmt: skip
    graphdef, state = nnx.split(model)
    return _generate(graphdef, state, key, wm_key, prompt, jnp.float32(delta),
                     positive_int("num_new_tokens", num_new_tokens), window,
                     _gamma(gamma))  # fmt: skip


def z_scores(tokens, key, vocab_size, gamma, prompt_len=0, ignore_repeated=False) -> np.ndarray:
    """Detector z-scores [B] of a batch of sequences tokens [B, T] (as
    :func:`watermark_z_score` row by row)."""
    table = np.asarray(green_table(key, vocab_size, gamma))
    return table_z_scores(tokens, table, gamma, prompt_len, ignore_repeated)


def table_z_scores(tokens, table, gamma, prompt_len=0, ignore_repeated=False) -> np.ndarray:
    """:func:`z_scores` with the green lists given: table bool [V, V], row p the green list after
    token p (from any seeding scheme, e.g. transformers' in the tests)."""
    tokens, table = np.asarray(tokens), np.asarray(table, dtype=bool)
    start = max(int(prompt_len), 1)
    prev, nxt = tokens[:, start - 1 : -1], tokens[:, start:]
    greens = table[prev, nxt]
    if not ignore_repeated:
        return z_from_counts(greens.sum(axis=1), greens.shape[1], gamma)
    codes = prev.astype(np.int64) * table.shape[1] + nxt
    counts = np.empty((len(tokens), 2))
    for row, (code, green) in enumerate(zip(codes, greens)):
        _, first = np.unique(code, return_index=True)
        counts[row] = green[first].sum(), len(first)
    return z_from_counts(counts[:, 0], counts[:, 1], gamma)


# --- the substitution attack --------------------------------------------------------------------


def _max_greens_below(n: int, gamma: float, threshold: float) -> int:
    """The largest green count whose z-score is below ``threshold`` (-1 if none)."""
    limit = gamma * n + threshold * math.sqrt(n * gamma * (1.0 - gamma))
    g = math.ceil(limit) - 1
    while g + 1 < limit and z_from_counts(g + 1, n, gamma) < threshold:  # rounding at the edge
        g += 1
    while g >= 0 and z_from_counts(g, n, gamma) >= threshold:
        g -= 1
    return g


def min_substitutions(tokens, key, vocab_size, gamma, threshold, prompt_len=0):
    """The fewest token substitutions that bring the z-score (repeats counted) under threshold.

    The attacker edits scored positions only (i >= max(prompt_len, 1)) and picks each new token
    red in its own list and such that the next token becomes red in the new token's list, so one
    edit turns the greens at i and i + 1 red. Returns a Python int (0 if z is already below).
    """
    tokens = _tokens(tokens)
    start = max(int(prompt_len), 1)
    if len(tokens) <= start:
        raise ValueError(f"no token to score: {len(tokens)} tokens, scoring starts at {start}")
    flags = green_flags(tokens, key, vocab_size, gamma, prompt_len)[start:]
    n, greens = len(flags), int(flags.sum())
    excess = greens - _max_greens_below(n, _gamma(gamma), float(threshold))
    if excess <= 0:
        return 0
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(int), [0]]))))[::2]
    pairs = int(np.sum(runs // 2))
    return (excess + 1) // 2 if excess <= 2 * pairs else pairs + (excess - 2 * pairs)


def substitution_attack(tokens, key, vocab_size, gamma, threshold, prompt_len=0):
    """Carry out the attack :func:`min_substitutions` counts: returns (new tokens [T], number of
    edits). Edits go left to right on the green runs, a pair of greens per edit first."""
    tokens = _tokens(tokens).copy()
    start = max(int(prompt_len), 1)
    gamma = _gamma(gamma)
    target = min_substitutions(tokens, key, vocab_size, gamma, threshold, prompt_len)
    flags = green_flags(tokens, key, vocab_size, gamma, prompt_len)
    pair_edits, singles, i = [], [], start  # a pair edit at the first of two greens in a row
    while i < len(tokens):
        if flags[i] and i + 1 < len(tokens) and flags[i + 1]:
            pair_edits.append(i)
            i += 2
            continue
        if flags[i]:
            singles.append(i)
        i += 1
    edits = (pair_edits + singles)[:target]
    masks = {}

    def mask(prev):
        if prev not in masks:
            masks[prev] = np.asarray(green_mask(key, int(prev), vocab_size, gamma))
        return masks[prev]

    for i in sorted(edits):
        red_here = ~mask(tokens[i - 1])
        candidates = [c for c in np.flatnonzero(red_here)
                      if i + 1 >= len(tokens) or not mask(c)[tokens[i + 1]]]  # fmt: skip
        tokens[i] = candidates[0] if candidates else np.flatnonzero(red_here)[0]
    return tokens, len(edits)
