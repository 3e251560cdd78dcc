"""Classroom steps, one function (and one ``genlab`` subcommand) each, on top of nbgrader.

A course is a folder with ``nbgrader_config.py`` (the repository root is one): ``solutions/`` is
nbgrader's source, ``chapters/`` its release, and ``submitted/``, ``autograded/``, ``feedback/``
and ``gradebook.db`` are nbgrader's usual places. ``reports/CH.csv`` is the class report.

    release   nbgrader generate_assignment CH (also records the chapter in the gradebook)
    collect   copy a folder of submissions, or an LMS zip (genlab.classroom.collect), to submitted/
    grade     parallel, isolated autograde (genlab.classroom.grade) + report + integrity scan
    feedback  nbgrader generate_feedback (hidden tests removed, see genlab.classroom.feedback)
    export    nbgrader export to a CSV of grades
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from genlab.classroom.collect import folder_digest, read_zip, write_timestamp
from genlab.classroom.grade import (
    GradingRefused,
    Layout,
    autograde,
    check_student_id,
    copy_regular_files,
    record_hashes,
    students_of,
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


@dataclass
class Collection:
    """The result of :func:`collect`: each student's status (``new``, ``updated`` or
    ``unchanged``) and the files left out, as ``(file, reason)``."""

    status: dict[str, str] = field(default_factory=dict)
    unmatched: list[tuple[str, str]] = field(default_factory=list)

    @property
    def students(self) -> list[str]:
        return sorted(self.status)

    def summary(self, chapter: str) -> str:
        counts = {s: sum(v == s for v in self.status.values()) for s in COLLECT_STATUSES}
        lines = [f"{len(self.status)} submissions of {chapter}: "
                 + ", ".join(f"{n} {s}" for s, n in counts.items())]  # fmt: skip
        lines += [f"  {student}: {status}" for student, status in sorted(self.status.items())]
        if self.unmatched:
            lines.append(f"{len(self.unmatched)} files not collected:")
            lines += [f"  {name}: {reason}" for name, reason in self.unmatched]
        return "\n".join(lines)


COLLECT_STATUSES = ("new", "updated", "unchanged")


def _release_hint(chapter: str) -> str:
    return f"run `genlab release {chapter}` (make release-chapter CH={chapter}) first"


def released_notebooks(root: Path, chapter: str) -> set[str]:
    """The notebook files of ``chapter``'s release; ClassroomError, naming the release command,
    when the chapter has none."""
    folder = root / "chapters" / chapter
    names = {p.name for p in folder.glob("*.ipynb")}
    if not names:
        known = sorted(p.name for p in (root / "solutions").glob("*") if p.is_dir())
        hint = (_release_hint(chapter) if chapter in known
                else f"the course's chapters are {', '.join(known) or 'none'}")  # fmt: skip
        raise ClassroomError(f"{chapter} has not been released (no {folder}): {hint}")
    return names


def roster(root: Path) -> set[str]:
    """The students the course knows: the gradebook's and those with a submitted folder."""
    known = {p.name for p in (root / "submitted").glob("*") if p.is_dir()}
    if (root / "gradebook.db").is_file():
        from nbgrader.api import Gradebook

        with Gradebook(Layout(root).db_url) as gb:
            known |= {s.id for s in gb.students}
    return known


def _put(staged: Path, target: Path) -> str:
    """Move the staged submission to ``target`` unless identical; return its status."""
    before = folder_digest(target)
    if before == folder_digest(staged):
        return "unchanged"
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staged), target)
    return "updated" if before else "new"


def collect(root: Path, chapter: str, source: Path, *, tz: str = "UTC") -> Collection:
    """Put submissions of the released ``chapter`` into ``submitted/ID/chapter``.

    ``source`` is a folder with one subfolder per student id (holding either ``chapter/`` or the
    notebook files themselves), or an LMS zip (Blackboard, Canvas or Moodle names, with the
    submission time kept in ``timestamp.txt``: :mod:`genlab.classroom.collect`; ``tz``: the
    LMS's time zone). Files that match no naming rule are listed in the result's ``unmatched``
    (hidden files of a folder, like ``.DS_Store``, are skipped); ClassroomError when ``chapter``
    has not been released.
    """
    import tempfile

    source = Path(source)
    notebooks = released_notebooks(root, chapter)
    result = Collection()
    with tempfile.TemporaryDirectory(prefix="genlab-collect-") as tmp:
        staged = {}
        if source.is_file() and source.suffix == ".zip":
            found = read_zip(source, chapter, notebooks, roster(root), tz, check_student_id)
            result.unmatched = found.unmatched
            with zipfile.ZipFile(source) as archive:
                for student, entries in found.entries.items():
                    folder = staged[student] = Path(tmp) / student
                    folder.mkdir()
                    for entry in entries:
                        (folder / entry.file).write_bytes(archive.read(entry.member))
                    write_timestamp(folder, max(e.time for e in entries))
        elif source.is_dir():
            entries = sorted(p for p in source.iterdir() if not p.name.startswith("."))
            for folder in (p for p in entries if p.is_dir()):
                try:
                    student = check_student_id(folder.name)
                except ValueError as error:
                    result.unmatched.append((str(folder), str(error)))
                    continue
                inner = folder / chapter
                staged[student] = Path(tmp) / student
                copy_regular_files(inner if inner.is_dir() else folder, staged[student])
            result.unmatched += [(str(p), "a file, not a student's folder")
                                 for p in entries if not p.is_dir()]  # fmt: skip
        else:
            raise ClassroomError(f"{source}: expected a folder of student folders or a .zip file")
        for student, folder in sorted(staged.items()):
            result.status[student] = _put(folder, root / "submitted" / student / chapter)
    record_hashes(Layout(root), chapter, result.students)  # grading checks the copy against these
    return result


