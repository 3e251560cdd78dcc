"""Probes: the hidden tests' half that runs in the student's kernel, and the verdict outside it.

Every graded test cell ends with a hidden block of one call::

    ### BEGIN HIDDEN TESTS
    from genlab.probing import probe
    probe("00_jax_primer", "logsumexp", globals())
    ### END HIDDEN TESTS

``probe`` looks up the exercise's :class:`Probe` (in ``genlab.probes``), builds its cases from a
seed, and calls the student's function on each case. What happens next depends on who runs it:

- **Autograding** (the grader sets ``GENLAB_RECORD_DIR`` and ``GENLAB_SEED_DIR`` in the
  sandboxed kernel): the student's outputs are written to plain files (JSON and an ``.npz`` read
  back with ``allow_pickle=False``) and nothing is judged in the kernel. After the kernel is gone,
  the trusted grading process rebuilds the same cases from the same seed, runs the reference on
  them and decides (:class:`Judge`). Nothing the kernel prints or replies counts.

  Each exercise has a seed of its own (:func:`exercise_seed` of the class's secret seed, which
  never enters the sandbox), delivered through a named pipe that the probe *consumes*
  (``SEED_DIR/NAME.seed``, read-only for the kernel): code that reads it before its probe takes
  it away from the probe (or leaves it truncated), and the probe's records then say so, which
  scores 0 with a flag. After recording, the probe writes the records' SHA-256 to a second pipe
  (``NAME.done``); the grader keeps the first line only, so records rewritten later are caught.
- **Anywhere else** (the instructor's solution notebook, the maintainers' mutant tests, a
  student's own run): the same cases are judged in the kernel against the reference, and a wrong
  answer fails its cell with a one-line message naming the failing case.

Cases include the visible checks of the cell (the trusted side judges those too) and random
probes drawn from the seed. While one exercise is probed, the exercises it builds on (``uses``)
are bound to their references in the notebook, so one mistake costs points in one place, and a
call into the reference of the exercise being graded is caught and fails the test with a flag:
while the probe runs, the reference's functions carry a code object that raises the flag (in
every thread, threads started before the probe included) before running the original, and a
profile hook watches the probing thread for copies of its code. The library is public, so
copying or calling it cannot be prevented, only detected.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import itertools
import json
import os
import stat
import sys
import threading
import types
import zipfile
import zlib
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genlab import check

DEFAULT_SEED = 20261201
RECORD_DIR_ENV = "GENLAB_RECORD_DIR"
SEED_ENV = "GENLAB_PROBE_SEED"
SEED_DIR_ENV = "GENLAB_SEED_DIR"
MAX_JSON_BYTES = 2 << 20
MAX_NPZ_BYTES = 64 << 20
MAX_ARRAY_BYTES = 256 << 20
FLAG_REFERENCE = "called the library's reference"
FLAG_FORBIDDEN = "which this exercise asks you to work out yourself"
# JAX's automatic differentiation, forbidden in exercises that ask for a gradient by hand.
AUTODIFF = ("jax.grad", "jax.value_and_grad", "jax.vjp", "jax.jvp", "jax.jacrev", "jax.jacfwd",
            "jax.linearize", "jax.hessian")  # fmt: skip
FLAG_SEED = "the probe's seed was read before the probe ran (or the probe was bypassed)"
FLAG_CHANGED = "the records were changed after the probe wrote them"


# --- what a probe is ------------------------------------------------------------------------


def close(rtol: float = 1e-5, atol: float = 1e-6, dtype: str | None = None):
    """A comparison: every output array matches the reference within tolerance.

    ``dtype`` (``'float'``, ``'int'``, ``'bool'`` or an exact dtype) also checks the dtypes.
    """

    def compare(got, want, label: str) -> None:
        for where, g, w in _pairs(got, want, label):
            if dtype is not None:
                check.dtype(where, g, dtype)
            check.allclose(where, g, w, rtol=rtol, atol=atol)

    return compare


def judged_alone(compare):
    """Mark a comparison that judges the student's outputs on their own (a known value, a
    statistical property, a quality threshold reached by training): the reference is not run
    on its cases, in the kernel or on the trusted side. ``compare`` still takes
    ``(got, want, label)``; ``want`` is None."""
    compare.needs_reference = False
    return compare


def exact(got, want, label: str) -> None:
    """A comparison: every output equals the reference exactly (integers, booleans, tokens)."""
    for where, g, w in _pairs(got, want, label):
        check.equal(where, g, w)


@dataclass(frozen=True)
class Case:
    """One probe input.

    label: a one-line description of the case, shown when it fails (never the inputs' values).
    run: calls the function (or class) under test on this case's inputs and returns its outputs:
        an array, a number, or tuples/lists/dicts of them.
    compare: ``compare(got, want, label)`` raises ``check.CheckError`` when the student's outputs
        ``got`` are wrong; ``want`` are the reference's outputs on the same case (None for a
        comparison marked :func:`judged_alone`).
    raises: exception types the call must raise instead (the outputs are then not compared).
    """

    label: str
    run: Callable[[Any], Any]
    compare: Callable[[Any, Any, str], None] = close()
    raises: tuple[type[BaseException], ...] = ()


@dataclass(frozen=True)
class Probe:
    """A graded exercise: its reference and how to draw its cases from a NumPy generator.

    uses: earlier exercises this one calls; they are bound to their references while it is probed.
    forbidden: dotted names of functions (``"jax.vjp"``) that compute what the exercise asks the
    student to work out; an answer that calls one while it is probed is flagged and scores 0.
    """

    name: str
    reference: Any
    cases: Callable[[np.random.Generator], list[Case]]
    uses: tuple[str, ...] = ()
    forbidden: tuple[str, ...] = ()


def call(*args, **kwargs) -> Callable[[Any], Any]:
    """The usual ``run``: call the function under test with these arguments."""
    return lambda function: function(*args, **kwargs)


def f32(array):
    """``array`` as a float32 JAX array (probe inputs are float32, as in the notebooks).

    Converted by NumPy, then placed on the device: ``jnp.asarray`` would compile a conversion
    program for every new shape (about thirty per chapter), with the same result.
    """
    import jax

    return jax.device_put(np.asarray(array, np.float32))


def key_from(rng: np.random.Generator):
    """A JAX PRNG key drawn from the case generator ``rng``."""
    import jax

    return jax.random.key(int(rng.integers(1 << 30)))


# --- chapters -------------------------------------------------------------------------------

PROBE_MODULES = {
    "00_jax_primer": "genlab.probes.primer",
    "01_gan_math": "genlab.probes.gan",
    "02_vae_elbo": "genlab.probes.vae",
    "03_self_attention": "genlab.probes.attention",
    "04_gpt_sampling": "genlab.probes.gpt_sampling",
    "05_diffusion": "genlab.probes.diffusion",
    "06_evaluation": "genlab.probes.evaluation",
    "07_finetuning": "genlab.probes.finetuning",
    "tiny": "genlab.probes.tiny",
}


def probes_for(chapter: str) -> dict[str, Probe]:
    """``{exercise name: Probe}`` of a chapter."""
    if chapter not in PROBE_MODULES:
        raise KeyError(f"no probes for chapter {chapter!r}; known: {sorted(PROBE_MODULES)}")
    module = importlib.import_module(PROBE_MODULES[chapter])
    return {p.name: p for p in module.PROBES}


def seed_from_env() -> int:
    """The base seed outside autograding: ``GENLAB_PROBE_SEED`` (set by the maintainers'
    tests) or a fixed default. The grader never sets it in a student's sandbox."""
    return int(os.environ.get(SEED_ENV, DEFAULT_SEED))


