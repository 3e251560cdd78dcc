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
for _name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
    os.environ[_name] = str(_STATE / _name.lower())
os.environ.setdefault("MPLCONFIGDIR", str(_STATE / "matplotlib"))
os.environ["MPLBACKEND"] = "Agg"
# nbgrader runs tools of its environment (alembic) by name when it creates a gradebook.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
# One compilation cache for the whole run (every kernel and nbgrader process inherits it), so a
# program compiled by one test loads in the next; a fresh folder, so no earlier run's entries.
os.environ["GENLAB_COMPILE_CACHE"] = str(_STATE / "jax-cache")
# Trained models (genlab.model_cache) likewise: trained once per run, then loaded.
os.environ["GENLAB_MODEL_CACHE"] = str(_STATE / "models")
# A developer's own GENLAB_FAST must not leak into tests that choose the mode themselves.
os.environ.pop("GENLAB_FAST", None)
os.environ.pop("NBGRADER_EXECUTION", None)


def main_notebook(chapter: str) -> Path:
    """``solutions/CH/CH.ipynb``: the chapter's graded notebook."""
    return SOLUTIONS / chapter / f"{chapter}.ipynb"


@pytest.fixture(params=CHAPTERS)
def chapter(request) -> str:
    return request.param
