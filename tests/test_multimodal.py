"""genlab.multimodal: InfoNCE vs float64 NumPy and transformers' CLIP loss (stored fixture), its
scale derivative vs jax.grad, retrieval and zero-shot metrics on hand-made matrices, the modality
gap in closed form, attributes of synthetic images with known strokes, captions, the tokenizer,
the encoders' padding, and a tiny contrastive training run."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genlab import bpe, model_cache
from genlab import multimodal as mm

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "clip_infonce.json"


def numpy_infonce(image, text, log_scale):
    """CLIP's symmetric InfoNCE in float64 NumPy, written out independently."""
    image = np.asarray(image, np.float64)
    text = np.asarray(text, np.float64)
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    logits = math.exp(log_scale) * image @ text.T

    def cross_entropy_rows(z):
        top = z.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
        return float(np.mean(log_norm - np.diag(z)))

    return 0.5 * (cross_entropy_rows(logits) + cross_entropy_rows(logits.T))


def _embeddings(seed, B, D, noise=1.0):
    key_a, key_b = jax.random.split(jax.random.key(seed))
    image = jax.random.normal(key_a, (B, D))
    return image, image + noise * jax.random.normal(key_b, (B, D))


@pytest.fixture(scope="module")
def pairs():
    return mm.paired_digits()


# --- the loss ------------------------------------------------------------------------------------


# shapes shared with the fixture's cases and the other tests (each new shape compiles)
@pytest.mark.parametrize(("B", "D", "log_scale"), [(1, 3, 2.0), (6, 5, 0.0), (6, 5, 4.605),
                                                   (9, 5, 2.659), (9, 5, -1.5)])  # fmt: skip
def test_infonce_loss_matches_float64_numpy(B, D, log_scale):
    image, text = _embeddings(B * 31 + D, B, D)
    image = image * jnp.arange(1, B + 1)[:, None]  # rows of different lengths
    got = mm.infonce_loss(image, text, log_scale)
    assert got.shape == ()
    np.testing.assert_allclose(got, numpy_infonce(image, text, log_scale), rtol=1e-5, atol=1e-6)


def test_infonce_loss_matches_transformers_clip_fixture():
    cases = json.loads(FIXTURE.read_text())["cases"]
    assert len(cases) >= 5
    for case in cases:
        image = jnp.asarray(case["image_emb"], jnp.float32)
        text = jnp.asarray(case["text_emb"], jnp.float32)
        loss = mm.infonce_loss(image, text, case["log_scale"])
        np.testing.assert_allclose(loss, case["loss"], rtol=2e-5, atol=2e-6)
        grad = mm.infonce_scale_grad(image, text, case["log_scale"])
        np.testing.assert_allclose(grad, case["grad_log_scale"], rtol=1e-4, atol=2e-6)


def test_infonce_loss_is_symmetric_and_ignores_lengths_and_order():
    image, text = _embeddings(1, 9, 5)
    loss = mm.infonce_loss(image, text, 1.3)
    np.testing.assert_allclose(mm.infonce_loss(text, image, 1.3), loss, rtol=1e-6)
    np.testing.assert_allclose(mm.infonce_loss(3.0 * image, 0.01 * text, 1.3), loss, rtol=1e-5)
    order = np.array([3, 0, 6, 1, 8, 5, 2, 7, 4])
    np.testing.assert_allclose(mm.infonce_loss(image[order], text[order], 1.3), loss, rtol=1e-5)


def _rows_cross_entropy(z):
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - np.diag(z)))


def test_infonce_loss_differs_from_the_two_classic_bugs():
    text = np.random.default_rng(0).standard_normal((6, 8))
    image = text.copy()
    image[0], image[1] = text.sum(axis=0), text[2:].sum(axis=0)  # two hub images
    image = image * np.array([1.0, 4.0, 0.3, 2.0, 7.0, 1.0])[:, None]
    loss = float(mm.infonce_loss(image.astype(np.float32), text.astype(np.float32), 3.0))
    np.testing.assert_allclose(loss, numpy_infonce(image, text, 3.0), rtol=1e-5)
    # bug 1: similarities of the raw embeddings, normalised afterwards (each row of the logit
    # matrix divided by its norm) instead of normalising the embeddings first
    raw = image @ text.T
    after = math.exp(3.0) * raw / np.linalg.norm(raw, axis=1, keepdims=True)
    assert abs(0.5 * (_rows_cross_entropy(after) + _rows_cross_entropy(after.T)) - loss) > 0.1
    # bug 2: the labels of the image->text term reused for the text->image term without the
    # transpose (both cross-entropies over rows): the two directions are no longer both scored
    unit = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in (image, text)]
    logits = math.exp(3.0) * unit[0] @ unit[1].T
    assert abs(_rows_cross_entropy(logits) - loss) > 0.1
    assert abs(_rows_cross_entropy(logits.T) - loss) > 0.1


