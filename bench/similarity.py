"""Benchmark: the similarity report (``genlab.classroom.similarity``) on a generated class.

A class of N submissions of chapter 00, written to disk as notebooks: each student answers every
exercise in one of the correct styles of ``tests/mutants/00_jax_primer.py`` with every local name
renamed, and adds a helper of their own (eight random lines, the part of a real submission no one
else wrote); three more students hand in disguised copies of three classmates (names, comments and
the order of definitions changed). The time is the whole report: reading the notebooks,
fingerprinting, comparing every pair and against the reference, writing the CSV and HTML. Target:
a class of 200 in under a minute on 2 cores.
"""

from __future__ import annotations

import ast
import builtins
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from bench.harness import ROOT, Table
from genlab.classroom import grading
from genlab.classroom import similarity as classroom_similarity

CHAPTER = "00_jax_primer"
MUTANTS = ROOT / "tests" / "mutants"
OPS = "tanh exp log1p sin cos cumsum sort abs sqrt square sign floor ceil round flip ravel".split()
TEMPLATES = (
    "    x = jnp.{op}(x) {sign} {n} * x[{i}]",
    "    x = jnp.{op}(x * {n}) {sign} x",
    "    x = jnp.where(x > {n}, jnp.{op}(x), x {sign} {i})",
    "    x = x {sign} jnp.{op}(x[{i}:])[:{n}].sum()",
)


def renamed(source: str, suffix: str = "_mine") -> str:
    """``source`` with every local name renamed (arguments, variables, functions)."""
    tree = ast.parse(source)
    local = {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    local |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    local |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    local -= classroom_similarity.KEPT_NAMES | set(dir(builtins))
    for name in sorted(local, key=len, reverse=True):
        source = re.sub(rf"(?<![\w.]){re.escape(name)}\b", name + suffix, source)
    return source


def disguised(source: str) -> str:
    """Renamed, comments changed, the top-level definitions in reverse order: a copy made to
    look like one's own."""
    tree = ast.parse(source)
    lines = source.splitlines()
    blocks = [
        "\n".join(lines[node.lineno - 1 - len(node.decorator_list) : node.end_lineno])
        for node in tree.body
    ]
    text = "\n\n".join(reversed(blocks)) if len(blocks) > 1 else source
    return renamed(re.sub(r"#[^\n]*", "# my own working", text))


def own_work(rng: random.Random) -> str:
    """A helper no one else wrote: eight lines of randomly chosen operations and shapes."""
    lines = ["def helper(x):"]
    for i in range(8):
        template = rng.choice(TEMPLATES)
        lines.append(template.format(op=rng.choice(OPS), sign=rng.choice("+-*"), n=i + 2, i=i % 3))
    return "\n".join([*lines, "    return x"])


def styles(release_nb) -> dict[str, list[str]]:
    """Per exercise of the release, its correct alternatives from the mutant list."""
    correct = grading.load_variants(MUTANTS / f"{CHAPTER}.py").correct
    return {name: list(correct[name].values()) for name in grading.exercise_names(release_nb)}


def student(release_nb, rng: random.Random, choose) -> dict[str, str]:
    """One student's answers: a style per exercise (``choose`` picks among the alternatives) and
    a helper of their own in the power_sum cell."""
    answers = {name: choose(sources).strip() for name, sources in styles(release_nb).items()}
    answers["power_sum"] += "\n\n" + own_work(rng)
    return answers


def course_folder(root: Path) -> Path:
    """A course folder holding the chapter's release and solution (no nbgrader needed)."""
    for folder in ("chapters", "solutions"):
        shutil.copytree(ROOT / folder / CHAPTER, root / folder / CHAPTER)
    return root


def submit(course: Path, name: str, answers: dict[str, str]) -> None:
    """The release with ``answers`` in its answer cells, as ``submitted/NAME/CH/CH.ipynb``."""
    nb = nbformat.read(course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    for exercise, source in answers.items():
        nb = grading.replace_answer(nb, exercise, source)
    target = course / "submitted" / name / CHAPTER
    target.mkdir(parents=True)
    nbformat.write(nb, target / f"{CHAPTER}.ipynb")


def generated_class(course: Path, size: int, copied=(3, 50, 120), seed: int = 0) -> set:
    """``size`` students plus one disguised copy of each of ``copied``; returns the copy pairs."""
    rng = random.Random(seed)
    release = nbformat.read(course / "chapters" / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    answers = {}
    for s in range(size):
        answers[s] = student(release, rng, rng.choice)
        submit(course, f"s{s:03d}", {n: renamed(a, f"_{s}") for n, a in answers[s].items()})
    pairs = set()
    for k, original in enumerate(c for c in copied if c < size):
        copier = size + k
        submit(course, f"s{copier:03d}", {n: disguised(a) for n, a in answers[original].items()})
        pairs.add((f"s{original:03d}", f"s{copier:03d}"))
    return pairs


def run(quick: bool = False) -> list[Table]:
    table = Table(
        "Similarity report: a generated class of chapter 00 (whole report, one process)",
        ["students", "pairs scored", "flagged", "copies found", "seconds"],
    )
    for size in (20,) if quick else (50, 200):
        with tempfile.TemporaryDirectory() as tmp:
            course = course_folder(Path(tmp))
            copies = generated_class(course, size, copied=(3, 12) if quick else (3, 50, 120))
            start = time.perf_counter()
            report = classroom_similarity.similarity(course, CHAPTER)
            seconds = time.perf_counter() - start
            flagged = {(p.a, p.b) for p in report.flagged()}
            table.add(size + len(copies), len(report.pairs), len(flagged),
                      f"{len(copies & flagged)} of {len(copies)}", seconds)  # fmt: skip
    table.notes.append(
        "Each student answers in one of the mutant list's correct styles, renamed, plus a helper "
        "of their own; the copies rename, re-comment and reorder. Generating the class is not "
        "timed."
    )
    return [table]
