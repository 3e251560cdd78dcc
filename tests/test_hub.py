"""A class on a real JupyterHub (deploy/jupyterhub), end to end, on this machine.

The module's fixture (root only: it creates system users) builds the class with
``genlab.classroom.hub.setup``: local accounts ``genlab-instructor``, ``genlab-s1`` and
``genlab-s2`` with PAM passwords, an nbgrader exchange and a shared JAX cache in a temporary
folder, and the instructor's course folder; then it starts JupyterHub (configurable-http-proxy from
deploy/jupyterhub/node_modules, LocalProcessSpawner) on 127.0.0.1. Each student's server runs as
that student.

The class test: the instructor releases chapter 00 (``genlab hub release``, run as the
instructor); in a real Chromium each student logs in, fetches the chapter from the assignment
list, writes answers (one all correct, one with two wrong exercises from tests/mutants) as their
own user, validates and submits in the UI; a classmate's forged submission is refused; the
instructor runs ``genlab hub grade`` (collect, sandboxed parallel grading, feedback released);
each student fetches and opens their feedback in the UI; the gradebook holds 17/17 and 14/17.
The security test checks homes, the course folder, the exchange and the shared cache as the
students. At the end the hub, the proxy and every user server are stopped by their PIDs, and the
accounts removed. The class test prints its time.

Without root, or without /usr/bin/chromium, the tests are skipped with the reason printed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from test_browser import CHROMIUM, FLAGS, free_port, require_chromium

from genlab.classroom import grading
from genlab.classroom.grade import Layout, bonus_points

from conftest import RELEASE, ROOT, SOLUTIONS

CHAPTER = "00_jax_primer"
INSTRUCTOR = "genlab-instructor"
STUDENTS = ("genlab-s1", "genlab-s2")
WRONG = {"logsumexp": "naive_overflow", "mse_grad": None}  # None: the first wrong mutant
DEPLOY = ROOT / "deploy" / "jupyterhub"
PROXY = DEPLOY / "node_modules" / ".bin" / "configurable-http-proxy"
UI_SECONDS = 300


def _require_hub_machine() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("the hub test creates system users and runs the hub as root (not root)")
    for tool in ("useradd", "userdel", "chpasswd", "runuser", "bwrap"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is missing")
    if problems:
        message = "; ".join(problems)
        print(f"skipping the JupyterHub class test: {message}")
        pytest.skip(message)
    require_chromium()
    if not PROXY.exists():
        if shutil.which("npm") is None:
            pytest.fail("configurable-http-proxy is not installed and npm is missing: "
                        "apt-get install -y npm, then make hub")  # fmt: skip
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=DEPLOY, check=True)


def as_user(user: str, *command: str, env: dict | None = None, input: str | None = None,
            check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:  # fmt: skip
    """Run ``command`` as ``user`` (runuser), with a clean environment plus ``env``."""
    base = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": f"/home/{user}"}
    full = ["runuser", "-u", user, "--", "env", "-i",
            *[f"{k}={v}" for k, v in (base | (env or {})).items()], *command]  # fmt: skip
    done = subprocess.run(full, capture_output=True, text=True, input=input, timeout=timeout,
                          cwd="/")  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} as {user} failed:\n{done.stdout[-3000:]}\n"
                             f"{done.stderr[-3000:]}")  # fmt: skip
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie counts as stopped
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _stop(pid: int, seconds: float = 30) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + seconds
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _alive(pid):
            return


def _server_pids(state: Path) -> dict[str, int]:
    """The PIDs of the users' servers, from the hub's database (LocalProcessSpawner state)."""
    db = state / "jupyterhub.sqlite"
    if not db.exists():
        return {}
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT users.name, spawners.state FROM spawners JOIN users "
            "ON spawners.user_id = users.id"
        ).fetchall()
    pids = {}
    for name, state_json in rows:
        pid = json.loads(state_json or "{}").get("pid")
        if pid:
            pids[name] = int(pid)
    return pids


def _user_pids(users) -> list[int]:
    """Processes still running as the class's users (kernels the servers started)."""
    import pwd

    uids = set()
    for user in users:
        try:
            uids.add(pwd.getpwnam(user).pw_uid)
        except KeyError:
            pass
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid in uids:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def hub_class():
    """The class on a running hub; yields a dict of what the tests need."""
    _require_hub_machine()
    from genlab.classroom import hub

    base = Path(tempfile.mkdtemp(prefix="genlab-hub-"))
    os.chmod(base, 0o755)  # the users reach the exchange, the cache and the Python below it
    users = (INSTRUCTOR, *STUDENTS)
    passwords = {user: secrets.token_urlsafe(12) for user in users}
    for user in users:  # a leftover of an interrupted run
        hub.remove_user(user)
    hub_process, pids, log = None, {}, None
    try:
        python = hub.shared_python(base / "python")
        spec = hub.setup(
            hub.HubClass(instructor=INSTRUCTOR, students=list(STUDENTS),
                         exchange=str(base / "exchange"), state=str(base / "state"),
                         python=str(python)),
            passwords=passwords, repository=ROOT, chapters=[CHAPTER],
        )  # fmt: skip
        ports = {name: free_port() for name in ("PORT", "API_PORT", "HUB_PORT")}
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "GENLAB"))},
            "GENLAB_HUB_STATE": spec.state, "GENLAB_FAST": "1",
            **{f"GENLAB_HUB_{name}": str(port) for name, port in ports.items()},
        }  # fmt: skip
        log = open(base / "hub.log", "w")
        hub_process = subprocess.Popen(hub.hub_command(spec), cwd=spec.state, env=env,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip
        pids["hub"] = hub_process.pid  # the hub's own PID
        deadline = time.monotonic() + 120
        while "JupyterHub is now running" not in (base / "hub.log").read_text():
            assert hub_process.poll() is None, (base / "hub.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "JupyterHub did not start"
            time.sleep(0.3)
        pids["proxy"] = int((Path(spec.state) / "proxy.pid").read_text())
        user_env = {"PATH": f"{python.parent}:/usr/bin:/bin", "GENLAB_HUB_STATE": spec.state,
                    "GENLAB_FAST": "1"}  # fmt: skip
        yield {
            "spec": spec, "url": f"http://127.0.0.1:{ports['PORT']}", "passwords": passwords,
            "python": python, "base": base, "user_env": user_env, "pids": pids,
        }  # fmt: skip
    finally:
        # Stop by PID: the users' servers (PIDs from the hub's database, read while the hub
        # still holds them), the hub (which also stops servers and proxy), the proxy, and any
        # process left running as a class user (kernels); then remove the accounts.
        spec_state = base / "state"
        servers = _server_pids(spec_state)
        pids.update({f"server:{name}": pid for name, pid in servers.items()})
        if hub_process is not None:
            _stop(hub_process.pid)
            hub_process.wait(timeout=10)
        for pid in pids.values():
            _stop(pid)
        leftovers = _user_pids(users)
        for pid in leftovers:
            _stop(pid, seconds=5)
        still = {name: pid for name, pid in pids.items() if _alive(pid)}
        if log is not None:
            log.close()
        print(f"stopped by PID: {pids}; leftover user processes stopped: {leftovers}")
        for user in users:
            hub.remove_user(user)
        shutil.rmtree(base, ignore_errors=True)
        assert not still, f"still running after teardown: {still}"


# --- the browser side ------------------------------------------------------------------------


def _login(browser, url: str, user: str, password: str):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{url}/hub/login")
    page.fill("#username_input", user)
    page.fill("#password_input", password)
    page.click("#login_submit")
    page.wait_for_selector(".jp-LabShell", timeout=180_000)
    page.wait_for_selector(".lm-MenuBar-itemLabel >> text=Nbgrader", timeout=60_000)
    return page


def _nbgrader_menu(page) -> str:
    page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").click()
    menu = page.locator(".lm-Menu").last
    menu.wait_for(timeout=10_000)
    text = menu.inner_text()
    page.keyboard.press("Escape")
    return text


def _open_assignment_list(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").click()
    page.get_by_text("Assignment List", exact=True).click()
    page.wait_for_selector("text=Released assignments", timeout=60_000)


def _refresh(page) -> None:
    page.click("#refresh_assignments_list")
    page.wait_for_timeout(1500)


def _fetch(page) -> None:
    button = page.locator("#released_assignments_list .list_item", has_text=CHAPTER).locator(
        "button", has_text="Fetch"
    )
    button.wait_for(timeout=60_000)
    button.click()
    page.locator("#fetched_assignments_list .list_item", has_text=CHAPTER).first.wait_for(
        timeout=60_000
    )


def _start_validate(page) -> None:
    item = page.locator("#fetched_assignments_list > .list_item", has_text=CHAPTER).first
    item.locator("a.assignment-notebooks-link").click()
    button = item.locator("button", has_text="Validate")
    button.wait_for(timeout=30_000)
    button.click()


def _finish_validate(page) -> str:
    """Wait for the validation's dialog; return its text (and close it)."""
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=UI_SECONDS * 1000)
    text = dialog.inner_text()
    page.locator(".jp-Dialog button.jp-mod-accept, .jp-Dialog button").first.click()
    dialog.wait_for(state="detached", timeout=30_000)
    return text


def _submit(page) -> None:
    item = page.locator("#fetched_assignments_list > .list_item", has_text=CHAPTER).first
    item.locator("button", has_text="Submit").click()
    page.locator("#submitted_assignments_list .list_item", has_text=CHAPTER).first.wait_for(
        timeout=60_000
    )


def _fetch_feedback(page) -> None:
    deadline = time.monotonic() + 60
    item = page.locator("#submitted_assignments_list > .list_item", has_text=CHAPTER).first
    while "feedback available to fetch" not in item.inner_text():
        assert time.monotonic() < deadline, item.inner_text()
        _refresh(page)
    item.locator("button", has_text="Fetch Feedback").click()
    page.locator("#submitted_assignments_list", has_text="(view feedback)").wait_for(timeout=60_000)


# --- the class -------------------------------------------------------------------------------


def _answers() -> dict[str, nbformat.NotebookNode]:
    release = nbformat.read(RELEASE / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    solution = nbformat.read(SOLUTIONS / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    correct = grading.fill_answers(release, solution)
    variants = grading.load_variants(ROOT / "tests" / "mutants" / f"{CHAPTER}.py")
    partly = correct
    for name, variant in WRONG.items():
        source = variants.wrong[name][variant or next(iter(variants.wrong[name]))]
        partly = grading.replace_answer(partly, name, source.strip() + "\n")
    return {STUDENTS[0]: correct, STUDENTS[1]: partly}


def _write_as(user: str, path: str, nb) -> None:
    """Write the notebook as ``user`` (the file is theirs, as if saved from their server)."""
    code = "import sys; open(sys.argv[1], 'w').write(sys.stdin.read())"
    as_user(user, "/usr/bin/python3", "-c", code, path, input=nbformat.writes(nb), check=True)


def test_class_on_jupyterhub(hub_class):
    from playwright.sync_api import sync_playwright

    start = time.perf_counter()
    spec, url, env = hub_class["spec"], hub_class["url"], hub_class["user_env"]
    python = str(hub_class["python"])
    steps: dict[str, float] = {}

    def step(name: str, since: float) -> float:
        now = time.perf_counter()
        steps[name] = now - since
        print(f"{name}: {steps[name]:.1f} s", flush=True)
        return now

    # The instructor releases chapter 00 to the exchange and warms the shared JAX cache.
    as_user(
        INSTRUCTOR,
        python,
        "-m",
        "genlab.classroom.cli",
        "hub",
        "release",
        CHAPTER,
        env=env,
        check=True,
    )
    outbound = Path(spec.exchange) / spec.course_id / "outbound" / CHAPTER
    assert (outbound / f"{CHAPTER}.ipynb").is_file()
    assert any(Path(spec.shared_cache, "jax").iterdir()), "the shared JAX cache was not warmed"
    t = step("release + warm", start)

    answers = _answers()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            pages = {s: _login(browser, url, s, hub_class["passwords"][s]) for s in STUDENTS}
            for page in pages.values():  # a student's menu: no formgrader, no course list
                menu = _nbgrader_menu(page)
                assert "Assignment List" in menu and "Formgrader" not in menu, menu
                assert "Course List" not in menu, menu
                _open_assignment_list(page)
                _fetch(page)
            t = step("log in + fetch", t)
            for student, page in pages.items():
                path = f"/home/{student}/{CHAPTER}/{CHAPTER}.ipynb"
                _write_as(student, path, answers[student])
                _start_validate(page)  # both validations run at once, each on its server
            verdicts = {s: _finish_validate(page) for s, page in pages.items()}
            assert "Success! Your notebook passes all the tests." in verdicts[STUDENTS[0]]
            assert "The following cell failed" in verdicts[STUDENTS[1]], verdicts[STUDENTS[1]]
            t = step("validate", t)
            for page in pages.values():
                _submit(page)
            t = step("submit", t)

            # A student's submission forged in a classmate's name is refused at collection.
            inbound = Path(spec.exchange) / spec.course_id / "inbound"
            forged = inbound / f"{STUDENTS[1]}+{CHAPTER}+2099-01-01 00:00:00.000000 UTC+forged"
            as_user(STUDENTS[0], "mkdir", str(forged), check=True)
            _write_as(STUDENTS[0], f"{forged}/{CHAPTER}.ipynb", answers[STUDENTS[0]])
            as_user(STUDENTS[0], "/usr/bin/python3", "-c",
                    f"open('{forged}/timestamp.txt', 'w').write('2099-01-01 00:00:00.000000 UTC')",
                    check=True)  # fmt: skip

            # The instructor collects, grades in sandboxes (2 at once), returns feedback.
            done = as_user(INSTRUCTOR, python, "-m", "genlab.classroom.cli", "hub", "grade",
                           CHAPTER, "--workers", "2", env=env, check=True)  # fmt: skip
            print(done.stdout)
            t = step("collect + grade + feedback", t)
            gradebook = Path(spec.course_root) / "gradebook.db"
            scores, full = {}, {}
            for student in STUDENTS:
                cells = grading.read_scores(gradebook, CHAPTER, CHAPTER, student)
                scores[student] = sum(score for score, _ in cells.values())
                full[student] = sum(points for _, points in cells.values())
                lost = {name: cells[f"test_{name}"][1] for name in WRONG}
            # a challenge is extra credit: 0 in the maximum, its points on top when passed
            bonus = sum(bonus_points(Layout(Path(spec.course_root)), CHAPTER).values())
            total = full[STUDENTS[0]] + bonus
            assert full[STUDENTS[1]] + bonus == total > 0
            assert scores == {STUDENTS[0]: total, STUDENTS[1]: total - sum(lost.values())}, scores
            print(f"gradebook: {scores} of {total}")

            # Each student fetches the feedback in the assignment list and opens it.
            for student, page in pages.items():
                _fetch_feedback(page)
                feedback = sorted(Path(f"/home/{student}/{CHAPTER}/feedback").glob(
                    f"*/{CHAPTER}.html"))  # fmt: skip
                assert len(feedback) == 1, feedback
                relative = feedback[0].relative_to(f"/home/{student}")
                page.goto(f"{url}/user/{student}/files/{relative}")
                text = page.locator("body").inner_text()
                shown = re.search(r"\(Score: ([0-9.]+) / ([0-9.]+)\)", text)
                assert shown and float(shown.group(1)) == scores[student], text[:2000]
                assert "BEGIN HIDDEN TESTS" not in text
            step("feedback in the UI", t)
        finally:
            browser.close()
    seconds = time.perf_counter() - start
    print("hub class test steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()))
    print(f"JupyterHub class test: {seconds:.1f} s in total (fixture set-up not included)")


def test_students_cannot_reach_each_other_or_the_course(hub_class):
    spec = hub_class["spec"]
    s1, s2 = STUDENTS
    course = Path(spec.course_root)
    # Homes are private: neither a classmate's notebook nor the instructor's course folder.
    secret = f"/home/{s2}/private.txt"
    as_user(s2, "/usr/bin/python3", "-c", f"open('{secret}', 'w').write('mine')", check=True)
    for command in (["cat", secret], ["ls", f"/home/{s2}"], ["ls", str(course)],
                    ["cat", str(course / "nbgrader_config.py")],
                    ["ls", str(course / "solutions")]):  # fmt: skip
        done = as_user(s1, *command)
        assert done.returncode != 0 and "Permission denied" in done.stderr, (command, done)
    # The shared JAX cache is read-only for students.
    cache = Path(spec.shared_cache) / "jax"
    assert as_user(s1, "ls", str(cache)).returncode == 0
    assert as_user(s1, "touch", str(cache / "planted")).returncode != 0

    # The exchange: inbound cannot be listed; a classmate's submission can be neither
    # replaced, nor renamed or deleted, nor added to.
    inbound = Path(spec.exchange) / spec.course_id / "inbound"
    assert as_user(s1, "ls", str(inbound)).returncode != 0
    theirs = inbound / f"{s2}+{spec.course_id}-test+2026-01-01 00:00:00.000000 UTC+abc"
    as_user(s2, "mkdir", str(theirs), check=True)
    as_user(s2, "/usr/bin/python3", "-c", f"open('{theirs}/work.ipynb', 'w').write('{{}}')",
            check=True)  # fmt: skip
    os.chmod(theirs, 0o755)  # what genlab.classroom.hub.OwnSubmit leaves
    attempts = [
        ["/usr/bin/python3", "-c", f"open('{theirs}/work.ipynb', 'w').write('x')"],
        ["rm", "-f", f"{theirs}/work.ipynb"],
        ["touch", f"{theirs}/extra.ipynb"],
        ["mv", str(theirs), str(inbound / "moved")],
        ["rm", "-rf", str(theirs)],
    ]
    for command in attempts:
        assert as_user(s1, *command).returncode != 0, command
    assert (theirs / "work.ipynb").read_text() == "{}"
    shutil.rmtree(theirs)


def test_each_role_sees_its_nbgrader_extensions(hub_class):
    """The instructor's JupyterLab has the formgrader and the course list; a student's has the
    assignment list only, and the student's server does not serve the formgrader at all."""
    from playwright.sync_api import sync_playwright

    url, passwords = hub_class["url"], hub_class["passwords"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            teacher = _login(browser, url, INSTRUCTOR, passwords[INSTRUCTOR])
            menu = _nbgrader_menu(teacher)
            assert "Formgrader" in menu and "Course List" in menu, menu
            reply = teacher.request.get(f"{url}/user/{INSTRUCTOR}/formgrader")
            assert reply.status == 200, reply.status
            student = _login(browser, url, STUDENTS[0], passwords[STUDENTS[0]])
            menu = _nbgrader_menu(student)
            assert "Formgrader" not in menu and "Assignment List" in menu, menu
            reply = student.request.get(f"{url}/user/{STUDENTS[0]}/formgrader")
            assert reply.status == 404, reply.status
        finally:
            browser.close()


def test_shared_python_has_a_genlab_of_its_own():
    """`genlab hub python DIR` works wherever the repository lives: its genlab is a copy inside
    DIR, not the editable install's path into the clone, and an unprivileged account imports it
    (a clone in a 0700 folder, as `mktemp -d` or root's home makes, is then no obstacle)."""
    from genlab.classroom import hub

    if subprocess.run(["/usr/bin/python3", "-c", "import sys; assert sys.version_info[:2] == "
                       f"{tuple(sys.version_info[:2])}"]).returncode != 0:  # fmt: skip
        reason = "/usr/bin/python3 is not this Python's minor version"
        print(f"skipping the shared-Python test: {reason}")
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="genlab-python-"))
    try:
        os.chmod(base, 0o755)
        python = hub.shared_python(base / "python")
        where = subprocess.run([str(python), "-c", "import genlab; print(genlab.__file__)"],
                               capture_output=True, text=True, check=True,
                               env={"PATH": "/usr/bin:/bin"})  # fmt: skip
        assert Path(where.stdout.strip()).resolve().is_relative_to(base.resolve()), where.stdout
        ours = Path(hub.__file__).resolve().parent
        assert not list((Path(where.stdout.strip()).parent.parent).glob("__editable__*genlab*"))
        assert (ours / "__init__.py").exists(), "the repository's genlab is untouched"
        if os.geteuid() == 0 and shutil.which("runuser"):
            as_nobody = subprocess.run(["runuser", "-u", "nobody", "--", str(python), "-c",
                                        "import genlab.probing"],
                                       capture_output=True, text=True)  # fmt: skip
            assert as_nobody.returncode == 0, as_nobody.stderr[-2000:]
    finally:
        shutil.rmtree(base, ignore_errors=True)
