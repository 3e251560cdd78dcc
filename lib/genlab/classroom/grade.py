"""Sandboxed, parallel autograding of a class; the score is decided outside the student's kernel.

For each student, in a private temporary folder:

1. the submission is copied (and hashed: the copy is what is scanned and graded) into a scratch
   course with the chapter's configuration and a gradebook that holds only the assignment (the
   release's cells, no solutions, no other student);
2. ``nbgrader autograde CH --student ID`` runs inside the sandbox (:mod:`genlab.classroom.sandbox`)
   under :class:`~genlab.classroom.limits.Limits`. nbgrader restores locked cells and runs the
   notebook; each graded test cell's hidden part records the student's outputs on probe inputs
   drawn from a seed chosen now (:mod:`genlab.probing`);
3. after the sandbox is gone, this (trusted) process reads the records, recomputes the references
   on the same probes (once per class, see :class:`genlab.probing.Judge`), and writes the scores
   into the course gradebook. Nothing the kernel printed, replied or wrote into nbgrader's
   scratch gradebook counts. The autograded notebook is kept for feedback, with each test cell's
   outputs capped and the grader's one-line verdict added.

N students run at once on a thread pool whose threads only wait for their sandbox; only the main
thread judges and writes the course gradebook, so SQLite has a single writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from genlab import model_cache, probing, runtime
from genlab.classroom import grading
from genlab.classroom.limits import Limits, run_limited, state_env
from genlab.classroom.sandbox import (
    INSIDE,
    bwrap_command,
    prepare_scratch,
    sandbox_env,
    sandbox_uid,
)

SAFE_ID = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@")
NO_SANDBOX = "graded WITHOUT a sandbox (--unsafe-no-sandbox): the score may be forged"
MAX_NOTEBOOK_BYTES = 64 << 20
MAX_CELL_OUTPUT_CHARS = 5_000
VERDICT_PREFIX = "Grader: "


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

    def graded(self, student: str, chapter: str) -> Path:
        """The copy of the submission that was scanned and graded."""
        return self.root / "graded" / student / chapter

    def hashes(self, chapter: str) -> Path:
        return self.root / "hashes" / f"{chapter}.json"


@dataclass
class GradeRun:
    """What grading one student produced: how the sandbox ended and the trusted verdicts."""

    student: str
    chapter: str
    returncode: int
    timed_out: bool
    seconds: float
    log: str
    verdicts: dict = field(default_factory=dict)  # {test cell grade_id: probing.Verdict}
    digests: dict = field(default_factory=dict)  # {exercise: first line of its .done pipe}
    notes: list = field(default_factory=list)  # reasons found while grading (the sandbox)
    flags: list = field(default_factory=list)  # for the instructor: a changed submission
    copy: Path | None = None  # the graded (immutable) copy of the submission folder
    workdir: Path | None = None  # the temporary folder of this run (removed by judge_run)

    @property
    def graded(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def check_student_id(student: str) -> str:
    if not student or student.startswith(".") or not set(student) <= SAFE_ID:
        raise ValueError(f"student id {student!r}: use letters, digits, '_', '-', '.', '@'")
    return student


# --- the submission, hashed -----------------------------------------------------------------


def copy_regular_files(source: Path, target: Path) -> None:
    """Copy the folders and regular files of ``source`` to ``target``; symlinks are left out."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        if entry.is_symlink():
            continue
        if entry.is_dir():
            copy_regular_files(entry, target / entry.name)
        elif entry.is_file():
            shutil.copy2(entry, target / entry.name)


def folder_hashes(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every regular file under ``folder`` (symlinks skipped)."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            hashes[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


_HASHES_LOCK = threading.Lock()  # grading threads read and add hashes concurrently


def record_hashes(layout: Layout, chapter: str, students) -> None:
    """Remember the hashes of these students' submissions (at collection)."""
    with _HASHES_LOCK:
        path = layout.hashes(chapter)
        known = json.loads(path.read_text()) if path.exists() else {}
        for student in students:
            known[student] = folder_hashes(layout.submitted(student, chapter))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(known, indent=1, sort_keys=True))
        os.replace(partial, path)


