"""The demo class, graded end to end (genlab.classroom.demo): every row's expected outcome,
other students unaffected, an intact and idempotent gradebook, leak-free feedback, the
integrity report. One module-scoped run (2 workers) serves every test here."""

from __future__ import annotations

import ast
import html
import os
import re
import sqlite3
import sys
from pathlib import Path

import nbformat
import psutil
import pytest

import genlab
from genlab.classroom import grading, steps
from genlab.classroom.demo import CASES, CHAPTERS, DAEMON_MARK, LIMITS, PWNED, SECRET_NAME, run_demo
from genlab.classroom.feedback import hidden_lines, strip_hidden
from genlab.classroom.grade import Layout, bonus_points
from genlab.classroom.report import cell_scores

from conftest import ROOT

EXPECTED = {(ch, s): case[2] for ch, cases in CASES.items() for s, case in cases.items()}


SECRET = "instructor-token-4f1c9a"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    os.environ[SECRET_NAME] = SECRET  # an instructor's variable the snooping student looks for
    try:
        result = run_demo(tmp_path_factory.mktemp("demo-class"), ROOT, workers=2, progress=False)
    finally:
        del os.environ[SECRET_NAME]
    print("\n" + result.table)
    return result


def rows(demo) -> dict:
    return {(r.chapter, r.student): r for r in demo.rows}


def all_scores(root) -> dict:
    return {
        (ch, s): cell_scores(root / "gradebook.db", ch, s) for ch in CHAPTERS for s in CASES[ch]
    }


@pytest.mark.parametrize("key", sorted(EXPECTED), ids=lambda k: f"{k[0]}-{k[1]}")
def test_demo_row_matches_its_expected_outcome(demo, key):
    chapter, student = key
    expected, row = EXPECTED[key], rows(demo)[key]
    scores = cell_scores(demo.root / "gradebook.db", chapter, student)
    tests = {cell: s for cell, s in scores.items() if cell.startswith(grading.TEST_PREFIX)}
    assert tests, f"no scores for {student}"
    # a challenge is extra credit: its maximum is 0, a pass scores its points on top
    full = {cell: points for (_, cell), points in bonus_points(Layout(demo.root), chapter).items()}
    assert all(tests[cell][1] == 0 for cell in full), tests
    zero = set(tests) if expected.zero is None else set(expected.zero)
    wrong = {c: s for c, s in tests.items() if (s[0] != 0) if c in zero}
    wrong |= {c: s for c, s in tests.items() if c not in zero and s[0] != full.get(c, s[1])}
    assert not wrong, f"{student}: unexpected scores {wrong}; reasons {row.reasons}"
    assert row.status == expected.status, row
    assert expected.reason in "; ".join(row.reasons), row.reasons
    assert bool(row.flags) == expected.flagged, row.flags


def test_demo_table_lists_every_student_and_the_flagged_ones(demo):
    table = demo.table
    for chapter, student in EXPECTED:
        assert re.search(rf"^{re.escape(student)}\s+{chapter}", table, flags=re.M), student
    flagged = {line.split()[0] for line in table.splitlines() if "FLAGGED" in line}
    assert flagged == {s for (_, s), e in EXPECTED.items() if e.flagged}, flagged
    assert "jnp.allclose" in table


def test_the_gradebook_attack_changes_nothing_and_leaves_no_process(demo):
    with sqlite3.connect(demo.root / "gradebook.db") as db:
        manual = db.execute("SELECT count(*) FROM grade WHERE manual_score IS NOT NULL").fetchone()
    assert manual == (0,), "a kernel wrote manual scores into the course gradebook"
    alive = [p for p in psutil.process_iter(["cmdline"])
             if DAEMON_MARK in " ".join(p.info["cmdline"] or [])]  # fmt: skip
    assert not alive, f"the daemon outlived grading: {alive}"
    submitted = demo.root / "submitted" / "gradebook" / CHAPTERS[0] / f"{CHAPTERS[0]}.ipynb"
    assert "sqlite3.connect" in submitted.read_text(), "the evidence was erased"


