"""Probes of chapter 04, GPT sampling (references in :mod:`genlab.gpt`, :mod:`genlab.sampling`,
:mod:`genlab.markov` and :mod:`genlab.lstm`).

Shape letters: B batch, T time (tokens), V vocabulary, D model width, H heads, N new tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import check, data, gpt, lstm, markov, sampling
from genlab.probing import Case, Probe, call, close, exact, f32, judged_alone, key_from

NUCLEUS_MARGIN = 1e-5  # random top-p rows keep every running total this far from p


def _i32(array) -> jax.Array:
    return jnp.asarray(array, jnp.int32)


def _tokens(got, want, label: str) -> None:
    """A comparison for token ids and counts: an integer dtype, then exactly the reference."""
    check.dtype(label, got, "int")
    exact(got, want, label)


def _settings(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "default settings"


# --- random logits whose nucleus is not a float rounding away from p -------------------------


def _nucleus_margin(row, p: float, min_tokens_to_keep: int = 1) -> float:
    """How far the running totals of one row (float64) are from p, over the tokens a top-p
    filter decides on (beyond min_tokens_to_keep, of nonzero probability)."""
    x = np.asarray(row, np.float64)
    probs = np.exp(x - np.max(x))
    probs = -np.sort(-probs / probs.sum())
    before = np.cumsum(probs) - probs
    decided = (probs > 0) & (np.arange(len(probs)) >= min_tokens_to_keep)
    return float(np.min(np.abs(before - p)[decided], initial=np.inf))


def _top_k_np(x: np.ndarray, k: int | None) -> np.ndarray:
    if k is None or k >= x.shape[-1]:
        return x
    kth = -np.sort(-x, axis=-1)[..., k - 1 : k]
    return np.where(x < kth, -np.inf, x)


def _nucleus_logits(rng, shape, scale: float, p: float | None, min_tokens_to_keep: int = 1,
                    temperature: float = 1.0, top_k: int | None = None) -> jax.Array:  # fmt: skip
    """Normal logits of ``shape``; with p, each row redrawn until the top-p filter of
    ``top_k(logits / temperature)`` is clear of ties with p (a correct answer computed in
    another order of float operations keeps the same tokens)."""
    rows = rng.normal(scale=scale, size=(int(np.prod(shape[:-1], dtype=int)), shape[-1]))
    for i in range(len(rows)):
        while (
            p is not None
            and _nucleus_margin(_top_k_np(rows[i] / temperature, top_k), p, min_tokens_to_keep)
            < NUCLEUS_MARGIN
        ):
            rows[i] = rng.normal(scale=scale, size=shape[-1])
    return f32(rows.reshape(shape))


# --- section 1: the language-modelling loss ---------------------------------------------------


def lm_loss_cases(rng: np.random.Generator) -> list[Case]:
    finite = close(1e-5, 1e-6, dtype="float")
    cases = [
        Case("lm_loss(uniform logits of shape (2, 3, 5), targets (2, 3)) = log 5",
             call(jnp.zeros((2, 3, 5)), jnp.array([[0, 1, 2], [3, 4, 0]])), finite),
        Case("lm_loss([[[2, 0, 0]]], [[0]])",
             call(jnp.array([[[2.0, 0.0, 0.0]]]), jnp.array([[0]])), finite),
        Case("lm_loss(two positions) (a mean over all positions)",
             call(jnp.array([[[50.0, 0.0], [0.0, 0.0]]]), jnp.array([[0, 1]])), finite),
        Case("lm_loss(logits of size 1e3) stays finite",
             call(jnp.array([[[1e3, -1e3, 0.0]]]), jnp.array([[1]])), finite),
    ]  # fmt: skip
    for shape, scale in [((4, 6, 11), 3.0), ((7, 3), 3.0), ((2, 3, 5, 9), 3.0),
                         ((3, 4, 6), 500.0)]:  # fmt: skip
        logits = f32(rng.normal(scale=scale, size=shape))
        targets = _i32(rng.integers(0, shape[-1], size=shape[:-1]))
        kind = "huge random logits" if scale > 100 else "random logits"
        cases.append(Case(f"lm_loss({kind} of shape {shape}, targets {shape[:-1]})",
                          call(logits, targets), close(1e-5, 1e-6, dtype="float")))  # fmt: skip
    return cases


# --- section 2: the pre-LN block -------------------------------------------------------------


def _hand_parts_run(x):
    return lambda f: f(x, lambda h: 2 * h, jnp.sin, lambda h: h - 1, jnp.cos)


def _zero_parts_run(x):
    zero = lambda h: jnp.zeros_like(h)  # noqa: E731
    return lambda f: f(x, jnp.tanh, zero, jnp.tanh, zero)


def _random_parts_run(x, w1, w2):
    """Nonlinear stand-ins for the four parts; also counts the calls of attn and mlp."""

    def run(f):
        calls = {"attn": 0, "mlp": 0}

        def attn(h):
            calls["attn"] += 1
            return jnp.tanh(h @ w1)

        def mlp(h):
            calls["mlp"] += 1
            return jnp.sin(h @ w2)

        out = f(x, lambda h: h / (1 + jnp.abs(h)), attn, lambda h: 0.5 * h + 1.0, mlp)
        return {"output": out, "calls of attn and of mlp": np.array([calls["attn"], calls["mlp"]])}

    return run


def _block_run(config, seed: int, x, norms=None):
    """pre_ln_block with the modules of a gpt.Block built from nnx.Rngs(seed); ``norms`` sets
    (scale, bias) of ln_1 and ln_2 so that the two LayerNorms differ."""

    def run(f):
        block = gpt.Block(config, rngs=nnx.Rngs(seed))
        if norms is not None:
            for ln, (scale, bias) in zip((block.ln_1, block.ln_2), norms):
                ln.scale[...], ln.bias[...] = scale, bias
        return f(x, block.ln_1, lambda h: block.attn(h)[0], block.ln_2, block.mlp)

    return run


def pre_ln_block_cases(rng: np.random.Generator) -> list[Case]:
    x = jnp.arange(12.0).reshape(1, 3, 4) / 10
    tiny = gpt.GPTConfig.tiny()
    cases = [
        Case("pre_ln_block with ln_1=2h, attn=sin, ln_2=h-1, mlp=cos, x of shape (1, 3, 4)",
             _hand_parts_run(x), close(1e-5, 1e-6)),
        Case("pre_ln_block(x, attn = mlp = 0) (the residual keeps x)", _zero_parts_run(x)),
        Case("pre_ln_block with the modules of a tiny GPT's block, x of shape (2, 5, 128)",
             _block_run(tiny, 0, jax.random.normal(jax.random.key(0), (2, 5, tiny.d_model))),
             close(1e-5, 1e-5)),
    ]  # fmt: skip
    for shape in [(2, 4, 6), (1, 7, 3), (3, 5, 8)]:
        x = f32(rng.normal(size=shape))
        w1, w2 = (f32(rng.normal(size=(shape[-1], shape[-1]))) for _ in range(2))
        cases.append(Case(f"pre_ln_block(random x of shape {shape}, nonlinear parts): output, "
                          "and attn and mlp called once each",
                          _random_parts_run(x, w1, w2), close(1e-5, 1e-6)))  # fmt: skip
    large = gpt.GPTConfig.tiny(init_std=0.5)
    seed = int(rng.integers(1 << 16))
    x = f32(rng.normal(size=(2, 5, large.d_model)))
    norms = [(f32(rng.uniform(0.5, 2.0, size=large.d_model)),
              f32(rng.normal(size=large.d_model))) for _ in range(2)]  # fmt: skip
    cases.append(Case("pre_ln_block with a gpt.Block's modules (large weights, two different "
                      "LayerNorms), x of shape (2, 5, 128)", _block_run(large, seed, x, norms),
                      close(1e-5, 1e-5)))  # fmt: skip
    return cases


# --- section 3: the training step --------------------------------------------------------------

STEP_CONFIG = dict(
    block_size=32, num_layers=2, num_heads=2, d_model=64
)  # a small GPT, fast to train
QUALITY_STEPS, QUALITY_BATCH = 60, 32  # the behavioural case's budget
QUALITY_MARGIN = 0.15  # nats below the unigram entropy the validation loss must reach


def _params(model) -> tuple:
    return tuple(jax.tree.leaves(nnx.state(model, nnx.Param)))


def _step_run(compiled, config, seed: int, tx, batches, max_grad_norm: float, end_id: int = -1):
    """Steps of the student's train_step (under nnx.jit, max_grad_norm and end_id traced) on a
    fresh GPT: the losses it returns, and the change of every parameter (after minus before), as
    raw arrays. Cases that share ``config`` and the ``tx`` object share one compiled program."""

    def run(train_step):
        model = gpt.GPT(config, rngs=nnx.Rngs(seed))
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        before = _params(model)
        step = compiled(train_step)
        bound, end = jnp.float32(max_grad_norm), jnp.int32(end_id)
        losses = jnp.stack([jnp.asarray(step(model, optimizer, b, bound, end_id=end))
                            for b in batches])  # fmt: skip
        change = tuple(a - b for a, b in zip(_params(model), before))
        return {"losses": losses, "parameter change": change}

    return run


def _compiler():
    """``compiled(f)``: one ``nnx.jit`` of ``f`` shared by the cases of one probe run, so its
    compiled programs are reused across cases."""
    jitted: dict = {}

    def compiled(function):
        if function not in jitted:
            jitted[function] = nnx.jit(function)
        return jitted[function]

    return compiled


def _clipped_compare(max_grad_norm: float):
    """Same losses and changes as the reference, and (SGD with rate 1) a change whose global norm
    is exactly the clipping norm."""

    def compare(got, want, label: str) -> None:
        close(1e-4, 1e-6)(got["losses"], want["losses"], f"{label}: the loss before the update")
        change = got["parameter change"]
        if isinstance(change, tuple):
            norm = float(np.sqrt(sum(np.sum(np.square(np.asarray(c, np.float64))) for c in change)))
            check.is_true(abs(norm - max_grad_norm) <= 0.01 * max_grad_norm,
                          f"{label}: an SGD(1.0) step must move the parameters by the clipped "
                          f"gradient, of global norm {max_grad_norm:g}; they moved by "
                          f"{norm:.4g}")  # fmt: skip
        close(2e-3, 1e-8)(change, want["parameter change"], f"{label}: the parameter change")

    return compare


def _step_compare(got, want, label: str) -> None:
    close(1e-4, 1e-6)(got["losses"], want["losses"], f"{label}: the loss before the update")
    close(2e-3, 1e-7)(got["parameter change"], want["parameter change"],
                      f"{label}: the parameter change")  # fmt: skip


def _corpus():
    text = data.pydoc_corpus()
    tokenizer = data.CharTokenizer.from_text(text)
    ids = np.asarray(tokenizer.encode(text))
    split = int(0.9 * len(ids))
    return tokenizer.vocab_size, ids[:split], ids[split:]


def _quality_run(compiled, config, seed: int, train_ids, keys, learning_rate: float):
    """Train a fresh GPT with the student's step on the chapter's corpus; return its parameters."""

    def run(train_step):
        model = gpt.GPT(config, rngs=nnx.Rngs(seed))
        optimizer = nnx.Optimizer(model, optax.adamw(learning_rate, weight_decay=0.01),
                                  wrt=nnx.Param)  # fmt: skip
        step, bound = compiled(train_step), jnp.float32(1.0)
        for key in keys:
            windows, _ = data.batch_windows(key, train_ids, QUALITY_BATCH, config.block_size + 1)
            step(model, optimizer, windows, bound)
        return {"trained parameters": _params(model)}

    return run


def _quality_compare(config, val_ids, threshold: float):
    """The grader's verdict: rebuild the model from the returned parameters, compute its
    validation loss here (shifted targets), and compare it with the threshold."""

    @judged_alone
    def compare(got, want, label: str) -> None:
        leaves = got.get("trained parameters") if isinstance(got, dict) else None
        model = gpt.GPT(config, rngs=nnx.Rngs(0))
        state = nnx.state(model, nnx.Param)
        shapes = [np.shape(x) for x in jax.tree.leaves(state)]
        check.is_true(isinstance(leaves, tuple) and [np.shape(x) for x in leaves] == shapes,
                      f"{label}: expected the model's {len(shapes)} parameter arrays")  # fmt: skip
        nnx.update(model, jax.tree.unflatten(jax.tree.structure(state), [f32(x) for x in leaves]))
        losses = []
        for i in range(4):
            x, y = data.batch_windows(jax.random.key(9000 + i), val_ids, 32, config.block_size)
            losses.append(float(gpt.lm_loss(model(x), y)))
        loss = float(np.mean(losses))
        check.is_true(np.isfinite(loss) and loss < threshold,
                      f"{label}: validation loss {loss:.3f} nats after training, expected below "
                      f"{threshold:.3f} (the unigram entropy minus {QUALITY_MARGIN})")  # fmt: skip

    return compare


def train_step_cases(rng: np.random.Generator) -> list[Case]:
    vocab_size, train_ids, val_ids = _corpus()
    config = gpt.GPTConfig(vocab_size=vocab_size, **STEP_CONFIG)
    seed = int(rng.integers(1 << 16))
    starts = rng.integers(0, len(train_ids) - 33, size=4)
    windows = _i32(np.stack([train_ids[s : s + 33] for s in starts]))[None]  # one batch (4, 33)
    sgd = optax.sgd(1.0)  # one optimizer object: the two SGD cases share a compiled step
    compiled = _compiler()
    cases = [
        Case("train_step: one SGD(1.0) step of a 2-layer GPT, max_grad_norm=1e-3 (the gradient "
             "is clipped)", _step_run(compiled, config, seed, sgd, windows, 1e-3),
             _clipped_compare(1e-3)),
        Case("train_step: one SGD(1.0) step, max_grad_norm=1e6 (no clipping): the loss and the "
             "gradient of the next-token loss",
             _step_run(compiled, config, seed + 1, sgd, windows, 1e6), _step_compare),
    ]  # fmt: skip
    cases += _document_cases(rng, compiled, config, train_ids, sgd)
    threshold = gpt.unigram_entropy(train_ids, vocab_size) - QUALITY_MARGIN
    seed = int(rng.integers(1 << 16))
    keys = jax.random.split(key_from(rng), QUALITY_STEPS)
    cases.append(Case(f"train_step: {QUALITY_STEPS} AdamW(3e-3) steps of a 2-layer GPT on the "
                      "chapter's corpus (batch 32, windows of 33 tokens); the grader computes the "
                      "validation loss",
                      _quality_run(compiled, config, seed, train_ids, keys, 3e-3),
                      _quality_compare(config, val_ids, threshold)))  # fmt: skip
    return cases


def _document_cases(rng, compiled, config, train_ids, sgd) -> list[Case]:
    """Windows of the corpus read as documents closed by a frequent character (the end id):
    windows where it sits at hidden places, at the very end only (it is then only a target), at
    the start of every window (nothing is scored), and one window with none."""
    ids, counts = np.unique(train_ids, return_counts=True)
    end = int(ids[np.argsort(counts)[-3]])  # the third most frequent character
    starts = rng.integers(0, len(train_ids) - 33, size=4)
    windows = np.stack([train_ids[s : s + 33] for s in starts]).astype(np.int32)  # (4, 33)
    windows[0] = np.where(windows[0] == end, (end + 1) % config.vocab_size, windows[0])
    windows[1, rng.integers(3, 30)] = end
    last = windows.copy()
    last[last == end] = (end + 1) % config.vocab_size
    last[:, -1] = end
    first = windows.copy()
    first[:, 0] = end
    seed = int(rng.integers(1 << 16))
    return [
        Case(f"train_step: one SGD(1.0) step on 4 windows of 33 tokens, end_id={end} (the end "
             "token inside windows, one window without it), max_grad_norm=1e6",
             _step_run(compiled, config, seed, sgd, _i32(windows)[None], 1e6, end),
             _step_compare),
        Case(f"train_step: the same windows and end_id={end}, max_grad_norm=1e-3 (clipped)",
             _step_run(compiled, config, seed, sgd, _i32(windows)[None], 1e-3, end),
             _clipped_compare(1e-3)),
        Case(f"train_step: end_id={end} only as the last token of every window, "
             "max_grad_norm=1e6",
             _step_run(compiled, config, seed, sgd, _i32(last)[None], 1e6, end), _step_compare),
        Case(f"train_step: every window starts with end_id={end}: nothing is scored (loss 0, "
             "no parameter change)",
             _step_run(compiled, config, seed, sgd, _i32(first)[None], 1e6, end), _step_compare),
    ]  # fmt: skip


# --- section 4: the floor of a Markov source ---------------------------------------------------


def _stochastic(matrix) -> jax.Array:
    m = np.asarray(matrix, np.float64)
    return f32(m / m.sum(axis=-1, keepdims=True))


def source_perplexity_cases(rng: np.random.Generator) -> list[Case]:
    a, b = (float(x) for x in rng.uniform(0.05, 0.45, size=2))
    q = rng.dirichlet(np.full(6, 0.7))
    sparse = rng.uniform(size=(9, 9)) * (rng.uniform(size=(9, 9)) < 0.35)
    sparse += np.eye(9) * 0.2 + np.roll(np.eye(9), 1, axis=1) * 0.3  # irreducible, aperiodic
    skewed = rng.dirichlet(np.full(5, 1.0), size=5)
    skewed[:, 0] += 4.0  # state 0 is visited far more often than the others
    sticky = 0.95 * np.eye(6) + 0.05 * rng.dirichlet(np.full(6, 1.0), size=6)
    tolerance = close(2e-4, 1e-6)
    cases = [
        Case("source_perplexity(the uniform 7 x 7 chain) = 7", call(jnp.full((7, 7), 1 / 7)),
             tolerance),
        Case(f"source_perplexity(two-state chain, P(0 -> 1) = {a:.3f}, P(1 -> 0) = {b:.3f})",
             call(f32([[1 - a, a], [b, 1 - b]])), tolerance),
        Case("source_perplexity(every row the same distribution over 6 tokens: independent "
             "tokens)", call(_stochastic(np.tile(q, (6, 1)))), tolerance),
        Case("source_perplexity(a 9-state chain with many zero entries)",
             call(_stochastic(sparse)), tolerance),
        Case("source_perplexity(a 5-state chain that visits state 0 far more often)",
             call(_stochastic(skewed)), tolerance),
        Case("source_perplexity(a sticky 6-state chain, 0.95 on the diagonal)",
             call(_stochastic(sticky)), tolerance),
    ]  # fmt: skip
    for s, concentration in [(16, 0.3), (4, 0.5), (12, 1.0)]:
        matrix = markov.random_transition_matrix(key_from(rng), s, concentration)
        cases.append(Case(f"source_perplexity(random {s} x {s} chain, Dirichlet rows of "
                          f"concentration {concentration})", call(matrix), tolerance))  # fmt: skip
    return cases


# --- section 5: temperature, top-k, top-p, sampling ------------------------------------------


def apply_temperature_cases(rng: np.random.Generator) -> list[Case]:
    logits = jnp.array([2.0, 1.0, -jnp.inf])
    cases = [
        Case("apply_temperature([2, 1, -inf], 0.5)", call(logits, 0.5)),
        Case("apply_temperature([2, 1, -inf], 2.0)", call(logits, 2.0)),
        Case("apply_temperature(logits, 0) must raise", call(logits, 0.0), raises=(ValueError,)),
        Case("apply_temperature(logits, -1) must raise", call(logits, -1.0), raises=(ValueError,)),
    ]
    random = f32(rng.normal(scale=2.0, size=(3, 4, 9)))
    temperatures = [float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.5, 0.95)), 1.0,
                    float(rng.uniform(2.0, 5.0))]  # fmt: skip
    for t in temperatures:
        cases.append(Case(f"apply_temperature(random logits of shape (3, 4, 9), t={t:.3g})",
                          call(random, t), close(1e-6, 1e-6, dtype="float")))  # fmt: skip
    masked = random.at[:, :, :3].set(-jnp.inf)
    cases.append(Case("apply_temperature(logits with -inf entries, t=0.7) (-inf stays -inf)",
                      call(masked, 0.7), close(1e-6, 1e-6)))  # fmt: skip
    tiny = -float(rng.uniform(1e-4, 1e-2))
    cases.append(Case("apply_temperature(logits, a small negative t) must raise",
                      call(random, tiny), raises=(ValueError,)))  # fmt: skip
    return cases


def entropy_temperature_slope_cases(rng: np.random.Generator) -> list[Case]:
    # Differentiating the entropy in float32 (a correct route) loses up to ~0.4 % to
    # cancellation at low temperature; every wrong variant is off by a factor (t, 1/t, a sign).
    tolerance = close(1e-2, 2e-5)
    cases = [
        Case("entropy_temperature_slope(uniform logits of shape (3, 5), t=0.7) = 0",
             call(jnp.zeros((3, 5)), 0.7), tolerance),
        Case("entropy_temperature_slope([0, 1], t=1)", call(jnp.array([0.0, 1.0]), 1.0),
             tolerance),
        Case("entropy_temperature_slope([0, 1], t=0.5)", call(jnp.array([0.0, 1.0]), 0.5),
             tolerance),
    ]  # fmt: skip
    for shape, scale in [((4, 7), 2.0), ((2, 3, 11), 4.0), ((9,), 1.0)]:
        logits = f32(rng.normal(scale=scale, size=shape))
        for t in (float(rng.uniform(0.3, 0.8)), 1.0, float(rng.uniform(1.5, 4.0))):
            cases.append(Case(f"entropy_temperature_slope(random logits of shape {shape}, "
                              f"t={t:.3g})", call(logits, t), tolerance))  # fmt: skip
    shifted = f32(rng.normal(scale=2.0, size=(5, 8)) + 10.0)
    cases.append(Case("entropy_temperature_slope(random logits around 10, shape (5, 8), t=1.3)",
                      call(shifted, 1.3), tolerance))  # fmt: skip
    # Nearly one-hot rows: a slope of about 1e-4, of which float32 autodiff loses about 1e-5.
    peaked = f32(rng.normal(scale=6.0, size=(4, 10)))
    cases.append(Case("entropy_temperature_slope(peaked random logits (4, 10), t=0.2)",
                      call(peaked, 0.2), close(1e-3, 5e-5)))  # fmt: skip
    # The docstring's relative accuracy where the slope is tiny: float32 differences of H, by
    # autodiff (about 4 % off at low t) or finite differences, fail these; the closed form holds.
    relative = close(1e-3, 0.0)
    low = _tiny_slope_logits(rng, (4, 9), 0.1)
    cases.append(Case("entropy_temperature_slope(random logits (4, 9), t=0.1): slopes down to "
                      f"{float(_slope64(low, 0.1).min()):.0e}, to a relative 1e-3",
                      call(low, 0.1), relative))  # fmt: skip
    hot = f32(rng.normal(scale=2.0, size=(3, 6)))
    t = float(rng.uniform(200.0, 1000.0))
    cases.append(Case(f"entropy_temperature_slope(random logits (3, 6), t={t:.4g}): a slope "
                      "of about 1e-8, to a relative 1e-3", call(hot, t), relative))  # fmt: skip
    return cases


def _slope64(logits, t: float) -> np.ndarray:
    """The slope in float64 NumPy: the variance of the logits under softmax(logits / t), / t^3."""
    x = np.asarray(logits, np.float64)
    z = x / t
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    mean = (p * x).sum(-1, keepdims=True)
    return (p * (x - mean) ** 2).sum(-1) / t**3


def _tiny_slope_logits(rng, shape, t: float) -> jax.Array:
    """Normal logits (scale 2) redrawn until every row's slope at t is between 1e-25 (far from
    float32 underflow) and 1e-4, and one row's is below 1e-8."""
    while True:
        logits = rng.normal(scale=2.0, size=shape).astype(np.float32)
        slope = _slope64(logits, t)
        if slope.min() > 1e-25 and slope.max() < 1e-4 and slope.min() < 1e-8:
            return f32(logits)


