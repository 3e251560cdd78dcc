from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genlab.nn import MLP


def numpy_forward(model: MLP, x: np.ndarray) -> np.ndarray:
    for i, layer in enumerate(model.layers):
        x = x @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])
        if i < len(model.layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def test_mlp_matches_numpy_forward_pass():
    model = MLP((3, 16, 8, 2), rngs=nnx.Rngs(0))
    x = np.asarray(jax.random.normal(jax.random.key(1), (5, 3)))
    np.testing.assert_allclose(model(jnp.asarray(x)), numpy_forward(model, x), rtol=1e-5, atol=1e-5)


def test_mlp_handles_batch_dimensions_and_custom_activation():
    model = MLP((4, 8, 1), activation=jnp.tanh, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 3, 4))
    out = model(x)
    assert out.shape == (2, 3, 1)
    hidden = jnp.tanh(x @ model.layers[0].kernel[...] + model.layers[0].bias[...])
    expected = hidden @ model.layers[1].kernel[...] + model.layers[1].bias[...]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_mlp_parameter_count():
    model = MLP((3, 16, 2), rngs=nnx.Rngs(0))
    count = sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert count == 3 * 16 + 16 + 16 * 2 + 2


def test_mlp_same_seed_same_weights():
    a = MLP((2, 4, 1), rngs=nnx.Rngs(3))
    b = MLP((2, 4, 1), rngs=nnx.Rngs(3))
    np.testing.assert_array_equal(a.layers[0].kernel[...], b.layers[0].kernel[...])


@pytest.mark.parametrize("sizes", [(3,), (3, 0, 2), (3, 2.5)])
def test_mlp_rejects_bad_sizes(sizes):
    with pytest.raises(ValueError, match="sizes"):
        MLP(sizes, rngs=nnx.Rngs(0))


def test_mlp_rejects_wrong_input_width():
    model = MLP((3, 4, 1), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"inputs \[..., 3\], got shape \(2, 5\)"):
        model(jnp.ones((2, 5)))
