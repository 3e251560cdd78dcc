"""A small classifier of the 8x8 digits, to put numbers on generated digits.

"The samples look like digits" is an adjective; "91 % of the samples are classified with
confidence >= 0.9, and every class gets between 6 % and 14 % of them" is a measurement. The
chapters that generate digits (01 GAN, 02 VAE, 05 diffusion, 06 evaluation) score their samples
with this one classifier, trained once on a fixed split of scikit-learn's digits and kept in the
model cache (:mod:`genlab.model_cache`), so every chapter and every run uses the same weights.

Inputs are images ``x: [N, 64]`` in [0, 1], as :func:`genlab.data.load_digits` returns them
(chapter 01's tanh generator outputs [-1, 1]: map them with ``(x + 1) / 2`` first).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import data, model_cache
from genlab.nn import MLP
from genlab.train import ProgressBar

CONFIG = {"sizes": [64, 128, 10], "steps": 1500, "batch": 128, "lr": 3e-3, "weight_decay": 1e-4,
          "noise": 0.1, "outlier_weight": 0.2, "held_out": 360, "seed": 0}  # fmt: skip
CONFIDENT = 0.9


class DigitClassifier(nnx.Module):
    """An MLP ``64 -> 128 -> 10``; ``model(x)`` gives logits [N, 10], ``features(x)`` the 128
    hidden activations (the feature space chapter 06 compares distributions in)."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.mlp = MLP(CONFIG["sizes"], rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.mlp.layers[0](x))  # (N, 128)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.mlp(x)  # (N, 10)


def split() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The fixed (train, held-out) split of the digits: ((x, labels), (x, labels))."""
    x, labels = data.load_digits()
    order = np.random.default_rng(CONFIG["seed"]).permutation(len(x))
    held, train = order[: CONFIG["held_out"]], order[CONFIG["held_out"] :]
    return (x[train], labels[train]), (x[held], labels[held])


def _train(model: DigitClassifier) -> None:
    (x, labels), _ = split()
    x, labels = jnp.asarray(x), jnp.asarray(labels)
    optimizer = nnx.Optimizer(
        model, optax.adamw(CONFIG["lr"], weight_decay=CONFIG["weight_decay"]), wrt=nnx.Param
    )

    @nnx.jit
    def step(model, optimizer, key):
        k_batch, k_noise, k_other, k_uniform, k_perm = jax.random.split(key, 5)
        n = CONFIG["batch"]
        index = jax.random.randint(k_batch, (n,), 0, x.shape[0])
        # pixel noise: generated digits are noisier than the data, the classifier must not care
        noisy = jnp.clip(x[index] + CONFIG["noise"] * jax.random.normal(k_noise, (n, 64)), 0, 1)
        # outlier exposure (Hendrycks et al. 2019): non-digits must get a flat prediction, so a
        # confident answer means "looks like one digit". Non-digits here: uniform noise, digits
        # with their pixels shuffled, and 50/50 blends of two digits of different classes.
        other = jax.random.randint(k_other, (n,), 0, x.shape[0])
        blends = 0.5 * (x[index] + x[other])
        differ = (labels[index] != labels[other]).astype(jnp.float32)  # (n,)
        outliers = jnp.concatenate(
            [
                jax.random.uniform(k_uniform, (n // 4, 64)),
                x[index[: n // 4]][:, jax.random.permutation(k_perm, 64)],
            ]
        )

        def loss_fn(model):
            fit = optax.softmax_cross_entropy_with_integer_labels(model(noisy), labels[index])
            flat_outliers = -jax.nn.log_softmax(model(outliers)).mean(-1)
            flat_blends = -jax.nn.log_softmax(model(blends)).mean(-1)
            flat = flat_outliers.sum() + (differ * flat_blends).sum()
            flat = flat / (outliers.shape[0] + differ.sum())
            return fit.mean() + CONFIG["outlier_weight"] * flat

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    keys = jax.random.split(jax.random.key(CONFIG["seed"]), CONFIG["steps"])
    with ProgressBar(len(keys), "training the digit classifier (once, then cached)") as bar:
        for key in keys:
            step(model, optimizer, key)
            bar.update()


def pretrained() -> DigitClassifier:
    """The course's digit classifier (trained in a few seconds the first time, then cached)."""
    return model_cache.cached_model(
        "digits-classifier",
        CONFIG,
        lambda: DigitClassifier(rngs=nnx.Rngs(CONFIG["seed"])),
        _train,
    )


def _images(images) -> jax.Array:
    x = jnp.asarray(images, jnp.float32).reshape(len(images), -1)
    if x.shape[-1] != 64:
        shape = np.shape(images)
        raise ValueError(f"expected 8x8 digits as [N, 64] or [N, 8, 8], got shape {shape}")
    return x


def probabilities(images, model: DigitClassifier | None = None) -> jax.Array:
    """Class probabilities [N, 10] of ``images`` ([N, 64] or [N, 8, 8], values in [0, 1])."""
    model = pretrained() if model is None else model
    return jax.nn.softmax(model(_images(images)), axis=-1)


def accuracy(images, labels, model: DigitClassifier | None = None) -> float:
    """Fraction of ``images`` whose most probable class is ``labels`` ([N] ints)."""
    predicted = jnp.argmax(probabilities(images, model), axis=-1)
    return float(jnp.mean(predicted == jnp.asarray(labels)))


@dataclass(frozen=True)
class SampleReport:
    """What the classifier says about a set of generated digits.

    histogram: [10] counts of the predicted classes; mean_confidence: mean of the top class
    probability; confident_fraction: share of samples whose top probability is >= 0.9.
    """

    histogram: np.ndarray
    mean_confidence: float
    confident_fraction: float

    @property
    def class_shares(self) -> np.ndarray:
        return self.histogram / max(int(self.histogram.sum()), 1)

    def __str__(self) -> str:
        shares = " ".join(f"{d}:{s:.0%}" for d, s in enumerate(self.class_shares))
        return (
            f"classes {shares} | mean confidence {self.mean_confidence:.2f} | "
            f"{self.confident_fraction:.0%} classified with confidence >= {CONFIDENT}"
        )


def sample_report(images, model: DigitClassifier | None = None) -> SampleReport:
    """Class histogram and confidence of the classifier on ``images`` (a :class:`SampleReport`)."""
    probs = np.asarray(probabilities(images, model))
    top = probs.max(axis=-1)
    histogram = np.bincount(probs.argmax(axis=-1), minlength=10)
    return SampleReport(histogram, float(top.mean()), float((top >= CONFIDENT).mean()))
