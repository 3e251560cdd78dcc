"""Trained models kept between runs: train a deterministic model once, load it afterwards.

Several chapters use the same small models trained the same way every time (the digit classifier
that scores generated digits, the character GPT). :func:`cached_model` trains such a model the
first time and saves its ``nnx.state`` to an ``.npz`` file; later calls (in any process) load it
in milliseconds. The file name is a hash of everything that decides the weights:

- the model's ``name`` and its training ``config`` (a JSON-able dict: sizes, steps, seed, ...);
- the code of the module that builds and trains it, as Python parses it (edit the training code
  and the old entry is never loaded again; comments and layout do not count);
- the versions of ``genlab``, ``jax``, ``jaxlib``, ``flax`` and ``optax``, JAX's backend (cpu,
  gpu, tpu) and the ``XLA_FLAGS`` that change code generation (XLA's CPU emitters round
  differently, and a thousand training steps end elsewhere). All but the CPU device count, which
  follows the cores a process may use and does not change a one-device training run (no cached
  model trains data-parallel; one that does should put its device count in its ``config``).

Where: ``GENLAB_MODEL_CACHE`` names the folder (``0`` turns the cache off: every call trains);
unset, it is ``~/.cache/genlab/models``. A folder that cannot be written (a grading sandbox) is
still read; a missing, unreadable or mismatched entry is trained again, never trusted blindly:
the arrays are read with ``allow_pickle=False`` and must match the model's own shapes and dtypes.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
import json
import os
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, every process trains for itself
    fcntl = None

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genlab import DEVICES_FLAG, runtime

CACHE_ENV = "GENLAB_MODEL_CACHE"
_SAVED = nnx.Not(nnx.RngState)  # weights and statistics; random-stream counters are not kept


def cache_dir(environ: dict[str, str] | None = None) -> Path | None:
    """The model cache folder, or None when ``GENLAB_MODEL_CACHE=0`` turns it off."""
    return runtime.cache_folder(CACHE_ENV, "models", environ)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def numerics_flags(environ: dict[str, str] | None = None) -> list[str]:
    """The ``XLA_FLAGS`` that decide a trained model's rounding: all but the CPU device count."""
    env = os.environ if environ is None else environ
    flags = env.get("XLA_FLAGS", "").split()
    return sorted(f for f in flags if f.split("=")[0] != DEVICES_FLAG)


def code_digest(source: str) -> str:
    """A hash of Python ``source`` as it parses: the same for a change of comments or layout,
    different for any change of code (docstrings included)."""
    return hashlib.sha256(ast.dump(ast.parse(source)).encode()).hexdigest()


def cache_key(name: str, config: dict, code: str, environ: dict[str, str] | None = None) -> str:
    """The hash naming a cache entry (see the module docstring for what goes in)."""
    from genlab import __version__

    packages = ("jax", "jaxlib", "flax", "optax")
    payload = json.dumps(
        {
            "name": name,
            "config": config,
            "code": code_digest(code),
            "versions": [__version__, *map(_version, packages)],
            "backend": jax.default_backend(),
            "xla_flags": numerics_flags(environ),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _flat_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    flat = nnx.to_flat_state(nnx.state(model, _SAVED))
    return {"/".join(map(str, path)): np.asarray(leaf.get_value()) for path, leaf in flat}


def save_model(model: nnx.Module, path: Path) -> None:
    """Write ``model``'s state to ``path`` (``.npz``), atomically (a reader never sees half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **_flat_arrays(model))
        os.chmod(temporary, 0o644)  # readable by the grading sandbox's user, like any cache file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_into(model: nnx.Module, path: Path) -> bool:
    """Fill ``model``'s variables from ``path``; False (model untouched) if the file does not
    hold exactly the model's variables with the same shapes and dtypes."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, EOFError):
        return False
    flat = nnx.to_flat_state(nnx.state(model, _SAVED))
    if set(arrays) != {"/".join(map(str, p)) for p, _ in flat}:
        return False
    updates = []
    for path_, leaf in flat:
        value, want = arrays["/".join(map(str, path_))], leaf.get_value()
        if value.shape != want.shape or value.dtype != np.dtype(want.dtype):
            return False
        updates.append((path_, jnp.asarray(value)))
    nnx.update(model, nnx.from_flat_state(updates))
    return True


def cached_model(
    name: str,
    config: dict,
    build: Callable[[], nnx.Module],
    train: Callable[[nnx.Module], None],
    *,
    environ: dict[str, str] | None = None,
) -> nnx.Module:
    """``build()`` a model and load its trained weights from the cache, or ``train`` it and save.

    Args:
        name: the model's name (part of the key and of the file name).
        config: everything else that decides the trained weights (JSON-able).
        build: returns a freshly initialised model (its structure decides what a valid entry is).
        train: trains that model in place, deterministically.

    The code of ``train``'s module is part of the key, so editing the training code retrains
    (reformatting it does not). Returns the trained model.
    """
    model = build()
    folder = cache_dir(environ)
    code = inspect.getsource(sys.modules[train.__module__])
    path = (
        None if folder is None else folder / f"{name}-{cache_key(name, config, code, environ)}.npz"
    )
    if path is not None and path.is_file() and load_into(model, path):
        return model
    with _training_lock(path):
        # Another process may have trained this entry while we waited for the lock.
        if path is not None and path.is_file() and load_into(model, path):
            return model
        train(model)
        if path is not None:
            try:
                save_model(model, path)
            except OSError:
                pass  # a read-only cache (the grading sandbox) keeps working, it only does not fill
    return model


@contextlib.contextmanager
def _training_lock(path: Path | None):
    """Hold an exclusive lock next to the entry while training it, so processes that need the
    same model at once (parallel test workers, a class's kernels) train it once: the others wait,
    then load. Where the folder is read-only or locks are unsupported, train without one."""
    if path is None or fcntl is None:
        yield
        return
    try:
        handle = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 (closed below)
    except OSError:
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
