"""Student-facing checks used by the notebooks' test cells.

Every check raises :class:`CheckError` (an ``AssertionError``, so nbgrader counts it as a failed
test) with a message that names the quantity, says what was expected, and where it went wrong::

    scaled_dot_product_attention weights: rows must sum to 1 over axis -1; row (0, 2) sums to 0.73

The NumPy functions used here are bound when this module is imported, so a notebook that later
replaces ``np.allclose`` or ``jnp.allclose`` does not change what these checks accept.
"""

from __future__ import annotations

import numpy as np

_asarray = np.asarray
_abs = np.abs
_isfinite = np.isfinite
_isnan = np.isnan
_argmax = np.argmax
_unravel = np.unravel_index
_array_equal = np.array_equal
_sum = np.sum
_issubdtype = np.issubdtype
_nonzero_first = np.argwhere


class CheckError(AssertionError):
    """A check failed; the message says what was expected and what was found."""


def _fail(message: str) -> None:
    raise CheckError(message)


def _as_numpy(name: str, x) -> np.ndarray:
    if x is None:
        _fail(f"{name}: got None; did the function forget to `return` its result?")
    try:
        return _asarray(x)
    except Exception as error:  # an object that is not array-like
        _fail(f"{name}: expected an array, got {type(x).__name__} ({error})")


def _where(index) -> str:
    return str(tuple(int(i) for i in index)) if len(index) else "()"


def shape(name: str, x, expected: tuple) -> None:
    """Check ``x.shape == expected``; an entry ``None`` in ``expected`` matches any size."""
    actual = _as_numpy(name, x).shape
    ok = len(actual) == len(expected) and all(e is None or a == e for a, e in zip(actual, expected))
    if not ok:
        shown = tuple("any" if e is None else e for e in expected)
        _fail(f"{name}: expected shape {shown}, got {actual}")


_KINDS = {"float": np.floating, "int": np.integer, "bool": np.bool_, "complex": np.complexfloating}


def dtype(name: str, x, expected) -> None:
    """Check the dtype: ``expected`` is ``'float'``, ``'int'``, ``'bool'`` or an exact dtype."""
    actual = _as_numpy(name, x).dtype
    if isinstance(expected, str) and expected in _KINDS:
        if not _issubdtype(actual, _KINDS[expected]):
            _fail(f"{name}: expected a dtype of kind {expected}, got {actual}")
    elif actual != np.dtype(expected):
        _fail(f"{name}: expected dtype {np.dtype(expected)}, got {actual}")


def finite(name: str, x) -> None:
    """Check that every entry is finite (no NaN, no +-inf); report the first offending index."""
    values = _as_numpy(name, x)
    bad = _nonzero_first(~_isfinite(values))
    if len(bad):
        index = tuple(bad[0])
        _fail(
            f"{name}: expected only finite values, found {values[index]} at index {_where(index)}"
            f" ({len(bad)} non-finite entries in all)"
        )


def allclose(name: str, actual, expected, *, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Check ``|actual - expected| <= atol + rtol * |expected|`` elementwise, shapes equal.

    NaN matches only NaN and infinities must match exactly. On failure the message gives the
    largest error, where it is, and both values there.
    """
    got = _as_numpy(name, actual)
    want = _as_numpy(name + " (expected)", expected)
    if got.shape != want.shape:
        _fail(f"{name}: expected shape {want.shape}, got {got.shape}")
    if got.size == 0:
        return
    got64 = got.astype(np.float64) if not _issubdtype(got.dtype, np.complexfloating) else got
    want64 = want.astype(got64.dtype)
    nan_mismatch = _isnan(got64) != _isnan(want64)
    if nan_mismatch.any():
        index = tuple(_nonzero_first(nan_mismatch)[0])
        _fail(f"{name}: got {got64[index]} at index {_where(index)}, expected {want64[index]}")
    both_finite = _isfinite(got64) & _isfinite(want64)
    inf_mismatch = ~both_finite & ~_isnan(want64) & (got64 != want64)
    if inf_mismatch.any():
        index = tuple(_nonzero_first(inf_mismatch)[0])
        _fail(f"{name}: got {got64[index]} at index {_where(index)}, expected {want64[index]}")
    got_finite, want_finite = np.where(both_finite, got64, 0.0), np.where(both_finite, want64, 0.0)
    error = _abs(got_finite - want_finite)
    excess = error - (atol + rtol * _abs(want_finite))
    if (excess > 0).any():
        index = _unravel(int(_argmax(excess)), excess.shape)
        count = int(_sum(excess > 0))
        _fail(
            f"{name}: largest error {float(error[index]):.3g} at index {_where(index)}: got "
            f"{got64[index]:.6g}, expected {want64[index]:.6g} (rtol={rtol}, atol={atol}; "
            f"{count} of {excess.size} entries out of tolerance)"
        )


def equal(name: str, actual, expected) -> None:
    """Check exact equality of shape and values (for integers, booleans and tokens)."""
    got = _as_numpy(name, actual)
    want = _as_numpy(name + " (expected)", expected)
    if got.shape != want.shape:
        _fail(f"{name}: expected shape {want.shape}, got {got.shape}")
    if not _array_equal(got, want):
        index = tuple(_nonzero_first(got != want)[0]) if got.ndim else ()
        _fail(f"{name}: got {got[index]} at index {_where(index)}, expected {want[index]}")


def sums_to(name: str, x, *, axis: int = -1, value: float = 1.0, atol: float = 1e-5) -> None:
    """Check that every slice along ``axis`` sums to ``value`` (e.g. probabilities sum to 1)."""
    values = _as_numpy(name, x)
    totals = _sum(values.astype(np.float64), axis=axis)
    bad = _nonzero_first(~(_abs(totals - value) <= atol))
    if len(bad):
        index = tuple(bad[0])
        _fail(
            f"{name}: every slice must sum to {value} over axis {axis}; "
            f"slice {_where(index)} sums to {float(totals[index]):.4g}"
        )


def is_true(condition, message: str) -> None:
    """Check a condition that has no array to compare; ``message`` explains what was expected."""
    if not bool(condition):
        _fail(message)


def raises(name: str, error_types, function, *args, **kwargs) -> None:
    """Check that ``function(*args, **kwargs)`` raises one of ``error_types``.

    On success it prints one line saying so (with the error's message, which a student's error
    should make helpful), so a passing check never looks like a failure in the cell's output.
    """
    try:
        function(*args, **kwargs)
    except error_types as error:
        print(f"ok: {name} raised {type(error).__name__} as expected ({error})")
        return
    except Exception as error:  # the wrong kind of error
        expected = getattr(error_types, "__name__", str(error_types))
        _fail(f"{name}: expected {expected}, got {type(error).__name__}: {error}")
    expected = getattr(error_types, "__name__", str(error_types))
    _fail(f"{name}: expected {expected} to be raised, but the call returned normally")


def passed(name: str) -> None:
    """Say that the visible checks of ``name`` passed: the last line of a test cell's visible part.

    A test cell that passes would otherwise print nothing, and a student could not tell a passing
    cell from one that never ran. The hidden tests run only when the notebook is graded.
    """
    print(f"{name}: all visible checks passed (the hidden tests run when the notebook is graded)")
