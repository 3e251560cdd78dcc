"""A GPT in Flax NNX with GPT-2's architecture, its KV cache, and GPT-2 weight loading.

The chapter (``solutions/04_gpt_sampling/04_gpt_sampling.ipynb``) teaches the pieces in this
order; the notebook's hidden tests compare the student's versions with the ones here.
Shape letters: B batch, T time (tokens), D model width, H heads, V vocabulary.

    lm_loss           section 1, mean next-token cross-entropy in nats
    perplexity        section 1, exp(loss)
    train_step        section 3, next-token loss on shifted windows (predictions that read an
                      end-of-document token not scored), clipped gradients, update
    teacher_forced_accuracy  section 8, what a one-shot argmax "generate" really computes
    copy_rate         section 8, how often the argmax at t is the input token at t (no shift)
    pre_ln_block      section 2, h = x + attn(ln_1(x)), then h + mlp(ln_2(h))
    GPTConfig, GPT    section 2, the model (nanoGPT's layout, built bottom-up)
    update_kv_cache   section 6, write new keys/values at a position of a fixed-size cache
    generate          section 6, KV-cached generation in one jitted ``lax.scan``
    load_gpt2_weights section 7, a Hugging Face GPT-2 state dict -> GPT

Architecture (GPT-2, Radford et al. 2019): learned token and position embeddings; pre-LayerNorm
blocks ``h = x + attn(ln_1(x))``, then ``h + mlp(ln_2(h))`` (the second LayerNorm reads the
stream after the attention update, not the block's input); causal multi-head attention with scale
1/sqrt(head_dim); an MLP of width 4D with GELU in its tanh form; a final LayerNorm; the output
head is the token embedding transposed (tied weights). LayerNorm epsilon 1e-5. No dropout.
Attention is :func:`genlab.attention.scaled_dot_product_attention` (chapter 03), restated in
:func:`causal_attention` in a form that trains faster on CPU.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import struct
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from genlab import initializers, sampling
from genlab.attention import merge_heads, split_heads

__all__ = [
    "GPT",
    "GPT2Vocab",
    "GPTConfig",
    "generate",
    "init_cache",
    "lm_loss",
    "load_gpt2_small",
    "load_gpt2_weights",
    "make_logits_fn",
    "perplexity",
    "pre_ln_block",
    "read_safetensors",
    "copy_rate",
    "teacher_forced_accuracy",
    "scored_positions",
    "train_step",
    "unigram_entropy",
    "update_kv_cache",
]

# --- losses ---------------------------------------------------------------------------------


def _target_log_probs(logits, targets) -> jax.Array:
    """log softmax(logits)[targets] in float32: [..., T, V] and int [..., T] -> [..., T]."""
    log_p = jax.nn.log_softmax(jnp.asarray(logits).astype(jnp.float32), axis=-1)  # (..., T, V)
    return jnp.take_along_axis(log_p, jnp.asarray(targets)[..., None], axis=-1)[..., 0]


def lm_loss(logits, targets):
    """Mean next-token cross-entropy in nats over every position of every sequence.

    ``loss = -mean_{b, t} log softmax(logits[b, t])[targets[b, t]]``. The targets are already
    shifted: ``targets[..., t]`` is the token that follows input position t.

    Args:
        logits: float [..., T, V], the model's outputs.
        targets: integer [..., T], values in [0, V).

    Returns:
        float32 scalar (shape ()).
    """
    logits = jnp.asarray(logits)
    targets = jnp.asarray(targets)
    if logits.ndim < 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"lm_loss: logits [..., T, V] and targets [..., T] disagree: logits {logits.shape}, "
            f"targets {targets.shape}"
        )
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"lm_loss: targets must be integer token ids, got dtype {targets.dtype}")
    return -jnp.mean(_target_log_probs(logits, targets))


def perplexity(loss):
    """``exp(loss)``: the effective number of equally likely choices per token (loss in nats)."""
    return jnp.exp(jnp.asarray(loss))


def teacher_forced_accuracy(logits, tokens):
    """How often the argmax at position t is the true token at t + 1 (section 8, pitfall 1).

    This is what the one-shot "generate" ``argmax(model(tokens), -1)`` really computes: T
    next-token guesses, each conditioned on the *true* prefix, not a continuation.

    Args:
        logits: float [B, T, V], the model's outputs on ``tokens``.
        tokens: integer [B, T], T >= 2.

    Returns:
        float32 scalar: mean over b and t = 0..T-2 of [argmax(logits[b, t]) == tokens[b, t + 1]].
    """
    logits, tokens = jnp.asarray(logits), jnp.asarray(tokens)
    if logits.ndim != 3 or logits.shape[:2] != tokens.shape or tokens.shape[1] < 2:
        raise ValueError(
            f"logits [B, T, V] and tokens [B, T] with T >= 2 expected, got logits {logits.shape}"
            f" and tokens {tokens.shape}"
        )
    guesses = jnp.argmax(logits[:, :-1], axis=-1)  # (B, T - 1)
    return jnp.mean((guesses == tokens[:, 1:]).astype(jnp.float32))


def copy_rate(logits, tokens):
    """How often the argmax at position t is the *input* token at t (section 8, pitfall 2).

    A model trained with targets equal to its inputs (the shift forgotten) learns to copy: its
    rate is near 1, while a next-token model copies only where a character repeats.

    Args:
        logits: float [B, T, V], the model's outputs on ``tokens``.
        tokens: integer [B, T].

    Returns:
        float32 scalar: mean over b and t of [argmax(logits[b, t]) == tokens[b, t]].
    """
    logits, tokens = jnp.asarray(logits), jnp.asarray(tokens)
    if logits.ndim != 3 or logits.shape[:2] != tokens.shape:
        raise ValueError(
            f"logits [B, T, V] and tokens [B, T] expected, got {logits.shape} and {tokens.shape}"
        )
    return jnp.mean((jnp.argmax(logits, axis=-1) == tokens).astype(jnp.float32))


def unigram_entropy(tokens, vocab_size: int) -> float:
    """Entropy in nats of the token frequencies of ``tokens`` (integer [L]): the loss of the
    best model that ignores context, the bar a trained language model must clear."""
    counts = np.bincount(np.asarray(tokens).reshape(-1), minlength=vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def scored_positions(tokens, end_id=-1):
    """Which next-token predictions of windows ``tokens`` [B, T + 1] the training step scores.

    Prediction t reads ``tokens[:, :t + 1]`` and is scored against ``tokens[:, t + 1]``; an
    ``end_id`` token closes its document (it belongs to the document it ends), so the
    prediction is scored only when no ``end_id`` occurs in ``tokens[:, :t + 1]``: everything it
    reads and its target then come from one document. ``end_id = -1`` (no token id) scores all.

    Returns:
        bool [B, T].
    """
    inputs = jnp.asarray(tokens)[:, :-1]  # (B, T)
    return jnp.cumsum(inputs == end_id, axis=1) == 0


def train_step(model, optimizer, tokens, max_grad_norm=1.0, end_id=-1):
    """One optimisation step of a language model on windows of tokens (section 3).

    Inputs are every window but its last token, targets every window but its first. The loss is
    the mean next-token cross-entropy over the predictions :func:`scored_positions` keeps (every
    prediction whose inputs, from the window's start, hold no ``end_id``); with none kept it is
    0 and so is the gradient. With the default ``end_id = -1`` every prediction is kept and the
    loss is :func:`lm_loss`. The gradient of all ``nnx.Param`` variables is rescaled, when its
    global norm (over every parameter) exceeds ``max_grad_norm``, to that norm (``optax``'s
    ``clip_by_global_norm``), then ``optimizer.update(model, grads)`` applies it.

    Args:
        model: an ``nnx.Module`` mapping int [B, T] to logits [B, T, V] (e.g. :class:`GPT`).
        optimizer: an ``nnx.Optimizer`` of ``model`` (``wrt=nnx.Param``), e.g. AdamW.
        tokens: integer [B, T + 1], windows of the token stream.
        max_grad_norm: float > 0.
        end_id: int (may be traced), the end-of-document token id; -1 for none.

    Returns:
        float32 scalar: the loss before the update. Runs under ``nnx.jit``.
    """
    tokens = jnp.asarray(tokens)
    scored = scored_positions(tokens, end_id).astype(jnp.float32)  # (B, T)
    count = jnp.maximum(jnp.sum(scored), 1.0)

    def loss_fn(m):
        picked = _target_log_probs(m(tokens[:, :-1]), tokens[:, 1:])  # (B, T)
        return -jnp.sum(picked * scored) / count

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    grads, _ = optax.clip_by_global_norm(max_grad_norm).update(grads, optax.EmptyState())
    optimizer.update(model, grads)
    return loss


# --- the model, bottom-up -------------------------------------------------------------------


def pre_ln_block(x, ln_1, attn, ln_2, mlp):
    """One pre-LayerNorm transformer block (GPT-2): normalise, transform, add back.

        h = x + attn(ln_1(x))
        y = h + mlp(ln_2(h))

    Args:
        x: float [B, T, D].
        ln_1, ln_2: callables [B, T, D] -> [B, T, D] (LayerNorms).
        attn: callable [B, T, D] -> [B, T, D] (causal self-attention), called once.
        mlp: callable [B, T, D] -> [B, T, D], called once.

    Returns:
        float [B, T, D].
    """
    x = x + attn(ln_1(x))  # (B, T, D)
    return x + mlp(ln_2(x))  # (B, T, D)


@dataclass(frozen=True)
class GPTConfig:
    """Hyperparameters of a :class:`GPT`; the defaults are the tiny CPU model of the chapter.

    Attributes:
        vocab_size: V, number of token ids (65 covers a typical character vocabulary).
        block_size: longest sequence the model reads, the number of learned positions.
        num_layers: transformer blocks.
        num_heads: attention heads; must divide ``d_model``.
        d_model: D, the width of the residual stream (the MLP is 4D wide).
        ln_eps: LayerNorm epsilon, 1e-5 as in GPT-2 (``nnx.LayerNorm`` defaults to 1e-6).
        init_std: std of the normal initializer (GPT-2: 0.02); residual output projections use
            ``init_std / sqrt(2 * num_layers)`` so the residual stream's variance does not grow
            with depth.
        matmul_dtype: ``"float32"`` (the default: exact float32 maths) or, opt-in,
            ``"bfloat16"``: every matmul rounds its two inputs to bfloat16 and accumulates in
            float32 (parameters, activations, LayerNorms, softmax and loss stay float32). On
            CPUs with bfloat16 matrix units (AMX, AVX512-BF16) training runs faster; results
            differ from float32 in the third significant digit.
    """

    vocab_size: int = 65
    block_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    d_model: int = 128
    ln_eps: float = 1e-5
    init_std: float = 0.02
    matmul_dtype: str = "float32"

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "num_layers", "num_heads", "d_model"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"GPTConfig.num_heads ({self.num_heads}) must divide d_model ({self.d_model})"
            )
        if self.matmul_dtype not in ("float32", "bfloat16"):
            raise ValueError(
                f"GPTConfig.matmul_dtype must be 'float32' or 'bfloat16', got {self.matmul_dtype!r}"
            )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @classmethod
    def tiny(cls, vocab_size: int = 65, **changes) -> GPTConfig:
        """The chapter's CPU model: 4 layers, 4 heads, width 128, block 128 (about 0.8M params)."""
        return replace(cls(vocab_size=vocab_size), **changes)

    @classmethod
    def gpt2_small(cls) -> GPTConfig:
        """GPT-2 small (124M parameters): 12 layers, 12 heads, width 768, 1024 positions."""
        return cls(vocab_size=50257, block_size=1024, num_layers=12, num_heads=12, d_model=768)


def _linear(d_in: int, d_out: int, std: float, rngs: nnx.Rngs) -> nnx.Linear:
    return initializers.linear(d_in, d_out, kernel_init=initializers.normal(std), rngs=rngs)


def _matmul(subscripts: str, a, b, dtype: str):
    """``jnp.einsum(subscripts, a, b)`` for a two-operand product such as ``"ni,io->no"``.

    With ``dtype="bfloat16"`` the operands are rounded to bfloat16 and the products accumulate
    in float32, in the forward pass and in the two matmuls of the backward pass (whose
    incoming gradient is rounded too; plain autodiff would multiply it in float32).
    """
    if dtype == "float32":
        return jnp.einsum(subscripts, a, b)
    inputs, out = subscripts.split("->")
    sub_a, sub_b = inputs.split(",")

    def product(subs, x, y):
        x, y = x.astype(dtype), y.astype(dtype)
        return jnp.einsum(subs, x, y, preferred_element_type=jnp.float32)

    @jax.custom_vjp
    def low_precision(a, b):
        return product(subscripts, a, b)

    def forward(a, b):
        return product(subscripts, a, b), (a, b)

    def backward(saved, grad):
        a, b = saved
        grad_a = product(f"{out},{sub_b}->{sub_a}", grad, b)
        grad_b = product(f"{sub_a},{out}->{sub_b}", a, grad)
        return grad_a.astype(a.dtype), grad_b.astype(b.dtype)

    low_precision.defvjp(forward, backward)
    return low_precision(a, b)


def _dense(x, kernel, bias, dtype: str):
    """``x @ kernel + bias`` for x [..., D_in], as a matmul of [N, D_in] rows (N tokens).

    Same values as ``nnx.Linear``, but XLA's CPU backend lays out the backward pass of a 2-D
    matmul better: for x [B, T, D] it transposes the [B, T, 4D] gradients of the MLP in memory
    before computing the kernel's gradient; for [B * T, D] it does not.
    """
    lead = x.shape[:-1]
    rows = x.reshape(-1, x.shape[-1])  # (N, D_in)
    out = _matmul("ni,io->no", rows, kernel, dtype) + bias  # (N, D_out)
    return out.reshape(*lead, out.shape[-1])  # (..., D_out)


def update_kv_cache(cache, new, pos):
    """Write ``new`` into ``cache`` at time positions ``pos, ..., pos + T_new - 1``.

    Args:
        cache: float [..., T_max, D_h] (e.g. [B, H, T_max, D_h]), keys or values so far.
        new: float [..., T_new, D_h], same leading axes, the keys or values of the new tokens.
        pos: int or int32 scalar array (may be traced under ``jit``), 0 <= pos <= T_max - T_new:
            the absolute position of the first new token.

    Returns:
        float [..., T_max, D_h], same dtype as ``cache``; entries outside the written range are
        unchanged. The shape never changes, so a jitted loop does not recompile.
    """
    new = jnp.asarray(new).astype(cache.dtype)
    return jax.lax.dynamic_update_slice_in_dim(cache, new, pos, axis=-2)


def init_cache(config: GPTConfig, batch_size: int, max_len: int | None = None, dtype=jnp.float32):
    """An empty KV cache: per layer a pair (keys, values) of zeros [B, H, T_max, D_h]."""
    t_max = config.block_size if max_len is None else max_len
    shape = (batch_size, config.num_heads, t_max, config.head_dim)
    return tuple(
        (jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(config.num_layers)
    )


def causal_attention(q, k, v, mask, matmul_dtype: str = "float32"):
    """``softmax(q k^T / sqrt(D_h)) v`` per head, where every query may attend to some key.

    The same maths as :func:`genlab.attention.scaled_dot_product_attention` (chapter 03), written
    for the training step's speed: masked scores become the most negative float instead of
    -inf, so ``jax.nn.softmax`` gives the masked keys weight exactly 0 without the isfinite and
    fully-masked-row guards (a causal row always sees itself), and its backward pass is the
    plain softmax one, ``w * (g - sum(w * g))``: fewer elementwise passes over the [B, H, T, T]
    arrays than differentiating the general masked softmax's where/isfinite/divide chain.

    Args:
        q: float [B, H, T, D_h]; k, v: float [B, H, T_k, D_h].
        mask: boolean [T, T_k], True where query t may attend to key s; no row all False.
        matmul_dtype: see :class:`GPTConfig`.

    Returns:
        float [B, H, T, D_h].
    """
    scale = jnp.asarray(1.0 / math.sqrt(q.shape[-1]), q.dtype)
    scores = _matmul("bhqd,bhkd->bhqk", q, k, matmul_dtype) * scale  # (B, H, T, T_k)
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)  # (B, H, T, T_k)
    weights = jax.nn.softmax(scores, axis=-1)  # (B, H, T, T_k), 0 where masked
    return _matmul("bhqk,bhkd->bhqd", weights, v, matmul_dtype)  # (B, H, T, D_h)


class CausalSelfAttention(nnx.Module):
    """Multi-head causal self-attention: q, k, v projections and an output one.

    ``query``, ``key`` and ``value`` are separate ``nnx.Linear`` layers (GPT-2's ``c_attn`` split
    in three), but the forward pass applies them as one [D, 3D] matmul of their concatenated
    kernels: one pass over x instead of three, and one weight-gradient matmul in the backward
    pass. The outputs and the gradients of the three layers are the same as applying them one
    by one.
    """

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        d, std = config.d_model, config.init_std
        self.num_heads, self.matmul_dtype = config.num_heads, config.matmul_dtype
        self.query = _linear(d, d, std, rngs)
        self.key = _linear(d, d, std, rngs)
        self.value = _linear(d, d, std, rngs)
        self.out = _linear(d, d, std / math.sqrt(2 * config.num_layers), rngs)

    def qkv(self, x):
        """x: [B, T, D] -> q, k, v, each [B, H, T, D_h], from one fused projection."""
        projections = (self.query, self.key, self.value)
        kernel = jnp.concatenate([p.kernel[...] for p in projections], axis=1)  # (D, 3D)
        bias = jnp.concatenate([p.bias[...] for p in projections])  # (3D,)
        qkv = _dense(x, kernel, bias, self.matmul_dtype)  # (B, T, 3D)
        return tuple(split_heads(a, self.num_heads) for a in jnp.split(qkv, 3, axis=-1))

    def __call__(self, x, cache=None, pos=0):
        """x: [B, T, D] -> ([B, T, D], new cache).

        Without a cache the T tokens sit at positions 0..T-1. With ``cache = (k, v)`` of shape
        [B, H, T_max, D_h] they sit at ``pos, ..., pos + T - 1``: their keys and values are
        written there and each attends to every cached position up to its own.
        """
        q, k, v = self.qkv(x)  # (B, H, T, D_h) each
        t = x.shape[1]
        if cache is None:
            mask = jnp.tril(jnp.ones((t, t), bool))  # (T, T)
            new_cache = None
        else:
            k = update_kv_cache(cache[0], k, pos)  # (B, H, T_max, D_h)
            v = update_kv_cache(cache[1], v, pos)  # (B, H, T_max, D_h)
            new_cache = (k, v)
            query_pos = pos + jnp.arange(t)  # (T,)
            mask = jnp.arange(k.shape[-2])[None, :] <= query_pos[:, None]  # (T, T_max)
        out = causal_attention(q, k, v, mask, self.matmul_dtype)  # (B, H, T, D_h)
        out = _dense(merge_heads(out), self.out.kernel[...], self.out.bias[...], self.matmul_dtype)
        return out, new_cache  # (B, T, D)


class MLP(nnx.Module):
    """Linear D -> 4D, GELU (tanh form, as in GPT-2), Linear 4D -> D."""

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        d, std = config.d_model, config.init_std
        self.matmul_dtype = config.matmul_dtype
        self.fc = _linear(d, 4 * d, std, rngs)
        self.proj = _linear(4 * d, d, std / math.sqrt(2 * config.num_layers), rngs)

    def __call__(self, x):
        fc, proj, dtype = self.fc, self.proj, self.matmul_dtype
        h = jax.nn.gelu(_dense(x, fc.kernel[...], fc.bias[...], dtype), approximate=True)
        return _dense(h, proj.kernel[...], proj.bias[...], dtype)  # (B, T, D); h (B, T, 4D)


class Block(nnx.Module):
    """A pre-LN transformer block: :func:`pre_ln_block` with LayerNorms, attention and MLP."""

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        d = config.d_model
        self.ln_1 = initializers.layer_norm(d, epsilon=config.ln_eps, rngs=rngs)
        self.attn = CausalSelfAttention(config, rngs=rngs)
        self.ln_2 = initializers.layer_norm(d, epsilon=config.ln_eps, rngs=rngs)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(self, x, cache=None, pos=0):
        """x: [B, T, D] -> ([B, T, D], this layer's new cache or None)."""
        written = []

        def attn(h):
            out, layer_cache = self.attn(h, cache, pos)
            written.append(layer_cache)
            return out

        y = pre_ln_block(x, self.ln_1, attn, self.ln_2, self.mlp)
        return y, written[0]


class GPT(nnx.Module):
    """A GPT-2-style decoder-only language model.

    Call ``model(tokens)`` with int [B, T] (T <= block_size) to get logits float [B, T, V];
    ``model.forward_with_cache(tokens, cache, pos)`` runs the same computation for tokens at
    positions ``pos, ...`` against a KV cache (see :func:`init_cache`) and returns
    ``(logits, new_cache)``.
    """

    def __init__(self, config: GPTConfig, *, rngs: nnx.Rngs):
        self.config = config
        embed_init = initializers.normal(config.init_std)
        self.wte = nnx.Embed(
            config.vocab_size, config.d_model, embedding_init=embed_init, rngs=rngs
        )
        self.wpe = nnx.Embed(
            config.block_size, config.d_model, embedding_init=embed_init, rngs=rngs
        )
        self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.ln_f = initializers.layer_norm(config.d_model, epsilon=config.ln_eps, rngs=rngs)

    def _check_tokens(self, tokens, pos=0):
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"GPT: tokens must have shape [B, T], got {tokens.shape}")
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(f"GPT: tokens must be integer ids, got dtype {tokens.dtype}")
        if isinstance(pos, int) and pos + tokens.shape[1] > self.config.block_size:
            raise ValueError(
                f"GPT: positions up to {pos + tokens.shape[1]} exceed block_size "
                f"{self.config.block_size}"
            )
        return tokens

    def _run(self, tokens, caches, pos):
        positions = pos + jnp.arange(tokens.shape[1])  # (T,)
        x = self.wte(tokens) + self.wpe(positions)[None]  # (B, T, D)
        new_caches = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, None if caches is None else caches[i], pos)
            new_caches.append(layer_cache)
        x = self.ln_f(x)
        # The head is tied to the token embedding: logits = x @ wte^T (nnx.Embed.attend).
        rows = x.reshape(-1, x.shape[-1])  # (B * T, D), see _dense
        logits = _matmul("nd,vd->nv", rows, self.wte.embedding[...], self.config.matmul_dtype)
        logits = logits.reshape(*x.shape[:-1], -1)  # (B, T, V)
        return logits, (None if caches is None else tuple(new_caches))

    def __call__(self, tokens):
        """tokens: int [B, T] -> logits float32 [B, T, V]."""
        return self._run(self._check_tokens(tokens), None, 0)[0]

    def forward_with_cache(self, tokens, cache, pos):
        """tokens int [B, T] at positions pos..pos+T-1 -> (logits [B, T, V], new cache)."""
        return self._run(self._check_tokens(tokens, pos), cache, pos)


