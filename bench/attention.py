"""Benchmark: causal self-attention kernels (chapter 03) against their peers.

genlab's jitted naive kernel (softmax(QK^T / sqrt d) V with a causal mask), the blockwise
online-softmax kernel, ``jax.nn.dot_product_attention`` and, when torch is installed, PyTorch's
``scaled_dot_product_attention`` as the CPU reference. Time per call (median after warm-up) and
extra memory: XLA's scratch buffers for the JAX kernels, and the peak resident memory each kernel
adds in a fresh process (all kernels, torch included). A third table compares the blockwise
kernel with and without the causal mask: causal attention skips the fully masked block pairs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from bench.harness import (
    Table,
    first_call_seconds,
    median_seconds,
    optional_module,
    peak_rss_delta_mb,
    xla_temp_bytes,
)
from genlab import attention

BLOCK_SIZE = 128


def _inputs(B, H, T, d, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((B, H, T, d), dtype=np.float32) for _ in range(3)]  # (B, H, T, d)


@jax.jit
def genlab_naive(q, k, v):
    return attention.naive_attention(q, k, v, causal=True)  # (B, H, T, d)


@functools.partial(jax.jit, static_argnames="block_size")
def genlab_blockwise(q, k, v, block_size=BLOCK_SIZE):
    return attention.online_softmax_attention(q, k, v, block_size, causal=True)


@functools.partial(jax.jit, static_argnames="block_size")
def genlab_blockwise_full(q, k, v, block_size=BLOCK_SIZE):
    return attention.online_softmax_attention(q, k, v, block_size, causal=False)


@jax.jit
def jax_nn(q, k, v):  # jax.nn's layout is (B, T, H, d)
    return jax.nn.dot_product_attention(q, k, v, is_causal=True)


def _jax_kernels(q, k, v):
    """name -> (jitted function, its arguments)."""
    qt, kt, vt = (jnp.swapaxes(jnp.asarray(x), 1, 2) for x in (q, k, v))  # (B, T, H, d)
    q, k, v = (jnp.asarray(x) for x in (q, k, v))
    return {
        "genlab naive": (genlab_naive, (q, k, v)),
        "genlab blockwise": (genlab_blockwise, (q, k, v)),
        "jax.nn.dot_product_attention": (jax_nn, (qt, kt, vt)),
    }


_MEMORY_PROBE = """
import numpy as np
from bench.attention import _inputs, _jax_kernels
from bench.harness import block
q, k, v = _inputs({B}, {H}, {T}, {d})
if {name!r} == "torch sdpa":
    import torch
    q, k, v = (torch.from_numpy(x) for x in (q, k, v))
    def run():
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
else:
    fn, args = _jax_kernels(q, k, v)[{name!r}]
    def run():
        return block(fn(*args))
def setup():
    run()
def work():
    run()
