"""A class on JupyterHub: accounts, nbgrader's exchange, and the instructor's hub commands.

The hub (``deploy/jupyterhub/jupyterhub_config.py``) runs as root on one machine and starts each
user's Jupyter server as that user (LocalProcessSpawner). Students and the instructor move
notebooks through nbgrader's exchange, a shared folder; this module sets up both and runs the
instructor's steps:

    setup     (root) the class's system users, the exchange and the shared JAX cache, the
              instructor's course folder, and ``class.json`` that the hub config reads
    release   nbgrader generate_assignment + release_assignment; warm the shared JAX cache
    collect   nbgrader collect (submissions whose owner is not the named student are refused)
    grade     collect, ``genlab.classroom.grade`` (sandboxed, parallel), generate and release
              feedback
    remove    (root) delete the class's users and the exchange

Every step is a ``genlab hub`` subcommand (``make hub-release CH=...``, ``make hub-grade CH=...``).

Permissions (nbgrader 0.9.6's exchange, plus two safeguards of our own):

- the exchange root is ``1777`` (nbgrader's documented ``ugo+rwx``, and the sticky bit);
- ``<course>/`` and ``outbound/`` belong to the instructor, ``0755``: everyone fetches;
- ``inbound/`` belongs to the instructor, ``3733``: students can create entries but not list
  the folder; setgid gives submissions the instructor's group; sticky (ours) forbids renaming or
  deleting another user's submission;
- a submission is ``0755`` (:class:`OwnSubmit`; nbgrader leaves it ``0777``, which lets anyone
  who learns its name replace the notebooks in it);
- collect refuses a submission whose folder is not owned by the student its name claims
  (:class:`OwnerCheckedCollect`; nbgrader only warns), so nobody can submit for a classmate;
- homes are ``0700``: nobody reads a classmate's work or the instructor's course folder;
- ``feedback/`` is ``0711``: a student opens only the file whose hashed name matches their own
  submission.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nbgrader.exchange.default.collect import ExchangeCollect
from nbgrader.exchange.default.submit import ExchangeSubmit

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "jupyterhub"
STATE_ENV = "GENLAB_HUB_STATE"
DEFAULT_STATE = Path("/srv/genlab-hub")
DEFAULT_EXCHANGE = Path("/srv/nbgrader/exchange")
CLASS_FILE = "class.json"


class HubError(RuntimeError):
    """A hub step failed; the message says which and why."""


# --- nbgrader exchange classes (loaded by name from the hub's nbgrader config) ---------------


class OwnSubmit(ExchangeSubmit):
    """nbgrader's submit, leaving the submission ``0755`` instead of ``0777``: nobody but its
    owner can add, replace or delete files in it."""

    def copy_files(self):
        super().copy_files()
        dest = os.path.join(self.inbound_path, self.assignment_filename)
        os.chmod(dest, 0o755)


class OwnerCheckedCollect(ExchangeCollect):
    """nbgrader's collect, refusing (not only warning about) a submission whose folder is not
    owned by the user its name claims: a student cannot submit as a classmate."""

    def init_src(self):
        super().init_src()
        import pwd

        latest = {}
        pattern = f"*+{self.coursedir.assignment_id}+*"
        for path in sorted(Path(self.inbound_path).glob(pattern)):
            record = self._path_to_record(str(path))
            try:
                owner = pwd.getpwuid(path.lstat().st_uid).pw_name
            except KeyError:
                owner = None
            if owner != record["username"] or path.is_symlink() or not path.is_dir():
                self.log.error("refused %s: claims %s, owned by %s", path, record["username"],
                               owner)  # fmt: skip
                continue
            best = latest.get(record["username"])
            if best is None or record["timestamp"] > best["timestamp"]:
                latest[record["username"]] = record
        wanted = self.coursedir.student_id or None
        self.src_records = [r for user, r in sorted(latest.items()) if wanted in (None, "*", user)]


# --- the class description --------------------------------------------------------------------


@dataclass
class HubClass:
    """Who and where: written by ``genlab hub setup`` to ``<state>/class.json``, read by the hub
    config and by every later ``genlab hub`` command."""

    course_id: str = "genlab"
    instructor: str = "genlab-instructor"
    students: list[str] = field(default_factory=list)
    exchange: str = str(DEFAULT_EXCHANGE)
    course_root: str = ""  # default: ~instructor/course
    shared_cache: str = ""  # default: <state>/cache (jax/ and models/, read-only for students)
    python: str = sys.executable  # the environment with genlab that user servers run in
    state: str = str(DEFAULT_STATE)

    @property
    def cache_jax(self) -> Path:
        return Path(self.shared_cache) / "jax"

    @property
    def cache_models(self) -> Path:
        return Path(self.shared_cache) / "models"

    def save(self) -> Path:
        path = Path(self.state) / CLASS_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.chmod(path, 0o644)
        return path

    @classmethod
    def load(cls, state: Path | str | None = None) -> HubClass:
        state = Path(state or os.environ.get(STATE_ENV) or DEFAULT_STATE)
        path = state / CLASS_FILE
        if not path.is_file():
            raise HubError(f"{path} is missing: run `genlab hub setup` (as root) first")
        return cls(**json.loads(path.read_text()))


def shared_python(target: Path, base: str = "/usr/bin/python3") -> Path:
    """A Python every account can run that sees this environment's packages: a virtualenv of
    ``base`` (same minor version as this Python) holding this environment's site-packages (hard
    links), commands and Jupyter folders, and a copy of genlab's sources of its own, so that it
    works wherever the repository lives.

    Needed when this environment's base Python is private (pyenv under /root, say): user servers
    run as the users. Returns the new environment's ``bin/python``.
    """
    import site
    import sysconfig

    version = _run([base, "-c", "import sys; print(*sys.version_info[:2])"]).stdout.split()
    if tuple(map(int, version)) != sys.version_info[:2]:
        ours = f"{sys.version_info[0]}.{sys.version_info[1]}"
        raise HubError(f"{base} is Python {'.'.join(version)}, this environment {ours}: use --base")
    _run([base, "-m", "venv", "--without-pip", str(target)])
    python = Path(target) / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(_run([str(python), "-c", where]).stdout.strip())
    genlab_dir = _genlab_folder()
    if sys.prefix != sys.base_prefix:
        # This environment's site-packages, hard-linked (2-3 s; a symlink would do for the
        # servers but not for packages that must differ, and the grading sandbox mounts the
        # resolved site folders, so a .pth pointing elsewhere would not do).
        purelib.rmdir()
        ours = sysconfig.get_paths()["purelib"]
        linked = subprocess.run(["cp", "-al", ours, str(purelib)], capture_output=True)
        if linked.returncode != 0:  # another file system
            shutil.rmtree(purelib, ignore_errors=True)
            if genlab_dir.parent == Path(ours).resolve():
                purelib.symlink_to(ours)  # share the folder itself
            else:  # genlab lives elsewhere: a copy of its own, so a full copy of the folder
                shutil.copytree(ours, purelib, symlinks=True)
        else:
            _fix_known_breakage(python, purelib)
    else:
        lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in site.getsitepackages())
        (purelib / "genlab-environment.pth").write_text(lines)
    if not purelib.is_symlink():
        _own_genlab(purelib, genlab_dir)
    # Jupyter's configuration and data (server and lab extensions, kernels) of the environment.
    for name in ("etc", "share"):
        if (Path(sys.prefix) / name).is_dir() and not (Path(target) / name).exists():
            (Path(target) / name).symlink_to(Path(sys.prefix) / name)
    # The environment's commands (nbgrader runs `alembic` by name; jupyter, nbgrader, genlab)
    # with this Python in their first line.
    for script in sorted((Path(sys.prefix) / "bin").iterdir()):
        target_script = python.parent / script.name
        if target_script.exists() or not script.is_file():
            continue
        try:
            text = script.read_text()
        except UnicodeDecodeError:
            continue
        first, _, rest = text.partition("\n")
        if first.startswith("#!") and "python" in first:
            target_script.write_text(f"#!{python}\n{rest}")
            target_script.chmod(0o755)
    for folder, _dirs, files in os.walk(target):  # symlinks are not followed
        os.chmod(folder, os.stat(folder).st_mode | 0o755)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o644)
    return python


def _genlab_folder() -> Path:
    """The folder of the genlab package this process imported."""
    import genlab

    return Path(genlab.__file__).resolve().parent


def _own_genlab(purelib: Path, genlab_dir: Path) -> None:
    """Give the environment at ``purelib`` its own copy of genlab's sources when genlab is not
    already one of its packages (an editable install, or genlab on ``PYTHONPATH``): the
    repository may sit in a folder the class's accounts cannot enter (a clone under /root, or in
    a ``mktemp -d`` folder, mode 0700). Editable-install hooks that point at the repository are
    dropped (in this environment only: each is a link of its own)."""
    target = purelib / "genlab"
    if (target / "__init__.py").is_file():
        return  # installed as a package: already the environment's own (hard-linked) files
    for hook in purelib.glob("__editable__*genlab*"):  # the .pth and its finder module
        hook.unlink()
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(genlab_dir, target, ignore=shutil.ignore_patterns("__pycache__"))


# soupsieve >= 2.6 uses possessive quantifiers that Python 3.11.0-3.11.3's re rejects (Debian 12's
# python3 is 3.11.2): nbconvert's HTML export, hence nbgrader's feedback, fails there. 2.5 works.
SOUPSIEVE_CHECK = "import soupsieve; soupsieve.compile('img:not([alt])')"
SOUPSIEVE_COMPATIBLE = "soupsieve==2.5"


def _fix_known_breakage(python: Path, purelib: Path) -> None:
    """Replace (in the hard-linked copy only) packages known to break on the base Python."""
    import tempfile

    check = subprocess.run([str(python), "-c", SOUPSIEVE_CHECK], capture_output=True)
    if check.returncode == 0:
        return
    with tempfile.TemporaryDirectory(prefix="genlab-compat-") as tmp:
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", tmp,
              SOUPSIEVE_COMPATIBLE])  # fmt: skip
        for old in [purelib / "soupsieve", *purelib.glob("soupsieve-*.dist-info")]:
            shutil.rmtree(old)
        for new in Path(tmp).iterdir():
            if new.name.startswith("soupsieve"):
                shutil.copytree(new, purelib / new.name)
    _run([str(python), "-c", SOUPSIEVE_CHECK])


def check_python(python: str, user: str) -> None:
    """Raise unless ``user`` can run ``python`` and import genlab with it."""
    done = subprocess.run(["runuser", "-u", user, "--", python, "-c", "import genlab, jupyterhub"],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise HubError(
            f"{user} cannot run {python} with genlab and jupyterhub "
            f"({done.stderr.strip()[-300:]}); "
            "install them into an environment every account can read, or make one with "
            "`genlab hub python DIR` and pass it to setup as --python DIR/bin/python"
        )


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise HubError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return done


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def _chown_tree(path: Path, user: str) -> None:
    uid, gid = _ids(user)
    for folder, dirs, files in os.walk(path):
        os.chown(folder, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def create_user(name: str, password: str | None = None) -> None:
    """A local account with a private home (``0700``); ``password`` set with chpasswd."""
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        _run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", name])
    home = Path(pwd.getpwnam(name).pw_dir)
    os.chmod(home, 0o700)
    if password is not None:
        _run(["chpasswd"], input=f"{name}:{password}\n")


def remove_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return
    subprocess.run(["userdel", "--remove", name], capture_output=True)  # mail spool may be absent


def layout_exchange(root: Path, course_id: str, instructor: str) -> None:
    """The exchange with nbgrader's permissions (see the module docstring)."""
    uid, gid = _ids(instructor)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o1777)
    modes = {"": 0o755, "outbound": 0o755, "inbound": 0o3733, "feedback": 0o711}
    for sub, mode in modes.items():
        folder = root / course_id / sub if sub else root / course_id
        folder.mkdir(exist_ok=True)
        os.chown(folder, uid, gid)
        os.chmod(folder, mode)


