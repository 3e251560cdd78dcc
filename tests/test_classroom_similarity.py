"""The similarity report: copies are flagged whatever their names, comments and order; independent
correct answers are not; a retyped reference is flagged against the course's code."""

from __future__ import annotations

import csv
import inspect
import random
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from bench import similarity as similar
from genlab import probing
from genlab.classroom import grading
from genlab.classroom import similarity as sim

from conftest import MUTANTS

CHAPTER = similar.CHAPTER


@pytest.fixture
def course(tmp_path) -> Path:
    return similar.course_folder(tmp_path)


def test_tokens_ignore_names_comments_literals_and_docstrings():
    a = 'def f(x, n=3):\n    """Doc."""\n    y = jnp.sum(x ** 2)  # squares\n    return y + n'
    b = "def g(values, k=7):\n    total = jnp.sum(values ** 2)  # other\n    return total + k"
    assert [t for t, _ in sim.normalised_tokens(a)] == [t for t, _ in sim.normalised_tokens(b)]
    c = "def g(values, k=7):\n    total = jnp.mean(values ** 2)\n    return total + k"
    assert [t for t, _ in sim.normalised_tokens(a)] != [t for t, _ in sim.normalised_tokens(c)]


def test_winnowing_guarantees_a_match_for_a_long_shared_run():
    body = "\n".join(
        f"    v{i} = jnp.tanh(v{i - 1} * {i}) + jnp.exp(-v{i - 1})" for i in range(1, 6)
    )
    a = f"def f(v0):\n{body}\n    return v5"
    b = f"def totally_other(q):\n    q = q + 1\n    w = q ** 3\n{body}\n    return v5"
    assert set(sim.fingerprints(a)) & set(sim.fingerprints(b))
    assert not set(sim.fingerprints(a)) & set(sim.fingerprints("def h(x):\n    return x"))


def test_unreadable_code_gives_the_tokens_before_the_error():
    assert [t for t, _ in sim.normalised_tokens("x = (1 +")][:3] == ["V", "=", "("]


def test_copy_is_flagged_independent_answers_are_not_and_a_retyped_reference_is(course):
    release = nbformat.read(course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    rng = random.Random(1)
    first = similar.student(release, rng, lambda sources: sources[0])
    similar.submit(course, "ada", first)
    similar.submit(course, "bo", similar.student(release, rng, lambda sources: sources[1]))
    for i in range(6):  # classmates who answered in a mixture of the same styles
        similar.submit(course, f"mix{i}", similar.student(release, rng, rng.choice))
    similar.submit(course, "cy", {name: similar.disguised(src) for name, src in first.items()})
    reference = probing.probes_for(CHAPTER)["logsumexp"].reference
    retyped = similar.student(release, rng, lambda sources: sources[1])
    retyped["logsumexp"] = similar.renamed(inspect.getsource(reference), "_x")
    similar.submit(course, "di", retyped)
    for i in range(4):  # classmates who left the notebook as released
        shutil.copytree(course / "chapters" / CHAPTER, course / "submitted" / f"blank{i}" / CHAPTER)
    (course / "submitted" / "eve" / CHAPTER).mkdir(parents=True)
    (course / "submitted" / "eve" / CHAPTER / f"{CHAPTER}.ipynb").write_text("{not json")

    class_report = course / "reports" / f"{CHAPTER}.csv"
    class_report.parent.mkdir()
    class_report.write_text(
        "student,chapter,score,max_score,status,reasons,flags\n"
        f"ada,{CHAPTER},16,16,graded,,\n"
        f"bo,{CHAPTER},16,16,graded,,called the library's reference\n"
        f"cy,{CHAPTER},16,16,graded,,answers share code with zed (similarity 0.99)\n"
    )

    report = sim.similarity(course, CHAPTER)

    marked = {r["student"]: r["flags"] for r in csv.DictReader(open(class_report))}
    assert re.fullmatch(r"answers share code with cy \(similarity (0\.9\d|1\.00)\)", marked["ada"])
    assert re.fullmatch(r"answers share code with ada \(similarity (0\.9\d|1\.00)\)", marked["cy"])
    assert marked["bo"] == "called the library's reference", marked
    flagged = {(p.a, p.b) for p in report.flagged()}
    assert ("ada", "cy") in flagged, [p for p in report.pairs if {p.a, p.b} == {"ada", "cy"}]
    assert ("di", "reference:logsumexp") in flagged
    students = {a for a, _ in flagged} | {b for _, b in flagged}
    assert students == {"ada", "cy", "di", "reference:logsumexp"}, flagged
    assert report.skipped == {"eve": "not a readable notebook (NotJSONError)"}

    rows = list(csv.DictReader(open(course / "reports" / f"{CHAPTER}-similarity.csv")))
    assert rows[0]["flagged"] == "yes" and rows[-1]["student_a"] == "eve"
    page = (course / "reports" / f"{CHAPTER}-similarity.html").read_text()
    assert "ada and cy" in page and 'class="m"' in page


def test_no_correct_alternatives_pair_up_in_any_chapter():
    """The false-positive measure: in each chapter, the first and the second correct alternative
    of every exercise (tests/mutants, written independently) as two students: never flagged."""
    found = {}
    for path in sorted(MUTANTS.glob("[0-9][0-9]_*.py")):
        correct = grading.load_variants(path).correct
        docs = [
            sim.document(
                f"{path.stem}:alt{i}",
                {name: list(v.values())[i] for name, v in correct.items() if len(v) > i},
                {},
            )  # fmt: skip
            for i in range(2)
        ]
        found[path.stem] = [p for p in sim.compare_class(docs) if p.flagged]
    assert not any(found.values()), found


def test_a_generated_class_of_two_hundred_flags_exactly_its_copies(tmp_path):
    course = similar.course_folder(tmp_path)
    copies = similar.generated_class(course, 200)
    report = sim.similarity(course, CHAPTER)
    assert {(p.a, p.b) for p in report.flagged()} == copies


def test_the_command_line_writes_the_reports_and_names_the_flagged_pairs(course, capsys):
    from genlab.classroom import cli

    release = nbformat.read(course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    answers = similar.student(release, random.Random(3), lambda sources: sources[0])
    similar.submit(course, "ann", answers)
    similar.submit(course, "ben", {n: similar.disguised(a) for n, a in answers.items()})
    for i in range(3):
        similar.submit(course, f"other{i}", similar.student(release, random.Random(i), min))
    assert cli.main(["--course", str(course), "similarity", CHAPTER]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ann\s+ben\s+similarity (0\.9\d|1\.00)", out, flags=re.M), out
    assert "1 flagged of" in out
    assert (course / "reports" / f"{CHAPTER}-similarity.html").exists()
