"""The integrity scan flags tampering and file snooping, and leaves honest work alone."""

from __future__ import annotations

import nbformat
import pytest

from genlab.classroom_scan import scan_notebook, scan_source

from conftest import RELEASE, SOLUTIONS


@pytest.mark.parametrize(
    "source, expected",
    [
        ("jnp.allclose = lambda *a, **k: True", "assigns jnp.allclose"),
        ("np.testing.assert_allclose = print", "assigns np.testing.assert_allclose"),
        ("import builtins\nbuiltins.abs = lambda x: 0", "assigns builtins.abs"),
        ("check.allclose = lambda *a, **k: None", "assigns check.allclose"),
        ("genlab.primer.logsumexp = my_logsumexp", "assigns genlab.primer.logsumexp"),
        ("setattr(jax.numpy, 'allclose', f)", "setattr on jax.numpy"),
        ("check = None", "rebinds check"),
        ("open('/home/alice/answers.ipynb').read()", "opens '/home/alice/answers.ipynb'"),
        ("open('../../bob/00_jax_primer/00_jax_primer.ipynb')", "opens '../../bob/"),
        ("import os\nos.listdir('..')", "lists files with os.listdir"),
        ("import glob\nglob.glob('/srv/**')", "lists files with glob.glob"),
    ],
)
def test_scan_flags_tampering_and_snooping(source, expected):
    flags = scan_source(source)
    assert any(expected in flag for flag in flags), flags


@pytest.mark.parametrize(
    "source",
    [
        "x = jnp.ones(3)\nmodel.kernel[...] = jnp.zeros((2, 1))",
        "def f(x):\n    y = np.allclose(x, 0)\n    return y",
        "with open('notes.txt', 'w') as f:\n    f.write('ok')",
        "%matplotlib inline\nimport numpy as np",
        "def broken(:",  # a syntax error is nbgrader's business, not a flag
    ],
)
def test_scan_leaves_honest_code_alone(source):
    assert scan_source(source) == []


def test_course_notebooks_themselves_are_not_flagged(chapter):
    for folder in (SOLUTIONS, RELEASE):
        for path in sorted((folder / chapter).glob("*.ipynb")):
            assert scan_notebook(path) == [], path


def test_scan_notebook_names_the_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("jnp.allclose = lambda *a, **k: True")
    cell.metadata.nbgrader = {"grade_id": "logsumexp", "solution": True}
    nb.cells = [nbformat.v4.new_code_cell("import os"), cell]
    nbformat.write(nb, tmp_path / "a.ipynb")
    assert scan_notebook(tmp_path / "a.ipynb") == ["logsumexp: assigns jnp.allclose (line 1)"]
    (tmp_path / "b.ipynb").write_text("not json")
    assert scan_notebook(tmp_path / "b.ipynb") == []


def test_hidden_tests_import_the_reference_they_compare_with(chapter):
    """A student can rebind names of earlier cells (``primer = fake``); hidden tests import
    their reference module inside the test, so what they compare with is the library's."""
    from genlab import grading
    from genlab.classroom_feedback import hidden_lines

    nb = nbformat.read(SOLUTIONS / chapter / f"{chapter}.ipynb", as_version=4)
    for name in grading.exercise_names(nb):
        hidden = hidden_lines(grading.graded_cells(nb)[grading.TEST_PREFIX + name].source)
        assert hidden, f"{chapter}: test_{name} has no hidden tests"
        imported = [  # the name each module is bound to ("attention as ref" binds ref)
            module.split(" as ")[-1].strip()
            for line in hidden
            if line.startswith("from genlab import ")
            for module in line.removeprefix("from genlab import ").split(",")
        ]
        assert imported, f"{chapter}: test_{name}'s hidden tests import nothing from genlab"
        assert any(f"{m}." in "\n".join(hidden) for m in imported), name