def top_k_filter_cases(rng: np.random.Generator) -> list[Case]:
    logits = jnp.array([1.0, 3.0, 2.0, 0.5, -1.0])
    tied = jnp.array([1.0, 3.0, 2.0, 2.0, 0.0])
    rows = jnp.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    cases = [
        Case("top_k_filter([1, 3, 2, 0.5, -1], 2)", call(logits, 2)),
        Case("top_k_filter([1, 3, 2, 0.5, -1], 1) (greedy)", call(logits, 1)),
        Case("top_k_filter([1, 3, 2, 2, 0], 2) (ties at the threshold kept)", call(tied, 2)),
        Case("top_k_filter(5 logits, 5) keeps everything", call(logits, 5)),
        Case("top_k_filter(5 logits, 50) keeps everything", call(logits, 50)),
        Case("top_k_filter(two rows, 1) (rows filtered independently)", call(rows, 1)),
        Case("top_k_filter(logits, 0) must raise", call(logits, 0), raises=(ValueError,)),
    ]
    random = f32(rng.normal(size=(4, 3, 12)))
    for k in (1, 2, int(rng.integers(3, 11)), 11, 12, 13):
        cases.append(Case(f"top_k_filter(random logits of shape (4, 3, 12), {k})",
                          call(random, k)))  # fmt: skip
    values = np.sort(rng.choice(np.arange(-8, 9) / 4, size=4, replace=False)).astype(np.float32)
    ties = jnp.asarray(rng.choice(values, size=(6, 10)))
    for k in (1, 3, 6):
        cases.append(Case(f"top_k_filter(rows of 4 distinct values with ties, shape (6, 10), {k})",
                          call(ties, k)))  # fmt: skip
    return cases


