"""The notebooks' setup cell, run as Colab would run it.

Colab is simulated by a fake ``google.colab`` module; the cell installs the course package from
a ``git+file://`` URL of this repository (its committed HEAD) into a fresh virtualenv, with its
dependencies from the package index, exactly as it would from the public repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv

import pytest

from genlab import runtime

from conftest import ROOT

FAKE_COLAB = (
    "import sys, types\n"
    "sys.modules['google'] = types.ModuleType('google')\n"
    "sys.modules['google.colab'] = types.ModuleType('google.colab')\n"
)
WHERE_IS_GENLAB = (
    "import importlib.util\n"
    "spec = importlib.util.find_spec('genlab')\n"
    "print(spec.origin if spec else 'not installed')\n"
)


def run_python(python, code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-c", code],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, **env},
    )


def test_setup_cell_reads_the_url_from_pyproject():
    assert runtime.repository_url() in runtime.setup_cell_source()
    assert (
        'Repository = "' + runtime.repository_url() + '"' in (ROOT / "pyproject.toml").read_text()
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed to install from git+file://")
def test_setup_cell_installs_genlab_in_colab_and_nothing_elsewhere(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the setup cell installs the repository's HEAD")
    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    cell = runtime.setup_cell_source()

    outside = run_python(python, cell + "\n" + WHERE_IS_GENLAB)
    assert outside.returncode == 0, outside.stderr
    assert outside.stdout.strip() == "not installed"

    url = ROOT.resolve().as_uri()
    colab = run_python(python, FAKE_COLAB + cell + "\n" + WHERE_IS_GENLAB, GENLAB_REPO_URL=url)
    assert colab.returncode == 0, colab.stderr[-3000:]
    assert colab.stdout.strip().startswith(str(env_dir)), colab.stdout

    use = run_python(
        python,
        "import jax.numpy as jnp\n"
        "from genlab import check, runtime\n"
        "check.allclose('x', jnp.ones(3), [1.0, 1.0, 1.0])\n"
        "print(runtime.repository_url())\n",
    )
    assert use.returncode == 0, use.stderr[-3000:]
    assert use.stdout.strip() == runtime.repository_url()
    print(f"installed from {url} into {env_dir} with {sys.version.split()[0]}")
