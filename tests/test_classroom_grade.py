"""Parallel, isolated grading (genlab.classroom.grade) and the collect/export steps, on a tiny
course: the same scores as serial grading, limits that hold, no view of other students."""

from __future__ import annotations

import csv
import shutil
import zipfile

import nbformat
import psutil
import pytest
from tiny_notebooks import answer_cell, tiny_notebook

from genlab.classroom import grading, steps
from genlab.classroom.grade import Layout, check_student_id
from genlab.classroom.limits import GB, Limits
from genlab.classroom.report import cell_scores

from conftest import ROOT

SNOOP = (
    "import os\n"
    "print('HOME=' + os.environ['HOME'])\n"
    "print('PEERS=' + ','.join(sorted(os.listdir('../..'))))\n"
    "def root(x):\n"
    "    return math.sqrt(x)"
)
SUBMISSIONS = {
    "ok": {},
    "wrong": {"double": "def double(x):\n    return x * x"},
    "blank": None,
    "snoop": {"root": SNOOP},
}
LIMITS = Limits(cell_seconds=60, notebook_seconds=300, memory_bytes=4 * GB)


def make_course(root):
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "nbgrader_config.py", root)
    (root / "solutions" / "tiny").mkdir(parents=True)
    nbformat.write(tiny_notebook(), root / "solutions" / "tiny" / "tiny.ipynb")
    steps.release(root, "tiny")
    return root


def write(root, student, nb):
    folder = root / "submitted" / student / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "tiny.ipynb")


@pytest.fixture(scope="module")
def courses(tmp_path_factory):
    """The same four submissions graded serially (course 1) and on 2 workers (course 2)."""
    graded = {}
    for workers in (1, 2):
        root = make_course(tmp_path_factory.mktemp(f"tiny-{workers}"))
        release = nbformat.read(root / "chapters" / "tiny" / "tiny.ipynb", as_version=4)
        filled = grading.fill_answers(release, tiny_notebook())
        for student, answers in SUBMISSIONS.items():
            nb = release if answers is None else filled
            for name, source in (answers or {}).items():
                nb = grading.replace_answer(nb, name, source)
            write(root, student, nb)
        stamp = root / "submitted" / "ok" / "tiny" / "timestamp.txt"
        stamp.write_text("2026-12-01 10:45:30 UTC\n")  # as collect writes it
        rows = steps.grade(root, "tiny", workers=workers, limits=LIMITS, progress=False)
        graded[workers] = (root, {r.student: r for r in rows})
    return graded


def test_parallel_scores_equal_serial_scores(courses):
    (serial_root, _), (parallel_root, _) = courses[1], courses[2]
    for student in SUBMISSIONS:
        serial = cell_scores(serial_root / "gradebook.db", "tiny", student)
        assert serial == cell_scores(parallel_root / "gradebook.db", "tiny", student), student
    expected = {
        "ok": {"test_double": (1.0, 1.0), "test_root": (1.0, 1.0)},
        "wrong": {"test_double": (0.0, 1.0), "test_root": (1.0, 1.0)},
        "blank": {"test_double": (0.0, 1.0), "test_root": (0.0, 1.0)},
        "snoop": {"test_double": (1.0, 1.0), "test_root": (1.0, 1.0)},
    }
    assert {s: cell_scores(serial_root / "gradebook.db", "tiny", s) for s in expected} == expected


def test_report_rows_and_csv(courses):
    root, rows = courses[2]
    assert rows["ok"].score == 2 and rows["ok"].max_score == 2 and not rows["ok"].flags
    assert rows["blank"].score == 0 and rows["blank"].status == "graded"
    # the row names the kernel's real error, not only "stopped early"
    reasons = "; ".join(rows["blank"].reasons)
    assert "test_double (NotImplementedError)" in reasons, reasons
    assert "the kernel's first error: NotImplementedError in test_double" in reasons, reasons
    assert any("os.listdir" in flag for flag in rows["snoop"].flags), rows["snoop"].flags
    with open(root / "reports" / "tiny.csv") as f:
        report = {r["student"]: r for r in csv.DictReader(f)}
    assert set(report) == set(SUBMISSIONS)  # the canary is not a student
    assert "os.listdir" in report["snoop"]["flags"]
    assert set(cell_scores(root / "gradebook.db", "tiny", "genlab-canary")) == set()
    assert (root / "logs" / "tiny" / "genlab-canary.log").is_file()


