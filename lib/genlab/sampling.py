"""Reference implementations of chapter 04's sampling exercises: temperature, top-k, top-p.

The chapter (``solutions/04_gpt_sampling/04_gpt_sampling.ipynb``) teaches each function in the
section named in its docstring; the notebook's hidden tests compare the student's version with
the one here. Shape letters: B batch, T time (tokens), V vocabulary.

    apply_temperature   section 5, logits / t
    entropy_temperature_slope  section 5, dH/dt of softmax(logits / t) (a derive exercise)
    top_k_filter        section 5, keep the k largest logits (ties at the threshold kept)
    top_p_filter        section 5, nucleus sampling (Holtzman et al. 2020)
    sample_next_token   section 5, temperature -> top-k -> top-p -> jax.random.categorical
    step_keys           section 8, one jax.random.split per generated token (pitfall: reused key)
    nucleus_size        section 8, tokens kept by temperature then top-p (pitfall: wrong order)
    generate            section 6, the naive loop that recomputes the whole context per token
    entropy             section 5, entropy of the next-token distribution (nats)
    distinct_ngrams     section 5, sample diversity

Filtered-out logits are ``-inf``, the convention of Hugging Face's logits warpers, so
``jax.nn.softmax`` gives them probability exactly 0 and ``jax.random.categorical`` never draws
them. The filters are checked against ``transformers``' ``TemperatureLogitsWarper``,
``TopKLogitsWarper`` and ``TopPLogitsWarper`` in ``tests/test_sampling.py``.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "apply_temperature",
    "check_prompt",
    "distinct_ngrams",
    "entropy",
    "entropy_temperature_slope",
    "generate",
    "known_word_fraction",
    "nucleus_size",
    "sample_next_token",
    "step_keys",
    "top_k_filter",
    "top_p_filter",
    "typical_filter",
    "words",
]


# --- argument checks ------------------------------------------------------------------------


_WORD = re.compile(r"[a-z]+")


def _logits(x, name: str = "logits") -> jax.Array:
    if x is None or isinstance(x, (str, bytes, dict)):
        raise TypeError(f"{name} must be an array of numbers, got {type(x).__name__}")
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"{name} must have shape [..., V] (a vocabulary axis), got a scalar")
    if x.shape[-1] == 0:
        raise ValueError(f"{name} must have a non-empty vocabulary axis, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, (jax.Array, np.ndarray)) and np.ndim(value) == 0:
            return float(value)
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def _check_temperature(t) -> float:
    t = _number("t (temperature)", t)
    if not t > 0 or not np.isfinite(t):
        raise ValueError(f"temperature t must be a finite number > 0, got {t}")
    return t


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (numbers.Integral, np.integer)):
        raise TypeError(f"k (top-k) must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k (top-k) must be >= 1, got {k}")
    return int(k)


def _check_p(p) -> float:
    p = _number("p (top-p)", p)
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p (top-p) must be in (0, 1], got {p}")
    return p


# --- the filters without argument checks (values may be traced under jit) --------------------


def _top_k(logits: jax.Array, k) -> jax.Array:
    """top_k_filter for a possibly traced k in [1, V]: keep logits >= the k-th largest."""
    vocab = logits.shape[-1]
    ascending = jnp.sort(logits, axis=-1)
    kth = jnp.take(ascending, vocab - k, axis=-1)[..., None]  # (..., 1)
    return jnp.where(logits < kth, -jnp.inf, logits)


def _top_p(logits: jax.Array, p, min_tokens_to_keep: int = 1) -> jax.Array:
    """top_p_filter for a possibly traced p in (0, 1]."""
    # Ascending order, as in transformers: the running sum from the least probable token up is
    # the probability of a token plus every less probable one; drop the token when that is
    # <= 1 - p (what remains above it already has probability >= p).
    order = jnp.argsort(logits, axis=-1, stable=True)  # (..., V), least probable first
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1)  # (..., V)
    tail = jnp.cumsum(probs, axis=-1)  # (..., V)
    vocab = logits.shape[-1]
    rank_from_top = vocab - 1 - jnp.arange(vocab)  # 0 for the most probable token
    keep_sorted = (tail > 1.0 - p) | (rank_from_top < min_tokens_to_keep)  # (..., V)
    inverse = jnp.argsort(order, axis=-1)
    keep = jnp.take_along_axis(keep_sorted, inverse, axis=-1)
    return jnp.where(keep, logits, -jnp.inf)


def sample_traced(key, logits, temperature, top_k, top_p, use_top_k: bool, use_top_p: bool):
    """:func:`sample_next_token` for traced ``temperature``, ``top_k`` and ``top_p`` (checked by
    the caller), so one compiled sampling loop serves every setting. Same draws for the same
    key as :func:`sample_next_token` with the same values."""
    logits = jnp.asarray(logits) / temperature
    if use_top_k:
        logits = jnp.where(
            top_k >= logits.shape[-1], logits, _top_k(logits, jnp.minimum(top_k, logits.shape[-1]))
        )
    if use_top_p:
        logits = _top_p(logits, top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def check_sampling_args(temperature=1.0, top_k=None, top_p=None) -> None:
    """Raise the errors :func:`sample_next_token` would raise for these settings."""
    _check_temperature(temperature)
    if top_k is not None:
        _check_k(top_k)
    if top_p is not None:
        _check_p(top_p)


# --- filters --------------------------------------------------------------------------------


def apply_temperature(logits, t):
    """Divide the logits by the temperature ``t``: softmax(logits / t).

    t < 1 sharpens the distribution (t -> 0 approaches greedy argmax), t > 1 flattens it
    (t -> inf approaches uniform over the tokens whose logit is finite).

    Args:
        logits: float [..., V].
        t: Python float or int > 0.

    Returns:
        float [..., V], ``logits / t`` (``-inf`` stays ``-inf``).

    Raises:
        ValueError: ``t <= 0`` (use greedy decoding, not temperature 0).
    """
    logits = _logits(logits)
    t = _check_temperature(t)
    return logits / t


def top_k_filter(logits, k):
    """Keep the ``k`` largest logits of each row; set the others to ``-inf``.

    A logit is kept when it is >= the k-th largest value of its row, so ties at the threshold
    are all kept (the row may keep more than k entries); ``k >= V`` keeps everything.

    Args:
        logits: float [..., V].
        k: Python int >= 1.

    Returns:
        float [..., V], same dtype: kept logits unchanged, the rest ``-inf``.
    """
    logits = _logits(logits)
    k = _check_k(k)
    if k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]  # (..., 1), the k-th largest
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits, p, min_tokens_to_keep=1):
    """Nucleus filter: keep the smallest set of most probable tokens whose probability is >= p.

    Sort the probabilities softmax(logits) in decreasing order; a token is kept when the total
    probability of the tokens *before* it is < p, so the token whose probability carries the
    running total across p is kept (probabilities [0.5, 0.35, 0.1, 0.05] with p = 0.9 keep 3
    tokens). The ``min_tokens_to_keep`` most probable tokens are always kept; ``p = 1`` keeps
    every token of nonzero probability. Among equal logits the one with the lower index counts
    as more probable.

    Args:
        logits: float [..., V].
        p: Python float in (0, 1].
        min_tokens_to_keep: Python int >= 1.

    Returns:
        float [..., V], same dtype: kept logits unchanged, the rest ``-inf``.
    """
    logits = _logits(logits)
    p = _check_p(p)
    if isinstance(min_tokens_to_keep, bool) or not isinstance(
        min_tokens_to_keep, (numbers.Integral, np.integer)
    ):
        raise TypeError(
            f"min_tokens_to_keep must be an int, got {type(min_tokens_to_keep).__name__}"
        )
    if min_tokens_to_keep < 1:
        raise ValueError(f"min_tokens_to_keep must be >= 1, got {min_tokens_to_keep}")
    return _top_p(logits, p, int(min_tokens_to_keep))


def typical_filter(logits, mass):
    """Locally typical filter (Meister et al. 2023): keep the tokens whose surprisal is closest
    to the distribution's entropy, until they hold probability >= mass (the bonus exercise).

    With probs = softmax(logits) over the last axis and H its entropy in nats, rank the tokens
    by ``|-log probs - H|`` (smallest first; among equal distances the lower index first). A
    token is kept when the total probability of the tokens ranked before it is < mass, so the
    token that crosses ``mass`` is kept and at least one token always is. Tokens of probability
    0 (logit -inf) are never kept.

    Args:
        logits: float [..., V].
        mass: Python float in (0, 1].

    Returns:
        float [..., V] in the original order: kept logits unchanged, the others -inf.
    """
    logits = _logits(logits)
    mass = _number("mass", mass)
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # (..., V)
    p = jnp.exp(log_p)
    entropy_ = -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1, keepdims=True)  # (..., 1)
    distance = jnp.where(p > 0, jnp.abs(-log_p - entropy_), jnp.inf)  # (..., V)
    order = jnp.argsort(distance, axis=-1, stable=True)  # most typical first
    sorted_p = jnp.take_along_axis(p, order, axis=-1)
    before = jnp.cumsum(sorted_p, axis=-1) - sorted_p
    keep_sorted = ((before < mass) & (sorted_p > 0)) | (jnp.arange(logits.shape[-1]) < 1)
    keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
    return jnp.where(keep, logits, -jnp.inf)


def sample_next_token(key, logits, temperature=1.0, top_k=None, top_p=None):
    """Draw one token per row: temperature -> top-k -> top-p -> ``jax.random.categorical``.

    Args:
        key: a ``jax.random`` key, used once: ``jax.random.categorical(key, filtered, axis=-1)``.
        logits: float [..., V], the next-token logits.
        temperature: float > 0 (1.0 leaves the logits unchanged).
        top_k: None (no top-k filter) or int >= 1.
        top_p: None (no top-p filter) or float in (0, 1].

    Returns:
        int32 [...], the sampled token ids.
    """
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def step_keys(key, num_steps):
    """The per-step sampling keys of the course's generation loops (one split per step).

        for i in range(num_steps):
            key, subkey = jax.random.split(key)
            keys[i] = subkey

    Args:
        key: a ``jax.random`` key (typed, from ``jax.random.key``).
        num_steps: N, int >= 1.

    Returns:
        key array [N]: the subkeys, all different; reusing one key for every step would make
        the random choices of all steps the same draw.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, numbers.Integral) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    keys = []
    for _ in range(num_steps):
        key, subkey = jax.random.split(key)
        keys.append(subkey)
    return jnp.stack(keys)


