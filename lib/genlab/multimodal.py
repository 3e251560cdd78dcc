"""Text and images in one model: captioned digits and a CLIP-style contrastive model (chapter 08).

The data are scikit-learn's 8x8 digits (:func:`genlab.data.load_digits`) with captions written
from what the pixels show. Four attributes are measured on each image
(:func:`measure_attributes`): stroke thickness, slant, width and horizontal position; each becomes
a word by the quantiles of its digit class (:func:`attribute_words`), so "a thick seven" is thick
for a seven and every word is about as frequent in every class. Captions join the digit and some
attribute words in several phrasings and templates (:func:`captions`); one template is kept out
of training to test phrasings the model never saw. Optionally one attribute word is planted on
one digit in the training captions (``spurious``), to measure what such a shortcut costs.

Text is tokenised by the course's byte-level BPE (:mod:`genlab.bpe`) into fixed-length padded
arrays with a mask (:class:`CaptionTokenizer`). The model (:class:`ClipModel`, Radford et al.
2021) embeds an image with an MLP and a caption with a small transformer (blocks of
:mod:`genlab.attention` and :func:`genlab.gpt.pre_ln_block`, mean-pooled over the real tokens)
into one D-dimensional space, and learns a log-temperature. It trains with the symmetric InfoNCE
loss (:func:`infonce_loss`) and is judged by retrieval (:func:`recall_at_k`), zero-shot
classification (:func:`zero_shot_classify`), a linear probe, attribute retrieval and the
modality gap (:func:`modality_gap`, Liang et al. 2022). :func:`pretrained_clip` trains it once,
deterministically, and keeps it in :mod:`genlab.model_cache`.

Shape letters: B batch of pairs, N images or captions, K classes or prompts, D embedding width,
T tokens per caption, V vocabulary, D_t the text transformer's width; images are
[N, rows, cols] (8 x 8 for the digits).

Conventions: embeddings are rows; cosine similarities are dot products of L2-normalised rows
(a zero row stays zero instead of becoming NaN); in a square similarity matrix ``sims[i, j]``
compares image i with caption j, and pair i's match is entry ``(i, i)``.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field, replace

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import (
    attention,
    bpe,
    data,
    finetune,
    gpt,
    initializers,
    model_cache,
    nn,
    train,
    validate,
)

__all__ = [
    "ATTRIBUTES",
    "CLIP_SIZES",
    "CLIP_TRAINING",
    "DIGIT_NAMES",
    "HELD_OUT_TEMPLATE",
    "INK",
    "PHRASES",
    "TEMPLATES",
    "ZERO_SHOT_PROMPT",
    "CaptionData",
    "CaptionTokenizer",
    "ClipConfig",
    "ClipModel",
    "TextBlock",
    "TextEncoder",
    "attribute_accuracy",
    "attribute_words",
    "captions",
    "chance_infonce",
    "contrastive_loss",
    "contrastive_step",
    "embed",
    "embed_tokens",
    "evaluate",
    "gap_variance_fraction",
    "infonce_loss",
    "infonce_scale_grad",
    "linear_probe_accuracy",
    "make_optimizer",
    "measure_attributes",
    "modality_gap",
    "paired_digits",
    "pretrained_clip",
    "recall_at_k",
    "train_clip",
    "zero_shot_accuracy",
    "zero_shot_classify",
]

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Each attribute's words, from the lowest measure to the highest.
ATTRIBUTES = {
    "thickness": ("thin", "thick"),
    "slant": ("left-leaning", "upright", "right-leaning"),
    "width": ("narrow", "wide"),
    "position": ("left", "centred", "right"),
}
_ATTRIBUTE_OF = {word: name for name, words in ATTRIBUTES.items() for word in words}

INK = 0.25  # a pixel above this (of 1) counts as ink when runs of strokes are counted

# How each word is said: (adjectives before the digit's name, phrases after it). The first
# phrase after the name is the one the attribute prompts use (:func:`attribute_accuracy`).
PHRASES = {
    "thin": (("thin", "thin-stroked", "fine"),
             ("drawn with thin strokes", "in a fine line", "with thin lines")),
    "thick": (("thick", "bold", "heavy"),
              ("drawn with thick strokes", "in a bold line", "with heavy lines")),
    "left-leaning": (("left-leaning", "backward-slanted"),
                     ("leaning left", "tilted to the left")),
    "upright": (("upright", "straight"), ("standing upright", "not slanted")),
    "right-leaning": (("right-leaning", "forward-slanted"),
                      ("leaning right", "tilted to the right")),
    "narrow": (("narrow", "slim"), ("drawn narrow", "squeezed narrow")),
    "wide": (("wide", "broad"), ("drawn wide", "stretched wide")),
    "left": (("left-shifted", "off-centre left"), ("on the left", "shifted to the left")),
    "centred": (("centred", "central"), ("in the middle", "centred in the frame")),
    "right": (("right-shifted", "off-centre right"), ("on the right", "shifted to the right")),
}  # fmt: skip

# Templates: {name} "seven", {numeral} "7", {adjectives} "thick, upright" (a list), {and_adjectives}
# "thick and upright", {phrases} "drawn with thin strokes, leaning right", {first} one adjective
# and {rest} the other attributes as phrases. Every caption names its digit.
TEMPLATES = (
    "a {adjectives} {name}",
    "a {name} {phrases}",
    "the digit {numeral}, {and_adjectives}",
    "a {first} {name}, {rest}",
)
HELD_OUT_TEMPLATE = "a {name} that is {and_adjectives}"  # never in the training captions
ZERO_SHOT_PROMPT = "the digit {numeral}"


# --- attributes measured from pixels -------------------------------------------------------------


def _images(name: str, images) -> np.ndarray:
    """``images`` as float64 [N, rows, cols] (flat [N, 64] are 8x8 digits)."""
    if images is None or isinstance(images, (str, bytes, dict)):
        raise TypeError(f"{name} must be an array of images, got {type(images).__name__}")
    x = np.asarray(images)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.ndim == 2 and x.shape[1] == 64:
        x = x.reshape(-1, 8, 8)  # (N, 8, 8)
    if x.ndim != 3 or min(x.shape[1:]) < 2:
        raise ValueError(
            f"{name} must be images [N, rows, cols] or 8x8 digits [N, 64], got {x.shape}"
        )
    return x.astype(np.float64)


def measure_attributes(images) -> dict[str, np.ndarray]:
    """Four measures of each image's strokes, from its pixels (float64 [N] each).

    Args:
        images: [N, rows, cols] (or 8x8 digits [N, 64]), ink in [0, 1] (0 = background).

    Returns:
        dict with
        - ``"thickness"``: total ink over the number of runs of ink pixels (> ``INK``) along
          every row and every column. A stroke of length L and width w has L w ink and about
          L + w runs, so this is about w for a long stroke, whatever its length.
        - ``"slant"``: the shear ``-mu11 / mu02`` of the ink's central moments (x the column,
          y the row, rows counted downwards): positive when the top leans right.
        - ``"width"``: the ink-weighted standard deviation of the column (pixels): the digit's
          horizontal extent (scikit-learn's digits all span the full height).
        - ``"position"``: the ink centroid's column minus the image's centre column (pixels):
          negative left, positive right.
        An image without ink measures 0 everywhere.
    """
    x = _images("images", images)
    _, num_rows, num_cols = x.shape
    ink = x.sum(axis=(1, 2))  # (N,)
    safe = np.where(ink > 0, ink, 1.0)
    on = x > INK  # (N, rows, cols)
    row_runs = (on[:, :, 1:] & ~on[:, :, :-1]).sum(axis=(1, 2)) + on[:, :, 0].sum(axis=1)
    col_runs = (on[:, 1:, :] & ~on[:, :-1, :]).sum(axis=(1, 2)) + on[:, 0, :].sum(axis=1)
    runs = row_runs + col_runs  # (N,)
    rows = np.arange(num_rows, dtype=np.float64)
    cols = np.arange(num_cols, dtype=np.float64)
    cy = (x.sum(axis=2) * rows).sum(axis=1) / safe  # (N,)
    cx = (x.sum(axis=1) * cols).sum(axis=1) / safe  # (N,)
    dy = rows[None, :, None] - cy[:, None, None]  # (N, rows, 1)
    dx = cols[None, None, :] - cx[:, None, None]  # (N, 1, cols)
    mu11 = (x * dx * dy).sum(axis=(1, 2)) / safe
    mu02 = (x * dy * dy).sum(axis=(1, 2)) / safe
    mu20 = (x * dx * dx).sum(axis=(1, 2)) / safe
    has_ink = ink > 0
    return {
        "thickness": np.where(runs > 0, ink / np.maximum(runs, 1), 0.0),
        "slant": np.where(mu02 > 0, -mu11 / np.where(mu02 > 0, mu02, 1.0), 0.0),
        "width": np.sqrt(np.maximum(mu20, 0.0)),
        "position": np.where(has_ink, cx - (num_cols - 1) / 2, 0.0),
    }


def _labels(labels, n: int | None = None) -> np.ndarray:
    if labels is None or isinstance(labels, (str, bytes, dict)):
        raise TypeError(f"labels must be an integer array [N], got {type(labels).__name__}")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
        raise TypeError(f"labels must be an integer array [N], got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"labels must be digits 0..9, got {labels.min()}..{labels.max()}")
    if n is not None and len(labels) != n:
        raise ValueError(f"labels must have one entry per image ({n}), got {len(labels)}")
    return labels


def attribute_words(measures: dict, labels) -> dict[str, np.ndarray]:
    """Each measure turned into a word by the quantiles of its digit class.

    Args:
        measures: dict of float [N] arrays with the keys of ``ATTRIBUTES`` (as
            :func:`measure_attributes` returns them).
        labels: int [N], the digits.

    Returns:
        dict attribute -> str array [N]. An attribute with n words splits each class at its
        n-quantiles (the median for two words, the terciles for three): among the images of one
        digit, the lowest n-th gets the first word of ``ATTRIBUTES[attribute]``, and so on; a
        value equal to a cut point gets the higher word.
    """
    if not isinstance(measures, dict) or set(measures) != set(ATTRIBUTES):
        keys = sorted(measures) if isinstance(measures, dict) else type(measures).__name__
        raise ValueError(f"measures must be a dict with keys {sorted(ATTRIBUTES)}, got {keys}")
    n = len(np.asarray(measures["thickness"]))
    labels = _labels(labels, n)
    out = {}
    for name, words in ATTRIBUTES.items():
        values = np.asarray(measures[name], np.float64)
        if values.shape != (n,):
            raise ValueError(f"measures[{name!r}] must have shape [{n}], got {values.shape}")
        index = np.zeros(n, np.int64)
        for digit in np.unique(labels):
            members = labels == digit
            cuts = np.quantile(values[members], np.arange(1, len(words)) / len(words))
            index[members] = np.searchsorted(cuts, values[members], side="right")
        out[name] = np.asarray(words)[index]
    return out


# --- captions ------------------------------------------------------------------------------------


def _join(items: list[str]) -> str:
    """Items joined by commas and a final "and" (one item alone)."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


_A_BEFORE_VOWEL = re.compile(r"\ba (?=(?!one\b)[aeiou])")  # "a eight" -> "an eight", not "an one"


def _caption(rng: np.random.Generator, digit: int, said: list[str], template: str) -> str:
    adjectives = [PHRASES[w][0][rng.integers(len(PHRASES[w][0]))] for w in said]
    phrases = [PHRASES[w][1][rng.integers(len(PHRASES[w][1]))] for w in said]
    text = template.format(
        name=DIGIT_NAMES[digit],
        numeral=digit,
        adjectives=", ".join(adjectives),
        and_adjectives=_join(adjectives),
        phrases=_join(phrases),
        first=adjectives[0],
        rest=_join(phrases[1:]) if len(said) > 1 else phrases[0],
    )
    return _A_BEFORE_VOWEL.sub("an ", text)


def _check_spurious(spurious) -> tuple[str, int] | None:
    if spurious is None:
        return None
    if (
        not isinstance(spurious, tuple)
        or len(spurious) != 2
        or spurious[0] not in _ATTRIBUTE_OF
        or not isinstance(spurious[1], (int, np.integer))
        or not 0 <= spurious[1] <= 9
    ):
        raise ValueError(
            f"spurious must be None or (attribute word, digit), e.g. ('thick', 7), with a word of "
            f"{sorted(_ATTRIBUTE_OF)}, got {spurious!r}"
        )
    return spurious[0], int(spurious[1])


def captions(
    labels, words: dict, *, seed: int, templates=TEMPLATES, spurious=None, mention=(3, 4)
) -> list[str]:
    """One caption per image: its digit and some of its attribute words, in varied phrasing.

    Args:
        labels: int [N], the digits.
        words: dict attribute -> str [N], as :func:`attribute_words` returns.
        seed: int; the same arguments and seed give the same captions.
        templates: the sentence templates to draw from (default ``TEMPLATES``; pass
            ``(HELD_OUT_TEMPLATE,)`` for the held-out phrasing).
        spurious: None, or ``(word, digit)``: every image of ``digit`` is captioned with
            ``word`` (whatever it measures) and no other image's caption says ``word``, so in
            these captions the word and the digit always occur together.
        mention: (low, high): each caption says between low and high attributes (inclusive),
            chosen at random, in random order.

    Returns:
        list of N str, each naming its digit (as "seven" or "7").
    """
    n = len(np.asarray(words.get("thickness", []))) if isinstance(words, dict) else -1
    if not isinstance(words, dict) or set(words) != set(ATTRIBUTES):
        raise ValueError(f"words must be a dict with keys {sorted(ATTRIBUTES)}")
    labels = _labels(labels, n)
    seed = int(seed)
    if isinstance(templates, str) or not templates:
        raise TypeError("templates must be a non-empty sequence of template strings")
    low, high = mention
    if not 1 <= low <= high <= len(ATTRIBUTES):
        raise ValueError(f"mention must be (low, high) with 1 <= low <= high <= 4, got {mention}")
    planted = _check_spurious(spurious)
    rng = np.random.default_rng(seed)
    out = []
    for i, digit in enumerate(labels):
        said = {name: str(words[name][i]) for name in ATTRIBUTES}
        forced = None
        if planted is not None:
            word, planted_digit = planted
            attribute = _ATTRIBUTE_OF[word]
            if digit == planted_digit:
                said[attribute], forced = word, attribute
            elif said[attribute] == word:
                del said[attribute]
        names = [name for name in said if name != forced]
        count = int(rng.integers(low, high + 1)) - (forced is not None)
        chosen = list(rng.permutation(names))[: max(count, 0)]
        if forced is not None:
            chosen.insert(int(rng.integers(len(chosen) + 1)), forced)
        template = templates[int(rng.integers(len(templates)))]
        out.append(_caption(rng, int(digit), [said[name] for name in chosen], template))
    return out


# --- text: byte-level BPE into fixed-length arrays -----------------------------------------------


@dataclass(frozen=True)
class CaptionTokenizer:
    """Byte-level BPE (:mod:`genlab.bpe`, GPT-2's pre-tokeniser) into fixed-length arrays.

    Attributes:
        merges: the BPE merges {(a, b): new_id}.
        length: T, the padded length of every encoded caption.

    ``encode(texts)`` gives ``(tokens int32 [N, T], mask bool [N, T])``: a caption's ids from
    position 0, then the pad id 0 (a byte no caption holds) where ``mask`` is False. A caption
    longer than T tokens is a ValueError.
    """

    merges: dict = field(repr=False)
    length: int

    @classmethod
    def train(cls, texts: list[str], vocab_size: int, length: int) -> CaptionTokenizer:
        """Learn ``vocab_size - 256`` merges on ``texts`` (one per line)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of str")
        merges = bpe.train_bpe("\n".join(texts), vocab_size, pretokenize=True)
        return cls(merges, validate.positive_int("length", length))

    @property
    def vocab_size(self) -> int:
        """V: the 256 bytes and the merges."""
        return bpe.NUM_BYTES + len(self.merges)

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's BPE ids (unpadded), as :func:`genlab.bpe.bpe_encode` with pretokenize."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of str (wrap a single caption in a list)")
        known: dict[str, list[int]] = {}
        out = []
        for text in texts:
            ids = []
            for chunk in bpe.pretokenize(text):
                if chunk not in known:
                    known[chunk] = bpe.bpe_encode(chunk, self.merges)
                ids.extend(known[chunk])
            out.append(ids)
        return out

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens int32 [N, T], mask bool [N, T])`` of ``texts``."""
        all_ids = self.ids(texts)
        tokens = np.zeros((len(all_ids), self.length), np.int32)  # (N, T)
        mask = np.zeros((len(all_ids), self.length), bool)  # (N, T)
        for row, (text, ids) in enumerate(zip(texts, all_ids)):
            if len(ids) > self.length:
                raise ValueError(
                    f"caption {text!r} has {len(ids)} tokens, more than the length {self.length}"
                )
            tokens[row, : len(ids)] = ids
            mask[row, : len(ids)] = True
        return tokens, mask

    def decode(self, tokens, mask) -> list[str]:
        """The texts of ``tokens`` [N, T] where ``mask`` [N, T] is True."""
        tokens, mask = np.asarray(tokens), np.asarray(mask, bool)
        return [bpe.bpe_decode([int(t) for t in row[keep]], self.merges)
                for row, keep in zip(tokens, mask)]  # fmt: skip


# --- the paired data set -------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionData:
    """Captioned digits split into training and test pairs, and the tokenizer.

    Attributes:
        train_images, test_images: float32 [N, 8, 8] in [0, 1].
        train_labels, test_labels: int32 [N].
        train_words, test_words: dict attribute -> str [N] (what the pixels show).
        train_captions: ``variants`` lists of N captions of the training images (fresh draws of
            ``TEMPLATES``; with ``spurious``, the planted correlation holds in each).
        test_captions: N captions of the test images from ``TEMPLATES`` (never spurious).
        test_held_out: N captions of the test images from ``HELD_OUT_TEMPLATE`` only.
        tokenizer: BPE trained on the training captions.
        spurious: the planted ``(word, digit)`` or None.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    train_words: dict
    train_captions: list
    test_images: np.ndarray
    test_labels: np.ndarray
    test_words: dict
    test_captions: list
    test_held_out: list
    tokenizer: CaptionTokenizer
    spurious: tuple | None


def paired_digits(
    *,
    seed: int = 0,
    test_size: int = 360,
    variants: int = 8,
    vocab_size: int = 384,
    length: int = 32,
    spurious=None,
) -> CaptionData:
    """The digits with captions, split at random (``seed``) into training and ``test_size``
    test pairs; deterministic. Attribute words come from the quantiles of each class over all
    1,797 digits (:func:`attribute_words`); the BPE (``vocab_size`` ids, captions padded to
    ``length`` tokens) learns from the training captions only."""
    images, labels = data.load_digits(as_images=True)
    test_size = validate.positive_int("test_size", test_size)
    if test_size >= len(images):
        raise ValueError(f"test_size must be below {len(images)}, got {test_size}")
    variants = validate.positive_int("variants", variants)
    planted = _check_spurious(spurious)
    words = attribute_words(measure_attributes(images), labels)
    order = np.random.default_rng(seed).permutation(len(images))
    held, kept = order[:test_size], order[test_size:]
    train_words = {name: w[kept] for name, w in words.items()}
    test_words = {name: w[held] for name, w in words.items()}
    train_captions = [
        captions(labels[kept], train_words, seed=seed * 1000 + v + 1, spurious=planted)
        for v in range(variants)
    ]
    test_captions = captions(labels[held], test_words, seed=seed * 1000 + 999)
    held_out = captions(
        labels[held], test_words, seed=seed * 1000 + 998, templates=(HELD_OUT_TEMPLATE,)
    )
    corpus = [c for variant in train_captions for c in variant]
    tokenizer = CaptionTokenizer.train(corpus, vocab_size, length)
    return CaptionData(images[kept], labels[kept], train_words, train_captions,
                       images[held], labels[held], test_words, test_captions, held_out,
                       tokenizer, planted)  # fmt: skip


# --- the model, bottom-up ------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipConfig:
    """Sizes of a :class:`ClipModel`; the defaults are the chapter's CPU model (``CLIP_SIZES``;
    a second text block measured no better on the digits' captions and costs 1.8x the time).

    Attributes:
        vocab_size: V, token ids of the tokenizer (``CaptionTokenizer.vocab_size``).
        max_len: T, tokens per caption (learned positions).
        embed_dim: D, the width of the shared image-text space.
        image_hidden: width of the image MLP's two hidden layers.
        text_width: width of the text transformer's residual stream (its MLP is 4x wider).
        text_heads: attention heads (must divide ``text_width``).
        text_layers: transformer blocks.
        init_log_scale: the log-temperature's start, log(1 / 0.07) as in CLIP.
        max_log_scale: its cap, log(100) as in CLIP (logits at most 100 x cosine).
    """

    vocab_size: int = 384
    max_len: int = 32
    embed_dim: int = 32
    image_hidden: int = 256
    text_width: int = 64
    text_heads: int = 4
    text_layers: int = 1
    init_log_scale: float = math.log(1 / 0.07)
    max_log_scale: float = math.log(100.0)

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "embed_dim", "image_hidden", "text_width",
                     "text_heads", "text_layers"):  # fmt: skip
            validate.positive_int(f"ClipConfig.{name}", getattr(self, name))
        if self.text_width % self.text_heads:
            raise ValueError(
                f"ClipConfig.text_heads ({self.text_heads}) must divide text_width "
                f"({self.text_width})"
            )

    @classmethod
    def tiny(cls, **changes) -> ClipConfig:
        """A model for tests: D 16, image MLP 32 wide, one text block 32 wide with 2 heads."""
        small = dict(embed_dim=16, image_hidden=32, text_width=32, text_heads=2, text_layers=1)
        return replace(cls(**small), **changes)


class TextBlock(nnx.Module):
    """A pre-LN transformer block over padded tokens: :func:`genlab.gpt.pre_ln_block` with
    :class:`genlab.attention.MultiHeadSelfAttention` (no causal mask; padding keys masked)."""

    def __init__(self, width: int, num_heads: int, *, rngs: nnx.Rngs):
        self.ln_1 = initializers.layer_norm(width, rngs=rngs)
        self.attn = attention.MultiHeadSelfAttention(num_heads, width, rngs=rngs)
        self.ln_2 = initializers.layer_norm(width, rngs=rngs)
        self.mlp = nn.MLP((width, 4 * width, width), activation=jax.nn.gelu, rngs=rngs)

    def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
        """``x [B, T, D_t]``, ``key_mask`` bool ``[B, 1, 1, T]`` -> ``[B, T, D_t]``."""
        return gpt.pre_ln_block(x, self.ln_1, lambda h: self.attn(h, key_mask), self.ln_2,
                                self.mlp)  # fmt: skip


class TextEncoder(nnx.Module):
    """Tokens ``[B, T]`` and mask ``[B, T]`` -> embeddings ``[B, D]``: token and learned position
    embeddings, ``text_layers`` blocks attending to real tokens only, a final LayerNorm, the mean
    over real tokens, and a linear map to D (no bias, as CLIP's projection)."""

    def __init__(self, config: ClipConfig, *, rngs: nnx.Rngs):
        width = config.text_width
        self.embed = initializers.embed(config.vocab_size, width, rngs=rngs)
        self.positions = attention.LearnedPositions(config.max_len, width, rngs=rngs)
        self.blocks = nnx.List(
            [TextBlock(width, config.text_heads, rngs=rngs) for _ in range(config.text_layers)]
        )
        self.ln_f = initializers.layer_norm(width, rngs=rngs)
        self.project = initializers.linear(width, config.embed_dim, use_bias=False, rngs=rngs)

    def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        T = tokens.shape[-1]
        x = self.embed(tokens) + self.positions(T)  # (B, T, D_t)
        key_mask = mask[:, None, None, :]  # (B, 1, 1, T): every head and query
        for block in self.blocks:
            x = block(x, key_mask)  # (B, T, D_t)
        x = self.ln_f(x)
        weights = mask.astype(x.dtype)[..., None]  # (B, T, 1)
        pooled = (x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)  # (B, D_t)
        return self.project(pooled)  # (B, D)


class ClipModel(nnx.Module):
    """A CLIP-style pair of encoders into one D-dimensional space, and a learned temperature.

    ``encode_images(images [B, 8, 8] or [B, 64]) -> [B, D]`` (an MLP 64 -> hidden -> hidden ->
    D); ``encode_texts(tokens [B, T], mask [B, T]) -> [B, D]`` (:class:`TextEncoder`). The
    embeddings are not normalised (:func:`infonce_loss` does it). ``log_scale`` is a scalar
    ``nnx.Param``: logits are ``exp(log_scale)`` times cosine similarities.
    """

    def __init__(self, config: ClipConfig, *, rngs: nnx.Rngs):
        self.config = config
        hidden = config.image_hidden
        self.image_encoder = nn.MLP((64, hidden, hidden, config.embed_dim), rngs=rngs)
        self.text_encoder = TextEncoder(config, rngs=rngs)
        self.log_scale = nnx.Param(jnp.asarray(config.init_log_scale, jnp.float32))

    def encode_images(self, images: jax.Array) -> jax.Array:
        return self.image_encoder(images.reshape(images.shape[0], -1))  # (B, D)

    def encode_texts(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        return self.text_encoder(tokens, mask)  # (B, D)


# --- the exercises' references -------------------------------------------------------------------


def _pair(image_emb, text_emb) -> tuple[jax.Array, jax.Array]:
    image_emb = validate.float_array("image_emb", image_emb)
    text_emb = validate.float_array("text_emb", text_emb)
    for name, x in (("image_emb", image_emb), ("text_emb", text_emb)):
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"{name} must have shape [B, D] with B, D >= 1, got {x.shape}")
    if image_emb.shape != text_emb.shape:
        raise ValueError(
            "image_emb and text_emb must have the same shape [B, D] (pair i is row i of each), "
            f"got {image_emb.shape} and {text_emb.shape}"
        )
    return image_emb, text_emb


def _scalar(name: str, value) -> jax.Array:
    value = validate.float_array(name, value)
    if value.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {value.shape}")
    return value


def _normalise(x: jax.Array) -> jax.Array:
    """Rows scaled to unit length; a zero row stays zero (and its gradient finite)."""
    squared = jnp.sum(x * x, axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(squared, 1e-24))  # (..., D)


@jax.jit
def _infonce(image_emb, text_emb, log_scale):
    sims = _normalise(image_emb) @ _normalise(text_emb).T  # (B, B): image i vs caption j
    logits = jnp.exp(log_scale) * sims
    image_to_text = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=1)))
    text_to_image = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=0)))
    return 0.5 * (image_to_text + text_to_image)