def hash_problem(layout: Layout, chapter: str, student: str, copy: Path) -> str | None:
    """A mismatch between the graded copy and the hashes taken at collection, if any.

    A submission placed in ``submitted/`` by hand has no hashes yet: they are taken now.
    """
    path = layout.hashes(chapter)
    with _HASHES_LOCK:
        known = json.loads(path.read_text()) if path.exists() else {}
    if student not in known:
        record_hashes(layout, chapter, [student])
        return None
    now = folder_hashes(copy)
    changed = sorted(
        n for n in set(now) | set(known[student]) if now.get(n) != known[student].get(n)
    )
    if changed:
        return (
            "submission changed since it was collected (hash mismatch: " + ", ".join(changed) + ")"
        )
    return None


# --- one student ----------------------------------------------------------------------------


def _scratch_course(layout: Layout, template: Path, chapter: str, student: str, copy: Path,
                    scratch: Path) -> Path:  # fmt: skip
    course = scratch / "course"
    course.mkdir(parents=True)
    shutil.copy(layout.root / "nbgrader_config.py", course)
    shutil.copy(template, course / "gradebook.db")
    # nbgrader copies the source's non-notebook files over the submission; the notebooks (the
    # solutions) are never copied into the sandbox.
    source = layout.root / layout.source / chapter
    shutil.copytree(source, course / layout.source / chapter,
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))  # fmt: skip
    copy_regular_files(copy, course / "submitted" / student / chapter)
    for name in ("records", "home", "state"):
        (scratch / name).mkdir()
    return course


def exercise_names(notebooks: dict[str, set[str]]) -> list[str]:
    """The exercises of a chapter: the names of its ``test_NAME`` cells."""
    return sorted({c.removeprefix("test_") for cells in notebooks.values() for c in cells
                   if c.startswith("test_")})  # fmt: skip


def grade_one(
    layout: Layout, template: Path, chapter: str, student: str, limits: Limits, seed: int, *,
    sandbox: bool = True, cache: Path | None = None, names=(), submission: Path | None = None,
) -> GradeRun:  # fmt: skip
    """Run one student's notebook (sandboxed) and leave its records for :func:`judge_run`.

    ``names``: the chapter's exercises; each gets its seed (derived from ``seed``, which never
    enters the sandbox) through a pipe its probe consumes (:class:`genlab.probing.SeedPipes`,
    mounted read-only). ``submission``: grade this folder instead of ``submitted/`` (the
    canary; no hashes are taken). The records and the autograded notebook are left in a
    temporary folder that :func:`judge_run` reads and removes.
    """
    tmp = Path(tempfile.mkdtemp(prefix="genlab-grade-"))
    copy = tmp / "submission"
    copy_regular_files(submission or layout.submitted(student, chapter), copy)
    notes = []
    problem = None if submission else hash_problem(layout, chapter, student, copy)
    scratch = tmp / "scratch"
    course = _scratch_course(layout, template, chapter, student, copy, scratch)
    seeds = tmp / "seeds"
    command = [
        sys.executable, "-m", "nbgrader", "autograde", chapter, "--student", student,
        "--force", f"--Execute.timeout={limits.cell_seconds}",
        f"--ResilientExecute.max_output_chars={limits.output_chars}",
    ]  # fmt: skip
    inside = INSIDE if sandbox else scratch
    env = sandbox_env({
        probing.RECORD_DIR_ENV: str(inside / "records"),
        probing.SEED_DIR_ENV: str(seeds),
        "HOME": str(inside / "home"),
        runtime.CACHE_ENV: str(cache) if cache else "0",
        model_cache.CACHE_ENV: str(_models(cache)) if cache else "0",
    } | ({} if sandbox else state_env(scratch / "state")))  # fmt: skip
    if not sandbox:
        notes.append(NO_SANDBOX)
    exercise_seeds = {name: probing.exercise_seed(seed, name) for name in names}
    with sandbox_uid() as uid, probing.SeedPipes(seeds, exercise_seeds) as pipes:
        if sandbox:
            prepare_scratch(scratch, uid)
            # the warmed caches, never written by a student, and the seeds, read once each
            readonly = ((cache, _models(cache)) if cache else ()) + (seeds,)
            command = bwrap_command(command, scratch, env, cwd=INSIDE / "course",
                                    readonly=readonly, uid=uid, processes=limits.processes,
                                    tmp_bytes=limits.tmp_bytes)  # fmt: skip
        done = run_limited(command, cwd=course, env=env, limits=limits, log=tmp / "autograde.log")
        digests = pipes.digests()
    run = GradeRun(student, chapter, done.returncode, done.timed_out, done.seconds, done.log,
                   notes=notes, flags=[problem] if problem else [], copy=copy,
                   digests=digests)  # fmt: skip
    run.workdir = tmp
    return run