def nucleus_size(logits, p, temperature=1.0):
    """Number of tokens that survive temperature *then* top-p: the size of the nucleus.

    Args:
        logits: float [..., V].
        p: float in (0, 1].
        temperature: float > 0, applied before the top-p filter (the sampling order).

    Returns:
        int32 [...]: how many entries of ``top_p_filter(logits / temperature, p)`` are finite.
        It grows with the temperature (a flatter distribution needs more tokens to reach p).
    """
    filtered = top_p_filter(apply_temperature(logits, temperature), p)
    return jnp.sum(jnp.isfinite(filtered), axis=-1).astype(jnp.int32)


# --- diagnostics ----------------------------------------------------------------------------


def entropy(logits):
    """Entropy in nats of softmax(logits) over the last axis; ``-inf`` logits contribute 0.

    Args:
        logits: float [..., V].

    Returns:
        float [...], between 0 and log V.
    """
    logits = _logits(logits)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(log_p)
    return -jnp.sum(jnp.where(p > 0, p * log_p, 0.0), axis=-1)


def entropy_temperature_slope(logits, t):
    """How fast the entropy of the tempered distribution grows with the temperature, at t.

    Chapter 04, section 5 (a *derive* exercise). With H(t) the entropy in nats of
    softmax(logits / t) over the last axis, returns dH/dt at t for every row: >= 0, and 0 for a
    row whose logits are all equal (the uniform distribution, already of maximal entropy).

    Args:
        logits: float [..., V], finite.
        t: float > 0.

    Returns:
        float32 [...], in nats per unit of temperature, to a relative 1e-3 in every row, also
        where the slope is tiny (t far below the gaps between the logits, or far above their
        spread), where float32 differences of H, numerical or automatic, lose it.

    Raises:
        ValueError: if t <= 0.
    """
    t = _check_temperature(t)
    logits = _logits(logits).astype(jnp.float32)
    p = jax.nn.softmax(logits / t, axis=-1)  # (..., V)
    centred = logits - jnp.sum(p * logits, axis=-1, keepdims=True)  # (..., V)
    variance = jnp.sum(p * centred**2, axis=-1)  # (...,), Var of the logits under p
    return variance / t**3