def infonce_loss(image_emb, text_emb, log_scale) -> jax.Array:
    """The symmetric InfoNCE loss of CLIP on a batch of B matched pairs (nats).

    Args:
        image_emb: float [B, D]; row i is the image of pair i (any length; normalised here).
        text_emb: float [B, D]; row i is the caption of pair i.
        log_scale: float scalar; the logits are exp(log_scale) times the cosine similarities.

    Returns:
        float scalar: the mean of two cross-entropies over the B x B logits (image i against
        every caption, and caption i against every image), each averaged over the batch, with
        pair i's match as the correct class. Rows are L2-normalised before their dot products;
        a zero row has similarity 0 with everything (no NaN). Differentiable in all arguments.
    """
    image_emb, text_emb = _pair(image_emb, text_emb)
    return _infonce(image_emb, text_emb, _scalar("log_scale", log_scale))


@jax.jit
def _scale_grad(image_emb, text_emb, log_scale):
    sims = _normalise(image_emb) @ _normalise(text_emb).T  # (B, B)
    logits = jnp.exp(log_scale) * sims
    over_texts = jnp.sum(jax.nn.softmax(logits, axis=1) * sims, axis=1)  # (B,) E_row[sim]
    over_images = jnp.sum(jax.nn.softmax(logits, axis=0) * sims, axis=0)  # (B,) E_col[sim]
    expected = 0.5 * (jnp.mean(over_texts) + jnp.mean(over_images))
    return jnp.exp(log_scale) * (expected - jnp.mean(jnp.diagonal(sims)))