def exercise_seed(seed: int, name: str) -> int:
    """The seed of exercise ``name`` derived from the base ``seed`` (SHA-256: knowing one
    exercise's seed tells nothing about another's, nor about the base)."""
    digest = hashlib.sha256(f"genlab-probe:{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def take_seed(name: str) -> int | None:
    """This exercise's seed: consumed from ``GENLAB_SEED_DIR/NAME.seed`` while autograding
    (None when it is missing or damaged: something read it first), else derived from
    :func:`seed_from_env`."""
    folder = os.environ.get(SEED_DIR_ENV)
    if not folder:
        return exercise_seed(seed_from_env(), name)
    try:
        fd = os.open(os.path.join(folder, f"{name}.seed"), os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        data = os.read(fd, 64)
    except OSError:  # empty pipe (EAGAIN): already consumed
        return None
    finally:
        os.close(fd)
    text = data.decode("ascii", "replace")
    if not text.endswith("\n") or not text[:-1].isdigit():
        return None
    return int(text[:-1])


def confirm_records(name: str, digest: str) -> None:
    """Tell the grader (``GENLAB_SEED_DIR/NAME.done``, a pipe it keeps the first line of) the
    SHA-256 of the records just written."""
    folder = os.environ.get(SEED_DIR_ENV)
    if not folder:
        return
    try:
        fd = os.open(os.path.join(folder, f"{name}.done"), os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, f"{digest}\n".encode())
    except OSError:  # a full pipe: the grader sees the first line, which is not this one
        pass
    finally:
        os.close(fd)


def make_cases(spec: Probe, seed: int) -> list[Case]:
    """The cases of ``spec`` for ``seed``; the same on both sides of the sandbox."""
    return spec.cases(np.random.default_rng([seed, zlib.crc32(spec.name.encode())]))


# --- plain trees of outputs -----------------------------------------------------------------


def to_plain(value):
    """Outputs as tuples, string-keyed dicts and NumPy arrays (what the records can hold)."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return tuple(to_plain(v) for v in value)
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind not in "biufc":
        raise TypeError(f"an output of type {type(value).__name__} is not a numeric array")
    return array


def _pairs(got, want, label: str):
    """``(where, got_leaf, want_leaf)`` over two plain trees that must have one structure."""
    if isinstance(want, tuple):
        if not isinstance(got, tuple) or len(got) != len(want):
            check.is_true(False, f"{label}: expected {len(want)} outputs, got {_describe(got)}")
        for i, (g, w) in enumerate(zip(got, want)):
            yield from _pairs(g, w, f"{label} output {i}" if len(want) > 1 else label)
    elif isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            check.is_true(False, f"{label}: expected keys {sorted(want)}, got {_describe(got)}")
        for key in want:
            yield from _pairs(got[key], want[key], f"{label} [{key}]")
    elif want is None:
        check.is_true(got is None, f"{label}: expected None, got {_describe(got)}")
    else:
        if isinstance(got, (tuple, dict)) or got is None:
            check.is_true(False, f"{label}: expected one array, got {_describe(got)}")
        yield label, got, want


def _describe(value) -> str:
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(value)}"
    return "None" if value is None else f"an array of shape {np.shape(value)}"


def _encode(value, arrays: dict):
    if value is None:
        return None
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, arrays) for v in value]}
    if isinstance(value, dict):
        return {"dict": {k: _encode(v, arrays) for k, v in value.items()}}
    key = f"a{len(arrays)}"
    arrays[key] = value
    return {"array": key}


def _decode(node, arrays):
    if node is None:
        return None
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError("malformed output tree")
    ((kind, body),) = node.items()
    if kind == "tuple" and isinstance(body, list):
        return tuple(_decode(v, arrays) for v in body)
    if kind == "dict" and isinstance(body, dict):
        return {str(k): _decode(v, arrays) for k, v in body.items()}
    if kind == "array" and isinstance(body, str) and body in arrays:
        return arrays[body]
    raise ValueError(f"malformed output tree node {kind!r}")


# --- running the student's code in the kernel -----------------------------------------------


@dataclass
class Outcome:
    """What one case did: outputs, or the exception it raised (type names, message)."""

    outputs: Any = None
    raised: tuple[str, ...] = ()
    message: str = ""


def _code_objects(reference) -> set:
    """Code objects of the reference (its methods for a class), through jit wrappers."""
    codes = set()
    targets = list(vars(reference).values()) if isinstance(reference, type) else [reference]
    for target in targets:
        seen = 0
        while target is not None and seen < 8:
            code = getattr(target, "__code__", None)
            if code is not None:
                codes.add(code)
            clear = getattr(target, "clear_cache", None)
            if callable(clear):  # a cached jit program would not run the Python code again
                clear()
            target, seen = getattr(target, "__wrapped__", None), seen + 1
    return codes


def _unwrapped(function):
    chain, seen = [], 0
    while function is not None and seen < 8:
        chain.append(function)
        function, seen = getattr(function, "__wrapped__", None), seen + 1
    return chain


def _functions(reference) -> list[types.FunctionType]:
    """The Python functions behind the reference (its methods for a class), through jit and
    other wrappers (``__wrapped__``), ``staticmethod`` and ``classmethod``."""
    found: dict[int, types.FunctionType] = {}
    targets = list(vars(reference).values()) if isinstance(reference, type) else [reference]
    for target in targets:
        target = getattr(target, "__func__", target)  # staticmethod, classmethod
        seen = 0
        while target is not None and seen < 8:
            if isinstance(target, types.FunctionType):
                found.setdefault(id(target), target)
            target, seen = getattr(target, "__wrapped__", None), seen + 1
    return list(found.values())


_WATCH_PREFIX = "__genlab_tripwire"
_WATCH_COUNT = itertools.count()
_WATCH_LOCK = threading.Lock()


class _Watch:
    """While a probe runs: every watched function's ``__code__`` is a trampoline that records a
    flag, then runs the original code (a copy of the function keeps it). The trampoline finds
    this object through the function's own globals, so it works in any thread."""

    def __init__(self, flags: list[str], flag: Callable[[str], str]):
        self.flags, self.flag = flags, flag
        self.originals: dict[int, types.FunctionType] = {}

    def __call__(self, key: int, args, kwargs):
        original = self.originals.get(key)
        if original is None:  # a stale trampoline: nothing to run
            raise RuntimeError("the reference is not available while being graded")
        if not self.flags:
            self.flags.append(self.flag(original.__name__))
        return original(*args, **kwargs)


def _trampoline(function: types.FunctionType, key: int, watcher: str) -> types.CodeType:
    """A code object for ``function``: ``return watcher(key, args, kwargs)`` with
    the same free variables (so it can be assigned to ``function.__code__``)."""
    free = function.__code__.co_freevars
    inner = ["    def _t(*args, **kwargs):"]
    if free:
        inner.append("        (" + ", ".join(free) + ",)")
    inner.append(f"        return {watcher}({key}, args, kwargs)")
    source = "def _outer():\n"
    source += "".join(f"    {name} = None\n" for name in free)
    source += "\n".join(inner) + "\n    return _t\n"
    outer = compile(source, function.__code__.co_filename, "exec").co_consts
    code = next(c for c in outer if isinstance(c, types.CodeType))
    code = next(c for c in code.co_consts if isinstance(c, types.CodeType))
    names = {"co_freevars": free, "co_name": function.__code__.co_name}
    if hasattr(code, "co_qualname"):  # Python 3.11+
        names["co_qualname"] = function.__code__.co_qualname
    return code.replace(**names)


@contextmanager
def _watched(reference, flags: list[str], flag: Callable[[str], str]):
    """Swap the functions' code (those of ``reference``) for trampolines that record
    ``flag(name)``, then restore it."""
    watch = _Watch(flags, flag)
    watcher = f"{_WATCH_PREFIX}_{next(_WATCH_COUNT)}__"  # its own name: watches may nest
    swapped = []
    with _WATCH_LOCK:
        for function in _functions(reference):
            key = len(watch.originals)
            copy = types.FunctionType(function.__code__, function.__globals__, function.__name__,
                                      function.__defaults__, function.__closure__)  # fmt: skip
            copy.__kwdefaults__ = function.__kwdefaults__
            copy.__dict__.update(function.__dict__)
            try:
                trampoline = _trampoline(function, key, watcher)
                watch.originals[key] = copy
                function.__globals__[watcher] = watch
                saved = function.__code__
                function.__code__ = trampoline
            except (ValueError, TypeError, SyntaxError):  # left to the profile hook
                watch.originals.pop(key, None)
                continue
            swapped.append((function, saved))
    try:
        yield
    finally:
        with _WATCH_LOCK:
            for function, saved in swapped:
                function.__code__ = saved
                function.__globals__.pop(watcher, None)
            watch.originals.clear()
        _clear_caches(reference)


def _clear_caches(reference) -> None:
    targets = list(vars(reference).values()) if isinstance(reference, type) else [reference]
    for target in targets:
        seen = 0
        while target is not None and seen < 8:
            clear = getattr(target, "clear_cache", None)
            if callable(clear):  # a cached jit program would not run the Python code again
                clear()
            target, seen = getattr(target, "__wrapped__", None), seen + 1


@contextmanager
def tripwire(reference, function):
    """Catch the function under test calling (or being) the reference, in any thread; yields
    a list of flags."""
    flags: list[str] = []
    codes = _code_objects(reference)
    ours = set(map(id, _unwrapped(reference)))
    if any(id(f) in ours or getattr(f, "__code__", None) in codes for f in _unwrapped(function)):
        flags.append(f"{FLAG_REFERENCE}: the answer is the reference itself")

    def hook(frame, event, arg):
        if event == "call" and frame.f_code in codes and not flags:
            flags.append(f"{FLAG_REFERENCE} {frame.f_code.co_name} while being graded")

    previous = sys.getprofile()
    with _watched(reference, flags, lambda name: f"{FLAG_REFERENCE} {name} while being graded"):
        sys.setprofile(hook)
        threading.setprofile(hook)
        try:
            yield flags
        finally:
            sys.setprofile(previous)
            threading.setprofile(None)


def _resolve(dotted: str):
    """The object a dotted name (``"jax.vjp"``, ``"genlab.gpt.train_step"``) stands for."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return target
    raise ImportError(f"cannot resolve {dotted!r}")


@contextmanager
def forbidding(names: tuple[str, ...], flags: list[str]):
    """Flag any call of the functions ``names`` (dotted) while the block runs.

    JAX's caches are cleared first: an answer compiled before would otherwise not run its
    Python code (nor the call) again.
    """
    if names:
        import jax

        jax.clear_caches()
    with ExitStack() as stack:
        for name in names:
            target = _resolve(name)
            if not _functions(target):
                raise TypeError(
                    f"forbidden {name!r} is not a Python function: it cannot be watched"
                )
            message = f"used {name}, {FLAG_FORBIDDEN}"
            stack.enter_context(_watched(target, flags, lambda _, m=message: m))
        yield flags


@contextmanager
def bound_to_references(namespace: dict, names: tuple[str, ...], chapter: str):
    """Bind the exercises ``names`` in ``namespace`` to their references, then restore them."""
    specs = probes_for(chapter)
    missing = object()
    saved = {name: namespace.get(name, missing) for name in names}
    namespace.update({name: specs[name].reference for name in names})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                namespace.pop(name, None)
            else:
                namespace[name] = value


def run_cases(function, cases: list[Case]) -> list[Outcome]:
    """Call ``function`` on every case; an exception becomes that case's outcome."""
    outcomes = []
    for case in cases:
        try:
            outcomes.append(Outcome(outputs=to_plain(case.run(function))))
        except Exception as error:
            names = tuple(t.__name__ for t in type(error).__mro__)
            outcomes.append(Outcome(raised=names, message=str(error).splitlines()[0][:200]
                                    if str(error) else ""))  # fmt: skip
    return outcomes


def probe(chapter: str, name: str, namespace: dict) -> None:
    """Probe the notebook's ``name`` (the hidden part of its test cell).

    Autograding: record the outputs for the grader. Elsewhere: judge them now and raise
    ``check.CheckError`` naming the first failing case.
    """
    spec = probes_for(chapter)[name]
    seed = take_seed(name)
    record_dir = os.environ.get(RECORD_DIR_ENV)
    if seed is None:  # the seed was consumed (or damaged) before this probe: nothing is run
        if record_dir:
            digest = write_records(Path(record_dir), name, None, [], [FLAG_SEED])
            confirm_records(name, digest)
            return
        raise check.CheckError(f"{name}: {FLAG_SEED}")
    cases = make_cases(spec, seed)
    function = namespace.get(name)
    if function is None:
        outcomes, flags = [], []
    else:
        with bound_to_references(namespace, spec.uses, chapter):
            with tripwire(spec.reference, function) as flags, forbidding(spec.forbidden, flags):
                outcomes = run_cases(function, cases)
    if record_dir:
        digest = write_records(Path(record_dir), name, seed, outcomes, flags)
        confirm_records(name, digest)
        return
    verdict = judge(spec, cases, outcomes, flags)
    if not verdict.passed:
        raise check.CheckError(verdict.message)


# --- records --------------------------------------------------------------------------------


def write_records(folder: Path, name: str, seed: int | None, outcomes: list[Outcome],
                  flags) -> str:  # fmt: skip
    """Write one exercise's outcomes as ``NAME.json`` + ``NAME.npz`` in ``folder``; return the
    SHA-256 of the two files' bytes (see :func:`records_digest`)."""
    arrays: dict[str, np.ndarray] = {}
    cases = []
    for outcome in outcomes:
        if outcome.raised:
            cases.append({"raised": list(outcome.raised), "message": outcome.message})
        else:
            cases.append({"outputs": _encode(outcome.outputs, arrays)})
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    npz = buffer.getvalue()
    text = json.dumps({"name": name, "seed": seed, "cases": cases, "flags": list(flags)})
    meta = text.encode("utf-8")
    (folder / f"{name}.npz").write_bytes(npz)
    (folder / f"{name}.json").write_bytes(meta)
    return records_digest(meta, npz)


def records_digest(meta: bytes, npz: bytes) -> str:
    """The SHA-256 of one exercise's records (the JSON's bytes, then the ``.npz``'s)."""
    return hashlib.sha256(len(meta).to_bytes(8, "big") + meta + npz).hexdigest()


class RecordError(ValueError):
    """Records that are missing, too large or malformed; the message says which."""


class TamperedRecords(RecordError):
    """Records that carry another seed than this run's, or that changed after the probe wrote
    them: a flag, not an accident."""


def _read_capped(folder_fd: int, filename: str, limit: int) -> bytes:
    try:
        fd = os.open(filename, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder_fd)
    except FileNotFoundError:
        raise RecordError(f"no {filename}") from None
    except OSError as error:  # a symlink (ELOOP) or anything else odd
        raise RecordError(f"{filename} cannot be opened ({error.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise RecordError(f"{filename} is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise RecordError(f"{filename} is larger than {limit} bytes")
    return data


def read_records(folder: Path, name: str, seed: int, num_cases: int,
                 digest: str | None = None):  # fmt: skip
    """Read what the kernel recorded for ``name``: ``(outcomes, flags)``, or raise RecordError.

    Files are opened without following symlinks, size-capped, and the arrays loaded with
    ``allow_pickle=False``; the seed and the number of cases must be this grading run's.
    ``digest``: what the probe reported when it wrote them (:func:`confirm_records`); records
    with another digest, or with another seed, raise :class:`TamperedRecords`.
    """
    try:
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise RecordError("no records folder") from None
    try:
        meta_bytes = _read_capped(folder_fd, f"{name}.json", MAX_JSON_BYTES)
        npz_bytes = _read_capped(folder_fd, f"{name}.npz", MAX_NPZ_BYTES)
    finally:
        os.close(folder_fd)
    if digest is not None and digest != records_digest(meta_bytes, npz_bytes):
        raise TamperedRecords(FLAG_CHANGED)
    try:
        meta = json.loads(meta_bytes)
        with zipfile.ZipFile(io.BytesIO(npz_bytes)) as archive:  # no zip bombs
            if sum(info.file_size for info in archive.infolist()) > MAX_ARRAY_BYTES:
                raise RecordError(f"{name}.npz unpacks to more than {MAX_ARRAY_BYTES} bytes")
        with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        if any(a.dtype.kind not in "biufc" for a in arrays.values()):
            raise RecordError(f"{name}.npz holds arrays that are not numeric")
        if meta.get("name") != name:
            raise RecordError(f"records of {name} hold another exercise's name")
        if meta.get("seed") != seed:
            flags = [str(f)[:200] for f in meta.get("flags", [])][:5]
            raise TamperedRecords(flags[0] if flags and meta.get("seed") is None else FLAG_SEED)
        cases = meta["cases"]
        if not isinstance(cases, list) or len(cases) != num_cases:
            raise RecordError(f"expected {num_cases} recorded cases")
        outcomes = []
        for entry in cases:
            if "raised" in entry:
                outcomes.append(Outcome(raised=tuple(map(str, entry["raised"])),
                                        message=str(entry.get("message", ""))[:200]))  # fmt: skip
            else:
                outcomes.append(Outcome(outputs=_decode(entry["outputs"], arrays)))
        flags = [str(f)[:200] for f in meta.get("flags", [])][:5]
    except RecordError:
        raise
    except Exception as error:  # JSON, npz or structure errors
        raise RecordError(f"records of {name} are malformed ({type(error).__name__})") from None
    return outcomes, flags


class SeedPipes:
    """The grader's end of the seed channel (trusted side; a context manager).

    For each exercise it makes, in ``folder``, a named pipe ``NAME.seed`` holding that
    exercise's seed (mode 0444: the kernel may read it, once) and ``NAME.done`` (mode 0222: the
    kernel may only write; the probe writes its records' digest). The grader holds both ends
    open, so what is written stays in the pipes until :meth:`digests` reads it. Grading mounts
    ``folder`` read-only in the sandbox, so the kernel can neither refill a seed nor replace a
    pipe.
    """

    def __init__(self, folder: Path, seeds: dict[str, int]):
        self.folder, self.seeds = Path(folder), dict(seeds)
        self._done: dict[str, int] = {}
        self._fds: list[int] = []

    def __enter__(self) -> SeedPipes:
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o755)
        for name, seed in self.seeds.items():
            seed_path, done_path = self.folder / f"{name}.seed", self.folder / f"{name}.done"
            os.mkfifo(seed_path, 0o600)
            fd = os.open(seed_path, os.O_RDWR | os.O_NONBLOCK)
            self._fds.append(fd)
            os.write(fd, f"{int(seed)}\n".encode())
            os.chmod(seed_path, 0o444)
            os.mkfifo(done_path, 0o600)
            fd = os.open(done_path, os.O_RDWR | os.O_NONBLOCK)
            self._fds.append(fd)
            self._done[name] = fd
            os.chmod(done_path, 0o222)
        return self

    def digests(self) -> dict[str, str]:
        """``{name: the first line its probe reported}`` ("" when nothing was reported)."""
        found = {}
        for name, fd in self._done.items():
            data = b""
            while len(data) < 1 << 16:
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                data += chunk
            found[name] = data.split(b"\n", 1)[0].decode("ascii", "replace")[:128]
        return found

    def __exit__(self, *exc_info) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()


# --- the verdict ----------------------------------------------------------------------------


@dataclass
class Verdict:
    """The grader's decision on one exercise: passed, a one-line message, and flags."""

    passed: bool
    message: str
    flags: list[str] = field(default_factory=list)


def judge(spec: Probe, cases: list[Case], outcomes: list[Outcome], flags,
          expected: list | None = None) -> Verdict:  # fmt: skip
    """Judge the outcomes of ``cases`` against the reference (``expected`` if precomputed)."""
    flags = list(flags)
    if flags:
        return Verdict(False, f"{spec.name}: {flags[0]}; scored 0 and flagged", flags)
    if len(outcomes) != len(cases):
        return Verdict(False, f"{spec.name}: not defined, or the probes did not run")
    failures = []
    for index, (case, outcome) in enumerate(zip(cases, outcomes)):
        message = _judge_case(spec, case, outcome, None if expected is None else expected[index])
        if message:
            failures.append(message)
    if failures:
        more = f" (and {len(failures) - 1} more failing cases)" if len(failures) > 1 else ""
        return Verdict(False, failures[0] + more)
    return Verdict(True, f"{spec.name}: all {len(cases)} cases passed")


def _judge_case(spec: Probe, case: Case, outcome: Outcome, want) -> str | None:
    if case.raises:
        names = {t.__name__ for t in case.raises}
        if names & set(outcome.raised):
            return None
        wanted = " or ".join(sorted(names))
        if outcome.raised:
            return f"{case.label}: expected {wanted}, got {outcome.raised[0]}: {outcome.message}"
        return f"{case.label}: expected {wanted} to be raised, but the call returned"
    if outcome.raised:
        return f"{case.label}: raised {outcome.raised[0]}: {outcome.message}"
    if want is None:
        want = reference_outputs(spec, case)
    try:
        case.compare(outcome.outputs, want, case.label)
    except check.CheckError as error:
        return str(error).splitlines()[0][:300]
    return None


def reference_outputs(spec: Probe, case: Case):
    """The reference's outputs on one case (None for a case that must raise or whose comparison
    is :func:`judged_alone`)."""
    if case.raises or not getattr(case.compare, "needs_reference", True):
        return None
    return to_plain(case.run(spec.reference))


NO_RECORDS = "0 points: no records"


class Judge:
    """The trusted side for one chapter and its base seed: each exercise's seed derived from it
    (:func:`exercise_seed`), reference outputs computed once, reused for every student."""

    def __init__(self, chapter: str, seed: int):
        self.chapter, self.seed = chapter, seed
        self.specs = probes_for(chapter)
        self._cases: dict[str, list[Case]] = {}
        self._expected: dict[str, list] = {}

    def seed_of(self, name: str) -> int:
        """The seed of exercise ``name`` in this run (what its probe must receive)."""
        return exercise_seed(self.seed, name)

    def cases(self, name: str) -> list[Case]:
        if name not in self._cases:
            self._cases[name] = make_cases(self.specs[name], self.seed_of(name))
        return self._cases[name]

    def expected(self, name: str) -> list:
        if name not in self._expected:
            spec = self.specs[name]
            self._expected[name] = [reference_outputs(spec, c) for c in self.cases(name)]
        return self._expected[name]

    def verdict(self, record_dir: Path, name: str, digest: str | None = None) -> Verdict:
        """Judge ``name`` from the records in ``record_dir`` (missing records score 0).

        ``digest``: the first line the probe's ``.done`` pipe received ("" when none did);
        records that do not match it are flagged. None: not checked (a trusted run).
        """
        if name not in self.specs:
            return Verdict(False, f"{name}: no probe is defined for this exercise")
        cases = self.cases(name)
        try:
            outcomes, flags = read_records(record_dir, name, self.seed_of(name), len(cases),
                                           digest=digest or None)  # fmt: skip
            if digest == "":
                raise TamperedRecords("the records were written without their probe")
        except TamperedRecords as error:
            return Verdict(False, f"{name}: {error}; scored 0 and flagged", [str(error)])
        except RecordError as error:
            return Verdict(
                False,
                f"{name}: {NO_RECORDS} (the test cell stopped before its hidden "
                f"probes ran, or did not run: {error})",
            )
        return judge(self.specs[name], cases, outcomes, flags, self.expected(name))
