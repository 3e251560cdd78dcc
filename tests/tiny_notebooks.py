"""Small nbgrader notebooks built in code, for tests of the grading machinery."""

from __future__ import annotations

from nbformat.v4 import new_code_cell, new_notebook

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def answer_cell(name: str, body: str):
    """An nbgrader answer cell defining ``name(x)`` whose solution is the line ``body``."""
    cell = new_code_cell(
        f"def {name}(x):\n    ### BEGIN SOLUTION\n    {body}\n    ### END SOLUTION"
    )
    cell.metadata.nbgrader = {
        "grade": False, "grade_id": name, "locked": False, "schema_version": 3,
        "solution": True, "task": False,
    }  # fmt: skip
    return cell


def graded_test_cell(name: str, source: str, points: int = 1):
    """An nbgrader test cell ``test_<name>`` worth ``points``: visible ``source``, then the hidden
    probe of ``genlab.probes.tiny``."""
    hidden = (
        "### BEGIN HIDDEN TESTS\nfrom genlab.probing import probe\n\n"
        f'probe("tiny", "{name}", globals())\n### END HIDDEN TESTS'
    )
    cell = new_code_cell(f"{source}\n\n{hidden}")
    cell.metadata.nbgrader = {
        "grade": True, "grade_id": f"test_{name}", "locked": True, "points": points,
        "schema_version": 3, "solution": False, "task": False,
    }  # fmt: skip
    return cell


def tiny_notebook(setup: str = "import math"):
    """Two exercises: ``double`` (2 * x) and ``root`` (math.sqrt), each with a test cell."""
    nb = new_notebook(
        cells=[
            new_code_cell(setup),
            answer_cell("double", "return 2 * x"),
            graded_test_cell("double", "assert double(3) == 6\nassert double(-1) == -2"),
            answer_cell("root", "return math.sqrt(x)"),
            graded_test_cell("root", "assert root(9) == 3"),
        ]
    )
    nb.metadata.kernelspec = KERNELSPEC
    return nb