def _kept(logits, p: float, **kwargs):
    return lambda f: np.isfinite(np.asarray(f(logits, p, **kwargs)))


def top_p_filter_cases(rng: np.random.Generator) -> list[Case]:
    logits = jnp.log(jnp.array([0.5, 0.35, 0.1, 0.05]))
    shuffled = logits[jnp.array([2, 0, 3, 1])]
    peaked = jnp.array([10.0, 0.0, -1.0, -2.0])
    cases = [
        Case("top_p_filter(log [0.5, 0.35, 0.1, 0.05], 0.9): which tokens are kept (the one "
             "crossing p is kept)", _kept(logits, 0.9), exact),
        Case("top_p_filter(log [0.5, 0.35, 0.1, 0.05], 0.45): which tokens are kept",
             _kept(logits, 0.45), exact),
        Case("top_p_filter(log [0.5, 0.35, 0.1, 0.05], 0.6): which tokens are kept",
             _kept(logits, 0.6), exact),
        Case("top_p_filter(log [0.5, 0.35, 0.1, 0.05], 1.0): which tokens are kept",
             _kept(logits, 1.0), exact),
        Case("top_p_filter(shuffled log [0.1, 0.5, 0.05, 0.35], 0.9) (original order, kept "
             "logits unchanged)", call(shuffled, 0.9), close(1e-6, 1e-6)),
        Case("top_p_filter(peaked, 0.5, min_tokens_to_keep=3): which tokens are kept",
             _kept(peaked, 0.5, min_tokens_to_keep=3), exact),
        Case("top_p_filter(logits, 0.0) must raise", call(logits, 0.0), raises=(ValueError,)),
        Case("top_p_filter(logits, 1.5) must raise", call(logits, 1.5), raises=(ValueError,)),
    ]  # fmt: skip
    settings = [(float(rng.uniform(0.02, 0.1)), 1), (float(rng.uniform(0.2, 0.4)), 1),
                (float(rng.uniform(0.65, 0.85)), 1), (float(rng.uniform(0.9, 0.98)), 1),
                (1.0, 1), (float(rng.uniform(0.4, 0.6)), 4), (0.99, 2)]  # fmt: skip
    for p, m in settings:
        random = _nucleus_logits(rng, (5, 4, 15), 2.0, p, m)
        cases.append(Case(f"top_p_filter(random logits of shape (5, 4, 15), p={p:.3g}, "
                          f"min_tokens_to_keep={m})", call(random, p, m)))  # fmt: skip
    cases.append(Case("top_p_filter(peaked logits [30, 0, 0, 0, -1], p=1.0): which tokens are "
                      "kept (every token of nonzero probability, though float32 rounds the "
                      "running total to 1.0)", _kept(jnp.array([30.0, 0.0, 0.0, 0.0, -1.0]), 1.0),
                      exact))  # fmt: skip
    peaked = f32(rng.normal(scale=8.0, size=(4, 12)))
    cases.append(Case("top_p_filter(peaked random logits of shape (4, 12), p=1.0): which tokens "
                      "are kept", _kept(peaked, 1.0), exact))  # fmt: skip
    p = float(rng.uniform(0.5, 0.9))
    after_top_k = jnp.asarray(_top_k_np(np.asarray(_nucleus_logits(rng, (6, 12), 2.0, p, 1,
                                                                   top_k=5)), 5))  # fmt: skip
    cases.append(Case(f"top_p_filter(logits with -inf entries after top-k, shape (6, 12), "
                      f"p={p:.3g})", call(after_top_k, p)))  # fmt: skip
    bad = -float(rng.uniform(0.05, 0.5))
    cases.append(Case("top_p_filter(logits, a negative p) must raise", call(logits, bad),
                      raises=(ValueError,)))  # fmt: skip
    return cases


