"""The integrity scan flags tampering, escape hatches and snooping, and leaves honest work alone."""

from __future__ import annotations

import nbformat
import pytest

from genlab.classroom import grading
from genlab.classroom.scan import scan_notebook, scan_source

from conftest import RELEASE, SOLUTIONS

REF = "reference module genlab.primer"


def flagged(source: str, expected: str) -> list[str]:
    flags = scan_source(source)
    assert any(expected in flag for flag in flags), flags
    return flags


@pytest.mark.parametrize(
    "source, expected",
    [
        ("np.where = lambda *a: 0", "assigns np.where"),
        ("jnp.allclose = lambda *a, **k: True", "assigns jnp.allclose"),
        ("np.testing.assert_allclose = print", "assigns np.testing.assert_allclose"),
        ("import builtins\nbuiltins.abs = lambda x: 0", "assigns builtins.abs (line 2)"),
        ("genlab.primer.logsumexp = my_logsumexp", "assigns genlab.primer.logsumexp"),
        ("del check.allclose", "deletes check.allclose"),
        ("check.__dict__['allclose'] = f", "assigns into check.__dict__[...]"),
        ("import numpy as onp\nonp.where = f", "assigns onp.where"),
        ("from numpy import testing\ntesting.assert_allclose = f", "assigns testing."),
        ("m = np\nm.where = f", "uses np as a value"),
        ("setattr(jax.numpy, 'allclose', f)", "setattr on jax.numpy"),
        ("delattr(check, 'allclose')", "delattr on check"),
        ('setattr(__import__("numpy"), "all" + "close", lambda *a, **k: True)', "setattr on"),
        ("getattr(np, 'all' + 'close')", "getattr on np with a computed name"),
        ("f = check.allclose\nsetattr(f, '__defa' + 'ults__', (1e9,))", "setattr on f (line 2)"),
        ("functools.reduce(getattr, [f, '__glo' + 'bals__'])", "uses getattr as a value"),
    ],
)
def test_scan_flags_attribute_tampering(source, expected):
    flagged(source, expected)


@pytest.mark.parametrize(
    "source",
    [
        "check = None",
        "np += 1",
        "jnp: object = None",
        "del np",
        "class check:\n    allclose = staticmethod(lambda *a, **k: None)",
        "def check(*a):\n    pass",
        "async def np():\n    pass",
        "import numpy.random as np",
        "from numpy import random as np",
        "import jax.numpy as np",
        "from genlab import plot as check",
        "import os as sys",
        "import optax as nnx",
        "for np in range(3): pass",
        "with open('x') as check: pass",
        "(jnp := None)",
        "[(np := i) for i in range(3)]",
        "try:\n    pass\nexcept Exception as check:\n    pass",
        "match x:\n    case [*np]:\n        pass",
        "a, (b, np) = 1, (2, 3)",
        "data = load()",
        "%%capture np\nx = 1",
    ],
)
def test_scan_flags_rebinding_a_protected_name(source):
    flagged(source, "rebinds")


@pytest.mark.parametrize(
    "source, expected",
    [
        ("global np", "declares global np"),
        ("def f():\n    global check\n    check = None", "declares global check (line 2)"),
        ("def f():\n    x = 1\n    def g():\n        nonlocal np", "declares nonlocal np"),
        ('globals()["check"] = None', "uses globals"),
        ("globals().update(check=None)", "uses globals"),
        ("locals()['np'] = None", "uses locals"),
        ("from numpy import *", "star-imports numpy"),
        ("def bool(x):\n    return True", "rebinds the builtin bool"),
        ("float = lambda x: 0.0", "rebinds the builtin float"),
    ],
)
def test_scan_flags_indirect_rebinding(source, expected):
    flagged(source, expected)


