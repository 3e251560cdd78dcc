"""Benchmark: the course as students and instructors feel it.

Each solution notebook's wall time in full and fast mode (``GENLAB_FAST=1``) against the budgets
(design section 4: under 3 minutes on 2 cores, under 1 minute fast), and nbgrader autograding:
seconds per submission, serial and on 2 workers.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from bench.harness import ROOT, Table

FULL_BUDGET, FAST_BUDGET = 180.0, 60.0


def notebook_seconds(path: Path, *, fast: bool) -> float:
    """Wall time of executing ``path`` top to bottom in a fresh kernel."""
    saved = os.environ.pop("GENLAB_FAST", None)
    if fast:
        os.environ["GENLAB_FAST"] = "1"
    try:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=900, resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        client.execute()
        return time.perf_counter() - start
    finally:
        os.environ.pop("GENLAB_FAST", None)
        if saved is not None:
            os.environ["GENLAB_FAST"] = saved


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
        "Chapter notebooks: wall time",
        ["notebook", "full (s)", "fast (s)", "fast / full", "budget"],
        notes=[
            f"Each solution notebook executed top to bottom in a fresh kernel; budgets "
            f"{FULL_BUDGET:.0f} s full, {FAST_BUDGET:.0f} s fast (design section 4)."
        ],
    )
    if quick:
        paths = [_tiny_notebook(Path(tempfile.mkdtemp(prefix="genlab-bench-")))]
    else:
        paths = sorted((ROOT / "solutions").glob("*/*.ipynb"))
    for path in paths:
        full, fast = notebook_seconds(path, fast=False), notebook_seconds(path, fast=True)
        verdict = "ok" if full <= FULL_BUDGET and fast <= FAST_BUDGET else "OVER"
        table.add(path.name, full, fast, fast / full, verdict)
        print(" | ".join(table.rows[-1]), flush=True)
    return table


def run(quick: bool = False) -> list[Table]:
    return [notebook_table(quick)]
