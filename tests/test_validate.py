from __future__ import annotations

import numpy as np
import pytest

from genlab.validate import positive_int


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
