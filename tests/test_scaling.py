"""Tests of genlab.scaling: sharding (in one 8-device subprocess), collectives, memory,
rematerialisation, scaling-law fits, the KV cache's size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, NamedSharding
from jax.sharding import PartitionSpec as P

from genlab import DEVICES_FLAG, char_gpt, gpt, scaling

WORKER = Path(__file__).with_name("scaling_worker.py")
CHINCHILLA = scaling.ScalingLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
two_devices = pytest.mark.skipif(
    jax.device_count() < 2, reason="needs 2 JAX devices (GENLAB_CPU_DEVICES=1 gives one)"
)


# --- the 8-device checks, one subprocess -----------------------------------------------------


@pytest.fixture(scope="module")
def eight_devices() -> dict:
    """tests/scaling_worker.py's JSON, run with 8 simulated CPU devices."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if f.split("=")[0] != DEVICES_FLAG]
    env["XLA_FLAGS"] = " ".join([*flags, f"{DEVICES_FLAG}=8"])
    done = subprocess.run(
        [sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == 8
    return result


@pytest.mark.parametrize("strategy", scaling.STRATEGIES)
def test_make_sharded_value_and_grad_matches_one_device(eight_devices, strategy):
    run = eight_devices["strategies"][strategy]
    assert run["loss_error"] < 1e-5
    assert run["grad_worst_ratio"] <= 1.0  # every gradient allclose(rtol 1e-5, atol 1e-6)


@pytest.mark.parametrize("strategy", scaling.STRATEGIES)
def test_make_sharded_train_step_matches_one_device(eight_devices, strategy):
    run = eight_devices["strategies"][strategy]
    assert run["step_loss_error"] < 1e-5
    assert run["params_worst_ratio"] <= 1.0  # updated parameters, same tolerance


def test_make_sharded_train_step_collectives_follow_the_layout(eight_devices):
    runs = eight_devices["strategies"]
    gathers = ("all-gather", "all-to-all", "collective-permute")
    # DP: weights replicated, gradients summed over the batch shards: all-reduce, nothing else.
    assert runs["dp"]["grad_collectives"]["all-reduce"] >= 1
    assert all(runs["dp"]["grad_collectives"][op] == 0 for op in gathers)
    # TP: each row-split matmul (attention output, MLP second layer) sums partial products:
    # two all-reduces per layer forward, at least as many again backward.
    assert runs["tp"]["grad_collectives"]["all-reduce"] >= 4
    # FSDP: the weights are gathered before use.
    assert runs["fsdp"]["grad_collectives"]["all-gather"] >= 1
    for run in runs.values():  # the step adds the optimizer's and the clipping's reductions
        assert run["step_collectives"]["all-reduce"] >= run["grad_collectives"]["all-reduce"]


def test_bytes_per_device_splits_under_fsdp_and_tp(eight_devices):
    total, runs = eight_devices["param_bytes"], eight_devices["strategies"]
    assert runs["dp"]["param_bytes_per_device"] == [total] * 8
    # Every dimension of the tiny GPT divides by 8: each device holds exactly an eighth.
    assert runs["fsdp"]["param_bytes_per_device"] == [total // 8] * 8
    assert (
        runs["fsdp"]["optimizer_bytes_per_device"][0]
        < runs["dp"]["optimizer_bytes_per_device"][0] / 7.9
    )  # momentum split like the weights; the step count replicated
    # TP over 4: the split matrices take a quarter, embeddings and LayerNorms stay whole.
    assert total / 4 < runs["tp"]["param_bytes_per_device"][0] < total / 2
    assert runs["fsdp"]["fc_kernel_spec"] == "P(None, 'data')"  # [D, 4D]: the 4D axis
    assert runs["tp"]["fc_kernel_spec"] == "P(None, 'model')"
    assert all(run["grad_fc_kernel_spec"] == run["fc_kernel_spec"] for run in runs.values())


# --- layouts -----------------------------------------------------------------------------------


def test_partition_spec_tensor_parallel_is_megatron():
    mesh = AbstractMesh((2, 4), ("data", "model"))

    def spec(*path, shape):
        return scaling.partition_spec(("blocks", 0, *path), shape, "tp", mesh, num_heads=8)

    assert spec("attn", "query", "kernel", shape=(64, 64)) == P(None, "model")
    assert spec("attn", "value", "bias", shape=(64,)) == P("model")
    assert spec("attn", "out", "kernel", shape=(64, 64)) == P("model", None)
    assert spec("attn", "out", "bias", shape=(64,)) == P()
    assert spec("mlp", "fc", "kernel", shape=(64, 256)) == P(None, "model")
    assert spec("mlp", "proj", "kernel", shape=(256, 64)) == P("model", None)
    assert spec("ln_1", "scale", shape=(64,)) == P()
    moment = ("opt_state", 0, "mu", "blocks", 0, "mlp", "fc", "kernel")
    assert scaling.partition_spec(moment, (64, 256), "tp", mesh, num_heads=8) == P(None, "model")


def test_partition_spec_fsdp_takes_largest_divisible_axis():
    mesh = AbstractMesh((4, 1), ("data", "model"))
    assert scaling.partition_spec(("w",), (64, 256), "fsdp", mesh) == P(None, "data")
    assert scaling.partition_spec(("w",), (65, 8), "fsdp", mesh) == P(None, "data")
    assert scaling.partition_spec(("w",), (32, 32), "fsdp", mesh) == P("data", None)
    assert scaling.partition_spec(("count",), (), "fsdp", mesh) == P()
    assert scaling.partition_spec(("w",), (3, 5), "fsdp", mesh) == P()
    assert scaling.partition_spec(("w",), (64, 256), "dp", mesh) == P()


def test_partition_spec_rejects_a_model_axis_that_does_not_divide():
    mesh = AbstractMesh((1, 4), ("data", "model"))
    with pytest.raises(ValueError, match=r"heads H = 6"):
        scaling.partition_spec(("attn", "query", "kernel"), (48, 48), "tp", mesh, num_heads=6)
    with pytest.raises(ValueError, match=r"size 4.*mlp/fc/kernel.*\(8, 6\)"):
        scaling.partition_spec(("mlp", "fc", "kernel"), (8, 6), "tp", mesh, num_heads=4)
    with pytest.raises(ValueError, match="strategy"):
        scaling.partition_spec(("w",), (4,), "zero", mesh)


def test_make_mesh_rejects_more_devices_than_exist():
    with pytest.raises(ValueError, match=r"data \* model"):
        scaling.make_mesh(jax.device_count() + 1, 1)
    with pytest.raises(ValueError, match="data"):
        scaling.make_mesh(0, 1)


# --- collectives -------------------------------------------------------------------------------

# Optimised HLO as XLA prints it: a combined (tuple) all-reduce whose shape holds /*index=5*/
# comments, an asynchronous all-gather (start and done), instruction names used as operands, a
# reduce-scatter and a ROOT collective-permute.
HLO = """\
HloModule jit_step, is_scheduled=true, entry_computation_layout={(f32[8]{0})->f32[8]{0}}

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %add = f32[] add(%x, %y)
}

ENTRY %main (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0), sharding={devices=[2]<=[2]}
  %all-reduce.7 = (f32[], f32[4]{0}, f32[4]{0}, f32[4]{0}, f32[4]{0}, /*index=5*/f32[4]{0}) all-reduce(f32[] %c, f32[4]{0} %p, f32[4]{0} %p, f32[4]{0} %p, f32[4]{0} %p, /*index=5*/f32[4]{0} %p), channel_id=1, replica_groups=[1,2]<=[2], to_apply=%add
  %gte = f32[4]{0} get-tuple-element(%all-reduce.7), index=1
  %all-gather-start = (f32[4]{0}, f32[8]{0}) all-gather-start(f32[4]{0} %gte), channel_id=2, replica_groups=[1,2]<=[2], dimensions={0}
  %all-gather-done = f32[8]{0} all-gather-done((f32[4]{0}, f32[8]{0}) %all-gather-start)
  %copy.all-reduce = f32[8]{0} copy(f32[8]{0} %all-gather-done)
  %reduce-scatter.1 = f32[4]{0} reduce-scatter(f32[8]{0} %copy.all-reduce), channel_id=3, replica_groups=[1,2]<=[2], dimensions={0}, to_apply=%add
  ROOT %collective-permute = f32[8]{0} collective-permute(f32[8]{0} %all-gather-done), channel_id=4, source_target_pairs={{0,1},{1,0}}
}
"""  # noqa: E501 (XLA's own line lengths)


def test_collective_counts_counts_instructions_not_names():
    assert scaling.collective_counts(HLO) == {
        "all-reduce": 1,
        "all-gather": 1,
        "reduce-scatter": 1,
        "all-to-all": 0,
        "collective-permute": 1,
    }


@two_devices
def test_collective_counts_row_split_matmul_needs_one_all_reduce():
    mesh = scaling.make_mesh(1, 2)
    x, w = jnp.ones((8, 16)), jnp.ones((16, 4))

    def compiled(x_spec, w_spec, out_spec):
        shard = [NamedSharding(mesh, s) for s in (x_spec, w_spec, out_spec)]
        matmul = jax.jit(jnp.matmul, in_shardings=shard[:2], out_shardings=shard[2])
        return matmul.lower(x, w).compile()

    rows = scaling.collective_counts(compiled(P(None, "model"), P("model", None), P()))
    assert rows == {**dict.fromkeys(scaling.COLLECTIVES, 0), "all-reduce": 1}
    columns = scaling.collective_counts(compiled(P(), P(None, "model"), P(None, "model")))
    assert columns == dict.fromkeys(scaling.COLLECTIVES, 0)


def test_collective_counts_rejects_a_lowered_program():
    lowered = jax.jit(jnp.sin).lower(jnp.ones(3))
    with pytest.raises(TypeError, match="compile"):
        scaling.collective_counts(lowered)


# --- memory ------------------------------------------------------------------------------------


@two_devices
def test_bytes_per_device_counts_shards():
    mesh = scaling.make_mesh(2, 1)
    split = jax.device_put(jnp.ones((4, 6)), NamedSharding(mesh, P("data", None)))
    whole = jax.device_put(jnp.ones(5, jnp.int8), NamedSharding(mesh, P()))
    ids = [d.id for d in mesh.devices.ravel()]
    assert scaling.bytes_per_device({"a": split, "b": whole}) == {ids[0]: 53, ids[1]: 53}
    with pytest.raises(TypeError, match="jax.Array"):
        scaling.bytes_per_device([np.ones(3)])


def test_compiled_memory_counts_arguments_and_outputs():
    compiled = jax.jit(lambda x, y: (x * 2, y.sum())).lower(jnp.ones(1000), jnp.ones(24)).compile()
    memory = scaling.compiled_memory(compiled)
    assert memory["argument"] == 4 * (1000 + 24)
    assert memory["output"] >= 4 * (1000 + 1)  # plus the output tuple's table of pointers
    assert memory["output"] < 4 * (1000 + 1) + 64
    with pytest.raises(TypeError, match="compile"):
        scaling.compiled_memory(jax.jit(jnp.sin).lower(jnp.ones(3)))


@pytest.fixture(scope="module")
def deep_model():
    cfg = gpt.GPTConfig(vocab_size=16, block_size=16, num_layers=4, num_heads=2, d_model=16)
    tokens = jax.random.randint(jax.random.key(0), (4, 17), 0, 16)
    return gpt.GPT(cfg, rngs=nnx.Rngs(0)), tokens


def test_gpt_loss_remat_gives_same_loss_and_gradients(deep_model):
    model, tokens = deep_model
    mesh = scaling.make_mesh(1, 1)
    loss_0, grads_0 = scaling.make_sharded_value_and_grad(model, mesh, "dp")(model, tokens)
    fn = scaling.make_sharded_value_and_grad(model, mesh, "dp", remat=True)
    loss_1, grads_1 = fn(model, tokens)
    logits = gpt.make_logits_fn(model)(tokens[:, :-1])  # independent: optax's cross-entropy
    expected = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()
    np.testing.assert_allclose(loss_0, expected, rtol=1e-6)
    np.testing.assert_allclose(loss_1, loss_0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_1), jax.tree.leaves(grads_0), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_remat_memory_lowers_temp_bytes(deep_model):
    model, tokens = deep_model
    memory = scaling.remat_memory(model, tokens)
    assert memory["remat"]["temp"] < 0.7 * memory["plain"]["temp"]
    assert memory["remat"]["argument"] == memory["plain"]["argument"]


# --- scaling laws ------------------------------------------------------------------------------


def _grid():
    N, D = np.meshgrid(np.geomspace(1e6, 1e9, 6), np.geomspace(1e8, 1e11, 5))
    return N.ravel(), D.ravel()


def test_chinchilla_loss_is_the_closed_form():
    N, D = _grid()
    law = CHINCHILLA
    expected = law.E + law.A * N**-law.alpha + law.B * D**-law.beta
    np.testing.assert_allclose(scaling.chinchilla_loss(N, D, law), expected, rtol=1e-6)
    with pytest.raises(TypeError, match="ScalingLaw"):
        scaling.chinchilla_loss(N, D, (1.0, 2.0))


def test_fit_scaling_law_recovers_noiseless_and_noisy_laws():
    N, D = _grid()
    clean = np.asarray(scaling.chinchilla_loss(N, D, CHINCHILLA), np.float64)
    fit = scaling.fit_scaling_law(N, D, clean)
    np.testing.assert_allclose(fit, CHINCHILLA, rtol=2e-3)
    noisy = clean * np.exp(np.random.default_rng(0).normal(0, 0.005, clean.shape))  # 0.5 %
    fit = scaling.fit_scaling_law(N, D, noisy)
    assert abs(fit.alpha - CHINCHILLA.alpha) < 0.03 and abs(fit.beta - CHINCHILLA.beta) < 0.03
    assert abs(fit.E - CHINCHILLA.E) < 0.1
    np.testing.assert_allclose(scaling.chinchilla_loss(N, D, fit), clean, rtol=0.01)


def test_fit_scaling_law_rejects_too_few_points():
    with pytest.raises(ValueError, match="at least 5"):
        scaling.fit_scaling_law([1e6] * 4, [1e9] * 4, [3.0] * 4)
    with pytest.raises(ValueError, match="losses"):
        scaling.fit_scaling_law(*_grid(), -np.ones(30))


def test_compute_optimal_matches_brute_force():
    for law in (CHINCHILLA, scaling.ScalingLaw(E=0.5, A=30.0, B=900.0, alpha=0.5, beta=0.3)):
        for C in (1e18, 1e22):
            N_opt, D_opt = scaling.compute_optimal(C, law)
            np.testing.assert_allclose(6 * N_opt * D_opt, C, rtol=1e-9)
            N = np.geomspace(N_opt / 100, N_opt * 100, 200_001)
            loss = law.E + law.A * N**-law.alpha + law.B * (C / (6 * N)) ** -law.beta
            np.testing.assert_allclose(N_opt, N[np.argmin(loss)], rtol=1e-3)
    with pytest.raises(ValueError, match="alpha"):
        scaling.compute_optimal(1e20, CHINCHILLA._replace(alpha=-0.01))


def test_train_scaling_point_counts_and_caches():
    args = dict(num_layers=1, d_model=16, tokens=8 * 16 * 12, num_heads=2)
    settings = dict(block_size=16, batch_size=8, eval_windows=8)
    N, D, loss = scaling.train_scaling_point(**args, **settings)
    d = 16  # a block: 12 D^2 + 13 D (q, k, v, out, MLP, two LayerNorms); final LayerNorm 2 D
    assert N == 12 * d * d + 13 * d + 2 * d
    assert D == 8 * 16 * 12
    vocab = char_gpt.corpus().tokenizer.vocab_size
    assert 0 < loss < np.log(vocab)  # better than uniform after 12 steps
    assert scaling.train_scaling_point(**args, **settings) == (N, D, loss)  # from the cache
    with pytest.raises(ValueError, match="at least one step"):
        scaling.train_scaling_point(1, 16, 100, num_heads=2, **settings)


# --- inference ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layers", "heads", "width", "dtype"),
    [(1, 1, 8, jnp.float32), (3, 4, 32, jnp.float32), (2, 2, 16, jnp.bfloat16)],
)
def test_kv_cache_bytes_matches_init_cache(layers, heads, width, dtype):
    cfg = gpt.GPTConfig(
        vocab_size=8, block_size=32, num_layers=layers, num_heads=heads, d_model=width
    )
    cache = gpt.init_cache(cfg, 3, 20, dtype)
    assert scaling.kv_cache_bytes(cfg, 3, 20, dtype) == sum(
        a.nbytes for a in jax.tree.leaves(cache)
    )


def test_kv_cache_bytes_gpt2_small():
    assert scaling.kv_cache_bytes(gpt.GPTConfig.gpt2_small(), 1, 1024) == 2 * 12 * 1024 * 768 * 4
    with pytest.raises(ValueError, match="context"):
        scaling.kv_cache_bytes(gpt.GPTConfig.gpt2_small(), 1, 0)


def test_generation_throughput_reports_each_batch_size():
    cfg = gpt.GPTConfig(vocab_size=8, block_size=16, num_layers=1, num_heads=1, d_model=8)
    model = gpt.GPT(cfg, rngs=nnx.Rngs(0))
    rates = scaling.generation_throughput(
        model, [3], key=jax.random.key(0), prompt_length=2, num_new_tokens=4
    )
    assert list(rates) == [3] and np.isfinite(rates[3]) and rates[3] > 0
    with pytest.raises(ValueError, match="batch"):
        scaling.generation_throughput(model, [], key=jax.random.key(0))