def test_grading_process_sees_a_private_home_and_only_its_own_submission(courses):
    root, _ = courses[2]
    nb = nbformat.read(root / "autograded" / "snoop" / "tiny" / "tiny.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    home = text.split("HOME=", 1)[1].split()[0]
    assert home == "/grading/home", home  # the sandbox's scratch folder
    assert text.split("PEERS=", 1)[1].split()[0] == "snoop", text


def _other_workers_processes() -> set[int]:
    """The processes started by the other test workers of this run (pytest-xdist's workers are
    siblings): their kernels are alive for their own tests, not left over by this one."""
    me = psutil.Process()
    siblings = [p for p in me.parent().children() if p.pid != me.pid]
    return {d.pid for s in siblings for d in s.children(recursive=True)}


def test_notebook_time_limit_kills_the_grading_process_and_scores_zero(tmp_path):
    root = make_course(tmp_path)
    release = nbformat.read(root / "chapters" / "tiny" / "tiny.ipynb", as_version=4)
    filled = grading.fill_answers(release, tiny_notebook())
    stuck = "import time\ntime.sleep(600)\ndef double(x):\n    return 2 * x"
    write(root, "sleeper", grading.replace_answer(filled, "double", stuck))
    before = {p.pid for p in psutil.process_iter()}
    # long enough for the canary (the solution, graded first under the same limits)
    limits = Limits(cell_seconds=900, notebook_seconds=90)
    (row,) = steps.grade(root, "tiny", workers=1, limits=limits, progress=False)
    assert row.status == "failed" and row.score == 0 and row.max_score == 2
    assert any("notebook time limit" in r for r in row.reasons), row.reasons
    others = _other_workers_processes()
    left = [
        p for p in psutil.process_iter(["pid", "cmdline"])
        if p.pid not in before | others and "ipykernel" in " ".join(p.info["cmdline"] or [])
    ]  # fmt: skip
    assert not left, f"kernels left running: {left}"
    assert not (root / "autograded" / "sleeper").exists()


def test_collect_from_folder_and_from_lms_zip(tmp_path):
    root = make_course(tmp_path / "course")
    release = root / "chapters" / "tiny" / "tiny.ipynb"
    inbox = tmp_path / "inbox"
    (inbox / "alice").mkdir(parents=True)
    shutil.copy(release, inbox / "alice" / "tiny.ipynb")
    (inbox / "bob_smith" / "tiny").mkdir(parents=True)
    shutil.copy(release, inbox / "bob_smith" / "tiny" / "tiny.ipynb")
    (inbox / ".DS_Store").write_text("")
    got = steps.collect(root, "tiny", inbox)
    assert got.status == {"alice": "new", "bob_smith": "new"} and not got.unmatched
    assert steps.collect(root, "tiny", inbox).status == {
        "alice": "unchanged",
        "bob_smith": "unchanged",
    }
    archive = tmp_path / "lms.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(release, "tiny_carol_attempt_2026-11-20-10-45-30_tiny.ipynb")
        z.write(release, "tiny_bob_smith_attempt_2026-11-20-11-00-00_tiny.ipynb")
        z.writestr("tiny_dave_attempt_2026-11-20-10-45-30_notes.txt", "not a notebook")
    got = steps.collect(root, "tiny", archive, tz="Europe/Berlin")
    # bob_smith's folder now also holds the LMS's submission time: updated
    assert got.status == {"bob_smith": "updated", "carol": "new"}
    assert [name for name, _ in got.unmatched] == [
        "tiny_dave_attempt_2026-11-20-10-45-30_notes.txt"
    ]
    stamp = root / "submitted" / "carol" / "tiny" / "timestamp.txt"
    assert stamp.read_text().strip() == "2026-11-20 09:45:30 UTC"  # Berlin is UTC+1 in November
    assert (root / "submitted" / "bob_smith" / "tiny" / "tiny.ipynb").is_file()
    assert not (root / "submitted" / "dave").exists()
    summary = got.summary("tiny")
    assert "2 submissions of tiny: 1 new, 1 updated, 0 unchanged" in summary
    assert "1 files not collected" in summary and "is not a notebook of tiny" in summary


def test_collect_cli_lists_unmatched_files_and_fails(tmp_path, capsys):
    from genlab.classroom import cli

    root = make_course(tmp_path / "course")
    archive = tmp_path / "lms.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(
            root / "chapters" / "tiny" / "tiny.ipynb",
            "tiny_erin_attempt_2026-11-20-10-45-30_tiny.ipynb",
        )
        z.writestr("Thumbs.db", "")
    assert cli.main(["--course", str(root), "collect", "tiny", "--from", str(archive)]) == 1
    out, err = capsys.readouterr()
    assert "erin: new" in out and "Thumbs.db: matches no LMS naming style" in out
    assert "not collected" in err


