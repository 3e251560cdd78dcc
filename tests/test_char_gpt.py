"""The pretrained character GPT (genlab.char_gpt) that chapters 06 and 07 build on."""

from __future__ import annotations

import jax
import numpy as np

from genlab import char_gpt, data, gpt


def test_corpus_split_is_chapter_04s():
    c = char_gpt.corpus()
    ids = np.concatenate([c.train_ids, c.val_ids])
    assert c.tokenizer.decode(ids) == c.text
    assert len(c.train_ids) == int(0.9 * len(ids))


def test_pretrained_model_beats_the_unigram_baseline_and_loads_the_same_weights():
    c = char_gpt.corpus()
    model = char_gpt.pretrained()
    x, y = data.batch_windows(jax.random.key(5), c.val_ids, 64, char_gpt.CONFIG["block_size"])
    loss = float(gpt.lm_loss(model(x), y))
    # held-out cross-entropy well under the unigram entropy (3.25 nats): the model uses context
    assert loss < gpt.unigram_entropy(c.train_ids, c.tokenizer.vocab_size) - 1.5, loss
    again = char_gpt.pretrained()  # from the cache this time
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(model(x)))
