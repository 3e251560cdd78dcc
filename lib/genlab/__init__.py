"""GenLab: the small JAX/Flax library behind the GenLab course notebooks.

Modules are named after their idea (see ``shared/design.md``, section 3); import them
directly, e.g. ``from genlab import check, data, runtime``.

On a CPU, XLA runs a program as one device that spreads its operations over the cores; for a
training step as large as chapter 04's GPT, two devices that each take half of the batch keep
the cores busier (1.2x faster on 2 cores, bench/results.md). So, unless ``XLA_FLAGS`` already
chooses, importing genlab before JAX starts asks for one CPU device per core (at most 8;
``GENLAB_CPU_DEVICES=1`` keeps one). Arrays still live on the first device unless a program
asks for more (``genlab.train.fit(..., data_parallel=True)``); GPUs and TPUs are unaffected.
"""

import os as _os

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
