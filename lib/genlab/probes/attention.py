"""Probes of chapter 03, self-attention (references in :mod:`genlab.attention`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import attention, check
from genlab.probing import AUTODIFF, Case, Probe, call, close, f32, judged_alone


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
             call(jnp.array([[0.0, 8.0, 0.0]]), jnp.eye(3), jnp.array([[10.0], [20.0], [50.0]])),
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


def dot_product_variance_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("dot_product_variance(64, zero means, unit variances)",
             call(64, f32(0.0), f32(1.0), f32(0.0), f32(1.0)), close(1e-5, 1e-6, dtype="float")),
        Case("dot_product_variance(1, q: mean 0 var 1, k: mean 3 var 0)",
             call(1, f32(0.0), f32(1.0), f32(3.0), f32(0.0))),
    ]  # fmt: skip
    for d in (1, 7, 32, 256):
        moments = (f32(rng.normal()), f32(rng.uniform(0.1, 3.0)), f32(rng.normal()),
                   f32(rng.uniform(0.1, 3.0)))  # fmt: skip
        cases.append(Case(f"dot_product_variance(d={d}, random means and variances)",
                          call(d, *moments), close(1e-5, 1e-5)))  # fmt: skip
    constants = (f32(1.5), f32(0.0), f32(-2.0), f32(0.0))
    cases.append(Case("dot_product_variance(d=5, both means nonzero, both variances 0)",
                      call(5, *constants), close(1e-5, 1e-5)))  # fmt: skip
    shape = (3, 4)
    moments = (_normal(rng, shape), f32(rng.uniform(0.0, 2.0, shape)), _normal(rng, shape),
               f32(rng.uniform(0.0, 2.0, shape)))  # fmt: skip
    cases.append(Case("dot_product_variance(d=12, moments as arrays of shape (3, 4))",
                      call(12, *moments), close(1e-5, 1e-5)))  # fmt: skip
    return cases


def softmax_backward_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("softmax_backward(equal scores (4,), upstream (1, 0, 0, 0))",
             call(jnp.zeros(4), f32([1.0, 0.0, 0.0, 0.0]))),
        Case("softmax_backward(scores [0, log 3], upstream [1, 0])",
             call(f32([0.0, np.log(3.0)]), f32([1.0, 0.0]))),
    ]  # fmt: skip
    for shape, scale in [((6,), 1.0), ((3, 5), 3.0), ((2, 4, 7), 2.0), ((2, 2, 3, 9), 0.5)]:
        cases.append(Case(f"softmax_backward(random scores and upstream of shape {shape})",
                          call(_normal(rng, shape, scale), _normal(rng, shape)),
                          close(1e-5, 1e-6, dtype="float")))  # fmt: skip
    same = _normal(rng, (3, 6))
    cases.append(Case("softmax_backward(upstream equal within each row)",
                      call(same, jnp.ones((3, 6)) * f32([[1.0], [-2.0], [0.5]])),
                      close(1e-5, 1e-6)))  # fmt: skip
    big = f32([[1e4, 0.0, -1e4], [1e3, 1e3, 0.0], [-1e4, 5.0, 5.0]])
    cases.append(Case("softmax_backward(scores of size 1e4)",  # float32 log-space: ~1e-5 rel.
                      call(big, _normal(rng, (3, 3))), close(1e-4, 1e-5)))  # fmt: skip
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


@judged_alone
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


# --- what the blockwise kernels compute: traced shapes and executed work ---------------------

_MAX_RANK = 8


def _sub_jaxprs(params):
    """The jaxprs in an equation's parameters (scan, while, cond, jit, custom_jvp, ...)."""
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(item, "eqns"):
                yield item
            elif hasattr(getattr(item, "jaxpr", None), "eqns"):
                yield item.jaxpr