def _vmapped_draws(keys, row, **settings):
    return lambda f: jax.vmap(lambda k: f(k, row, **settings))(keys)


def sample_next_token_cases(rng: np.random.Generator) -> list[Case]:
    key = jax.random.key(0)
    logits = jnp.array([[2.0, 1.0, 0.5, 0.0, -1.0], [0.0, 0.0, 3.0, 0.0, 0.0]])
    cases = [
        Case("sample_next_token(key, logits (2, 5), temperature=0.8, top_k=3) vs "
             "categorical(key, filtered logits)", call(key, logits, temperature=0.8, top_k=3),
             _tokens),
        Case("sample_next_token vmapped over 4000 keys, one row, top_k=2 (draws tokens 0 and 1 "
             "only, P(token 0) = sigmoid(1))",
             _vmapped_draws(jax.random.split(jax.random.key(1), 4000), logits[0], top_k=2),
             _tokens),
    ]  # fmt: skip
    settings = [{}, {"temperature": round(float(rng.uniform(0.3, 0.7)), 3)},
                {"temperature": round(float(rng.uniform(1.2, 2.0)), 3), "top_k": 5},
                {"top_p": round(float(rng.uniform(0.5, 0.7)), 3)},
                {"temperature": 2.0, "top_p": round(float(rng.uniform(0.6, 0.8)), 3)},
                {"temperature": 1.5, "top_k": 8, "top_p": 0.5}]  # fmt: skip
    for s in settings:
        random = _nucleus_logits(
            rng,
            (64, 20),
            2.0,
            s.get("top_p"),
            temperature=s.get("temperature", 1.0),
            top_k=s.get("top_k"),
        )
        key = key_from(rng)
        cases.append(Case(f"sample_next_token(key, random logits of shape (64, 20), "
                          f"{_settings(s)})", call(key, random, **s), _tokens))  # fmt: skip
    for shape, s in [((20,), {"temperature": 0.9}), ((3, 4, 20), {"top_k": 4, "top_p": 0.9})]:
        random = _nucleus_logits(rng, shape, 2.0, s.get("top_p"), top_k=s.get("top_k"))
        key = key_from(rng)
        cases.append(Case(f"sample_next_token(key, random logits of shape {shape}, "
                          f"{_settings(s)})", call(key, random, **s), _tokens))  # fmt: skip
    return cases


