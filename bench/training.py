"""Benchmark: training throughput of the chapter-04 GPT, where the time goes, and a peer.

The tiny GPT (4 layers, 4 heads, width 128, block 128, vocabulary 96) on batches of 32 x 128
tokens with AdamW. Rows: the course's step (``genlab.train.make_train_step``: ``nnx.jit`` with
model and optimizer as arguments), the same step as a plain ``jax.jit`` of split state with
donated buffers, the course step with the opt-in ``GPTConfig(matmul_dtype="bfloat16")``
(bfloat16 matmul inputs, float32 accumulation; float32 stays the default), and the pieces of one
step (forward, forward + backward) to see where the time goes. When torch and transformers are
installed, ``GPT2LMHeadModel`` on the same configuration with ``torch.optim.AdamW`` in eager
mode is the peer.
"""

from __future__ import annotations

import functools
import time
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bench.generation import hf_config
from bench.harness import Table, first_call_seconds, median_seconds, optional_module
from genlab import gpt, train

VOCAB = 96


def _config(quick: bool) -> tuple[gpt.GPTConfig, int]:
    if quick:
        return gpt.GPTConfig(
            vocab_size=VOCAB, block_size=16, num_layers=1, num_heads=2, d_model=32
        ), 4
    return gpt.GPTConfig.tiny(vocab_size=VOCAB), 32


def loss_fn(model, batch):
    tokens, targets = batch
    return gpt.lm_loss(model(tokens), targets)


def _batch(config, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, config.vocab_size, (batch_size, config.block_size + 1))
    return jnp.asarray(data[:, :-1], jnp.int32), jnp.asarray(data[:, 1:], jnp.int32)


def _optimizer():
    return optax.adamw(3e-4, weight_decay=0.1)


def _functional_step(model):
    """The same update as a ``jax.jit`` of (params, optimizer state) with donated buffers."""
    graphdef, params = nnx.split(model, nnx.Param)
    tx = _optimizer()

    def loss(p, batch):
        return loss_fn(nnx.merge(graphdef, p), batch)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, opt_state, batch):
        value, grads = jax.value_and_grad(loss)(p, batch)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, value

    state = {"p": params, "opt": tx.init(params)}

    def run(batch):
        state["p"], state["opt"], value = step(state["p"], state["opt"], batch)
        return value

    return run


