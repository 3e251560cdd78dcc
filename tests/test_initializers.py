"""genlab.initializers against Flax's own initializers: the same bits, fewer programs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genlab import gpt, initializers
from genlab.nn import MLP

SHAPES = [(1, 1), (2, 128), (128, 2), (128, 128), (3, 5), (784, 400), (65, 32), (7, 3, 5),
          (3, 3, 4, 8), (1000, 1), (1, 1000), (257, 255)]  # fmt: skip

PAIRS = {
    "lecun_normal": (initializers.lecun_normal, nnx.initializers.lecun_normal()),
    "embedding": (
        initializers.embedding,
        nnx.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0),
    ),
    "normal(0.02)": (initializers.normal(0.02), nnx.initializers.normal(0.02)),
    "he, fan_out, truncated": (
        initializers.variance_scaling(2.0, "fan_out", "truncated_normal"),
        jax.nn.initializers.variance_scaling(2.0, "fan_out", "truncated_normal"),
    ),
}


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", PAIRS)
def test_initializers_give_flaxs_values_bit_for_bit(name):
    ours, theirs = PAIRS[name]
    for i, shape in enumerate(SHAPES):
        key = jax.random.key(i)
        assert same_bits(ours(key, shape), theirs(key, shape)), (name, shape)


def test_one_program_per_size_class():
    before = initializers._standard_draws._cache_size()
    for d_out in (33, 40, 50, 64):  # 66..128 entries after (2, d_out): all in the 256 class
        initializers.lecun_normal(jax.random.key(d_out), (2, d_out))
    initializers.lecun_normal(jax.random.key(0), (300, 2))  # the 1024 class
    assert initializers._standard_draws._cache_size() - before <= 2


def test_other_dtypes_and_large_parameters_fall_back(monkeypatch):
    key = jax.random.key(3)
    got = initializers.lecun_normal(key, (4, 6), jnp.bfloat16)
    assert same_bits(got, nnx.initializers.lecun_normal()(key, (4, 6), jnp.bfloat16))
    monkeypatch.setattr(initializers, "LARGEST", 16)
    before = initializers._standard_draws._cache_size()
    got = initializers.normal(0.5)(key, (5, 7))
    assert initializers._standard_draws._cache_size() == before
    assert same_bits(got, nnx.initializers.normal(0.5)(key, (5, 7)))


def test_traced_keys_and_shape_dependent_threefry_fall_back():
    config = gpt.GPTConfig.tiny(vocab_size=11, num_layers=1)
    abstract = nnx.eval_shape(lambda: gpt.GPT(config, rngs=nnx.Rngs(0)))
    assert abstract.wte.embedding.shape == (11, config.d_model)
    built = nnx.jit(lambda: MLP((3, 16, 2), rngs=nnx.Rngs(0)))()
    assert same_bits(built.layers[0].kernel[...], nnx.Linear(3, 16, rngs=nnx.Rngs(0)).kernel[...])
    key = jax.random.key(4)
    with jax.threefry_partitionable(False):
        got = initializers.lecun_normal(key, (3, 5))
        assert same_bits(got, nnx.initializers.lecun_normal()(key, (3, 5)))


def test_rank_one_shapes_are_refused_like_jax():
    with pytest.raises(ValueError, match="rank 2"):
        initializers.lecun_normal(jax.random.key(0), (5,))


def test_modules_match_flaxs_defaults():
    mlp = MLP((3, 16, 2), rngs=nnx.Rngs(0))
    rngs = nnx.Rngs(0)
    flax_layers = [nnx.Linear(3, 16, rngs=rngs), nnx.Linear(16, 2, rngs=rngs)]
    for ours, theirs in zip(mlp.layers, flax_layers, strict=True):
        assert same_bits(ours.kernel[...], theirs.kernel[...])
        assert same_bits(ours.bias[...], theirs.bias[...])
    table = initializers.embed(10, 4, rngs=nnx.Rngs(1)).embedding[...]
    assert same_bits(table, nnx.Embed(10, 4, rngs=nnx.Rngs(1)).embedding[...])
    norm = initializers.layer_norm(6, epsilon=1e-5, rngs=nnx.Rngs(2))
    flax_norm = nnx.LayerNorm(6, epsilon=1e-5, rngs=nnx.Rngs(2))
    assert same_bits(norm.scale[...], flax_norm.scale[...])
    assert same_bits(norm.bias[...], flax_norm.bias[...])


def test_gpt_starts_from_the_documented_distribution():
    config = gpt.GPTConfig.tiny(vocab_size=11, num_layers=1)
    model = gpt.GPT(config, rngs=nnx.Rngs(0))
    rngs = nnx.Rngs(0)
    wte = nnx.Embed(11, config.d_model, embedding_init=nnx.initializers.normal(config.init_std),
                    rngs=rngs)  # fmt: skip
    assert same_bits(model.wte.embedding[...], wte.embedding[...])
