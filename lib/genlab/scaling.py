"""Scale: chapter 04's GPT on a device mesh, collectives read from the compiled program,
memory per device, rematerialisation, scaling laws and the KV cache's size.

Chapter 09 (issue 36) teaches the pieces in this order; shape letters: B batch, T time
(tokens), D model width, H heads, V vocabulary, K number of points or initialisations.

    make_mesh, STRATEGIES       section 1, devices in a (data, model) grid
    partition_spec, param_shardings, optimizer_shardings, batch_sharding
                                section 2, where every parameter lives under data parallelism
                                ("dp"), Megatron tensor parallelism ("tp") and FSDP / ZeRO-3
                                ("fsdp")
    make_sharded_train_step, make_sharded_value_and_grad
                                section 2, one jitted program with fixed input and output
                                shardings; the same loss and gradients as one device
    collective_counts           section 3, the all-reduces, all-gathers, ... XLA inserted
    bytes_per_device, compiled_memory, gpt_loss(remat=...), remat_memory
                                section 4, what each device holds and what a step needs
    ScalingLaw, chinchilla_loss, fit_scaling_law, compute_optimal, non_embedding_params,
    train_scaling_point         section 5, L(N, D) = E + A / N^alpha + B / D^beta, fitted to
                                the course's character GPT at several sizes and budgets
    kv_cache_bytes, generation_throughput
                                section 6, inference: the cache's size, tokens/s against B

The model is :class:`genlab.gpt.GPT` and its step :func:`genlab.gpt.train_step`, reused as they
are: sharding changes where arrays live and which collectives XLA adds, never the maths.

On a CPU the devices are simulated: ``GENLAB_CPU_DEVICES=8`` (or ``XLA_FLAGS=
--xla_force_host_platform_device_count=8``) set before JAX starts gives 8 (see
``genlab/__init__.py``).
"""

from __future__ import annotations

import numbers
import re
import time
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AbstractMesh, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from genlab import char_gpt, data, gpt, model_cache, train

__all__ = [
    "COLLECTIVES",
    "SCALING_DEFAULTS",
    "STRATEGIES",
    "ScalingLaw",
    "ShardedStep",
    "batch_sharding",
    "bytes_per_device",
    "chinchilla_loss",
    "collective_counts",
    "compiled_memory",
    "compute_optimal",
    "fit_scaling_law",
    "generation_throughput",
    "gpt_loss",
    "kv_cache_bytes",
    "make_mesh",
    "make_sharded_train_step",
    "make_sharded_value_and_grad",
    "non_embedding_params",
    "optimizer_shardings",
    "param_shardings",
    "partition_spec",
    "remat_memory",
    "train_scaling_point",
]

STRATEGIES = ("dp", "tp", "fsdp")
DATA, MODEL = "data", "model"  # the mesh's axis names


# --- 1. meshes -------------------------------------------------------------------------------


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def make_mesh(data: int = 1, model: int = 1) -> Mesh:
    """A 2-D device mesh of shape (data, model) with axis names ``("data", "model")``.

    Takes the first ``data * model`` of ``jax.devices()`` in order, so device ``d * model + m``
    sits at row d, column m: the devices of one row share a batch slice and split the weights
    (tensor parallelism); those of one column hold the same weights' slice.

    Raises:
        ValueError: a size is not a positive int, or there are fewer devices than data * model.
    """
    data = _check_positive_int("data", data)
    model = _check_positive_int("model", model)
    devices = jax.devices()
    if data * model > len(devices):
        raise ValueError(
            f"make_mesh: data * model = {data} * {model} = {data * model} devices wanted, "
            f"JAX has {len(devices)} (set GENLAB_CPU_DEVICES before JAX starts for more)"
        )
    grid = np.array(devices[: data * model]).reshape(data, model)  # (data, model)
    return Mesh(grid, (DATA, MODEL))


def _check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    return strategy


def _check_mesh(mesh, *, abstract: bool = False) -> Mesh:
    kinds = (Mesh, AbstractMesh) if abstract else Mesh
    if not isinstance(mesh, kinds) or set(mesh.axis_names) != {DATA, MODEL}:
        raise TypeError(
            f"mesh must be a jax Mesh with axes ('data', 'model') (make_mesh), got {mesh!r}"
        )
    return mesh


# --- 2. layouts ------------------------------------------------------------------------------

