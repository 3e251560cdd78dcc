"""genlab.gpt: GPT-2 logits vs transformers (committed fixture), KV cache, generation, losses."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from genlab import gpt, sampling
from genlab.attention import scaled_dot_product_attention, split_heads

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "hf_gpt2_tiny.npz"


@pytest.fixture(scope="module")
def hf():
    raw = np.load(FIXTURE)
    vocab, positions, width, layers, heads = (int(x) for x in raw["config"])
    config = gpt.GPTConfig(
        vocab_size=vocab, block_size=positions, num_layers=layers, num_heads=heads, d_model=width
    )
    state_dict = {k.removeprefix("sd/"): raw[k] for k in raw.files if k.startswith("sd/")}
    model = gpt.load_gpt2_weights(gpt.GPT(config, rngs=nnx.Rngs(0)), state_dict)
    return {**dict(raw), "model": model, "state_dict": state_dict, "config": config}


@pytest.fixture(scope="module")
def tiny():
    return gpt.GPT(
        gpt.GPTConfig(vocab_size=11, block_size=24, num_layers=2, d_model=32), rngs=nnx.Rngs(3)
    )


# --- GPT-2 compatibility --------------------------------------------------------------------


def test_load_gpt2_weights_logits_match_transformers(hf):
    got = np.asarray(hf["model"](hf["input_ids"]))
    np.testing.assert_allclose(got, hf["logits"], atol=1e-4, rtol=0)


def test_load_gpt2_weights_greedy_tokens_match_transformers(hf):
    prompt, want = hf["input_ids"], hf["greedy"]
    new = want.shape[1] - prompt.shape[1]
    cached = gpt.generate(hf["model"], jax.random.key(0), prompt, new, greedy=True)
    naive = sampling.generate(
        jax.random.key(0), gpt.make_logits_fn(hf["model"]), prompt, new, greedy=True
    )
    np.testing.assert_array_equal(cached, want)
    np.testing.assert_array_equal(naive, want)


def test_load_gpt2_weights_accepts_names_without_prefix(hf):
    stripped = {k.removeprefix("transformer."): v for k, v in hf["state_dict"].items()}
    model = gpt.load_gpt2_weights(gpt.GPT(hf["config"], rngs=nnx.Rngs(1)), stripped)
    np.testing.assert_allclose(model(hf["input_ids"]), hf["logits"], atol=1e-4, rtol=0)


def test_load_gpt2_weights_rejects_wrong_shapes(hf):
    config = gpt.GPTConfig(vocab_size=50, block_size=32, num_layers=2, num_heads=4, d_model=16)
    with pytest.raises(ValueError, match="wte.weight"):
        gpt.load_gpt2_weights(gpt.GPT(config, rngs=nnx.Rngs(0)), hf["state_dict"])
    missing = {k: v for k, v in hf["state_dict"].items() if "h.1.mlp.c_fc.bias" not in k}
    with pytest.raises(KeyError, match="h.1.mlp.c_fc.bias"):
        gpt.load_gpt2_weights(gpt.GPT(hf["config"], rngs=nnx.Rngs(0)), missing)


def _numpy_gpt2(sd: dict, ids: np.ndarray, heads: int) -> np.ndarray:
    """A plain NumPy GPT-2 forward pass written from the paper's description (float64)."""
    sd = {k.removeprefix("transformer."): v.astype(np.float64) for k, v in sd.items()}

    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * sd[name + ".weight"] + sd[name + ".bias"]

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    t = ids.shape[1]
    x = sd["wte.weight"][ids] + sd["wpe.weight"][:t]
    layer = 0
    while f"h.{layer}.ln_1.weight" in sd:
        p = f"h.{layer}."
        qkv = ln(x, p + "ln_1") @ sd[p + "attn.c_attn.weight"] + sd[p + "attn.c_attn.bias"]
        q, k, v = np.split(qkv, 3, axis=-1)
        b, _, d = q.shape
        q, k, v = (a.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3) for a in (q, k, v))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)
        scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        a = (w @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
        x = x + a @ sd[p + "attn.c_proj.weight"] + sd[p + "attn.c_proj.bias"]
        h = gelu(ln(x, p + "ln_2") @ sd[p + "mlp.c_fc.weight"] + sd[p + "mlp.c_fc.bias"])
        x = x + h @ sd[p + "mlp.c_proj.weight"] + sd[p + "mlp.c_proj.bias"]
        layer += 1
    return ln(x, "ln_f") @ sd["wte.weight"].T


def test_gpt_matches_numpy_reimplementation(hf):
    want = _numpy_gpt2(hf["state_dict"], hf["input_ids"], hf["config"].num_heads)
    np.testing.assert_allclose(hf["model"](hf["input_ids"]), want, atol=1e-4, rtol=0)
    np.testing.assert_allclose(want, hf["logits"], atol=1e-4, rtol=0)


def test_read_safetensors_round_trip(tmp_path, hf):
    """A file written here in the safetensors layout (no network, no torch) loads back."""
    arrays = {k: v for k, v in hf["state_dict"].items()}
    header, blobs, offset = {}, [], 0
    for name, value in arrays.items():
        blob = np.ascontiguousarray(value, np.float32).tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(value.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = {"format": "pt"}
    encoded = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))
    loaded = gpt.read_safetensors(path)
    assert set(loaded) == set(arrays)
    model = gpt.load_gpt2_weights(gpt.GPT(hf["config"], rngs=nnx.Rngs(2)), loaded)
    np.testing.assert_allclose(model(hf["input_ids"]), hf["logits"], atol=1e-4, rtol=0)


