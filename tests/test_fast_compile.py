"""Importing genlab asks XLA:CPU for its older loop emitters, which compile the many small programs
a notebook runs faster (genlab/__init__.py; the speed itself is measured in bench/compiling.py).
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import genlab

PROGRAM = """
import genlab
import jax, jax.numpy as jnp
print(jax.jit(lambda x: jnp.exp(2 * x + 1).sum())(jnp.ones(10)))
"""


def _kernel_files(dump: Path, xla_flags: str) -> list[str]:
    """The compiled kernel modules XLA dumps for a small fused program run after importing
    genlab with ``XLA_FLAGS`` set to ``xla_flags`` plus a dump folder."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_dump_to={dump} {xla_flags}".strip())
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    flags = env["XLA_FLAGS"]
    assert out.returncode == 0, f"JAX failed to start with XLA_FLAGS={flags}:\n{out.stderr}"
    assert abs(float(out.stdout.split()[-1]) - 10 * math.exp(3)) < 1e-3, out.stdout
    return sorted(p.name for p in dump.glob("*kernel_module*.ll"))


def test_the_flag_is_added_on_verified_jaxlib_releases_unless_xla_flags_choose():
    release = genlab.VERIFIED_JAXLIB[0]
    env = {}
    genlab._fast_compile_flag(env, release)
    assert env["XLA_FLAGS"] == f"{genlab.EMITTERS_FLAG}=false"
    env = {"XLA_FLAGS": "--xla_dump_to=/x"}
    genlab._fast_compile_flag(env, release)
    assert env["XLA_FLAGS"] == f"--xla_dump_to=/x {genlab.EMITTERS_FLAG}=false"
    env = {"XLA_FLAGS": f"{genlab.EMITTERS_FLAG}=true"}
    genlab._fast_compile_flag(env, release)
    assert env["XLA_FLAGS"] == f"{genlab.EMITTERS_FLAG}=true", "a user's own XLA_FLAGS decide"
    for unverified in ("0.99", ""):  # XLA aborts on an unknown flag: never guess
        env = {}
        genlab._fast_compile_flag(env, unverified)
        assert "XLA_FLAGS" not in env


def test_importing_genlab_switches_to_the_older_emitters(tmp_path):
    release = genlab._jaxlib_release()
    kernels = _kernel_files(tmp_path / "genlab", "")
    default = _kernel_files(tmp_path / "default", f"{genlab.EMITTERS_FLAG}=true")
    assert default and not any("elemental" in k for k in default), default
    if release not in genlab.VERIFIED_JAXLIB:
        print(f"jaxlib {release} is not in genlab.VERIFIED_JAXLIB: XLA's default emitters kept")
        assert kernels == default
        return
    # the older emitters name their kernels after the elemental IR emitter
    assert kernels and all("elemental" in k for k in kernels), kernels