# Megatron-LM (Shoeybi et al. 2019): the first matmul of the MLP and the q/k/v projections are
# split by output columns (each device computes whole heads / a slice of the 4D hidden units, no
# communication); the MLP's second matmul and the attention output are split by input rows, so
# each device's partial products are summed: one all-reduce per row-split matmul, two per block
# in the forward pass (and two in the backward pass, for the column-split layers' inputs).
_TENSOR_PARALLEL = {
    ("attn", "query", "kernel"): (None, MODEL),
    ("attn", "key", "kernel"): (None, MODEL),
    ("attn", "value", "kernel"): (None, MODEL),
    ("attn", "query", "bias"): (MODEL,),
    ("attn", "key", "bias"): (MODEL,),
    ("attn", "value", "bias"): (MODEL,),
    ("attn", "out", "kernel"): (MODEL, None),
    ("mlp", "fc", "kernel"): (None, MODEL),
    ("mlp", "fc", "bias"): (MODEL,),
    ("mlp", "proj", "kernel"): (MODEL, None),
}


def _path_name(path) -> str:
    return "/".join(map(str, path))


def partition_spec(
    path: Sequence, shape: Sequence[int], strategy: str, mesh: Mesh, *, num_heads: int | None = None
) -> P:
    """Where one array of a GPT's state lives on ``mesh`` under ``strategy``.

    Args:
        path: the array's path in an ``nnx.State``, e.g. ``("blocks", 0, "mlp", "fc",
            "kernel")``; an optimizer's moments end with their parameter's path
            (``("opt_state", 0, "mu", "blocks", 0, ...)``) and get the same spec.
        shape: the array's shape.
        strategy: ``"dp"`` every array replicated; ``"tp"`` Megatron's split over the
            ``"model"`` axis (q/k/v and the MLP's first layer by output columns, their biases
            alike; the attention output and the MLP's second layer by input rows; embeddings,
            LayerNorms and the row-split layers' biases replicated); ``"fsdp"`` (ZeRO-3) every
            array split over ``"data"`` along its largest axis whose size the axis divides
            (ties: the first), replicated when none does (scalars, odd sizes).
        mesh: a mesh from :func:`make_mesh`, or a ``jax.sharding.AbstractMesh`` of the same
            axes (only its shape is read).
        num_heads: H, needed for ``"tp"``: the q/k/v columns are H heads side by side, so the
            ``"model"`` axis must divide H for each device to own whole heads.

    Returns:
        a ``jax.sharding.PartitionSpec`` with one entry per axis of ``shape``.

    Raises:
        ValueError: under ``"tp"``, the ``"model"`` axis does not divide a split dimension or
            H (the message names the parameter and the sizes).
    """
    _check_strategy(strategy)
    _check_mesh(mesh, abstract=True)
    shape = tuple(shape)
    if strategy == "dp":
        return P()
    if strategy == "fsdp":
        size = mesh.shape[DATA]
        divisible = [axis for axis in range(len(shape)) if shape[axis] % size == 0]
        if not divisible:
            return P()
        axis = max(divisible, key=lambda a: (shape[a], -a))  # largest; the first among equals
        return P(*[DATA if a == axis else None for a in range(len(shape))])
    spec = _TENSOR_PARALLEL.get(tuple(map(str, path[-3:])))
    if spec is None:
        return P()
    size = mesh.shape[MODEL]
    axis = spec.index(MODEL)
    name = _path_name(path)
    if shape[axis] % size:
        raise ValueError(
            f"tensor parallelism: the mesh's 'model' axis (size {size}) must divide "
            f"axis {axis} of {name} (shape {shape})"
        )
    if path[-2] in ("query", "key", "value"):
        if num_heads is None:
            raise ValueError(f"tensor parallelism needs num_heads to split {name} by heads")
        if num_heads % size:
            raise ValueError(
                f"tensor parallelism: the mesh's 'model' axis (size {size}) must "
                f"divide the number of heads H = {num_heads} ({name})"
            )
    return P(*spec)


def _state_shardings(state: nnx.State, mesh: Mesh, strategy: str, num_heads: int | None):
    """An ``nnx.State`` of the same paths holding a ``NamedSharding`` per array."""

    def sharding(path, leaf):
        shape = np.shape(leaf.get_value())
        return NamedSharding(mesh, partition_spec(path, shape, strategy, mesh, num_heads=num_heads))

    return nnx.from_flat_state([(p, sharding(p, leaf)) for p, leaf in nnx.to_flat_state(state)])


def _numbered(*shardings: nnx.State) -> nnx.State:
    """Several modules' shardings as one state keyed 0, 1, ..., as ``nnx.state((m0, m1))``."""
    return nnx.from_flat_state(
        [((i, *p), s) for i, one in enumerate(shardings) for p, s in nnx.to_flat_state(one)]
    )


def _check_gpt(model) -> gpt.GPT:
    if not isinstance(model, gpt.GPT):
        raise TypeError(f"model must be a genlab.gpt.GPT, got {type(model).__name__}")
    return model