def distinct_ngrams(tokens, n):
    """Fraction of distinct n-grams in token sequences (1.0 = no n-gram repeats).

    Args:
        tokens: integer [T] or [B, T] (NumPy or JAX); with a batch, n-grams of all rows are
            pooled (an n-gram never spans two rows).
        n: int >= 1, n <= T.

    Returns:
        Python float in (0, 1]: number of distinct n-grams / number of n-grams.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape [T] or [B, T], got {tokens.shape}")
    if isinstance(n, bool) or not isinstance(n, (numbers.Integral, np.integer)) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if n > tokens.shape[1]:
        raise ValueError(f"n = {n} is longer than the sequences (T = {tokens.shape[1]})")
    grams = [tuple(row[i : i + n]) for row in tokens.tolist() for i in range(len(row) - n + 1)]
    return len(set(grams)) / len(grams)


def words(text: str) -> list[str]:
    """The words of ``text``: maximal runs of ASCII letters, lower-cased ("Don't" -> don, t)."""
    return _WORD.findall(text.lower())


def known_word_fraction(texts, vocabulary, min_length: int = 2) -> float:
    """Fraction of the words of ``texts`` that occur in ``vocabulary`` (a word-level check that
    a character model spells).

    Words shorter than ``min_length`` letters are not counted: single letters are "words" of
    almost any text (``t`` of "don't", ``n`` of "\\n"), so random letters would score well.

    Args:
        texts: a string or a list of strings (e.g. decoded samples).
        vocabulary: a set of lower-case words, e.g. ``set(words(training_text))``.
        min_length: int >= 1, the shortest word counted.

    Returns:
        Python float in [0, 1]; 0.0 when the texts hold no word long enough.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    found = [w for t in texts for w in words(t) if len(w) >= min_length]
    if not found:
        return 0.0
    return sum(w in vocabulary for w in found) / len(found)


