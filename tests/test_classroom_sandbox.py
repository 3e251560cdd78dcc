"""The grading sandbox itself (genlab.classroom.sandbox): what a student's code can and cannot
reach. Each test runs a small Python program in the sandbox exactly as grading does (bwrap,
limits, allow-listed environment) and checks what it saw from outside."""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from genlab.classroom.limits import Limits, run_limited
from genlab.classroom.sandbox import (
    INSIDE,
    bwrap_command,
    prepare_scratch,
    sandbox_env,
    sandbox_problem,
    sandbox_uid,
)

PROBLEM = sandbox_problem()
if PROBLEM and os.environ.get("CI"):
    raise RuntimeError(f"CI must be able to sandbox: {PROBLEM}")
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"no sandbox here: {PROBLEM}")


def run_in_sandbox(tmp_path: Path, code: str, *, timeout: int = 120, **options):
    """Run ``code`` with Python in a sandbox whose scratch is ``tmp_path/scratch``
    (``options``: more arguments of ``bwrap_command``)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    prepare_scratch(scratch)
    command = bwrap_command([sys.executable, "-c", code], scratch, sandbox_env({}), **options)
    done = run_limited(command, cwd=tmp_path, env={}, limits=Limits(notebook_seconds=timeout),
                       log=tmp_path / "log.txt")  # fmt: skip
    return done, scratch


def test_writes_only_inside_the_scratch_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    code = f"""
import os
open("{INSIDE}/mine.txt", "w").write("ok")
for path in ["{outside}/x", "{sys.prefix}/x", "/usr/x", "/etc/x", "{Path(os.__file__).parent}/x"]:
    try:
        open(path, "w").write("escaped")
        print("WROTE", path)
    except OSError as error:
        print("denied", path, type(error).__name__)
"""
    done, scratch = run_in_sandbox(tmp_path, code)
    assert done.returncode == 0, done.log
    assert (scratch / "mine.txt").read_text() == "ok"
    assert "WROTE" not in done.log, done.log
    assert not list(outside.iterdir())


def test_cannot_see_the_course_folder_the_home_or_the_graders_processes(tmp_path):
    course = Path.cwd()
    secret = tmp_path / "solutions.txt"
    secret.write_text("the answers")
    code = f"""
import os
print("uid", os.getuid())
print("course", os.path.exists("{course}/solutions"), os.path.exists("{course}/gradebook.db"))
print("secret", os.path.exists("{secret}"))
print("grader", os.path.exists("/proc/{os.getpid()}"))
print("pids", len([p for p in os.listdir("/proc") if p.isdigit()]))
print("home", os.path.exists(os.path.expanduser("~root/.bashrc")))
print("env", sorted(os.environ))
"""
    done, _ = run_in_sandbox(tmp_path, code)
    assert done.returncode == 0, done.log
    lines = dict(line.split(" ", 1) for line in done.log.splitlines() if " " in line)
    assert lines["uid"] == "65534"
    assert lines["course"] == "False False" and lines["secret"] == "False"
    assert lines["grader"] == "False" and int(lines["pids"]) <= 4, done.log
    assert lines["home"] == "False"
    assert "SECRET" not in lines["env"] and "HOSTNAME" not in lines["env"]


def test_cannot_connect_to_a_listener_outside(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=5).sendall(b"hidden tests")
    print("CONNECTED")
except OSError as error:
    print("refused", type(error).__name__)
"""
    try:
        done, _ = run_in_sandbox(tmp_path, code)
        assert "CONNECTED" not in done.log and "refused" in done.log, done.log
        with pytest.raises(BlockingIOError):  # nothing is waiting to be accepted
            listener.accept()
    finally:
        listener.close()


def test_a_double_forked_daemon_is_gone_when_the_sandbox_ends(tmp_path):
    marker = f"genlab-daemon-{uuid.uuid4().hex}"
    code = f"""
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c",
                 "import time\\nopen('/grading/started', 'w').close()\\n"
                 "while True: time.sleep(1)", "{marker}"])
    os._exit(0)
os.wait()
while not os.path.exists("/grading/started"):  # the daemon is running
    os.sched_yield()
print("parent done")
"""
    done, scratch = run_in_sandbox(tmp_path, code)
    assert "parent done" in done.log and (scratch / "started").exists(), done.log
    alive = [
        p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])
    ]
    assert not alive, f"daemon survived the sandbox: {alive}"


def test_a_fork_bomb_stops_at_the_process_limit(tmp_path):
    code = """
import os, time
children = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        children += 1
except BlockingIOError as error:
    print("STOPPED", children, type(error).__name__)
"""
    done, _ = run_in_sandbox(tmp_path, code, processes=40)
    assert "STOPPED" in done.log, done.log
    children = int(done.log.split("STOPPED")[1].split()[0])
    assert 0 < children < 40, done.log  # the count includes the sandbox's own processes


def test_tmp_is_a_size_limited_scratch_the_sandbox_can_write(tmp_path):
    code = """
import os
print("TMPDIR", os.environ["TMPDIR"])
written = 0
try:
    with open("/tmp/filler", "wb") as f:
        while True:
            f.write(b"x" * (1 << 20))
            f.flush()
            written += 1
except OSError as error:
    print("FULL", written, error.strerror)
os.remove("/tmp/filler")
open("/tmp/after", "w").write("ok")
print("AFTER", open("/tmp/after").read())
"""
    done, _ = run_in_sandbox(tmp_path, code, tmp_bytes=8 << 20)
    assert "TMPDIR /tmp" in done.log and "AFTER ok" in done.log, done.log
    full = done.log.split("FULL")[1].split(None, 1)
    assert int(full[0]) <= 8 and "No space left" in full[1], done.log


def test_figures_draw_without_fontconfig_noise(tmp_path):
    code = """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
figure = plt.figure()
figure.text(0.5, 0.5, "x")
figure.savefig("/tmp/figure.png")
print("DRAWN")
"""
    done, _ = run_in_sandbox(tmp_path, code)
    assert "DRAWN" in done.log and "Fontconfig" not in done.log, done.log


def test_sandboxes_running_at_once_get_uids_of_their_own():
    with sandbox_uid() as first, sandbox_uid() as second:
        assert first != second and 65519 < second < first <= 65534
    with sandbox_uid() as again:
        assert again == first
