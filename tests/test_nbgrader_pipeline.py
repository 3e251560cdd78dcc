"""The real nbgrader pipeline in a temporary course, for the newest chapter (the demo class grades
chapters 00 and 01 end to end, tests/test_classroom.py; the JupyterHub class grades chapter 00,
tests/test_hub.py).

One chapter end to end is what the pipeline proves that nothing else does: nbgrader re-inserting
the hidden tests, the sandbox and its limits, the verdict read back from the gradebook. Every
chapter's solution is judged by the trusted side in full mode (tests/test_notebooks.py) and its
tests against mutants in fast mode (tests/test_mutants.py); a sandboxed graded run of every
chapter cost about 2.5 min each in CI (issue 18's budget).

One course per chapter: ``nbgrader generate_assignment`` from a copy of ``solutions/CH``, then
submissions from two "students", graded by ``genlab.classroom.steps.grade`` (the warm-up, the
canary, then one sandboxed ``nbgrader autograde --student`` per student, both at once, the verdict
outside the kernel), and scores read back from the gradebook:

- ``solution``: the release with every answer filled in from the solution -> full marks, in the
  sandbox and its limits (what the notebook test, run outside it, cannot show);
- ``blank``: the untouched release -> zero autograded points, no crash.

A wrong answer losing points exactly on its exercise is shown through this pipeline by the demo
class (``partial`` rows of chapters 00 and 01), and for every function of every chapter by the
mutant test's leak check (tests/test_mutants.py), in the kernel it already runs: a third
submission per chapter here cost a full graded run for one function. A corrupt notebook and the
other ways a submission can go wrong are the demo class's job (tests/test_classroom.py). Every
chapter's release is regenerated and compared with ``chapters/`` (in sync with ``solutions/``).
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from genlab.classroom import grading, steps
from genlab.classroom.demo import CHAPTERS as DEMO_CHAPTERS
from genlab.classroom.limits import Limits

from conftest import CHAPTERS, RELEASE, ROOT, SOLUTIONS

PIPELINE_CHAPTERS = [c for c in CHAPTERS if c not in DEMO_CHAPTERS][-1:]


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def tree_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def released(tmp: Path, chapter: str) -> Path:
    """A temporary course holding ``chapter``'s source, released by nbgrader."""
    course = tmp / f"course-{chapter}"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(SOLUTIONS / chapter, course / "solutions" / chapter)
    generated = nbgrader(course, "generate_assignment", chapter, "--force")
    assert generated.returncode == 0, generated.stdout + generated.stderr
    return course


@pytest.fixture(scope="module", params=PIPELINE_CHAPTERS)
def course(request, tmp_path_factory):
    """A graded temporary course for one chapter: (chapter, course dir, autograde result)."""
    chapter = request.param
    course = released(tmp_path_factory.mktemp("pipeline"), chapter)

    release = course / "chapters" / chapter
    name = f"{chapter}.ipynb"
    release_nb = nbformat.read(release / name, as_version=4)
    solution_nb = nbformat.read(SOLUTIONS / chapter / name, as_version=4)
    submissions = {"solution": grading.fill_answers(release_nb, solution_nb), "blank": release_nb}
    for student, nb in submissions.items():
        folder = course / "submitted" / student / chapter
        shutil.copytree(release, folder)
        nbformat.write(nb, folder / name)

    # The warm-up trains the chapter's models once (outside the sandbox) for the canary and both
    # students, who read them: cold, each sandboxed run of chapter 07 trained them again (fast
    # mode, quiet machine: 311 s cold, 83 s with the caches warm).
    rows = steps.grade(course, chapter, workers=2, limits=Limits(), progress=False)
    return {
        "chapter": chapter,
        "course": course,
        "name": name,
        "rows": {row.student: row for row in rows},
        "output": "\n".join(f"{r.student}: {r.status} {r.reasons}" for r in rows),
    }


def scores(course: dict, student: str) -> dict[str, tuple]:
    return grading.read_scores(
        course["course"] / "gradebook.db", course["chapter"], course["chapter"], student
    )


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_release_matches_committed_chapters(chapter, tmp_path):
    generated = released(tmp_path, chapter) / "chapters" / chapter
    committed = RELEASE / chapter
    assert committed.is_dir(), f"chapters/{chapter} is missing: run `make release`"
    assert tree_files(generated) == tree_files(committed), "run `make release` and commit"
    _, mismatch, errors = filecmp.cmpfiles(
        generated, committed, sorted(tree_files(generated)), shallow=False
    )
    assert not mismatch and not errors, (
        f"chapters/ out of sync in {mismatch + errors}: run `make release`"
    )


def test_solution_scores_full_marks(course):
    """Every test cell earns its points; a challenge's are extra credit (max_score 0 in the
    gradebook, the points on top of the chapter's maximum)."""
    got = scores(course, "solution")
    release = course["course"] / "chapters" / course["chapter"] / course["name"]
    release_nb = nbformat.read(release, as_version=4)
    cells = grading.graded_cells(release_nb)
    points = {cell: float(cells[cell].metadata.nbgrader["points"]) for cell in got}
    bonus = {grading.TEST_PREFIX + name for name in grading.challenge_names(release_nb)}
    lost = {cell: s for cell, s in got.items() if s[0] != points[cell]}
    assert got and not lost, f"solution lost points on {lost}\n{course['output'][-3000:]}"
    assert {cell for cell, (_, max_score) in got.items() if max_score == 0} == bonus
    row = course["rows"]["solution"]
    assert row.bonus == sum(points[cell] for cell in bonus)
    assert row.score == row.max_score + row.bonus


def test_blank_release_scores_zero_without_crashing(course):
    got = scores(course, "blank")
    assert sum(score for score, _ in got.values()) == 0, got
    assert sum(max_score for _, max_score in got.values()) > 0


def test_every_submission_was_graded_without_flags(course):
    for student, row in course["rows"].items():
        assert row.status == "graded" and not row.flags, (student, row)
        assert (course["course"] / "autograded" / student / course["chapter"]).is_dir()
