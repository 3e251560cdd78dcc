"""Benchmark: the course as students and instructors feel it.

Each solution notebook's wall time in full and fast mode (``GENLAB_FAST=1``) against the budgets
(design section 4: under 3 minutes on 2 cores, under 1 minute fast), and nbgrader autograding:
seconds per submission, serial and on 2 workers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from bench.harness import ROOT, Table
from genlab import classroom, grading, probing

FULL_BUDGET, FAST_BUDGET = 180.0, 60.0


def notebook_seconds(path: Path, *, fast: bool) -> float:
    """Wall time of executing ``path`` top to bottom in a fresh kernel."""
    saved = os.environ.pop("GENLAB_FAST", None)
    if fast:
        os.environ["GENLAB_FAST"] = "1"
    try:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=900, resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        client.execute()
        return time.perf_counter() - start
    finally:
        os.environ.pop("GENLAB_FAST", None)
        if saved is not None:
            os.environ["GENLAB_FAST"] = saved


def _tiny_notebook(folder: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from genlab import runtime"),
        nbformat.v4.new_code_cell("print(runtime.fast_or_full(1, 2))"),
    ]
    path = folder / "tiny.ipynb"
    nbformat.write(nb, path)
    return path


def notebook_table(quick: bool) -> Table:
    table = Table(
        "Chapter notebooks: wall time",
        ["notebook", "full (s)", "fast (s)", "fast / full", "budget"],
        notes=[
            f"Each solution notebook executed top to bottom in a fresh kernel; budgets "
            f"{FULL_BUDGET:.0f} s full, {FAST_BUDGET:.0f} s fast (design section 4)."
        ],
    )
    if quick:
        paths = [_tiny_notebook(Path(tempfile.mkdtemp(prefix="genlab-bench-")))]
    else:
        paths = sorted((ROOT / "solutions").glob("*/*.ipynb"))
    for path in paths:
        full, fast = notebook_seconds(path, fast=False), notebook_seconds(path, fast=True)
        verdict = "ok" if full <= FULL_BUDGET and fast <= FAST_BUDGET else "OVER"
        table.add(path.name, full, fast, fast / full, verdict)
        print(" | ".join(table.rows[-1]), flush=True)
    return table


def _course(root: Path, chapter: str, quick: bool) -> tuple[Path, nbformat.NotebookNode]:
    """A temporary course holding one chapter's source; returns it and the solution notebook."""
    root.mkdir(parents=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    source = root / "solutions" / chapter
    if quick:  # the test suite's two-exercise notebook (tests/ is on sys.path there)
        from tiny_notebooks import tiny_notebook

        source.mkdir(parents=True)
        nbformat.write(tiny_notebook(), source / f"{chapter}.ipynb")
    else:
        shutil.copytree(ROOT / "solutions" / chapter, source)
    classroom.release(root, chapter)
    return root, nbformat.read(source / f"{chapter}.ipynb", as_version=4)


def autograde_table(quick: bool) -> Table:
    """Seconds per submission graded serially and on 2 workers, in the same run."""
    chapter, students = ("tiny", 2) if quick else ("00_jax_primer", 4)
    table = Table(
        "Autograding: seconds per submission, serial vs 2 workers",
        ["chapter", "submissions", "serial (s each)", "2 workers (s each)", "speed-up",
         "same scores"],
        notes=[
            "`genlab grade` (one isolated `nbgrader autograde` process per student) on copies "
            "of the filled-in solution, first with 1 worker, then in a fresh course with 2. "
            "Wall time divided by the number of submissions."
        ],
    )  # fmt: skip
    seconds, scores = {}, {}
    top = Path(tempfile.mkdtemp(prefix="genlab-bench-grade-"))
    for workers in (1, 2):
        root, solution = _course(top / f"workers-{workers}", chapter, quick)
        _filled_class(root, chapter, solution, students)
        start = time.perf_counter()
        rows = classroom.grade(root, chapter, workers=workers, progress=False)
        seconds[workers] = (time.perf_counter() - start) / students
        scores[workers] = sorted((r.student, r.score) for r in rows)
    shutil.rmtree(top, ignore_errors=True)
    table.add(chapter, students, seconds[1], seconds[2], seconds[1] / seconds[2],
              "yes" if scores[1] == scores[2] else "NO")  # fmt: skip
    return table


def _filled_class(root: Path, chapter: str, solution, students: int) -> None:
    release = root / "chapters" / chapter / f"{chapter}.ipynb"
    filled = grading.fill_answers(nbformat.read(release, as_version=4), solution)
    for i in range(students):
        folder = root / "submitted" / f"student{i}" / chapter
        folder.mkdir(parents=True)
        nbformat.write(filled, folder / f"{chapter}.ipynb")


def sandbox_table(quick: bool) -> Table:
    """Seconds per submission with and without the sandbox (one worker), same scores."""
    chapter, students = ("tiny", 2) if quick else ("00_jax_primer", 3)
    table = Table(
        "Autograding: the sandbox's cost",
        ["chapter", "submissions", "no sandbox (s each)", "sandbox (s each)", "sandbox / none",
         "references (s per class)", "same scores"],
        notes=[
            "`genlab grade --workers 1` on copies of the filled-in solution, in one fresh course "
            "per mode: `--unsafe-no-sandbox`, then the bubblewrap sandbox. Both decide the score "
            "outside the kernel; 'references' is the trusted side's one-off cost per class "
            "(computing the reference on every probe), included in the per-submission times."
        ],
    )  # fmt: skip
    seconds, scores, judge = {}, {}, 0.0
    top = Path(tempfile.mkdtemp(prefix="genlab-bench-sandbox-"))
    for sandbox in (False, True):
        root, solution = _course(top / f"sandbox-{sandbox}", chapter, quick)
        _filled_class(root, chapter, solution, students)
        start = time.perf_counter()
        rows = classroom.grade(root, chapter, workers=1, progress=False, sandbox=sandbox, seed=1)
        seconds[sandbox] = (time.perf_counter() - start) / students
        scores[sandbox] = sorted((r.student, r.score) for r in rows)
    start = time.perf_counter()
    judge_all = probing.Judge(chapter, 2)
    for name in judge_all.specs:
        judge_all.expected(name)
    judge = time.perf_counter() - start
    shutil.rmtree(top, ignore_errors=True)
    table.add(chapter, students, seconds[False], seconds[True], seconds[True] / seconds[False],
              judge, "yes" if scores[False] == scores[True] else "NO")  # fmt: skip
    return table


def run(quick: bool = False) -> list[Table]:
    return [notebook_table(quick), autograde_table(quick), sandbox_table(quick)]