@pytest.mark.parametrize(
    "source, expected",
    [
        ('exec("check.allclose = None")', "uses exec"),
        ('import base64; exec(base64.b64decode(b"..."))', "uses exec"),
        ("eval('1')", "uses eval"),
        ("compile('x', 'f', 'exec')", "uses compile"),
        ("import builtins as b\nb.exec('x')", "uses builtins.exec (line 2)"),
        ("getattr(builtins, 'exec')('x')", "uses builtins.exec"),
        ("getattr(print, '__se' + 'lf__')", "getattr on print with a computed name"),
        ('g = getattr(__import__("genlab"), "pri" + "mer")', "uses __import__"),
        ('import importlib; m = importlib.import_module("genlab." + "primer")', "uses importlib"),
        ('import sys; f = sys.modules["genlab.primer"].logsumexp', "uses sys.modules"),
        ("from sys import modules", "uses sys.modules"),
        ("sys.settrace(None)", "uses sys.settrace"),
        (
            "import inspect, genlab.primer; exec(inspect.getsource(genlab.primer.logsumexp))",
            "uses inspect",
        ),
        ("src = open(genlab.primer.__file__).read()", f"uses the library's {REF}"),
        ("open(check.__file__.replace('check', 'primer'))", "uses genlab.check.__file__"),
        ('import pkgutil; pkgutil.get_data("genlab", "primer.py")', "uses pkgutil"),
        ("import linecache", "uses linecache"),
        ('vars(m)["logsumexp"] = f', "uses vars"),
        ('m.__dict__["x"] = 1', "uses m.__dict__"),
        ("f.__wrapped__.__code__ = g.__code__", "uses f.__wrapped__"),
        ("f.__globals__['np'] = None", "uses f.__globals__"),
        ("().__class__.__base__.__subclasses__()", "uses (...).__class__.__base__"),
        ("operator.attrgetter('__globals__')", "mentions '__globals__'"),
        ("get_ipython().input_transformers_post.append(t)", "uses get_ipython"),
        ("sys.displayhook('ok')", "uses sys.displayhook"),
        ("sys.excepthook = f", "uses sys.excepthook"),
        ("import sqlite3", "uses sqlite3"),
        ("import socket", "uses socket"),
        ("import subprocess", "uses subprocess"),
        ("from multiprocessing import Process", "uses multiprocessing"),
        ("import threading", "uses threading"),
        ("import ctypes", "uses ctypes"),
        ("import urllib.request", "uses urllib"),
        ("import http.client", "uses http"),
        ("import requests", "uses requests"),
        ("import nbgrader", "uses nbgrader"),
        ("import pickle", "uses pickle"),
        ("import marshal", "uses marshal"),
        ("import code", "uses code"),
        ("import signal", "uses signal"),
        ("from genlab.classroom import grade", "imports the grader's own code (genlab.classroom)"),
        ("genlab.classroom.grading.fill_answers(nb, nb)", "uses the grader's own code"),
        ("from signal import alarm", "uses signal"),
        ("import shutil", "uses shutil"),
        ("x = np.load('a.npy', allow_pickle=True)", "loads pickles"),
        ("sys.setprofile(None)", "uses sys.setprofile"),
        ("os.fork()", "uses os.fork"),
        ("os.system('ls')", "uses os.system"),
        ("os.popen('ls')", "uses os.popen"),
        ("os.execv('/bin/sh', [])", "uses os.execv"),
        ("os.kill(1, 9)", "uses os.kill"),
        ("from os import system", "uses os.system"),
        ("import os as o\no.system('ls')", "uses os.system (line 2)"),
        ('import os; os.environ["HOME"]', "uses os.environ"),
        ("os.getenv('HOME')", "uses os.getenv"),
    ],
)
def test_scan_flags_escape_hatches(source, expected):
    flagged(source, expected)


