"""genlab.model_cache: a trained model is saved once and loaded after; anything that decides the
weights changes the key; a bad entry is retrained, never trusted."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genlab import model_cache
from genlab.nn import MLP

CONFIG = {"sizes": [3, 5, 2], "seed": 0}


class Counter:
    """A deterministic 'training' that also counts how often it ran."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model):
        self.calls += 1
        for layer in model.layers:
            layer.kernel[...] = layer.kernel[...] * 2.0 + 1.0


def build():
    return MLP(CONFIG["sizes"], rngs=nnx.Rngs(CONFIG["seed"]))


def weights(model):
    return [np.asarray(x) for x in jax_leaves(model)]


def jax_leaves(model):
    return [leaf.get_value() for _, leaf in nnx.to_flat_state(nnx.state(model))]


def test_trains_once_then_loads_the_same_weights(tmp_path):
    env = {model_cache.CACHE_ENV: str(tmp_path)}
    train = Counter()
    first = model_cache.cached_model("toy", CONFIG, build, train, environ=env)
    second = model_cache.cached_model("toy", CONFIG, build, train, environ=env)
    assert train.calls == 1, "the second call must load, not train"
    for a, b in zip(weights(first), weights(second), strict=True):
        np.testing.assert_array_equal(a, b)
    x = jnp.ones((4, 3))
    np.testing.assert_array_equal(first(x), second(x))
    assert len(list(tmp_path.glob("toy-*.npz"))) == 1


def test_config_changes_the_key_and_off_means_always_train(tmp_path):
    env = {model_cache.CACHE_ENV: str(tmp_path)}
    train = Counter()
    model_cache.cached_model("toy", CONFIG, build, train, environ=env)
    model_cache.cached_model("toy", CONFIG | {"steps": 2}, build, train, environ=env)
    assert train.calls == 2
    off = {model_cache.CACHE_ENV: "0"}
    model_cache.cached_model("toy", CONFIG, build, train, environ=off)
    assert train.calls == 3
    assert model_cache.cache_dir(off) is None


def test_key_depends_on_the_training_code():
    assert model_cache.cache_key("toy", CONFIG, "a = 1") != model_cache.cache_key(
        "toy", CONFIG, "a = 2"
    )


def test_key_ignores_comments_and_layout_of_the_training_code():
    def key(code):
        return model_cache.cache_key("toy", CONFIG, code)

    plain = "def train(m):\n    m.w = m.w + 1\n"
    assert key(plain) == key("def train(m):  # one step\n\n    m.w = m.w+1\n")
    assert key(plain) != key("def train(m):\n    m.w = m.w + 2\n")
    assert key(plain) != key('def train(m):\n    """Add one."""\n    m.w = m.w + 1\n')


def test_key_depends_on_the_code_generation_flags_but_not_the_device_count():
    def key(flags):
        return model_cache.cache_key("toy", CONFIG, "a = 1", {"XLA_FLAGS": flags})

    emitters = "--xla_cpu_use_fusion_emitters=false"
    assert len({key(emitters), key("--xla_cpu_use_fusion_emitters=true"), key("")}) == 3
    # A sandbox pinned to one core runs with one device, the grader with two: same entry.
    assert key(f"--xla_force_host_platform_device_count=2 {emitters}") == key(emitters)
    assert key(f"{emitters} --xla_force_host_platform_device_count=8") == key(emitters)


@pytest.mark.parametrize("damage", ["garbage", "other_shapes", "pickle"])
def test_a_bad_entry_is_retrained_and_replaced(tmp_path, damage):
    env = {model_cache.CACHE_ENV: str(tmp_path)}
    train = Counter()
    good = model_cache.cached_model("toy", CONFIG, build, train, environ=env)
    (path,) = tmp_path.glob("toy-*.npz")
    if damage == "garbage":
        path.write_bytes(b"not an npz")
    elif damage == "other_shapes":
        np.savez(path, **{k: np.zeros(1) for k in np.load(path).files})
    else:
        np.savez(path, payload=np.array([object()], dtype=object))
    again = model_cache.cached_model("toy", CONFIG, build, train, environ=env)
    assert train.calls == 2, f"a {damage} entry must be retrained"
    np.testing.assert_array_equal(good(jnp.ones((1, 3))), again(jnp.ones((1, 3))))
    assert model_cache.load_into(build(), path), "the retrained entry replaces the bad one"


def test_entries_are_readable_by_others_and_an_unwritable_cache_only_costs_training(tmp_path):
    env = {model_cache.CACHE_ENV: str(tmp_path)}
    model_cache.cached_model("toy", CONFIG, build, Counter(), environ=env)
    (path,) = tmp_path.glob("toy-*.npz")
    assert os.stat(path).st_mode & 0o044 == 0o044, "the grading sandbox's user must read entries"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {model_cache.CACHE_ENV: str(blocker / "models")}  # cannot be created, even by root
    train = Counter()
    model = model_cache.cached_model("toy", CONFIG, build, train, environ=env)
    assert train.calls == 1 and model(jnp.ones((1, 3))).shape == (1, 2)


def _blocked_lock_waiters() -> int:
    """How many lock requests on this machine are waiting for another's lock (/proc/locks marks
    a blocked request with '->')."""
    with open("/proc/locks") as f:
        return sum("->" in line for line in f)


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux's /proc/locks")
def test_two_callers_at_once_train_the_model_once(tmp_path):
    """Parallel test workers (or a class's kernels) asking for the same model at the same moment:
    the first trains while holding the entry's lock, the second waits on it, then loads."""
    import threading

    env = {model_cache.CACHE_ENV: str(tmp_path)}
    calls, results = [], {}
    waiting_before = _blocked_lock_waiters()
    second_started = threading.Event()

    def first_training(model):
        calls.append("first")
        assert second_started.wait(60), "the second caller never started"
        # Train until the second caller is seen waiting for this entry's lock.
        for _ in range(30_000):  # up to about 30 s
            if _blocked_lock_waiters() > waiting_before:
                break
            threading.Event().wait(0.001)
        else:
            raise AssertionError("the second caller never waited for the lock")
        Counter()(model)

    def second_training(model):
        calls.append("second")
        Counter()(model)

    def ask(name, train):
        results[name] = model_cache.cached_model("toy", CONFIG, build, train, environ=env)

    first = threading.Thread(target=ask, args=("first", first_training))
    first.start()
    while not calls:  # the first caller holds the lock and is training
        threading.Event().wait(0.001)
    second = threading.Thread(target=ask, args=("second", second_training))
    second.start()
    second_started.set()
    first.join(120)
    second.join(120)
    assert calls == ["first"], calls
    for a, b in zip(weights(results["first"]), weights(results["second"]), strict=True):
        np.testing.assert_array_equal(a, b)