def test_collect_and_grade_refuse_an_unreleased_chapter_or_an_unknown_student(tmp_path):
    root = make_course(tmp_path / "course")
    (root / "solutions" / "later").mkdir()
    with pytest.raises(steps.ClassroomError, match=r"run `genlab release later`"):
        steps.collect(root, "later", tmp_path)
    with pytest.raises(steps.ClassroomError, match=r"chapters are later, tiny"):
        steps.grade(root, "nonsense", workers=1, limits=LIMITS, progress=False)
    db = root / "gradebook.db"
    db.unlink()
    with pytest.raises(steps.ClassroomError, match=r"run `genlab release tiny`"):
        steps.grade(root, "tiny", workers=1, limits=LIMITS, progress=False)
    assert not db.exists(), "a refused grade must not leave an empty gradebook"
    steps.release(root, "tiny")
    with pytest.raises(steps.ClassroomError, match=r"no submission of tiny by 'nobody'"):
        steps.grade(root, "tiny", ["nobody"], workers=1, limits=LIMITS, progress=False)
    assert not (root / "reports" / "tiny.csv").exists()


def test_export_writes_every_grade_with_status_flags_and_time_sorted_by_student(courses):
    root, graded = courses[2]
    out = steps.export(root, root / "grades.csv")
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["student_id"] for r in rows] == sorted(SUBMISSIONS)
    grades = {r["student_id"]: r for r in rows}
    assert float(grades["ok"]["score"]) == 2 and float(grades["blank"]["score"]) == 0
    assert grades["ok"]["timestamp"].startswith("2026-12-01 10:45:30")  # collected time kept
    assert {r["status"] for r in rows} == {"graded"}
    assert grades["snoop"]["flags"] == " | ".join(graded["snoop"].flags) != ""


def test_student_ids_must_be_plain_names():
    assert check_student_id("alice.b-2@uni") == "alice.b-2@uni"
    for bad in ("../bob", "a/b", "", ".hidden"):
        with pytest.raises(ValueError):
            check_student_id(bad)


def test_layout_paths(tmp_path):
    layout = Layout(tmp_path)
    assert layout.submitted("a", "ch") == tmp_path / "submitted" / "a" / "ch"
    assert layout.db_url.startswith("sqlite:///")