"""


def _torch_seconds(torch, q, k, v, repeats):
    q, k, v = (torch.from_numpy(x) for x in (q, k, v))
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def run():
        with torch.no_grad():
            return sdpa(q, k, v, is_causal=True)

    return median_seconds(run, repeats=repeats)


def _check_agreement(outputs: dict[str, np.ndarray]) -> float:
    reference = outputs["genlab naive"]
    return max(float(np.max(np.abs(out - reference))) for out in outputs.values())


def run(quick: bool = False) -> list[Table]:
    B, H, d = (1, 2, 16) if quick else (4, 8, 64)
    lengths = (64, 160) if quick else (128, 512, 2048)
    repeats = 2 if quick else 7
    torch = optional_module("torch")
    names = ["genlab naive", "genlab blockwise", "jax.nn.dot_product_attention"]
    if torch is not None:
        names.append("torch sdpa")
    times = Table(
        f"Causal self-attention: time per call (batch {B}, {H} heads, head dim {d}, float32)",
        ["T", *[f"{n} (ms)" for n in names], "jax.nn / genlab naive", "blockwise / naive"]
        + (["torch / genlab naive"] if torch is not None else [])
        + ["first call naive (s)", "first call blockwise (s)"],
        notes=[
            f"Median of {repeats} calls after the first call (tracing + compilation + one run, "
            f"also shown); blockwise uses blocks of "
            f"{BLOCK_SIZE} keys. Ratios > 1 mean genlab's naive kernel is faster."
            + ("" if torch is not None else " torch is not installed: no PyTorch column.")
        ],
    )
    memory = Table(
        f"Causal self-attention: extra memory (batch {B}, {H} heads, head dim {d})",
        ["T", "XLA scratch naive (MB)", "XLA scratch blockwise (MB)", "blockwise / naive"]
        + [f"peak RSS added, {n} (MB)" for n in names],
        notes=[
            "XLA scratch: bytes the compiled program allocates beyond inputs and outputs "
            "(`compiled.memory_analysis()`). Peak RSS added: the process's high-water mark "
            "during one call (reset after compiling and a warm-up call) minus its resident size "
            "before it, in a fresh process per kernel (includes allocator slack)."
        ],
    )
    for T in lengths:
        q, k, v = _inputs(B, H, T, d)
        kernels = _jax_kernels(q, k, v)
        seconds, outputs, scratch, compile_s = {}, {}, {}, {}
        for name, (fn, args) in kernels.items():
            compile_s[name] = first_call_seconds(lambda fn=fn, args=args: fn(*args))
            seconds[name] = median_seconds(
                lambda fn=fn, args=args: fn(*args), repeats=repeats, warmup=0
            )
            out = np.asarray(fn(*args))
            outputs[name] = np.swapaxes(out, 1, 2) if name.startswith("jax.nn") else out
            scratch[name] = xla_temp_bytes(fn, *args) / 2**20
        if torch is not None:
            seconds["torch sdpa"] = _torch_seconds(torch, q, k, v, repeats)
        error = _check_agreement(outputs)
        if not error < 1e-3:
            raise AssertionError(f"attention kernels disagree at T={T}: max |diff| {error}")
        naive = seconds["genlab naive"]
        times.add(
            T,
            *[1e3 * seconds[n] for n in names],
            seconds["jax.nn.dot_product_attention"] / naive,
            seconds["genlab blockwise"] / naive,
            *([seconds["torch sdpa"] / naive] if torch is not None else []),
            compile_s["genlab naive"],
            compile_s["genlab blockwise"],
        )
        rss = [peak_rss_delta_mb(_MEMORY_PROBE.format(B=B, H=H, T=T, d=d, name=n)) for n in names]
        ratio = scratch["genlab blockwise"] / scratch["genlab naive"]
        memory.add(T, scratch["genlab naive"], scratch["genlab blockwise"], ratio, *rss)
    skip = Table(
        f"Blockwise kernel: causal (masked block pairs skipped) vs non-causal (batch {B}, "
        f"{H} heads, head dim {d}, blocks of {BLOCK_SIZE})",
        [
            "T",
            "block pairs computed, causal / non-causal",
            "non-causal (ms)",
            "causal (ms)",
            "causal / non-causal",
            "causal speed-up",
        ],
        notes=[
            f"Median of {repeats} calls after a warm-up call. With causal=True the kernel "
            "computes only the (query block i, key block j <= i) pairs: N (N + 1) / 2 of the "
            "N^2 (N = T / block size), a static program with no branch (the pairs j > i have no "
            "loop step). The time ratio approaches the pair ratio only when every product is "
            "big: the first cuts (half the queries x one key block) are, the diagonal blocks "
            "and the small segments near them (b x b products per segment) run at lower "
            "throughput on CPU, so the saving grows with T."
        ],
    )
    for T in (160,) if quick else (1024, 2048, 4096):
        q, k, v = (jnp.asarray(x) for x in _inputs(B, H, T, d))
        args = (q, k, v)
        full = median_seconds(lambda args=args: genlab_blockwise_full(*args), repeats=repeats)
        causal = median_seconds(lambda args=args: genlab_blockwise(*args), repeats=repeats)
        N = -(-T // BLOCK_SIZE)
        pairs = f"{N * (N + 1) // 2} / {N * N} = {(N + 1) / (2 * N):.2f}"
        skip.add(T, pairs, 1e3 * full, 1e3 * causal, causal / full, full / causal)
    T = max(lengths)
    memory.notes.append(
        f"For scale: one float32 score matrix at T = {T} is {B * H * T * T * 4 / 2**20:.1f} MB "
        f"({B} x {H} x T x T x 4 bytes); one block of the blockwise kernel's scores is "
        f"{B * H * T * min(BLOCK_SIZE, T) * 4 / 2**20:.1f} MB."
    )
    return [times, memory, skip]
