"""Probes of chapter 07, tokens and fine-tuning (references in :mod:`genlab.bpe` and
:mod:`genlab.finetune`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import bpe, check, finetune, gpt
from genlab.probing import Case, Probe, close, exact, f32, judged_alone

ALPHABET = list("abcde ") + ["中", "文", "é"]


def _text(rng: np.random.Generator, length: int, alphabet=ALPHABET) -> str:
    """A random string with repeated words, so pairs repeat and merges happen."""
    words = ["".join(rng.choice(alphabet[:-1], size=int(rng.integers(1, 5)))) for _ in range(6)]
    words += [str(rng.choice(alphabet))]
    return "".join(rng.choice(words, size=length))


def _table(mapping) -> np.ndarray:
    """A ``{(a, b): value}`` dict as an int64 [N, 3] array of rows (a, b, value), sorted."""
    if not isinstance(mapping, dict):
        raise TypeError(f"expected a dict {{(a, b): int}}, got {type(mapping).__name__}")
    rows = sorted((int(a), int(b), int(v)) for (a, b), v in mapping.items())
    return np.asarray(rows, np.int64).reshape(-1, 3)


def _merge_table(mapping) -> np.ndarray:
    """Merges as rows (a, b, new_id) in the order of their new ids."""
    return _table(mapping)[np.argsort(_table(mapping)[:, 2], kind="stable")]


def _ids(ids) -> np.ndarray:
    if not isinstance(ids, list):
        raise TypeError(f"expected a list of ints, got {type(ids).__name__}")
    return np.asarray(ids, np.int64).reshape(-1)


def _codepoints(text) -> np.ndarray:
    if not isinstance(text, str):
        raise TypeError(f"expected a str, got {type(text).__name__}")
    return np.asarray([ord(c) for c in text], np.int64)


def _run(wrap, *args):
    return lambda function: wrap(function(*args))


# --- section 1: byte-level BPE ----------------------------------------------------------------


def pair_counts_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("pair_counts([1, 2, 3, 1, 2])", _run(_table, [1, 2, 3, 1, 2]), exact),
        Case("pair_counts([7, 7, 7]) (overlapping pairs count twice)", _run(_table, [7, 7, 7]),
             exact),
        Case("pair_counts([]) and pair_counts([5]) have no pairs", lambda f: (_table(f([])),
                                                                             _table(f([5]))),
             exact),
    ]  # fmt: skip
    for length in (50, 400):
        ids = [int(i) for i in rng.integers(0, 6, size=length)]
        cases.append(Case(f"pair_counts(random ids, L = {length})", _run(_table, ids), exact))
    ids = list(_text(rng, 80).encode("utf-8"))
    cases.append(Case("pair_counts(the UTF-8 bytes of a random text)", _run(_table, ids), exact))
    return cases


def merge_pair_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("merge_pair([1, 2, 3, 1, 2], (1, 2), 256)", _run(_ids, [1, 2, 3, 1, 2], (1, 2), 256),
             exact),
        Case("merge_pair([5, 5, 5], (5, 5), 300) (left to right, no overlap)",
             _run(_ids, [5, 5, 5], (5, 5), 300), exact),
        Case("merge_pair([5, 5, 5, 5], (5, 5), 300)", _run(_ids, [5, 5, 5, 5], (5, 5), 300), exact),
        Case("merge_pair with the pair absent", _run(_ids, [1, 2, 3], (3, 1), 256), exact),
        Case("merge_pair([2, 1], (1, 2), 256) (order matters)", _run(_ids, [2, 1], (1, 2), 256),
             exact),
        Case("merge_pair([], (1, 2), 256)", _run(_ids, [], (1, 2), 256), exact),
        Case("merge_pair([1, 2], (1, 2), 256) does not modify its input",
             lambda f: _ids((lambda ids: (f(ids, (1, 2), 256), ids)[1])([1, 2])), exact),
    ]  # fmt: skip
    for length in (30, 300):
        ids = [int(i) for i in rng.integers(0, 3, size=length)]
        pair = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        cases.append(Case(f"merge_pair(random ids, L = {length}, pair {pair})",
                          _run(_ids, ids, pair, 999), exact))  # fmt: skip
    return cases


def train_bpe_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("train_bpe('aaabdaaabac', 259) (the Wikipedia example)",
             _run(_merge_table, "aaabdaaabac", 259), exact),
        Case("train_bpe('abcabd', 258) (ties: the earliest first occurrence wins)",
             _run(_merge_table, "abcabd", 258), exact),
        Case("train_bpe('ab', 300) (stops when fewer than 2 ids are left)",
             _run(_merge_table, "ab", 300), exact),
        Case("train_bpe('hello', 256) (no merges)", _run(_merge_table, "hello", 256), exact),
        Case("train_bpe('中文中文', 260) (Chinese: 3 bytes per character)",
             _run(_merge_table, "中文中文", 260), exact),
        Case("train_bpe with vocab_size < 256 raises ValueError", _run(_merge_table, "abc", 255),
             raises=(ValueError,)),
    ]  # fmt: skip
    for length, size in ((60, 280), (200, 300)):
        text = _text(rng, length)
        cases.append(Case(f"train_bpe(random text of {length} words, {size})",
                          _run(_merge_table, text, size), exact))  # fmt: skip
    return cases


def bpe_encode_cases(rng: np.random.Generator) -> list[Case]:
    merges = {(97, 97): 256, (256, 97): 257, (98, 99): 258}
    cases = [
        Case("bpe_encode('aaab', {(a,a): 256, (256,a): 257, (b,c): 258})",
             _run(_ids, "aaab", merges), exact),
        Case("bpe_encode('abc' ...) (no merge applies to (a, b))",
             _run(_ids, "abc", merges), exact),
        Case("bpe_encode('', merges) = []", _run(_ids, "", merges), exact),
        Case("bpe_encode(text, {}) = its UTF-8 bytes", _run(_ids, "héllo 中文", {}), exact),
        Case("bpe_encode: the lowest new id merges first, not the most frequent pair",
             _run(_ids, "abcbcbc", {(97, 98): 256, (98, 99): 257}), exact),
    ]  # fmt: skip
    for length in (40, 150):
        train_text, text = _text(rng, length), _text(rng, length // 2)
        learned = bpe.train_bpe(train_text, 256 + 30)
        cases.append(Case("bpe_encode(random text, 30 merges learned on another one)",
                          _run(_ids, text, learned), exact))  # fmt: skip
        cases.append(Case("bpe_encode of the training text itself", _run(_ids, train_text, learned),
                          exact))  # fmt: skip
    return cases


def bpe_decode_cases(rng: np.random.Generator) -> list[Case]:
    merges = {(97, 97): 256, (256, 97): 257, (98, 99): 258}
    half = list("中".encode())[:2]
    cases = [
        Case("bpe_decode([257, 98], merges) = 'aaab'", _run(_codepoints, [257, 98], merges), exact),
        Case("bpe_decode([], merges) = ''", _run(_codepoints, [], merges), exact),
        Case("bpe_decode of the bytes of '中文' without merges",
             _run(_codepoints, list("中文".encode()), {}), exact),
        Case("bpe_decode of half a Chinese character gives U+FFFD, no error",
             _run(_codepoints, half, {}), exact),
        Case("bpe_decode with merges built on merges (258 stands for 256 + 257)",
             _run(_codepoints, [258, 32], {(104, 105): 256, (33, 33): 257, (256, 257): 258}),
             exact),
    ]  # fmt: skip
    for length in (40, 120):
        text = _text(rng, length)
        learned = bpe.train_bpe(text, 256 + 25)
        ids = bpe.bpe_encode(text, learned)
        cases.append(Case("bpe_decode(bpe_encode(random text)) (round trip)",
                          _run(_codepoints, ids, learned), exact))  # fmt: skip
    return cases


def bits_per_byte_cases(rng: np.random.Generator) -> list[Case]:
    value = lambda f: lambda function: np.asarray(function(*f), np.float64)  # noqa: E731
    cases = [
        Case("bits_per_byte(ln 2, 1) = 1", value((float(np.log(2.0)), 1)), close(1e-6, 1e-9)),
        Case("bits_per_byte(1000 nats, 500 bytes)", value((1000.0, 500)), close(1e-6, 1e-9)),
        Case("bits_per_byte(0, 10) = 0", value((0.0, 10)), close(1e-6, 1e-9)),
        Case("bits_per_byte of a float32 scalar total", value((jnp.float32(123.5), 77)),
             close(1e-5, 1e-9)),
        Case("bits_per_byte(1.0, 0) raises ValueError", value((1.0, 0)), raises=(ValueError,)),
    ]  # fmt: skip
    for _ in range(3):
        total, num = float(rng.uniform(1, 1e5)), int(rng.integers(1, 10**5))
        cases.append(Case(f"bits_per_byte({total:.1f}, {num})", value((total, num)),
                          close(1e-6, 1e-9)))  # fmt: skip
    return cases


def _merges_for(tokens) -> dict[tuple[int, int], int]:
    """Merges that build each byte string of ``tokens`` left to right (its prefixes become
    tokens too), new ids in order of creation."""
    merges: dict[tuple[int, int], int] = {}
    for token in tokens:
        current = token[0]
        for byte in token[1:]:
            pair = (current, byte)
            if pair not in merges:
                merges[pair] = 256 + len(merges)
            current = merges[pair]
    return merges


CROSSING_TOKENS = [b"e ", b" t", b"  ", b"'s", b"'re", b"s.", b" the", b"the ", b" 42", b"4a",
                   b"\n ", b" \n", b"__", b"x_", b"_x", b" (", b"),", " 分词".encode(),
                   "分,".encode(), "ß ".encode(), b"\t\t", b". ", b"a1", b" '", b"'ll"]  # fmt: skip


def _mixed(rng: np.random.Generator, length: int) -> str:
    pieces = ["the", "cat", "'s", "'re", "'ll", "42", "7", " ", "  ", "\n", ",", "?!", "_", "分词",
              "é", "x1", "'", "(", "()"]  # fmt: skip
    return "".join(str(rng.choice(pieces)) for _ in range(length))


def crossing_merges_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("crossing_merges({}) = []", _run(_ids, {}), exact),
        Case("crossing_merges of hand-picked tokens ('e ', ' t', '  ', 's.', ' 42', '4a', ...)",
             _run(_ids, _merges_for(CROSSING_TOKENS)), exact),
        Case("crossing_merges: \"'r\" and \"'v\" are parts of the contractions 're and 've",
             _run(_ids, _merges_for([b"'re", b"'ve", b"'ll"])), exact),
        Case("crossing_merges: a space before a word belongs to the word; two spaces do not",
             _run(_ids, _merges_for([b"  a", b"\n a", b" a", b"a\n"])), exact),
        Case("crossing_merges: a token that is part of a multi-byte character is not reported",
             _run(_ids, _merges_for(["a中".encode()[:3], "é中".encode()])), exact),
    ]  # fmt: skip
    for length, size in ((80, 290), (200, 330)):
        text = _mixed(rng, length)
        cases.append(Case(f"crossing_merges of {size - 256} merges learned on a random text",
                          _run(_ids, bpe.train_bpe(text, size)), exact))  # fmt: skip
    text = _mixed(rng, 150)
    cases.append(Case("crossing_merges of merges learned within GPT-2's chunks is []",
                      _run(_ids, bpe.train_bpe(text, 300, pretokenize=True)), exact))  # fmt: skip
    return cases


# --- section 3: LoRA ------------------------------------------------------------------------


def _lora_inputs(rng, shape, d_in, rank, d_out):
    return (f32(rng.normal(size=shape + (d_in,))), f32(rng.normal(size=(d_in, rank))),
            f32(rng.normal(size=(rank, d_out))))  # fmt: skip


def lora_delta_cases(rng: np.random.Generator) -> list[Case]:
    ones, col, row = jnp.ones((1, 2)), jnp.ones((2, 1)), jnp.array([[1.0, -1.0]])
    cases = [
        Case("lora_delta(ones, alpha = 1, rank = 1)", lambda f: f(ones, col, row, 1.0, 1)),
        Case("lora_delta with alpha = 16, rank = 8 (scale 2)",
             lambda f: f(ones, jnp.ones((2, 8)), jnp.ones((8, 2)), 16.0, 8)),
        Case("lora_delta with b = 0 is 0", lambda f: f(ones, col, jnp.zeros((1, 2)), 4.0, 1)),
    ]  # fmt: skip
    for shape, d_in, rank, d_out, alpha in (((5,), 6, 2, 3, 4.0), ((2, 7), 8, 4, 5, 1.0),
                                            ((3,), 16, 8, 16, 16.0)):  # fmt: skip
        x, a, b = _lora_inputs(rng, shape, d_in, rank, d_out)
        cases.append(Case(f"lora_delta(x {shape + (d_in,)}, rank {rank}, alpha {alpha})",
                          lambda f, x=x, a=a, b=b, r=rank, al=alpha: f(x, a, b, al, r),
                          close(1e-4, 1e-5)))  # fmt: skip
    return cases


def merge_lora_cases(rng: np.random.Generator) -> list[Case]:
    cases = [
        Case("merge_lora(zeros (2, 2), ones, ones, alpha 1, rank 1)",
             lambda f: f(jnp.zeros((2, 2)), jnp.ones((2, 1)), jnp.ones((1, 2)), 1.0, 1)),
        Case("merge_lora with b = 0 returns the kernel",
             lambda f: f(jnp.eye(3), jnp.ones((3, 2)), jnp.zeros((2, 3)), 8.0, 2)),
    ]  # fmt: skip
    for d_in, rank, d_out, alpha in ((6, 2, 3, 4.0), (8, 4, 5, 1.0), (16, 8, 16, 16.0)):
        kernel = f32(rng.normal(size=(d_in, d_out)))
        _, a, b = _lora_inputs(rng, (1,), d_in, rank, d_out)
        cases.append(Case(f"merge_lora(kernel ({d_in}, {d_out}), rank {rank}, alpha {alpha})",
                          lambda f, k=kernel, a=a, b=b, r=rank, al=alpha: f(k, a, b, al, r),
                          close(1e-4, 1e-5)))  # fmt: skip
    return cases


def _verdict(value) -> np.ndarray:
    """A verdict of lora_init_check as its index in finetune.LORA_INIT_VERDICTS."""
    if not isinstance(value, str) or value not in finetune.LORA_INIT_VERDICTS:
        raise TypeError(f"expected one of {finetune.LORA_INIT_VERDICTS}, got {value!r}")
    return np.asarray(finetune.LORA_INIT_VERDICTS.index(value), np.int64)


def lora_init_check_cases(rng: np.random.Generator) -> list[Case]:
    def case(label, x, a, b, alpha, rank):
        return Case(f"lora_init_check: {label}",
                    lambda f: _verdict(f(x, a, b, alpha, rank)), exact)  # fmt: skip

    x, a, b = _lora_inputs(rng, (4,), 8, 2, 6)
    zero_a, zero_b = jnp.zeros_like(a), jnp.zeros_like(b)
    # inputs that use only the first 5 coordinates, and an a that reads only the last 3
    half_x = x.at[:, 5:].set(0.0)
    other_a = a.at[:5].set(0.0)
    # every row of b sums to exactly 0 (dyadic entries, each with its negative)
    half = rng.choice([-2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0], size=(2, 3))
    balanced_b = f32(np.concatenate([half, -half[:, ::-1]], axis=1))
    cases = [
        case("the standard init (a random, b = 0)", x, a, zero_b, 4.0, 2),
        case("both random", x, a, b, 4.0, 2),
        case("both zero", x, zero_a, zero_b, 4.0, 2),
        case("a = 0, b random", x, zero_a, b, 4.0, 2),
        case("a random, b tiny but nonzero", x, a, b * 1e-9, 4.0, 2),
        case("a random, b of the size of bfloat16 rounding", x, a, b * 4e-3, 4.0, 2),
        case("a huge alpha with a tiny b", x, a, b * 1e-9, 1e5, 2),
        case("inputs all zero", jnp.zeros_like(x), a, b, 4.0, 2),
        case("a orthogonal to the inputs, b = 0", half_x, other_a, zero_b, 4.0, 2),
        case("a orthogonal to the inputs, b random", half_x, other_a, b, 4.0, 2),
        case("a = 0, every row of b summing to zero", x, zero_a, balanced_b, 4.0, 2),
    ]  # fmt: skip
    x, a, b = _lora_inputs(rng, (3, 5), 8, 4, 8)
    cases.append(case("x (3, 5, 8), rank 4, alpha 1, standard init", x, a, jnp.zeros_like(b),
                      1.0, 4))  # fmt: skip
    cases.append(case("x (3, 5, 8), rank 4, alpha 1, both random", x, a, b, 1.0, 4))
    return cases


TINY = gpt.GPTConfig(
    vocab_size=12,
    block_size=16,
    num_layers=1,
    num_heads=2,
    d_model=32,
    init_std=0.3,  # large enough that frozen tied embeddings allow sharp logits
)
FT_STEPS, FT_BATCH, FT_PERIOD = 60, 16, 7
# the last 10 losses' mean must be below FALL x the first 5's (the reference: about 0.02x)
FALL = 0.5


def _tiny_lora(seed: int):
    model = gpt.GPT(TINY, rngs=nnx.Rngs(seed))
    return finetune.add_lora(model, rank=4, alpha=8.0, rngs=nnx.Rngs(seed + 1))


def _windows(seed: int, step: int):
    """[FT_BATCH, 17] windows of a periodic token stream (period 7): the "new corpus"."""
    starts = np.random.default_rng([seed, step]).integers(0, FT_PERIOD, size=FT_BATCH)
    return jnp.asarray((starts[:, None] + np.arange(TINY.block_size + 1)) % FT_PERIOD, jnp.int32)


def _frozen(model):
    params = nnx.state(model, nnx.Not(nnx.LoRAParam))
    return np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(params)])


def _adapters(model):
    return np.concatenate([np.asarray(x).ravel()
                           for x in jax.tree.leaves(nnx.state(model, nnx.LoRAParam))])  # fmt: skip


def _nonzero_b(model) -> None:
    """Makes b nonzero so that both adapter matrices receive gradients."""
    for module, name in finetune._target_layers(model):
        layer = getattr(module, name)
        layer.lora_b[...] = 0.1 * jnp.ones_like(layer.lora_b[...])


def _one_step(seed: int, *extra):
    """One SGD(0.5) step of a train step ``step(model, optimizer, windows, *extra)``."""

    def run(step):
        model = _tiny_lora(seed)
        _nonzero_b(model)
        optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.LoRAParam)
        loss = step(model, optimizer, _windows(seed, 0), *extra)
        return {"loss": loss, "adapters": _adapters(model)}

    return run


def _clipped_step(seed: int, fraction: float):
    """One SGD(0.5) step of ``lora_train_step`` with max_norm = ``fraction`` x the global norm of
    the adapters' gradient at the start (measured here, outside the step under test)."""

    def run(step):
        model = _tiny_lora(seed)
        _nonzero_b(model)
        windows = _windows(seed, 0)

        def loss_fn(m):
            return gpt.lm_loss(m(windows[:, :-1]), windows[:, 1:])

        grads = nnx.grad(loss_fn, argnums=nnx.DiffState(0, nnx.LoRAParam))(model)
        max_norm = fraction * float(optax.tree.norm(grads))
        optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.LoRAParam)
        loss = step(model, optimizer, windows, max_norm)
        return {"loss": loss, "adapters": _adapters(model)}

    return run