def judge_run(layout: Layout, judge: probing.Judge, run: GradeRun, notebooks) -> None:
    """The trusted verdicts of one run (from its records), its log and its feedback notebook."""
    tmp = run.workdir
    try:
        logs = layout.root / "logs" / run.chapter
        logs.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp / "autograde.log", logs / f"{run.student}.log")
        for cells in notebooks.values():
            for cell in sorted(cells):
                if cell.startswith("test_"):
                    name = cell.removeprefix("test_")
                    records = tmp / "scratch" / "records"
                    run.verdicts[cell] = judge.verdict(records, name, run.digests.get(name, ""))
        target = layout.autograded(run.student, run.chapter)
        if target.exists():
            shutil.rmtree(target)
        produced = tmp / "scratch" / "course" / "autograded" / run.student / run.chapter
        if run.graded:
            target.mkdir(parents=True)
            for name in notebooks:
                source = produced / f"{name}.ipynb"
                if _inside(source, tmp / "scratch"):  # the sandbox may have planted symlinks
                    _safe_feedback_copy(source, target / f"{name}.ipynb", run.verdicts)
        graded = layout.graded(run.student, run.chapter)
        if graded.exists():
            shutil.rmtree(graded)
        copy_regular_files(run.copy, graded)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _inside(path: Path, folder: Path) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(folder) + os.sep)


def _capped(outputs: list) -> list:
    kept, used = [], 0
    for output in outputs:
        size = len(json.dumps(output))
        if used + size > MAX_CELL_OUTPUT_CHARS and output.get("output_type") != "error":
            kept.append(
                nbformat.v4.new_output(
                    "stream", name="stdout", text="[more output not shown in feedback]\n"
                )
            )
            break
        if output.get("output_type") == "error":
            output["traceback"] = [f"{output.get('ename')}: {str(output.get('evalue'))[:300]}"]
        kept.append(output)
        used += size
    return kept


def _safe_feedback_copy(source: Path, target: Path, verdicts: dict) -> None:
    """Copy an autograded notebook (untrusted) for feedback: size-capped, outputs capped, and
    every graded test cell ending with the grader's verdict."""
    try:
        if source.is_symlink() or source.stat().st_size > MAX_NOTEBOOK_BYTES:
            return
        nb = nbformat.read(source, as_version=4)
    except Exception:  # an unreadable notebook gets no feedback page
        return
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = _capped(cell.get("outputs", []))
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in verdicts:
            verdict = verdicts[grade_id]
            word = "passed" if verdict.passed else "failed"
            text = f"{VERDICT_PREFIX}{word}. {verdict.message}\n"
            cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text=text))
    nbformat.write(nb, target)


# --- the class ------------------------------------------------------------------------------


def bonus_points(layout: Layout, chapter: str) -> dict[tuple[str, str], float]:
    """``{(notebook, test cell): points}`` of the chapter's challenge exercises, from the
    release (:data:`genlab.classroom.grading.CHALLENGE_MARK`)."""
    found = {}
    for path in sorted((layout.root / "chapters" / chapter).glob("*.ipynb")):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:
            continue
        cells = grading.graded_cells(nb)
        for name in grading.challenge_names(nb):
            cell = cells[grading.TEST_PREFIX + name]
            points = float(cell.metadata.get("nbgrader", {}).get("points", 0))
            found[path.stem, grading.TEST_PREFIX + name] = points
    return found


def template_gradebook(layout: Layout, chapter: str, folder: Path) -> Path:
    """A copy of the course gradebook that keeps the assignments and drops every student (a
    challenge's cell keeps the release's points, so nbgrader sees nothing changed)."""
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
        for (notebook, cell), points in bonus_points(layout, chapter).items():
            try:
                gb.find_graded_cell(cell, notebook, chapter).max_score = points
            except MissingEntry:
                continue
        gb.db.commit()
    return path