def _snoop_report(demo) -> dict:
    chapter = CHAPTERS[0]
    nb = nbformat.read(demo.root / "autograded" / "snoop" / chapter / f"{chapter}.ipynb", 4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            if text.startswith("SNOOP "):
                return ast.literal_eval(text.removeprefix("SNOOP ").strip())
    raise AssertionError("the snooping submission's report is missing")


def test_the_snooping_student_finds_nothing_and_sends_nothing(demo):
    seen = _snoop_report(demo)
    assert seen["solutions"] == [] and seen["classmates"] == [], seen
    assert seen["environment"] == {}, seen
    assert seen["network"] != "sent" and demo.received == b"", (seen, demo.received)
    for folder in (Path(genlab.__file__).parent, Path(sys.prefix)):
        assert seen[str(folder)] != "written" and not (folder / PWNED).exists()
    for folder in ("autograded", "feedback", "logs"):
        for path in (demo.root / folder).rglob("*"):
            if path.is_file():
                assert SECRET not in path.read_text(errors="replace"), path


def test_regrading_is_idempotent_and_the_gradebook_stays_intact(demo):
    before = all_scores(demo.root)
    chapter = CHAPTERS[0]
    again = steps.grade(
        demo.root, chapter, ["correct", "broken_json", "partial"], workers=2,
        limits=LIMITS[chapter], progress=False,
    )  # fmt: skip
    assert {r.student: r.score for r in again} == {
        s: sum(v[0] for v in before[chapter, s].values())
        for s in ("correct", "broken_json", "partial")
    }
    assert all_scores(demo.root) == before
    with sqlite3.connect(demo.root / "gradebook.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (count,) = db.execute("SELECT count(*) FROM submitted_assignment").fetchone()
    assert count == len(EXPECTED)


def _text(path) -> str:
    """The visible text of an HTML file: tags dropped, entities decoded, spaces collapsed."""
    raw = re.sub(r"<[^>]+>", "", path.read_text(encoding="utf-8"))
    return " ".join(html.unescape(raw).split())


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_feedback_shows_scores_and_visible_checks_but_never_hidden_tests(demo, chapter):
    solution = nbformat.read(ROOT / "solutions" / chapter / f"{chapter}.ipynb", as_version=4)
    visible = {
        " ".join(line.split())
        for cell in solution.cells
        for line in strip_hidden(cell.source)[0].splitlines()
    }
    # Hidden lines that occur nowhere else in the notebook (a line such as `for ns in (True,
    # False):` may also be a visible check's); short ones like `])` could match anything.
    hidden = {
        " ".join(line.split())
        for cell in solution.cells
        for line in hidden_lines(cell.source)
        if len(line.strip()) > 12
    } - visible
    assert any("probe(" in line for line in hidden), hidden
    pages = sorted((demo.root / "feedback").glob(f"*/{chapter}/*.html"))
    assert {p.parts[-3] for p in pages} == set(CASES[chapter])
    for student, (_, _, expected) in CASES[chapter].items():
        if expected.status == "failed":  # a page says why it was not graded
            text = _text(demo.root / "feedback" / student / chapter / f"{chapter}.html")
            assert f"{chapter}: not graded" in text and expected.reason in text, text
    for page in pages:
        text = _text(page)
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"{page} shows hidden test lines: {leaked[:3]}"
    partial = _text(demo.root / "feedback" / "partial" / chapter / f"{chapter}.html")
    # A visible check's source and the scores are there (so the grep above can see code).
    first = grading.TEST_PREFIX + grading.exercise_names(solution)[0]
    visible = next(
        line for line in grading.graded_cells(solution)[first].source.splitlines()
        if line.startswith("check.")
    )  # fmt: skip
    assert " ".join(visible.split()) in partial
    assert "hidden tests: run by the grader, not shown" in partial
    assert re.search(r"Score: \d", partial), "feedback should show the score"


def test_bonus_points_count_the_same_in_report_csv_export_and_feedback(demo):
    """One way of counting a challenge: extra credit on top of the chapter's maximum."""
    import csv

    chapter = CHAPTERS[0]
    bonus = sum(bonus_points(Layout(demo.root), chapter).values())
    assert bonus > 0, "chapter 00 has a challenge"
    row = rows(demo)[chapter, "correct"]
    assert row.bonus == bonus and row.score == row.max_score + bonus, row
    assert f"{row.score:g}/{row.max_score:g} (incl. {bonus:g} bonus)" in demo.table
    with open(demo.root / "reports" / f"{chapter}.csv") as f:
        report = {r["student"]: r for r in csv.DictReader(f)}
    assert float(report["correct"]["score"]) == row.score
    assert float(report["correct"]["max_score"]) == row.max_score
    exported = steps.export(demo.root, demo.root / "grades.csv")
    with open(exported) as f:
        grades = {(r["student_id"], r["assignment"]): r for r in csv.DictReader(f)}
    assert float(grades["correct", chapter]["score"]) == row.score
    assert float(grades["correct", chapter]["max_score"]) == row.max_score
    page = _text(demo.root / "feedback" / "correct" / chapter / f"{chapter}.html")
    assert f"{row.score:.1f} / {row.max_score:.1f}" in page, page[:500]


def test_an_untouched_submission_gets_no_checksum_warnings(demo):
    log = (demo.root / "logs" / CHAPTERS[0] / "untouched.log").read_text()
    assert "checksum" not in log and "has changed" not in log, log[-2000:]
    log = (demo.root / "logs" / CHAPTERS[0] / "correct.log").read_text()
    assert "has changed" not in log, log[-2000:]


def test_feedback_has_no_sandbox_noise_and_progress_bars_show_their_final_state(demo):
    for page in (demo.root / "feedback").glob("*/*/*.html"):
        text = page.read_text(encoding="utf-8")
        assert "Fontconfig" not in text, page
        assert " 0%|" not in text, f"{page} shows a progress bar stuck at 0%"