def _fine_tune(seed: int, answer_masks: bool = False, max_norm: float | None = None):
    """FT_STEPS Adam steps under nnx.jit, with an answer mask per step if ``answer_masks``, or
    ``max_norm`` (traced) as the last argument if given."""

    def run(step):
        model = _tiny_lora(seed)
        optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.LoRAParam)
        frozen_before, adapters_before = _frozen(model), _adapters(model)
        jitted = nnx.jit(step)

        def extra(i):
            if answer_masks:
                return (_answer_mask(seed + i),)
            return () if max_norm is None else (jnp.float32(max_norm),)

        losses = [jitted(model, optimizer, _windows(seed, i), *extra(i)) for i in range(FT_STEPS)]
        return {"losses": jnp.stack(losses), "frozen_before": frozen_before,
                "frozen_after": _frozen(model), "adapters_before": adapters_before,
                "adapters_after": _adapters(model)}  # fmt: skip

    return run


@judged_alone
def _compare_fine_tuning(got, want, label: str) -> None:
    keys = {"losses", "frozen_before", "frozen_after", "adapters_before", "adapters_after"}
    if not isinstance(got, dict) or set(got) != keys:
        check.is_true(False, f"{label}: expected the losses and the parameters")
    losses = np.asarray(got["losses"], np.float64)
    check.shape(f"{label}: losses", losses, (FT_STEPS,))
    check.finite(f"{label}: losses", losses)
    before, after = np.asarray(got["frozen_before"]), np.asarray(got["frozen_after"])
    check.shape(f"{label}: frozen parameters", after, before.shape)
    changed = int(np.sum(before != after))
    check.is_true(changed == 0, f"{label}: {changed} base-model parameters (embeddings, "
                                "LayerNorms or kernels) changed; "
                                "only the adapters may train")  # fmt: skip
    moved = np.asarray(got["adapters_before"]) != np.asarray(got["adapters_after"])
    check.is_true(moved.any(), f"{label}: the adapters did not change")
    first, last = losses[:5].mean(), losses[-10:].mean()
    check.is_true(last < FALL * first, f"{label}: the loss on the new corpus must fall below "
                                       f"{FALL} x its start; it went from {first:.3f} (first 5 "
                                       f"steps) to {last:.3f} (last 10)")  # fmt: skip


