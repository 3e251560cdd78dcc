"""Probes of ``tiny``, a two-exercise course that the grading machinery's tests build
(``tests/tiny_notebooks.py``): ``double(x) = 2 x`` and ``root(x) = sqrt(x)``. It is also the
smallest example of a probe module."""

from __future__ import annotations

import math

import numpy as np

from genlab.probing import Case, Probe, call, close


def double(x):
    """Twice ``x`` (a number)."""
    return 2 * x


def root(x):
    """The square root of ``x`` >= 0 (a number)."""
    return math.sqrt(x)


def double_cases(rng: np.random.Generator) -> list[Case]:
    values = [3.0, -1.0, *np.round(rng.normal(size=3) * 10, 3)]
    return [Case(f"double({float(v):g})", call(float(v))) for v in values]


def root_cases(rng: np.random.Generator) -> list[Case]:
    values = [9.0, 0.0, *np.round(rng.uniform(0, 100, size=3), 3)]
    cases = [Case(f"root({float(v):g})", call(float(v)), close(1e-12, 1e-12)) for v in values]
    return cases + [Case("root(-1) raises ValueError", call(-1.0), raises=(ValueError,))]


PROBES = [Probe("double", double, double_cases), Probe("root", root, root_cases)]