def setup(hub: HubClass, *, passwords: dict[str, str] | None = None,
          repository: Path | None = None, chapters=()) -> HubClass:  # fmt: skip
    """(root) Users, exchange, shared cache and the instructor's course folder; returns the
    completed class description (also saved to ``<state>/class.json``)."""
    import pwd

    if os.geteuid() != 0:
        raise HubError("genlab hub setup creates users and folders: run it as root")
    passwords = passwords or {}
    repository = Path(repository or DEPLOY.parents[1])
    state = Path(hub.state)
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o755)
    for user in [hub.instructor, *hub.students]:
        create_user(user, passwords.get(user))
    home = Path(pwd.getpwnam(hub.instructor).pw_dir)
    hub.course_root = hub.course_root or str(home / "course")
    hub.shared_cache = hub.shared_cache or str(state / "cache")
    course = Path(hub.course_root)
    from genlab.classroom import steps

    steps.copy_sources(course, repository, chapters)
    for folder in (hub.cache_jax, hub.cache_models):
        folder.mkdir(parents=True, exist_ok=True)
    # genlab grade keeps its cache in <course>/cache (jax/, models/): the shared one, so one
    # warm-up serves students and grading, and the sandboxes read what release warmed.
    link = course / "cache"
    if link.is_symlink() or not link.exists():
        link.unlink(missing_ok=True)
        link.symlink_to(hub.shared_cache)
    _chown_tree(course, hub.instructor)
    _chown_tree(Path(hub.shared_cache), hub.instructor)
    os.chmod(hub.shared_cache, 0o755)
    layout_exchange(Path(hub.exchange), hub.course_id, hub.instructor)
    check_python(hub.python, hub.students[0] if hub.students else hub.instructor)
    hub.save()
    return hub