def lora_train_step_cases(rng: np.random.Generator) -> list[Case]:
    seeds = [int(s) for s in rng.integers(1 << 20, size=4)]
    return [
        Case("lora_train_step: one SGD(0.5) step, max_norm 1e6 (the loss before the update, "
             "then the adapters)", _one_step(seeds[0], 1e6), close(1e-4, 1e-6)),
        Case("lora_train_step: one SGD(0.5) step, max_norm 0.3 x the adapters' gradient norm",
             _clipped_step(seeds[1], 0.3), close(1e-4, 1e-6)),
        Case("lora_train_step: one SGD(0.5) step, max_norm 1.5 x the adapters' gradient norm "
             "(below the norm of the whole model's gradient)", _clipped_step(seeds[2], 1.5),
             close(1e-4, 1e-6)),
        Case(f"lora_train_step: {FT_STEPS} Adam steps on a new corpus under nnx.jit, max_norm "
             "0.5 passed traced", _fine_tune(seeds[3], max_norm=0.5), _compare_fine_tuning),
    ]  # fmt: skip


def _answer_mask(seed: int, as_bool: bool = False):
    """[FT_BATCH, 17] answer masks aligned with the windows: a prompt of 2..10 tokens, then the
    answer, then 0..4 tokens of padding; rows differ in length, so the mean over answer tokens
    differs from the mean of the rows' means."""
    rng = np.random.default_rng([seed, 99])
    length = TINY.block_size + 1
    prompt = rng.integers(2, 11, size=FT_BATCH)
    end = length - rng.integers(0, 5, size=FT_BATCH)
    positions = np.arange(length)
    mask = (positions >= prompt[:, None]) & (positions < end[:, None])
    return jnp.asarray(mask) if as_bool else jnp.asarray(mask, jnp.float32)


