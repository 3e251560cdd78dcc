"""Every solution notebook runs top to bottom, and is stored the way the course expects.

The full run records the probes as autograding does, and the trusted side's verdict on those
records must give the solution every point: one execution checks the notebook and the grader.
"""

from __future__ import annotations

import time

import nbformat
import pytest
from nbclient import NotebookClient

from genlab import probing, runtime
from genlab.classroom import grading

from conftest import SOLUTION_NOTEBOOKS

IDS = [f"{p.parent.name}/{p.name}" for p in SOLUTION_NOTEBOOKS]


@pytest.mark.parametrize("path", SOLUTION_NOTEBOOKS, ids=IDS)
def test_solution_notebook_executes_in_full_mode_and_its_records_score_full_marks(
    path, tmp_path, monkeypatch
):
    seed = 7 + sum(map(ord, path.stem))
    monkeypatch.setenv(probing.RECORD_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(probing.SEED_ENV, str(seed))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the failing cell
    print(f"{path.name}: executed in {time.perf_counter() - start:.1f} s (full mode)")
    judge = probing.Judge(path.parent.name, seed)
    failed = {}
    for name in grading.exercise_names(nb):
        verdict = judge.verdict(tmp_path, name)
        if not verdict.passed:
            failed[name] = verdict.message
    assert not failed, f"the grader failed the solution: {failed}"


@pytest.mark.parametrize("path", SOLUTION_NOTEBOOKS, ids=IDS)
def test_solution_notebook_is_stored_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"outputs in {cell.id}"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", SOLUTION_NOTEBOOKS, ids=IDS)
def test_first_code_cell_is_the_colab_setup_cell(path):
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.source == runtime.setup_cell_source(), (
        f"{path.name}: the first code cell must be the setup cell; "
        "paste the output of `python -m genlab.runtime`"
    )


@pytest.mark.parametrize("path", SOLUTION_NOTEBOOKS, ids=IDS)
def test_exercises_follow_the_cell_convention(path):
    nb = nbformat.read(path, as_version=4)
    cells = grading.graded_cells(nb)
    for name in grading.exercise_names(nb):
        answer, test = cells[name], cells[grading.TEST_PREFIX + name]
        assert f"def {name}(" in answer.source or f"class {name}(" in answer.source, name
        assert grading.BEGIN_SOLUTION in answer.source and grading.END_SOLUTION in answer.source
        assert test.metadata.nbgrader.get("points", 0) > 0, f"test_{name} has no points"
        hidden = test.source.split("### BEGIN HIDDEN TESTS")[-1]
        call = f'probe("{path.parent.name}", "{name}", globals())'
        assert call in hidden, f"test_{name}: its hidden tests must be the probe call {call}"
    graded_tests = [g for g, c in cells.items() if c.metadata.nbgrader.get("grade")]
    orphans = set(graded_tests) - {grading.TEST_PREFIX + n for n in grading.exercise_names(nb)}
    if path.stem == path.parent.name:
        assert grading.exercise_names(nb), "a chapter's main notebook needs graded exercises"
        probes = set(probing.probes_for(path.parent.name))
        assert probes == set(grading.exercise_names(nb)), "every exercise needs exactly one probe"
    assert not orphans, f"graded cells without an answer cell: {orphans}"