def num_params(model: nnx.Module) -> int:
    """Number of trainable parameters (tied weights counted once)."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


# --- generation -----------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("graphdef",))
def _logits(graphdef, state, tokens):
    return nnx.merge(graphdef, state)(tokens)


def make_logits_fn(model: GPT) -> Callable:
    """A jitted ``tokens int [B, T] -> logits [B, T, V]`` of the model's current weights.

    It compiles once per input shape (the weights are an argument, not constants), which is
    what :func:`genlab.sampling.generate` needs: its buffer has a fixed shape.
    """
    graphdef, state = nnx.split(model)
    return lambda tokens: _logits(graphdef, state, jnp.asarray(tokens, jnp.int32))


def _choose(key, logits, temperature, top_k, top_p, flags):
    use_top_k, use_top_p, greedy = flags
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return sampling.sample_traced(key, logits, temperature, top_k, top_p, use_top_k, use_top_p)


@partial(jax.jit, static_argnames=("graphdef", "num_new_tokens", "flags"))
def _generate_cached(
    graphdef, state, key, prompt, temperature, top_k, top_p, num_new_tokens, flags
):
    model = nnx.merge(graphdef, state)
    batch, t0 = prompt.shape
    cache = init_cache(model.config, batch, t0 + num_new_tokens)
    logits, cache = model.forward_with_cache(prompt, cache, 0)  # prefill: (B, T0, V)

    def step(carry, _):
        key, cache, last_logits, pos = carry
        key, subkey = jax.random.split(key)  # one split per step, as in the naive loop
        token = _choose(subkey, last_logits, temperature, top_k, top_p, flags)  # (B,)
        logits, cache = model.forward_with_cache(token[:, None], cache, pos)  # (B, 1, V)
        return (key, cache, logits[:, 0], pos + 1), token

    carry = (key, cache, logits[:, -1], jnp.asarray(t0, jnp.int32))
    _, tokens = jax.lax.scan(step, carry, None, length=num_new_tokens)  # (N, B)
    return jnp.concatenate([prompt, tokens.T], axis=1)  # (B, T0 + N)


def generate(
    model: GPT,
    key,
    prompt,
    num_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
):
    """KV-cached generation: one jitted program, a prefill then a ``lax.scan`` over new tokens.

    Same key convention as :func:`genlab.sampling.generate` (the naive loop): before step i,
    ``key, subkey = jax.random.split(key)`` and the token is drawn with ``subkey`` from the
    logits at position T0 + i - 1, so both give the same tokens for the same key. The cache has
    the fixed length T0 + N; the program is compiled once per (model structure, prompt shape, N,
    which filters are on, greedy or not) and then reused for any key, prompt, weights,
    temperature, k and p.

    Args:
        model: a :class:`GPT`.
        key: a ``jax.random`` key.
        prompt: integer [B, T0], T0 >= 1, with T0 + N <= block_size.
        num_new_tokens: N >= 1.
        temperature, top_k, top_p: as in :func:`genlab.sampling.sample_next_token`.
        greedy: argmax instead of sampling.

    Returns:
        int32 [B, T0 + N]: the prompt followed by the new tokens.
    """
    prompt = sampling.check_prompt(prompt, num_new_tokens, min_new_tokens=1)
    total = prompt.shape[1] + num_new_tokens
    if total > model.config.block_size:
        raise ValueError(
            f"prompt length {prompt.shape[1]} + num_new_tokens {num_new_tokens} = {total} "
            f"exceeds the model's block_size {model.config.block_size}"
        )
    sampling.check_sampling_args(temperature, top_k, top_p)  # clear errors, outside jit
    graphdef, state = nnx.split(model)
    return _generate_cached(
        graphdef,
        state,
        key,
        prompt.astype(jnp.int32),
        jnp.float32(temperature),  # traced: a new temperature, k or p does not recompile
        jnp.int32(1 if top_k is None else top_k),
        jnp.float32(1.0 if top_p is None else top_p),
        num_new_tokens=int(num_new_tokens),
        flags=(top_k is not None, top_p is not None, bool(greedy)),
    )


# --- GPT-2 weights --------------------------------------------------------------------------


def _get(state_dict: Mapping, name: str, shape: tuple[int, ...]) -> np.ndarray:
    for key in (name, "transformer." + name):
        if key in state_dict:
            value = np.asarray(state_dict[key], dtype=np.float32)
            if value.shape != shape:
                raise ValueError(f"state_dict[{key!r}] has shape {value.shape}, expected {shape}")
            return value
    raise KeyError(f"state_dict has no {name!r} (nor 'transformer.{name}')")


def load_gpt2_weights(model: GPT, state_dict: Mapping) -> GPT:
    """Copy a Hugging Face GPT-2 state dict into ``model`` (in place) and return it.

    ``state_dict`` maps names such as ``transformer.h.0.attn.c_attn.weight`` (the
    ``transformer.`` prefix is optional) to NumPy arrays. GPT-2's ``Conv1D`` layers store
    weights as [in, out], the layout of ``nnx.Linear.kernel``, so no transpose is needed;
    ``c_attn`` [D, 3D] holds the query, key and value projections side by side and is split
    into three. ``lm_head.weight`` is ignored (tied to ``wte``). The config must match the
    weights' shapes (vocabulary, positions, width, layers); a mismatch raises ValueError.
    """
    cfg = model.config
    d = cfg.d_model
    wpe = state_dict.get("transformer.wpe.weight", state_dict.get("wpe.weight"))
    n_positions = None if wpe is None else np.shape(wpe)[0]
    if n_positions is not None and n_positions < cfg.block_size:
        raise ValueError(f"state dict has {n_positions} positions, config.block_size is larger")
    model.wte.embedding[...] = _get(state_dict, "wte.weight", (cfg.vocab_size, d))
    model.wpe.embedding[...] = _get(state_dict, "wpe.weight", (n_positions, d))[: cfg.block_size]
    for i, block in enumerate(model.blocks):
        p = f"h.{i}."
        block.ln_1.scale[...] = _get(state_dict, p + "ln_1.weight", (d,))
        block.ln_1.bias[...] = _get(state_dict, p + "ln_1.bias", (d,))
        w = _get(state_dict, p + "attn.c_attn.weight", (d, 3 * d))
        b = _get(state_dict, p + "attn.c_attn.bias", (3 * d,))
        for j, proj in enumerate((block.attn.query, block.attn.key, block.attn.value)):
            proj.kernel[...] = w[:, j * d : (j + 1) * d]
            proj.bias[...] = b[j * d : (j + 1) * d]
        block.attn.out.kernel[...] = _get(state_dict, p + "attn.c_proj.weight", (d, d))
        block.attn.out.bias[...] = _get(state_dict, p + "attn.c_proj.bias", (d,))
        block.ln_2.scale[...] = _get(state_dict, p + "ln_2.weight", (d,))
        block.ln_2.bias[...] = _get(state_dict, p + "ln_2.bias", (d,))
        block.mlp.fc.kernel[...] = _get(state_dict, p + "mlp.c_fc.weight", (d, 4 * d))
        block.mlp.fc.bias[...] = _get(state_dict, p + "mlp.c_fc.bias", (4 * d,))
        block.mlp.proj.kernel[...] = _get(state_dict, p + "mlp.c_proj.weight", (4 * d, d))
        block.mlp.proj.bias[...] = _get(state_dict, p + "mlp.c_proj.bias", (d,))
    if f"h.{cfg.num_layers}.ln_1.weight" in state_dict or (
        f"transformer.h.{cfg.num_layers}.ln_1.weight" in state_dict
    ):
        raise ValueError(f"state dict has more than config.num_layers = {cfg.num_layers} layers")
    model.ln_f.scale[...] = _get(state_dict, "ln_f.weight", (d,))
    model.ln_f.bias[...] = _get(state_dict, "ln_f.bias", (d,))
    return model


_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.safetensors`` file into NumPy arrays (no torch needed).

    The format: an 8-byte little-endian header length n, n bytes of JSON mapping each tensor
    name to its dtype, shape and byte offsets, then the raw data.
    """
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = memoryview(raw)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=_SAFETENSORS_DTYPES[info["dtype"]])
        out[name] = array.reshape(info["shape"]).astype(np.float32)
    return out