def sft_train_step_cases(rng: np.random.Generator) -> list[Case]:
    seeds = [int(s) for s in rng.integers(1 << 20, size=3)]
    return [
        Case("sft_train_step: one SGD(0.5) step, answers of different lengths (the loss before "
             "the update, then the adapters)", _one_step(seeds[0], _answer_mask(seeds[0])),
             close(1e-4, 1e-6)),
        Case("sft_train_step: one SGD(0.5) step with a bool answer mask, another model",
             _one_step(seeds[1], _answer_mask(seeds[1], as_bool=True)), close(1e-4, 1e-6)),
        Case(f"sft_train_step: {FT_STEPS} Adam steps under nnx.jit (the answer loss falls, the "
             "base model stays)", _fine_tune(seeds[2], answer_masks=True), _compare_fine_tuning),
    ]  # fmt: skip


# --- section 4: sequence log-probabilities and DPO ----------------------------------------------


def kl_regularised_optimum_cases(rng: np.random.Generator) -> list[Case]:
    half = jnp.log(jnp.array([0.5, 0.5]))
    tol = close(1e-5, 1e-5)
    cases = [
        Case("kl_regularised_optimum: two answers, equal reference, rewards (1, 0), beta = 1, "
             "tau = 0", lambda f: f(half, jnp.array([1.0, 0.0]), 1.0, 0.0), tol),
        Case("kl_regularised_optimum: two answers, reference (0.9, 0.1), rewards (0, 2), "
             "beta = 0.5, tau = 1.5", lambda f: f(jnp.log(jnp.array([0.9, 0.1])),
                                                  jnp.array([0.0, 2.0]), 0.5, 1.5), tol),
        Case("kl_regularised_optimum with equal rewards and tau = 0 is the (normalised) reference",
             lambda f: f(jnp.array([2.0, 0.0, -1.0]), jnp.full(3, 4.0), 0.3, 0.0), tol),
        Case("kl_regularised_optimum with equal rewards and tau = 0.6: the entropy bonus alone",
             lambda f: f(jnp.array([2.0, 0.0, -1.0]), jnp.full(3, 4.0), 0.3, 0.6), tol),
        Case("kl_regularised_optimum with unnormalised reference logits (+9 on every entry), "
             "tau = 1", lambda f: f(jnp.array([9.0, 8.0, 7.5]), jnp.array([0.5, -1.0, 2.0]),
                                    2.0, 1.0), tol),
        Case("kl_regularised_optimum with a huge entropy bonus (tau = 1e4) is nearly uniform",
             lambda f: f(jnp.array([1.0, -2.0, 0.5, 0.0]), jnp.array([3.0, 0.0, 1.0, -1.0]),
                         0.5, 1e4), close(1e-4, 1e-5)),
        Case("kl_regularised_optimum with rewards of thousands stays finite (tau = 0.5)",
             lambda f: f(jnp.zeros(3), jnp.array([3000.0, 2990.0, -3000.0]), 1.0, 0.5),
             close(1e-4, 1e-3)),
        Case("kl_regularised_optimum with rewards / beta of thousands stays finite (tau = 0)",
             lambda f: f(jnp.zeros(3), jnp.array([30.0, 29.99, -30.0]), 0.01, 0.0),
             close(1e-4, 1e-3)),
        Case("kl_regularised_optimum where the reference gives an answer probability e^-200, "
             "tau = 2", lambda f: f(jnp.array([0.0, -200.0]), jnp.array([0.0, 150.0]), 1.0, 2.0),
             close(1e-4, 1e-3)),
        Case("kl_regularised_optimum with beta = 0 raises ValueError",
             lambda f: f(half, jnp.array([1.0, 0.0]), 0.0, 1.0), raises=(ValueError,)),
        Case("kl_regularised_optimum with tau < 0 raises ValueError",
             lambda f: f(half, jnp.array([1.0, 0.0]), 1.0, -0.5), raises=(ValueError,)),
    ]  # fmt: skip
    for shape, beta, tau in (((5,), 0.5, 0.7), ((3, 4), 0.1, 0.05), ((2, 3, 6), 3.0, 2.0)):
        ref = f32(rng.normal(scale=2.0, size=shape))
        rewards = f32(rng.normal(size=shape))
        cases.append(Case(f"kl_regularised_optimum(random {shape}, beta = {beta}, tau = {tau})",
                          lambda f, ref=ref, r=rewards, beta=beta, tau=tau: f(ref, r, beta, tau),
                          close(1e-4, 1e-5)))  # fmt: skip
    return cases


