"""Parallel, isolated autograding of a class, merged into one gradebook.

Each student is graded by its own ``nbgrader autograde CH --student ID`` process in a private
temporary course: a copy of the course configuration, the chapter's source, a gradebook holding
only the assignment (no other student), and a copy of that one student's submission. The
process runs under :class:`~genlab.classroom_limits.Limits` with a temporary home. When it ends,
the parent (and only the parent, so SQLite has a single writer) copies the scores into the course
gradebook, the autograded notebook into ``autograded/ID/CH`` and nbgrader's log into
``logs/CH/ID.log``. N students run at once on a
thread pool whose threads only wait for their subprocess.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from genlab.classroom_limits import Limits, private_env, run_limited

SAFE_ID = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@")


@dataclass(frozen=True)
class Layout:
    """Where a course keeps things (nbgrader's defaults, the source folder from its config)."""

    root: Path
    source: str = "solutions"

    @property
    def db_path(self) -> Path:
        return self.root / "gradebook.db"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path.resolve()}"

    def submitted(self, student: str, chapter: str) -> Path:
        return self.root / "submitted" / student / chapter

    def autograded(self, student: str, chapter: str) -> Path:
        return self.root / "autograded" / student / chapter


@dataclass
class GradeRun:
    """What one student's grading process produced (plain data, read from its gradebook)."""

    student: str
    chapter: str
    returncode: int
    timed_out: bool
    seconds: float
    log: str
    # {notebook: {grade_id: (auto_score, needs_manual_grade)}}; empty when nothing was graded.
    grades: dict = field(default_factory=dict)
    comments: dict = field(default_factory=dict)  # {notebook: {comment_id: auto_comment}}
    timestamp: object = None

    @property
    def graded(self) -> bool:
        return self.returncode == 0 and bool(self.grades) and not self.timed_out


def check_student_id(student: str) -> str:
    if not student or student.startswith(".") or not set(student) <= SAFE_ID:
        raise ValueError(f"student id {student!r}: use letters, digits, '_', '-', '.', '@'")
    return student


def template_gradebook(layout: Layout, chapter: str, folder: Path) -> Path:
    """A copy of the course gradebook that keeps the assignments and drops every student."""
    from nbgrader.api import Gradebook, MissingEntry

    if not layout.db_path.exists():
        raise FileNotFoundError(f"{layout.db_path}: release the chapter first (genlab release)")
    path = folder / "template.db"
    shutil.copy(layout.db_path, path)
    with Gradebook(f"sqlite:///{path}") as gb:
        try:
            gb.find_assignment(chapter)
        except MissingEntry:
            raise LookupError(f"{chapter!r} is not in {layout.db_path}; release it first") from None
        for student in list(gb.students):
            gb.remove_student(student.id)
    return path


def _read_run(db: Path, chapter: str, student: str, run: GradeRun) -> None:
    from nbgrader.api import Gradebook, MissingEntry

    if not db.exists():
        return
    with Gradebook(f"sqlite:///{db}") as gb:
        try:
            submission = gb.find_submission(chapter, student)
        except MissingEntry:
            return
        run.timestamp = submission.timestamp
        for notebook in submission.notebooks:
            run.grades[notebook.name] = {
                g.name: (g.auto_score, g.needs_manual_grade) for g in notebook.grades
            }
            run.comments[notebook.name] = {c.name: c.auto_comment for c in notebook.comments}


def grade_one(layout: Layout, template: Path, chapter: str, student: str, limits: Limits):
    """Grade one student's submission in a private temporary course; return a GradeRun."""
    with tempfile.TemporaryDirectory(prefix="genlab-grade-") as tmp:
        work = Path(tmp) / "course"
        work.mkdir()
        shutil.copy(layout.root / "nbgrader_config.py", work)
        shutil.copy(template, work / "gradebook.db")
        shutil.copytree(layout.root / layout.source / chapter, work / layout.source / chapter)
        shutil.copytree(layout.submitted(student, chapter), work / "submitted" / student / chapter)
        command = [
            sys.executable, "-m", "nbgrader", "autograde", chapter, "--student", student,
            "--force", f"--Execute.timeout={limits.cell_seconds}",
            f"--ResilientExecute.max_output_chars={limits.output_chars}",
        ]  # fmt: skip
        done = run_limited(
            command, cwd=work, env=private_env(Path(tmp) / "state"), limits=limits,
            log=Path(tmp) / "autograde.log",
        )  # fmt: skip
        run = GradeRun(student, chapter, done.returncode, done.timed_out, done.seconds, done.log)
        logs = layout.root / "logs" / chapter
        logs.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(tmp) / "autograde.log", logs / f"{student}.log")
        if not done.timed_out:
            _read_run(work / "gradebook.db", chapter, student, run)
        target = layout.autograded(student, chapter)
        if target.exists():
            shutil.rmtree(target)
        produced = work / "autograded" / student / chapter
        if run.graded and produced.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(produced, target)
        return run


def merge(layout: Layout, run: GradeRun) -> None:
    """Write one GradeRun into the course gradebook (scores 0 when nothing was graded)."""
    from nbgrader.api import Gradebook

    with Gradebook(layout.db_url) as gb, warnings.catch_warnings():
        # nbgrader's own submission factory triggers a harmless SQLAlchemy autoflush warning.
        warnings.simplefilter("ignore")
        gb.update_or_create_student(run.student)
        extra = {"timestamp": run.timestamp} if run.timestamp else {}
        submission = gb.update_or_create_submission(run.chapter, run.student, **extra)
        for notebook in submission.notebooks:
            grades = run.grades.get(notebook.name, {}) if run.graded else {}
            for grade in notebook.grades:
                score, manual = grades.get(grade.name, (0.0, False))
                grade.auto_score = score or 0.0
                grade.needs_manual_grade = bool(manual)
            comments = run.comments.get(notebook.name, {}) if run.graded else {}
            for comment in notebook.comments:
                comment.auto_comment = comments.get(comment.name)
        gb.db.commit()


def students_of(layout: Layout, chapter: str) -> list[str]:
    folder = layout.root / "submitted"
    if not folder.is_dir():
        return []
    return sorted(p.parent.name for p in folder.glob(f"*/{chapter}") if p.is_dir())


def autograde(
    layout: Layout,
    chapter: str,
    students=None,
    *,
    workers: int = 2,
    limits: Limits | None = None,
    progress: bool = True,
) -> dict[str, GradeRun]:
    """Grade ``students`` (default: everyone with a submission) on ``workers`` processes."""
    from tqdm.auto import tqdm

    limits = Limits() if limits is None else limits

    students = [check_student_id(s) for s in (students or students_of(layout, chapter))]
    runs: dict[str, GradeRun] = {}
    with tempfile.TemporaryDirectory(prefix="genlab-template-") as tmp:
        template = template_gradebook(layout, chapter, Path(tmp))
        bar = tqdm(total=len(students), desc=f"grading {chapter}", unit="student",
                   disable=not progress)  # fmt: skip
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {
                pool.submit(grade_one, layout, template, chapter, s, limits): s for s in students
            }
            for future in as_completed(futures):
                run = future.result()
                merge(layout, run)  # the parent is the only writer of the course gradebook
                runs[run.student] = run
                bar.set_postfix_str(run.student)
                bar.update()
        bar.close()
    return {s: runs[s] for s in students}