def _shape_rows(jaxpr, rows: list) -> None:
    for var in [*jaxpr.constvars, *jaxpr.invars]:
        rows.append(getattr(var.aval, "shape", ()))
    for eqn in jaxpr.eqns:
        rows.extend(getattr(var.aval, "shape", ()) for var in eqn.outvars)
        for sub in _sub_jaxprs(eqn.params):
            _shape_rows(sub, rows)


def _intermediate_shapes(function, *args) -> np.ndarray:
    """Every array the traced program holds (constants, inputs, every equation's outputs, through
    jit / scan / while / cond bodies), one row each: ``[rank, size, dim_0, ..., dim_7]``."""
    closed = jax.make_jaxpr(function)(*args)
    shapes: list = [np.shape(c) for c in closed.consts]
    _shape_rows(closed.jaxpr, shapes)
    table = np.zeros((len(shapes), 2 + _MAX_RANK), np.int64)
    for row, shape in zip(table, shapes):
        row[0], row[1] = len(shape), int(np.prod(shape, dtype=np.int64))
        row[2 : 2 + min(len(shape), _MAX_RANK)] = shape[:_MAX_RANK]
    return table


def _describe_shape(row) -> str:
    return str(tuple(int(n) for n in row[2 : 2 + min(int(row[0]), _MAX_RANK)]))


def _no_score_matrix(T_q: int, T_k: int, block_size: int):
    """A comparison: no traced array holds a [T_q, T_k] matrix (or as many elements), and the
    block size shows up as score blocks ``[T_q, block_size]``."""

    @judged_alone
    def compare(got, want, label: str) -> None:
        table = np.asarray(got)
        check.is_true(table.ndim == 2 and table.shape[1] == 2 + _MAX_RANK and len(table) > 0,
                      f"{label}: the program could not be traced")  # fmt: skip
        block_seen = False
        for row in table:
            dims = [int(n) for n in row[2 : 2 + min(int(row[0]), _MAX_RANK)]]
            pairs = [(a, b) for a in range(len(dims)) for b in range(len(dims)) if a != b]
            full = any(dims[a] >= T_q and dims[b] >= T_k for a, b in pairs)
            check.is_true(
                not full and int(row[1]) < T_q * T_k,
                f"{label}: an intermediate array of shape {_describe_shape(row)} holds "
                f"{T_q} queries x {T_k} keys (or as many numbers): the full score matrix, or a "
                f"mask of its size, was formed; keep at most one block of {block_size} keys per "
                "query at a time",
            )
            block_seen |= any(dims[a] in (T_q, block_size) and dims[b] == block_size
                              for a, b in pairs)  # fmt: skip
        check.is_true(block_seen, f"{label}: no block of scores [T_q={T_q}, {block_size}] was "
                      f"computed: visit the keys in blocks of block_size={block_size}")  # fmt: skip

    return compare


def _traced_shapes(q, k, v, block_size: int, causal: bool):
    def run(online_softmax_attention):
        return _intermediate_shapes(
            lambda q, k, v: online_softmax_attention(q, k, v, block_size, causal=causal), q, k, v
        )

    return run


def _literal_or_env(env: dict, var):
    return var.val if type(var).__name__ == "Literal" else env[var]


def _evaluate(jaxpr, consts, args, sizes: list):
    """Run ``jaxpr`` equation by equation, appending to ``sizes`` the multiplications of every
    product executed; loops and branches run as they would (a skipped branch computes nothing)."""
    env = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        values = [_literal_or_env(env, v) for v in eqn.invars]
        outs = _evaluate_equation(eqn, values, sizes)
        for var, value in zip(eqn.outvars, outs):
            env[var] = value
    return [_literal_or_env(env, v) for v in jaxpr.outvars]


def _closed(jaxpr_like):
    return (jaxpr_like.jaxpr, jaxpr_like.consts) if hasattr(jaxpr_like, "consts") else (
        jaxpr_like, ())  # fmt: skip


