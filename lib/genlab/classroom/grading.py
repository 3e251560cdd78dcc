"""Instructor side: notebook surgery for submissions, a fast mutant runner, gradebook scores.

Conventions (design section 4): an exercise ``NAME`` is an nbgrader answer cell with
``grade_id == NAME`` that defines ``NAME``, followed by a graded test cell with
``grade_id == "test_" + NAME``.

The mutant runner executes a solution notebook once in a kernel, then for each variant
redefines one function and re-runs only that function's test cell, which takes a fraction of a
second per variant instead of one nbgrader run each.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
TEST_PREFIX = "test_"
CHALLENGE_MARK = "# Challenge (bonus)"
"""First line of a challenge exercise's test cell: its points are a bonus on top of the
chapter's maximum (design.md, "Exercise design")."""


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def graded_cells(nb) -> dict[str, nbformat.NotebookNode]:
    """Map ``grade_id`` to cell for every nbgrader cell of notebook ``nb``."""
    return {_nbgrader(c)["grade_id"]: c for c in nb.cells if "grade_id" in _nbgrader(c)}


def exercise_names(nb) -> list[str]:
    """Names of the exercises: answer cells that have a ``test_NAME`` graded test cell."""
    cells = graded_cells(nb)
    return [
        name
        for name, cell in cells.items()
        if _nbgrader(cell).get("solution") and TEST_PREFIX + name in cells
    ]


def challenge_names(nb) -> list[str]:
    """The exercises whose test cell starts with :data:`CHALLENGE_MARK` (bonus points)."""
    cells = graded_cells(nb)
    return [
        name
        for name in exercise_names(nb)
        if cells[TEST_PREFIX + name].source.lstrip().startswith(CHALLENGE_MARK)
    ]


def strip_solution_markers(source: str) -> str:
    """The answer a student would write: the solution cell without its marker lines."""
    lines = source.splitlines()
    return "\n".join(line for line in lines if line.strip() not in (BEGIN_SOLUTION, END_SOLUTION))


def replace_answer(nb, name: str, source: str):
    """A copy of ``nb`` whose answer cell ``name`` holds ``source``."""
    nb = copy.deepcopy(nb)
    cell = graded_cells(nb).get(name)
    if cell is None or not _nbgrader(cell).get("solution"):
        raise KeyError(f"notebook has no answer cell with grade_id {name!r}")
    cell.source = source
    return nb


def fill_answers(release_nb, solution_nb):
    """A copy of a release notebook with every answer cell filled in from the solution."""
    solution_cells = graded_cells(solution_nb)
    filled = copy.deepcopy(release_nb)
    for name, cell in graded_cells(filled).items():
        if _nbgrader(cell).get("solution"):
            cell.source = strip_solution_markers(solution_cells[name].source)
    return filled


@dataclass(frozen=True)
class Variants:
    """A chapter's declarative list of implementations: ``{NAME: {variant: source}}``."""

    wrong: dict[str, dict[str, str]]
    correct: dict[str, dict[str, str]]


