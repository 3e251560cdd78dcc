"""The grading sandbox: a student's notebook, its kernel and all they start, under bubblewrap.

One sandbox per student (``bwrap``, Debian package ``bubblewrap``):

- its own PID namespace: when the graded command ends, every process left in it (a double-forked
  daemon included) is killed with it; ``--die-with-parent`` does the same if the grader dies;
- its own network namespace: only a loopback of its own (the grader's 127.0.0.1 is unreachable);
- a root file system that holds only what Python needs, read-only: ``/usr``, the Python
  installation, the virtualenv, the ``genlab`` sources (an editable install stays read-only) and
  a few files of ``/etc``; no course folder, no home, a private ``/tmp``;
- one writable folder, ``/grading``, holding the copy of this student's submission, and a
  private ``/tmp`` (``TMPDIR``), a tmpfs of a fixed size (``Limits.tmp_bytes``);
- an unprivileged uid: run as root, the grader drops to ``nobody`` (65534), or another unused
  uid below it for each sandbox running at the same time (:func:`sandbox_uid`), inside the
  sandbox after bwrap has built it; run as another user, bwrap maps that user to 65534 in a
  user namespace of its own;
- a process count (``RLIMIT_NPROC``, processes and threads, ``Limits.processes``) set inside the
  sandbox: it counts per uid (per user namespace when not root), so per sandbox;
- an environment built from an allow-list, not a copy of the grader's, whose ``PYTHONPATH`` is
  the folder the grader imported ``genlab`` from (:func:`genlab_root`, mounted read-only), so
  the kernel imports exactly that genlab, whatever the install style (editable, ``PYTHONPATH``,
  site-packages).

:func:`sandbox_problem` says why a sandbox cannot be made here (bwrap missing, namespaces off)
or cannot grade (``import genlab, jax`` fails inside, or finds another genlab).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import genlab
from genlab.classroom.limits import state_env

NOBODY = 65534
INSIDE = Path("/grading")
# fonts: without its configuration fontconfig prints "Fontconfig error: Cannot load default
# config file" into the kernel's output (and the students' feedback) when a figure is drawn.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf",
             "localtime", "hosts", "mime.types", "fonts")  # fmt: skip
SHARED_CACHES = ("/var/cache/fontconfig",)
# Variables copied from the grader's environment when set (numerics and JAX configuration).
PASS_PREFIXES = ("JAX_", "XLA_", "OPENBLAS_", "OMP_", "TF_CPP_")
PASS_NAMES = ("GENLAB_FAST", "GENLAB_COMPILE_CACHE")
DROP_PRIVILEGES = (
    "import os, resource, sys; os.setgroups([]); os.setgid({id}); os.setuid({id}); "
    "{nproc}os.execv(sys.argv[1], sys.argv[1:])"
)
LIMIT_PROCESSES = "resource.setrlimit(resource.RLIMIT_NPROC, ({n}, {n})); "
SET_LIMITS = "import os, resource, sys; {nproc}os.execv(sys.argv[1], sys.argv[1:])"
# Uids for sandboxes that run at the same time as root: nobody, then the unused top of the
# 16-bit range (systemd's dynamic users end at 65519).
SANDBOX_UIDS = tuple(range(NOBODY, 65519, -1))
_uids_in_use: set[int] = set()
_uids_lock = threading.Lock()


@contextmanager
def sandbox_uid():
    """A uid for one sandbox, not used by another sandbox of this process while it runs (so the
    process count of one student never counts another's); nobody when all are taken."""
    with _uids_lock:
        free = [uid for uid in SANDBOX_UIDS if uid not in _uids_in_use]
        uid = free[0] if free else NOBODY
        _uids_in_use.add(uid)
    try:
        yield uid
    finally:
        with _uids_lock:
            _uids_in_use.discard(uid)


def genlab_root() -> Path:
    """The folder holding the ``genlab`` package this process imported (``lib/`` of a checkout,
    or a site-packages)."""
    return Path(genlab.__file__).resolve().parents[1]


def python_paths() -> list[Path]:
    """The folders the grading Python reads: its installation, the virtualenv, genlab's sources."""
    paths = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.exec_prefix),
             genlab_root()}  # fmt: skip
    paths |= {Path(p) for p in site.getsitepackages() if Path(p).is_dir()}
    paths.add(Path(os.path.realpath(sys.executable)).parents[1])
    kept: list[Path] = []
    for path in sorted(p.resolve() for p in paths):
        if path == Path("/") or any(path.is_relative_to(k) for k in kept):
            continue
        kept.append(path)
    return kept


def _ancestors(path: Path) -> list[Path]:
    return [p for p in reversed(path.parents) if p != Path("/")]


def sandbox_env(extra: dict[str, str]) -> dict[str, str]:
    """The sandbox's environment: an allow-list plus ``extra`` (paths inside the sandbox)."""
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
        "HOME": str(INSIDE / "home"),
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "MPLBACKEND": "Agg",
        "PYTHONDONTWRITEBYTECODE": "1",
        # the sandbox's uid has no passwd entry (getpass.getuser reads these first)
        "USER": "student",
        "LOGNAME": "student",
        # the genlab the grader imported comes first, whatever put it on the grader's path
        "PYTHONPATH": str(genlab_root()),
    } | state_env(INSIDE / "state", create=False)
    for name, value in os.environ.items():
        if name.startswith(PASS_PREFIXES) or name in PASS_NAMES:
            env[name] = value
    env.update(extra)
    return env


