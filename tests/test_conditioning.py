"""genlab.conditioning against independent computations: flax.nnx.MultiHeadAttention (weights
copied across), genlab.diffusion's guidance formula evaluated by hand, binomial rates, NumPy
cross-entropy, and hand-computed BLEU scores (Papineni et al. 2002). Tiny sizes throughout."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from genlab import conditioning as C
from genlab import diffusion

TINY = C.DenoiserConfig(
    dim=8, hidden=16, num_tokens=2, num_heads=2, num_layers=1, d_context=6, num_steps=20
)


@nnx.jit
def _apply(model, *args):
    """``model(*args)`` as one compiled program (eager calls compile every operation)."""
    return model(*args)


def _train(model, optimizer, loss_fn, num_steps: int) -> np.ndarray:
    """``num_steps`` steps of ``loss_fn(model, key)`` in one jitted ``lax.scan``; the losses."""
    graphdef, state = nnx.split((model, optimizer))

    @jax.jit
    def run(state):
        def body(state, key):
            model, optimizer = nnx.merge(graphdef, state)
            loss, grads = nnx.value_and_grad(loss_fn)(model, key)
            optimizer.update(model, grads)
            return nnx.state((model, optimizer)), loss

        return jax.lax.scan(body, state, jax.random.split(jax.random.key(0), num_steps))

    state, losses = run(state)
    nnx.update((model, optimizer), state)
    return np.asarray(losses)


def _context(key):
    """context [3, 5, 6] and a mask [3, 5]: a full row, a row with gaps, a row of one token."""
    context = jax.random.normal(key, (3, 5, 6))
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 0, 1, 0], [0, 1, 0, 0, 0]], bool)
    return context, mask


# --- cross-attention -------------------------------------------------------------------------


def _copied_pair(num_heads=2, d=8, d_c=6):
    mine = C.CrossAttention(num_heads, d, d_c, rngs=nnx.Rngs(0))
    flax_mha = nnx.MultiHeadAttention(
        num_heads,
        d,
        in_kv_features=d_c,
        decode=False,
        bias_init=nnx.initializers.normal(0.5),
        rngs=nnx.Rngs(1),
    )
    for name in ("query", "key", "value"):
        theirs = getattr(flax_mha, name)
        getattr(mine, name).kernel[...] = theirs.kernel[...].reshape(theirs.kernel.shape[0], d)
        getattr(mine, name).bias[...] = theirs.bias[...].reshape(d)
    mine.out.kernel[...] = flax_mha.out.kernel[...].reshape(d, d)
    mine.out.bias[...] = flax_mha.out.bias[...]
    return mine, flax_mha


@pytest.mark.parametrize("masked", [False, True])
def test_cross_attention_matches_flax_multi_head_attention(masked):
    mine, flax_mha = _copied_pair()
    x = jax.random.normal(jax.random.key(2), (3, 4, 8))  # T = 4, D = 8
    context, mask = _context(jax.random.key(3))  # L = 5, D_c = 6
    if not masked:
        mask = None
    ours = _apply(mine, x, context, mask)
    flax_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L)
    theirs = nnx.jit(lambda m: m(x, context, context, mask=flax_mask))(flax_mha)
    assert ours.shape == (3, 4, 8)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_cross_attention_masked_context_has_no_effect():
    attn = C.CrossAttention(2, 8, 6, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (3, 4, 8))
    context, mask = _context(jax.random.key(1))
    junk = 100.0 * jax.random.normal(jax.random.key(2), context.shape)
    changed = jnp.where(mask[..., None], context, junk)  # only the masked-out vectors change
    out, weights = nnx.jit(lambda m, c: m(x, c, mask, return_weights=True))(attn, context)
    np.testing.assert_allclose(_apply(attn, x, changed, mask), out, atol=1e-6)
    assert weights.shape == (3, 2, 4, 5)
    np.testing.assert_array_equal(
        np.asarray(weights)[~np.broadcast_to(np.asarray(mask)[:, None, None, :], weights.shape)],
        0.0,
    )
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    # the null condition: no context token at all leaves only the output bias
    attn.out.bias[...] = jnp.arange(8.0)
    null = _apply(attn, x, context, jnp.zeros_like(mask))
    np.testing.assert_allclose(null, jnp.broadcast_to(jnp.arange(8.0), null.shape), atol=1e-6)


def test_cross_attention_rejects_bad_inputs():
    attn = C.CrossAttention(2, 8, 6, rngs=nnx.Rngs(0))
    x = jnp.zeros((3, 4, 8))
    context, mask = _context(jax.random.key(1))
    with pytest.raises(ValueError, match="mask must have shape"):
        attn(x, context, mask[:, :4])
    with pytest.raises(TypeError, match="mask must be boolean"):
        attn(x, context, mask.astype(jnp.float32))
    with pytest.raises(ValueError, match="width D_c = 6"):
        attn(x, context[..., :5], mask)
    with pytest.raises(ValueError, match="B = 3 rows"):
        attn(x, context[:2], mask[:2])
    with pytest.raises(ValueError, match="must divide d_model"):
        C.CrossAttention(3, 8, 6, rngs=nnx.Rngs(0))


# --- condition dropout, loss, guidance -------------------------------------------------------


def test_drop_condition_nulls_rows_at_the_stated_rate():
    n, p = 20_000, 0.15
    mask = jnp.ones((n, 3), bool).at[:, 2].set(False)
    dropped = np.asarray(C.drop_condition(jax.random.key(0), mask, p))
    null_rows = ~dropped.any(axis=1)
    # a binomial count: within 4.5 standard deviations of n p
    assert abs(null_rows.sum() - n * p) < 4.5 * math.sqrt(n * p * (1 - p))
    np.testing.assert_array_equal(dropped[~null_rows], np.asarray(mask)[~null_rows])
    np.testing.assert_array_equal(C.drop_condition(jax.random.key(1), mask, 0.0), mask)
    assert not np.asarray(C.drop_condition(jax.random.key(1), mask, 1.0)).any()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="p_uncond"):
            C.drop_condition(jax.random.key(1), mask, bad)


def _tiny_denoiser():
    return C.PromptDenoiser(TINY, rngs=nnx.Rngs(0))


def test_guided_eps_at_one_equals_the_conditional_prediction():
    model = _tiny_denoiser()
    x_t = jax.random.normal(jax.random.key(0), (3, 8))
    t = jnp.array([0, 7, 19])
    context, mask = _context(jax.random.key(1))
    cond = _apply(model, x_t, t, context, mask)
    uncond = _apply(model, x_t, t, context, jnp.zeros_like(mask))
    assert float(jnp.abs(cond - uncond).max()) > 1e-3  # the context matters
    guided = nnx.jit(C.guided_eps)
    np.testing.assert_allclose(guided(model, x_t, t, context, mask, 1.0), cond, atol=1e-5)
    np.testing.assert_allclose(guided(model, x_t, t, context, mask, 0.0), uncond, atol=1e-5)
    np.testing.assert_allclose(
        guided(model, x_t, t, context, mask, 3.0), uncond + 3.0 * (cond - uncond), atol=1e-5
    )
    with pytest.raises(ValueError, match="w must be"):
        C.guided_eps(model, x_t, t, context, mask, -1.0)
    with pytest.raises(ValueError, match="mask must have shape"):
        C.guided_eps(model, x_t, t, context, mask[:, :2], 1.0)


def test_conditional_ddpm_loss_with_full_dropout_is_the_unconditional_loss():
    model = _tiny_denoiser()
    x0 = jax.random.normal(jax.random.key(0), (3, 8))
    context, mask = _context(jax.random.key(1))
    ab = diffusion.alpha_bars(diffusion.linear_beta_schedule(TINY.num_steps))
    key = jax.random.key(2)
    null = jnp.zeros_like(mask)
    loss = nnx.jit(C.conditional_ddpm_loss)
    dropped = loss(key, model, x0, context, mask, ab, 1.0)
    np.testing.assert_allclose(dropped, loss(key, model, x0, context, null, ab, 0.0), rtol=1e-6)
    kept = loss(key, model, x0, context, mask, ab, 0.0)
    assert abs(float(kept) - float(dropped)) > 1e-4


def _two_prompt_data(n):
    """Two prompts (context rows 0 / 1) with opposite images +-0.8 on every pixel."""
    which = jnp.arange(n) % 2
    x0 = jnp.where(which[:, None] == 0, 0.8, -0.8) * jnp.ones((n, 8))
    table = jax.random.normal(jax.random.key(9), (2, 2, 6))
    return x0, table[which], jnp.ones((n, 2), bool)


def test_prompt_denoiser_training_loss_falls_and_uses_the_context():
    model = _tiny_denoiser()
    ab = diffusion.alpha_bars(diffusion.linear_beta_schedule(TINY.num_steps, 1e-3, 0.3))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    x0, context, mask = _two_prompt_data(32)

    def loss_fn(model, key):
        return C.conditional_ddpm_loss(key, model, x0, context, mask, ab, 0.2)

    losses = _train(model, optimizer, loss_fn, 300)
    assert losses[-50:].mean() < 0.5 * losses[:20].mean()
    # fresh noise: the conditional model predicts it better than the null-condition one
    keys = jax.random.split(jax.random.key(1234), 8)
    loss = jax.jit(
        jax.vmap(
            lambda k, m: C.conditional_ddpm_loss(k, model, x0, context, m, ab, 0.0),
            in_axes=(0, None),
        )
    )
    assert float(loss(keys, mask).mean()) < 0.8 * float(loss(keys, jnp.zeros_like(mask)).mean())
    # guided DDIM samples land on the prompted image
    timesteps = diffusion.respace(ab, 10)[2]
    samples = C.guided_sample(jax.random.key(5), model, context[:8], mask[:8], 2.0, ab, timesteps)
    assert samples.shape == (8, 8)
    np.testing.assert_array_equal(np.sign(samples.mean(axis=1)), np.sign(x0[:8, 0]))


# --- the measured attribute and the stand-in captions ----------------------------------------


def test_ink_mass_and_thickness_match_numpy():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(6, 64)).astype(np.float32)
    labels = np.array([0, 1, 0, 1, 2, 2])
    np.testing.assert_allclose(C.ink_mass(images), images.sum(1), rtol=1e-6)
    medians = C.class_ink_medians(images, labels, num_classes=3)
    expected = [np.median(images.sum(1)[labels == c]) for c in range(3)]
    np.testing.assert_allclose(medians, expected, rtol=1e-6)
    thick = np.asarray(C.thickness(images, labels, medians))
    np.testing.assert_array_equal(thick, images.sum(1) > np.asarray(expected)[labels])
    with pytest.raises(ValueError, match="class \\[3\\]"):
        C.class_ink_medians(images, labels, num_classes=4)


def test_caption_tokens_spell_the_captions():
    tokens = np.asarray(C.caption_tokens([7, 0], [1, 0]))
    words = [[C.WORDS[i] for i in row] for row in tokens]
    assert words == [["a", "thick", "seven", "<end>"], ["a", "thin", "zero", "<end>"]]
    with pytest.raises(ValueError, match="attributes 0"):
        C.caption_tokens([7], [2])


def test_prompt_digits_split_labels_half_of_each_digit_thick():
    train, held, medians = C.prompt_digits_split()
    assert train["x"].shape == (1437, 64) and held["x"].shape == (360, 64)
    assert float(train["x"].min()) == -1.0 and float(train["x"].max()) == 1.0
    for d in range(10):  # the median splits every class in two (ties go to thin)
        assert 0.35 < train["thick"][np.asarray(train["labels"]) == d].mean() <= 0.5
    ink = np.asarray(C.ink_mass((held["x"] + 1.0) / 2.0))
    np.testing.assert_array_equal(held["thick"], ink > medians[np.asarray(held["labels"])])
    np.testing.assert_array_equal(held["tokens"], C.caption_tokens(held["labels"], held["thick"]))
    with pytest.raises(ValueError, match="held_out_pairs"):
        C.pretrained_prompt_diffusion(3000, held_out_pairs=[(3, 2)])


# --- captions --------------------------------------------------------------------------------

CAPTION = C.CaptionConfig(
    vocab_size=9, max_len=5, d_features=4, num_prefix=2, d_model=16, num_heads=2, num_layers=1
)


def test_caption_decoder_logits_read_only_earlier_tokens():
    model = C.CaptionDecoder(CAPTION, rngs=nnx.Rngs(0))
    features = jax.random.normal(jax.random.key(0), (2, 4))
    tokens = jnp.array([[3, 4, 5, 6, 1], [2, 2, 1, 0, 0]])
    logits = _apply(model, features, tokens)
    assert logits.shape == (2, 5, 9)
    for t in range(5):
        changed = tokens.at[:, t:].set(7)
        np.testing.assert_allclose(
            _apply(model, features, changed)[:, : t + 1], logits[:, : t + 1], atol=1e-5
        )
    other = _apply(model, features + 1.0, tokens)
    assert float(jnp.abs(other[:, 0] - logits[:, 0]).max()) > 1e-4  # token 0 reads the image
    with pytest.raises(ValueError, match="T <= 5"):
        model(features, jnp.zeros((2, 6), jnp.int32))
    with pytest.raises(TypeError, match="integer ids"):
        model(features, tokens.astype(jnp.float32))


def test_caption_loss_scores_every_token_but_padding():
    model = C.CaptionDecoder(CAPTION, rngs=nnx.Rngs(0))
    features = jax.random.normal(jax.random.key(0), (2, 4))
    tokens = jnp.array([[3, 4, 5, 6, 1], [2, 2, 1, 0, 0]])
    log_p = np.asarray(jax.nn.log_softmax(_apply(model, features, tokens), axis=-1), np.float64)
    picked = [log_p[b, t, int(tokens[b, t])] for b in range(2) for t in range(5) if tokens[b, t]]
    np.testing.assert_allclose(
        C.caption_loss(model, features, tokens, 0), -np.mean(picked), rtol=1e-5
    )


def test_decode_captions_greedy_reproduces_a_trained_caption():
    model = C.CaptionDecoder(CAPTION, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    features = jnp.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    tokens = jnp.array([[3, 4, 5, 6, 1], [7, 2, 1, 0, 0]])  # end = 1, pad = 0
    first = float(C.caption_train_step(model, optimizer, features, tokens, 0))
    losses = _train(model, optimizer, lambda m, _: C.caption_loss(m, features, tokens, 0), 150)
    assert first > 1.0 and losses[-1] < 0.05
    # greedy; row 1 ends early, and after its end token every position is padding
    np.testing.assert_array_equal(C.decode_captions(model, features, 1, 0), tokens)
    assert [C.trim_caption(row, 1, 0) for row in np.asarray(tokens)] == [[3, 4, 5, 6], [7, 2]]


def test_decode_captions_samples_the_first_token_from_the_softmax():
    model = C.CaptionDecoder(CAPTION, rngs=nnx.Rngs(3))
    n, temperature = 4000, 0.5
    features = jnp.tile(jnp.array([[0.5, -1.0, 2.0, 0.0]]), (n, 1))
    out = np.asarray(
        C.decode_captions(model, features, 1, 0, temperature=temperature, key=jax.random.key(0))
    )
    logits = _apply(model, features[:1], jnp.zeros((1, 1), jnp.int32))[0, 0]
    expected = np.asarray(jax.nn.softmax(logits / temperature))
    counts = np.bincount(out[:, 0], minlength=9) / n
    np.testing.assert_allclose(counts, expected, atol=4.5 * np.sqrt(0.25 / n))
    assert len({tuple(row) for row in out}) > 1
    with pytest.raises(ValueError, match="key is required"):
        C.decode_captions(model, features, 1, 0, temperature=1.0)
    with pytest.raises(ValueError, match="end_id must be a token id"):
        C.decode_captions(model, features, 9, 0)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        C.decode_captions(model, features, 1, 0, temperature=-1.0, key=jax.random.key(0))


# --- BLEU and attribute accuracy -------------------------------------------------------------


def test_caption_bleu_hand_cases():
    a = ["a", "thick", "seven"]
    assert C.caption_bleu([a], [a]) == pytest.approx(1.0)
    assert C.caption_bleu([["x", "y"]], [a]) == 0.0
    # brevity: "a thick" against "a thick seven": p1 = p2 = 1, BP = exp(1 - 3/2)
    assert C.caption_bleu([["a", "thick"]], [a]) == pytest.approx(math.exp(-0.5))
    # clipping: "a a a" has one "a" that counts (p1 = 1/3) and no bigram of the reference
    assert C.caption_bleu([["a", "a", "a"]], [a], max_n=1) == pytest.approx(1 / 3)
    # corpus level: p1 = (3 + 1) / (3 + 2), p2 = (2 + 0) / (2 + 1); c = 5 < r = 6
    corpus = C.caption_bleu([a, ["a", "thin"]], [a, ["a", "thick", "one"]])
    assert corpus == pytest.approx(math.exp(1 - 6 / 5) * math.sqrt(4 / 5 * 2 / 3))
    # several references: the closest length (2 beats 4) sets r, the best counts clip
    multi = C.caption_bleu([["a", "thick"]], [[["a", "thick", "seven", "x"], ["thick", "a"]]])
    assert multi == pytest.approx(1.0)
    # ids and arrays work alike
    assert C.caption_bleu([np.array([2, 4, 12])], [np.array([2, 4, 12])]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one reference entry per candidate"):
        C.caption_bleu([a], [a, a])


def test_attribute_accuracy_counts_captions_naming_only_the_right_word():
    digit_ids = [5 + d for d in range(10)]
    captions = [[2, 4, 12, 1], [2, 3, 13, 1], [2, 4, 12, 13, 1], [2, 1, 0, 0]]
    # caption 0 names 7 (right), 1 names 8 (wrong), 2 names 7 and 8 (wrong), 3 none (wrong)
    assert C.caption_attribute_accuracy(captions, [7, 7, 7, 7], digit_ids) == pytest.approx(0.25)
    assert C.caption_attribute_accuracy(captions, [1, 0, 1, 0], [3, 4]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="targets must index words"):
        C.caption_attribute_accuracy(captions, [0, 0, 0, 2], [3, 4])