def test_regrading_one_student_keeps_the_others_rows_in_the_report(courses):
    root, _ = courses[1]
    steps.grade(root, "tiny", ["wrong"], workers=1, limits=LIMITS, progress=False)
    with open(root / "reports" / "tiny.csv") as f:
        report = {r["student"]: r for r in csv.DictReader(f)}
    assert set(report) == set(SUBMISSIONS)
    assert float(report["wrong"]["score"]) == 1 and float(report["ok"]["score"]) == 2


def test_without_a_sandbox_grading_refuses_unless_told_and_then_every_row_says_so(
    tmp_path, monkeypatch
):
    root = make_course(tmp_path)
    release = nbformat.read(root / "chapters" / "tiny" / "tiny.ipynb", as_version=4)
    write(root, "alice", grading.fill_answers(release, tiny_notebook()))
    monkeypatch.setattr(steps, "sandbox_problem", lambda: "bwrap is not installed")
    with pytest.raises(steps.ClassroomError, match="bwrap is not installed"):
        steps.grade(root, "tiny", workers=1, limits=LIMITS, progress=False)
    (row,) = steps.grade(root, "tiny", workers=1, limits=LIMITS, progress=False, sandbox=False)
    assert row.score == 2 and any("WITHOUT a sandbox" in r for r in row.reasons), row.reasons


def test_a_submission_changed_after_collection_is_reported(tmp_path):
    root = make_course(tmp_path / "course")
    release = root / "chapters" / "tiny" / "tiny.ipynb"
    (tmp_path / "inbox" / "alice").mkdir(parents=True)
    shutil.copy(release, tmp_path / "inbox" / "alice" / "tiny.ipynb")
    steps.collect(root, "tiny", tmp_path / "inbox")
    submitted = root / "submitted" / "alice" / "tiny" / "tiny.ipynb"
    nb = grading.fill_answers(nbformat.read(submitted, as_version=4), tiny_notebook())
    nbformat.write(nb, submitted)  # changed after collection
    (row,) = steps.grade(root, "tiny", workers=1, limits=LIMITS, progress=False)
    assert any("hash mismatch: tiny.ipynb" in f for f in row.flags), row.flags  # to look at
    graded = root / "graded" / "alice" / "tiny" / "tiny.ipynb"
    assert graded.read_bytes() == submitted.read_bytes()  # what was scanned and graded


def test_a_manual_score_in_the_gradebook_is_reported(courses):
    from nbgrader.api import Gradebook

    root, _ = courses[1]
    with Gradebook(Layout(root).db_url) as gb:
        gb.find_grade("test_double", "tiny", "tiny", "blank").manual_score = 1.0
        gb.db.commit()
    (row,) = steps.grade(root, "tiny", ["blank"], workers=1, limits=LIMITS, progress=False)
    assert any("manual score (1) overrides" in r for r in row.reasons), row.reasons
    assert row.score == 1  # nbgrader prefers the manual score; the report says so


def test_a_solution_that_does_not_score_full_marks_stops_grading_before_any_student(
    tmp_path, monkeypatch, capfd
):
    """The warm-up and the canary run the instructor's solution; one of its cells running past
    the limit (a loaded machine, a slow first compilation) must not zero the class: grading
    refuses, names the canary's first kernel error and what to do, and grades no one."""
    from genlab.classroom import grade as classroom_grade

    root = make_course(tmp_path)
    solution = tiny_notebook()
    solution.cells[3] = answer_cell("root", "while True:\n        pass")  # hangs when called
    nbformat.write(solution, root / "solutions" / "tiny" / "tiny.ipynb")
    release = nbformat.read(root / "chapters" / "tiny" / "tiny.ipynb", as_version=4)
    nb = grading.replace_answer(release, "double", "def double(x):\n    return 2 * x")
    write(root, "ok", grading.replace_answer(nb, "root", "def root(x):\n    return math.sqrt(x)"))
    monkeypatch.setattr(classroom_grade, "WARM_UP_CELL_SECONDS", 5)
    limits = Limits(cell_seconds=5, notebook_seconds=300, memory_bytes=4 * GB)
    with pytest.raises(steps.ClassroomError) as refused:
        steps.grade(root, "tiny", workers=1, limits=limits, progress=False)
    message = str(refused.value)
    assert "warning: the warm-up of tiny stopped" in capfd.readouterr().err
    assert "refusing to grade tiny" in message and "No student was graded" in message, message
    # nbgrader interrupts the cell at the limit (KeyboardInterrupt), then it times out
    assert "in test_root" in message, message
    assert "CellTimeoutError" in message or "KeyboardInterrupt" in message, message
    assert "--cell-timeout" in message, message
    assert not (root / "reports" / "tiny.csv").exists()
    assert cell_scores(root / "gradebook.db", "tiny", "ok") == {}