def bwrap_command(command: list[str], scratch: Path, env: dict[str, str], *,
                  readonly: tuple[Path, ...] = (), cwd: Path = INSIDE, uid: int = NOBODY,
                  processes: int = 0, tmp_bytes: int = 0) -> list[str]:  # fmt: skip
    """``command`` wrapped in bwrap: ``scratch`` is mounted read-write at ``/grading``.

    ``readonly``: more host folders to show read-only at their own path (a compilation cache).
    ``uid``: who runs ``command`` when grading as root (see :func:`sandbox_uid`; the scratch
    must be theirs, :func:`prepare_scratch`). ``processes``: ``RLIMIT_NPROC`` inside (0: none).
    ``tmp_bytes``: the size of ``/tmp`` (0: bwrap's default).
    """
    args = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
            "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]  # fmt: skip
    root = os.geteuid() == 0
    if not root:
        args += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    for name in ("usr",):
        args += ["--ro-bind", f"/{name}", f"/{name}"]
    for name in ("bin", "lib", "lib64", "sbin", "lib32"):
        top = Path("/") / name
        if top.is_symlink():
            args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    # bwrap makes the parents of a mount point 0700: the unprivileged uid must traverse them
    args += ["--perms", "0755", "--dir", "/etc"]
    for name in ETC_FILES:
        if (Path("/etc") / name).exists():
            args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for folder in SHARED_CACHES:
        if Path(folder).is_dir():
            for parent in _ancestors(Path(folder)):
                args += ["--perms", "0755", "--dir", str(parent)]
            args += ["--ro-bind", folder, folder]
    args += ["--dev", "/dev", "--proc", "/proc", "--perms", "1777"]
    args += (["--size", str(tmp_bytes)] if tmp_bytes else []) + ["--tmpfs", "/tmp"]
    made: set[Path] = set()
    for path in [*python_paths(), *readonly]:
        if path.is_relative_to("/usr"):
            continue
        for parent in _ancestors(path):  # traversable by the unprivileged uid
            if parent not in made:
                made.add(parent)
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", str(scratch), str(INSIDE), "--chdir", str(cwd), "--clearenv"]
    for name, value in sorted(env.items()):
        args += ["--setenv", name, value]
    nproc = LIMIT_PROCESSES.format(n=int(processes)) if processes else ""
    if root:  # bwrap builds the sandbox as root; the graded command runs as an unprivileged uid
        args += [sys.executable, "-I", "-c", DROP_PRIVILEGES.format(id=int(uid), nproc=nproc)]
    elif nproc:  # set inside the user namespace, so it counts this sandbox's processes only
        args += [sys.executable, "-I", "-c", SET_LIMITS.format(nproc=nproc)]
    return args + list(command)


def prepare_scratch(scratch: Path, uid: int = NOBODY) -> None:
    """Hand the scratch folder to the sandbox's uid (when grading as root)."""
    if os.geteuid() != 0:
        return
    for folder, _, files in os.walk(scratch):
        os.chown(folder, uid, uid)
        for name in files:
            os.chown(os.path.join(folder, name), uid, uid, follow_symlinks=False)


CHECK_IMPORTS = "import genlab, jax; print('genlab=' + genlab.__file__)"


def sandbox_problem() -> str | None:
    """None when a sandbox can be made here and its Python imports the grader's own genlab and
    JAX, else why not (shown in refusals and reports)."""
    if shutil.which("bwrap") is None:
        return ("bubblewrap (bwrap) is not installed: on Debian/Ubuntu `apt-get install "
                "bubblewrap`, on Fedora `dnf install bubblewrap`")  # fmt: skip
    import tempfile

    with tempfile.TemporaryDirectory(prefix="genlab-sandbox-check-") as tmp:
        scratch = Path(tmp)
        prepare_scratch(scratch)
        command = bwrap_command([sys.executable, "-c", CHECK_IMPORTS], scratch,
                                sandbox_env({}))  # fmt: skip
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"bwrap could not start: {error}"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("genlab="):
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        if "Error" in detail:  # Python ran: the imports failed
            return (f"the sandbox's Python cannot run `import genlab, jax` ({detail}); install "
                    "genlab and its dependencies into the virtualenv that runs `genlab grade` "
                    "(`pip install -e .`)")  # fmt: skip
        return f"bwrap cannot create a sandbox here (user namespaces off?): {detail}"
    inside = Path(lines[-1].removeprefix("genlab="))
    if inside.resolve() != Path(genlab.__file__).resolve():
        return (f"the sandbox imports another genlab ({inside}) than the grader "
                f"({genlab.__file__}); grade with the Python of the environment that holds the "
                "course's genlab")  # fmt: skip
    return None