@pytest.mark.parametrize(
    "source, expected",
    [
        ('open("/proc/1/cwd/gradebook.db")', "opens '/proc/1/cwd/gradebook.db'"),
        ("open('/home/alice/answers.ipynb').read()", "opens '/home/alice/answers.ipynb'"),
        ("open('../../bob/00_jax_primer/00_jax_primer.ipynb')", "opens '../../bob/"),
        ("open('~/.bashrc')", "opens '~/.bashrc'"),
        ("open(name)", "opens a computed path"),
        ("Path('/srv/nbgrader').read_text()", "uses the path '/srv/nbgrader'"),
        ("x = f'/pr{o}c/self/environ'", "uses the path '/pr'"),
        ("import os\nos.listdir('..')", "lists files with os.listdir (line 2)"),
        ("import glob\nglob.glob('*')", "lists files with glob"),
        ("os.scandir('.')", "lists files with os.scandir"),
        ("for d in os.walk('.'): pass", "lists files with os.walk"),
        ("Path('.').iterdir()", "lists files with (...).iterdir"),
        ("Path('.').rglob('*.ipynb')", "lists files with (...).rglob"),
    ],
)
def test_scan_flags_snooping(source, expected):
    flagged(source, expected)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("def logsumexp(x, axis=-1):\n    from genlab.primer import logsumexp as ref\n"
         "    return ref(x, axis)", f"imports the library's {REF}: answers must not call it"),
        ("from genlab import primer", f"imports the library's {REF}"),
        ("import genlab.gan", "imports the library's reference module genlab.gan"),
        ("from genlab.sampling import top_k_filter", "reference module genlab.sampling"),
        ("from genlab import markov as m", "reference module genlab.markov"),
        ("import genlab as g\ng.primer.logsumexp(x)", f"uses the library's {REF}"),
        # the grader's probes: seeds, cases, references, records
        ("from genlab.probing import seed_from_env", "imports the grader's probes"),
        ("from genlab import probing", "imports the grader's probes (genlab.probing)"),
        ("import genlab.probing as p", "imports the grader's probes (genlab.probing)"),
        ("import genlab\nref = genlab.probing.probes_for('00_jax_primer')['logsumexp'].reference",
         "uses the grader's probes (genlab.probing)"),
        ("from genlab.probes import primer", "imports the grader's probes (genlab.probes)"),
        ("from genlab.probes.primer import PROBES", "imports the grader's probes"),
    ],
)  # fmt: skip
def test_scan_flags_the_reference_modules(source, expected):
    flagged(source, expected)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("%time check.allclose = lambda *a, **k: None", "assigns check.allclose (line 1)"),
        ("x = 1\n%timeit -n 3 -r 1 np.where = f", "assigns np.where (line 2)"),
        ("%%time\nx = 1\ncheck = None", "rebinds check (line 3)"),
        ("%%capture out\nnp.where = f", "assigns np.where (line 2)"),
        ("!echo hi\njnp.allclose = f", "assigns jnp.allclose (line 2)"),
        ("!echo hi", "runs the shell command 'echo hi'"),
        ("x = !cat /etc/passwd", "runs the shell command"),
        ("%env HOME=/tmp", "uses the magic %env"),
        ("%run other.py", "uses the magic %run"),
        ("%load /srv/genlab/primer.py", "uses the magic %load"),
        ("np.where??", "uses the magic %pinfo2"),
        ("%%bash\nls ..", "uses the cell magic %%bash"),
        ("%%writefile numpy.py\nx = 1", "uses the cell magic %%writefile"),
        ("def broken(:", "cannot be parsed (SyntaxError"),
        ("%time def broken(:", "cannot be parsed (SyntaxError"),
        ("np.where = f\nx = " + "+".join(["1"] * 2000), "too deeply nested"),
    ],
)
def test_scan_reads_magics_and_flags_what_it_cannot_parse(source, expected):
    flagged(source, expected)