GPT2_URL = "https://huggingface.co/openai-community/gpt2/resolve/main/"


def load_gpt2_small(
    directory: str | os.PathLike | None = None, *, download: bool = True, timeout: float = 10.0
):
    """GPT-2 small (124M) with OpenAI's weights, and its byte-level BPE tokenizer's files.

    Looks for ``model.safetensors``, ``vocab.json`` and ``merges.txt`` in ``directory``
    (default ``~/.cache/genlab/gpt2``) and, with ``download=True``, fetches missing ones from
    the Hugging Face hub (about 550 MB).

    Returns:
        (model, files): the :class:`GPT` and a dict of the three files' paths.

    Raises:
        OSError: a file is missing and cannot be downloaded (e.g. offline); the message says so.
    """
    directory = Path(directory or Path.home() / ".cache" / "genlab" / "gpt2")
    files = {name: directory / name for name in ("model.safetensors", "vocab.json", "merges.txt")}
    for name, path in files.items():
        if path.is_file():
            continue
        if not download:
            raise OSError(f"GPT-2 file {path} is missing and download=False")
        directory.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(GPT2_URL + name, timeout=timeout) as response:
                partial_path = path.with_suffix(path.suffix + ".part")
                partial_path.write_bytes(response.read())
                partial_path.replace(path)
        except OSError as error:  # URLError and timeouts are OSErrors
            raise OSError(
                f"could not download GPT-2's {name} ({error}); are you offline?"
            ) from None
    state_dict = read_safetensors(files["model.safetensors"])
    model = GPT(GPTConfig.gpt2_small(), rngs=nnx.Rngs(0))
    return load_gpt2_weights(model, state_dict), files


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (its vocab.json uses it)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


