"""The digit classifier that scores generated digits: accurate on held-out digits, in agreement
with an independent classifier (scikit-learn's logistic regression), humble on non-digits."""

from __future__ import annotations

import numpy as np
import pytest

from genlab import digits_classifier as dc


@pytest.fixture(scope="module")
def model():
    return dc.pretrained()


def test_held_out_accuracy_and_agreement_with_logistic_regression(model):
    from sklearn.linear_model import LogisticRegression

    (x_train, y_train), (x_held, y_held) = dc.split()
    assert len(x_held) == dc.CONFIG["held_out"] and len(x_train) + len(x_held) == 1797
    ours = np.asarray(dc.probabilities(x_held, model)).argmax(-1)
    peer = LogisticRegression(max_iter=2000).fit(x_train, y_train).predict(x_held)
    print(
        f"held-out accuracy: ours {np.mean(ours == y_held):.3f}, "
        f"logistic regression {np.mean(peer == y_held):.3f}, agree {np.mean(ours == peer):.3f}"
    )
    assert np.mean(ours == y_held) >= 0.96
    assert np.mean(ours == peer) >= 0.94


def test_confident_on_digits_not_on_noise_or_blends(model):
    _, (x_held, _) = dc.split()
    rng = np.random.default_rng(0)
    real = dc.sample_report(x_held, model)
    noise = dc.sample_report(rng.random((300, 64)), model)
    blends = dc.sample_report(0.5 * (x_held[:180] + x_held[180:360]), model)
    print(f"real: {real}\nnoise: {noise}\nblends: {blends}")
    assert real.mean_confidence >= 0.85 and real.histogram.sum() == len(x_held)
    assert real.class_shares.min() >= 0.05, "every class appears in the held-out digits"
    assert noise.mean_confidence <= 0.3 and noise.confident_fraction <= 0.02
    assert blends.mean_confidence <= 0.55


def test_images_may_be_8x8_and_bad_shapes_are_named(model):
    _, (x_held, _) = dc.split()
    flat = dc.probabilities(x_held[:5], model)
    square = dc.probabilities(x_held[:5].reshape(5, 8, 8), model)
    np.testing.assert_allclose(flat, square)
    with pytest.raises(ValueError, match=r"\[N, 64\]"):
        dc.probabilities(np.zeros((3, 28 * 28)), model)