# --- section 5: the naive generation loop ----------------------------------------------------


def _bigram_run(table, key, prompt, num_new_tokens: int, **settings):
    """generate with the causal toy model whose logits at position t are table[token t]."""
    return lambda f: f(key, lambda tokens: table[tokens], prompt, num_new_tokens, **settings)


def _gpt_run(config, seed: int, key, prompt, num_new_tokens: int, **settings):
    """generate with the logits function of a freshly initialised gpt.GPT(nnx.Rngs(seed))."""

    def run(f):
        logits_fn = gpt.make_logits_fn(gpt.GPT(config, rngs=nnx.Rngs(seed)))
        return f(key, logits_fn, prompt, num_new_tokens, **settings)

    return run


def _next_token_probs(logits, settings: dict) -> np.ndarray:
    """The law sample_next_token draws from, with the library's filters: [..., V] float64."""
    logits = sampling.apply_temperature(logits, settings.get("temperature", 1.0))
    if settings.get("top_k") is not None:
        logits = sampling.top_k_filter(logits, settings["top_k"])
    if settings.get("top_p") is not None:
        logits = sampling.top_p_filter(logits, settings["top_p"])
    return np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)


def _frequencies(tokens, num_values: int) -> np.ndarray:
    return np.bincount(np.asarray(tokens).ravel(), minlength=num_values) / np.asarray(tokens).size


FREQUENCY_TOLERANCE = 0.035  # >= 5 standard errors of a frequency over 6,000 draws


def _drawn_from_the_chain(table, settings: dict, first: int):
    """A comparison for 2 new tokens after a prompt ending in ``first``, 6,000 rows: the
    frequencies of the first new token and of each pair match the filtered bigram chain."""
    probs = _next_token_probs(table, settings)  # (V, V): row a is the law after token a
    vocab = probs.shape[0]

    @judged_alone
    def compare(got, want, label: str) -> None:
        check.dtype(label, got, "int")
        check.shape(label, got, (6000, 3))
        new = np.asarray(got)[:, 1:]
        check.is_true(bool(np.all((new >= 0) & (new < vocab))), f"{label}: tokens in [0, {vocab})")
        check.allclose(f"{label}: frequencies of the first new token",
                       _frequencies(new[:, 0], vocab), probs[first],
                       atol=FREQUENCY_TOLERANCE, rtol=0.0)  # fmt: skip
        pairs = np.bincount(new[:, 0] * vocab + new[:, 1], minlength=vocab * vocab) / len(new)
        check.allclose(f"{label}: frequencies of each (first, second) pair of new tokens",
                       pairs.reshape(vocab, vocab), probs[first][:, None] * probs,
                       atol=FREQUENCY_TOLERANCE, rtol=0.0)  # fmt: skip

    return compare


def _drawn_until_the_end(table, settings: dict, first: int, end: int):
    """A comparison for 3 new tokens after a prompt ending in ``first``, 6,000 rows, with the end
    id ``end``: after a drawn end every token is the end (exactly); the first new token and each
    (first, second) pair follow the filtered chain, in which the end leads to the end."""
    probs = _next_token_probs(table, settings)  # (V, V): row a is the law after token a
    vocab = probs.shape[0]
    ended = probs.copy()
    ended[end] = np.eye(vocab)[end]  # after the end, the end with probability 1

    @judged_alone
    def compare(got, want, label: str) -> None:
        check.dtype(label, got, "int")
        check.shape(label, got, (6000, 4))
        new = np.asarray(got)[:, 1:]
        check.is_true(bool(np.all((new >= 0) & (new < vocab))), f"{label}: tokens in [0, {vocab})")
        after_end = np.cumsum(new == end, axis=1) - (new == end) > 0  # an end came before
        wrong = int(np.sum(after_end & (new != end)))
        check.is_true(wrong == 0, f"{label}: every token after a row's first end id {end} must be "
                                  f"{end}; {wrong} tokens are not")  # fmt: skip
        check.allclose(f"{label}: frequencies of the first new token",
                       _frequencies(new[:, 0], vocab), probs[first],
                       atol=FREQUENCY_TOLERANCE, rtol=0.0)  # fmt: skip
        pairs = np.bincount(new[:, 0] * vocab + new[:, 1], minlength=vocab * vocab) / len(new)
        check.allclose(f"{label}: frequencies of each (first, second) pair of new tokens",
                       pairs.reshape(vocab, vocab), probs[first][:, None] * ended,
                       atol=FREQUENCY_TOLERANCE, rtol=0.0)  # fmt: skip

    return compare


