"""The course's character GPT, pretrained once on the pydoc corpus and kept in the model cache.

Chapter 04 trains this model itself, step by step; the chapters after it (06 evaluation,
07 fine-tuning) need a trained one to measure, watermark and adapt, and must not spend their time
budget retraining it. :func:`pretrained` trains it deterministically the first time (about half a
minute on 2 CPU cores, with a progress bar) and loads it from :mod:`genlab.model_cache` after
that, so every chapter and every run sees the same weights.

The data split is chapter 04's: the first 90 % of the character ids of
:func:`genlab.data.pydoc_corpus` train, the last 10 % are held out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import jax
import numpy as np
import optax
from flax import nnx

from genlab import data, gpt, model_cache, train

CONFIG = {"block_size": 64, "num_layers": 2, "num_heads": 4, "d_model": 128, "steps": 600,
          "batch": 32, "peak_lr": 6e-3, "warmup": 30, "weight_decay": 0.01, "train_fraction": 0.9,
          "init_seed": 0, "data_seed": 1}  # fmt: skip


@dataclass(frozen=True)
class Corpus:
    """The pydoc text as chapter 04 splits it.

    Attributes:
        text: the whole corpus (str).
        tokenizer: its :class:`genlab.data.CharTokenizer` (vocabulary = sorted characters).
        train_ids: int32 [L_train], the first 90 % of the ids.
        val_ids: int32 [L_val], the held-out rest.
    """

    text: str
    tokenizer: data.CharTokenizer
    train_ids: np.ndarray
    val_ids: np.ndarray


@lru_cache(maxsize=1)
def corpus() -> Corpus:
    """The character-level pydoc corpus and its train / held-out split."""
    text = data.pydoc_corpus()
    tokenizer = data.CharTokenizer.from_text(text)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int32)
    split = int(CONFIG["train_fraction"] * len(ids))
    return Corpus(text, tokenizer, ids[:split], ids[split:])


def config() -> gpt.GPTConfig:
    """The model's :class:`genlab.gpt.GPTConfig` (2 layers, 4 heads, width 128, context 64)."""
    keys = ("block_size", "num_layers", "num_heads", "d_model")
    return gpt.GPTConfig(vocab_size=corpus().tokenizer.vocab_size, **{k: CONFIG[k] for k in keys})


def _train(model: gpt.GPT) -> None:
    steps, batch, block = CONFIG["steps"], CONFIG["batch"], CONFIG["block_size"]
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, CONFIG["peak_lr"], warmup_steps=CONFIG["warmup"], decay_steps=steps,
        end_value=CONFIG["peak_lr"] / 10,
    )  # fmt: skip
    tx = optax.adamw(schedule, weight_decay=CONFIG["weight_decay"])
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    train_ids, key = corpus().train_ids, jax.random.key(CONFIG["data_seed"])

    def windows(i):  # (batch, block + 1) random windows of the training ids
        return data.batch_windows(jax.random.fold_in(key, i), train_ids, batch, block + 1)[0]

    train.fit(nnx.jit(gpt.train_step), model, optimizer, windows, steps, log_every=50,
              desc="pretraining the course's character GPT (once; then cached)")  # fmt: skip


def pretrained() -> gpt.GPT:
    """The trained character GPT (about 0.4M parameters): ``model(ids [B, T])`` gives logits
    [B, T, V] over :func:`corpus`'s vocabulary, for T <= 64. Trained on first use, then cached."""
    return model_cache.cached_model(
        "char-gpt",
        {**CONFIG, "vocab": corpus().tokenizer.vocab},
        lambda: gpt.GPT(config(), rngs=nnx.Rngs(CONFIG["init_seed"])),
        _train,
    )