class GPT2Vocab:
    """GPT-2's vocabulary (``vocab.json``) and, when given, its BPE merges (``merges.txt``).

    ``decode`` is exact. With ``merges_path``, ``encode`` is GPT-2's tokenizer: the text is split
    by GPT-2's pre-tokenizer, each piece written in the printable byte alphabet of
    ``vocab.json``, and within a piece the adjacent pair of lowest merge rank is merged
    (everywhere, left to right) until no pair is a merge: chapter 07's ``bpe_encode``, ranks in
    place of new ids. Without merges, ``encode`` is a greedy longest match over the vocabulary,
    which gives the same ids for plain English words and may differ elsewhere.
    """

    # GPT-2's pre-tokenizer: contractions, letters, numbers and other symbols each with an
    # optional leading space, then runs of whitespace. ``regex`` knows Unicode classes; ``re``
    # approximates them.
    SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    SPLIT_RE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""

    @staticmethod
    def read_merges(path: str | os.PathLike) -> dict[tuple[str, str], int]:
        """GPT-2's ``merges.txt``: ``{(left, right): rank}``, rank 0 for the first merge line.

        The file has an optional ``#version`` header, then one merge per line, its two parts
        separated by one space and written in GPT-2's printable byte alphabet.
        """
        ranks: dict[tuple[str, str], int] = {}
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.startswith("#version"):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"{path}, line {number}: expected two symbols separated by one "
                                 f"space, got {line!r}")  # fmt: skip
            ranks.setdefault((parts[0], parts[1]), len(ranks))
        return ranks

    @classmethod
    def _splitter(cls):
        try:
            import regex

            return regex.compile(cls.SPLIT)
        except ImportError:  # pragma: no cover - regex ships with most Python setups
            import re

            return re.compile(cls.SPLIT_RE)

    def __init__(self, vocab_path: str | os.PathLike, merges_path: str | os.PathLike | None = None):
        self.token_to_id: dict[str, int] = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
        self.id_to_token = {i: t for t, i in self.token_to_id.items()}
        self.byte_to_char = _bytes_to_unicode()
        self.char_to_byte = {c: b for b, c in self.byte_to_char.items()}
        self._longest = max(len(t) for t in self.token_to_id)
        self.ranks = None if merges_path is None else self.read_merges(merges_path)
        self._split = self._splitter()
        self._pieces: dict[str, tuple[str, ...]] = {}

    def _bpe(self, piece: str) -> tuple[str, ...]:
        """A piece (in the byte alphabet) as symbols after GPT-2's merges, by rank."""
        if piece in self._pieces:
            return self._pieces[piece]
        symbols = list(piece)
        while len(symbols) > 1:
            ranked = [(self.ranks[p], p) for p in zip(symbols, symbols[1:]) if p in self.ranks]
            if not ranked:
                break
            _, (left, right) = min(ranked)
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
                    merged.append(left + right)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        self._pieces[piece] = tuple(symbols)
        return self._pieces[piece]

    def _lookup(self, symbol: str) -> int:
        if symbol not in self.token_to_id:
            raise ValueError(f"token {symbol!r} is not in the vocabulary")
        return self.token_to_id[symbol]

    def encode(self, text: str) -> list[int]:
        if self.ranks is not None:
            ids = []
            for piece in self._split.findall(text):
                chars = "".join(self.byte_to_char[b] for b in piece.encode("utf-8"))
                ids.extend(self._lookup(s) for s in self._bpe(chars))
            return ids
        chars = "".join(self.byte_to_char[b] for b in text.encode("utf-8"))
        ids, i = [], 0
        while i < len(chars):
            for j in range(min(len(chars), i + self._longest), i, -1):
                if chars[i:j] in self.token_to_id:
                    ids.append(self.token_to_id[chars[i:j]])
                    i = j
                    break
            else:
                raise ValueError(f"character {chars[i]!r} is not in the vocabulary")
        return ids

    def decode(self, ids) -> str:
        chars = "".join(self.id_to_token[int(i)] for i in np.asarray(ids).reshape(-1))
        return bytes(self.char_to_byte[c] for c in chars).decode("utf-8", errors="replace")
