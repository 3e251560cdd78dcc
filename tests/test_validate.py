from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from genlab.validate import broadcast_shapes, float_array, positive_int


def test_positive_int_accepts_python_and_numpy_ints():
    assert positive_int("n", 3) == 3
    assert positive_int("n", np.int64(2)) == 2


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [(0, ValueError, "n must be >= 1, got 0"), (2.0, TypeError, "n must be an int, got float"),
     (True, TypeError, "n must be an int, got bool")],
)  # fmt: skip
def test_positive_int_names_the_argument(value, error, message):
    with pytest.raises(error, match=message):
        positive_int("n", value)


def test_float_array_converts_ints_unless_told_not_to():
    assert float_array("x", [1, 2]).dtype == jnp.float32
    assert float_array("x", jnp.zeros(2, jnp.float16)).dtype == jnp.float16
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        float_array("x", [1, 2], allow_int=False)
    with pytest.raises(TypeError, match="q must be real"):
        float_array("q", jnp.ones(2, jnp.complex64))
    with pytest.raises(TypeError, match="k must be an array of numbers"):
        float_array("k", "abc")
    with pytest.raises(ValueError, match="v must have at least 2 axes"):
        float_array("v", jnp.ones(3), min_ndim=2)


def test_broadcast_shapes_names_every_shape():
    assert broadcast_shapes(("a", "b"), (2, 1), (3,)) == (2, 3)
    with pytest.raises(ValueError, match=r"a \(2,\), b \(3,\)"):
        broadcast_shapes(("a", "b"), (2,), (3,))