@judged_alone
def _repeatable_and_keyed(got, want, label: str) -> None:
    """got: the outputs for key 1, key 1 again and key 2 on a uniform model."""
    first, again, other = (np.asarray(g) for g in got)
    check.equal(f"{label}: the same key twice", again, first)
    check.is_true(not np.array_equal(first, other), f"{label}: two keys give different tokens")


def _keys_run(key, other):
    uniform = lambda tokens: jnp.zeros((*tokens.shape, 4))  # noqa: E731
    prompt = jnp.zeros((64, 1), jnp.int32)
    return lambda f: tuple(f(k, uniform, prompt, 8) for k in (key, key, other))


def _sampled_gpt(vocab: int, shape):
    @judged_alone
    def compare(got, want, label: str) -> None:
        check.dtype(label, got, "int")
        check.shape(label, got, shape)
        check.is_true(bool(np.all((np.asarray(got) >= 0) & (np.asarray(got) < vocab))),
                      f"{label}: every token in [0, {vocab})")  # fmt: skip

    return compare


def generate_cases(rng: np.random.Generator) -> list[Case]:
    counting = jnp.full((4, 4), -5.0).at[jnp.arange(4), (jnp.arange(4) + 1) % 4].set(5.0)
    cases = [
        Case("generate(greedy, counting bigram, prompt [[2], [0]], 5 new tokens)",
             _bigram_run(counting, jax.random.key(0), jnp.array([[2], [0]]), 5, greedy=True),
             _tokens),
        Case("generate(a uniform model, 64 rows, 8 new tokens): repeatable for one key, "
             "different for another", _keys_run(key_from(rng), key_from(rng)),
             _repeatable_and_keyed),
    ]  # fmt: skip
    table = f32(rng.normal(scale=2.0, size=(6, 6)))
    prompt = _i32(rng.integers(0, 6, size=(2, 3)))
    cases.append(Case("generate(random bigram, prompt (2, 3), 0 new tokens) returns the prompt",
                      _bigram_run(table, key_from(rng), prompt, 0), _tokens))  # fmt: skip
    cases.append(Case("generate(random bigram, prompt (2, 3), 6 new tokens, greedy)",
                      _bigram_run(table, key_from(rng), prompt, 6, greedy=True),
                      _tokens))  # fmt: skip
    # Sampling: the law of the new tokens, on a bigram chain whose rows differ.
    uniform = jnp.zeros((4, 4))
    chain = f32(rng.normal(scale=1.5, size=(5, 5)))
    for table, settings in [(uniform, {}), (chain, {}), (chain, {"temperature": 0.6, "top_k": 3}),
                            (chain, {"top_p": 0.8})]:  # fmt: skip
        first = int(rng.integers(1, table.shape[0]))
        prompt = jnp.full((6000, 1), first, jnp.int32)
        name = "a uniform model" if table is uniform else "a random bigram chain"
        cases.append(Case(f"generate({name}, 6,000 rows, 2 new tokens, {_settings(settings)}): "
                          "the law of the tokens", _bigram_run(table, key_from(rng), prompt, 2,
                                                               **settings),
                          _drawn_from_the_chain(table, settings, first)))  # fmt: skip
    cases += _end_id_cases(rng)
    config = gpt.GPTConfig(vocab_size=9, block_size=24, num_layers=1, num_heads=2, d_model=16)
    seed = int(rng.integers(1 << 16))
    prompt = _i32(rng.integers(0, 9, size=(3, 4)))
    cases.append(Case(f"generate(tiny GPT from nnx.Rngs({seed}), prompt (3, 4), 12 new tokens, "
                      "greedy)", _gpt_run(config, seed, key_from(rng), prompt, 12, greedy=True),
                      _tokens))  # fmt: skip
    for s in [{}, {"temperature": 0.6, "top_k": 3}]:
        run = _gpt_run(config, seed, key_from(rng), prompt, 12, **s)
        cases.append(Case(f"generate(tiny GPT from nnx.Rngs({seed}), prompt (3, 4), 12 new "
                          f"tokens, {_settings(s)})", run, _sampled_gpt(9, (3, 16))))  # fmt: skip
    return cases


def _end_id_cases(rng) -> list[Case]:
    """Rows that draw the end id continue with it only; an end id in the prompt does not count."""
    counting = jnp.full((5, 5), -5.0).at[jnp.arange(5), (jnp.arange(5) + 1) % 5].set(5.0)
    end = int(rng.integers(0, 5))
    prompt = _i32(np.array([[end, 1], [2, end], [(end + 2) % 5, (end + 3) % 5]]))
    cases = [
        Case(f"generate(greedy, counting bigram mod 5, prompt {prompt.tolist()}, 7 new tokens, "
             f"end_id={end})", _bigram_run(counting, key_from(rng), prompt, 7, greedy=True,
                                           end_id=end), _tokens),
    ]  # fmt: skip
    chain = f32(rng.normal(scale=1.0, size=(5, 5)))
    end = int(rng.integers(0, 5))
    chain = chain.at[:, end].add(1.0)  # the end is drawn often enough to be seen
    for first, settings in [(end, {}), ((end + 1) % 5, {"temperature": 0.8, "top_k": 4})]:
        prompt = jnp.full((6000, 1), first, jnp.int32)
        cases.append(Case(f"generate(a random bigram chain, 6,000 rows of prompt [{first}], 3 new "
                          f"tokens, end_id={end}, {_settings(settings)}): the law of the tokens",
                          _bigram_run(chain, key_from(rng), prompt, 3, end_id=end, **settings),
                          _drawn_until_the_end(chain, settings, first, end)))  # fmt: skip
    return cases


# --- section 6: the KV cache -----------------------------------------------------------------


def _jitted(cache, new, pos: int):
    return lambda f: jax.jit(f)(cache, new, jnp.int32(pos))