def test_load_gpt2_small_offline_raises_oserror(tmp_path):
    with pytest.raises(OSError, match="missing"):
        gpt.load_gpt2_small(tmp_path, download=False)


# --- architecture ---------------------------------------------------------------------------


def test_gpt_config_rejects_bad_values():
    with pytest.raises(ValueError, match="num_heads"):
        gpt.GPTConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="block_size"):
        gpt.GPTConfig(block_size=0)
    tiny = gpt.GPTConfig.tiny(vocab_size=100)
    assert (tiny.num_layers, tiny.num_heads, tiny.d_model, tiny.block_size) == (4, 4, 128, 128)
    assert tiny.ln_eps == 1e-5


def test_gpt_head_is_tied_and_layernorm_eps(tiny):
    params = nnx.state(tiny, nnx.Param)
    names = {"/".join(str(p) for p in path) for path, _ in nnx.to_flat_state(params)}
    assert not any("head" in n or "lm_head" in n for n in names)
    assert tiny.ln_f.epsilon == 1e-5 and tiny.blocks[0].ln_1.epsilon == 1e-5


def test_gpt_is_causal(tiny):
    tokens = jax.random.randint(jax.random.key(0), (2, 10), 0, 11)
    changed = tokens.at[:, 6:].set((tokens[:, 6:] + 1) % 11)
    np.testing.assert_allclose(tiny(tokens)[:, :6], tiny(changed)[:, :6], atol=1e-6)
    assert not np.allclose(tiny(tokens)[:, 6:], tiny(changed)[:, 6:])


def test_gpt_rejects_too_long_input(tiny):
    with pytest.raises(ValueError, match="block_size"):
        tiny(jnp.zeros((1, 25), jnp.int32))
    with pytest.raises(ValueError, match="shape"):
        tiny(jnp.zeros((25,), jnp.int32))


def test_pre_ln_block_formula():
    x = jnp.arange(12.0).reshape(1, 3, 4) / 10
    ln_1, ln_2 = (lambda h: 2 * h), (lambda h: h - 1)
    attn, mlp = jnp.sin, jnp.cos
    h = x + jnp.sin(2 * x)
    np.testing.assert_allclose(
        gpt.pre_ln_block(x, ln_1, attn, ln_2, mlp), h + jnp.cos(h - 1), rtol=1e-6
    )


# --- losses ---------------------------------------------------------------------------------


def test_lm_loss_matches_optax():
    logits = jax.random.normal(jax.random.key(0), (3, 5, 7)) * 3
    targets = jax.random.randint(jax.random.key(1), (3, 5), 0, 7)
    want = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
    np.testing.assert_allclose(gpt.lm_loss(logits, targets), want, rtol=1e-6)


def test_lm_loss_uniform_is_log_v_and_perplexity_v():
    loss = gpt.lm_loss(jnp.zeros((2, 4, 9)), jnp.zeros((2, 4), jnp.int32))
    np.testing.assert_allclose(loss, np.log(9), rtol=1e-6)
    np.testing.assert_allclose(gpt.perplexity(loss), 9.0, rtol=1e-5)