def load_variants(path: str | Path) -> Variants:
    """Load the ``WRONG`` and ``CORRECT`` dicts from a mutant module such as
    ``tests/mutants/00_jax_primer.py``."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"mutants_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Variants(wrong=module.WRONG, correct=module.CORRECT)


@dataclass(frozen=True)
class VariantResult:
    """One variant's verdict; ``leaks``: ``(test cell, error)`` for every OTHER exercise whose
    visible checks the variant broke (checked for each function's first wrong variant)."""

    function: str
    variant: str
    should_pass: bool
    passed: bool
    message: str
    leaks: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.passed == self.should_pass


class VariantError(RuntimeError):
    """A variant's own source failed to run, so it says nothing about the tests."""


def _error_text(error: CellExecutionError) -> str:
    return f"{error.ename}: {error.evalue}"


class KernelSession:
    """A notebook executed once in a live kernel, where more code can then be run.

    Use as a context manager; the notebook's directory is the kernel's working directory.
    """

    def __init__(self, notebook_path: str | Path, *, timeout: int = 300):
        self.path = Path(notebook_path)
        self.nb = nbformat.read(self.path, as_version=4)
        self.client = NotebookClient(
            self.nb,
            timeout=timeout,
            kernel_name=self.nb.metadata.get("kernelspec", {}).get("name", "python3"),
            resources={"metadata": {"path": str(self.path.parent)}},
        )
        self._context = None

    def __enter__(self) -> KernelSession:
        self._context = self.client.setup_kernel()
        self._context.__enter__()
        for index, cell in enumerate(self.nb.cells):
            self.client.execute_cell(cell, index)
        return self

    def __exit__(self, *exc_info) -> None:
        self._context.__exit__(*exc_info)

    def run(self, source: str) -> str | None:
        """Run ``source`` in the kernel; return the error (``'Name: message'``) or None."""
        cell = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(cell)  # nbclient writes the executed cell back by index
        try:
            self.client.execute_cell(cell, len(self.nb.cells) - 1)
        except CellExecutionError as error:
            return _error_text(error)
        finally:
            self.nb.cells.pop()
        return None

    def check_variant(self, function: str, variant: str, source: str, should_pass: bool,
                      *, isolation: bool = False):  # fmt: skip
        """Define ``source`` in place of ``function``, run its test cell, restore the solution.

        ``isolation``: also run the visible checks of every later exercise's test cell with the
        variant in place; those that fail are the result's ``leaks`` (one mistake must cost
        points in one place only, design.md "Exercise design").
        """
        cells = graded_cells(self.nb)
        define_error = self.run(source)
        leaks = []
        try:
            if define_error:
                raise VariantError(f"{function}/{variant} does not run: {define_error}")
            test_error = self.run(cells[TEST_PREFIX + function].source)
            for later in self._later_exercises(function) if isolation else ():
                error = self.run(visible_checks(cells[TEST_PREFIX + later].source))
                if error:
                    leaks.append((TEST_PREFIX + later, error))
        finally:
            restore_error = self.run(cells[function].source)
            if restore_error:
                raise VariantError(f"restoring {function} failed: {restore_error}")
        passed = test_error is None
        return VariantResult(function, variant, should_pass, passed, test_error or "", tuple(leaks))

    def _later_exercises(self, function: str) -> list[str]:
        names = exercise_names(self.nb)
        return names[names.index(function) + 1 :]


def visible_checks(test_source: str) -> str:
    """A test cell's source without its hidden tests."""
    return test_source.split(BEGIN_HIDDEN)[0]


def run_variants(notebook_path: str | Path, variants: Variants, *, timeout: int = 300):
    """Run every variant against its function's test cell; return a list of VariantResult.

    Each function's first wrong variant is also run against the later exercises' visible checks
    (``VariantResult.leaks``).
    """
    results = []
    with KernelSession(notebook_path, timeout=timeout) as session:
        for should_pass, table in ((False, variants.wrong), (True, variants.correct)):
            for function, implementations in table.items():
                for i, (variant, source) in enumerate(implementations.items()):
                    isolation = not should_pass and i == 0
                    results.append(session.check_variant(
                        function, variant, source, should_pass, isolation=isolation))  # fmt: skip
    return results


def read_scores(gradebook: str | Path, assignment: str, notebook: str, student: str):
    """Scores of one student's notebook from an nbgrader gradebook (SQLite file).

    Returns ``{grade_id: (score, max_score)}`` for every graded cell (``score`` is the
    instructor's manual score where one was set, else the autograder's).
    """
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{Path(gradebook).resolve()}") as gb:
        try:
            submission = gb.find_submission_notebook(notebook, assignment, student)
        except MissingEntry:
            raise LookupError(
                f"no graded {notebook!r} of {assignment!r} by {student!r} in {gradebook}"
            ) from None
        return {grade.name: (grade.score, grade.max_score) for grade in submission.grades}
