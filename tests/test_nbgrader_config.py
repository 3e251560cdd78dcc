"""What nbgrader_config.py promises, checked with real nbgrader runs on a tiny course."""

from __future__ import annotations

import shutil
import subprocess
import sys

import nbformat
from tiny_notebooks import tiny_notebook

from genlab.classroom import grading

from conftest import ROOT

STUCK_IN_XLA = (
    "def double(x):\n"
    "    forever = jax.lax.while_loop(lambda c: True, lambda c: c + 1, 0)\n"
    "    return jax.jit(lambda: forever)()"
)


def nbgrader(course, *args):
    return subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True
    )


def test_submission_stuck_in_compiled_code_scores_zero_instead_of_aborting(tmp_path):
    shutil.copy(ROOT / "nbgrader_config.py", tmp_path)
    source = tiny_notebook(setup="import math\nimport jax")
    (tmp_path / "solutions" / "tiny").mkdir(parents=True)
    nbformat.write(source, tmp_path / "solutions" / "tiny" / "tiny.ipynb")
    assert nbgrader(tmp_path, "generate_assignment", "tiny").returncode == 0
    submitted = tmp_path / "submitted" / "stuck" / "tiny"
    submitted.mkdir(parents=True)
    nbformat.write(grading.replace_answer(source, "double", STUCK_IN_XLA), submitted / "tiny.ipynb")

    # A short cell timeout keeps the test quick (the loop never ends on its own), but not so
    # short that replaying `import jax` after the restart runs out of it on a loaded machine
    # (5 s did, with the test suite running beside it: test_root scored 0).
    graded = nbgrader(tmp_path, "autograde", "tiny", "--Execute.timeout=15")
    assert graded.returncode == 0, graded.stderr[-3000:]
    assert "Timeout waiting for execute reply" in graded.stderr
    scores = grading.read_scores(tmp_path / "gradebook.db", "tiny", "tiny", "stuck")
    assert scores["test_double"] == (0.0, 1.0)
    # ResilientExecute restarted the stuck kernel and re-ran the earlier cells: the next
    # exercise is graded normally instead of waiting out its own timeout.
    assert "restarting the kernel" in graded.stderr
    assert scores["test_root"] == (1.0, 1.0)