def _evaluate_equation(eqn, values, sizes: list):
    name, params = eqn.primitive.name, eqn.params
    if name in ("jit", "pjit", "closed_call", "core_call", "remat", "checkpoint",
                "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"):  # fmt: skip
        inner = params.get("jaxpr", params.get("call_jaxpr", params.get("fun_jaxpr")))
        jaxpr, consts = _closed(inner)
        return _evaluate(jaxpr, consts, values[: len(jaxpr.invars)], sizes)
    if name == "scan":
        jaxpr, consts = _closed(params["jaxpr"])
        n_consts, n_carry = params["num_consts"], params["num_carry"]
        fixed, carry, xs = (
            values[:n_consts],
            values[n_consts : n_consts + n_carry],
            values[n_consts + n_carry :],
        )
        ys = []
        steps = range(params["length"])
        for i in reversed(steps) if params["reverse"] else steps:
            out = _evaluate(jaxpr, consts, [*fixed, *carry, *(x[i] for x in xs)], sizes)
            carry, y = out[:n_carry], out[n_carry:]
            ys.append(y)
        if params["reverse"]:
            ys.reverse()
        stacked = [jnp.stack(parts) for parts in zip(*ys)] if ys else [
            jnp.zeros((0, *v.aval.shape), v.aval.dtype) for v in eqn.outvars[n_carry:]]  # fmt: skip
        return [*carry, *stacked]
    if name == "while":
        cond, cond_consts = _closed(params["cond_jaxpr"])
        body, body_consts = _closed(params["body_jaxpr"])
        n_cond, n_body = params["cond_nconsts"], params["body_nconsts"]
        fixed_cond, fixed_body = values[:n_cond], values[n_cond : n_cond + n_body]
        carry = values[n_cond + n_body :]
        while bool(_evaluate(cond, cond_consts, [*fixed_cond, *carry], sizes)[0]):
            carry = _evaluate(body, body_consts, [*fixed_body, *carry], sizes)
        return carry
    if name == "cond":
        jaxpr, consts = _closed(params["branches"][int(values[0])])
        return _evaluate(jaxpr, consts, values[1:], sizes)
    if any(True for _ in _sub_jaxprs(params)):
        raise ValueError(f"cannot measure the work inside a {name!r} operation")
    out = eqn.primitive.bind(*values, **params)
    if name == "dot_general":
        (contract, _), _ = params["dimension_numbers"]
        sizes.append(int(np.size(out)) * int(np.prod([np.shape(values[0])[a] for a in contract])))
    elif name == "mul":
        sizes.append(int(np.size(out)))
    return out if eqn.primitive.multiple_results else [out]


def _executed_multiplications(function, *args):
    """``(outputs, counts)``: the function run equation by equation, and the number of scalar
    multiplications of every matrix product (``dot_general``) and elementwise product it
    executed, one entry each (int64 array)."""
    closed = jax.make_jaxpr(function)(*args)
    counts: list[int] = []
    outs = _evaluate(closed.jaxpr, closed.consts, list(args), counts)
    return outs, np.asarray(counts, np.int64)


def _streamed(s_row, v_row, block_size: int):
    """Run the update under test over a row of scores, block by block, from the empty state."""

    def run(online_softmax_update):
        T_q, T_k = s_row.shape[-2:]
        state = (jnp.full(s_row.shape[:-1], -jnp.inf), jnp.zeros(s_row.shape[:-1]),
                 jnp.zeros((*s_row.shape[:-1], v_row.shape[-1])))  # fmt: skip
        for start in range(0, T_k, block_size):
            block = (
                s_row[..., start : start + block_size],
                v_row[..., start : start + block_size, :],
            )
            state = online_softmax_update(*state, *block)
        return state

    return run


