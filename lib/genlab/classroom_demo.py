"""A demo class: synthetic submissions that exercise everything that can go wrong in grading.

``genlab demo`` (``make demo-grade``) builds a course in ``build/demo-class`` from this repository,
writes one submission per case below (made from the release notebooks plus small code snippets,
so nothing large is committed), grades it with short demo limits, writes feedback and prints
the class table. :data:`EXPECTED` says what each row must show; the tests check it.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from genlab import grading
from genlab.classroom import feedback, format_table, grade, release
from genlab.classroom_limits import GB, Limits

CHAPTERS = ("00_jax_primer", "01_gan_math")

# Demo limits: loops are cut after 20 s (00) and a gradual memory bomb stops at 6 GB of address
# space (a chapter's kernel maps about 2.5 GB, 1.1 GB resident).
LIMITS = {
    "00_jax_primer": Limits(cell_seconds=20, notebook_seconds=900, memory_bytes=6 * GB),
    "01_gan_math": Limits(cell_seconds=120, notebook_seconds=900, memory_bytes=6 * GB),
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
CHEAT = (
    "jnp.allclose = lambda *a, **k: True  # the classic cheat\n"
    "np.allclose = lambda *a, **k: True\n" + NAIVE_LOGSUMEXP
)
WRONG_BCE = (
    "def bce_with_logits(logits, labels):\n"
    "    return -(labels * jax.nn.log_sigmoid(-logits) + (1 - labels) * jax.nn.log_sigmoid(logits))"
)
CHEAT_GAN = "jnp.allclose = lambda *a, **k: True\n" + WRONG_BCE


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
        "cheat": ({"logsumexp": CHEAT}, None,
                  Expected(("test_logsumexp",), "", flagged=True)),
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


def write_submissions(root: Path, chapter: str, cases: dict | None = None) -> list[str]:
    """Write the demo submissions of ``chapter`` into ``root/submitted``; return the students."""
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
        nb = release_nb if answers is None else filled
        for function, source in (answers or {}).items():
            nb = grading.replace_answer(nb, function, source)
        nbformat.write(_surgery(nb, how), folder / name)
    return list(cases)


def make_course(root: Path, repo: Path, chapters=CHAPTERS) -> Path:
    """A course folder with this repository's config and the chapters' sources, released."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(repo / "nbgrader_config.py", root / "nbgrader_config.py")
    for chapter in chapters:
        target = root / "solutions" / chapter
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(repo / "solutions" / chapter, target)
        release(root, chapter)
    return root


@dataclass
class DemoResult:
    root: Path
    rows: list = field(default_factory=list)

    @property
    def table(self) -> str:
        return format_table(self.rows)


def run_demo(root: Path, repo: Path, *, chapters=CHAPTERS, workers: int = 2,
             progress: bool = True) -> DemoResult:  # fmt: skip
    """Build, grade and give feedback on the demo class; return its rows."""
    make_course(root, repo, chapters)
    result = DemoResult(root)
    for chapter in chapters:
        write_submissions(root, chapter)
        result.rows += grade(root, chapter, workers=workers, limits=LIMITS[chapter],
                             progress=progress)  # fmt: skip
        feedback(root, chapter)
    return result