def update_kv_cache_cases(rng: np.random.Generator) -> list[Case]:
    zeros = jnp.zeros((1, 1, 6, 2))
    filled = jnp.arange(12.0).reshape(1, 1, 6, 2)
    cases = [
        Case("update_kv_cache(zeros (1, 1, 6, 2), ones (1, 1, 1, 2), pos=3)",
             call(zeros, jnp.ones((1, 1, 1, 2)), 3)),
        Case("update_kv_cache(arange (1, 1, 6, 2), two new rows at pos 0)",
             call(filled, -jnp.ones((1, 1, 2, 2)), 0)),
        Case("jit(update_kv_cache)(zeros (1, 1, 6, 2), ones, pos=int32(5))",
             _jitted(zeros, jnp.ones((1, 1, 1, 2)), 5)),
    ]  # fmt: skip
    cache = f32(rng.normal(size=(2, 3, 10, 4)))
    for t_new, pos in [(1, 0), (1, 9), (4, int(rng.integers(1, 7))), (3, 7)]:
        new = f32(rng.normal(size=(2, 3, t_new, 4)))
        cases.append(
            Case(
                f"update_kv_cache(random cache (2, 3, 10, 4), T_new={t_new}, pos={pos})",
                call(cache, new, pos),
                close(dtype=jnp.float32),
            )
        )
        cases.append(Case(f"jit(update_kv_cache)(random cache (2, 3, 10, 4), T_new={t_new}, "
                          f"pos=int32({pos}))", _jitted(cache, new, pos)))  # fmt: skip
    cache, new = f32(rng.normal(size=(8, 5))), f32(rng.normal(size=(2, 5)))
    pos = int(rng.integers(1, 6))
    cases.append(Case(f"update_kv_cache(cache (8, 5) without leading axes, T_new=2, pos={pos})",
                      call(cache, new, pos)))  # fmt: skip
    cases.append(Case("update_kv_cache(cache (8, 5), T_new=2, pos=int32 array, not jitted)",
                      call(cache, new, jnp.int32(pos))))  # fmt: skip
    return cases


# --- section 8: pitfalls ---------------------------------------------------------------------


def teacher_forced_accuracy_cases(rng: np.random.Generator) -> list[Case]:
    tokens = jnp.array([[0, 1, 2, 0]])
    cases = [
        Case("teacher_forced_accuracy(2 of 3 right)",
             call(jax.nn.one_hot(jnp.array([[1, 2, 1, 1]]), 3), tokens)),
        Case("teacher_forced_accuracy(all right; the last guess does not count)",
             call(jax.nn.one_hot(jnp.array([[1, 2, 0, 2]]), 3), tokens)),
    ]  # fmt: skip
    for shape in [(3, 7, 5), (1, 2, 4), (4, 12, 3)]:
        logits = f32(rng.normal(size=shape))
        tokens = _i32(rng.integers(0, shape[-1], size=shape[:2]))
        cases.append(Case(f"teacher_forced_accuracy(random logits of shape {shape})",
                          call(logits, tokens), close(dtype="float")))  # fmt: skip
    for shape in [(3, 7, 5), (4, 12, 3)]:
        tokens = _i32(rng.integers(0, shape[-1], size=shape[:2]))
        good = jax.nn.one_hot(jnp.roll(tokens, -1, axis=1), shape[-1])
        logits = f32(2.0 * good + rng.normal(size=shape))
        cases.append(
            Case(
                f"teacher_forced_accuracy(logits of shape {shape} that mostly predict "
                "the next token)",
                call(logits, tokens),
                close(dtype="float"),
            )
        )
    return cases


def nucleus_size_cases(rng: np.random.Generator) -> list[Case]:
    logits = jnp.log(jnp.array([0.5, 0.35, 0.1, 0.05]))
    cases = [
        Case("nucleus_size(log [0.5, 0.35, 0.1, 0.05], 0.9)", call(logits, 0.9), _tokens),
        Case("nucleus_size(log [0.5, 0.35, 0.1, 0.05], 0.9, temperature=0.1) (colder: fewer "
             "tokens)", call(logits, 0.9, 0.1), _tokens),
        Case("nucleus_size(log [0.5, 0.35, 0.1, 0.05], 0.9, temperature=5.0) (hotter: more "
             "tokens)", call(logits, 0.9, 5.0), _tokens),
        Case("nucleus_size(two rows of shape (2, 4), 0.5)",
             call(jnp.stack([logits, logits]), 0.5), _tokens),
    ]  # fmt: skip
    settings = [(0.5, 0.5), (0.9, 1.0), (0.9, float(rng.uniform(2.0, 3.0))),
                (float(rng.uniform(0.2, 0.4)), 4.0)]  # fmt: skip
    for p, t in settings:
        random = _nucleus_logits(rng, (6, 25), 2.0, p, temperature=t)
        cases.append(Case(f"nucleus_size(random logits of shape (6, 25), p={p:.3g}, "
                          f"temperature={t:.3g})", call(random, p, t), _tokens))  # fmt: skip
    random = _nucleus_logits(rng, (6, 25), 2.0, 0.8)
    cases.append(Case("nucleus_size(random logits of shape (6, 25), 0.8) (default "
                      "temperature)", call(random, 0.8), _tokens))  # fmt: skip
    return cases


def copy_rate_cases(rng: np.random.Generator) -> list[Case]:
    tokens = jnp.array([[0, 1, 2, 0]])
    cases = [
        Case("copy_rate(argmax equals the input at 3 of 4 positions)",
             call(jax.nn.one_hot(jnp.array([[0, 1, 2, 1]]), 3), tokens)),
        Case("copy_rate(argmax is the next token everywhere) (no copies)",
             call(jax.nn.one_hot(jnp.array([[1, 2, 0, 1]]), 3), tokens)),
    ]  # fmt: skip
    for shape in [(3, 7, 5), (1, 2, 4), (4, 12, 3)]:
        logits = f32(rng.normal(size=shape))
        tokens = _i32(rng.integers(0, shape[-1], size=shape[:2]))
        cases.append(Case(f"copy_rate(random logits of shape {shape})", call(logits, tokens),
                          close(dtype="float")))  # fmt: skip
    for shape in [(3, 7, 5), (2, 9, 6)]:
        tokens = _i32(rng.integers(0, shape[-1], size=shape[:2]))
        logits = f32(2.0 * jax.nn.one_hot(tokens, shape[-1]) + rng.normal(size=shape))
        cases.append(Case(f"copy_rate(logits of shape {shape} that mostly copy the input)",
                          call(logits, tokens), close(dtype="float")))  # fmt: skip
    return cases


def _batch_fn(name: str, w):
    """Functions [B, T, D] -> [B, ...] for batch_dependence, with the dependence they have."""
    cell = nnx.OptimizedLSTMCell(w.shape[0], 6, rngs=nnx.Rngs(0))

    def centred_then_pooled(x):  # + the batch's average of each element minus its own mean
        centred = x - x.mean(axis=(1, 2), keepdims=True)
        return (x + centred.mean(axis=0))[:, -1]

    return {
        "per-sequence mean over time": lambda x: jnp.mean(x @ w, axis=1),
        "an LSTM run batch-major, last time step": lstm.last_outputs(cell, time_major=False),
        "an LSTM run time-major on batch-major data, then [:, -1]": lstm.last_outputs(
            cell, time_major=True
        ),
        "the last batch element's features for every row": lambda x: jnp.broadcast_to(
            x[-1:, -1], x[:, -1].shape
        ),
        "subtracting the batch mean": lambda x: x[:, -1] - jnp.mean(x[:, -1], axis=0),
        "cumulative sum over the batch": lambda x: jnp.cumsum(jnp.tanh(x @ w), axis=0)[:, 0],
        "per-sequence softmax over time": lambda x: jax.nn.softmax(x @ w, axis=1),
        "adding the batch average of each element centred on its own mean": centred_then_pooled,
        "each row plus the next element (cyclic)": lambda x: (x + jnp.roll(x, -1, axis=0))[:, -1],
        "each row is the next element alone (cyclic)": lambda x: jnp.roll(x, -1, axis=0)[:, 0],
        "zeros, whatever the input": lambda x: jnp.zeros((x.shape[0], 3)),
        "a small pull towards the batch mean": lambda x: (x + 0.01 * x.mean(axis=0))[:, -1] @ w,
    }[name]