def online_softmax_update_cases(rng: np.random.Generator) -> list[Case]:
    tol = close(1e-5, 1e-5)
    empty = (f32([-np.inf]), jnp.zeros(1), jnp.zeros((1, 1)))
    cases = [
        Case("online_softmax_update(nothing seen, block (0, log 3) with values (1, 5))",
             call(*empty, f32([[0.0, np.log(3.0)]]), f32([[1.0], [5.0]])), tol),
    ]  # fmt: skip
    # Random states whose maximum grows for some queries and not for others.
    shape, b, d_v = (2, 3), 4, 5
    m = _normal(rng, shape)
    state = (m, f32(rng.uniform(0.5, 3.0, shape)), _normal(rng, (*shape, d_v)))
    s = _normal(rng, (*shape, b), 1.5)
    cases.append(Case("online_softmax_update(random states (2, 3), a block of 4 keys, d_v = 5)",
                      call(*state, s, _normal(rng, (2, b, d_v))), tol))  # fmt: skip
    # Every new score below the old maximum: nothing to rescale.
    low = m[..., None] - f32(rng.uniform(0.5, 4.0, (*shape, b)))
    cases.append(Case("online_softmax_update(every new score below the running maximum)",
                      call(*state, low, _normal(rng, (2, b, d_v))), tol))  # fmt: skip
    # Scores of size 1e4 whose maximum grows: exp of a score, or of a positive gap, overflows.
    m_big = f32(1e4 + rng.uniform(-5.0, 5.0, 3))
    big = (m_big, f32(rng.uniform(1.0, 2.0, 3)), _normal(rng, (3, 2)))
    s_big = m_big[:, None] + f32(rng.uniform(-3.0, 8.0, (3, 6)))
    cases.append(Case("online_softmax_update(scores near 1e4, the maximum grows by up to 8)",
                      call(*big, s_big, _normal(rng, (6, 2))), close(1e-4, 1e-5)))  # fmt: skip
    # Queries with nothing seen yet, rows with nothing allowed, rows partly masked.
    m_mix = f32([-np.inf, 0.7, -np.inf, 1.2])
    l_mix = f32([0.0, 1.3, 0.0, 2.0])
    a_mix = f32([[0.0, 0.0], [0.4, -1.0], [0.0, 0.0], [2.0, 1.0]])
    s_mix = _normal(rng, (4, 3))
    s_mix = jnp.where(f32([[0, 0, 0], [0, 0, 0], [1, 0, 1], [1, 1, 0]]) > 0, s_mix, -jnp.inf)
    cases.append(Case("online_softmax_update(queries with nothing seen yet, blocks with nothing "
                      "or part allowed)", call(m_mix, l_mix, a_mix, s_mix, _normal(rng, (3, 2))),
                      tol))  # fmt: skip
    # One key per block, a leading batch axis of 3, one query.
    cases.append(Case("online_softmax_update(batch (3,), one query, a block of one key)",
                      call(_normal(rng, (3, 1)), f32(rng.uniform(0.5, 2.0, (3, 1))),
                           _normal(rng, (3, 1, 4)), _normal(rng, (3, 1, 1), 2.0),
                           _normal(rng, (3, 1, 4))), tol))  # fmt: skip
    # The whole recurrence: a row streamed through the update, block by block.
    s_row = _normal(rng, (2, 3, 23), 3.0) + f32(np.linspace(0.0, 40.0, 23))
    v_row = _normal(rng, (2, 23, 3))
    for size in (1, 5):
        label = f"online_softmax_update streamed over 23 growing scores in blocks of {size}"
        cases.append(Case(label, _streamed(s_row, v_row, size), close(1e-4, 1e-5)))
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
    # The property itself: the traced program never holds a [T_q, T_k] array.
    for T_q, T_k, size, causal in [(48, 80, 8, False), (40, 78, 5, False), (64, 64, 8, True)]:
        q, k, v = _normal(rng, (1, T_q, 2)), _normal(rng, (1, T_k, 2)), _normal(rng, (1, T_k, 3))
        label = (f"online_softmax_attention(q (1, {T_q}, 2), k (1, {T_k}, 2), block_size={size}, "
                 f"causal={causal}) traced: the arrays it holds")  # fmt: skip
        cases.append(Case(label, _traced_shapes(q, k, v, size, causal),
                          _no_score_matrix(T_q, T_k, size)))  # fmt: skip
    return cases


