"""Benchmark: the course as students and instructors feel it.

Each solution notebook's wall time in full and fast mode (``GENLAB_FAST=1``), with a cold and a
warm compilation cache, against the budgets (design section 4: under 3 minutes on 2 cores, under
1 minute fast), and autograding: seconds per submission cold vs warm and on 1 vs 2 workers, the
sandbox's cost, and every chapter's seconds per submission.
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
from genlab import probing, runtime
from genlab.classroom import grading, steps

FULL_BUDGET, FAST_BUDGET = 180.0, 60.0
# Comma-separated chapter prefixes ("05,06") limit the per-chapter tables (`bench.run --chapters`).
CHAPTERS_ENV = "GENLAB_BENCH_CHAPTERS"


def chapters() -> list[str]:
    """The chapters the per-chapter tables measure: all, or those ``GENLAB_BENCH_CHAPTERS``
    names."""
    names = sorted(p.name for p in (ROOT / "solutions").iterdir() if p.is_dir())
    wanted = [w for w in os.environ.get(CHAPTERS_ENV, "").split(",") if w]
    return [n for n in names if not wanted or any(n.startswith(w) for w in wanted)]


def notebook_seconds(path: Path, *, fast: bool, cache: Path) -> float:
    """Wall time of executing ``path`` top to bottom in a fresh kernel with compilation cache
    ``cache`` (an empty folder: a cold run; one an earlier run filled: a warm run)."""
    saved = {name: os.environ.get(name) for name in ("GENLAB_FAST", runtime.CACHE_ENV)}
    os.environ[runtime.CACHE_ENV] = str(cache)
    os.environ.pop("GENLAB_FAST", None)
    if fast:
        os.environ["GENLAB_FAST"] = "1"
    try:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=900, resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        client.execute()
        return time.perf_counter() - start
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


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
        "Chapter notebooks: wall time, cold and warm compilation cache",
        ["notebook", "full cold (s)", "full warm (s)", "fast cold (s)", "fast warm (s)",
         "over budget"],
        notes=[
            "Each solution notebook executed top to bottom in a fresh kernel: 'cold' with an "
            "empty persistent compilation cache (`GENLAB_COMPILE_CACHE`), 'warm' again with the "
            "cache that run filled (what a student sees the second time). Budgets: "
            f"{FULL_BUDGET:.0f} s for a full run (design section 4), {FAST_BUDGET:.0f} s for a "
            "fast run (issue 18); the last column names the runs over their budget. A student's "
            "first run is a cold full run; grading and the tests run fast with a warm cache."
        ],
    )  # fmt: skip
    top = Path(tempfile.mkdtemp(prefix="genlab-bench-"))
    solutions = ROOT / "solutions"
    paths = [_tiny_notebook(top)] if quick else [
        path for chapter in chapters() for path in sorted((solutions / chapter).glob("*.ipynb"))
    ]  # fmt: skip
    for path in paths:
        times = {}
        for fast in (False, True):
            cache = top / f"cache-{path.stem}-{fast}"
            times[fast] = [notebook_seconds(path, fast=fast, cache=cache) for _ in range(2)]
        full, fast = times[False], times[True]
        table.add(path.name, full[0], full[1], fast[0], fast[1], _over_budget(full, fast))
        print(" | ".join(table.rows[-1]), flush=True)
    shutil.rmtree(top, ignore_errors=True)
    return table


def _over_budget(full: list[float], fast: list[float]) -> str:
    """The runs over their budget (``full`` and ``fast``: [cold, warm] seconds), or "ok"."""
    runs = {"full cold": full[0], "full warm": full[1], "fast cold": fast[0], "fast warm": fast[1]}
    over = [name for name, seconds in runs.items()
            if seconds > (FULL_BUDGET if name.startswith("full") else FAST_BUDGET)]  # fmt: skip
    return "OVER: " + ", ".join(over) if over else "ok"


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
    steps.release(root, chapter)
    return root, nbformat.read(source / f"{chapter}.ipynb", as_version=4)


def _grade_class(top: Path, name: str, chapter: str, students: int, quick: bool, **options):
    """Grade ``students`` copies of the solution in a fresh course; (s per submission, scores,
    {"warm-up": s, "students": s})."""
    root, solution = _course(top / name, chapter, quick)
    _filled_class(root, chapter, solution, students)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    rows = steps.grade(root, chapter, progress=False, seed=1, timings=timings, **options)
    seconds = (time.perf_counter() - start) / students
    return seconds, sorted((r.student, r.score) for r in rows), timings


def autograde_table(quick: bool) -> Table:
    """Seconds per submission: no cache vs the warmed cache, 1 vs 2 workers, same scores."""
    chapter, students = ("tiny", 2) if quick else ("00_jax_primer", 6)
    table = Table(
        "Autograding: seconds per submission, cold vs warm, 1 vs 2 workers",
        ["chapter", "setting", "submissions", "s per submission", "warm-up (s, once)",
         "s per submission after the warm-up", "scores", "same scores"],
        notes=[
            "`genlab grade` (sandboxed, the verdict outside the kernel) on copies of the "
            "filled-in solution, each setting in a fresh course. 'cold': no compilation cache; "
            "'warm': the solution runs once first (the warm-up: once per class and chapter, "
            "whatever the number of workers) and every sandbox reads the cache it filled. "
            "'s per submission' includes the warm-up; the column after it leaves it out, which "
            "is what a large class sees per student.",
        ],
    )  # fmt: skip
    top = Path(tempfile.mkdtemp(prefix="genlab-bench-grade-"))
    results = {
        "cold, 1 worker": _grade_class(top, "cold-1", chapter, students, quick, workers=1,
                                       warm=False),
        "warm, 1 worker": _grade_class(top, "warm-1", chapter, students, quick, workers=1),
        "warm, 2 workers": _grade_class(top, "warm-2", chapter, students, quick, workers=2),
    }  # fmt: skip
    scores = {tuple(r[1]) for r in results.values()}
    for setting, (seconds, got, timings) in results.items():
        table.add(chapter, setting, students, seconds, timings["warm-up"],
                  timings["students"] / students, " ".join(f"{s:g}" for _, s in got),
                  "yes" if len(scores) == 1 else "NO")  # fmt: skip
    one, two = results["warm, 1 worker"], results["warm, 2 workers"]
    table.notes.append(
        f"2 workers vs 1, warm: {one[0] / two[0]:.2f}x per submission with the warm-up, "
        f"{one[2]['students'] / two[2]['students']:.2f}x after it."
    )
    shutil.rmtree(top, ignore_errors=True)
    return table


def chapters_grading_table(quick: bool) -> Table:
    """Every chapter: seconds per submission, warm cache, 2 workers."""
    names = ["tiny"] if quick else chapters()
    students = 2
    table = Table(
        "Autograding every chapter: seconds per submission (warm, 2 workers)",
        ["chapter", "submissions", "s per submission (class incl. warm-up)",
         "warm-up (s)", "s per submission after the warm-up", "target (s)"],
        notes=["Target (issue 18): at most 15 s per student for chapter 00, 60 s for the others."],
    )  # fmt: skip
    top = Path(tempfile.mkdtemp(prefix="genlab-bench-chapters-"))
    for chapter in names:
        seconds, _, timings = _grade_class(top, chapter, chapter, students, quick, workers=2)
        target = 15 if chapter.startswith("00") else 60
        table.add(chapter, students, seconds, timings["warm-up"], timings["students"] / students,
                  target)  # fmt: skip
        print(" | ".join(table.rows[-1]), flush=True)
    shutil.rmtree(top, ignore_errors=True)
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
    seconds, scores = {}, {}
    top = Path(tempfile.mkdtemp(prefix="genlab-bench-sandbox-"))
    for sandbox in (False, True):
        seconds[sandbox], scores[sandbox], _ = _grade_class(
            top, f"sandbox-{sandbox}", chapter, students, quick, workers=1, sandbox=sandbox
        )
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
    return [notebook_table(quick), autograde_table(quick), sandbox_table(quick),
            chapters_grading_table(quick)]  # fmt: skip