HONEST = [
    "def logsumexp(x, axis=-1):\n    m = jnp.max(x, axis=axis, keepdims=True)\n"
    "    return jnp.log(jnp.sum(jnp.exp(x - m), axis=axis)) + jnp.squeeze(m, axis)",
    "import numpy as np",
    "import jax.numpy as jnp",
    "from jax import numpy as jnp",
    "from flax import nnx",
    "import optax, jax, functools, math, os.path",
    "from genlab import check, plot, data, runtime",
    "from genlab import nn, train\nfrom genlab.train import fit, make_train_step",
    "class MLP(nnx.Module):\n    def __init__(self, d_in, d_out, *, rngs):\n"
    "        self.linear = nnx.Linear(d_in, d_out, rngs=rngs)\n\n"
    "    def __call__(self, x):\n        return jax.nn.relu(self.linear(x))",
    "for i in range(3): x = x + i",
    "x = jnp.ones(3)\nmodel.kernel[...] = jnp.zeros((2, 1))",
    "def f(x):\n    y = np.allclose(x, 0)\n    return y",
    "def step(data, train=True):\n    data = data * 2\n    return data",
    "with open('notes.txt', 'w') as f:\n    f.write('ok')",
    "model.eval()\ncompiled = jax.jit(f).lower(x).compile()",
    "import numpy as onp\ny = onp.asarray(x)",
    "from jax import random\nkey = random.key(0)",
    "from IPython.display import display",
    "%matplotlib inline\nimport numpy as np",
    "%time y = f(x)\n%timeit -n 3 -r 1 f(x)",
    "%%time\ny = f(x)",
    "%%capture out\ntrained = fit(model)",
    "np.where?",
    "print(f'loss {loss:.3f} ...', 'a/b', '/')",
    "getattr(model, name)[...] = 0.0",
    "setattr(model, 'kernel', kernel)",
    "class Stack(nnx.Module):\n    def __init__(self, n, *, rngs):\n        for i in range(n):\n"
    "            setattr(self, f'layer{i}', nnx.Linear(2, 2, rngs=rngs))",
    "code = encoder(x)\nprint(code.shape)",
    "signal, noise = jnp.sqrt(ab), jnp.sqrt(1 - ab)\nx0 = (x - noise * eps) / signal",
    "def f(x):\n    sum = 0\n    for v in x:\n        sum += v\n    return sum",
]


@pytest.mark.parametrize("source", HONEST)
def test_scan_leaves_honest_code_alone(source):
    assert scan_source(source) == []


def course_notebooks(chapter):
    """(release path, the release's code-cell sources, the release filled with the solutions)."""
    release = RELEASE / chapter / f"{chapter}.ipynb"
    if not release.exists():
        pytest.skip(f"{release} is not built")
    release_nb = nbformat.read(release, as_version=4)
    sources = {c.source for c in release_nb.cells if c.cell_type == "code"}
    solution_nb = nbformat.read(SOLUTIONS / chapter / f"{chapter}.ipynb", as_version=4)
    return release, sources, grading.fill_answers(release_nb, solution_nb)


def test_course_notebooks_and_reference_answers_are_not_flagged(chapter, tmp_path):
    release, sources, filled = course_notebooks(chapter)
    assert scan_notebook(release, sources) == []
    nbformat.write(filled, tmp_path / "submitted.ipynb")
    assert scan_notebook(tmp_path / "submitted.ipynb", sources) == []
    assert scan_notebook(release), "the course's own cells are flagged when not recognised"


def test_scan_notebook_skips_course_cells_only_when_unchanged(tmp_path):
    course = "from genlab import gan\nimport numpy as np"
    answer = nbformat.v4.new_code_cell("jnp.allclose = lambda *a, **k: True")
    answer.metadata.nbgrader = {"grade_id": "logsumexp", "solution": True}
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(course), answer, nbformat.v4.new_code_cell("def f(:")]
    nbformat.write(nb, tmp_path / "a.ipynb")
    assert scan_notebook(tmp_path / "a.ipynb", {course}) == [
        "logsumexp: assigns jnp.allclose (line 1)",
        "cell 2: cannot be parsed (SyntaxError: invalid syntax) (line 1)",
    ]
    nb.cells[0].source = course + "\nx = 1"  # a changed course cell is scanned
    nbformat.write(nb, tmp_path / "a.ipynb")
    flags = scan_notebook(tmp_path / "a.ipynb", {course})
    assert flags[0].startswith("cell 0: imports the library's reference module genlab.gan"), flags
    assert scan_notebook(tmp_path / "a.ipynb")[0] == flags[0]  # one argument: every cell scanned
    (tmp_path / "b.ipynb").write_text("not json")
    assert scan_notebook(tmp_path / "b.ipynb") == []