def _jitted_call(q, k, v, block_size: int):
    """Run the function under test compiled (one program instead of one dispatch per op)."""
    return lambda function: jax.jit(lambda q, k, v: function(q, k, v, block_size))(q, k, v)


def causal_blockwise_attention_cases(rng: np.random.Generator) -> list[Case]:
    visible = np.random.default_rng(2)
    q, k, v = (f32(visible.normal(size=(2, 10, 4))) for _ in range(3))
    tol = close(1e-4, 1e-5)
    cases = [Case(f"causal_blockwise_attention(q, k, v (2, 10, 4), block_size={size})",
                  _jitted_call(q, k, v, size), tol) for size in (4, 10, 16)]  # fmt: skip
    for shape, size in [((3, 2, 13, 8), 4), ((17, 8), int(rng.integers(5, 8)))]:
        q, k, v = (_normal(rng, shape, 3.0) for _ in range(3))
        label = f"causal_blockwise_attention(q, k, v {shape}, block_size={size})"
        cases.append(Case(label, _jitted_call(q, k, v, size), tol))
    q, k, v = (_normal(rng, (1, 64, 4)) for _ in range(3))
    label = ("causal_blockwise_attention(q, k, v (1, 64, 4)): multiplications executed with "
             "block_size=8 (8 x 8 blocks) vs block_size=64 (one block)")  # fmt: skip
    cases.append(Case(label, _work(q, k, v, 8, 64), _skips_masked_blocks(WORK_RATIO_LIMIT)))
    return cases


WORK_RATIO_LIMIT = 0.8  # skipping the masked blocks: about 0.6; computing them all: 1.0 or more


def _work(q, k, v, small: int, whole: int):
    def run(causal_blockwise_attention):
        outputs = {}
        for size in (small, whole):
            (out,), counts = _executed_multiplications(
                lambda q, k, v, size=size: causal_blockwise_attention(q, k, v, size), q, k, v
            )
            outputs[f"block_size={size}"] = {"out": out, "multiplications": counts}
        return outputs

    return run


def _skips_masked_blocks(limit: float):
    def compare(got, want, label: str) -> None:
        if not isinstance(got, dict) or set(got) != set(want):
            check.is_true(False, f"{label}: expected the outputs of two runs")
        for key in want:
            close(1e-4, 1e-5)(got[key]["out"], want[key]["out"], f"{label}, {key}")
        small, whole = (int(np.sum(np.asarray(got[key]["multiplications"]))) for key in want)
        ratio = small / max(whole, 1)
        check.is_true(
            whole > 0 and ratio <= limit,
            f"{label}: {small} multiplications with blocks vs {whole} with one block (ratio "
            f"{ratio:.2f}, at most {limit} expected): the fully masked block pairs (key block "
            "after query block) are still computed",
        )

    return compare


# --- section 7: the reversal model's training step ------------------------------------------

_REVERSE = {"vocab_size": 10, "T": 8, "d_model": 32, "num_heads": 2}


def _reverse_model(seed: int, d_model: int = 32) -> attention.ReverseModel:
    config = {**_REVERSE, "d_model": d_model}
    return attention.ReverseModel(**config, rngs=nnx.Rngs(seed))


def _parameters(model) -> tuple:
    return tuple(jax.tree.leaves(nnx.state(model, nnx.Param)))


_SGD = optax.sgd(0.5)  # one object for every one-step case: their steps compile once


def _one_step(seed: int, batch, compiled: dict):
    def run(reverse_train_step):
        model = _reverse_model(seed, d_model=16)
        optimizer = nnx.Optimizer(model, _SGD, wrt=nnx.Param)
        if id(reverse_train_step) not in compiled:
            compiled.clear()
            compiled[id(reverse_train_step)] = (reverse_train_step, nnx.jit(reverse_train_step))
        loss = compiled[id(reverse_train_step)][1](model, optimizer, batch)
        return {"loss before the update": loss, "parameters after the update": _parameters(model)}

    return run