def test_infonce_loss_zero_row_stays_finite_with_finite_gradients():
    image, text = _embeddings(3, 6, 5)
    image = image.at[2].set(0.0)
    grads = jax.grad(mm.infonce_loss, argnums=(0, 1, 2))(image, text, jnp.float32(2.0))
    assert np.isfinite(float(mm.infonce_loss(image, text, 2.0)))
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_infonce_loss_rejects_bad_inputs():
    image, text = _embeddings(4, 6, 5)
    with pytest.raises(ValueError, match="same shape"):
        mm.infonce_loss(image, text[:3], 1.0)
    with pytest.raises(ValueError, match=r"image_emb must have shape \[B, D\]"):
        mm.infonce_loss(image[0], text[0], 1.0)
    with pytest.raises(ValueError, match="log_scale must be a scalar"):
        mm.infonce_loss(image, text, jnp.ones(4))
    with pytest.raises(TypeError, match="text_emb"):
        mm.infonce_loss(image, "captions", 1.0)


@pytest.mark.parametrize("log_scale", [-2.0, 0.0, 2.659, 4.605])
def test_infonce_scale_grad_matches_jax_grad(log_scale):
    image, text = _embeddings(5, 9, 5, noise=1.5)
    want = jax.grad(mm.infonce_loss, argnums=2)(image, text, jnp.float32(log_scale))
    got = mm.infonce_scale_grad(image, text, log_scale)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_infonce_scale_grad_sign_follows_the_alignment():
    image, _ = _embeddings(6, 6, 5)
    # matched pairs identical: a larger scale always lowers the loss
    assert float(mm.infonce_scale_grad(image, image, 1.0)) < 0
    # every caption matched to the wrong image (a cyclic shift): a larger scale raises it
    assert float(mm.infonce_scale_grad(image, jnp.roll(image, 1, axis=0), 1.0)) > 0


@pytest.mark.parametrize("B", [1, 2, 7, 64])
def test_chance_infonce_equals_the_loss_when_all_similarities_are_equal(B):
    same = jnp.tile(jnp.asarray([[0.3, -1.2, 2.0]]), (B, 1))
    for log_scale in (0.0, 4.605):
        np.testing.assert_allclose(mm.infonce_loss(same, same, log_scale), mm.chance_infonce(B),
                                   rtol=1e-5, atol=1e-6)  # fmt: skip
    assert mm.chance_infonce(B) == pytest.approx(math.log(B))


def test_chance_infonce_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        mm.chance_infonce(0)
    with pytest.raises(TypeError, match="batch_size"):
        mm.chance_infonce(2.5)


# --- retrieval, zero-shot, the gap ---------------------------------------------------------------


def test_recall_at_k_hand_made_matrix_both_directions():
    sims = np.array([[0.9, 0.1, 0.0],
                     [0.8, 0.5, 0.2],
                     [0.0, 0.3, 0.1]])  # fmt: skip
    # image -> text (rows): row 0 ranks its match first, rows 1 and 2 second
    assert mm.recall_at_k(sims, 1) == pytest.approx(1 / 3)
    assert mm.recall_at_k(sims, 2) == 1.0
    # text -> image (columns): columns 0 and 1 rank their match first, column 2 second
    assert mm.recall_at_k(sims.T, 1) == pytest.approx(2 / 3)
    assert mm.recall_at_k(sims.T, 3) == 1.0


def test_recall_at_k_counts_ties_as_misses():
    assert mm.recall_at_k(np.ones((4, 4)), 1) == 0.0
    assert mm.recall_at_k(np.ones((4, 4)), 3) == 0.0
    assert mm.recall_at_k(np.ones((4, 4)), 4) == 1.0
    tied = np.array([[1.0, 1.0], [0.0, 1.0]])
    assert mm.recall_at_k(tied, 1) == 0.5
    assert mm.recall_at_k(tied, 2) == 1.0


