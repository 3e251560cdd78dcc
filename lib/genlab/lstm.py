"""An LSTM language model in Flax NNX: the recurrent baseline chapter 04 compares a GPT with.

Popular write-ups present an LSTM as "the text generator"; one of them builds it with PyTorch's
``nn.LSTM`` left in its default time-major layout ([T, B, features]) and then takes
``output[:, -1]``: the last *batch element* at every time step, not the last time step of every
sequence. Here the layout is explicit: :class:`LSTMLM` runs ``nnx.RNN`` batch-major
(``[B, T, ...]``, ``time_major=False``) and predicts the next token at every position, like a
GPT, so both train with the same loss on the same windows.

Shape letters: B batch, T time (tokens), E embedding width, H hidden width, V vocabulary.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from genlab import initializers

__all__ = ["LSTMConfig", "LSTMLM", "batch_leakage"]


@dataclass(frozen=True)
class LSTMConfig:
    """Hyperparameters of an :class:`LSTMLM`.

    Attributes:
        vocab_size: V, number of token ids.
        d_embed: E, width of the token embedding (the LSTM's input).
        d_hidden: H, width of the LSTM's hidden and cell states.
        num_layers: stacked LSTM layers (the second reads the first's hidden states).
    """

    vocab_size: int = 65
    d_embed: int = 128
    d_hidden: int = 384
    num_layers: int = 1

    def __post_init__(self):
        for name in ("vocab_size", "d_embed", "d_hidden", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"LSTMConfig.{name} must be a positive int, got {value!r}")

    def num_params(self) -> int:
        """Trainable parameters, counted from the formula (an LSTM layer has four gates, each
        an input matrix, a recurrent matrix and a bias)."""
        total = self.vocab_size * self.d_embed  # embedding
        width = self.d_embed
        for _ in range(self.num_layers):
            total += 4 * (width * self.d_hidden + self.d_hidden * self.d_hidden + self.d_hidden)
            width = self.d_hidden
        return total + self.d_hidden * self.vocab_size + self.vocab_size  # head


class LSTMLM(nnx.Module):
    """Embedding -> LSTM layer(s) over time -> linear head: next-token logits at every position.

    ``model(tokens)``: int [B, T] -> float32 logits [B, T, V]; position t sees tokens 0..t only
    (the recurrence runs forward in time), so ``genlab.gpt.lm_loss`` with targets shifted by
    one trains it exactly like the GPT.
    """

    def __init__(self, config: LSTMConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed = initializers.embed(config.vocab_size, config.d_embed, rngs=rngs)
        layers, width = [], config.d_embed
        for _ in range(config.num_layers):
            cell = nnx.OptimizedLSTMCell(width, config.d_hidden, rngs=rngs)
            layers.append(nnx.RNN(cell, time_major=False))
            width = config.d_hidden
        self.layers = nnx.List(layers)
        self.head = initializers.linear(config.d_hidden, config.vocab_size, rngs=rngs)

    def __call__(self, tokens):
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"LSTMLM: tokens must have shape [B, T], got {tokens.shape}")
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(f"LSTMLM: tokens must be integer ids, got dtype {tokens.dtype}")
        h = self.embed(tokens)  # (B, T, E)
        for layer in self.layers:
            h = layer(h)  # (B, T, H)
        return self.head(h)  # (B, T, V)


def batch_leakage(fn, x) -> jax.Array:
    """How much a function's output for one sequence moves when *another* sequence changes.

    For each batch element b in turn, adds 1.0 to every feature of element b (all time steps)
    and measures the largest absolute change of ``fn``'s outputs for the other elements; returns
    the largest over b. 0 (up to rounding) for a function that treats the sequences of a batch
    independently; positive when one element's output reads another's input, as in a recurrence
    run over the batch axis (a time-major layer fed batch-major data).

    Args:
        fn: a function ``[B, T, D] -> [B, ...]`` (outputs indexed by batch element first).
        x: float [B, T, D], B >= 2.

    Returns:
        float32 scalar.
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError(f"x must be [B, T, D] with B >= 2, got shape {x.shape}")
    batch = x.shape[0]
    before = jnp.asarray(fn(x))  # (B, ...)
    worst = jnp.float32(0.0)
    for b in range(batch):
        after = jnp.asarray(fn(x.at[b].add(1.0)))  # (B, ...)
        others = jnp.arange(batch) != b  # (B,)
        change = jnp.abs(after - before).reshape(batch, -1)[others]  # (B - 1, N)
        worst = jnp.maximum(worst, jnp.max(change))
    return worst