def remove(hub: HubClass) -> None:
    """(root) Delete the class's users (homes included), the exchange's course and the cache."""
    for user in [*hub.students, hub.instructor]:
        remove_user(user)
    shutil.rmtree(Path(hub.exchange) / hub.course_id, ignore_errors=True)
    if hub.shared_cache:
        shutil.rmtree(hub.shared_cache, ignore_errors=True)


# --- the instructor's steps ------------------------------------------------------------------


def _exchange_args(hub: HubClass) -> list[str]:
    return [
        f"--Exchange.root={hub.exchange}",
        f"--CourseDirectory.course_id={hub.course_id}",
        "--ExchangeFactory.collect=genlab.classroom.hub.OwnerCheckedCollect",
    ]


def _nbgrader(hub: HubClass, *args: str) -> subprocess.CompletedProcess:
    from genlab.classroom import steps

    try:
        return steps.nbgrader(Path(hub.course_root), *args, *_exchange_args(hub))
    except steps.ClassroomError as error:
        raise HubError(str(error)) from None


def warm(hub: HubClass, chapter: str, *, timeout: int = 300) -> None:
    """Run the chapter's solution once as a student's kernel would, with the shared JAX cache
    (and model cache) writable, so students' first runs load compiled programs."""
    import tempfile

    import nbformat
    from nbclient import NotebookClient

    from genlab import model_cache, runtime
    from genlab.classroom.limits import state_env

    source = Path(hub.course_root) / "solutions" / chapter
    with tempfile.TemporaryDirectory(prefix="genlab-hub-warm-") as tmp:
        work = Path(tmp) / chapter
        shutil.copytree(source, work)
        env = dict(os.environ) | state_env(Path(tmp) / "state") | {
            runtime.CACHE_ENV: str(hub.cache_jax), model_cache.CACHE_ENV: str(hub.cache_models),
            "MPLBACKEND": "Agg",
        }  # fmt: skip
        for path in sorted(work.glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            client = NotebookClient(nb, timeout=timeout, allow_errors=True,
                                    resources={"metadata": {"path": str(work)}})  # fmt: skip
            client.execute(env=env)
    for folder in (hub.cache_jax, hub.cache_models):
        for path in [folder, *folder.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


def release(hub: HubClass, chapter: str, *, warm_cache: bool = True) -> Path:
    """Generate the student version and put it in the exchange's outbound folder."""
    from genlab.classroom import steps

    steps.release(Path(hub.course_root), chapter)
    _nbgrader(hub, "release_assignment", chapter, "--force")
    if warm_cache:
        warm(hub, chapter)
    return Path(hub.exchange) / hub.course_id / "outbound" / chapter


def collect(hub: HubClass, chapter: str) -> list[str]:
    """Copy each student's latest own submission to ``submitted/ID/CH``; return the ids."""
    from genlab.classroom.grade import Layout, record_hashes, students_of

    _nbgrader(hub, "collect", chapter, "--update")
    layout = Layout(Path(hub.course_root))
    students = students_of(layout, chapter)
    record_hashes(layout, chapter, students)
    return students


def return_feedback(hub: HubClass, chapter: str) -> list[Path]:
    """Feedback HTML without hidden tests, released to the exchange for students to fetch."""
    from genlab.classroom import steps

    root = Path(hub.course_root)
    paths = steps.feedback(root, chapter)
    # nbgrader's release_feedback names each file by the submission's secret and reads its
    # timestamp: both came with the submission (genlab's graded copy keeps only notebooks).
    for folder in sorted({path.parent for path in paths}):
        submitted = root / "submitted" / folder.parent.name / chapter
        for name in ("timestamp.txt", "submission_secret.txt"):
            if (submitted / name).is_file() and not (folder / name).exists():
                shutil.copy(submitted / name, folder / name)
    _nbgrader(hub, "release_feedback", chapter)
    return paths


def grade(hub: HubClass, chapter: str, *, workers: int = 2, progress: bool = True, **options):
    """Collect, grade in sandboxes (``genlab.classroom.grade``), return feedback; the rows."""
    from genlab.classroom import steps

    students = collect(hub, chapter)
    if not students:
        raise HubError(f"no submissions of {chapter} in {hub.exchange}/{hub.course_id}/inbound")
    try:
        rows = steps.grade(Path(hub.course_root), chapter, students, workers=workers,
                               progress=progress, **options)  # fmt: skip
    except steps.ClassroomError as error:
        raise HubError(str(error)) from None
    return_feedback(hub, chapter)
    return rows


def hub_command(hub: HubClass) -> list[str]:
    """The command that runs the hub (as root) with the deploy folder's configuration."""
    return [hub.python, "-m", "jupyterhub", "-f", str(DEPLOY / "jupyterhub_config.py")]


def check_mode(path: Path) -> str:
    return stat.filemode(path.stat().st_mode)