def infonce_scale_grad(image_emb, text_emb, log_scale) -> jax.Array:
    """The derivative of :func:`infonce_loss` with respect to ``log_scale``, in closed form.

    Args and conventions as :func:`infonce_loss`.

    Returns:
        float scalar, the derivative at the given embeddings and log-scale (negative where a
        larger scale lowers the loss, positive where it raises it).
    """
    image_emb, text_emb = _pair(image_emb, text_emb)
    return _scale_grad(image_emb, text_emb, _scalar("log_scale", log_scale))


def chance_infonce(batch_size: int) -> float:
    """:func:`infonce_loss` of a batch of ``batch_size`` pairs whose similarities are all equal
    (a model that has learned nothing, at any scale), in nats. float."""
    return math.log(validate.positive_int("batch_size", batch_size))


def _square_sims(sims) -> np.ndarray:
    sims = np.asarray(validate.float_array("sims", sims), np.float64)
    if sims.ndim != 2 or sims.shape[0] != sims.shape[1] or sims.shape[0] < 1:
        raise ValueError(f"sims must be a square matrix [N, N], got shape {sims.shape}")
    if not np.all(np.isfinite(sims)):
        raise ValueError("sims must be finite (it holds NaN or infinity)")
    return sims


def recall_at_k(sims, k: int) -> float:
    """The fraction of rows whose match is among their k highest similarities.

    Args:
        sims: float [N, N], finite; row i's match is column i (image i vs caption i; pass
            ``sims.T`` for caption-to-image retrieval).
        k: int, 1 <= k <= N.

    Returns:
        float in [0, 1]. Ties count against the match: row i is a hit when fewer than k other
        columns score at least as high as column i.
    """
    sims = _square_sims(sims)
    k = validate.positive_int("k", k)
    if k > sims.shape[0]:
        raise ValueError(f"k must be at most N = {sims.shape[0]}, got {k}")
    match = np.diagonal(sims)[:, None]  # (N, 1)
    rivals = (sims >= match).sum(axis=1) - 1  # (N,) other columns at least as high
    return float(np.mean(rivals < k))