REVERSE_STEPS, REVERSE_ACCURACY = 60, 0.9


def _training(seed: int, data_key: int):
    def run(reverse_train_step):
        model = _reverse_model(seed)
        optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
        step = nnx.jit(reverse_train_step)
        key = jax.random.key(data_key)
        losses = [step(model, optimizer, attention.reverse_batch(jax.random.fold_in(key, i), 64,
                                                                  _REVERSE["T"], 10))
                  for i in range(REVERSE_STEPS)]  # fmt: skip
        return {"losses": jnp.stack(losses), "parameters": _parameters(model)}

    return run


def _learns_to_reverse(seed: int, eval_key: int):
    """A comparison: the trained parameters (rebuilt here, outside the kernel) reverse held-out
    sequences, and the recorded losses fell."""

    @judged_alone
    def compare(got, want, label: str) -> None:
        if not isinstance(got, dict) or set(got) != {"losses", "parameters"}:
            check.is_true(False, f"{label}: expected the losses and the parameters")
        model = _reverse_model(seed)
        state = nnx.state(model, nnx.Param)
        leaves, treedef = jax.tree.flatten(state)
        params = got["parameters"]
        check.is_true(
            isinstance(params, tuple)
            and len(params) == len(leaves)
            and all(np.shape(p) == np.shape(w) for p, w in zip(params, leaves)),
            f"{label}: the parameters do not have the model's shapes",
        )
        nnx.update(model, jax.tree.unflatten(treedef, [jnp.asarray(p) for p in params]))
        tokens, targets = attention.reverse_batch(jax.random.key(eval_key), 256, _REVERSE["T"], 10)
        accuracy = float(jnp.mean(jnp.argmax(model(tokens), axis=-1) == targets))
        check.is_true(
            accuracy >= REVERSE_ACCURACY,
            f"{label}: after {REVERSE_STEPS} Adam(0.01) steps the model reverses {accuracy:.1%} "
            f"of held-out tokens (at least {REVERSE_ACCURACY:.0%} expected; a correct step "
            "reaches about 100%)",
        )
        losses = np.asarray(got["losses"], np.float64)
        check.is_true(losses.shape == (REVERSE_STEPS,) and np.all(np.isfinite(losses))
                      and losses[-1] < 0.2 * losses[0],
                      f"{label}: the returned losses must fall (first {losses[0]:.3g}, "
                      f"last {losses[-1]:.3g})")  # fmt: skip

    return compare