def _batch_dependence_run(name: str, w, x):
    return lambda f: f(_batch_fn(name, w), x)


def _dependence(got, want, label: str) -> None:
    check.dtype(label, got, "bool")
    exact(got, want, label)


def batch_dependence_cases(rng: np.random.Generator) -> list[Case]:
    x = jax.random.normal(jax.random.key(3), (3, 4, 2))
    cases = [
        Case("batch_dependence(per-sequence sum over time)", call(lambda v: v.sum(axis=1), x),
             _dependence),
        Case("batch_dependence(cumulative sum over the batch axis)",
             call(lambda v: jnp.cumsum(v, axis=0), x), _dependence),
        Case("batch_dependence(x of shape (1, 4, 2))", call(lambda v: v, x[:1]),
             raises=(ValueError,)),
    ]  # fmt: skip
    w = f32(rng.normal(size=(5, 5)) / 2)
    for name in ["per-sequence mean over time", "an LSTM run batch-major, last time step",
                 "an LSTM run time-major on batch-major data, then [:, -1]",
                 "the last batch element's features for every row", "subtracting the batch mean",
                 "cumulative sum over the batch", "per-sequence softmax over time",
                 "adding the batch average of each element centred on its own mean",
                 "each row plus the next element (cyclic)",
                 "each row is the next element alone (cyclic)", "zeros, whatever the input",
                 "a small pull towards the batch mean"]:  # fmt: skip
        x = f32(rng.normal(size=(4, 6, 5)))
        cases.append(Case(f"batch_dependence({name}, x (4, 6, 5))",
                          _batch_dependence_run(name, w, x), _dependence))  # fmt: skip
    return cases


def _typical_margin(row, mass: float) -> float:
    """How far a row (float64) is from a tie in the typical filter: the smallest gap between
    consecutive distances and between each running total and ``mass``."""
    x = np.asarray(row, np.float64)
    log_p = x - np.max(x) - np.log(np.sum(np.exp(x - np.max(x))))
    p = np.exp(log_p)
    distance = np.abs(-log_p + np.sum(p * log_p))
    order = np.argsort(distance, kind="stable")
    gaps = np.diff(distance[order])
    before = np.cumsum(p[order]) - p[order]
    return float(
        min(np.min(gaps, initial=np.inf), np.min(np.abs(before[1:] - mass), initial=np.inf))
    )


def _typical_logits(rng, shape, scale: float, mass: float) -> jax.Array:
    rows = rng.normal(scale=scale, size=(int(np.prod(shape[:-1], dtype=int)), shape[-1]))
    for i in range(len(rows)):
        while _typical_margin(rows[i], mass) < 1e-4:
            rows[i] = rng.normal(scale=scale, size=shape[-1])
    return f32(rows.reshape(shape))


def typical_filter_cases(rng: np.random.Generator) -> list[Case]:
    # Probabilities [0.5, 0.25, 0.125, 0.125]: entropy 1.213 nats; surprisals 0.693, 1.386,
    # 2.079, 2.079; distances 0.520, 0.173, 0.866, 0.866: token 1 is the most typical.
    logits = jnp.log(jnp.array([0.5, 0.25, 0.125, 0.125]))
    cases = [
        Case("typical_filter(log [0.5, 0.25, 0.125, 0.125], 0.2): which tokens are kept",
             _kept(logits, 0.2), exact),
        Case("typical_filter(log [0.5, 0.25, 0.125, 0.125], 0.5): which tokens are kept",
             _kept(logits, 0.5), exact),
        Case("typical_filter(log [0.5, 0.25, 0.125, 0.125], 1.0) keeps all", _kept(logits, 1.0),
             exact),
        Case("typical_filter(uniform logits, 0.3) (ties: lower index first)",
             _kept(jnp.zeros(5), 0.3), exact),
        Case("typical_filter(logits, 0.0) must raise", call(logits, 0.0), raises=(ValueError,)),
        Case("typical_filter(logits, 1.5) must raise", call(logits, 1.5), raises=(ValueError,)),
    ]  # fmt: skip
    for mass in (float(rng.uniform(0.1, 0.3)), float(rng.uniform(0.5, 0.7)), 0.9, 0.95):
        random = _typical_logits(rng, (6, 3, 10), 2.0, mass)
        cases.append(Case(f"typical_filter(random logits of shape (6, 3, 10), mass={mass:.3g})",
                          call(random, mass), close(1e-6, 1e-6)))  # fmt: skip
    masked = np.asarray(_typical_logits(rng, (5, 8), 2.0, 0.9)).copy()
    masked[:, :2] = -np.inf
    cases.append(Case("typical_filter(logits with -inf entries, shape (5, 8), mass=0.9) (-inf "
                      "tokens never kept)", _kept(jnp.asarray(masked), 0.9), exact))  # fmt: skip
    return cases


def _key_data(key, num_steps: int):
    return lambda f: jax.random.key_data(f(key, num_steps))


def step_keys_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case(
            "step_keys(key(0), 4): the subkeys of one split per step (all different, the "
            "first is jax.random.split(key)[1])",
            _key_data(jax.random.key(0), 4),
            exact,
        )
    ]
    for n in (1, 7, 16):
        seed = int(rng.integers(1 << 30))
        cases.append(Case(f"step_keys(key({seed}), {n}) (key data of the subkeys)",
                          _key_data(jax.random.key(seed), n), exact))  # fmt: skip
    return cases


PROBES = [
    Probe("lm_loss", gpt.lm_loss, lm_loss_cases),
    Probe("pre_ln_block", gpt.pre_ln_block, pre_ln_block_cases),
    Probe("train_step", gpt.train_step, train_step_cases, uses=("lm_loss",)),
    Probe("source_perplexity", markov.source_perplexity, source_perplexity_cases),
    Probe("apply_temperature", sampling.apply_temperature, apply_temperature_cases),
    Probe("entropy_temperature_slope", sampling.entropy_temperature_slope,
          entropy_temperature_slope_cases),
    Probe("top_k_filter", sampling.top_k_filter, top_k_filter_cases),
    Probe("top_p_filter", sampling.top_p_filter, top_p_filter_cases),
    Probe("sample_next_token", sampling.sample_next_token, sample_next_token_cases,
          uses=("apply_temperature", "top_k_filter", "top_p_filter")),
    Probe("generate", sampling.generate, generate_cases,
          uses=("apply_temperature", "top_k_filter", "top_p_filter", "sample_next_token")),
    Probe("update_kv_cache", gpt.update_kv_cache, update_kv_cache_cases),
    Probe("teacher_forced_accuracy", gpt.teacher_forced_accuracy, teacher_forced_accuracy_cases),
    Probe("copy_rate", gpt.copy_rate, copy_rate_cases),
    Probe("nucleus_size", sampling.nucleus_size, nucleus_size_cases,
          uses=("apply_temperature", "top_p_filter")),
    Probe("step_keys", sampling.step_keys, step_keys_cases),
    Probe("batch_dependence", lstm.batch_dependence, batch_dependence_cases),
    Probe("typical_filter", sampling.typical_filter, typical_filter_cases),
]  # fmt: skip
