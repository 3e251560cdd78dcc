"""`make test` runs the suite on two pytest-xdist workers; a module-scoped fixture (the demo
class, the hub) must still be built once, so its module's tests must share a worker. pytest 9.2
broke that silently (pytest-dev/pytest-xdist#1386): this checks the installed pair does it."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT

SUITE_CONFTEST = str(ROOT / "tests" / "conftest.py")
CONFTEST = f"""
import importlib.util

_spec = importlib.util.spec_from_file_location("suite_conftest", {SUITE_CONFTEST!r})
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)
pytest_itemcollected = _suite.pytest_itemcollected
"""

MODULE = """
import os

import pytest


@pytest.fixture(scope="module")
def built():
    return os.getpid()


@pytest.mark.parametrize("i", range(6))
def test_uses_the_fixture(built, i):
    print("BUILT", built)
"""


def test_a_module_scoped_fixture_is_built_on_one_worker(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_shared.py").write_text(MODULE)
    (tmp_path / "test_free.py").write_text("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p",
         "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    workers = set(re.findall(r"\[(gw\d)\] .*PASSED .*test_shared\.py", done.stdout))
    assert len(workers) == 1, f"the module's tests ran on {sorted(workers)}:\n{done.stdout}"
