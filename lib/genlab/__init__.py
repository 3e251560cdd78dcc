"""GenLab: the small JAX/Flax library behind the GenLab course notebooks.

Modules are named after their idea (``gan``, ``vae``, ``attention``, ``sampling``, ...); import
them directly, e.g. ``from genlab import check, data, runtime``.

On a CPU, XLA runs a program as one device that spreads its operations over the cores; for a
training step as large as chapter 04's GPT, two devices that each take half of the batch keep
the cores busier (1.05x faster on 2 cores, bench/results.md). So, unless ``XLA_FLAGS`` already
chooses, importing genlab before JAX starts asks for one CPU device per core (at most 8;
``GENLAB_CPU_DEVICES=1`` keeps one). Arrays still live on the first device unless a program
asks for more (``genlab.train.fit(..., data_parallel=True)``); GPUs and TPUs are unaffected.

A notebook compiles well over a thousand small programs: every ``jnp`` operation called outside
``jit`` on a new shape is one. XLA's CPU backend compiles each fused loop with its MLIR emitters,
which set up a fresh MLIR context per loop; its older LLVM emitters compile a small program in
about half the time (13 vs 25 ms) and run the course's training steps as fast (bench/results.md).
So, with the jaxlib versions where that switch was verified (``VERIFIED_JAXLIB``; XLA aborts on
a flag it does not know), importing genlab before JAX starts also asks for the older emitters,
unless ``XLA_FLAGS`` already chooses (``--xla_cpu_use_fusion_emitters=true`` keeps XLA's default).

XLA's CPU runtime allocates each run of a compiled program's scratch memory with ``malloc`` and
frees it afterwards (338 MB for a step of chapter 04's GPT). glibc serves such large blocks with a
fresh ``mmap`` and returns them on ``free``, so every step page-faulted its whole scratch space
back in (82,000 faults and the kernel zeroing 338 MB per step: a quarter of the step's time on 2
cores). So, on Linux with glibc, importing genlab before JAX starts tells ``malloc`` to serve
every block from one heap and to keep up to 1 GiB of freed memory for reuse instead of giving it
back (``mallopt``: one arena, no ``mmap``, a 1 GiB trim threshold), at the price of slower
compiling (XLA's compiler threads share the one arena's lock). ``GENLAB_REUSE_MEMORY=0`` keeps
glibc's defaults.
"""

import ctypes as _ctypes
import os as _os
import platform as _platform

__version__ = "0.1.0"

DEVICES_FLAG = "--xla_force_host_platform_device_count"
EMITTERS_FLAG = "--xla_cpu_use_fusion_emitters"
# jaxlib releases (major.minor) whose XLA knows EMITTERS_FLAG (tests/test_fast_compile.py).
VERIFIED_JAXLIB = ("0.10",)


def _add_flag(environ, flag: str) -> None:
    environ["XLA_FLAGS"] = f"{environ.get('XLA_FLAGS', '')} {flag}".strip()


def _cpu_devices_flag(environ) -> None:
    if DEVICES_FLAG in environ.get("XLA_FLAGS", ""):
        return
    wanted = environ.get("GENLAB_CPU_DEVICES", "")
    try:
        count = int(wanted) if wanted else min(len(_os.sched_getaffinity(0)), 8)
    except (AttributeError, ValueError):  # no sched_getaffinity (macOS), or a typo: one device
        count = 1
    if count > 1:
        _add_flag(environ, f"{DEVICES_FLAG}={count}")


def _jaxlib_release() -> str:
    """jaxlib's "major.minor" as installed ("" when it is not), read without importing it."""
    from importlib import metadata

    try:
        return ".".join(metadata.version("jaxlib").split(".")[:2])
    except metadata.PackageNotFoundError:
        return ""


def _fast_compile_flag(environ, release: str) -> None:
    """Ask XLA:CPU for its older loop emitters, which compile small programs faster (see the
    module's docstring), on a verified jaxlib ``release`` unless ``XLA_FLAGS`` chooses."""
    if release in VERIFIED_JAXLIB and EMITTERS_FLAG not in environ.get("XLA_FLAGS", ""):
        _add_flag(environ, f"{EMITTERS_FLAG}=false")


_cpu_devices_flag(_os.environ)
_fast_compile_flag(_os.environ, _jaxlib_release())

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
KEPT_FREE_BYTES = 1 << 30


def _reuse_freed_memory(environ) -> bool:
    """Make glibc's malloc keep freed memory for reuse (see the module's docstring).

    Returns True when the settings were applied: on Linux with glibc, unless
    ``GENLAB_REUSE_MEMORY=0``.
    """
    if environ.get("GENLAB_REUSE_MEMORY", "1") == "0" or _platform.libc_ver()[0] != "glibc":
        return False
    mallopt = _ctypes.CDLL(None).mallopt
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, KEPT_FREE_BYTES))
    return all(mallopt(param, value) == 1 for param, value in settings)


_reuse_freed_memory(_os.environ)
