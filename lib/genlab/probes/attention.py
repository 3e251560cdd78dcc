"""Probes of chapter 03, self-attention (references in :mod:`genlab.attention`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genlab import attention, check
from genlab.probing import Case, Probe, call, close, f32


def _normal(rng: np.random.Generator, shape, scale: float = 1.0) -> jax.Array:
    return f32(scale * rng.normal(size=shape))


def _exact(kind: str):
    """A comparison: the output has a ``kind`` dtype and equals the reference exactly."""

    def compare(got, want, label: str) -> None:
        check.dtype(label, got, kind)
        check.equal(label, got, want)

    return compare


def attention_scores_cases(rng: np.random.Generator) -> list[Case]:
    q, k = jnp.ones((1, 4)), jnp.array([[2.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    cases = [
        Case("attention_scores(q (1, 4), k (2, 4)) on the hand example", call(q, k)),
        Case("attention_scores(q (3, 8), k (5, 8)) of ones",
             call(jnp.ones((3, 8)), jnp.ones((5, 8)))),
        Case("attention_scores(q (2, 1, 3, 8), k (4, 5, 8)) of ones (batch axes broadcast)",
             call(jnp.ones((2, 1, 3, 8)), jnp.ones((4, 5, 8)))),
    ]  # fmt: skip
    shapes = [((5, 7, 16), (5, 9, 16)), ((2, 1, 5, 64), (4, 3, 64)), ((1, 2), (3, 2))]
    for q_shape, k_shape in shapes:
        q, k = _normal(rng, q_shape), _normal(rng, k_shape)
        label = f"attention_scores(q {q_shape}, k {k_shape})"
        cases.append(Case(label, call(q, k), close(1e-5, 1e-5)))
    q, k = _normal(rng, (3, 4, 32), 100.0), _normal(rng, (3, 6, 32), 100.0)
    label = "attention_scores(q (3, 4, 32), k (3, 6, 32) with entries of size 100)"
    cases.append(Case(label, call(q, k), close(1e-5, 1e-2)))
    return cases


def _masked_softmax_gradient(scores, mask):
    def run(masked_softmax):
        return jax.grad(lambda s: jnp.sum(masked_softmax(s, mask) * jnp.arange(3.0)))(scores)

    return run


def masked_softmax_cases(rng: np.random.Generator) -> list[Case]:
    rows = jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    cases = [
        Case("masked_softmax([0, log 3])", call(jnp.array([[0.0, np.log(3.0)]]))),
        Case("masked_softmax([1, 5, 1], mask [T, F, T])",
             call(jnp.array([[1.0, 5.0, 1.0]]), jnp.array([[True, False, True]]))),
        Case("masked_softmax(scores (2, 3), row 1 fully masked: zeros, not NaN)",
             call(rows, jnp.array([[True, True, True], [False, False, False]]))),
        Case("masked_softmax([1000, 0], mask [T, T]) (must not overflow)",
             call(jnp.array([1000.0, 0.0]), jnp.array([True, True]))),
    ]  # fmt: skip
    tol = close(1e-5, 1e-6)
    scores = _normal(rng, (2, 3, 5, 7), 3.0)
    cases.append(Case("masked_softmax(scores (2, 3, 5, 7), mask=None)", call(scores), tol))
    mask = jnp.asarray(rng.random((2, 3, 5, 7)) < 0.5)
    mask = mask.at[0, 0, 1].set(False).at[1, 2].set(False)
    label = "masked_softmax(scores (2, 3, 5, 7), random mask with fully masked rows)"
    cases.append(Case(label, call(scores, mask), tol))
    for mask_shape in [(7,), (2, 1, 1, 7)]:
        mask = jnp.asarray(rng.random(mask_shape) < 0.6)
        label = f"masked_softmax(scores (2, 3, 5, 7), mask {mask_shape} that broadcasts)"
        cases.append(Case(label, call(scores, mask), tol))
    extreme = f32([[1e4, -1e4, 0.0, 5e3], [-1e4, -1e4, -1e4, -1e4], [1e4, 1e4, 1e4, 1e4]])
    mask = jnp.array([[False, True, True, True], [True, False, True, True], [False] * 4])
    label = "masked_softmax(scores of size 1e4, mask with a fully masked row)"
    cases.append(Case(label, call(extreme, mask), tol))
    label = "masked_softmax([1000, 0, 1], mask [F, T, T]) (the largest score is masked)"
    top_masked = call(jnp.array([1000.0, 0.0, 1.0]), jnp.array([False, True, True]))
    cases.append(Case(label, top_masked, tol))
    mask = jnp.array([[True, False, True], [False, False, False]])
    label = "gradient of sum(masked_softmax(s, mask) * [0, 1, 2]) with a fully masked row (zeros)"
    cases.append(Case(label, _masked_softmax_gradient(scores[0, 0, :2, :3], mask), tol))
    return cases


def _out_and_weights(out_tol: tuple[float, float], weights_tol: tuple[float, float]):
    """A comparison of ``(out, weights)`` with a tolerance ``(rtol, atol)`` for each."""

    def compare(got, want, label: str) -> None:
        if not isinstance(got, tuple) or len(got) != 2:
            found = f"a tuple of {len(got)}" if isinstance(got, tuple) else "one output"
            check.is_true(False, f"{label}: expected a pair (out, weights), got {found}")
        close(*out_tol)(got[0], want[0], f"{label}, out")
        close(*weights_tol)(got[1], want[1], f"{label}, weights")

    return compare


def scaled_dot_product_attention_cases(rng: np.random.Generator) -> list[Case]:
    default = _out_and_weights((1e-5, 1e-5), (1e-5, 1e-5))
    v = f32(np.random.default_rng(0).normal(size=(2, 4, 5)))
    ones_q, ones_k = jnp.ones((2, 3, 8)), jnp.ones((2, 4, 8))
    cases = [
        Case("scaled_dot_product_attention: the lookup of section 1 (keys = unit vectors)",
             call(jnp.array([[0.0, 8.0, 0.0]]), jnp.eye(3), jnp.array([[10.0], [20.0], [30.0]])),
             _out_and_weights((1e-5, 1e-6), (1e-5, 1e-6))),
        Case("scaled_dot_product_attention with equal keys (out = mean of the values)",
             call(ones_q, ones_k, v), default),
        Case("scaled_dot_product_attention with a mask allowing only key 0 (out = v_0)",
             call(ones_q, ones_k, v, jnp.array([True, False, False, False])), default),
    ]  # fmt: skip
    q, k, v = _normal(rng, (2, 3, 5, 8)), _normal(rng, (2, 3, 7, 8)), _normal(rng, (2, 3, 7, 4))
    random_mask = jnp.asarray(rng.random((2, 3, 5, 7)) < 0.5).at[:, :, 2].set(False)
    lengths = jnp.array([int(rng.integers(1, 7)), 7])
    masks = {
        "no mask": None,
        "a random mask (2, 3, 5, 7) with fully masked rows": random_mask,
        "a padding mask (2, 1, 1, 7)": attention.padding_mask(lengths, 7)[:, None],
    }
    for name, mask in masks.items():
        label = f"scaled_dot_product_attention(q, k, v of (2, 3, T, D), T_q=5, T_k=7, {name})"
        cases.append(Case(label, call(q, k, v, mask), default))
    x = _normal(rng, (2, 3, 6, 16), 6.0)
    label = "scaled_dot_product_attention(x, x, x), x (2, 3, 6, 16) with large entries, causal mask"
    compare = _out_and_weights((1e-4, 1e-4), (1e-5, 1e-5))
    cases.append(Case(label, call(x, x, x, attention.causal_mask(6)), compare))
    q, k, v = _normal(rng, (4, 64)), _normal(rng, (9, 64)), _normal(rng, (9, 3))
    label = "scaled_dot_product_attention(q (4, 64), k (9, 64), v (9, 3)) without batch axes"
    cases.append(Case(label, call(q, k, v), default))
    return cases


def softmax_entropy_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("softmax_entropy(zeros (8,)) = log 8", call(jnp.zeros(8))),
        Case("softmax_entropy([100, 0, 0]) is about 0", call(jnp.array([100.0, 0.0, 0.0])),
             close(1e-5, 1e-5)),
        Case("softmax_entropy([1, 1, -inf]) = log 2", call(jnp.array([1.0, 1.0, -jnp.inf]))),
        Case("softmax_entropy(zeros (3, 4, 5)) over the last axis", call(jnp.zeros((3, 4, 5)))),
    ]  # fmt: skip
    scores = _normal(rng, (4, 3, 9), 2.0)
    cases.append(Case("softmax_entropy(scores (4, 3, 9))", call(scores)))
    masked = scores.at[..., 4:].set(-jnp.inf).at[0, 0, 1:].set(-jnp.inf)
    label = "softmax_entropy(scores (4, 3, 9) with -inf entries; a row with one finite entry)"
    cases.append(Case(label, call(masked)))
    big = f32([[1e4, 0.0, -1e4], [1e3, 1e3, 1e3], [-1e4, -1e4, 3.0]])
    cases.append(Case("softmax_entropy(scores of size 1e4)", call(big), close(1e-5, 1e-5)))
    return cases


def causal_mask_cases(rng: np.random.Generator) -> list[Case]:
    sizes = [3, 1, 2, int(rng.integers(4, 9)), int(rng.integers(10, 24)), 64]
    return [Case(f"causal_mask({T})", call(T), _exact("bool")) for T in sizes]


def padding_mask_cases(rng: np.random.Generator) -> list[Case]:
    examples = [([2, 4], 4), ([0, 1, 5, 9], 5), ([3], 3), ([7, 2, 0], 8), (list(range(12)), 11)]
    T = int(rng.integers(4, 12))
    examples.append((rng.integers(0, T + 3, size=int(rng.integers(2, 7))).tolist(), T))
    cases = []
    for lengths, T in examples:
        notes = [("a length 0", 0 in lengths), ("a length = T", T in lengths),
                 ("lengths > T", max(lengths) > T)]  # fmt: skip
        notes = ", ".join(note for note, present in notes if present)
        label = f"padding_mask(lengths of {len(lengths)} sequences, T={T})"
        label += f" with {notes}" if notes else ""
        cases.append(Case(label, call(jnp.array(lengths), T), _exact("bool")))
    return cases


def _layer(name: str, w: jax.Array, T: int):
    """A layer of the leakage test: ``[..., T, D] -> [..., T, D]``, causal or not."""
    causal = attention.causal_mask(T)
    sdpa = attention.scaled_dot_product_attention
    return {
        "dense mixing over positions": lambda x: jnp.einsum("ij,...jd->...id", w, x),
        "lower-triangular mixing": lambda x: jnp.einsum("ij,...jd->...id", jnp.tril(w), x),
        "read position i + 1": lambda x: jnp.roll(x, -1, axis=-2),
        "read the last position": lambda x: jnp.broadcast_to(x[..., -1:, :], x.shape) * 2.0,
        "causal attention": lambda x: sdpa(x, x, x, causal)[0],
        "attention with an inverted causal mask": lambda x: sdpa(x, x, x, ~causal)[0],
        "squared features": lambda x: jnp.einsum("ij,...jd->...id", w, x) ** 2 - x,
    }[name]


def _leakage(name: str, w: jax.Array, x: jax.Array, ts: list[int]):
    def run(causal_leakage):
        layer = _layer(name, w, x.shape[-2])
        return {f"t={t}": causal_leakage(layer, x, t) for t in ts}

    return run


def _visible_leakage(layer, t: int):
    def run(causal_leakage):
        x = jax.random.normal(jax.random.key(7), (2, 6, 4))  # (B, T, D)
        return causal_leakage(layer, x, t)

    return run


def _previous(x):
    return jnp.concatenate([x[..., :1, :], x[..., :-1, :]], axis=-2)


def _reversed_cumsum(x):
    return jnp.cumsum(x[..., ::-1, :], axis=-2)[..., ::-1, :]


def causal_leakage_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("causal_leakage(read the next position, t=3) = 1",
             _visible_leakage(lambda x: jnp.roll(x, -1, axis=-2), 3), close(1e-6, 1e-6)),
        Case("causal_leakage(read the previous position, t=3) = 0", _visible_leakage(_previous, 3)),
        Case("causal_leakage(cumsum over positions, t=2) = 0",
             _visible_leakage(lambda x: jnp.cumsum(x, axis=-2), 2), close(1e-5, 1e-5)),
        Case("causal_leakage(reversed cumsum over positions, t=2) (it reads the future)",
             _visible_leakage(_reversed_cumsum, 2), close(1e-5, 1e-5)),
    ]  # fmt: skip
    x, w = _normal(rng, (3, 7, 5)), _normal(rng, (7, 7))
    ts = [1, int(rng.integers(2, 6)), 6]
    names = ["dense mixing over positions", "lower-triangular mixing", "read position i + 1",
             "read the last position", "causal attention", "attention with an inverted causal mask",
             "squared features"]  # fmt: skip
    for name in names:
        label = f"causal_leakage({name}, x (3, 7, 5))"
        cases.append(Case(label, _leakage(name, w, x, ts), close(1e-5, 1e-5)))
    return cases


def split_heads_cases(rng: np.random.Generator) -> list[Case]:
    x = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
    cases = [Case("split_heads(x = arange as (2, 3, 4), 2)", call(x, 2))]
    for shape, H in [((2, 5, 12), 3), ((3, 4, 8), 8), ((2, 6, 10), 1), ((1, 7, 12), 4)]:
        cases.append(Case(f"split_heads(x {shape}, {H})", call(_normal(rng, shape), H)))
    return cases


def _merge_after_split(y: jax.Array, H: int):
    return lambda merge_heads: merge_heads(attention.split_heads(y, H))


def merge_heads_cases(rng: np.random.Generator) -> list[Case]:
    x = jnp.arange(2 * 2 * 3 * 2, dtype=jnp.float32).reshape(2, 2, 3, 2)
    cases = [Case("merge_heads(x = arange as (2, 2, 3, 2))", call(x))]
    for B, H, T, d in [(2, 3, 5, 4), (3, 1, 6, 5), (2, 8, 3, 1)]:
        cases.append(Case(f"merge_heads(x {(B, H, T, d)})", call(_normal(rng, (B, H, T, d)))))
        y = _normal(rng, (B, T, H * d))
        label = f"merge_heads(split_heads(y {(B, T, H * d)}, {H})) == y"
        cases.append(Case(label, _merge_after_split(y, H)))
    return cases


_PROJECTIONS = ("query", "key", "value", "out")


def _mhsa_linears(cls):
    layer = cls(2, 8, rngs=nnx.Rngs(0))
    return {n: np.asarray(isinstance(getattr(layer, n, None), nnx.Linear)) for n in _PROJECTIONS}


def _all_linear(got, want, label: str) -> None:
    if not isinstance(got, dict) or set(got) != set(_PROJECTIONS):
        check.is_true(False, f"{label}: expected one flag per projection")
    for name in _PROJECTIONS:
        check.is_true(bool(got[name]), f"{label}: MultiHeadSelfAttention.{name} is not one")


def _mhsa_own_weights(cls):
    layer = cls(2, 8, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(10), (3, 5, 8))  # (B, T, D)
    mask = attention.causal_mask(5)
    moved = layer(x, mask)[:, 0] - layer(x.at[:, 1:].add(1.0), mask)[:, 0]  # (B, D)
    return {"output shape": np.asarray(layer(x).shape),
            "position 0 moved by later positions (causal mask)": moved}  # fmt: skip


def _mhsa_set_weights(H: int, D: int, weights: dict, x: jax.Array, lengths: jax.Array):
    def run(cls):
        layer = cls(H, D, rngs=nnx.Rngs(1))
        for name in _PROJECTIONS:
            getattr(layer, name).kernel[...] = weights[name][0]
            getattr(layer, name).bias[...] = weights[name][1]
        T = x.shape[-2]
        causal = attention.causal_mask(T)
        padded = (causal & attention.padding_mask(lengths, T))[:, None]  # (B, 1, T, T)
        return {"no mask": layer(x), "causal + padding mask (B, 1, T, T)": layer(x, padded),
                "causal mask (T, T)": layer(x, causal)}  # fmt: skip

    return run


def MultiHeadSelfAttention_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("MultiHeadSelfAttention(2, 8): query, key, value and out must be nnx.Linear",
             _mhsa_linears, _all_linear),
        Case("MultiHeadSelfAttention(2, 8) with its own initialisation, x (3, 5, 8)",
             _mhsa_own_weights, close(1e-5, 1e-5)),
    ]  # fmt: skip
    for B, T, D, H in [(2, 6, 16, 4), (3, 5, 12, 1)]:
        weights = {n: (_normal(rng, (D, D), D**-0.5), _normal(rng, (D,))) for n in _PROJECTIONS}
        x = _normal(rng, (B, T, D))
        lengths = jnp.asarray(rng.integers(1, T + 1, size=B))
        label = f"MultiHeadSelfAttention({H}, {D}) with set weights and biases, x {(B, T, D)}"
        cases.append(Case(label, _mhsa_set_weights(H, D, weights, x, lengths), close(1e-4, 1e-4)))
    return cases


def sinusoidal_positions_cases(rng: np.random.Generator) -> list[Case]:
    cases = [Case("sinusoidal_positions(3, 4)", call(3, 4))]
    drawn = (int(rng.integers(5, 40)), 2 * int(rng.integers(3, 33)))
    for T, D in [(1, 2), (50, 64), (10, 512), drawn]:
        label = f"sinusoidal_positions({T}, {D})"
        cases.append(Case(label, call(T, D), close(1e-4, 1e-4, dtype="float")))
    return cases


def online_softmax_attention_cases(rng: np.random.Generator) -> list[Case]:
    visible = np.random.default_rng(1)
    q, k, v = (f32(visible.normal(size=(2, 6, 4))) for _ in range(3))
    k_growing = jnp.linspace(0.0, 4.0, 6)[:, None] * jnp.ones((6, 4))
    tol = close(1e-5, 1e-5)
    cases = [
        Case("online_softmax_attention(q, k, v (2, 6, 4), block_size=2)", call(q, k, v, 2), tol),
        Case("online_softmax_attention(q, k, v (2, 6, 4), block_size=4: the last block is shorter)",
             call(q, k, v, 4), tol),
        Case("online_softmax_attention(q, k, v (2, 6, 4), block_size=2, causal=True)",
             call(q, k, v, 2, causal=True), tol),
        Case("online_softmax_attention(keys whose scores grow block after block, block_size=2)",
             call(q[0], k_growing, v[0], 2), tol),
    ]  # fmt: skip
    q, k, v = _normal(rng, (2, 12, 8)), _normal(rng, (2, 12, 8)), _normal(rng, (2, 12, 4))
    for size, causal in [(5, False), (5, True), (3, True), (12, True), (100, False)]:
        label = f"online_softmax_attention(q, k (2, 12, 8), block_size={size}, causal={causal})"
        cases.append(Case(label, call(q, k, v, size, causal=causal), close(1e-4, 1e-5)))
    label = "online_softmax_attention(T_q = 5, T_k = 12, block_size=5)"
    cases.append(Case(label, call(q[:, :5], k, v, 5), close(1e-4, 1e-5)))
    q_big, k_big = q * 5.0, k * 5.0 * jnp.linspace(0.1, 3.0, 12)[:, None]
    for size, causal in [(3, False), (5, True)]:
        label = (f"online_softmax_attention(large scores whose max grows in every block, "
                 f"block_size={size}, causal={causal})")  # fmt: skip
        cases.append(Case(label, call(q_big, k_big, v, size, causal=causal), close(1e-4, 1e-4)))
    return cases


PROBES = [
    Probe("attention_scores", attention.attention_scores, attention_scores_cases),
    Probe("masked_softmax", attention.masked_softmax, masked_softmax_cases),
    Probe("scaled_dot_product_attention", attention.scaled_dot_product_attention,
          scaled_dot_product_attention_cases, uses=("attention_scores", "masked_softmax")),
    Probe("softmax_entropy", attention.softmax_entropy, softmax_entropy_cases),
    Probe("causal_mask", attention.causal_mask, causal_mask_cases),
    Probe("padding_mask", attention.padding_mask, padding_mask_cases),
    Probe("causal_leakage", attention.causal_leakage, causal_leakage_cases),
    Probe("split_heads", attention.split_heads, split_heads_cases),
    Probe("merge_heads", attention.merge_heads, merge_heads_cases),
    Probe("MultiHeadSelfAttention", attention.MultiHeadSelfAttention, MultiHeadSelfAttention_cases,
          uses=("split_heads", "merge_heads", "scaled_dot_product_attention", "attention_scores",
                "masked_softmax")),
    Probe("sinusoidal_positions", attention.sinusoidal_positions, sinusoidal_positions_cases),
    Probe("online_softmax_attention", attention.online_softmax_attention,
          online_softmax_attention_cases, uses=("attention_scores", "causal_mask")),
]  # fmt: skip