def test_recall_at_k_matches_ranks_from_argsort():
    sims = np.array(jax.random.normal(jax.random.key(7), (40, 40)))
    sims[np.arange(40), np.arange(40)] += 1.0
    for matrix in (sims, sims.T):
        ranks = np.argsort(-matrix, axis=1).argsort(axis=1)[np.arange(40), np.arange(40)]
        for k in (1, 5, 40):
            assert mm.recall_at_k(matrix, k) == pytest.approx(np.mean(ranks < k))


def test_recall_at_k_rejects_bad_inputs():
    with pytest.raises(ValueError, match="square"):
        mm.recall_at_k(np.ones((3, 4)), 1)
    with pytest.raises(ValueError, match="k must be at most"):
        mm.recall_at_k(np.eye(3), 4)
    with pytest.raises(ValueError, match="finite"):
        mm.recall_at_k(np.array([[np.nan, 0.0], [0.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        mm.recall_at_k(np.eye(3), 0)


def test_zero_shot_classify_uses_cosine_not_dot_products():
    prompts = np.array([[1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])  # prompt 2 is long
    images = np.array([[2.0, 0.1], [0.1, 3.0], [1.0, 1.1], [-1.0, -0.2]])
    got = np.asarray(mm.zero_shot_classify(images, prompts))
    unit = prompts / np.linalg.norm(prompts, axis=1, keepdims=True)
    want = [int(np.argmax([u @ x / np.linalg.norm(x) for u in unit])) for x in images]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, [0, 1, 2, 1])  # dot products would say 2 for all
    assert got.dtype == np.int32
    with pytest.raises(ValueError, match="same D"):
        mm.zero_shot_classify(images, np.ones((3, 3)))


def test_modality_gap_and_variance_fraction_closed_form():
    a, b = 2.0, 1.0
    r = math.hypot(a, b)
    e = np.eye(3)
    # images at a e0 +- b e2, texts at a e1 +- b e2 (scaled: normalisation must not matter)
    images = 5.0 * np.stack([a * e[0] + b * e[2], a * e[0] - b * e[2]])
    texts = np.stack([a * e[1] + b * e[2], a * e[1] - b * e[2], a * e[1] + b * e[2],
                      a * e[1] - b * e[2]])  # fmt: skip
    assert mm.modality_gap(images, texts) == pytest.approx(math.sqrt(2) * a / r)
    # between the modalities: N M / (N + M) times the squared gap, along the gap only;
    # within: every point is b / r off its centroid along e2
    between = 2 * 4 / 6 * 2 * a**2 / r**2
    want = between / (between + 6 * b**2 / r**2)
    assert mm.gap_variance_fraction(images, texts) == pytest.approx(want)
    # all images at one point and all texts at another: every bit of variance is the gap
    assert mm.modality_gap(e[:1], 3 * e[1:2]) == pytest.approx(math.sqrt(2))
    assert mm.gap_variance_fraction(np.tile(e[:1], (3, 1)), e[1:2]) == pytest.approx(1.0)
    # one modality's cloud twice: no gap
    assert mm.modality_gap(images, images[::-1]) == pytest.approx(0.0, abs=1e-12)
    assert mm.gap_variance_fraction(images, images) == 0.0
    with pytest.raises(ValueError, match="same D"):
        mm.modality_gap(images, np.ones((2, 4)))


# --- attributes, captions, tokens ----------------------------------------------------------------


def _canvas():
    return np.zeros((8, 8), np.float32)


def test_measure_attributes_thickness_of_thin_and_thick_bars():
    thin, thick = _canvas(), _canvas()
    thin[1:7, 3] = 1.0  # 6 x 1: 6 ink over 6 row runs + 1 column run
    thick[1:7, 2:5] = 1.0  # 6 x 3: 18 ink over 6 + 3 runs
    got = mm.measure_attributes(np.stack([thin, thick]))["thickness"]
    np.testing.assert_allclose(got, [6 / 7, 18 / 9])


def test_measure_attributes_slant_of_sheared_bars():
    right, left, upright = _canvas(), _canvas(), _canvas()
    rows = np.arange(8)
    right[rows, 7 - rows] = 1.0  # top at the right: leans right, one column per row
    left[rows, rows] = 1.0
    upright[:, 4] = 1.0
    half = _canvas()
    half[rows, 5 - rows // 2] = 1.0  # half a column per row, in steps
    got = mm.measure_attributes(np.stack([right, left, upright, half]))["slant"]
    np.testing.assert_allclose(got[:3], [1.0, -1.0, 0.0], atol=1e-12)
    assert 0.4 < got[3] < 0.6


def test_measure_attributes_position_and_width_of_blobs():
    left, right, narrow, wide = _canvas(), _canvas(), _canvas(), _canvas()
    left[2:6, 0:2] = 1.0
    right[2:6, 6:8] = 1.0
    narrow[:, 3:5] = 1.0
    wide[:, 1] = wide[:, 6] = 1.0
    got = mm.measure_attributes(np.stack([left, right, narrow, wide]).reshape(4, 64))
    np.testing.assert_allclose(got["position"], [-3.0, 3.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(got["width"][2:], [0.5, 2.5])
    empty = mm.measure_attributes(np.zeros((1, 8, 8)))
    assert all(value[0] == 0.0 for value in empty.values())


def test_measure_attributes_rejects_bad_images():
    with pytest.raises(ValueError, match="images"):
        mm.measure_attributes(np.zeros((3, 10)))
    with pytest.raises(TypeError, match="images"):
        mm.measure_attributes("digits")


def test_attribute_words_split_each_class_at_its_quantiles():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    values = np.array([4.0, 1.0, 3.0, 2.0, 60.0, 10.0, 30.0, 50.0, 20.0, 40.0])
    measures = {"thickness": values, "slant": values, "width": -values, "position": values}
    words = mm.attribute_words(measures, labels)
    thickness = [
        "thick",
        "thin",
        "thick",
        "thin",
        "thick",
        "thin",
        "thin",
        "thick",
        "thin",
        "thick",
    ]
    assert list(words["thickness"]) == thickness
    assert list(words["width"][:4]) == ["narrow", "wide", "narrow", "wide"]
    assert list(words["position"][4:]) == ["right", "left", "centred", "right", "left",
                                           "centred"]  # fmt: skip
    with pytest.raises(ValueError, match="keys"):
        mm.attribute_words({"thickness": values}, labels)
    with pytest.raises(ValueError, match="one entry per image"):
        mm.attribute_words(measures, labels[:3])


def test_paired_digits_split_is_disjoint_and_words_are_balanced(pairs):
    assert len(pairs.test_images) == 360 and len(pairs.train_images) == 1797 - 360
    train_rows = {row.tobytes() for row in pairs.train_images}
    assert sum(row.tobytes() in train_rows for row in pairs.test_images) <= 2  # duplicates only
    for name, options in mm.ATTRIBUTES.items():
        words = np.concatenate([pairs.train_words[name], pairs.test_words[name]])
        labels = np.concatenate([pairs.train_labels, pairs.test_labels])
        for digit in range(10):
            counts = [np.sum(words[labels == digit] == w) for w in options]
            # ties at a cut point go up: a few percent of a class at most
            assert max(counts) - min(counts) <= 0.05 * sum(counts), (name, digit, counts)


_SAID = {
    word: [re.compile(rf"\b{re.escape(p)}\b") for p in adjectives + phrases]
    for word, (adjectives, phrases) in mm.PHRASES.items()
}


def _words_said(caption: str) -> set[str]:
    return {word for word, patterns in _SAID.items() if any(p.search(caption) for p in patterns)}


def _names_digit(caption: str, digit: int) -> bool:
    return bool(re.search(rf"\b({mm.DIGIT_NAMES[digit]}|{digit})\b", caption))


def test_captions_are_deterministic_truthful_and_name_their_digit(pairs):
    labels, words = pairs.test_labels[:60], {k: v[:60] for k, v in pairs.test_words.items()}
    first = mm.captions(labels, words, seed=3)
    assert first == mm.captions(labels, words, seed=3)
    assert first != mm.captions(labels, words, seed=4)
    for i, (caption, digit) in enumerate(zip(first, labels)):
        assert _names_digit(caption, digit), caption
        others = [d for d in range(10) if d != digit]
        assert not any(_names_digit(caption, d) for d in others), caption
        said = _words_said(caption)
        truth = {str(words[name][i]) for name in mm.ATTRIBUTES}
        assert 3 <= len(said) <= 4 and said <= truth, (caption, said, truth)
        assert not re.search(r"\ba [aeiu]", caption), caption  # "an eight", "an upright ..."


def test_captions_spurious_word_always_with_its_digit(pairs):
    spurious = pairs.train_captions  # the default data: no planted word
    thick = [_words_said(c) & {"thick"} for c in spurious[0]]
    sevens = pairs.train_labels == 7
    assert any(thick[i] for i in np.flatnonzero(~sevens))  # thick non-sevens exist without it
    planted = mm.captions(pairs.train_labels, pairs.train_words, seed=1, spurious=("thick", 7))
    for caption, digit in zip(planted, pairs.train_labels):
        assert ("thick" in _words_said(caption)) == (digit == 7), caption
        assert _names_digit(caption, digit)
    with pytest.raises(ValueError, match="spurious"):
        mm.captions(pairs.train_labels, pairs.train_words, seed=1, spurious=("purple", 7))


def test_paired_digits_rejects_bad_sizes_and_spurious():
    with pytest.raises(ValueError, match="test_size"):
        mm.paired_digits(test_size=1797)
    with pytest.raises(ValueError, match="spurious"):
        mm.paired_digits(spurious=["thick", 7])


def test_paired_digits_holds_out_a_template(pairs):
    assert all(" that is " in c for c in pairs.test_held_out)
    assert not any(" that is " in c for variant in pairs.train_captions for c in variant)
    assert all(_names_digit(c, d) for c, d in zip(pairs.test_held_out, pairs.test_labels))


def test_caption_tokenizer_pads_to_fixed_length_and_round_trips(pairs):
    tokenizer = pairs.tokenizer
    texts = pairs.test_captions[:5] + pairs.test_held_out[:2] + ["the digit 7"]
    tokens, mask = tokenizer.encode(texts)
    assert tokens.shape == mask.shape == (8, tokenizer.length) and tokens.dtype == np.int32
    lengths = mask.sum(axis=1)
    np.testing.assert_array_equal(mask, np.arange(tokenizer.length) < lengths[:, None])
    assert np.all(tokens[~mask] == 0) and np.all(tokens < tokenizer.vocab_size)
    assert tokenizer.decode(tokens, mask) == texts
    for text, row, keep in zip(texts, tokens, mask):  # the ids of genlab.bpe's own encoder
        assert list(row[keep]) == bpe.bpe_encode(text, tokenizer.merges, pretokenize=True)
    assert tokenizer.vocab_size == 256 + len(tokenizer.merges) == 384
    with pytest.raises(ValueError, match="more than the length"):
        tokenizer.encode(["a seven " * 40])
    with pytest.raises(TypeError, match="list of str"):
        tokenizer.encode("a seven")


# --- the model and its training ------------------------------------------------------------------
# One tiny model configuration and one batch size throughout, so the steps and embedding
# functions compile once for the whole file.

BATCH = 32


@pytest.fixture(scope="module")
def tiny_config(pairs):
    return mm.ClipConfig.tiny(vocab_size=pairs.tokenizer.vocab_size)


@pytest.fixture(scope="module")
def trained(pairs, tiny_config):
    model = mm.ClipModel(tiny_config, rngs=nnx.Rngs(1))
    history = mm.train_clip(model, pairs, steps=200, batch=BATCH, lr=3e-3, weight_decay=0.0,
                            seed=0, log_every=1, progress=False)  # fmt: skip
    return model, history


def test_embed_tokens_ignores_padding_and_encode_images_takes_both_layouts(pairs, tiny_config):
    model = mm.ClipModel(tiny_config, rngs=nnx.Rngs(0))
    tokens, mask = pairs.tokenizer.encode(pairs.test_captions[:BATCH])
    padded_with_17 = np.where(mask, tokens, 17)  # other ids where the mask is False
    clean = mm.embed_tokens(model, tokens, mask)
    assert clean.shape == (BATCH, tiny_config.embed_dim)
    np.testing.assert_allclose(mm.embed_tokens(model, padded_with_17, mask), clean, atol=1e-6)
    # the same ids read as real tokens change the embedding: the mask is what hides them
    shown = mm.embed_tokens(model, padded_with_17, np.ones_like(mask))
    assert np.min(np.sum(np.asarray(shown) * np.asarray(clean), axis=1)) < 0.999
    np.testing.assert_allclose(np.linalg.norm(clean, axis=1), 1.0, rtol=1e-5)
    flat = mm.embed(model, pairs.tokenizer, pairs.test_images[:BATCH].reshape(BATCH, 64))
    np.testing.assert_array_equal(flat, mm.embed(model, pairs.tokenizer, pairs.test_images[:BATCH]))
    assert float(model.log_scale[...]) == pytest.approx(math.log(1 / 0.07))


def test_clip_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="text_heads"):
        mm.ClipConfig(text_width=30, text_heads=4)
    with pytest.raises(ValueError, match="embed_dim"):
        mm.ClipConfig(embed_dim=0)


def test_contrastive_step_tiny_training_falls_below_chance(trained):
    model, history = trained
    losses = history["loss"]  # every step, before its update
    chance = mm.chance_infonce(BATCH)
    assert len(losses) == 200 and losses[0] > 0.9 * chance
    assert np.mean(losses[-20:]) < 0.65 * chance, losses[-20:]
    assert 0.0 <= float(model.log_scale[...]) <= math.log(100.0)


def test_embed_trained_encoders_retrieve_held_out_pairs(pairs, trained):
    model, _ = trained
    images, texts = mm.embed(model, pairs.tokenizer, pairs.test_images[:BATCH],
                             pairs.test_captions[:BATCH])  # fmt: skip
    sims = np.asarray(images @ texts.T)
    chance = 5 / BATCH
    assert mm.recall_at_k(sims, 5) > 2 * chance and mm.recall_at_k(sims.T, 5) > 2 * chance


def test_zero_shot_and_attribute_accuracy_match_prompts_scored_by_hand(pairs, trained):
    model, _ = trained
    images, labels = pairs.test_images[:BATCH], pairs.test_labels[:BATCH]
    image_emb = np.asarray(mm.embed(model, pairs.tokenizer, images))
    prompts = [f"the digit {d}" for d in range(10)]
    prompt_emb = np.asarray(mm.embed(model, pairs.tokenizer, texts=prompts))
    want = np.mean(np.argmax(image_emb @ prompt_emb.T, axis=1) == labels)
    got = mm.zero_shot_accuracy(model, pairs.tokenizer, images, labels)
    assert got == pytest.approx(want)
    # thickness: each image against "a <its digit> drawn with thin / thick strokes"
    hits = []
    for x, digit, word in zip(image_emb, labels, pairs.test_words["thickness"][:BATCH]):
        name = mm.DIGIT_NAMES[digit]
        texts = [f"a {name} drawn with thin strokes", f"a {name} drawn with thick strokes"]
        options = np.asarray(mm.embed(model, pairs.tokenizer, texts=texts))
        hits.append(["thin", "thick"][int(np.argmax(options @ x))] == word)
    words = {k: v[:BATCH] for k, v in pairs.test_words.items()}
    got = mm.attribute_accuracy(model, pairs.tokenizer, images, labels, words, "thickness")
    assert got == pytest.approx(np.mean(hits))
    with pytest.raises(ValueError, match="attribute"):
        mm.attribute_accuracy(model, pairs.tokenizer, images, labels, words, "colour")


def test_evaluate_reports_every_number_consistently(pairs, trained):
    model, _ = trained
    small = dataclasses.replace(
        pairs,
        train_images=pairs.train_images[: 2 * BATCH],
        train_labels=pairs.train_labels[: 2 * BATCH],
        test_images=pairs.test_images[:BATCH],
        test_labels=pairs.test_labels[:BATCH],
        test_words={k: v[:BATCH] for k, v in pairs.test_words.items()},
        test_captions=pairs.test_captions[:BATCH],
        test_held_out=pairs.test_held_out[:BATCH],
    )
    report = mm.evaluate(model, small)
    names = [
        f"recall@{k}_{d}{s}" for k in (1, 5) for d in ("i2t", "t2i") for s in ("", "_held_out")
    ]
    names += ["zero_shot", "linear_probe", "modality_gap", "gap_variance_fraction"]
    names += [f"attribute_{a}" for a in mm.ATTRIBUTES]
    assert sorted(report) == sorted(names)
    for name in names:
        assert 0.0 <= report[name] <= (2.0 if name == "modality_gap" else 1.0), name
    for direction in ("i2t", "t2i", "i2t_held_out", "t2i_held_out"):
        assert report[f"recall@5_{direction}"] >= report[f"recall@1_{direction}"]
    images, texts = mm.embed(model, pairs.tokenizer, small.test_images, small.test_captions)
    assert report["recall@1_t2i"] == mm.recall_at_k(np.asarray(texts @ images.T), 1)
    assert report["modality_gap"] == pytest.approx(mm.modality_gap(images, texts))
    zero_shot = mm.zero_shot_accuracy(model, pairs.tokenizer, small.test_images, small.test_labels)
    assert report["zero_shot"] == zero_shot


def test_contrastive_step_clips_the_log_scale_and_caps_it_in_the_loss(pairs, tiny_config):
    model = mm.ClipModel(tiny_config, rngs=nnx.Rngs(2))
    model.log_scale[...] = jnp.float32(7.0)  # above CLIP's cap log(100)
    images, tokens, mask = next(mm._batches(pairs, BATCH, seed=5))  # train_clip's first batch
    image_emb = mm.embed(model, pairs.tokenizer, images)
    text_emb = mm.embed_tokens(model, tokens, mask)
    history = mm.train_clip(model, pairs, steps=1, batch=BATCH, lr=1e-3, weight_decay=0.0,
                            seed=5, progress=False)  # fmt: skip
    capped = numpy_infonce(image_emb, text_emb, math.log(100.0))
    np.testing.assert_allclose(history["loss"], [capped], rtol=1e-4)
    assert float(model.log_scale[...]) == pytest.approx(math.log(100.0))


def test_train_clip_rejects_a_batch_larger_than_the_data(pairs, tiny_config):
    model = mm.ClipModel(tiny_config, rngs=nnx.Rngs(3))
    with pytest.raises(ValueError, match="batch"):
        mm.train_clip(model, pairs, steps=1, batch=5000, lr=1e-3, weight_decay=0.0, seed=0)


def test_linear_probe_accuracy_separable_and_random_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    separable = np.eye(4)[labels] * 3 + 0.1 * rng.standard_normal((120, 4))
    assert mm.linear_probe_accuracy(separable[::2], labels[::2], separable[1::2],
                                    labels[1::2]) == 1.0  # fmt: skip
    noise = rng.standard_normal((120, 4))
    assert mm.linear_probe_accuracy(noise[::2], labels[::2], noise[1::2], labels[1::2]) < 0.6


def test_pretrained_clip_trains_once_then_loads(monkeypatch, tmp_path, tiny_config):
    # the training itself is train_clip (tested above); here a stand-in that marks the weights
    calls = []

    def mark_weights(model, pairs, **training):
        calls.append(training)
        model.log_scale[...] = jnp.float32(1.25 + len(calls))

    monkeypatch.setattr(mm, "train_clip", mark_weights)
    monkeypatch.setattr(mm, "CLIP_SIZES", {k: getattr(tiny_config, k) for k in mm.CLIP_SIZES})
    monkeypatch.setenv(model_cache.CACHE_ENV, str(tmp_path))
    model, pairs = mm.pretrained_clip()
    assert calls == [mm.CLIP_TRAINING] and float(model.log_scale[...]) == 2.25
    assert float(model.train_seconds[...]) > 0
    assert model.config == tiny_config and pairs.spurious is None
    again, _ = mm.pretrained_clip()
    assert len(calls) == 1 and float(again.log_scale[...]) == 2.25  # loaded, not trained
    trained_state, loaded_state = (
        nnx.to_flat_state(nnx.state(m, nnx.Param)) for m in (model, again)
    )
    for (path, saved), (_, loaded) in zip(trained_state, loaded_state):
        np.testing.assert_array_equal(loaded.get_value(), saved.get_value(), err_msg=str(path))
    planted, planted_pairs = mm.pretrained_clip(spurious=("thick", 7))
    assert len(calls) == 2 and float(planted.log_scale[...]) == 3.25  # a model of its own
    assert planted_pairs.spurious == ("thick", 7)
    assert len(list(tmp_path.glob("clip-digits-*.npz"))) == 2
    with pytest.raises(ValueError, match="spurious"):
        mm.pretrained_clip(spurious=("thick", 12))