def zero_shot_classify(image_emb, class_text_emb) -> jax.Array:
    """Each image's class: the prompt embedding with the highest cosine similarity.

    Args:
        image_emb: float [N, D].
        class_text_emb: float [K, D]; row c embeds the prompt of class c.

    Returns:
        int32 [N], class indices in 0..K-1 (ties go to the lowest index).
    """
    image_emb = validate.float_array("image_emb", image_emb)
    class_text_emb = validate.float_array("class_text_emb", class_text_emb)
    if image_emb.ndim != 2 or class_text_emb.ndim != 2 or class_text_emb.shape[0] < 1:
        raise ValueError(
            f"image_emb must be [N, D] and class_text_emb [K, D] with K >= 1, got "
            f"{image_emb.shape} and {class_text_emb.shape}"
        )
    if image_emb.shape[1] != class_text_emb.shape[1]:
        raise ValueError(
            f"image_emb and class_text_emb need the same D, got {image_emb.shape} and "
            f"{class_text_emb.shape}"
        )
    sims = _normalise(image_emb) @ _normalise(class_text_emb).T  # (N, K)
    return jnp.argmax(sims, axis=1).astype(jnp.int32)


def _two_sets(image_emb, text_emb) -> tuple[np.ndarray, np.ndarray]:
    image_emb = np.asarray(validate.float_array("image_emb", image_emb), np.float64)
    text_emb = np.asarray(validate.float_array("text_emb", text_emb), np.float64)
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            "image_emb [N, D] and text_emb [M, D] must be matrices with the same D, got "
            f"{image_emb.shape} and {text_emb.shape}"
        )
    if len(image_emb) < 1 or len(text_emb) < 1:
        raise ValueError("image_emb and text_emb need at least one row each")
    unit = [x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            for x in (image_emb, text_emb)]  # fmt: skip
    return unit[0], unit[1]


