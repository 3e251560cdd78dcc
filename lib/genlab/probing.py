"""Probes: the hidden tests' half that runs in the student's kernel, and the verdict outside it.

Every graded test cell ends with a hidden block of one call::

    ### BEGIN HIDDEN TESTS
    from genlab.probing import probe
    probe("00_jax_primer", "logsumexp", globals())
    ### END HIDDEN TESTS

``probe`` looks up the exercise's :class:`Probe` (in ``genlab.probes``), builds its cases from a
seed, and calls the student's function on each case. What happens next depends on who runs it:

- **Autograding** (the grader sets ``GENLAB_RECORD_DIR`` and ``GENLAB_PROBE_SEED`` in the
  sandboxed kernel): the student's outputs are written to plain files (JSON and an ``.npz`` read
  back with ``allow_pickle=False``) and nothing is judged in the kernel. After the kernel is gone,
  the trusted grading process rebuilds the same cases from the same seed, runs the reference on
  them and decides (:func:`judge_records`). Nothing the kernel prints or replies counts.
- **Anywhere else** (the instructor's solution notebook, the maintainers' mutant tests, a
  student's own run): the same cases are judged in the kernel against the reference, and a wrong
  answer fails its cell with a one-line message naming the failing case.

Cases include the visible checks of the cell (the trusted side judges those too) and random
probes drawn from the seed. While one exercise is probed, the exercises it builds on (``uses``)
are bound to their references in the notebook, so one mistake costs points in one place, and a
call into the reference of the exercise being graded is caught (a profile hook watches for its
code) and fails the test with a flag: the library is public, so copying or calling it cannot be
prevented, only detected.
"""

from __future__ import annotations

import importlib
import json
import os
import stat
import sys
import threading
import zipfile
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genlab import check

DEFAULT_SEED = 20261201
RECORD_DIR_ENV = "GENLAB_RECORD_DIR"
SEED_ENV = "GENLAB_PROBE_SEED"
MAX_JSON_BYTES = 2 << 20
MAX_NPZ_BYTES = 64 << 20
MAX_ARRAY_BYTES = 256 << 20
FLAG_REFERENCE = "called the library's reference"


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
    """

    name: str
    reference: Any
    cases: Callable[[np.random.Generator], list[Case]]
    uses: tuple[str, ...] = ()


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
    """The probe seed: ``GENLAB_PROBE_SEED`` (set by the grader) or a fixed default."""
    return int(os.environ.get(SEED_ENV, DEFAULT_SEED))


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


@contextmanager
def tripwire(reference, function):
    """Catch the function under test calling (or being) the reference; yields a list of flags."""
    flags: list[str] = []
    codes = _code_objects(reference)
    ours = set(map(id, _unwrapped(reference)))
    if any(id(f) in ours or getattr(f, "__code__", None) in codes for f in _unwrapped(function)):
        flags.append(f"{FLAG_REFERENCE}: the answer is the reference itself")

    def hook(frame, event, arg):
        if event == "call" and frame.f_code in codes and not flags:
            flags.append(f"{FLAG_REFERENCE} {frame.f_code.co_name} while being graded")

    previous = sys.getprofile()
    sys.setprofile(hook)
    threading.setprofile(hook)
    try:
        yield flags
    finally:
        sys.setprofile(previous)
        threading.setprofile(None)


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
    seed = seed_from_env()
    cases = make_cases(spec, seed)
    function = namespace.get(name)
    if function is None:
        outcomes, flags = [], []
    else:
        with bound_to_references(namespace, spec.uses, chapter):
            with tripwire(spec.reference, function) as flags:
                outcomes = run_cases(function, cases)
    record_dir = os.environ.get(RECORD_DIR_ENV)
    if record_dir:
        write_records(Path(record_dir), name, seed, outcomes, flags)
        return
    verdict = judge(spec, cases, outcomes, flags)
    if not verdict.passed:
        raise check.CheckError(verdict.message)


# --- records --------------------------------------------------------------------------------


def write_records(folder: Path, name: str, seed: int, outcomes: list[Outcome], flags) -> None:
    """Write one exercise's outcomes as ``NAME.json`` + ``NAME.npz`` in ``folder``."""
    arrays: dict[str, np.ndarray] = {}
    cases = []
    for outcome in outcomes:
        if outcome.raised:
            cases.append({"raised": list(outcome.raised), "message": outcome.message})
        else:
            cases.append({"outputs": _encode(outcome.outputs, arrays)})
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}.npz", **arrays)
    text = json.dumps({"name": name, "seed": seed, "cases": cases, "flags": list(flags)})
    (folder / f"{name}.json").write_text(text, encoding="utf-8")


class RecordError(ValueError):
    """Records that are missing, too large or malformed; the message says which."""


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


def read_records(folder: Path, name: str, seed: int, num_cases: int):
    """Read what the kernel recorded for ``name``: ``(outcomes, flags)``, or raise RecordError.

    Files are opened without following symlinks, size-capped, and the arrays loaded with
    ``allow_pickle=False``; the seed and the number of cases must be this grading run's.
    """
    import io

    try:
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        raise RecordError("no records folder") from None
    try:
        meta_bytes = _read_capped(folder_fd, f"{name}.json", MAX_JSON_BYTES)
        npz_bytes = _read_capped(folder_fd, f"{name}.npz", MAX_NPZ_BYTES)
    finally:
        os.close(folder_fd)
    try:
        meta = json.loads(meta_bytes)
        with zipfile.ZipFile(io.BytesIO(npz_bytes)) as archive:  # no zip bombs
            if sum(info.file_size for info in archive.infolist()) > MAX_ARRAY_BYTES:
                raise RecordError(f"{name}.npz unpacks to more than {MAX_ARRAY_BYTES} bytes")
        with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        if any(a.dtype.kind not in "biufc" for a in arrays.values()):
            raise RecordError(f"{name}.npz holds arrays that are not numeric")
        if meta.get("name") != name or meta.get("seed") != seed:
            raise RecordError("records were not made by this grading run (name or seed differ)")
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


class Judge:
    """The trusted side for one chapter and seed: reference outputs computed once, reused for
    every student."""

    def __init__(self, chapter: str, seed: int):
        self.chapter, self.seed = chapter, seed
        self.specs = probes_for(chapter)
        self._cases: dict[str, list[Case]] = {}
        self._expected: dict[str, list] = {}

    def cases(self, name: str) -> list[Case]:
        if name not in self._cases:
            self._cases[name] = make_cases(self.specs[name], self.seed)
        return self._cases[name]

    def expected(self, name: str) -> list:
        if name not in self._expected:
            spec = self.specs[name]
            self._expected[name] = [reference_outputs(spec, c) for c in self.cases(name)]
        return self._expected[name]

    def verdict(self, record_dir: Path, name: str) -> Verdict:
        """Judge ``name`` from the records in ``record_dir`` (missing records score 0)."""
        if name not in self.specs:
            return Verdict(False, f"{name}: no probe is defined for this exercise")
        cases = self.cases(name)
        try:
            outcomes, flags = read_records(record_dir, name, self.seed, len(cases))
        except RecordError as error:
            return Verdict(
                False,
                f"{name}: 0 points: the test cell stopped before its hidden "
                f"probes ran (see the error above), or did not run ({error})",
            )
        return judge(self.specs[name], cases, outcomes, flags, self.expected(name))
