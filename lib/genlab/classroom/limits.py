"""Limits for one grading process: time, memory, file size, a private home, a clean kill.

A grading process is ``nbgrader autograde`` for one student, started by :func:`run_limited`;
its kernel inherits the resource limits. Measured here (2-core CPU, jax 0.10): a kernel that runs
a chapter maps about 2-3 GB of virtual memory (XLA reserves address space it never touches)
with a resident peak well under 1 GB, so the default 8 GB address-space limit lets correct work
run and stops a memory bomb long before the machine runs out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

GB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """What one student's grading may use.

    cell_seconds: nbgrader's per-cell ``Execute.timeout``.
    notebook_seconds: wall clock for the whole grading process (kernel included); past it the
        process tree is killed and the student scores 0 with that reason.
    memory_bytes: ``RLIMIT_AS`` of the grading process and its kernel (0: unlimited).
    file_bytes: ``RLIMIT_FSIZE``, the largest file the kernel may write.
    output_chars: the most output one cell may record (``ResilientExecute.max_output_chars``).
    processes: ``RLIMIT_NPROC`` inside the sandbox: processes *and threads* its uid may run at
        once (nbgrader, the kernel and JAX's threads use under 100 on 2 cores; a fork bomb stops
        here with ``BlockingIOError``). Each sandbox runs as a uid of its own, so the count is
        per student (0: unlimited).
    tmp_bytes: size of the sandbox's ``/tmp`` (``TMPDIR``), a tmpfs: writing past it fails with
        ``OSError: [Errno 28] No space left on device`` in the kernel (0: bwrap's default).
    """

    cell_seconds: int = 300
    notebook_seconds: int = 1800
    memory_bytes: int = 8 * GB
    file_bytes: int = 1 * GB
    output_chars: int = 200_000
    processes: int = 1024
    tmp_bytes: int = 1 * GB


# A launcher that sets the limits in a fresh interpreter, then becomes the command. (A
# ``preexec_fn`` would run Python between fork and exec in the grader, which holds JAX's threads.)
LAUNCHER = (
    "import os, resource, sys\n"
    "for name, value in ((resource.RLIMIT_AS, {memory}), (resource.RLIMIT_FSIZE, {file}),\n"
    "                    (resource.RLIMIT_CORE, 0)):\n"
    "    if value >= 0:\n"
    "        resource.setrlimit(name, (value, value))\n"
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def limited(command: list[str], limits: Limits) -> list[str]:
    """``command`` started through the launcher that applies ``limits`` (0 = unlimited)."""
    code = LAUNCHER.format(memory=limits.memory_bytes or -1, file=limits.file_bytes or -1)
    return [sys.executable, "-I", "-c", code, *command]


STATE_DIRS = {
    "JUPYTER_CONFIG_DIR": "jupyter-config",
    "JUPYTER_DATA_DIR": "jupyter-data",
    "JUPYTER_RUNTIME_DIR": "jupyter-runtime",
    "IPYTHONDIR": "ipython",
    "MPLCONFIGDIR": "matplotlib",
}
"""Jupyter, IPython and matplotlib state folders (below one state folder) of a grading process."""


def state_env(state: Path, create: bool = True) -> dict[str, str]:
    """The variables pointing Jupyter, IPython and matplotlib at folders under ``state``
    (``create=False`` for a path that only exists inside a sandbox)."""
    if create:
        for sub in STATE_DIRS.values():
            (state / sub).mkdir(parents=True, exist_ok=True)
    return {name: str(state / sub) for name, sub in STATE_DIRS.items()}


def private_env(folder: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment with a fresh home, temp dir and Jupyter/matplotlib state in ``folder``."""
    env = dict(os.environ if base is None else base) | state_env(folder / "state")
    for name, sub in (("HOME", "home"), ("TMPDIR", "tmp")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(folder / sub)
    env["MPLBACKEND"] = "Agg"
    # nbgrader runs tools of its environment (alembic) by name.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for name in ("GENLAB_FAST", "NBGRADER_EXECUTION"):
        env.pop(name, None)
    return env


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:  # psutil missing or the process is gone
        return []


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a process started with ``start_new_session=True``, its group and every child
    (Jupyter kernels run in sessions of their own)."""
    pids = _descendants(process.pid)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    process.wait()


@dataclass(frozen=True)
class Finished:
    returncode: int
    timed_out: bool
    seconds: float
    log: str


def run_limited(command: list[str], *, cwd: Path, env: dict, limits: Limits, log: Path):
    """Run ``command`` under ``limits``; its output goes to ``log`` (the tail is returned)."""
    start = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            limited(command, limits),
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            process.wait(timeout=limits.notebook_seconds)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        # Kernels outlive a killed or crashed nbgrader; leave nothing behind either way.
        kill_tree(process)
    text = log.read_bytes()[-20_000:].decode("utf-8", "replace")
    return Finished(process.returncode, timed_out, time.monotonic() - start, text)