def sequence_log_prob_cases(rng: np.random.Generator) -> list[Case]:
    uniform = jnp.zeros((1, 3, 4))
    cases = [
        Case("sequence_log_prob of uniform logits over 4 tokens, 3 positions (3 log 1/4)",
             lambda f: f(uniform, jnp.array([[0, 1, 2]]), jnp.ones((1, 3)))),
        Case("sequence_log_prob with an all-zero mask row is 0",
             lambda f: f(uniform, jnp.array([[0, 1, 2]]), jnp.zeros((1, 3)))),
        Case("sequence_log_prob with a boolean mask",
             lambda f: f(jnp.array([[[2.0, 0.0], [0.0, 3.0]]]), jnp.array([[0, 0]]),
                         jnp.array([[True, False]]))),
        Case("sequence_log_prob with huge logits stays finite",
             lambda f: f(jnp.array([[[1e4, -1e4, 0.0]]]), jnp.array([[1]]), jnp.ones((1, 1))),
             close(1e-5, 1e-2)),
    ]  # fmt: skip
    for b, t, v in ((2, 5, 7), (4, 9, 30), (1, 1, 3)):
        logits = f32(rng.normal(scale=3.0, size=(b, t, v)))
        tokens = jnp.asarray(rng.integers(0, v, size=(b, t)), jnp.int32)
        mask = f32(rng.integers(0, 2, size=(b, t)))
        cases.append(Case(f"sequence_log_prob(logits ({b}, {t}, {v}), random mask)",
                          lambda f, logits=logits, k=tokens, m=mask: f(logits, k, m),
                          close(1e-4, 1e-4, dtype="float")))  # fmt: skip
    return cases


