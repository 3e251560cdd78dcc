"""Mutants: every graded function's tests fail plausible wrong answers and pass correct ones.

Each chapter lists its variants in ``tests/mutants/CH.py`` (``WRONG`` and ``CORRECT``). The
solution notebook runs once in a kernel (fast mode); each variant then replaces one function and
only that function's test cell (hidden tests included) runs again. Each function's first wrong
variant must also leave every later exercise's visible checks passing: one mistake costs points
in one place (the nbgrader pipeline's "wrong" submission checked this for one function per
chapter; this checks every function, in the kernel that is already running).
"""

from __future__ import annotations

import nbformat
import pytest

from genlab.classroom import grading

from conftest import MUTANTS, main_notebook

MIN_WRONG, MIN_CORRECT = 3, 2


def test_every_exercise_has_mutants_and_alternatives(chapter):
    variants = grading.load_variants(MUTANTS / f"{chapter}.py")
    names = set(grading.exercise_names(nbformat.read(main_notebook(chapter), as_version=4)))
    assert set(variants.wrong) == names, (
        f"WRONG covers {sorted(variants.wrong)}, not {sorted(names)}"
    )
    assert set(variants.correct) == names, f"CORRECT covers {sorted(variants.correct)}"
    thin = {n: len(v) for n, v in variants.wrong.items() if len(v) < MIN_WRONG}
    assert not thin, f"fewer than {MIN_WRONG} wrong variants: {thin}"
    thin = {n: len(v) for n, v in variants.correct.items() if len(v) < MIN_CORRECT}
    assert not thin, f"fewer than {MIN_CORRECT} correct variants: {thin}"


@pytest.fixture
def fast_mode(monkeypatch):
    monkeypatch.setenv("GENLAB_FAST", "1")


def test_tests_catch_every_mutant_and_pass_every_alternative(chapter, fast_mode):
    variants = grading.load_variants(MUTANTS / f"{chapter}.py")
    results = grading.run_variants(main_notebook(chapter), variants)
    wrong_passed = [f"{r.function}/{r.variant}" for r in results if not r.should_pass and r.passed]
    correct_failed = [
        f"{r.function}/{r.variant}: {r.message}" for r in results if r.should_pass and not r.passed
    ]
    assert not wrong_passed, f"wrong implementations that pass the tests: {wrong_passed}"
    assert not correct_failed, "correct implementations that fail:\n" + "\n".join(correct_failed)
    leaks = [f"{r.function}/{r.variant} also fails {cell}: {error}" for r in results
             for cell, error in r.leaks]  # fmt: skip
    assert not leaks, "one mistake costs points in two places:\n" + "\n".join(leaks)
    print(f"{chapter}: {len(results)} variants checked")
