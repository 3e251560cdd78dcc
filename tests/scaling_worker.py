"""The 8-device half of tests/test_scaling.py, run in a subprocess whose XLA has 8 CPU devices.

pytest's own process started JAX with the machine's device count (2 here), and JAX cannot add
devices once it runs, so the sharding checks run here, once, and print one JSON object that the
tests read: for each strategy (DP on an 8 x 1 mesh, TP on 2 x 4, FSDP on 8 x 1), how far the
sharded loss, gradients and updated parameters are from the one-device ones, the collectives of
the compiled programs, and the bytes each device holds.

Usage: ``XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/scaling_worker.py``.
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np
import optax
from flax import nnx

from genlab import gpt, scaling

# Gradients must match to rtol 1e-5 / atol 1e-6 (the brief's float tolerance).
RTOL, ATOL = 1e-5, 1e-6
CONFIG = gpt.GPTConfig(vocab_size=32, block_size=16, num_layers=1, num_heads=4, d_model=32)
MESHES = {"dp": (8, 1), "tp": (2, 4), "fsdp": (8, 1)}
LEARNING_RATE, MAX_GRAD_NORM = 0.1, 1.0  # SGD with momentum; genlab.gpt.train_step's clipping


def worst_ratio(got, want) -> float:
    """max |got - want| / (ATOL + RTOL |want|) over every leaf: <= 1 means allclose."""
    ratios = [
        np.max(np.abs(np.asarray(a) - np.asarray(b)) / (ATOL + RTOL * np.abs(np.asarray(b))))
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
    ]
    return float(max(ratios))


def fresh():
    """The model and an optimizer with state (momentum) whose first update is linear in the
    gradient, so the updated parameters can be held to the gradients' tolerance (Adam's
    first step, about lr sign(g), is not: it amplifies rounding in tiny gradients)."""
    model = gpt.GPT(CONFIG, rngs=nnx.Rngs(0))
    return model, nnx.Optimizer(model, optax.sgd(LEARNING_RATE, momentum=0.9), wrt=nnx.Param)


def main() -> dict:
    start = time.perf_counter()
    tokens = jax.random.randint(jax.random.key(1), (8, CONFIG.block_size + 1), 0, 32)
    model, _ = fresh()
    param_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model)))
    loss_1, grads_1 = nnx.jit(nnx.value_and_grad(scaling.gpt_loss))(model, tokens)
    # One step by hand: clip to the global norm, then SGD's first step (momentum starts at g).
    g = [np.asarray(x, np.float64) for x in jax.tree.leaves(grads_1)]
    scale = min(1.0, MAX_GRAD_NORM / np.sqrt(sum((x**2).sum() for x in g)))
    params_1 = [
        np.asarray(p) - LEARNING_RATE * scale * x
        for p, x in zip(jax.tree.leaves(nnx.state(model)), g, strict=True)
    ]
    out = {"devices": jax.device_count(), "param_bytes": param_bytes, "strategies": {}}
    for strategy, shape in MESHES.items():
        mesh = scaling.make_mesh(*shape)
        model, optimizer = fresh()
        grad_fn = scaling.make_sharded_value_and_grad(model, mesh, strategy)
        loss, grads = grad_fn(model, tokens)
        step = scaling.make_sharded_train_step(
            model, optimizer, mesh, strategy, max_grad_norm=MAX_GRAD_NORM
        )
        grad_counts = scaling.collective_counts(grad_fn.lower(model, tokens).compile())
        step_counts = scaling.collective_counts(step.lower(model, optimizer, tokens).compile())
        step_loss = step(model, optimizer, tokens)
        kernel = model.blocks[0].mlp.fc.kernel[...]
        grad_kernel = grads["blocks"][0]["mlp"]["fc"]["kernel"][...]
        out["strategies"][strategy] = {
            "mesh": list(shape),
            "loss_error": abs(float(loss) - float(loss_1)),
            "grad_worst_ratio": worst_ratio(grads, grads_1),
            "step_loss_error": abs(float(step_loss) - float(loss_1)),
            "params_worst_ratio": worst_ratio(nnx.state(model), params_1),
            "grad_collectives": grad_counts,
            "step_collectives": step_counts,
            "param_bytes_per_device": list(scaling.bytes_per_device(model).values()),
            "optimizer_bytes_per_device": list(scaling.bytes_per_device(optimizer).values()),
            "fc_kernel_spec": str(kernel.sharding.spec),
            "grad_fc_kernel_spec": str(grad_kernel.sharding.spec),
        }
    out["seconds"] = time.perf_counter() - start
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