def _torch_row(torch, transformers, config, batch, repeats):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(hf_config(transformers, config)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    tokens = torch.from_numpy(np.asarray(batch[0], np.int64))
    targets = torch.from_numpy(np.asarray(batch[1], np.int64))

    def step():
        logits = model(tokens).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    first = first_call_seconds(step)
    return first, median_seconds(step, repeats=repeats), step


def _fit_seconds(config, batch, steps: int) -> float:
    """Seconds per step of ``train.fit(..., data_parallel=True)`` itself over ``steps`` steps
    (the course's training loop: the step dispatched without waiting, the loss read at the end),
    after a 2-step warm-up ``fit`` that compiles."""
    model = gpt.GPT(config, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, _optimizer(), wrt=nnx.Param)
    step = train.make_train_step(loss_fn)

    def run(n):
        train.fit(step, model, optimizer, lambda _: batch, n, log_every=n, progress=False,
                  data_parallel=True)  # fmt: skip

    run(2)
    start = time.perf_counter()
    run(steps)
    return (time.perf_counter() - start) / steps


def _torch_loop_seconds(torch_step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        torch_step()
    return (time.perf_counter() - start) / steps


def _variant(config, batch, dtype: str, parallel: bool, repeats: int) -> tuple[float, float]:
    """(median seconds per step, first call seconds) of the course step with ``dtype`` matmuls,
    on one device or data-parallel over all local devices (as ``train.fit`` places them)."""
    model = gpt.GPT(replace(config, matmul_dtype=dtype), rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, _optimizer(), wrt=nnx.Param)
    if parallel:
        layout = train._DataParallel()
        layout.replicate(model, optimizer)
        batch = layout.split(batch)
    step = train.make_train_step(loss_fn)
    first = first_call_seconds(lambda: step(model, optimizer, batch))
    return median_seconds(lambda: step(model, optimizer, batch), repeats=repeats, warmup=0), first


def run(quick: bool = False) -> list[Table]:
    config, batch_size = _config(quick)
    repeats = 3 if quick else 10
    batch = _batch(config, batch_size)
    tokens = batch_size * config.block_size
    table = Table(
        f"Training: batch {batch_size} x {config.block_size} tokens, AdamW",
        ["what runs", "first call (s)", "ms per step", "tokens/s", "vs course step"],
        notes=[
            f"Model: {config.num_layers} layers, {config.num_heads} heads, width "
            f"{config.d_model}, vocabulary {config.vocab_size} "
            f"({gpt.num_params(gpt.GPT(config, rngs=nnx.Rngs(0))):,} parameters). Median of "
            f"{repeats} steps after the first call (tracing + compilation + one step)."
        ],
    )

    model = gpt.GPT(config, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, _optimizer(), wrt=nnx.Param)
    course_step = train.make_train_step(loss_fn)
    first = first_call_seconds(lambda: course_step(model, optimizer, batch))
    course = median_seconds(lambda: course_step(model, optimizer, batch), repeats=repeats, warmup=0)
    table.add(
        "course step: nnx.jit(model, optimizer, batch)", first, 1e3 * course, tokens / course, 1.0
    )

    functional = _functional_step(gpt.GPT(config, rngs=nnx.Rngs(0)))
    first = first_call_seconds(lambda: functional(batch))
    seconds = median_seconds(lambda: functional(batch), repeats=repeats, warmup=0)
    table.add(
        "jax.jit of split state, donated buffers",
        first,
        1e3 * seconds,
        tokens / seconds,
        course / seconds,
    )

    rows = [('course step, opt-in matmul_dtype="bfloat16"', "bfloat16", False)]
    if len(jax.local_devices()) > 1:
        devices = f"data-parallel over {len(jax.local_devices())} CPU devices"
        rows += [(f"course step, {devices} (fit(data_parallel=True))", "float32", True),
                 (f"course step, {devices}, bfloat16", "bfloat16", True)]  # fmt: skip
    else:
        table.notes.append("One device: no data-parallel rows (see genlab/__init__.py).")
    for label, dtype, parallel in rows:
        seconds_per_step, first = _variant(config, batch, dtype, parallel, repeats)
        table.add(label, first, 1e3 * seconds_per_step, tokens / seconds_per_step,
                  course / seconds_per_step)  # fmt: skip

    graphdef, params = nnx.split(gpt.GPT(config, rngs=nnx.Rngs(0)), nnx.Param)

    def loss_of(p, b):
        return loss_fn(nnx.merge(graphdef, p), b)

    forward = jax.jit(loss_of)
    backward = jax.jit(jax.value_and_grad(loss_of))
    for name, fn in (("forward only (loss)", forward), ("forward + backward", backward)):
        first = first_call_seconds(lambda fn=fn: fn(params, batch))
        seconds = median_seconds(lambda fn=fn: fn(params, batch), repeats=repeats, warmup=0)
        table.add(name, first, 1e3 * seconds, tokens / seconds, course / seconds)

    torch, transformers = optional_module("torch"), optional_module("transformers")
    if torch is not None and transformers is not None:
        first, seconds, torch_step = _torch_row(torch, transformers, config, batch, repeats)
        peer = f"PyTorch eager ({torch.get_num_threads()} threads), GPT2LMHeadModel + AdamW"
        table.add(peer, first, 1e3 * seconds, tokens / seconds, course / seconds)
    else:
        table.notes.append("torch/transformers not installed: no PyTorch row.")
    if len(jax.local_devices()) > 1:
        # The training loops themselves, one after the other: what a chapter's training cell runs.
        loop_steps = 4 if quick else 30
        seconds = _fit_seconds(config, batch, loop_steps)
        table.add(f"train.fit(data_parallel=True), loop of {loop_steps} steps", "-",
                  1e3 * seconds, tokens / seconds, course / seconds)  # fmt: skip
        if torch is not None and transformers is not None:
            torch_seconds = _torch_loop_seconds(torch_step, loop_steps)
            table.add(f"{peer}, loop of {loop_steps} steps", "-", 1e3 * torch_seconds,
                      tokens / torch_seconds, course / torch_seconds)  # fmt: skip
            table.notes.append(
                f"Training loops, float32: train.fit(data_parallel=True) runs at "
                f"{torch_seconds / seconds:.2f}x PyTorch eager's speed (tokens/s ratio)."
            )
    return [table]
