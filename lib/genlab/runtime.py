"""Where the course runs: device and Colab detection, seeding, the FAST switch, install hints,
and JAX's persistent compilation cache.

``FAST`` is True when the environment variable ``GENLAB_FAST`` is ``1`` or when nbgrader is
autograding (nbgrader sets ``NBGRADER_EXECUTION=autograde`` in the kernel). Notebooks size their
training loops with :func:`fast_or_full`, so grading a class does not retrain full models while
every code path still runs.
"""

from __future__ import annotations

import os
import random
import sys
import warnings
from importlib import metadata
from pathlib import Path

import jax
import numpy as np

PACKAGE = "genlab"


def is_fast(environ: dict[str, str] | None = None) -> bool:
    """True when quick runs are requested (``GENLAB_FAST=1``) or nbgrader is autograding."""
    env = os.environ if environ is None else environ
    return env.get("GENLAB_FAST", "") == "1" or env.get("NBGRADER_EXECUTION") == "autograde"


FAST: bool = is_fast()


CACHE_ENV = "GENLAB_COMPILE_CACHE"


def compile_cache_dir(environ: dict[str, str] | None = None) -> Path | None:
    """Where compiled XLA programs are kept between runs, or None when the cache is off.

    ``GENLAB_COMPILE_CACHE`` decides: ``0`` turns it off, a path chooses the folder (``make lab``
    uses ``.jupyter/jax-cache`` in the project); unset, it is ``~/.cache/genlab/jax``.
    """
    return cache_folder(CACHE_ENV, "jax", environ)


def cache_folder(variable: str, name: str, environ: dict[str, str] | None = None) -> Path | None:
    """The folder environment variable ``variable`` names (``0``: None, the cache is off), or by
    default ``~/.cache/genlab/<name>`` (``$XDG_CACHE_HOME/genlab/<name>`` when that is set)."""
    env = os.environ if environ is None else environ
    value = env.get(variable, "")
    if value == "0":
        return None
    if value:
        return Path(value).expanduser()
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "genlab" / name


def enable_compile_cache(environ: dict[str, str] | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache (see :func:`compile_cache_dir`).

    A program compiled once (by an earlier run, or by the grader's warm-up) is then loaded
    instead of compiled again; JAX keys each entry by the program, the compiler options and its
    own version, so a cached program computes exactly what a fresh compile would. A read-only
    folder (the grading sandbox's view of the warmed cache) is read and never written.
    Returns the folder in use, or None.
    """
    path = compile_cache_dir(environ)
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if not path.is_dir():
        return None
    if not os.access(path, os.W_OK):
        warnings.filterwarnings("ignore", message="Error writing persistent compilation cache")
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return path


COMPILE_CACHE: Path | None = enable_compile_cache()


def fast_or_full(fast, full):
    """Return ``fast`` in fast mode (see :data:`FAST`), else ``full``.

    Example: ``num_steps = fast_or_full(50, 2000)``.
    """
    return fast if FAST else full


def in_colab() -> bool:
    """True inside Google Colab (its ``google.colab`` module is loaded in every Colab kernel)."""
    return "google.colab" in sys.modules


def device_summary() -> str:
    """One line naming the JAX backend and its devices, e.g. ``'cpu: 1 device (TFRT_CPU_0)'``."""
    devices = jax.devices()
    names = ", ".join(str(d) for d in devices)
    plural = "s" if len(devices) != 1 else ""
    return f"{jax.default_backend()}: {len(devices)} device{plural} ({names})"


def seed_everything(seed: int) -> jax.Array:
    """Seed Python's and NumPy's global generators (used by plotting helpers) and return a JAX key.

    JAX itself has no global state: every random draw in the course takes an explicit key,
    and this is where the first one comes from.

    Returns:
        A typed JAX PRNG key (``jax.random.key(seed)``), shape [].
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    return jax.random.key(int(seed))


def repository_url() -> str:
    """The course repository's URL, read from the installed package's metadata.

    It is written in exactly one place: ``[project.urls] Repository`` in ``pyproject.toml``.
    """
    for entry in metadata.metadata(PACKAGE).get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "repository":
            return url.strip()
    raise LookupError("pyproject.toml has no [project.urls] Repository entry")


def setup_cell_source(url: str | None = None) -> str:
    """The first code cell of every chapter notebook (a test checks they all match this).

    In Colab it installs the course package from the repository (``GENLAB_REPO_URL`` overrides
    the address, e.g. for a fork); anywhere else it does nothing. It is plain Python, so it also
    runs outside IPython.
    """
    url = repository_url() if url is None else url
    return (
        "# Setup: in Colab this installs the course library `genlab`; elsewhere it does nothing.\n"
        "import os, subprocess, sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    repo = os.environ.get("GENLAB_REPO_URL", "{url}")\n'
        '    pip = [sys.executable, "-m", "pip", "install", "-q"]\n'
        '    subprocess.run([*pip, f"git+{repo}"], check=True)'
    )


def install_hint(package: str) -> str:
    """How to install an optional ``package`` here: a ``%pip`` line in Colab, pip elsewhere."""
    if in_colab():
        return f"run `%pip install {package}` in a cell, then restart the runtime"
    return f"run `pip install {package}` in the course environment (e.g. `.venv/bin/pip`)"


if __name__ == "__main__":  # maintainers: `python -m genlab.runtime` prints the setup cell
    print(setup_cell_source())