def reverse_train_step_cases(rng: np.random.Generator) -> list[Case]:
    compiled: dict = {}
    visible = attention.reverse_batch(jax.random.key(0), 4, 8, 10)
    cases = [
        Case("reverse_train_step: one SGD(0.5) step, ReverseModel(10, 8, 16, 2) from nnx.Rngs(0), "
             "a batch of 4 (loss before the update, then every parameter)",
             _one_step(0, visible, compiled), close(1e-4, 1e-5)),
    ]  # fmt: skip
    seed = int(rng.integers(1 << 16))
    batch = attention.reverse_batch(jax.random.key(seed), 4, 8, 10)
    label = (
        f"reverse_train_step: one SGD(0.5) step, ReverseModel(10, 8, 16, 2) from nnx.Rngs({seed})"
    )
    cases.append(Case(label, _one_step(seed, batch, compiled), close(1e-4, 1e-5)))
    # Padding: targets of -1 are ignored (about a third of the positions, one whole sequence and
    # one sequence with a single kept position), then a batch with no target at all.
    seed = int(rng.integers(1 << 16))
    tokens, targets = attention.reverse_batch(jax.random.key(seed), 5, 8, 10)
    ignored = rng.random((5, 8)) < 0.35
    ignored[1] = True
    ignored[3] = np.arange(8) != int(rng.integers(8))
    padded = (tokens, jnp.where(ignored, -1, targets))
    cases.append(
        Case(
            f"reverse_train_step: one SGD(0.5) step from nnx.Rngs({seed}) on a batch of 5 "
            f"whose targets are -1 (ignored) at {int(ignored.sum())} of 40 positions, "
            "one sequence entirely",
            _one_step(seed, padded, compiled),
            close(1e-4, 1e-5),
        )
    )
    # Right padding of unequal lengths: the per-sequence mean weighs a sequence of length 1 as
    # much as a full one (a token mean or a division by every sequence gives another number).
    lengths = np.array([8, 2, 0, 1, 5])
    right_padded = (tokens, jnp.where(np.arange(8) < lengths[:, None], targets, -1))
    cases.append(
        Case(
            f"reverse_train_step: one SGD(0.5) step from nnx.Rngs({seed}) on a batch of 5 "
            f"sequences of lengths {lengths.tolist()}, targets -1 after each length",
            _one_step(seed, right_padded, compiled),
            close(1e-4, 1e-5),
        )
    )
    nothing = (tokens, jnp.full_like(targets, -1))
    cases.append(
        Case(
            f"reverse_train_step: one SGD(0.5) step from nnx.Rngs({seed}) on a batch whose "
            "targets are all -1 (nothing kept: loss 0, nothing moves)",
            _one_step(seed, nothing, compiled),
            close(1e-4, 1e-5),
        )
    )
    seed, data_key, eval_key = (int(n) for n in rng.integers(1 << 16, size=3))
    label = (f"reverse_train_step: {REVERSE_STEPS} steps of Adam(0.01) on batches of 64, then "
             "the reversal accuracy on held-out sequences")  # fmt: skip
    cases.append(Case(label, _training(seed, data_key), _learns_to_reverse(seed, eval_key)))
    return cases


PROBES = [
    Probe("attention_scores", attention.attention_scores, attention_scores_cases),
    Probe("masked_softmax", attention.masked_softmax, masked_softmax_cases),
    Probe("scaled_dot_product_attention", attention.scaled_dot_product_attention,
          scaled_dot_product_attention_cases, uses=("attention_scores", "masked_softmax")),
    Probe("dot_product_variance", attention.dot_product_variance, dot_product_variance_cases),
    Probe("softmax_entropy", attention.softmax_entropy, softmax_entropy_cases),
    Probe("softmax_backward", attention.softmax_backward, softmax_backward_cases,
          forbidden=AUTODIFF),
    Probe("causal_mask", attention.causal_mask, causal_mask_cases),
    Probe("padding_mask", attention.padding_mask, padding_mask_cases),
    Probe("causal_leakage", attention.causal_leakage, causal_leakage_cases),
    Probe("split_heads", attention.split_heads, split_heads_cases),
    Probe("merge_heads", attention.merge_heads, merge_heads_cases),
    Probe("MultiHeadSelfAttention", attention.MultiHeadSelfAttention, MultiHeadSelfAttention_cases,
          uses=("split_heads", "merge_heads", "scaled_dot_product_attention", "attention_scores",
                "masked_softmax")),
    Probe("sinusoidal_positions", attention.sinusoidal_positions, sinusoidal_positions_cases),
    Probe("online_softmax_update", attention.online_softmax_update, online_softmax_update_cases),
    Probe("online_softmax_attention", attention.online_softmax_attention,
          online_softmax_attention_cases,
          uses=("attention_scores", "causal_mask", "online_softmax_update")),
    Probe("causal_blockwise_attention", attention.causal_blockwise_attention,
          causal_blockwise_attention_cases,
          uses=("attention_scores", "causal_mask", "online_softmax_update")),
    Probe("reverse_train_step", attention.reverse_train_step, reverse_train_step_cases,
          forbidden=("genlab.attention.reverse_loss",)),
]  # fmt: skip