def _timestamp(layout: Layout, run: GradeRun):
    from nbgrader.utils import parse_utc

    path = layout.graded(run.student, run.chapter) / "timestamp.txt"  # judge_run kept the copy
    try:
        return parse_utc(path.read_text().strip()) if path.is_file() else None
    except Exception:  # an unparsable timestamp is ignored, as nbgrader does
        return None


def merge(layout: Layout, run: GradeRun, bonus: dict | None = None) -> list[str]:
    """Write one run's verdicts into the course gradebook; return notes on manual scores.

    Every graded cell scores its points when the trusted verdict passed, else 0. A challenge's
    cell (``bonus``: ``{(notebook, cell): points}``, :func:`bonus_points`) is nbgrader's *extra
    credit*: its maximum is 0 and a pass scores its points as ``extra_credit``, so the report,
    the CSV, nbgrader's export and the feedback all count it on top of the chapter's maximum.
    A manual score overrides the autograder in nbgrader; any present is reported, since the
    grader never sets one.
    """
    from nbgrader.api import Gradebook, MissingEntry

    bonus = bonus_points(layout, run.chapter) if bonus is None else bonus
    notes = []
    with Gradebook(layout.db_url) as gb, warnings.catch_warnings():
        # nbgrader's own submission factory triggers a harmless SQLAlchemy autoflush warning.
        warnings.simplefilter("ignore")
        gb.update_or_create_student(run.student)
        for notebook, cell in bonus:
            try:
                gb.find_graded_cell(cell, notebook, run.chapter).max_score = 0.0
            except MissingEntry:
                continue
        stamp = _timestamp(layout, run)
        extra = {"timestamp": stamp} if stamp else {}
        submission = gb.update_or_create_submission(run.chapter, run.student, **extra)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                verdict = run.verdicts.get(grade.name)
                passed = verdict is not None and verdict.passed
                points = bonus.get((notebook.name, grade.name))
                if points is not None:
                    grade.auto_score = 0.0
                    grade.extra_credit = points if passed else 0.0
                else:
                    grade.auto_score = float(grade.max_score) if passed else 0.0
                grade.needs_manual_grade = False
                if grade.manual_score is not None:
                    notes.append(
                        f"{grade.name}: a manual score ({grade.manual_score:g}) overrides the "
                        "autograder; confirm an instructor set it"
                    )
            for comment in notebook.comments:
                comment.auto_comment = None
        gb.db.commit()
    return notes


def _models(cache: Path) -> Path:
    """The trained-model cache that goes with the compilation cache ``cache``."""
    return cache.parent / "models"


# A cell of the instructor's solution running longer than this in the warm-up is abandoned.
WARM_UP_CELL_SECONDS = 300


