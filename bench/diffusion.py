"""Benchmark: chapter 05's samplers as one compiled program each, and its training step vs a peer.

The chapter's toy model: ``genlab.diffusion.TimeMLP(2, 128, 3)`` (x and 16 sine/cosine pairs of
t, three hidden layers of 128, SiLU) on the 8-mode Gaussian ring. Samplers, on 2,000 samples:
``genlab.diffusion.ddpm_sample`` (ancestral, T = 1000 steps, and a respaced 100-step schedule,
every step inside one ``lax.scan``) and ``genlab.diffusion.sample_flow`` (Euler, 100 steps). Each
row counts the XLA programs compiled during its first two calls (different keys): one is the
promise of the chapter (no per-step or per-call retrace). The training step is the chapter's DDPM
step (``genlab.diffusion.train_step`` under ``nnx.jit``, batch 256, Adam 2e-3); when torch is
installed, the same network, loss and optimizer in PyTorch eager mode is the peer.
"""

from __future__ import annotations

import jax
import numpy as np
import optax
from flax import nnx

from bench.harness import (
    Table,
    block,
    compile_events,
    first_call_seconds,
    median_seconds,
    optional_module,
)
from genlab import data, diffusion, gpt

RING = dict(num_modes=8, radius=1.0, std=0.1)


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(hidden=32, depth=2, samples=64, T=20, respaced=5, flow=5, batch=32, repeats=2)
    return dict(hidden=128, depth=3, samples=2000, T=1000, respaced=100, flow=100, batch=256,
                repeats=10)  # fmt: skip


def _model(sizes: dict, time_scale: float) -> diffusion.TimeMLP:
    return diffusion.TimeMLP(2, sizes["hidden"], sizes["depth"], time_scale=time_scale,
                             rngs=nnx.Rngs(0))  # fmt: skip


def compiles_and_first_seconds(calls) -> tuple[int, float]:
    """(XLA programs compiled while running ``calls`` in order, seconds of the first call)."""
    with compile_events() as events:
        first = first_call_seconds(calls[0])
        for call in calls[1:]:
            block(call())
    return len(events), first


def sampler_table(sizes: dict) -> Table:
    n, T = sizes["samples"], sizes["T"]
    betas = diffusion.linear_beta_schedule(T)
    ab = diffusion.alpha_bars(betas)
    short = diffusion.respace(ab, sizes["respaced"])
    eps_net, v_net = _model(sizes, T), _model(sizes, 1.0)
    keys = [jax.random.key(i) for i in range(3)]
    rows = [
        (f"DDPM ancestral, ddpm_sample, T = {T}", T,
         lambda k: diffusion.ddpm_sample(k, eps_net, (n, 2), betas, ab)),
        (f"DDPM respaced to {sizes['respaced']} steps, ddpm_sample", sizes["respaced"],
         lambda k: diffusion.ddpm_sample(k, eps_net, (n, 2), *short)),
        (f"flow matching, Euler, sample_flow, {sizes['flow']} steps", sizes["flow"],
         lambda k: diffusion.sample_flow(k, v_net, (n, 2), sizes["flow"])),
    ]  # fmt: skip
    table = Table(
        f"Diffusion samplers: {n:,} samples of the toy model, one lax.scan program each",
        [
            "sampler",
            "steps",
            "first call (s)",
            "ms per call",
            "steps/s",
            "samples x steps/s",
            "programs compiled in 2 calls",
        ],  # fmt: skip
        notes=[
            f"TimeMLP(2, {sizes['hidden']}, {sizes['depth']}) "
            f"({gpt.num_params(eps_net):,} parameters), untrained (speed does not depend on the "
            f"weights). First call: tracing + compilation + one run. Median of "
            f"{sizes['repeats']} calls after it. Programs compiled: XLA programs compiled (or "
            "loaded from JAX's persistent cache) during the first two calls with different keys, "
            "counted by JAX's backend-compile event (1 = one program for all steps, no retrace)."
        ],
    )
    for label, steps, sample in rows:
        compiled, first = compiles_and_first_seconds([lambda s=sample: s(keys[0]),
                                                      lambda s=sample: s(keys[1])])  # fmt: skip
        seconds = median_seconds(lambda s=sample: s(keys[2]), repeats=sizes["repeats"], warmup=0)
        table.add(label, steps, first, 1e3 * seconds, steps / seconds, n * steps / seconds,
                  compiled)  # fmt: skip
    return table


