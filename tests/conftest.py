"""Shared fixtures: repository paths, the chapter list, and Jupyter state kept out of ~."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
RELEASE = ROOT / "chapters"
MUTANTS = Path(__file__).resolve().parent / "mutants"
CHAPTERS = sorted(p.name for p in SOLUTIONS.iterdir() if p.is_dir() and p.name[:2].isdigit())
SOLUTION_NOTEBOOKS = sorted(SOLUTIONS.glob("*/*.ipynb"))

# Jupyter, IPython and matplotlib state for every kernel and nbgrader command the tests start.
_STATE = Path(tempfile.mkdtemp(prefix="genlab-jupyter-"))
# What the test workers of one run share (pytest-xdist, `make test`): the compilation and model
# caches. The first process (the controller, or the only one) makes the folder; the workers it
# starts inherit its path.
_SHARED_ENV = "GENLAB_TEST_SHARED_CACHES"
if not (os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(_SHARED_ENV)):
    os.environ[_SHARED_ENV] = tempfile.mkdtemp(prefix="genlab-caches-")
_SHARED = Path(os.environ[_SHARED_ENV])
for _name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
    os.environ[_name] = str(_STATE / _name.lower())
os.environ.setdefault("MPLCONFIGDIR", str(_STATE / "matplotlib"))
os.environ["MPLBACKEND"] = "Agg"
# nbgrader runs tools of its environment (alembic) by name when it creates a gradebook.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
# One compilation cache for the whole run (every worker, kernel and nbgrader process inherits
# it), so a program compiled by one test loads in the next; a fresh folder, so no earlier run's.
os.environ["GENLAB_COMPILE_CACHE"] = str(_SHARED / "jax-cache")
# Trained models (genlab.model_cache) likewise: trained once per run, then loaded.
os.environ["GENLAB_MODEL_CACHE"] = str(_SHARED / "models")
# A developer's own GENLAB_FAST must not leak into tests that choose the mode themselves.
os.environ.pop("GENLAB_FAST", None)
os.environ.pop("NBGRADER_EXECUTION", None)


def main_notebook(chapter: str) -> Path:
    """``solutions/CH/CH.ipynb``: the chapter's graded notebook."""
    return SOLUTIONS / chapter / f"{chapter}.ipynb"


@pytest.fixture(params=CHAPTERS)
def chapter(request) -> str:
    return request.param


# The slowest tests start first, so that with several workers (`make test`) none finishes its
# share long before the others (longest-first scheduling). Seconds measured in a serial run.
SLOW_FIRST = (
    "test_classroom.py",  # the demo class: 25 submissions graded in the sandbox (~500 s)
    "test_mutants.py",  # every chapter's wrong and correct variants (90-180 s each)
    "test_hub.py",  # a real JupyterHub class (~160 s)
    "test_nbgrader_pipeline.py",  # the newest chapter through nbgrader (~130 s)
    "test_bench.py",  # every benchmark in quick mode (~105 s)
    "test_notebooks.py",  # every chapter in full mode (45-90 s each)
)


def _slowness(item) -> int:
    name = item.path.name
    return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)


def pytest_collection_modifyitems(config, items):
    """Order the slow modules first; the order inside a module is kept (a stable sort)."""
    items.sort(key=_slowness)


def pytest_itemcollected(item):
    """Keep each module that builds a module-scoped fixture (the demo class, the hub, the quick
    benchmarks, ...) on one worker (``--dist loadgroup``), so the fixture is built once. (Marked
    here, as each test is collected: pytest-xdist reads the mark in its own
    ``pytest_collection_modifyitems``, which may run before ours.)"""
    if not item.config.pluginmanager.hasplugin("xdist"):
        return
    module = item.path.stem
    defs = item._fixtureinfo.name2fixturedefs.values()
    if module in SAME_WORKER or any(d[-1].scope == "module" for d in defs if d):
        item.add_marker(pytest.mark.xdist_group(SAME_WORKER.get(module, module)))


# Modules that run one after the other on the same worker. The hub's browser sessions lost their
# user servers ("Your server ... is not running") when the hub ran beside the demo class's
# graders on 2 cores.
SAME_WORKER = {"test_hub": "test_classroom"}
