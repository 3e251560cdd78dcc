"""The exercise-design rules (design.md, "Exercise design") that a program can check.

- A docstring fixes the contract, not the answer: no line of an answer's docstrings is code
  (a statement that computes something: an assignment from a computation, a call of an array
  library, a loop, a return). Pinning randomness by naming the ``jax.random`` call is allowed.
- Every exercise is followed by a collapsed hint (``<details>``) before the next exercise.
- Every chapter has a challenge exercise (bonus points), marked by its test cell's first line.
"""

from __future__ import annotations

import ast
import re

import nbformat
import pytest

from genlab.classroom import grading

from conftest import main_notebook

ARRAY_LIBRARIES = {"jnp", "np", "jax", "nnx", "optax", "lax", "numpy", "math", "scipy"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else "?"


def _computes(node: ast.AST) -> bool:
    """True if the expression calls something other than ``jax.random.*`` or does arithmetic
    on a call or subscript (a formula written as code)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            name = _dotted(sub.func)
            if not name.startswith("jax.random."):
                return True
        if isinstance(sub, ast.BinOp) and any(
            isinstance(side, (ast.Call, ast.Subscript, ast.Attribute))
            for side in (sub.left, sub.right)
        ):
            return True
    return False


def is_code(line: str) -> bool:
    """Does this docstring line read as Python that computes something?"""
    text = line.strip().rstrip(".,;")
    if not text or text.startswith(("Args", "Returns", "Raises")):
        return False
    if text.startswith(">>>"):
        return True
    for candidate in (text, text + " pass" if text.endswith(":") else None):
        if candidate is None:
            continue
        try:
            tree = ast.parse(candidate)
        except SyntaxError:
            continue
        for stmt in tree.body:
            if isinstance(stmt, (ast.For, ast.While, ast.If, ast.With, ast.Return, ast.Import,
                                 ast.ImportFrom, ast.FunctionDef, ast.Lambda)):  # fmt: skip
                return True
            if isinstance(stmt, (ast.Assign, ast.AugAssign)) and (
                _computes(stmt.value) or isinstance(stmt.value, ast.BinOp)
            ):
                return True
            if isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                return _computes(stmt.value)
            if isinstance(stmt, ast.Expr) and _computes(stmt.value):
                call = stmt.value
                # "softmax(x)" or "f(x, axis=-1)" naming the function itself is a signature, not
                # an answer; a library call or arithmetic on calls is the answer.
                if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
                    if not any(isinstance(a, (ast.Call, ast.BinOp)) for a in call.args):
                        continue
                return True
    return False


def docstrings(source: str) -> list[tuple[str, str]]:
    """(owner, docstring) of every function and class defined in an answer cell."""
    tree = ast.parse(grading.strip_solution_markers(source))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            text = ast.get_docstring(node)
            if text:
                found.append((node.name, text))
    return found


@pytest.mark.parametrize(
    "line",
    [
        "mean + jnp.exp(0.5 * log_var) * eps",
        "z = mean + sigma * eps",
        "return jnp.sum(x, axis=-1)",
        "for t in range(T):",
        "loss = optax.softmax_cross_entropy(logits, labels).mean()",
        ">>> logsumexp(x)",
        "out = weights @ v",
        "m = jnp.max(x, axis=axis, keepdims=True)",
    ],
)
def test_code_lines_are_recognised(line):
    assert is_code(line)


@pytest.mark.parametrize(
    "line",
    [
        "x: [B, D] float32, the data.",
        "Returns the mean over the batch, a scalar.",
        "(B, T, V)",
        "eps = jax.random.normal(key, mean.shape)",
        "logsumexp(x, axis=-1)",
        "0 exactly at the prior; positive otherwise.",
        "t = 0",
        "If the mask is None every key is allowed.",
        "p = 1 keeps every token of nonzero probability.",
    ],
)
def test_contract_lines_are_not_code(line):
    assert not is_code(line)


def test_no_docstring_holds_code(chapter):
    nb = nbformat.read(main_notebook(chapter), as_version=4)
    cells = grading.graded_cells(nb)
    offending = []
    for name in grading.exercise_names(nb):
        for owner, text in docstrings(cells[name].source):
            offending += [f"{name} ({owner}): {line.strip()}" for line in text.splitlines()
                          if is_code(line)]  # fmt: skip
    assert not offending, "docstrings must state the contract, not the code:\n" + "\n".join(
        offending
    )


def test_every_exercise_is_followed_by_a_collapsed_hint(chapter):
    nb = nbformat.read(main_notebook(chapter), as_version=4)
    ids = [c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nb.cells]
    missing = []
    for name in grading.exercise_names(nb):
        start = ids.index(grading.TEST_PREFIX + name) + 1
        following = []
        for cell, grade_id in zip(nb.cells[start:], ids[start:]):
            if grade_id and grade_id != name and grade_id in grading.exercise_names(nb):
                break
            following.append(cell)
        if not any(c.cell_type == "markdown" and "<details>" in c.source for c in following):
            missing.append(name)
    assert not missing, f"exercises without a <details> hint after their test cell: {missing}"


def test_every_chapter_has_a_challenge_exercise(chapter):
    nb = nbformat.read(main_notebook(chapter), as_version=4)
    challenges = grading.challenge_names(nb)
    assert challenges, f"{chapter}: no test cell starts with {grading.CHALLENGE_MARK!r}"
    assert set(challenges) < set(grading.exercise_names(nb)), "a chapter is not all bonus"


# --- exercise kinds, point shares, hints and answer code (design.md section 4) ----------------

KINDS = ("implement", "derive", "diagnose", "design", "experiment")
HEADING = re.compile(r"^### Exercise (\d+) \((" + "|".join(KINDS) + r")(, challenge)?\): \S")
HINT_LEVELS = (
    "<details><summary>Hint 1 (idea)</summary>",
    "<details><summary>Hint 2 (math)</summary>",
)
CODE_CALL = re.compile(r"`[^`\n]*\w\([^`\n]*`")
MIN_ANSWER_LINE = 20  # characters, whitespace removed: shorter lines ("return x") are no giveaway


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def exercise_headings(nb) -> dict[str, str]:
    """Each exercise's heading: the last "### Exercise" line between the previous exercise's test
    cell and its answer cell ("" when there is none)."""
    names = set(grading.exercise_names(nb))
    headings, last = {}, ""
    for cell in nb.cells:
        grade_id = _grade_id(cell)
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("### ") and "xercise" in line:
                    last = line
        elif grade_id in names:
            headings[grade_id] = last
        elif grade_id and grade_id.startswith(grading.TEST_PREFIX):
            last = ""
    return headings


def exercise_kinds(nb) -> dict[str, str]:
    """``{name: kind}`` read from the headings (a heading that does not parse gives no kind)."""
    kinds = {}
    for name, heading in exercise_headings(nb).items():
        match = HEADING.match(heading)
        if match:
            kinds[name] = match.group(2)
    return kinds


def exercise_points(nb) -> dict[str, float]:
    cells = grading.graded_cells(nb)
    return {
        name: float(cells[grading.TEST_PREFIX + name].metadata["nbgrader"].get("points", 0))
        for name in grading.exercise_names(nb)
    }


def hint_cells(nb) -> dict[str, list[str]]:
    """The markdown after each exercise's test cell, up to the next exercise's answer cell."""
    names = set(grading.exercise_names(nb))
    hints, current = {}, None
    for cell in nb.cells:
        grade_id = _grade_id(cell)
        if grade_id and grade_id.startswith(grading.TEST_PREFIX) and grade_id[5:] in names:
            current = grade_id[5:]
            hints[current] = []
        elif grade_id in names:
            current = None
        elif current and cell.cell_type == "markdown":
            hints[current].append(cell.source)
    return hints


def solution_lines(source: str) -> list[str]:
    """The lines between the solution markers, whitespace removed, long enough to matter."""
    lines, inside = [], False
    for line in source.splitlines():
        if line.strip() == grading.BEGIN_SOLUTION:
            inside = True
        elif line.strip() == grading.END_SOLUTION:
            inside = False
        elif inside:
            squeezed = "".join(line.split())
            if len(squeezed) >= MIN_ANSWER_LINE and not squeezed.startswith("#"):
                lines.append(squeezed)
    return lines


def test_every_exercise_names_its_kind(chapter):
    nb = nbformat.read(main_notebook(chapter), as_version=4)
    headings = exercise_headings(nb)
    challenges = set(grading.challenge_names(nb))
    problems, numbers = [], []
    for name, heading in headings.items():
        match = HEADING.match(heading)
        if not match:
            problems.append(f"{name}: heading {heading!r} is not '### Exercise N (KIND): title'")
            continue
        numbers.append(int(match.group(1)))
        if bool(match.group(3)) != (name in challenges):
            problems.append(
                f"{name}: ', challenge' in the heading iff its test cell is a challenge"
            )
    assert not problems, f"{chapter}:\n" + "\n".join(problems)
    assert numbers == list(range(1, len(numbers) + 1)), f"{chapter}: exercise numbers {numbers}"


def test_implement_is_at_most_half_the_points_and_one_exercise_is_derive(chapter):
    nb = nbformat.read(main_notebook(chapter), as_version=4)
    kinds, points = exercise_kinds(nb), exercise_points(nb)
    implement = sum(p for name, p in points.items() if kinds.get(name) == "implement")
    total = sum(points.values())
    assert implement <= 0.5 * total, f"{chapter}: implement has {implement:g} of {total:g} points"
    assert "derive" in kinds.values(), (
        f"{chapter}: no derive exercise ({sorted(set(kinds.values()))})"
    )


def test_hints_teach_the_idea_then_the_math_without_code(chapter):
    nb = nbformat.read(main_notebook(chapter), as_version=4)
    problems = []
    for name, cells in hint_cells(nb).items():
        text = "\n".join(cells)
        where = [text.find(level) for level in HINT_LEVELS]
        if min(where) < 0 or where != sorted(where):
            problems.append(f"{name}: hints must be {HINT_LEVELS[0]!r} then {HINT_LEVELS[1]!r}")
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "<details>" in cell.source:
            calls = CODE_CALL.findall(cell.source)
            if calls or "```" in cell.source:
                problems.append(f"a hint holds code: {calls or 'a fenced block'}: "
                                f"{cell.source[:80]!r}")  # fmt: skip
    assert not problems, f"{chapter}:\n" + "\n".join(problems)


def test_no_answer_line_appears_outside_its_answer_cell(chapter):
    """No solution line stands in a code cell a student sees, or in the prose before its test."""
    nb = nbformat.read(main_notebook(chapter), as_version=4)
    names = set(grading.exercise_names(nb))
    visible_code = [
        "".join(c.source.split())
        for c in nb.cells
        if c.cell_type == "code" and _grade_id(c) not in names
    ]
    problems = []
    prose_before = ""
    cells = grading.graded_cells(nb)
    for cell in nb.cells:
        grade_id = _grade_id(cell)
        if cell.cell_type == "markdown":
            prose_before += "".join(cell.source.split())
        if grade_id and grade_id.startswith(grading.TEST_PREFIX) and grade_id[5:] in names:
            for line in solution_lines(cells[grade_id[5:]].source):
                if line in prose_before:
                    problems.append(f"{grade_id[5:]}: the prose before its test holds {line!r}")
                if any(line in code for code in visible_code):
                    problems.append(f"{grade_id[5:]}: a visible code cell holds {line!r}")
    assert not problems, f"{chapter}:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    "heading, kind",
    [
        ("### Exercise 4 (derive): one step back, given the start", "derive"),
        ("### Exercise 15 (implement, challenge): the sliced Wasserstein distance", "implement"),
        ("### Exercise 4: the posterior", None),
        ("### Exercise 4 (guess): the posterior", None),
        ("## Exercise 4 (derive): the posterior", None),
    ],
)
def test_headings_are_parsed_strictly(heading, kind):
    match = HEADING.match(heading)
    assert (match.group(2) if match else None) == kind


def test_code_calls_in_hints_are_recognised():
    assert CODE_CALL.search("use `jnp.where(mask, x, 0)` here")
    assert CODE_CALL.search("`f(x)`")
    assert not CODE_CALL.search("the `axis` argument and $f(x)$ in math")