def param_shardings(model: gpt.GPT, mesh: Mesh, strategy: str) -> nnx.State:
    """``nnx.state(model)`` with each array replaced by its ``NamedSharding`` on ``mesh``.

    See :func:`partition_spec` for the three strategies. Put a model there with
    ``nnx.update(model, jax.device_put(nnx.state(model), param_shardings(model, mesh, s)))``.
    """
    _check_gpt(model)
    _check_strategy(strategy)
    return _state_shardings(nnx.state(model), _check_mesh(mesh), strategy, model.config.num_heads)


def optimizer_shardings(
    optimizer: nnx.Optimizer, model: gpt.GPT, mesh: Mesh, strategy: str
) -> nnx.State:
    """``nnx.state(optimizer)`` as NamedShardings: each moment (Adam's mu and nu) like its
    parameter, so under ``"fsdp"`` the optimizer state is split too (ZeRO); step counts are
    replicated."""
    _check_gpt(model)
    _check_strategy(strategy)
    return _state_shardings(
        nnx.state(optimizer), _check_mesh(mesh), strategy, model.config.num_heads
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Token windows [B, T + 1] split by rows over ``"data"`` (every strategy), replicated
    over ``"model"``."""
    return NamedSharding(_check_mesh(mesh), P(DATA, None))


def gpt_loss(model: gpt.GPT, tokens, remat: bool = False):
    """Mean next-token cross-entropy of ``model`` on windows ``tokens`` [B, T + 1]
    (:func:`genlab.gpt.lm_loss` of the first T tokens' logits against the last T).

    With ``remat=True`` the blocks run as one ``jax.lax.scan`` over their stacked weights whose
    step is under ``jax.checkpoint``: the backward pass keeps only each block's input [B, T, D]
    and recomputes the block's activations (attention weights [B, H, T, T], the MLP's
    [B, T, 4D]) when it reaches that block: one more forward pass of compute for activation
    memory of O(layers x B T D) instead of O(layers x B T (4D + H T)). The value and the
    gradients are the same. Why a scan: with the blocks unrolled in Python, XLA's CPU
    scheduler is free to run every recomputation early, before the backward pass needs it,
    and the saving vanishes (measured on jaxlib 0.10: the scratch memory even grows); inside
    a reverse scan a block can only be recomputed when its turn comes.

    Returns:
        float32 scalar.
    """
    _check_gpt(model)
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(
            f"gpt_loss: tokens must be windows [B, T + 1] with T >= 1, got shape {tokens.shape}"
        )
    if remat:
        model = _rematerialised(model)
    logits = model(tokens[:, :-1])  # (B, T, V)
    return gpt.lm_loss(logits, tokens[:, 1:])


class _CheckpointedStack(nnx.Module):
    """All of a GPT's blocks as one: a ``lax.scan`` over their stacked states whose step,
    one :class:`genlab.gpt.Block`, runs under ``jax.checkpoint``."""

    def __init__(self, blocks):
        self.blocks = blocks

    def __call__(self, x, cache=None, pos=0):
        """x: [B, T, D] -> ([B, T, D], None); called as a block is, without a cache."""
        graphdef = nnx.graphdef(self.blocks[0])
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *(nnx.state(b) for b in self.blocks))

        @jax.checkpoint
        def step(x, state):  # (B, T, D) -> (B, T, D)
            y, _ = nnx.merge(graphdef, state)(x, cache, pos)
            return y, None

        x, _ = jax.lax.scan(step, x, stacked)  # (B, T, D)
        return x, None


def _rematerialised(model: gpt.GPT) -> gpt.GPT:
    """A copy of ``model`` sharing its arrays whose blocks are one :class:`_CheckpointedStack`:
    the GPT's own forward pass (embeddings, final LayerNorm, tied head) runs around it."""
    copy = nnx.merge(*nnx.split(model))
    copy.blocks = nnx.List([_CheckpointedStack(copy.blocks)])
    return copy


class ShardedStep:
    """A jitted program of modules' state and token windows with fixed in/out shardings.

    Call it as ``step(*modules, tokens)``: the modules' state is put on its shardings (a no-op
    once it is there), ``tokens`` [B, T + 1] split by rows over ``"data"``; a training step
    writes the new state back into the modules (which stay sharded). ``step.lower(*modules,
    tokens)`` gives the ``jax.stages.Lowered`` program (``.compile().as_text()`` for
    :func:`collective_counts`, ``.compile()`` for :func:`compiled_memory`).

    Attributes:
        mesh: the mesh.
        strategy: ``"dp"``, ``"tp"`` or ``"fsdp"``.
        state_shardings: NamedShardings of ``nnx.state(modules)``.
        batch_sharding: the tokens' sharding.
    """

    def __init__(self, function, modules, mesh, strategy, state_shardings, updates_state):
        self.mesh, self.strategy, self.state_shardings = mesh, strategy, state_shardings
        self.batch_sharding = batch_sharding(mesh)
        self._updates_state = updates_state
        self._count = len(modules)
        replicated = NamedSharding(mesh, P())
        # A step returns (loss, new state); a gradient, (loss, grads) laid out as the params.
        out = (replicated, state_shardings if updates_state else _only_params(state_shardings))
        self.jitted = jax.jit(
            function, in_shardings=(state_shardings, self.batch_sharding), out_shardings=out
        )

    def _arguments(self, args):
        if len(args) != self._count + 1:
            raise TypeError(
                f"expected {self._count} module(s) and tokens, got {len(args)} arguments"
            )
        *modules, tokens = args
        tokens = jnp.asarray(tokens)
        rows = self.mesh.shape[DATA]
        if tokens.ndim != 2 or tokens.shape[0] % rows:
            raise ValueError(
                f"tokens must be windows [B, T + 1] with B divisible by the mesh's "
                f"'data' axis ({rows}), got shape {tokens.shape}"
            )
        state = jax.device_put(nnx.state(tuple(modules)), self.state_shardings)
        return tuple(modules), state, jax.device_put(tokens, self.batch_sharding)

    def __call__(self, *args):
        modules, state, tokens = self._arguments(args)
        out = self.jitted(state, tokens)
        if self._updates_state:
            out, new_state = out
            nnx.update(modules, new_state)
        return out

    def lower(self, *args) -> jax.stages.Lowered:
        _, state, tokens = self._arguments(args)
        return self.jitted.lower(state, tokens)


def _only_params(shardings: nnx.State) -> nnx.State:
    """The shardings of the model's parameters (entry 0 of a (model,) state), as a state of
    the model alone: the layout of its gradients."""
    return nnx.from_flat_state([(p[1:], s) for p, s in nnx.to_flat_state(shardings)])


def make_sharded_train_step(
    model: gpt.GPT,
    optimizer: nnx.Optimizer,
    mesh: Mesh,
    strategy: str,
    *,
    max_grad_norm: float = 1.0,
    end_id: int = -1,
) -> ShardedStep:
    """:func:`genlab.gpt.train_step` as one program over ``mesh``: ``step(model, optimizer,
    tokens [B, T + 1]) -> loss`` (float32 scalar, replicated), updating both in place.

    The parameters and the optimizer state are laid out by ``strategy`` (see
    :func:`partition_spec`) on the way in and come out with the same layout; the batch is
    split over ``"data"``. XLA's SPMD partitioner adds the collectives the layout needs, so
    the loss and the update equal the one-device step's up to float rounding (sums in
    another order).
    """
    shardings = _numbered(
        param_shardings(model, mesh, strategy),
        optimizer_shardings(optimizer, model, mesh, strategy),
    )
    graphdef = nnx.graphdef((model, optimizer))

    def step(state, tokens):
        model, optimizer = nnx.merge(graphdef, state)
        loss = gpt.train_step(model, optimizer, tokens, max_grad_norm, end_id)
        return loss, nnx.state((model, optimizer))

    return ShardedStep(step, (model, optimizer), mesh, strategy, shardings, updates_state=True)


def make_sharded_value_and_grad(
    model: gpt.GPT, mesh: Mesh, strategy: str, *, remat: bool = False
) -> ShardedStep:
    """:func:`gpt_loss` and its gradient as one program over ``mesh``: ``fn(model, tokens
    [B, T + 1]) -> (loss, grads)``, ``grads`` an ``nnx.State`` like ``nnx.state(model)``
    laid out as the parameters are: under ``"fsdp"`` each device keeps its slice of the
    summed gradient (a reduce-scatter in principle; XLA's CPU backend, jaxlib 0.10, all-reduces
    the whole gradient and slices it), under ``"dp"`` every device gets all of it.

    With ``remat=True`` the loss is :func:`gpt_loss` with rematerialised blocks.
    """
    shardings = _numbered(param_shardings(model, mesh, strategy))
    graphdef = nnx.graphdef((model,))

    def value_and_grad(state, tokens):
        (model,) = nnx.merge(graphdef, state)
        return nnx.value_and_grad(lambda m: gpt_loss(m, tokens, remat=remat))(model)

    return ShardedStep(value_and_grad, (model,), mesh, strategy, shardings, updates_state=False)


# --- 3. collectives --------------------------------------------------------------------------

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
# An HLO instruction: "%name = <shape> <opcode>(<operands>), attributes". Shapes hold no "=",
# so the opcode is the word before the first "(" after the "=". Async collectives appear as a
# "-start"/"-done" pair: the start is counted.
_INSTRUCTION = re.compile(  # after the /*...*/ comments are removed
    r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*[^=]*?\s(?P<op>[a-z][a-z\-]*)\(", re.MULTILINE
)


def collective_counts(compiled_or_hlo) -> dict[str, int]:
    """How many instructions of each collective kind a compiled XLA program holds.

    Counted from the optimised HLO text (``jitted.lower(...).compile().as_text()``): each
    instruction whose opcode is ``all-reduce``, ``all-gather``, ``reduce-scatter``,
    ``all-to-all`` or ``collective-permute`` (or the ``-start`` half of their asynchronous
    form) counts once, wherever it sits (a loop body's collective counts once, however often
    the loop runs); instruction names such as ``%all-reduce.3`` used as operands do not count.

    Args:
        compiled_or_hlo: a ``jax.stages.Compiled`` or its HLO text (str).

    Returns:
        ``{"all-reduce": n, "all-gather": n, "reduce-scatter": n, "all-to-all": n,
        "collective-permute": n}``.
    """
    if isinstance(compiled_or_hlo, jax.stages.Lowered):
        raise TypeError(
            "collective_counts: pass lowered.compile() (or its .as_text()), not "
            "the Lowered program: collectives are inserted when it compiles"
        )
    if isinstance(compiled_or_hlo, jax.stages.Compiled):
        text = compiled_or_hlo.as_text()
    elif isinstance(compiled_or_hlo, str):
        text = compiled_or_hlo
    else:
        raise TypeError(
            f"collective_counts: expected a jax.stages.Compiled or HLO text, got "
            f"{type(compiled_or_hlo).__name__}"
        )
    counts = dict.fromkeys(COLLECTIVES, 0)
    text = re.sub(r"/\*.*?\*/", "", text)  # comments such as /*index=5*/ in tuple shapes
    for match in _INSTRUCTION.finditer(text):
        op = match["op"].removesuffix("-start")
        if op in counts:
            counts[op] += 1
    return counts


# --- 4. memory -------------------------------------------------------------------------------


def bytes_per_device(tree) -> dict[int, int]:
    """Bytes each device holds of the arrays in ``tree``, summed over their shards.

    Args:
        tree: an ``nnx.Module`` (its ``nnx.state``), an ``nnx.State`` or any pytree of
            ``jax.Array`` leaves.

    Returns:
        ``{device id: bytes}`` over every device that holds a shard, from each array's
        ``addressable_shards`` (a replicated array counts fully on every device).
    """
    if isinstance(tree, nnx.Module | nnx.Optimizer):
        tree = nnx.state(tree)
    totals: dict[int, int] = {}
    for leaf in jax.tree.leaves(tree):
        if not isinstance(leaf, jax.Array):
            raise TypeError(
                f"bytes_per_device: every leaf must be a jax.Array, got {type(leaf).__name__}"
            )
        for shard in leaf.addressable_shards:
            totals[shard.device.id] = totals.get(shard.device.id, 0) + shard.data.nbytes
    return dict(sorted(totals.items()))


_MEMORY_FIELDS = {
    "argument": "argument_size_in_bytes",
    "output": "output_size_in_bytes",
    "alias": "alias_size_in_bytes",
    "temp": "temp_size_in_bytes",
    "generated_code": "generated_code_size_in_bytes",
    "peak": "peak_memory_in_bytes",
}


def compiled_memory(compiled: jax.stages.Compiled) -> dict[str, int]:
    """XLA's memory plan for one device of a compiled program, in bytes.

    Keys: ``argument`` (inputs), ``output``, ``alias`` (outputs written over donated inputs),
    ``temp`` (scratch space: activations kept for the backward pass live here),
    ``generated_code`` and ``peak``. jaxlib 0.10 on CPU reports all six, but there
    ``generated_code`` is 0 and ``peak`` is about ``argument + output`` whatever the scratch
    space (measured), so read ``temp`` for activations. A field this jaxlib does not report
    is left out.

    Raises:
        ValueError: the backend returns no memory analysis.
    """
    if not isinstance(compiled, jax.stages.Compiled):
        raise TypeError(
            f"compiled_memory: expected jitted.lower(...).compile(), got {type(compiled).__name__}"
        )
    stats = compiled.memory_analysis()
    if stats is None:
        raise ValueError(
            f"compiled_memory: the {jax.default_backend()} backend reports no memory analysis"
        )
    return {
        key: int(getattr(stats, field))
        for key, field in _MEMORY_FIELDS.items()
        if hasattr(stats, field)
    }


def remat_memory(model: gpt.GPT, tokens) -> dict[str, dict[str, int]]:
    """:func:`compiled_memory` of the loss-and-gradient program of ``model`` on windows
    ``tokens`` [B, T + 1] on one device, without and with rematerialisation.

    Returns:
        ``{"plain": {...}, "remat": {...}}``; ``temp`` is where the saved activations show.
    """
    mesh = make_mesh(1, 1)
    return {
        name: compiled_memory(
            make_sharded_value_and_grad(model, mesh, "dp", remat=remat)
            .lower(model, tokens)
            .compile()
        )
        for name, remat in (("plain", False), ("remat", True))
    }


# --- 5. scaling laws -------------------------------------------------------------------------


class ScalingLaw(NamedTuple):
    """``L(N, D) = E + A / N^alpha + B / D^beta`` (Hoffmann et al. 2022): E the irreducible
    loss, the two other terms what a finite model (N parameters) and finite data (D tokens)
    add. Chinchilla's fit: E 1.69, A 406.4, B 410.7, alpha 0.34, beta 0.28."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float


def _check_law(law) -> ScalingLaw:
    if not isinstance(law, ScalingLaw):
        raise TypeError(f"params must be a ScalingLaw(E, A, B, alpha, beta), got {law!r}")
    return law


def chinchilla_loss(N, D, params: ScalingLaw):
    """``E + A / N^alpha + B / D^beta`` for N parameters and D training tokens.

    Args:
        N, D: positive floats or arrays (broadcast together).
        params: a :class:`ScalingLaw`.

    Returns:
        the loss, float, shaped like ``N`` and ``D`` broadcast.
    """
    law = _check_law(params)
    N, D = jnp.asarray(N, jnp.float32), jnp.asarray(D, jnp.float32)
    return law.E + law.A / N**law.alpha + law.B / D**law.beta


def _log_law(theta, log_n, log_d):
    """log L for theta = (log A, log B, log E, alpha, beta): a log-sum-exp of the three
    terms, which stays finite for any theta."""
    a, b, e, alpha, beta = theta
    terms = jnp.stack(jnp.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e))  # (3, K)
    return jax.scipy.special.logsumexp(terms, axis=0)  # (K,)


def _initial_grid() -> jax.Array:
    """Starting points (log A, log B, log E, alpha, beta), a grid like Hoffmann et al.'s."""
    axes = (
        jnp.array([0.0, 5.0, 10.0, 15.0, 20.0]),
        jnp.array([0.0, 5.0, 10.0, 15.0, 20.0]),
        jnp.array([-1.0, 0.0, 1.0]),
        jnp.array([0.2, 0.5, 0.8]),
        jnp.array([0.2, 0.5, 0.8]),
    )
    return jnp.stack([g.ravel() for g in jnp.meshgrid(*axes, indexing="ij")], axis=1)  # (K0, 5)


@partial(jax.jit, static_argnames=("steps",))
def _fit(starts, log_n, log_d, log_loss, delta, steps):
    def objective(theta):
        residual = _log_law(theta, log_n, log_d) - log_loss  # (K,)
        return jnp.sum(optax.huber_loss(residual, delta=delta))

    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def run(theta):
        def step(carry, _):
            theta, state = carry
            value, grad = value_and_grad(theta, state=state)
            updates, state = solver.update(
                grad, state, theta, value=value, grad=grad, value_fn=objective
            )
            return (optax.apply_updates(theta, updates), state), None

        (theta, _), _ = jax.lax.scan(step, (theta, solver.init(theta)), None, length=steps)
        return theta, objective(theta)

    return jax.vmap(run)(starts)  # (K0, 5), (K0,)


def fit_scaling_law(N, D, losses, *, delta: float = 1e-3, steps: int = 100) -> ScalingLaw:
    """Fit :class:`ScalingLaw` to measured losses as Hoffmann et al. (2022, section 3.3) do.

    Minimises ``sum_i Huber_delta(log L_hat(N_i, D_i) - log L_i)`` over (log A, log B,
    log E, alpha, beta), ``log L_hat`` the log-sum-exp of the three terms' logs, with
    L-BFGS (``optax.lbfgs``, ``steps`` iterations) from each point of a grid of 675 starts
    (log A and log B in {0, 5, ..., 20}, log E in {-1, 0, 1}, alpha and beta in
    {0.2, 0.5, 0.8}), all at once under ``vmap``; the best fit wins. The Huber loss (delta
    1e-3 in log loss) keeps a few bad runs from pulling the fit.

    Args:
        N, D, losses: positive floats [K], K >= 5 points (five unknowns), with at least two
            distinct N and two distinct D.

    Returns:
        the fitted :class:`ScalingLaw` (Python floats).
    """
    N, D, losses = (np.asarray(x, np.float64).reshape(-1) for x in (N, D, losses))
    if not N.shape == D.shape == losses.shape:
        raise ValueError(
            f"N, D and losses must have the same length, got {N.shape}, {D.shape}, {losses.shape}"
        )
    if N.size < 5:
        raise ValueError(f"fit_scaling_law needs at least 5 points (5 unknowns), got {N.size}")
    for name, x in (("N", N), ("D", D), ("losses", losses)):
        if not np.all(np.isfinite(x) & (x > 0)):
            raise ValueError(f"{name} must hold positive finite values")
    if len(np.unique(N)) < 2 or len(np.unique(D)) < 2:
        raise ValueError("N and D must each take at least two distinct values")
    _check_positive_int("steps", steps)
    theta, objective = _fit(
        _initial_grid(),
        jnp.asarray(np.log(N), jnp.float32),
        jnp.asarray(np.log(D), jnp.float32),
        jnp.asarray(np.log(losses), jnp.float32),
        delta,
        steps,
    )
    objective = np.where(np.isfinite(objective), objective, np.inf)
    a, b, e, alpha, beta = np.asarray(theta[int(np.argmin(objective))], np.float64)
    return ScalingLaw(
        float(np.exp(e)), float(np.exp(a)), float(np.exp(b)), float(alpha), float(beta)
    )


def compute_optimal(C, params: ScalingLaw):
    """The model size and token count that minimise :func:`chinchilla_loss` at compute C.

    With C = 6 N D FLOPs (6 per parameter per token: 2 forward, 4 backward), set D = C / (6N)
    and solve dL/dN = 0: ``N_opt = G (C/6)^(beta/(alpha+beta))`` and
    ``D_opt = (C/6)^(alpha/(alpha+beta)) / G``, with ``G = (alpha A / (beta B))^(1/(alpha +
    beta))``.

    Args:
        C: positive float or array, compute in FLOPs.
        params: a :class:`ScalingLaw`.

    Returns:
        (N_opt, D_opt), float64 NumPy arrays shaped like ``C``.

    Raises:
        ValueError: a law whose loss does not fall in both N and D (a fit to points where one
            of them does not matter can return alpha or beta <= 0), or C <= 0.
    """
    law = _check_law(params)
    if min(law.A, law.B, law.alpha, law.beta) <= 0:
        raise ValueError(
            f"compute_optimal needs A, B, alpha and beta > 0 (a loss falling in N and D), got {law}"
        )
    C = np.asarray(C, np.float64)
    if not np.all(np.isfinite(C) & (C > 0)):
        raise ValueError(f"C must be positive and finite, got {C}")
    s = law.alpha + law.beta
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1 / s)
    return g * (C / 6) ** (law.beta / s), (C / 6) ** (law.alpha / s) / g


def non_embedding_params(model: gpt.GPT) -> int:
    """N as Kaplan et al. (2020) count it: trainable parameters minus the token and position
    embeddings (the blocks and the final LayerNorm)."""
    _check_gpt(model)
    embeddings = model.wte.embedding[...].size + model.wpe.embedding[...].size
    return gpt.num_params(model) - embeddings


SCALING_DEFAULTS = {
    "block_size": 64,
    "batch_size": 16,
    "peak_lr": 3e-3,
    "warmup_fraction": 0.05,
    "weight_decay": 0.01,
    "seed": 0,
    "eval_windows": 64,
}


def _scaling_run(config: dict) -> tuple[gpt.GPT, int]:
    corpus = char_gpt.corpus()
    cfg = gpt.GPTConfig(
        vocab_size=corpus.tokenizer.vocab_size,
        block_size=config["block_size"],
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        d_model=config["d_model"],
    )
    batch, block, steps = config["batch_size"], config["block_size"], config["steps"]

    def train_model(model):
        warmup = max(1, int(config["warmup_fraction"] * steps))
        schedule = optax.warmup_cosine_decay_schedule(
            0.0,
            config["peak_lr"],
            warmup_steps=warmup,
            decay_steps=max(steps, warmup + 1),
            end_value=config["peak_lr"] / 10,
        )
        optimizer = nnx.Optimizer(
            model, optax.adamw(schedule, weight_decay=config["weight_decay"]), wrt=nnx.Param
        )
        key = jax.random.key(config["seed"] + 1)

        def windows(i):  # (B, T + 1) random windows of the training ids
            return data.batch_windows(
                jax.random.fold_in(key, i), corpus.train_ids, batch, block + 1
            )[0]

        train.fit(
            nnx.jit(gpt.train_step),
            model,
            optimizer,
            windows,
            steps,
            log_every=steps,
            desc=f"scaling point L={cfg.num_layers} D={cfg.d_model}, "
            f"{steps * batch * block} tokens",
        )

    model = model_cache.cached_model(
        "scaling-point",
        {**config, "vocab": corpus.tokenizer.vocab},
        lambda: gpt.GPT(cfg, rngs=nnx.Rngs(config["seed"])),
        train_model,
    )
    return model, steps * batch * block


def _held_out_windows(count: int, length: int) -> np.ndarray:
    """``count`` windows of ``length`` ids spread evenly over the held-out text: int32
    [count, length]."""
    val = char_gpt.corpus().val_ids
    starts = np.linspace(0, len(val) - length, count).astype(np.int64)
    return np.stack([val[s : s + length] for s in starts])


def train_scaling_point(
    num_layers: int, d_model: int, tokens: int, *, num_heads: int = 4, **overrides
) -> tuple[int, int, float]:
    """Train the course's character GPT (chapter 04's corpus, :mod:`genlab.char_gpt`) at one
    size and token budget and measure it; kept in :mod:`genlab.model_cache`.

    AdamW with linear warmup (5 % of the steps) and a cosine decay to a tenth of the peak
    learning rate over exactly this budget (each budget its own schedule, as in Hoffmann et
    al.; stopping a longer run early would not do), batch 16 windows of 64 characters.
    ``overrides`` change :data:`SCALING_DEFAULTS` (``block_size``, ``batch_size``,
    ``peak_lr``, ``warmup_fraction``, ``weight_decay``, ``seed``, ``eval_windows``).

    Args:
        num_layers, d_model, num_heads: the model's shape (num_heads divides d_model).
        tokens: the training budget; rounded down to whole steps of batch x block tokens
            (at least one step).

    Returns:
        (N, D, loss): N the non-embedding parameters (:func:`non_embedding_params`), D the
        tokens trained on, loss the mean cross-entropy in nats on ``eval_windows`` fixed
        windows of the held-out 10 %.
    """
    unknown = set(overrides) - set(SCALING_DEFAULTS)
    if unknown:
        raise ValueError(
            f"train_scaling_point: unknown settings {sorted(unknown)}; "
            f"known: {sorted(SCALING_DEFAULTS)}"
        )
    config = {
        **SCALING_DEFAULTS,
        **overrides,
        "num_layers": num_layers,
        "d_model": d_model,
        "num_heads": num_heads,
    }
    for name in ("num_layers", "d_model", "num_heads", "block_size", "batch_size"):
        _check_positive_int(name, config[name])
    per_step = config["batch_size"] * config["block_size"]
    _check_positive_int("tokens", tokens)
    if tokens < per_step:
        raise ValueError(
            f"tokens ({tokens}) must cover at least one step of batch_size x "
            f"block_size = {per_step} tokens"
        )
    config["steps"] = tokens // per_step
    model, trained_on = _scaling_run(config)
    held_out = _held_out_windows(config["eval_windows"], config["block_size"] + 1)
    loss = float(nnx.jit(gpt_loss)(model, jnp.asarray(held_out)))
    return non_embedding_params(model), trained_on, loss


# --- 6. inference ----------------------------------------------------------------------------


def kv_cache_bytes(config: gpt.GPTConfig, batch: int, context: int, dtype=jnp.float32) -> int:
    """Bytes of a KV cache: keys and values (2) of every layer for B sequences of T tokens,
    D numbers per token (H heads x D_h): ``2 x layers x B x T x D x bytes per number``.

    Args:
        config: a :class:`genlab.gpt.GPTConfig`.
        batch: B >= 1. context: T >= 1 (cached positions). dtype: the cache's dtype.

    Returns:
        int, e.g. GPT-2 small at B 1, T 1024, float32: 75,497,472 (72 MiB).
    """
    if not isinstance(config, gpt.GPTConfig):
        raise TypeError(f"config must be a genlab.gpt.GPTConfig, got {type(config).__name__}")
    batch = _check_positive_int("batch", batch)
    context = _check_positive_int("context", context)
    itemsize = jnp.dtype(dtype).itemsize
    return 2 * config.num_layers * batch * context * config.d_model * itemsize


def generation_throughput(
    model: gpt.GPT,
    batch_sizes: Sequence[int],
    *,
    key,
    prompt_length: int = 8,
    num_new_tokens: int = 32,
) -> dict[int, float]:
    """New tokens per second of :func:`genlab.gpt.generate` (KV cache, one ``lax.scan``) for
    each batch size B: B x num_new_tokens / seconds of one call, timed after a first call
    that compiles. Prompts are token 0 repeated [B, prompt_length]; the key is reused.

    Returns:
        ``{B: tokens per second}``.
    """
    _check_gpt(model)
    if not batch_sizes:
        raise ValueError("batch_sizes must name at least one batch size")
    rates = {}
    for batch in batch_sizes:
        batch = _check_positive_int("batch size", batch)
        prompt = jnp.zeros((batch, prompt_length), jnp.int32)  # (B, T0)
        gpt.generate(model, key, prompt, num_new_tokens).block_until_ready()  # compiles
        start = time.perf_counter()
        gpt.generate(model, key, prompt, num_new_tokens).block_until_ready()
        rates[batch] = batch * num_new_tokens / (time.perf_counter() - start)
    return rates
