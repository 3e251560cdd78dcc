from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from genlab import check
from genlab.check import CheckError


def test_shape_accepts_wildcards_and_names_the_mismatch():
    check.shape("x", jnp.zeros((2, 3)), (2, None))
    with pytest.raises(CheckError, match=r"x: expected shape \(3, 2\), got \(2, 3\)"):
        check.shape("x", np.zeros((2, 3)), (3, 2))
    with pytest.raises(CheckError, match="got None"):
        check.shape("out", None, (1,))


def test_dtype_by_kind_and_exact():
    check.dtype("x", jnp.zeros(2, jnp.float32), "float")
    check.dtype("x", np.zeros(2, np.int32), np.int32)
    with pytest.raises(CheckError, match="expected a dtype of kind int, got float32"):
        check.dtype("x", jnp.zeros(2), "int")
    with pytest.raises(CheckError, match="expected dtype bool"):
        check.dtype("mask", np.zeros(2, np.int8), bool)


def test_finite_reports_first_bad_index():
    check.finite("x", np.ones(3))
    with pytest.raises(CheckError, match=r"found inf at index \(1, 0\) \(2 non-finite"):
        check.finite("x", np.array([[1.0, 2.0], [np.inf, np.nan]]))


def test_allclose_reports_largest_error_and_where():
    check.allclose("y", [1.0, 2.0], np.array([1.0, 2.0 + 1e-7]))
    with pytest.raises(CheckError) as error:
        check.allclose("y", np.array([[1.0, 2.0], [3.0, 4.5]]), np.array([[1.0, 2.1], [3.0, 4.0]]))
    message = str(error.value)
    assert "largest error 0.5 at index (1, 1)" in message
    assert "got 4.5, expected 4" in message and "2 of 4 entries" in message


def test_allclose_treats_nan_and_inf_strictly():
    check.allclose("y", [np.nan, -np.inf], [np.nan, -np.inf])
    with pytest.raises(CheckError, match=r"got nan at index \(0,\)"):
        check.allclose("y", [np.nan, 1.0], [0.0, 1.0])
    with pytest.raises(CheckError, match=r"got inf at index \(1,\), expected -inf"):
        check.allclose("y", [0.0, np.inf], [0.0, -np.inf])
    with pytest.raises(CheckError, match="expected shape"):
        check.allclose("y", np.ones(3), np.ones((3, 1)))


def test_allclose_ignores_monkeypatched_numpy(monkeypatch):
    monkeypatch.setattr(np, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(np, "abs", lambda x: np.zeros_like(x))
    monkeypatch.setattr(jnp, "allclose", lambda *a, **k: True)
    with pytest.raises(CheckError):
        check.allclose("y", [0.0], [1.0])


def test_equal_names_first_difference():
    check.equal("ids", np.array([1, 2, 3]), [1, 2, 3])
    with pytest.raises(CheckError, match=r"got 5 at index \(1,\), expected 2"):
        check.equal("ids", [1, 5, 7], [1, 2, 3])


def test_sums_to_reports_the_row():
    check.sums_to("w", np.full((2, 4), 0.25))
    weights = np.full((2, 3, 4), 0.25)
    weights[0, 2] = [0.5, 0.1, 0.1, 0.03]
    with pytest.raises(CheckError, match=r"slice \(0, 2\) sums to 0.73"):
        check.sums_to("w", weights)


def test_is_true_and_raises(capsys):
    check.is_true(True, "never shown")
    with pytest.raises(CheckError, match="custom message"):
        check.is_true(False, "custom message")
    assert check.raises("f", ValueError, int, "x") is None
    assert capsys.readouterr().out.startswith("ok: f raised ValueError as expected (invalid")
    with pytest.raises(CheckError, match="expected ValueError to be raised, but the call returned"):
        check.raises("f", ValueError, int, "3")
    with pytest.raises(CheckError, match="expected ValueError, got TypeError"):
        check.raises("f", ValueError, int, None)


def test_passed_prints_one_line_naming_the_exercise(capsys):
    assert check.passed("top_p_filter") is None
    out = capsys.readouterr().out
    assert out == (
        "top_p_filter: all visible checks passed "
        "(the hidden tests run when the notebook is graded)\n"
    )