def test_lm_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="targets"):
        gpt.lm_loss(jnp.zeros((2, 4, 9)), jnp.zeros((2, 5), jnp.int32))
    with pytest.raises(TypeError, match="integer"):
        gpt.lm_loss(jnp.zeros((2, 4, 9)), jnp.zeros((2, 4)))


# --- KV cache and generation ----------------------------------------------------------------


def test_update_kv_cache_writes_at_position():
    cache = jnp.zeros((2, 3, 8, 4))
    new = jnp.ones((2, 3, 2, 4))
    got = gpt.update_kv_cache(cache, new, 5)
    np.testing.assert_array_equal(got[:, :, 5:7], 1.0)
    np.testing.assert_array_equal(got[:, :, :5], 0.0)
    np.testing.assert_array_equal(got[:, :, 7:], 0.0)
    traced = jax.jit(gpt.update_kv_cache)(cache, new, jnp.int32(5))
    np.testing.assert_array_equal(traced, got)


def test_forward_with_cache_matches_full_forward(tiny):
    tokens = jax.random.randint(jax.random.key(4), (2, 9), 0, 11)
    full = tiny(tokens)
    cache = gpt.init_cache(tiny.config, 2, 12)
    logits, cache = tiny.forward_with_cache(tokens[:, :5], cache, 0)
    np.testing.assert_allclose(logits, full[:, :5], atol=1e-5)
    for t in range(5, 9):
        logits, cache = tiny.forward_with_cache(tokens[:, t : t + 1], cache, t)
        np.testing.assert_allclose(logits[:, 0], full[:, t], atol=1e-5)


@pytest.mark.parametrize(
    "settings",
    [
        {"greedy": True},
        {},
        {"temperature": 0.7, "top_k": 4},
        {"top_p": 0.8},
        {"temperature": 1.5, "top_k": 6, "top_p": 0.9},
    ],
)
def test_generate_cached_equals_naive(tiny, settings):
    prompt = jax.random.randint(jax.random.key(5), (3, 4), 0, 11)
    key = jax.random.key(11)
    cached = gpt.generate(tiny, key, prompt, 16, **settings)
    naive = sampling.generate(key, gpt.make_logits_fn(tiny), prompt, 16, **settings)
    np.testing.assert_array_equal(cached, naive)
    assert cached.shape == (3, 20) and cached.dtype == jnp.int32
    np.testing.assert_array_equal(cached[:, :4], prompt)


def test_generate_compiles_once(tiny):
    prompt = jnp.zeros((1, 3), jnp.int32)
    gpt.generate(tiny, jax.random.key(0), prompt, 10, temperature=0.9)
    before = gpt._generate_cached._cache_size()  # compiled programs held by the jit cache
    for seed in range(1, 4):
        gpt.generate(tiny, jax.random.key(seed), prompt + seed, 10, temperature=0.9)
    assert gpt._generate_cached._cache_size() == before, (
        "generate recompiled for a new key or prompt"
    )
    gpt.generate(tiny, jax.random.key(0), prompt, 11, temperature=0.9)
    assert gpt._generate_cached._cache_size() == before + 1  # a new length is a new program


def test_generate_different_keys_give_different_samples(tiny):
    prompt = jnp.zeros((1, 2), jnp.int32)
    a = gpt.generate(tiny, jax.random.key(0), prompt, 20)
    b = gpt.generate(tiny, jax.random.key(1), prompt, 20)
    assert not np.array_equal(a, b)


def test_generate_rejects_bad_arguments(tiny):
    prompt = jnp.zeros((1, 4), jnp.int32)
    with pytest.raises(ValueError, match="block_size"):
        gpt.generate(tiny, jax.random.key(0), prompt, 21)
    with pytest.raises(ValueError, match="num_new_tokens"):
        gpt.generate(tiny, jax.random.key(0), prompt, 0)
    with pytest.raises(ValueError, match="temperature"):
        gpt.generate(tiny, jax.random.key(0), prompt, 3, temperature=0.0)
    with pytest.raises(ValueError, match="prompt"):
        gpt.generate(tiny, jax.random.key(0), jnp.zeros(4, jnp.int32), 3)


