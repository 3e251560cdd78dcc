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

__all__ = ["DEPENDENCE_TOLERANCE", "LSTMConfig", "LSTMLM", "batch_dependence", "last_outputs"]


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


def last_outputs(cell: nnx.RNNCellBase, *, time_major: bool):
    """``nnx.RNN(cell, time_major=time_major)(x)[:, -1]`` as a pure function of x.

    The recurrence is a ``jax.lax.scan`` over axis 0 of x when ``time_major`` (x read as
    [T, B, E]: for batch-major data, a recurrence over the batch) and over axis 1 otherwise, from
    a zero carry; the function draws no random state, so ``jax.jit``, ``jax.grad``,
    ``jax.jacfwd`` and ``jax.vmap`` apply to it (``nnx.RNN`` itself is an NNX module and needs
    NNX's transforms).

    Returns:
        a function x [B, T, E] -> [B, H] (H the cell's hidden width; rows indexed by axis 0 of x).
    """

    def last(x):
        seq = x if time_major else jnp.swapaxes(x, 0, 1)  # (steps, rows, E)
        zeros = jnp.zeros((seq.shape[1], cell.hidden_features), seq.dtype)
        _, outputs = jax.lax.scan(cell, (zeros, zeros), seq)  # (steps, rows, H)
        return (outputs if time_major else jnp.swapaxes(outputs, 0, 1))[:, -1]

    return last


DEPENDENCE_TOLERANCE = 1e-5  # a move of an output larger than float32 rounding of order-one values


def batch_dependence(fn, x) -> jax.Array:
    """Which sequences of a batch each sequence's outputs depend on.

    A function that treats the sequences of a batch independently (a layer run batch-major)
    gives a diagonal matrix; a recurrence run over the batch axis (a time-major layer fed
    batch-major data) a lower-triangular one; a statistic over the batch a full one.

    Each element c in turn gets a random change of order one on every feature of every time step
    (random, so no leak cancels: a constant added to every feature of c is invisible to a
    function that centres each element); entry [b, c] is whether some output of element b
    moved by more than ``DEPENDENCE_TOLERANCE``.

    Args:
        fn: a deterministic function ``[B, T, D] -> [B, ...]`` (outputs indexed by batch element
            first).
        x: float [B, T, D], B >= 2.

    Returns:
        bool [B, B]: entry [b, c] True when element b's outputs depend on element c's input.
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError(f"x must be [B, T, D] with B >= 2, got shape {x.shape}")
    batch = x.shape[0]
    before = jnp.asarray(fn(x)).reshape(batch, -1)  # (B, N)
    changes = jax.random.normal(jax.random.key(0), x.shape)  # (B, T, D): one per element
    columns = []
    for c in range(batch):
        after = jnp.asarray(fn(x.at[c].add(changes[c]))).reshape(batch, -1)  # (B, N)
        columns.append(jnp.max(jnp.abs(after - before), axis=1) > DEPENDENCE_TOLERANCE)  # (B,)
    return jnp.stack(columns, axis=1)  # (B, B): rows b, columns c