def _pair(chosen_gain: float, rejected_gain: float = 0.0):
    """One pair's four log-probabilities: the policy's gains over a reference of -20 nats."""
    return (jnp.array([-20.0 + chosen_gain]), jnp.array([-20.0 + rejected_gain]),
            jnp.array([-20.0]), jnp.array([-20.0]))  # fmt: skip


def _dpo_gradient(pair, beta: float, flip: float):
    """The gradient of the loss with respect to the policy's log-probability of the chosen."""
    return lambda f: jax.grad(lambda c: f(c, *pair[1:], beta, flip))(pair[0])


def dpo_loss_cases(rng: np.random.Generator) -> list[Case]:
    zeros = jnp.zeros(3)
    cases = [
        Case("dpo_loss with policy = reference is log 2 (flip 0.2)",
             lambda f: f(zeros, zeros, zeros, zeros, 0.1, 0.2)),
        Case("dpo_loss: the chosen answer gained 10 nats, beta = 0.5, flip 0",
             lambda f: f(*_pair(10.0), 0.5, 0.0)),
        Case("dpo_loss: the chosen answer gained 10 nats, beta = 0.5, flip 0.1",
             lambda f: f(*_pair(10.0), 0.5, 0.1)),
        Case("dpo_loss: the rejected answer gained (sign matters), flip 0.05",
             lambda f: f(*_pair(0.0, 5.0), 0.5, 0.05)),
        Case("dpo_loss with a margin of -2000 nats, flip 0 (finite)",
             lambda f: f(*_pair(-2000.0), 1.0, 0.0), close(1e-5, 1e-3)),
        Case("dpo_loss with a margin of -2000 nats, flip 0.1",
             lambda f: f(*_pair(-2000.0), 1.0, 0.1), close(1e-5, 1e-5)),
        Case("dpo_loss with a margin of -2000 nats, flip 1e-6",
             lambda f: f(*_pair(-2000.0), 1.0, 1e-6), close(1e-4, 1e-4)),
        Case("dpo_loss with a margin of +2000 nats, flip 0 and flip 0.3",
             lambda f: (f(*_pair(2000.0), 1.0, 0.0), f(*_pair(2000.0), 1.0, 0.3)),
             close(1e-5, 1e-6)),
        Case("the gradient of dpo_loss at a margin of -2000 nats, flip 0 and flip 0.1",
             lambda f: (_dpo_gradient(_pair(-2000.0), 1.0, 0.0)(f),
                        _dpo_gradient(_pair(-2000.0), 1.0, 0.1)(f)), close(1e-5, 1e-6)),
        Case("the gradient of dpo_loss at a margin of 3 nats, beta 0.7, flip 0.25",
             _dpo_gradient(_pair(3.0), 0.7, 0.25), close(1e-4, 1e-6)),
    ]  # fmt: skip
    for n, beta, flip in ((8, 0.1, 0.0), (16, 1.0, 0.1), (5, 0.02, 0.3), (12, 0.5, 0.45)):
        pc, pr, rc, rr = (f32(rng.normal(-50.0, 10.0, size=n)) for _ in range(4))
        cases.append(Case(f"dpo_loss({n} random pairs, beta = {beta}, flip = {flip})",
                          lambda f, a=(pc, pr, rc, rr), beta=beta, e=flip: f(*a, beta, e),
                          close(1e-4, 1e-5)))  # fmt: skip
    return cases


