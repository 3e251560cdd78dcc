"""A static scan of submissions for code an instructor should look at before trusting a score.

Nothing inside one kernel is tamper-proof, so the scan reads the student's code (without running
it) and flags: assignments to (or rebinding of) the names the tests use, assignments to
attributes of ``jax``, ``jnp``, ``np``, ``genlab``, its modules,
``builtins`` or the test helpers (``check``), ``setattr`` on them, and reading files outside the
submission (``open`` of an absolute or ``..`` path, ``os.listdir``, ``glob``, ``os.walk``, ...).
A flag is a reason for manual review, not a verdict.
"""

from __future__ import annotations

import ast
import json

PROTECTED = {
    "jax", "jnp", "np", "numpy", "genlab", "builtins", "__builtins__", "check", "runtime",
    "primer", "gan", "vae", "nn", "train", "plot", "data", "optax", "nnx", "math", "os", "sys",
}  # fmt: skip
# Names the tests use for comparisons; rebinding one (``check = ...``) changes what they do.
REBIND = {"jax", "jnp", "np", "check", "genlab", "primer", "gan", "vae", "nnx", "optax"}
LISTING = {"listdir", "scandir", "walk", "glob", "iglob", "rglob", "iterdir"}


def _root_name(node) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _outside_path(node) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.startswith(("/", "~")) or ".." in node.value.split("/")
    return False


def scan_source(source: str) -> list[str]:
    """Flags for one cell's code (empty when nothing suspicious); IPython magics are skipped."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return []
    flags = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and _root_name(target) in PROTECTED:
                flags.append(f"assigns {_dotted(target)} (line {node.lineno})")
            elif isinstance(target, ast.Name) and target.id in REBIND:
                flags.append(f"rebinds {target.id} (line {node.lineno})")
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            last = name.rsplit(".", 1)[-1]
            if last in ("setattr", "delattr") and node.args:
                if _root_name(node.args[0]) in PROTECTED:
                    flags.append(f"{last} on {_dotted(node.args[0])} (line {node.lineno})")
            elif last == "open" and node.args and _outside_path(node.args[0]):
                flags.append(f"opens {node.args[0].value!r} (line {node.lineno})")
            elif last in LISTING:
                flags.append(f"lists files with {name} (line {node.lineno})")
    return flags


def scan_notebook(path) -> list[str]:
    """Flags for every code cell of the notebook at ``path`` (a cell's flags name its grade_id)."""
    try:
        nb = json.loads(open(path, encoding="utf-8").read())
    except (OSError, ValueError):
        return []
    flags = []
    for index, cell in enumerate(nb.get("cells", []) if isinstance(nb, dict) else []):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        where = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or f"cell {index}"
        flags += [f"{where}: {flag}" for flag in scan_source(source)]
    return flags