def test_gpt2_vocab_round_trip(tmp_path):
    vocab = {"T": 0, "he": 1, "The": 2, "\u0120cat": 3, "\u0120": 4, "c": 5, "a": 6, "t": 7, "!": 8}
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(vocab), encoding="utf-8")
    v = gpt.GPT2Vocab(path)
    assert v.encode("The cat!") == [2, 3, 8]  # longest match; " " is the byte-level \u0120
    assert v.decode([2, 3, 8]) == "The cat!"
    with pytest.raises(ValueError, match="vocabulary"):
        v.encode("dog")


def test_teacher_forced_accuracy_counts_shifted_hits():
    tokens = jnp.array([[0, 1, 2, 0]])
    logits = jax.nn.one_hot(jnp.array([[1, 2, 1, 1]]), 3)
    np.testing.assert_allclose(gpt.teacher_forced_accuracy(logits, tokens), 2 / 3, rtol=1e-6)
    with pytest.raises(ValueError, match="T >= 2"):
        gpt.teacher_forced_accuracy(jnp.zeros((1, 1, 3)), jnp.zeros((1, 1), jnp.int32))


def test_causal_attention_matches_chapter_03_attention_and_its_gradients():
    q, k, v = jax.random.normal(jax.random.key(6), (3, 2, 2, 5, 4))  # (B, H, T, D_h) each
    full = jnp.tril(jnp.ones((5, 5), bool))  # (T, T)
    cached = jnp.arange(5)[None, :] <= (2 + jnp.arange(2))[:, None]  # 2 queries at positions 2, 3

    for mask, q_ in ((full, q), (cached, q[:, :, :2])):

        def ours(q, k, v, mask=mask):
            return jnp.sum(jnp.sin(gpt.causal_attention(q, k, v, mask)))

        def chapter_03(q, k, v, mask=mask):
            return jnp.sum(jnp.sin(scaled_dot_product_attention(q, k, v, mask)[0]))

        np.testing.assert_allclose(ours(q_, k, v), chapter_03(q_, k, v), rtol=1e-6)
        got = jax.grad(ours, argnums=(0, 1, 2))(q_, k, v)
        want = jax.grad(chapter_03, argnums=(0, 1, 2))(q_, k, v)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-6)


def test_fused_qkv_gradients_equal_separate_projections(tiny):
    attn = tiny.blocks[0].attn
    x = jax.random.normal(jax.random.key(8), (2, 6, 32))  # (B, T, D)

    def fused(attn):
        return jnp.sum(jnp.tanh(jnp.concatenate(attn.qkv(x), axis=-1)))

    def separate(attn):
        heads = [split_heads(p(x), attn.num_heads) for p in (attn.query, attn.key, attn.value)]
        return jnp.sum(jnp.tanh(jnp.concatenate(heads, axis=-1)))

    got, want = nnx.grad(fused)(attn), nnx.grad(separate)(attn)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=1e-6)


def test_matmul_dtype_bfloat16_is_opt_in_and_close_to_float32(tiny):
    assert gpt.GPTConfig().matmul_dtype == "float32"
    with pytest.raises(ValueError, match="matmul_dtype"):
        gpt.GPTConfig(matmul_dtype="float16")
    low = gpt.GPT(replace(tiny.config, matmul_dtype="bfloat16"), rngs=nnx.Rngs(3))
    tokens = jax.random.randint(jax.random.key(9), (2, 10), 0, 11)
    exact, rounded = tiny(tokens), low(tokens)
    assert rounded.dtype == jnp.float32
    np.testing.assert_allclose(rounded, exact, atol=2e-2)
    assert not np.array_equal(rounded, exact)

    def loss(model):
        return gpt.lm_loss(model(tokens[:, :-1]), tokens[:, 1:])

    got, want = nnx.grad(loss)(low), nnx.grad(loss)(tiny)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=1e-2 * float(jnp.max(jnp.abs(w))) + 1e-6)


# --- the training step, the copy rate, the unigram entropy (section 3 and 8) ----------------