def modality_gap(image_emb, text_emb) -> float:
    """The distance between the centroids of the normalised image and text embeddings.

    Args:
        image_emb: float [N, D]; text_emb: float [M, D] (N and M may differ). Each row is
            L2-normalised first (Liang et al. 2022).

    Returns:
        float in [0, 2]: the Euclidean norm of (mean image row - mean text row).
    """
    images, texts = _two_sets(image_emb, text_emb)
    return float(np.linalg.norm(images.mean(axis=0) - texts.mean(axis=0)))


def gap_variance_fraction(image_emb, text_emb) -> float:
    """The share of the normalised embeddings' variance that lies along the modality gap.

    All N + M normalised rows together, centred on their common mean: the sum of their squared
    projections on the unit vector from the text centroid to the image centroid, over the sum of
    their squared norms. float in [0, 1]; 0 when the centroids coincide.
    """
    images, texts = _two_sets(image_emb, text_emb)
    gap = images.mean(axis=0) - texts.mean(axis=0)
    size = np.linalg.norm(gap)
    both = np.concatenate([images, texts])
    centred = both - both.mean(axis=0)  # (N + M, D)
    total = float(np.sum(centred**2))
    if size < 1e-12 or total == 0.0:
        return 0.0
    return float(np.sum((centred @ (gap / size)) ** 2) / total)


