from __future__ import annotations

import os
import random
import sys
import types

import jax
import numpy as np
import pytest

from genlab import runtime


def test_is_fast_follows_genlab_fast_and_nbgrader_autograde():
    assert runtime.is_fast({"GENLAB_FAST": "1"})
    assert runtime.is_fast({"NBGRADER_EXECUTION": "autograde"})
    assert not runtime.is_fast({"NBGRADER_EXECUTION": "validate"})
    assert not runtime.is_fast({"GENLAB_FAST": "0"})
    assert not runtime.is_fast({})


def test_fast_or_full_picks_by_mode(monkeypatch):
    monkeypatch.setattr(runtime, "FAST", True)
    assert runtime.fast_or_full(10, 1000) == 10
    monkeypatch.setattr(runtime, "FAST", False)
    assert runtime.fast_or_full(10, 1000) == 1000


def test_in_colab_detects_the_colab_module(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert not runtime.in_colab()
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert runtime.in_colab()
    assert "%pip install tqdm" in runtime.install_hint("tqdm")


def test_install_hint_outside_colab_uses_pip(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert "pip install torch" in runtime.install_hint("torch")
    assert "%pip" not in runtime.install_hint("torch")


def test_device_summary_names_backend_and_devices():
    summary = runtime.device_summary()
    assert summary.startswith(jax.default_backend() + ":")
    assert str(jax.devices()[0]) in summary


def test_seed_everything_seeds_python_numpy_and_returns_a_key():
    key = runtime.seed_everything(7)
    first = (random.random(), np.random.rand())
    key_again = runtime.seed_everything(7)
    assert (random.random(), np.random.rand()) == first
    np.testing.assert_array_equal(jax.random.normal(key, (3,)), jax.random.normal(key_again, (3,)))
    assert not np.allclose(
        jax.random.normal(runtime.seed_everything(8), (3,)), jax.random.normal(key, (3,))
    )


@pytest.mark.parametrize("bad", [1.5, "3", True])
def test_seed_everything_rejects_non_int(bad):
    with pytest.raises(TypeError, match="seed"):
        runtime.seed_everything(bad)


def test_setup_cell_does_nothing_outside_colab(monkeypatch):
    calls = []
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr("subprocess.run", lambda *a, **k: calls.append(a))
    exec(runtime.setup_cell_source(), {})
    assert calls == []


def test_setup_cell_installs_from_the_repository_in_colab(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.delenv("GENLAB_REPO_URL", raising=False)
    monkeypatch.setattr("subprocess.run", lambda cmd, **k: calls.append(cmd))
    exec(runtime.setup_cell_source(), {})
    assert calls == [
        [sys.executable, "-m", "pip", "install", "-q", f"git+{runtime.repository_url()}"]
    ]


CACHE_SCRIPT = """
import sys
import numpy as np
from genlab import probing, runtime
judge = probing.Judge("00_jax_primer", 5)
arrays = {}
for name in sorted(judge.specs):
    for i, outputs in enumerate(judge.expected(name)):
        for j, (_, value, _) in enumerate(probing._pairs(outputs, outputs, "")):
            arrays[f"{name}/{i}/{j}"] = value
np.savez(sys.argv[1], **arrays)
print(runtime.COMPILE_CACHE)
"""


def test_the_compilation_cache_changes_no_result(tmp_path):
    """Chapter 00's references on the probes: cache off, cold and warm give identical bits."""
    import subprocess
    import sys

    cache = tmp_path / "cache"
    results = {}
    for run, setting in (("off", "0"), ("cold", str(cache)), ("warm", str(cache))):
        env = dict(os.environ, GENLAB_COMPILE_CACHE=setting)
        done = subprocess.run([sys.executable, "-c", CACHE_SCRIPT, str(tmp_path / f"{run}.npz")],
                              env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        with np.load(tmp_path / f"{run}.npz") as npz:
            results[run] = {k: npz[k] for k in npz.files}
    assert len(list(cache.iterdir())) > 10, "the cache was not written"
    assert results["off"].keys() == results["warm"].keys()
    for key, value in results["off"].items():
        for run in ("cold", "warm"):
            assert np.array_equal(value, results[run][key], equal_nan=True), (run, key)


def test_compile_cache_dir_follows_the_environment(tmp_path):
    assert runtime.compile_cache_dir({"GENLAB_COMPILE_CACHE": "0"}) is None
    assert runtime.compile_cache_dir({"GENLAB_COMPILE_CACHE": str(tmp_path)}) == tmp_path
    default = runtime.compile_cache_dir({"XDG_CACHE_HOME": str(tmp_path)})
    assert default == tmp_path / "genlab" / "jax"