def sequence_kl_cases(rng: np.random.Generator) -> list[Case]:
    logits = f32(rng.normal(size=(2, 3, 5)))
    cases = [
        Case("sequence_kl(logits, the same logits) = 0",
             lambda f: f(logits, logits, jnp.ones((2, 3))), close(1e-5, 1e-5)),
        Case("sequence_kl of two-token distributions (0.5, 0.5) vs (0.8, 0.2)",
             lambda f: f(jnp.zeros((1, 1, 2)), jnp.log(jnp.array([[[0.8, 0.2]]])),
                         jnp.ones((1, 1)))),
        Case("sequence_kl with shifted logits (+7 on every entry) = 0",
             lambda f: f(logits, logits + 7.0, jnp.ones((2, 3))), close(1e-5, 1e-5)),
        Case("sequence_kl where the reference gives a token probability e^-200",
             lambda f: f(jnp.zeros((1, 1, 2)), jnp.array([[[0.0, -200.0]]]), jnp.ones((1, 1))),
             close(1e-4, 1e-3)),
        Case("sequence_kl with an all-zero mask row is 0",
             lambda f: f(logits, logits * 2.0, jnp.zeros((2, 3)))),
    ]  # fmt: skip
    for b, t, v in ((2, 6, 7), (3, 4, 40)):
        p, q = (
            f32(rng.normal(scale=2.0, size=(b, t, v))),
            f32(rng.normal(scale=2.0, size=(b, t, v))),
        )
        mask = f32(rng.integers(0, 2, size=(b, t)))
        cases.append(Case(f"sequence_kl(random logits ({b}, {t}, {v}), random mask)",
                          lambda f, p=p, q=q, m=mask: f(p, q, m), close(1e-4, 1e-4)))  # fmt: skip
    return cases