def test_a_sandbox_without_genlab_refuses_with_the_kernels_error_and_zeroes_no_one(
    tmp_path, monkeypatch
):
    """The first round's failure: the sandbox cannot import genlab (here its folder is not
    mounted). Grading must refuse with the real error, not score everyone 0."""
    from genlab.classroom import sandbox as classroom_sandbox

    root = make_course(tmp_path)
    release = nbformat.read(root / "chapters" / "tiny" / "tiny.ipynb", as_version=4)
    write(root, "alice", grading.fill_answers(release, tiny_notebook()))
    mounted = classroom_sandbox.python_paths
    genlab_folder = classroom_sandbox.genlab_root()
    monkeypatch.setattr(classroom_sandbox, "python_paths",
                        lambda: [p for p in mounted() if p != genlab_folder])  # fmt: skip
    assert "cannot run `import genlab, jax`" in classroom_sandbox.sandbox_problem()
    with pytest.raises(steps.ClassroomError, match="cannot run `import genlab, jax`"):
        steps.grade(root, "tiny", workers=1, limits=LIMITS, progress=False)
    monkeypatch.setattr(steps, "sandbox_problem", lambda: None)  # the canary catches it too
    with pytest.raises(steps.ClassroomError) as refused:
        steps.grade(root, "tiny", workers=1, limits=LIMITS, progress=False, warm=False)
    message = str(refused.value)
    assert "No module named 'genlab'" in message and "pip install -e ." in message, message
    assert cell_scores(root / "gradebook.db", "tiny", "alice") == {}
    assert not (root / "reports" / "tiny.csv").exists()


def test_a_grader_with_genlab_only_on_pythonpath_grades_with_that_genlab(tmp_path):
    """genlab imported from PYTHONPATH (a copy outside the virtualenv's install): the sandbox
    mounts that folder and puts it on the kernel's path, so the class is graded normally."""
    import os
    import subprocess
    import sys

    import genlab

    root = make_course(tmp_path / "course")
    release = nbformat.read(root / "chapters" / "tiny" / "tiny.ipynb", as_version=4)
    write(root, "alice", grading.fill_answers(release, tiny_notebook()))
    elsewhere = tmp_path / "elsewhere" / "lib"
    shutil.copytree(os.path.dirname(genlab.__file__), elsewhere / "genlab",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    script = (
        "import genlab, sys\n"
        f"assert genlab.__file__.startswith({str(elsewhere)!r}), genlab.__file__\n"
        "from genlab.classroom import steps\n"
        "from genlab.classroom.limits import Limits, GB\n"
        "from genlab.classroom.sandbox import sandbox_problem\n"
        "assert sandbox_problem() is None, sandbox_problem()\n"
        f"(row,) = steps.grade(__import__('pathlib').Path({str(root)!r}), 'tiny', workers=1,"
        " limits=Limits(cell_seconds=60, notebook_seconds=300, memory_bytes=4 * GB),"
        " progress=False)\n"
        "print('SCORE', row.score, row.max_score, row.reasons)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(elsewhere))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip
    assert "SCORE 2.0 2.0 []" in done.stdout, done.stdout + done.stderr[-3000:]