# --- training ------------------------------------------------------------------------------------


def contrastive_loss(model: ClipModel, images, tokens, mask) -> jax.Array:
    """:func:`infonce_loss` of ``model``'s embeddings of B pairs (images [B, 8, 8], tokens and
    mask [B, T]) at its log-scale capped at ``config.max_log_scale``."""
    scale = jnp.minimum(model.log_scale[...], model.config.max_log_scale)
    return infonce_loss(model.encode_images(images), model.encode_texts(tokens, mask), scale)


@nnx.jit
def contrastive_step(model: ClipModel, optimizer: nnx.Optimizer, images, tokens, mask):
    """One step of contrastive training; returns the loss before the update.

    ``images`` float [B, 8, 8] (or [B, 64]), ``tokens`` int [B, T], ``mask`` bool [B, T]: B
    matched pairs. The gradient of :func:`contrastive_loss` with respect to every ``nnx.Param``
    (the log-scale included) is applied with ``optimizer.update(model, grads)``; then the
    log-scale is clipped to [0, ``config.max_log_scale``], as CLIP clips its logit scale.
    """
    loss, grads = nnx.value_and_grad(contrastive_loss)(model, images, tokens, mask)
    optimizer.update(model, grads)
    model.log_scale[...] = jnp.clip(model.log_scale[...], 0.0, model.config.max_log_scale)
    return loss


