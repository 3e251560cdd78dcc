"""Classroom steps, one function (and one ``genlab`` subcommand) each, on top of nbgrader.

A course is a folder with ``nbgrader_config.py`` (the repository root is one): ``solutions/`` is
nbgrader's source, ``chapters/`` its release, and ``submitted/``, ``autograded/``, ``feedback/``
and ``gradebook.db`` are nbgrader's usual places. ``reports/CH.csv`` is the class report.

    release   nbgrader generate_assignment CH (also records the chapter in the gradebook)
    collect   copy a folder of submissions, or an LMS zip (nbgrader zip_collect), to submitted/
    grade     parallel, isolated autograde (genlab.classroom.grade) + report + integrity scan
    feedback  nbgrader generate_feedback (hidden tests removed, see genlab.classroom.feedback)
    export    nbgrader export to a CSV of grades
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from genlab.classroom.grade import (
    GradingRefused,
    Layout,
    autograde,
    check_student_id,
    record_hashes,
)
from genlab.classroom.limits import Limits, private_env
from genlab.classroom.report import Row, build_row, format_table, write_csv
from genlab.classroom.sandbox import sandbox_problem


class ClassroomError(RuntimeError):
    """A classroom step failed; the message says which and why."""


def nbgrader(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in the course folder (Jupyter state kept in a temp dir)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="genlab-nbgrader-") as tmp:
        env = private_env(Path(tmp))
        done = subprocess.run(
            [sys.executable, "-m", "nbgrader", *args], cwd=root, env=env,
            capture_output=True, text=True,
        )  # fmt: skip
    if check and done.returncode != 0:
        raise ClassroomError(f"nbgrader {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


def copy_sources(root: Path, repo: Path, chapters) -> None:
    """Put ``repo``'s nbgrader config and the ``chapters``' sources (``solutions/CH``, replacing
    older copies) into the course folder ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(repo / "nbgrader_config.py", root / "nbgrader_config.py")
    for chapter in chapters:
        target = root / "solutions" / chapter
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(repo / "solutions" / chapter, target)


def release(root: Path, chapter: str) -> Path:
    """Generate the student version of ``chapter``; return its folder."""
    nbgrader(root, "generate_assignment", chapter, "--force")
    return root / "chapters" / chapter


def _copy_submission(files: list[Path], target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for path in files:
        if path.is_dir():
            shutil.copytree(path, target / path.name)
        else:
            shutil.copy2(path, target / path.name)


def collect(root: Path, chapter: str, source: Path) -> list[str]:
    """Put submissions of ``chapter`` into ``submitted/ID/chapter``; return the student ids.

    ``source`` is a folder with one subfolder per student (holding either ``chapter/`` or the
    notebook files themselves), or an LMS zip file of files named
    ``..._<id>_attempt_<timestamp>_<notebook>`` (see nbgrader_config.py), which nbgrader's
    ``zip_collect`` unpacks.
    """
    source = Path(source)
    if source.is_file() and source.suffix == ".zip":
        archive = root / "downloaded" / chapter / "archive"
        archive.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, archive / source.name)
        nbgrader(root, "zip_collect", chapter, "--force")
    elif source.is_dir():
        for folder in sorted(p for p in source.iterdir() if p.is_dir()):
            student = check_student_id(folder.name)
            inner = folder / chapter
            files = sorted((inner if inner.is_dir() else folder).iterdir())
            _copy_submission(files, root / "submitted" / student / chapter)
    else:
        raise ClassroomError(f"{source}: expected a folder of student folders or a .zip file")
    submitted = root / "submitted"
    students = sorted(p.parent.name for p in submitted.glob(f"*/{chapter}") if p.is_dir())
    record_hashes(Layout(root), chapter, students)  # what is graded later must match these
    return students


def chapter_cells(root: Path, chapter: str) -> dict[str, set[str]]:
    """``{notebook name: grade ids of its answer and test cells}`` from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(Layout(root).db_url) as gb:
        assignment = gb.find_assignment(chapter)
        return {
            nb.name: {c.name for c in nb.grade_cells} | {c.name for c in nb.solution_cells}
            for nb in assignment.notebooks
        }


def grade(root: Path, chapter: str, students=None, *, workers: int = 2,
          limits: Limits | None = None, progress: bool = True, sandbox: bool = True,
          seed: int | None = None, warm: bool = True,
          timings: dict[str, float] | None = None) -> list[Row]:  # fmt: skip
    """Autograde the class in sandboxes on ``workers`` processes; update ``reports/CH.csv``
    (other students' rows are kept); return the rows of the students graded now.

    ``sandbox=False`` (``--unsafe-no-sandbox``) grades without bubblewrap; every row says so.
    The instructor's solution is graded first, as a canary: unless it scores full marks,
    :class:`ClassroomError` says why (its first kernel error) and no student is graded.
    ``warm``: run the solution once first to fill the compilation cache the sandboxes read.
    ``timings``: see :func:`genlab.classroom.grade.autograde`.
    """
    if sandbox:
        problem = sandbox_problem()
        if problem:
            raise ClassroomError(
                f"cannot grade in a sandbox: {problem}. Fix that, or grade "
                "unsafely with --unsafe-no-sandbox (every row will say so)."
            )
    layout = Layout(root)
    notebooks = chapter_cells(root, chapter)
    try:
        runs = autograde(layout, chapter, students, notebooks=notebooks, workers=workers,
                         limits=limits, progress=progress, sandbox=sandbox, seed=seed,
                         warm=warm, timings=timings)  # fmt: skip
    except GradingRefused as error:
        raise ClassroomError(str(error)) from None
    rows = [build_row(layout, chapter, s, run, notebooks) for s, run in runs.items()]
    write_csv(rows, root / "reports" / f"{chapter}.csv")
    return rows


def feedback(root: Path, chapter: str) -> list[Path]:
    """Feedback HTML for every graded student of ``chapter`` (hidden tests removed)."""
    nbgrader(root, "generate_feedback", chapter, "--force")
    return sorted((root / "feedback").glob(f"*/{chapter}/*.html"))


def export(root: Path, to: Path) -> Path:
    """Every student's grade on every chapter as CSV (nbgrader's exporter)."""
    nbgrader(root, "export", f"--to={Path(to).resolve()}")
    return Path(to)


__all__ = [
    "ClassroomError", "Limits", "Row", "collect", "export", "feedback", "format_table", "grade",
    "release",
]  # fmt: skip