# --- the naive generation loop --------------------------------------------------------------


def check_prompt(prompt, num_new_tokens, *, min_new_tokens: int) -> jax.Array:
    """Check a generation request; return ``prompt`` as an integer array [B, T0].

    Raises a ValueError/TypeError naming ``prompt`` (not [B, T0] with T0 >= 1, or not integer
    ids) or ``num_new_tokens`` (not an int, or below ``min_new_tokens``).
    """
    prompt = jnp.asarray(prompt)
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must have shape [B, T0] with T0 >= 1, got {prompt.shape}")
    if not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise TypeError(f"prompt must hold integer token ids, got dtype {prompt.dtype}")
    if isinstance(num_new_tokens, bool) or not isinstance(num_new_tokens, numbers.Integral):
        raise TypeError(f"num_new_tokens must be an int, got {type(num_new_tokens).__name__}")
    if num_new_tokens < min_new_tokens:
        raise ValueError(f"num_new_tokens must be >= {min_new_tokens}, got {num_new_tokens}")
    return prompt


def generate(
    key,
    logits_fn: Callable,
    prompt,
    num_new_tokens,
    temperature=1.0,
    top_k=None,
    top_p=None,
    greedy=False,
    end_id=-1,
):
    """Autoregressive generation that recomputes the whole context for every new token.

    The tokens live in a fixed-size buffer ``[B, T0 + N]`` (zeros after the current position),
    so a jitted ``logits_fn`` compiles once; causal attention makes the zeros invisible.
    Step i = 0, ..., N - 1:

        key, subkey = jax.random.split(key)
        logits = logits_fn(buffer)[:, T0 + i - 1]       # (B, V), the last real position
        token = argmax(logits) if greedy else sample_next_token(subkey, logits, ...)
        buffer[:, T0 + i] = token

    A row that has drawn ``end_id`` (its document has ended) continues with ``end_id`` only:
    every later new token of that row is ``end_id``, whatever the model says. ``end_id = -1``
    (no token id) never ends a row. The prompt does not count.

    One ``jax.random.split`` per step, also when greedy (the key is then unused), so cached
    generation (``genlab.gpt.generate``) draws the same tokens for the same key.

    Args:
        key: a ``jax.random`` key.
        logits_fn: ``tokens int32 [B, T0 + N] -> logits float [B, T0 + N, V]``, causal.
        prompt: integer [B, T0] with T0 >= 1.
        num_new_tokens: N, int >= 0.
        temperature, top_k, top_p: as in :func:`sample_next_token`.
        greedy: take the argmax instead of sampling.
        end_id: int, the end-of-document token id; -1 for none.

    Returns:
        int32 [B, T0 + N]: the prompt followed by the N generated tokens.
    """
    prompt = check_prompt(prompt, num_new_tokens, min_new_tokens=0)
    batch, t0 = prompt.shape
    buffer = jnp.zeros((batch, t0 + num_new_tokens), jnp.int32).at[:, :t0].set(prompt)
    ended = jnp.zeros((batch,), bool)  # (B,): rows that have drawn end_id
    for i in range(num_new_tokens):
        key, subkey = jax.random.split(key)
        logits = logits_fn(buffer)[:, t0 + i - 1]  # (B, V)
        if greedy:
            token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        else:
            token = sample_next_token(subkey, logits, temperature, top_k, top_p)
        token = jnp.where(ended, end_id, token).astype(jnp.int32)
        ended = ended | (token == end_id)
        buffer = buffer.at[:, t0 + i].set(token)
    return buffer