def warm_cache(layout: Layout, chapter: str, seed: int, limits: Limits) -> Path | None:
    """Run the chapter's solution notebook once as grading will (fast mode, this seed) with the
    course's compilation cache in ``cache/jax`` and its trained models in ``cache/models``;
    return the compilation cache folder (None when the cache is off: ``GENLAB_COMPILE_CACHE=0``).

    The solution is the instructor's code, so it runs outside the sandbox. Its records must
    pass the grader's own verdict; an exercise that does not is printed as a warning.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError

    if runtime.compile_cache_dir() is None:
        return None
    cache = layout.root / "cache" / "jax"
    for folder in (cache, _models(cache)):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o755)
    source = layout.root / layout.source / chapter
    with tempfile.TemporaryDirectory(prefix="genlab-warm-") as tmp:
        work, records = Path(tmp) / "work", Path(tmp) / "records"
        shutil.copytree(source, work)
        env = dict(os.environ) | state_env(Path(tmp) / "state") | {
            runtime.CACHE_ENV: str(cache), model_cache.CACHE_ENV: str(_models(cache)),
            probing.RECORD_DIR_ENV: str(records),
            probing.SEED_ENV: str(seed), "NBGRADER_EXECUTION": "autograde", "MPLBACKEND": "Agg",
        }  # fmt: skip
        judge = probing.Judge(chapter, seed)
        for path in sorted(work.glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            # The students' per-cell limit cuts their loops short; the trusted solution's
            # first compilations may need longer on a loaded machine, so it gets its own.
            client = NotebookClient(nb, timeout=max(limits.cell_seconds, WARM_UP_CELL_SECONDS),
                                    allow_errors=True,
                                    resources={"metadata": {"path": str(work)}})  # fmt: skip
            try:
                client.execute(env=env)
            except CellTimeoutError as error:  # grading goes on, with a partly warm cache
                print(f"warning: the warm-up of {chapter} stopped: {error}", file=sys.stderr)
                continue
            for name in grading.exercise_names(nb):
                verdict = judge.verdict(records, name)
                if not verdict.passed:
                    print(f"warning: the solution fails its own probe: {verdict.message}",
                          file=sys.stderr)  # fmt: skip
    return cache


CANARY = "genlab-canary"


class GradingRefused(RuntimeError):
    """The class was not graded (the canary failed); the message says why and what to do."""


def first_kernel_error(folder: Path, notebooks) -> tuple[str, str] | None:
    """``(where, "Name: message")`` of the first error output in the autograded notebooks of
    ``folder`` (``where``: the cell's grade_id, or "cell N (first line)"), or None."""
    from genlab.classroom.report import kernel_errors

    for name in sorted(notebooks):
        for where, _, ename, evalue in kernel_errors(folder / f"{name}.ipynb"):
            return where, f"{ename}: {evalue}"
    return None


def _advice(error: str, run: GradeRun) -> str:
    if run.timed_out:
        return ("it ran past the notebook time limit: grade on a quieter machine, or raise "
                "--notebook-timeout")  # fmt: skip
    if "No module named" in error or "ImportError" in error:
        return ("the sandbox's Python cannot import what the notebook needs: run `genlab grade` "
                "with the Python of the virtualenv where genlab and its dependencies are "
                "installed (`.venv/bin/genlab`, after `pip install -e .`), then check with "
                "`genlab.classroom.sandbox.sandbox_problem()`")  # fmt: skip
    if "CellTimeoutError" in error or "KeyboardInterrupt" in error:  # interrupted at the limit
        return ("a cell ran past the cell time limit: grade on a quieter machine, or raise "
                "--cell-timeout")  # fmt: skip
    if "MemoryError" in error or "KernelDied" in error:
        return "the kernel ran out of memory or died: raise --memory-gb"
    return ("run the solution notebook yourself (`jupyter nbconvert --execute`), fix it, and "
            "regenerate the release (`genlab release CH`) so the two match")  # fmt: skip


def grade_canary(layout: Layout, template: Path, chapter: str, limits: Limits, seed: int, *,
                 notebooks, judge: probing.Judge, sandbox: bool = True,
                 cache: Path | None = None) -> GradeRun:  # fmt: skip
    """Grade the instructor's solution (the release with the solution's answers filled in) as a
    student, in the same sandbox with the same seed; raise :class:`GradingRefused` unless it
    scores full marks, naming its first kernel error verbatim and what to do.

    Nothing of it reaches the gradebook or the report; its log is kept in
    ``logs/CH/genlab-canary.log``.
    """
    with tempfile.TemporaryDirectory(prefix="genlab-canary-") as tmp:
        submission = Path(tmp) / chapter
        shutil.copytree(layout.root / "chapters" / chapter, submission)
        for name in notebooks:
            release = nbformat.read(submission / f"{name}.ipynb", as_version=4)
            solution = layout.root / layout.source / chapter / f"{name}.ipynb"
            filled = grading.fill_answers(release, nbformat.read(solution, as_version=4))
            nbformat.write(filled, submission / f"{name}.ipynb")
        run = grade_one(layout, template, chapter, CANARY, limits, seed, sandbox=sandbox,
                        cache=cache, names=exercise_names(notebooks),
                        submission=submission)  # fmt: skip
    work = run.workdir
    try:
        logs = layout.root / "logs" / chapter
        logs.mkdir(parents=True, exist_ok=True)
        shutil.copy(work / "autograde.log", logs / f"{CANARY}.log")
        records = work / "scratch" / "records"
        for cell in sorted(c for cells in notebooks.values() for c in cells):
            if cell.startswith("test_"):
                name = cell.removeprefix("test_")
                run.verdicts[cell] = judge.verdict(records, name, run.digests.get(name, ""))
        produced = work / "scratch" / "course" / "autograded" / CANARY / chapter
        error = first_kernel_error(produced, notebooks) if run.graded else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = [cell for cell, v in sorted(run.verdicts.items()) if not v.passed]
    if run.graded and not failed:
        return run
    if error:
        where, text = error
        detail = f"The canary's first kernel error, in {where}:\n    {text}"
    elif not run.graded:
        lines = [line.strip() for line in run.log.splitlines() if line.strip()]
        why = "its notebook time limit" if run.timed_out else "nbgrader failed"
        detail = f"The canary did not finish ({why}); the end of its log:\n    " + (
            "\n    ".join(lines[-5:]) or "(empty)"
        )
        text = run.log[-2000:]
    else:
        text = run.verdicts[failed[0]].message
        detail = f"The grader's verdict on {failed[0]}:\n    {text}"
    raise GradingRefused(
        f"refusing to grade {chapter}: the instructor's solution, graded first as a canary in "
        f"the same sandbox with the same seed, did not score full marks "
        f"({len(failed)} of {len(run.verdicts)} test cells failed"
        + (f": {', '.join(failed[:6])}" if failed else "")
        + "), so the students' scores "
        "could not be trusted. No student was graded; the gradebook and the report are "
        f"unchanged.\n{detail}\nWhat to do: {_advice(text, run)}. The canary's log: "
        f"{layout.root / 'logs' / chapter / (CANARY + '.log')}"
    )


def _finish(layout: Layout, judge, student: str, future, notebooks, chapter: str) -> GradeRun:
    """Judge a finished run in the main thread; a crash scores 0 for that student only."""
    try:
        run = future.result()
        judge_run(layout, judge, run, notebooks)
    except Exception as error:  # one student's crash never stops the class
        run = GradeRun(student, chapter, -1, False, 0.0, "",
                       notes=[f"grading crashed: {type(error).__name__}: {error}"])  # fmt: skip
    return run


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
    notebooks: dict[str, set[str]],
    workers: int = 2,
    limits: Limits | None = None,
    progress: bool = True,
    sandbox: bool = True,
    seed: int | None = None,
    warm: bool = True,
    timings: dict[str, float] | None = None,
) -> dict[str, GradeRun]:
    """Grade ``students`` (default: everyone with a submission) on ``workers`` sandboxes.

    ``notebooks``: ``{notebook name: grade ids}`` of the chapter. ``seed``: the probe seed
    (default: drawn now, unknown to the students). Before any student, the instructor's
    solution is graded the same way (:func:`grade_canary`); unless it scores full marks,
    :class:`GradingRefused` is raised and no student is graded. ``warm``: first run the
    solution once to fill the course's compilation cache, which every sandbox then reads
    (read-only). ``timings``, if given, receives the seconds of the ``"warm-up"`` (once per
    class, whatever the number of workers; the canary included) and of the ``"students"``
    (everything after it).
    """
    from tqdm.auto import tqdm

    limits = Limits() if limits is None else limits
    seed = secrets.randbits(63) if seed is None else seed
    start = time.perf_counter()
    cache = warm_cache(layout, chapter, seed, limits) if warm else None
    judge = probing.Judge(chapter, seed)
    students = [check_student_id(s) for s in (students or students_of(layout, chapter))]
    if CANARY in students:
        raise ValueError(f"{CANARY!r} is the grader's own canary, not a student id")
    names = exercise_names(notebooks)
    runs: dict[str, GradeRun] = {}
    with tempfile.TemporaryDirectory(prefix="genlab-template-") as tmp:
        template = template_gradebook(layout, chapter, Path(tmp))
        os.chmod(template, 0o644)
        grade_canary(layout, template, chapter, limits, seed, notebooks=notebooks, judge=judge,
                     sandbox=sandbox, cache=cache)  # fmt: skip
        warmed = time.perf_counter()
        bonus = bonus_points(layout, chapter)
        bar = tqdm(total=len(students), desc=f"grading {chapter}", unit="student",
                   disable=not progress)  # fmt: skip
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = {
                pool.submit(grade_one, layout, template, chapter, s, limits, seed,
                            sandbox=sandbox, cache=cache, names=names): s
                for s in students
            }  # fmt: skip
            for future in as_completed(futures):
                run = _finish(layout, judge, futures[future], future, notebooks, chapter)
                run.notes += merge(layout, run, bonus)
                runs[run.student] = run
                bar.set_postfix_str(run.student)
                bar.update()
        bar.close()
    if timings is not None:
        timings.update({"warm-up": warmed - start, "students": time.perf_counter() - warmed})
    return {s: runs[s] for s in students}
