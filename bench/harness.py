"""What every benchmark shares: timing with warm-up, memory, the machine, and result tables.

A benchmark module defines ``run(quick: bool) -> list[Table]``. Quick mode shrinks sizes and
repeats so the test suite can prove the benchmark works; only full mode's numbers are reported.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import jax
import psutil

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Table:
    """One results table: a title, notes under it, a header row and data rows."""

    title: str
    header: list[str]
    rows: list[list[str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, *cells) -> None:
        if len(cells) != len(self.header):
            raise ValueError(f"{self.title}: row {cells} does not match header {self.header}")
        self.rows.append([fmt(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        if self.notes:
            lines += [*self.notes, ""]
        lines += ["| " + " | ".join(self.header) + " |", "|" + " --- |" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


def fmt(value) -> str:
    """A table cell: floats with 3 significant digits (ints and strings as they are)."""
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def block(x):
    """Wait for every array in ``x`` (JAX dispatches asynchronously)."""
    return jax.block_until_ready(x)


def median_seconds(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (compiles)."""
    for _ in range(warmup):
        block(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def first_call_seconds(fn: Callable[[], object]) -> float:
    """Wall time of the first call: tracing plus compilation plus one run."""
    start = time.perf_counter()
    block(fn())
    return time.perf_counter() - start


COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextmanager
def compile_events() -> Iterator[list[float]]:
    """The seconds of each XLA compile while the block runs (a list filled as they happen).

    Counts JAX's backend-compile events, which also fire for a program loaded from the
    persistent compilation cache, so a warm cache does not hide a retrace.
    """
    events: list[float] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == COMPILE_EVENT:
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def xla_temp_bytes(jitted, *args) -> int:
    """Scratch memory XLA assigns to ``jitted(*args)`` beyond its arguments and outputs."""
    return int(jitted.lower(*args).compile().memory_analysis().temp_size_in_bytes)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_rss_delta_mb(code: str) -> float:
    """Peak resident memory (MB) a snippet adds, measured in a fresh Python process (Linux).

    ``code`` must define ``setup()`` (inputs, compilation, a warm-up call; not counted) and
    ``work()`` (measured). After ``setup()`` the process resets its high-water mark (writing 5
    to ``/proc/self/clear_refs``) and reports ``VmHWM`` after ``work()`` minus ``VmRSS`` before.
    """
    program = f"""
from bench.harness import _status_mb
{code}
setup()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = _status_mb("VmRSS")
work()
print(max(_status_mb("VmHWM") - before, 0.0))
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _busy_cpu_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (Linux ``/proc/stat``; NaN elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is within user


def _self_cpu_seconds() -> float:
    """CPU seconds of this process alone."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of every child process it has waited for (kernels,
    sandboxes and helper processes a benchmark started and shut down)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return _self_cpu_seconds() + children.ru_utime + children.ru_stime


class ForeignLoad:
    """How busy other processes kept the machine while a benchmark ran, in cores on average:
    every core's busy time (``/proc/stat``) minus this process tree's, over the wall time.

    Unlike the load average it leaves out the benchmark's own work (two grading workers load two
    cores by design) and does not lag behind by a minute. The tree's time is the larger of two
    lower bounds: this process plus the children it waited for (``getrusage``), and this process
    plus every descendant a thread sees (every ``INTERVAL`` s, by process id and start time, until
    it ends), which also counts a descendant that outlived its parent and was adopted by init (a
    sandboxed kernel's helpers) or was never waited for. Either way the measure errs towards
    calling a machine loaded.
    """

    INTERVAL = 0.25

    def __init__(self) -> None:
        self._cpu: dict[tuple[int, float], float] = {}  # (pid, start time) -> CPU seconds
        self._lock = threading.Lock()  # the thread and tree_seconds() both sample
        self._sample()
        self._before = sum(self._cpu.values())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()
        self.start = (time.perf_counter(), _busy_cpu_seconds(), _own_cpu_seconds(),
                      _self_cpu_seconds())  # fmt: skip

    def _follow(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self._sample()

    def _sample(self) -> None:
        with self._lock:
            read = {self._read(p) for p in psutil.Process().children(recursive=True)}
            for pid, start in set(self._cpu) - read:  # also those adopted by init since
                try:
                    self._read(psutil.Process(pid), start)
                except psutil.Error:  # ended: its last sample stands
                    pass

    def _read(self, process: psutil.Process, start: float | None = None):
        """Record ``process``'s CPU seconds; returns its (pid, start time) key (None if gone)."""
        try:
            key = (process.pid, process.create_time())
            times = process.cpu_times()
        except psutil.Error:
            return None
        if start is None or key[1] == start:  # not a new process that reuses a followed id
            self._cpu[key] = times.user + times.system
        return key

    def tree_seconds(self) -> float:
        """CPU seconds this process tree has used since the start."""
        self._sample()
        waited, own = _own_cpu_seconds() - self.start[2], _self_cpu_seconds() - self.start[3]
        return max(waited, own + sum(self._cpu.values()) - self._before)

    def cores(self) -> float:
        self._stop.set()
        self._thread.join()
        tree = self.tree_seconds()
        wall, busy = time.perf_counter() - self.start[0], _busy_cpu_seconds() - self.start[1]
        return max(busy - tree, 0.0) / wall if wall > 0 else float("nan")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_summary() -> list[str]:
    """Markdown lines naming the machine and the versions that produced the numbers."""
    import flax
    import optax

    versions = f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}"
    try:
        import torch

        versions += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        versions += ", torch not installed"
    devices = ", ".join(f"{d.platform}:{d.device_kind}" for d in jax.devices())
    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}",
        f"- JAX devices: {devices}",
        f"- Python {sys.version.split()[0]}; {versions}",
    ]


def optional_module(name: str):
    """``import name`` or None: peers such as torch and transformers are optional."""
    try:
        return __import__(name)
    except ImportError:
        return None
