"""GenLab: the small JAX/Flax library behind the GenLab course notebooks.

Modules are named after their idea (see ``shared/design.md``, section 3); import them
directly, e.g. ``from genlab import check, data, runtime``.

On a CPU, XLA runs a program as one device that spreads its operations over the cores; for a
training step as large as chapter 04's GPT, two devices that each take half of the batch keep
the cores busier (1.05x faster on 2 cores, bench/results.md). So, unless ``XLA_FLAGS`` already
chooses, importing genlab before JAX starts asks for one CPU device per core (at most 8;
``GENLAB_CPU_DEVICES=1`` keeps one). Arrays still live on the first device unless a program
asks for more (``genlab.train.fit(..., data_parallel=True)``); GPUs and TPUs are unaffected.

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


def _cpu_devices_flag(environ) -> None:
    flags = environ.get("XLA_FLAGS", "")
    if DEVICES_FLAG in flags:
        return
    wanted = environ.get("GENLAB_CPU_DEVICES", "")
    try:
        count = int(wanted) if wanted else min(len(_os.sched_getaffinity(0)), 8)
    except (AttributeError, ValueError):  # no sched_getaffinity (macOS), or a typo: one device
        count = 1
    if count > 1:
        environ["XLA_FLAGS"] = f"{flags} {DEVICES_FLAG}={count}".strip()


_cpu_devices_flag(_os.environ)

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