# the library's training steps, which compute what exercises 11 and 12 ask for
LIBRARY_STEPS = ("genlab.gpt.train_step", "genlab.train.make_train_step",
                 "genlab.finetune.lora_train_step")  # fmt: skip
# the library's losses and log-probabilities of the tokens a mask selects: they compute exercise
# 12's loss, and the first three what sequence_log_prob asks for
ANSWER_LOSSES = ("genlab.finetune.completion_log_probs", "genlab.finetune.scored_loss",
                 "genlab.finetune.masked_lm_loss", "genlab.finetune.sequence_log_prob")  # fmt: skip

PROBES = [
    Probe("pair_counts", bpe.pair_counts, pair_counts_cases),
    Probe("merge_pair", bpe.merge_pair, merge_pair_cases),
    Probe("train_bpe", bpe.train_bpe, train_bpe_cases, uses=("pair_counts", "merge_pair")),
    Probe("bpe_encode", bpe.bpe_encode, bpe_encode_cases, uses=("merge_pair",)),
    Probe("bpe_decode", bpe.bpe_decode, bpe_decode_cases, forbidden=("genlab.bpe.token_bytes",)),
    Probe("crossing_merges", bpe.crossing_merges, crossing_merges_cases),
    Probe("bits_per_byte", bpe.bits_per_byte, bits_per_byte_cases),
    Probe("lora_delta", finetune.lora_delta, lora_delta_cases),
    Probe("merge_lora", finetune.merge_lora, merge_lora_cases),
    Probe("lora_init_check", finetune.lora_init_check, lora_init_check_cases, uses=("lora_delta",)),
    Probe(
        "lora_train_step", finetune.lora_train_step, lora_train_step_cases, forbidden=LIBRARY_STEPS
    ),
    Probe(
        "sft_train_step",
        finetune.sft_train_step,
        sft_train_step_cases,
        forbidden=LIBRARY_STEPS + ANSWER_LOSSES,
    ),
    Probe("kl_regularised_optimum", finetune.kl_regularised_optimum, kl_regularised_optimum_cases),
    Probe(
        "sequence_log_prob",
        finetune.sequence_log_prob,
        sequence_log_prob_cases,
        forbidden=ANSWER_LOSSES[:3],
    ),
    Probe("dpo_loss", finetune.dpo_loss, dpo_loss_cases),
    Probe("sequence_kl", finetune.sequence_kl, sequence_kl_cases),
]
