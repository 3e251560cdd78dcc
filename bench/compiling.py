"""Benchmark: what XLA:CPU's loop emitters cost in compile time and run time.

Importing genlab asks XLA:CPU for its older loop emitters (``--xla_cpu_use_fusion_emitters=false``,
genlab/__init__.py). Each setting runs in a fresh process: the milliseconds XLA spends compiling
each of many small programs (``jnp`` operations called outside ``jit`` on new shapes, which is
most of what a notebook compiles), and the first call and median step of chapter 04's GPT
training step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.harness import ROOT, Table

PROGRAM = """
import json, sys
import genlab
import jax.numpy as jnp
from bench import training
from bench.harness import compile_events

shapes, repeats, quick = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "quick"
jnp.zeros(1).block_until_ready()
with compile_events() as compiled:
    for n in range(2, 2 + shapes):  # every operation on a new shape is a program of its own
        x = jnp.ones((n, 3))
        jnp.exp((x * 2 + 1 - x / 3).sum(0)).block_until_ready()
small_ms = 1000 * sum(compiled) / len(compiled)
config, batch_size = training._config(quick)
batch = training._batch(config, batch_size)
step, first = training._variant(config, batch, "float32", False, repeats)
print(json.dumps({"programs": len(compiled), "small_ms": small_ms, "first": first, "step": step}))
"""

SETTINGS = {
    "XLA's default (MLIR emitters)": "--xla_cpu_use_fusion_emitters=true",
    "genlab's (older LLVM emitters)": "",
}


def _measure(xla_flags: str, shapes: int, repeats: int, quick: bool) -> dict:
    env = dict(os.environ, XLA_FLAGS=xla_flags, PYTHONPATH=str(ROOT))
    env["GENLAB_COMPILE_CACHE"] = "0"  # every program compiled, none loaded
    args = [str(shapes), str(repeats), "quick" if quick else "full"]
    out = subprocess.run([sys.executable, "-c", PROGRAM, *args], env=env,
                         capture_output=True, text=True, timeout=1800, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[Table]:
    shapes, repeats = (4, 3) if quick else (80, 10)
    table = Table(
        "Compiling: XLA:CPU's loop emitters",
        ["emitters", "small programs", "ms to compile each", "GPT step first call (s)",
         "GPT step median (ms)"],
        notes=[
            "Each row in a fresh process with the compilation cache off: XLA's compile time per "
            f"small program ({shapes} new shapes of `x * 2 + 1 - x / 3`, a sum and an `exp` run "
            "outside `jit`: each operation its own program), then chapter 04's GPT training step "
            "(one device, float32): its first call (tracing and compiling) and its median step. "
            "genlab's setting is `--xla_cpu_use_fusion_emitters=false` (genlab/__init__.py).",
        ],
    )  # fmt: skip
    for name, flags in SETTINGS.items():
        r = _measure(flags, shapes, repeats, quick)
        table.add(name, r["programs"], r["small_ms"], r["first"], 1000 * r["step"])
    return [table]
