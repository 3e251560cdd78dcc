"""The exercise-design rules (design.md, "Exercise design") that a program can check.

- A docstring fixes the contract, not the answer: no line of an answer's docstrings is code
  (a statement that computes something: an assignment from a computation, a call of an array
  library, a loop, a return). Pinning randomness by naming the ``jax.random`` call is allowed.
- Every exercise is followed by a collapsed hint (``<details>``) before the next exercise.
- Every chapter has a challenge exercise (bonus points), marked by its test cell's first line.
"""

from __future__ import annotations

import ast

import nbformat
import pytest

from genlab import grading

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
