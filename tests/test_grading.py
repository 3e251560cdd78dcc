from __future__ import annotations

import nbformat
import pytest
from tiny_notebooks import answer_cell, tiny_notebook

from genlab.classroom import grading


def test_exercise_names_pairs_answers_with_tests():
    nb = tiny_notebook()
    nb.cells.append(answer_cell("untested", "return x"))
    assert grading.exercise_names(nb) == ["double", "root"]
    assert set(grading.graded_cells(nb)) == {
        "double",
        "test_double",
        "root",
        "test_root",
        "untested",
    }


def test_strip_solution_markers_keeps_the_body():
    source = answer_cell("f", "return x").source
    assert grading.strip_solution_markers(source) == "def f(x):\n    return x"


def test_fill_answers_copies_solutions_into_the_release():
    solution = tiny_notebook()
    release = tiny_notebook()
    for name in ("double", "root"):
        grading.graded_cells(release)[name].source = "def f(x):\n    raise NotImplementedError()"
    filled = grading.fill_answers(release, solution)
    assert grading.graded_cells(filled)["double"].source == "def double(x):\n    return 2 * x"
    assert "NotImplementedError" in grading.graded_cells(release)["double"].source  # untouched


def test_replace_answer_changes_one_cell_and_rejects_unknown_names():
    nb = tiny_notebook()
    changed = grading.replace_answer(nb, "root", "def root(x):\n    return x / 3")
    assert grading.graded_cells(changed)["root"].source.endswith("x / 3")
    assert "sqrt" in grading.graded_cells(nb)["root"].source
    with pytest.raises(KeyError, match="test_root"):
        grading.replace_answer(nb, "test_root", "")


def test_load_variants_reads_wrong_and_correct(tmp_path):
    path = tmp_path / "99_demo.py"
    path.write_text("WRONG = {'f': {'a': 'x'}}\nCORRECT = {'f': {'b': 'y'}}\n")
    variants = grading.load_variants(path)
    assert variants.wrong == {"f": {"a": "x"}} and variants.correct == {"f": {"b": "y"}}


def test_run_variants_catches_mutants_and_passes_alternatives(tmp_path):
    path = tmp_path / "demo.ipynb"
    nbformat.write(tiny_notebook(), path)
    variants = grading.Variants(
        wrong={
            "double": {"square": "def double(x):\n    return x * x"},
            "root": {"half": "def root(x):\n    return x / 2"},
        },
        correct={"double": {"add": "def double(x):\n    return x + x"}},
    )
    results = {(r.function, r.variant): r for r in grading.run_variants(path, variants)}
    assert not results["double", "square"].passed and results["double", "square"].ok
    assert "AssertionError" in results["double", "square"].message
    assert not results["root", "half"].passed
    assert results["double", "add"].passed and results["double", "add"].ok


def test_run_variants_restores_the_solution_between_variants(tmp_path):
    path = tmp_path / "demo.ipynb"
    nbformat.write(tiny_notebook(), path)
    with grading.KernelSession(path) as session:
        session.check_variant("double", "zero", "def double(x):\n    return 0", False)
        assert session.run("assert double(4) == 8") is None
        assert session.run("raise ValueError('boom')") == "ValueError: boom"
        with pytest.raises(grading.VariantError, match="does not run"):
            session.check_variant("root", "broken", "def root(x) return", False)


def test_a_wrong_first_variant_that_breaks_a_later_exercises_visible_checks_is_a_leak(tmp_path):
    nb = tiny_notebook()
    # test_root's visible checks lean on double: a wrong double costs root's points too
    grading.graded_cells(nb)["test_root"].source = (
        "assert root(9) == 3\nassert root(double(2)) == 2\n"
        + grading.graded_cells(nb)["test_root"].source.split("\n", 1)[1]
    )
    path = tmp_path / "demo.ipynb"
    nbformat.write(nb, path)
    variants = grading.Variants(
        wrong={"double": {"square": "def double(x):\n    return x * x",
                          "triple": "def double(x):\n    return 3 * x"},
               "root": {"half": "def root(x):\n    return x / 2"}},
        correct={},
    )  # fmt: skip
    results = {(r.function, r.variant): r for r in grading.run_variants(path, variants)}
    # square: double(2) == 4 happens to be right, so root's checks pass; only the first wrong
    # variant of each function is checked for leaks
    assert results["double", "square"].leaks == ()
    assert results["double", "triple"].leaks == ()
    variants.wrong["double"] = {"triple": variants.wrong["double"]["triple"]}
    results = {(r.function, r.variant): r for r in grading.run_variants(path, variants)}
    ((cell, error),) = results["double", "triple"].leaks
    assert cell == "test_root" and "AssertionError" in error
    assert results["root", "half"].leaks == ()  # no exercise after root


def test_challenge_exercises_are_marked_by_their_test_cells_first_line():
    nb = tiny_notebook()
    assert grading.challenge_names(nb) == []
    test_root = grading.graded_cells(nb)["test_root"]
    test_root.source = f"{grading.CHALLENGE_MARK}\n{test_root.source}"
    assert grading.challenge_names(nb) == ["root"]


def test_the_report_counts_challenge_points_as_a_bonus(tmp_path):
    from genlab.classroom import report as classroom_report

    nb = tiny_notebook()
    cell = grading.graded_cells(nb)["test_root"]
    cell.source = f"{grading.CHALLENGE_MARK}\n{cell.source}"
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    release = classroom_report._read_release(path)
    assert classroom_report._bonus_cells(release) == {"test_root"}
    row = classroom_report.Row("s1", "tiny", score=2, max_score=1, status="graded", bonus=1)
    assert classroom_report._score_text(row) == "2/1 (incl. 1 bonus)"
    assert classroom_report._bonus_cells(classroom_report._read_release(tmp_path / "no")) == set()