def chapter_cells(root: Path, chapter: str) -> dict[str, set[str]]:
    """``{notebook name: grade ids of its answer and test cells}`` from the gradebook."""
    from nbgrader.api import Gradebook, MissingEntry

    released_notebooks(root, chapter)
    missing = ClassroomError(f"{chapter} is not in the gradebook: {_release_hint(chapter)}")
    if not (root / "gradebook.db").is_file():
        raise missing  # opening the gradebook would create an empty one
    with Gradebook(Layout(root).db_url) as gb:
        try:
            assignment = gb.find_assignment(chapter)
        except MissingEntry:
            raise missing from None
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
    notebooks = chapter_cells(root, chapter)
    layout = Layout(root)
    students = [check_student_id(s) for s in students] if students else None
    unknown = [s for s in students or () if not layout.submitted(s, chapter).is_dir()]
    if unknown:
        raise ClassroomError(f"no submission of {chapter} by {', '.join(map(repr, unknown))}: "
                             f"collect it first (the submitted are "
                             f"{', '.join(students_of(layout, chapter)) or 'none'})")  # fmt: skip
    if sandbox:
        problem = sandbox_problem()
        if problem:
            raise ClassroomError(
                f"cannot grade in a sandbox: {problem}. Fix that, or grade "
                "unsafely with --unsafe-no-sandbox (every row will say so)."
            )
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
    """Feedback HTML for every graded student of ``chapter`` (hidden tests removed), and for
    every student whose submission could not be graded (the report's status ``failed``) a page
    saying why."""
    import csv
    import html

    nbgrader(root, "generate_feedback", chapter, "--force")
    report = root / "reports" / f"{chapter}.csv"
    rows = []
    if report.exists():
        with open(report, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    for row in (r for r in rows if r["status"] == "failed"):
        folder = root / "feedback" / row["student"] / chapter
        folder.mkdir(parents=True, exist_ok=True)
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in row["reasons"].split(" | ") if r)
        for name in sorted(released_notebooks(root, chapter)):
            page = folder / (Path(name).stem + ".html")
            page.write_text(
                f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(chapter)}"
                f"</title></head><body><h1>{html.escape(chapter)}: not graded</h1><p>Your "
                f"submission scored {html.escape(row['score'])} of {html.escape(row['max_score'])}"
                f" because it could not be graded:</p><ul>{reasons}</ul><p>Fix it and hand it "
                "in again, or ask your instructor.</p></body></html>\n",
                encoding="utf-8",
            )
    return sorted((root / "feedback").glob(f"*/{chapter}/*.html"))


EXPORT_COLUMNS = ("status", "flags", "reasons")


def export(root: Path, to: Path) -> Path:
    """Every student's grade on every chapter as CSV, sorted by student then chapter.

    nbgrader's export (its ``timestamp`` column is the submission time collected) with the class
    reports' ``status``, ``flags`` and ``reasons`` (``reports/CH.csv``) beside each grade; a
    student the report does not list for a chapter has status ``not graded``.
    """
    import csv
    import tempfile

    to = Path(to).resolve()
    with tempfile.TemporaryDirectory(prefix="genlab-export-") as tmp:
        raw = Path(tmp) / "nbgrader.csv"
        nbgrader(root, "export", f"--to={raw}")
        with open(raw, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            header = list(rows[0]) if rows else ["assignment", "student_id", "score", "max_score"]
    reports = {}
    for path in sorted((root / "reports").glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if {"student", "chapter", "status"} <= set(row):
                    reports[row["student"], row["chapter"]] = row
    for row in rows:
        report = reports.get((row["student_id"], row["assignment"]), {})
        row["status"] = report.get("status", "not graded")
        row["flags"], row["reasons"] = report.get("flags", ""), report.get("reasons", "")
    rows.sort(key=lambda r: (r["student_id"], r["assignment"]))
    to.parent.mkdir(parents=True, exist_ok=True)
    with open(to, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header + list(EXPORT_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return to


__all__ = [
    "ClassroomError", "Limits", "Row", "collect", "export", "feedback", "format_table", "grade",
    "release",
]  # fmt: skip
