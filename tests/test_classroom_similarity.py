"""The similarity report: copies are flagged whatever their names, comments and order; independent
correct answers are not; a retyped reference is flagged against the course's code."""

from __future__ import annotations

import ast
import builtins
import csv
import inspect
import random
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from genlab import classroom_similarity as sim
from genlab import grading, probing

from conftest import MUTANTS, RELEASE, SOLUTIONS

CHAPTER = "00_jax_primer"


def renamed(source: str, suffix: str = "_mine") -> str:
    """``source`` with every local name renamed (arguments, variables, functions), as a student
    who copies and disguises would."""
    tree = ast.parse(source)
    local = {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    local |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    local |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    local -= sim.KEPT_NAMES | set(dir(builtins))
    for name in sorted(local, key=len, reverse=True):
        source = re.sub(rf"(?<![\w.]){re.escape(name)}\b", name + suffix, source)
    return source


def disguised(source: str) -> str:
    """Renamed, comments changed, the top-level definitions in reverse order."""
    tree = ast.parse(source)
    lines = source.splitlines()
    blocks = [
        "\n".join(lines[node.lineno - 1 - len(node.decorator_list) : node.end_lineno])
        for node in tree.body
    ]
    text = "\n\n".join(reversed(blocks)) if len(blocks) > 1 else source
    text = re.sub(r"#[^\n]*", "# my own working", text)
    return renamed(text)


@pytest.fixture
def course(tmp_path) -> Path:
    """A course folder with the chapter's release and solution (no nbgrader needed)."""
    for folder, top in (("chapters", RELEASE), ("solutions", SOLUTIONS)):
        (tmp_path / folder).mkdir()
        shutil.copytree(top / CHAPTER, tmp_path / folder / CHAPTER)
    return tmp_path


def submit(course: Path, student: str, answers: dict[str, str]) -> None:
    """The release with ``answers`` written into its answer cells."""
    nb = nbformat.read(course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    for name, source in answers.items():
        nb = grading.replace_answer(nb, name, source)
    target = course / "submitted" / student / CHAPTER
    target.mkdir(parents=True)
    nbformat.write(nb, target / f"{CHAPTER}.ipynb")


def styles() -> list[dict[str, str]]:
    """Per exercise of the release, its correct alternatives from the mutant list."""
    release = nbformat.read(RELEASE / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    correct = grading.load_variants(MUTANTS / f"{CHAPTER}.py").correct
    return {name: list(correct[name].values()) for name in grading.exercise_names(release)}


def student(rng: random.Random, choose) -> dict[str, str]:
    """A student's answers: an alternative per exercise (``choose`` picks it) plus a helper of
    their own, the part of every real submission that no one else wrote."""
    answers = {name: choose(sources).strip() for name, sources in styles().items()}
    answers["power_sum"] += "\n\n" + own_work(rng)
    return answers


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
    rng = random.Random(1)
    first = student(rng, lambda sources: sources[0])
    submit(course, "ada", first)
    submit(course, "bo", student(rng, lambda sources: sources[1]))
    for i in range(6):  # classmates who answered in a mixture of the same styles
        submit(course, f"mix{i}", student(rng, rng.choice))
    submit(course, "cy", {name: disguised(src) for name, src in first.items()})
    reference = probing.probes_for(CHAPTER)["logsumexp"].reference
    retyped = student(rng, lambda sources: sources[1])
    retyped["logsumexp"] = renamed(inspect.getsource(reference), "_x")
    submit(course, "di", retyped)
    for i in range(4):  # classmates who left the notebook as released
        shutil.copytree(course / "chapters" / CHAPTER, course / "submitted" / f"blank{i}" / CHAPTER)
    (course / "submitted" / "eve" / CHAPTER).mkdir(parents=True)
    (course / "submitted" / "eve" / CHAPTER / f"{CHAPTER}.ipynb").write_text("{not json")

    report = sim.similarity(course, CHAPTER)

    flagged = {(p.a, p.b) for p in report.flagged()}
    assert ("ada", "cy") in flagged, [p for p in report.pairs if {p.a, p.b} == {"ada", "cy"}]
    assert not any({"ada", "bo"} == {a, b} for a, b in flagged), report.pairs[:5]
    assert ("di", "reference:logsumexp") in flagged
    students = {a for a, _ in flagged} | {b for _, b in flagged}
    assert students == {"ada", "cy", "di", "reference:logsumexp"}, flagged
    assert report.skipped == {"eve": "not a readable notebook (NotJSONError)"}

    rows = list(csv.DictReader(open(course / "reports" / f"{CHAPTER}-similarity.csv")))
    assert rows[0]["flagged"] == "yes" and rows[-1]["student_a"] == "eve"
    page = (course / "reports" / f"{CHAPTER}-similarity.html").read_text()
    assert "ada and cy" in page and 'class="m"' in page


def test_no_correct_alternatives_pair_up_in_any_chapter(tmp_path):
    """The false-positive measure: each chapter's independently written correct alternatives
    (tests/mutants) as two students, with the solution as a third; none may be flagged."""
    found = {}
    for path in sorted(MUTANTS.glob("[0-9][0-9]_*.py")):
        correct = grading.load_variants(path).correct
        docs = []
        for index in range(2):
            cells = {}
            for name, variants in correct.items():
                sources = list(variants.values())
                if index < len(sources):
                    cells[name] = sources[index]
            docs.append(sim.document(f"{path.stem}:alt{index}", cells, {}))
        found[path.stem] = [p for p in sim.compare_class(docs) if p.flagged]
    assert not any(found.values()), found


OPS = (
    "tanh",
    "exp",
    "log1p",
    "sin",
    "cos",
    "cumsum",
    "sort",
    "abs",
    "sqrt",
    "square",
    "sign",
    "floor",
    "ceil",
    "round",
    "flip",
    "ravel",
    "arctan",
    "sinh",
    "cosh",
    "expm1",
)
TEMPLATES = (
    "    x = jnp.{op}(x) {sign} {n} * x[{i}]",
    "    x = jnp.{op}(x * {n}) {sign} x",
    "    x = jnp.where(x > {n}, jnp.{op}(x), x {sign} {i})",
    "    x = x {sign} jnp.{op}(x[{i}:])[:{n}].sum()",
)


def own_work(rng: random.Random) -> str:
    """A helper no one else wrote: eight lines of randomly chosen operations and shapes."""
    lines = ["def helper(x):"]
    for i in range(8):
        template = rng.choice(TEMPLATES)
        lines.append(template.format(op=rng.choice(OPS), sign=rng.choice("+-*"), n=i + 2, i=i % 3))
    return "\n".join(lines + ["    return x"])


def test_a_class_of_two_hundred_is_compared_in_one_pass():
    """200 generated submissions (mixtures of the correct alternatives, each renamed, each with
    a helper of its own) and three disguised copies: exactly the copies are flagged."""
    rng = random.Random(0)
    variants = grading.load_variants(MUTANTS / f"{CHAPTER}.py").correct
    docs = []
    for s in range(200):
        cells = {
            name: renamed(rng.choice(list(v.values())), f"_{s}") for name, v in variants.items()
        }
        cells["power_sum"] += "\n\n" + own_work(rng)
        docs.append(sim.document(f"s{s}", cells, {}))
    for copy_of, copier in ((3, 200), (50, 201), (120, 202)):
        cells = {n: disguised(src) for n, src in docs[copy_of].sources.items()}
        docs.append(sim.document(f"s{copier}", cells, {}))
    flagged = {(p.a, p.b) for p in sim.compare_class(docs) if p.flagged}
    assert {("s3", "s200"), ("s50", "s201"), ("s120", "s202")} <= flagged
    assert len(flagged) == 3, sorted(flagged)[:10]