def test_scan_notebook_carries_import_aliases_across_cells(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in ("import numpy as onp", "onp.where = f")]
    nbformat.write(nb, tmp_path / "a.ipynb")
    assert scan_notebook(tmp_path / "a.ipynb") == ["cell 1: assigns onp.where (line 1)"]


def test_hidden_tests_use_the_reference_they_compare_with(chapter):
    """A student can rebind names of earlier cells (``primer = fake``); hidden tests either call
    ``genlab.probing.probe`` (which imports the reference outside the notebook's names) or import
    their reference module inside the test, so what they compare with is the library's."""
    from genlab.classroom.feedback import hidden_lines

    nb = nbformat.read(SOLUTIONS / chapter / f"{chapter}.ipynb", as_version=4)
    for name in grading.exercise_names(nb):
        hidden = hidden_lines(grading.graded_cells(nb)[grading.TEST_PREFIX + name].source)
        assert hidden, f"{chapter}: test_{name} has no hidden tests"
        if any(line.startswith("probe(") for line in hidden):
            continue
        imported = [  # the name each module is bound to ("attention as ref" binds ref)
            module.split(" as ")[-1].strip()
            for line in hidden
            if line.startswith("from genlab import ")
            for module in line.removeprefix("from genlab import ").split(",")
        ]
        assert imported, f"{chapter}: test_{name}'s hidden tests import nothing from genlab"
        assert any(f"{m}." in "\n".join(hidden) for m in imported), name


def test_an_answer_pasted_from_the_library_is_flagged_but_the_same_code_written_anew_is_not(
    tmp_path,
):
    import inspect

    import nbformat

    from genlab import primer
    from genlab.classroom.report import reference_copies

    pasted = inspect.getsource(primer.logsumexp)
    head, _, body = pasted.split('"""')  # the reference's code around its docstring
    anew = head + '"""My own words."""' + body
    cases = {"pasted": pasted, "without decorator": pasted.split("\n", 1)[1], "anew": anew,
             "short and alike": "def power_sum(x, n):\n    return x"}  # fmt: skip
    flagged = {}
    for label, source in cases.items():
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata.nbgrader = {"grade_id": source.split("def ")[1].split("(")[0]}
        nb.cells = [cell]
        nbformat.write(nb, tmp_path / f"{label}.ipynb")
        flagged[label] = bool(reference_copies(tmp_path / f"{label}.ipynb", "00_jax_primer"))
    # "anew" keeps the reference's validation code word for word: flagged too.
    assert flagged == {"pasted": True, "without decorator": True, "anew": True,
                       "short and alike": False}  # fmt: skip


def test_a_changed_graded_test_cell_may_call_the_probes_but_an_answer_may_not(tmp_path):
    probe = 'from genlab.probing import probe\nprobe("00_jax_primer", "logsumexp", globals())'
    test = nbformat.v4.new_code_cell("check.passed('logsumexp')\n" + probe)
    test.metadata.nbgrader = {"grade_id": "test_logsumexp", "grade": True, "solution": False,
                              "locked": True, "points": 1}  # fmt: skip
    answer = nbformat.v4.new_code_cell(probe)
    answer.metadata.nbgrader = {"grade_id": "logsumexp", "grade": False, "solution": True}
    nb = nbformat.v4.new_notebook()
    nb.cells = [answer, test]
    nbformat.write(nb, tmp_path / "a.ipynb")
    flags = scan_notebook(tmp_path / "a.ipynb", set())
    assert (
        "logsumexp: imports the grader's probes (genlab.probing): answers must not use them "
        "(line 1)" in flags
    ), flags
    assert not [f for f in flags if f.startswith("test_") and "probes" in f], flags