def _leaves(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


@pytest.mark.parametrize("max_grad_norm", [1e-3, 1e6])
def test_train_step_matches_an_optax_chain(max_grad_norm):
    import optax

    config = gpt.GPTConfig(vocab_size=9, block_size=8, num_layers=1, num_heads=2, d_model=16)
    tokens = jax.random.randint(jax.random.key(0), (3, 9), 0, 9)
    ours = gpt.GPT(config, rngs=nnx.Rngs(1))
    loss = gpt.train_step(ours, nnx.Optimizer(ours, optax.sgd(0.5), wrt=nnx.Param), tokens,
                          max_grad_norm)  # fmt: skip
    theirs = gpt.GPT(config, rngs=nnx.Rngs(1))
    chain = optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.sgd(0.5))
    optimizer = nnx.Optimizer(theirs, chain, wrt=nnx.Param)

    def loss_fn(m):
        logits = m(tokens[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    want, grads = nnx.value_and_grad(loss_fn)(theirs)
    optimizer.update(theirs, grads)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    for a, b in zip(_leaves(ours), _leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _kept_by_hand(tokens: np.ndarray, end_id: int) -> list[tuple[int, int]]:
    """(b, t) of every prediction whose inputs tokens[b, :t + 1] hold no end_id, by a loop."""
    batch, width = tokens.shape
    return [(b, t) for b in range(batch) for t in range(width - 1)
            if end_id not in tokens[b, : t + 1].tolist()]  # fmt: skip


def test_train_step_skips_predictions_that_read_an_end_of_document_token():
    import optax

    config = gpt.GPTConfig(vocab_size=9, block_size=8, num_layers=1, num_heads=2, d_model=16)
    tokens = np.array(
        [
            [1, 2, 3, 4, 5, 6, 7, 8, 1],  # no end token: all 8 scored
            [
                1,
                0,
                3,
                4,
                5,
                6,
                7,
                8,
                1,
            ],  # end at input 1: prediction 0 scored (its target is the end)
            [0, 2, 3, 4, 5, 6, 7, 8, 1],  # starts with the end: none scored
            [1, 2, 3, 4, 5, 6, 7, 8, 0],
        ],
        np.int32,
    )  # ends the window: all scored
    kept = _kept_by_hand(tokens, 0)
    assert len(kept) == 8 + 1 + 0 + 8
    ours = gpt.GPT(config, rngs=nnx.Rngs(1))
    loss = nnx.jit(gpt.train_step)(ours, nnx.Optimizer(ours, optax.sgd(0.5), wrt=nnx.Param),
                                   tokens, 1e6, jnp.int32(0))  # fmt: skip
    theirs = gpt.GPT(config, rngs=nnx.Rngs(1))
    optimizer = nnx.Optimizer(theirs, optax.sgd(0.5), wrt=nnx.Param)
    rows, cols = (np.array(i) for i in zip(*kept))

    def loss_fn(m):
        logits = m(jnp.asarray(tokens[:, :-1]))[rows, cols]  # (kept, V)
        labels = jnp.asarray(tokens[rows, cols + 1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    want, grads = nnx.value_and_grad(loss_fn)(theirs)
    optimizer.update(theirs, grads)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    for a, b in zip(_leaves(ours), _leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_train_step_with_nothing_scored_returns_zero_and_does_not_move():
    import optax

    config = gpt.GPTConfig(vocab_size=9, block_size=8, num_layers=1, num_heads=2, d_model=16)
    tokens = jnp.asarray(np.array([[5, 1, 2, 3], [5, 5, 4, 2]], np.int32))
    model = gpt.GPT(config, rngs=nnx.Rngs(2))
    before = _leaves(model)
    loss = gpt.train_step(model, nnx.Optimizer(model, optax.sgd(1.0), wrt=nnx.Param), tokens,
                          1.0, 5)  # fmt: skip
    assert float(loss) == 0.0
    for a, b in zip(_leaves(model), before):
        np.testing.assert_array_equal(a, b)


def test_copy_rate_counts_argmax_equal_to_input():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 4)).astype(np.float32)
    tokens = rng.integers(0, 4, size=(2, 5))
    want = np.mean([logits[b, t].argmax() == tokens[b, t] for b in range(2) for t in range(5)])
    np.testing.assert_allclose(gpt.copy_rate(logits, tokens), want)


def test_unigram_entropy_matches_scipy():
    from scipy.stats import entropy

    tokens = np.array([0, 1, 1, 2, 2, 2, 4])
    np.testing.assert_allclose(gpt.unigram_entropy(tokens, 6), entropy([1, 2, 3, 1]))
