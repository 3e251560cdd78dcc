"""genlab.watermark's detector arithmetic against transformers' ``WatermarkDetector`` and
``WatermarkLogitsProcessor`` on the same green lists (fixture ``fixtures/hf_watermark.npz``, made
offline by ``fixtures/make_watermark_fixtures.py``; this test needs neither torch nor
transformers).

The seeding differs and is not compared: transformers ("lefthash", context width 1) draws the
green list after token p with ``torch.randperm(V)`` from a generator seeded with
``hash_key * p``; genlab uses the first ``int(gamma * V)`` entries of
``jax.random.permutation(jax.random.fold_in(key, p), V)``. So the fixture records transformers'
green lists themselves (a [V, V] table) and the test feeds those green decisions to genlab's
formulas: green counts, the number of scored tokens (with and without repeated pairs), the green
fraction, the z-score, the boosted logits, and the normal-tail p-value.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.stats

from genlab import watermark

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "hf_watermark.npz"


@pytest.fixture(scope="module")
def hf():
    with np.load(FIXTURE, allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


def test_fixture_green_lists_have_the_same_size_as_ours(hf):
    table, gamma = hf["green_table"], float(hf["gamma"])
    vocab = table.shape[0]
    # transformers: int(V * ratio)
    np.testing.assert_array_equal(table.sum(axis=1), int(gamma * vocab))
    ours = np.asarray(watermark.green_table(jax.random.key(0), vocab, gamma))
    np.testing.assert_array_equal(ours.sum(axis=1), table.sum(axis=1))


def test_watermark_logits_match_the_processor(hf):
    green = hf["green_table"][hf["prev"]]  # (R, V): the list after each row's previous token
    ours = np.asarray(watermark.watermark_logits(hf["logits"], green, float(hf["delta"])))
    np.testing.assert_allclose(ours, hf["boosted"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("suffix, ignore", [("all", False), ("distinct", True)])
def test_z_scores_match_the_detector_on_the_same_green_lists(hf, suffix, ignore):
    tokens, table, gamma = hf["tokens"], hf["green_table"], float(hf["gamma"])
    z = watermark.table_z_scores(tokens, table, gamma, ignore_repeated=ignore)
    np.testing.assert_allclose(z, hf[f"z_score_{suffix}"], rtol=1e-9, atol=1e-9)
    flags = table[tokens[:, :-1], tokens[:, 1:]]  # (S, T - 1), scored from position 1 on
    for row, green in enumerate(flags):
        if ignore:
            _, first = np.unique(np.stack([tokens[row, :-1], tokens[row, 1:]], 1), axis=0,
                                 return_index=True)  # fmt: skip
            green = green[first]
        assert len(green) == hf[f"num_tokens_scored_{suffix}"][row]
        assert green.sum() == hf[f"num_green_tokens_{suffix}"][row]
        np.testing.assert_allclose(green.mean(), hf[f"green_fraction_{suffix}"][row], rtol=1e-12)
    np.testing.assert_allclose(
        scipy.stats.norm.sf(z), hf[f"p_value_{suffix}"], rtol=1e-5, atol=1e-12
    )


def test_fixture_covers_watermarked_plain_and_repetitive_text(hf):
    z_all, z_distinct = hf["z_score_all"], hf["z_score_distinct"]
    half = (len(z_all) - 1) // 2
    assert z_all[:half].min() > 4 > np.abs(z_all[half:-1]).max()  # watermarked vs plain rows
    assert hf["num_tokens_scored_distinct"][-1] <= 5 < hf["num_tokens_scored_all"][-1]
    assert abs(z_all[-1]) > abs(z_distinct[-1])  # repeats inflate |z|
    # our repeated-pair diagnostic on the repetitive row agrees with the detector's counts
    fraction = watermark.repeated_pair_fraction(hf["tokens"][-1])
    expected = 1 - hf["num_tokens_scored_distinct"][-1] / hf["num_tokens_scored_all"][-1]
    np.testing.assert_allclose(fraction, expected, rtol=1e-12)