def _decay_mask(params):
    """Weight decay on matrices only (not on biases, LayerNorm gains or the log-scale)."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(model: ClipModel, steps: int, lr: float, weight_decay: float):
    """AdamW with a cosine decay of the learning rate over ``steps`` (as CLIP), decaying weight
    matrices only."""
    schedule = optax.cosine_decay_schedule(lr, validate.positive_int("steps", steps))
    tx = optax.adamw(schedule, weight_decay=weight_decay, mask=_decay_mask)
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


def _batches(pairs: CaptionData, batch: int, seed: int):
    """Endless training batches ``(images [B, 8, 8], tokens [B, T], mask [B, T])``: epochs of a
    shuffled order of the training images, each with one of its caption variants at random."""
    encoded = [pairs.tokenizer.encode(variant) for variant in pairs.train_captions]
    tokens = np.stack([t for t, _ in encoded])  # (variants, N, T)
    masks = np.stack([m for _, m in encoded])  # (variants, N, T)
    rng = np.random.default_rng(seed)
    n = len(pairs.train_images)
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch + 1, batch):
            index = order[start : start + batch]  # (B,)
            variant = rng.integers(len(tokens), size=batch)  # (B,)
            yield pairs.train_images[index], tokens[variant, index], masks[variant, index]


@nnx.jit
def _batch_step(model: ClipModel, optimizer: nnx.Optimizer, batch):
    return contrastive_step(model, optimizer, *batch)


def train_clip(model: ClipModel, pairs: CaptionData, *, steps: int, batch: int, lr: float,
               weight_decay: float, seed: int, log_every: int = 50,
               progress: bool = True) -> train.History:  # fmt: skip
    """Train ``model`` in place on the training pairs of ``pairs`` with :func:`contrastive_step`
    and :func:`genlab.train.fit` (a progress bar; the loss, before each logged step's update,
    recorded every ``log_every`` steps and at the last).

    Each step takes ``batch`` distinct training images (epochs of a shuffled order) and, for
    each, one of its caption variants at random; deterministic given ``seed``.
    """
    steps = validate.positive_int("steps", steps)
    batch = validate.positive_int("batch", batch)
    if batch > len(pairs.train_images):
        raise ValueError(f"batch must be at most the {len(pairs.train_images)} training pairs, "
                         f"got {batch}")  # fmt: skip
    optimizer = make_optimizer(model, steps, lr, weight_decay)
    batches = _batches(pairs, batch, seed)
    return train.fit(_batch_step, model, optimizer, batches, steps, log_every=log_every,
                     desc="training the contrastive model", progress=progress)  # fmt: skip


# The chapter's pretrained model: its sizes (the rest of ClipConfig's defaults) and training.
CLIP_SIZES = {"embed_dim": 32, "image_hidden": 256, "text_width": 64, "text_heads": 4,
              "text_layers": 1}  # fmt: skip
CLIP_TRAINING = {"steps": 1200, "batch": 128, "lr": 2e-3, "weight_decay": 0.05, "seed": 0}


def pretrained_clip(spurious=None) -> tuple[ClipModel, CaptionData]:
    """The chapter's contrastive model, trained once (then loaded from the model cache), and the
    captioned digits it was trained on.

    Args:
        spurious: None, or ``(word, digit)`` planted in the training captions
            (:func:`captions`); a different model and data set for each choice.

    Returns:
        (model, pairs): a :class:`ClipModel` of ``CLIP_SIZES`` trained as ``CLIP_TRAINING``, and the
        :class:`CaptionData` of :func:`paired_digits` (``spurious`` as given). The model's
        ``train_seconds[...]`` holds the wall-clock seconds its training took (compilation
        included), measured when it ran.

    Measured (2026-12-08, 2 CPU cores shared with other jobs): training takes 63 s of CPU time
    (88 s wall at a load of 5); on the 360 test pairs recall@1 / @5 is 0.21 / 0.68 image to text
    and 0.21 / 0.69 text to image (0.25 / 0.63 and 0.23 / 0.61 on the held-out template),
    zero-shot accuracy 0.967, a linear probe on the image embeddings 0.978 (0.972 on raw
    pixels), attribute accuracy 0.79 thickness, 0.73 slant, 0.86 width, 0.70 position, modality
    gap 0.10. With ``spurious=("thick", 7)`` zero-shot falls to 0.925 and thickness to 0.71
    (0.50, chance, on sevens).
    """
    planted = _check_spurious(spurious)
    pairs = paired_digits(spurious=planted)
    config = ClipConfig(
        vocab_size=pairs.tokenizer.vocab_size, max_len=pairs.tokenizer.length, **CLIP_SIZES
    )

    def build():
        model = ClipModel(config, rngs=nnx.Rngs(CLIP_TRAINING["seed"]))
        model.train_seconds = finetune.TrainingSeconds(jnp.zeros((), jnp.float32))
        return model

    def fit(model):
        began = time.perf_counter()
        train_clip(model, pairs, **CLIP_TRAINING)
        model.train_seconds[...] = jnp.asarray(time.perf_counter() - began, jnp.float32)

    key = {"model": asdict(config), "training": CLIP_TRAINING,
           "spurious": None if planted is None else list(planted)}  # fmt: skip
    return model_cache.cached_model("clip-digits", key, build, fit), pairs


# --- evaluation ----------------------------------------------------------------------------------


@nnx.jit
def _embed_images(model: ClipModel, images):
    return _normalise(model.encode_images(images))  # (N, D)


@nnx.jit
def embed_tokens(model: ClipModel, tokens, mask) -> jax.Array:
    """Normalised text embeddings float32 [N, D] of ``tokens`` int [N, T] and ``mask`` bool
    [N, T] (compiled once per shape)."""
    return _normalise(model.encode_texts(tokens, mask))  # (N, D)


def embed(model: ClipModel, tokenizer: CaptionTokenizer, images=None, texts=None):
    """Normalised embeddings: of ``images`` [N, 8, 8] -> float32 [N, D], of ``texts`` (a list of
    N str) -> [N, D]; returns the one asked for, or ``(images, texts)`` when both are given."""
    out = []
    if images is not None:
        flat = _images("images", images).reshape(len(images), -1)  # (N, 64)
        out.append(_embed_images(model, jnp.asarray(flat, jnp.float32)))
    if texts is not None:
        tokens, mask = tokenizer.encode(texts)
        out.append(embed_tokens(model, jnp.asarray(tokens), jnp.asarray(mask)))
    if not out:
        raise ValueError("embed needs images, texts or both")
    return out[0] if len(out) == 1 else tuple(out)


def zero_shot_accuracy(model, tokenizer, images, labels, prompt: str = ZERO_SHOT_PROMPT) -> float:
    """The share of ``images`` whose :func:`zero_shot_classify` class, among the ten prompts
    ``prompt.format(name=..., numeral=...)``, is their label."""
    texts = [prompt.format(name=name, numeral=d) for d, name in enumerate(DIGIT_NAMES)]
    image_emb, class_emb = embed(model, tokenizer, images, texts)
    predicted = np.asarray(zero_shot_classify(image_emb, class_emb))
    return float(np.mean(predicted == _labels(labels, len(predicted))))


def attribute_accuracy(model, tokenizer, images, labels, words, attribute: str) -> float:
    """How often the right word of ``attribute`` wins: each image against the prompts "a {digit
    name} {first phrase of each word}" ("a seven drawn with thin strokes" vs "a seven drawn with
    thick strokes"), its own digit's; the share where its measured word's prompt is closest."""
    if attribute not in ATTRIBUTES:
        raise ValueError(f"attribute must be one of {sorted(ATTRIBUTES)}, got {attribute!r}")
    labels = _labels(labels)
    options = ATTRIBUTES[attribute]
    texts = [f"a {name} {PHRASES[w][1][0]}" for name in DIGIT_NAMES for w in options]
    image_emb, prompt_emb = embed(model, tokenizer, images, texts)
    prompt_emb = prompt_emb.reshape(10, len(options), -1)[labels]  # (N, words, D)
    chosen = np.asarray(jnp.argmax(jnp.einsum("nd,nwd->nw", image_emb, prompt_emb), axis=1))
    position = {word: i for i, word in enumerate(options)}
    truth = np.array([position[str(word)] for word in words[attribute]])  # (N,)
    return float(np.mean(chosen == truth))


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels) -> float:
    """Test accuracy of a logistic regression (scikit-learn, L2, C = 1) fitted on standardised
    training features [N, F] to their labels: what the features hold about the class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(np.asarray(train_features), np.asarray(train_labels))
    return float(probe.score(np.asarray(test_features), np.asarray(test_labels)))


def evaluate(model: ClipModel, pairs: CaptionData) -> dict[str, float]:
    """The chapter's numbers for a trained model on the test pairs of ``pairs``.

    Returns a dict of floats: ``recall@1_i2t``, ``recall@5_i2t``, ``recall@1_t2i``,
    ``recall@5_t2i`` (test captions; the same on the held-out template with the suffix
    ``_held_out``), ``zero_shot`` (prompts ``ZERO_SHOT_PROMPT``), ``linear_probe`` (on the
    normalised image embeddings), ``attribute_<name>`` for each attribute, ``modality_gap`` and
    ``gap_variance_fraction`` (test images and captions).
    """
    tokenizer = pairs.tokenizer
    images, texts = embed(model, tokenizer, pairs.test_images, pairs.test_captions)
    held_out = embed(model, tokenizer, texts=pairs.test_held_out)
    out = {}
    for suffix, captions_emb in (("", texts), ("_held_out", held_out)):
        sims = np.asarray(images @ captions_emb.T)  # (N, N)
        for k in (1, 5):
            out[f"recall@{k}_i2t{suffix}"] = recall_at_k(sims, k)
            out[f"recall@{k}_t2i{suffix}"] = recall_at_k(sims.T, k)
    out["zero_shot"] = zero_shot_accuracy(model, tokenizer, pairs.test_images, pairs.test_labels)
    train_features = embed(model, tokenizer, pairs.train_images)
    out["linear_probe"] = linear_probe_accuracy(train_features, pairs.train_labels, images,
                                                pairs.test_labels)  # fmt: skip
    for name in ATTRIBUTES:
        out[f"attribute_{name}"] = attribute_accuracy(
            model, tokenizer, pairs.test_images, pairs.test_labels, pairs.test_words, name
        )
    out["modality_gap"] = modality_gap(images, texts)
    out["gap_variance_fraction"] = gap_variance_fraction(images, texts)
    return out