def _torch_time_mlp(torch, sizes: dict, time_scale: float, frequencies: np.ndarray):
    """TimeMLP's architecture in torch: [x, sin(t f), cos(t f)] -> Linear+SiLU x depth -> Linear."""
    nn = torch.nn
    hidden, depth = sizes["hidden"], sizes["depth"]
    freqs = torch.from_numpy(np.array(frequencies, np.float32))

    class TimeMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.input = nn.Linear(2 + 2 * len(frequencies), hidden)
            self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 1))
            self.output = nn.Linear(hidden, 2)

        def forward(self, x, t):
            angles = (t.float()[:, None] / time_scale) * freqs
            h = nn.functional.silu(self.input(torch.cat([x, angles.sin(), angles.cos()], -1)))
            for layer in self.layers:
                h = nn.functional.silu(layer(h))
            return self.output(h)

    return TimeMLP()


def _torch_row(torch, sizes, x0, alpha_bars, frequencies, repeats):
    torch.manual_seed(0)
    T = alpha_bars.shape[0]
    model = _torch_time_mlp(torch, sizes, float(T), frequencies)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    x0 = torch.from_numpy(np.array(x0, np.float32))
    ab = torch.from_numpy(np.array(alpha_bars, np.float32))

    def step():
        t = torch.randint(0, T, (x0.shape[0],))
        eps = torch.randn_like(x0)
        a = ab[t][:, None]
        loss = ((model(a.sqrt() * x0 + (1 - a).sqrt() * eps, t) - eps) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    params = sum(p.numel() for p in model.parameters())
    first = first_call_seconds(step)
    return params, first, median_seconds(step, repeats=repeats)


def training_table(sizes: dict) -> Table:
    T, batch_size, repeats = sizes["T"], sizes["batch"], sizes["repeats"]
    ab = diffusion.alpha_bars(diffusion.linear_beta_schedule(T))
    model = _model(sizes, T)
    optimizer = nnx.Optimizer(model, optax.adam(2e-3), wrt=nnx.Param)
    step = nnx.jit(lambda m, o, key, x0: diffusion.train_step(m, o, key, x0, ab))
    x0 = data.gaussian_ring(jax.random.key(0), batch_size, **RING)
    key = jax.random.key(1)
    params = gpt.num_params(model)
    table = Table(
        f"Diffusion training step: DDPM loss, batch {batch_size}, Adam",
        ["what runs", "first call (s)", "ms per step", "steps/s", "vs course step"],
        notes=[
            f"TimeMLP(2, {sizes['hidden']}, {sizes['depth']}), {params:,} parameters, T = {T}, "
            f"the ring data. Median of {repeats} steps after the first call (tracing + "
            "compilation + one step)."
        ],
    )
    first = first_call_seconds(lambda: step(model, optimizer, key, x0))
    course = median_seconds(lambda: step(model, optimizer, key, x0), repeats=repeats, warmup=0)
    table.add("course step: nnx.jit(train_step)", first, 1e3 * course, 1 / course, 1.0)

    torch = optional_module("torch")
    if torch is None:
        table.notes.append("torch not installed: no PyTorch row (pip install -e '.[bench]').")
        return table
    frequencies = np.asarray(model.frequencies[...])
    torch_params, first, seconds = _torch_row(torch, sizes, x0, ab, frequencies, repeats)
    if torch_params != params:
        raise AssertionError(f"the torch peer has {torch_params} parameters, genlab {params}")
    table.add(f"PyTorch eager ({torch.get_num_threads()} threads), same MLP, loss and Adam",
              first, 1e3 * seconds, 1 / seconds, course / seconds)  # fmt: skip
    table.notes.append(
        "The peer draws t and the noise with torch's generator inside the step, as genlab's "
        "step draws them with jax.random inside the compiled program."
    )
    return table


def run(quick: bool = False) -> list[Table]:
    sizes = _sizes(quick)
    return [sampler_table(sizes), training_table(sizes)]
