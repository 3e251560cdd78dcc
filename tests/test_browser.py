"""A real browser: JupyterLab in headless Chromium (Debian's, driven by Python playwright).

The server runs on 127.0.0.1 with Jupyter's config, data and runtime dirs in a temp dir and
serves a temporary course holding chapter 00's release with every answer filled in
(``genlab.classroom.grading.fill_answers``). The test runs all cells from the Run menu, saves,
and checks the saved notebook: every code cell ran, none has an error output, and figures were
rendered (in the page and in the file). It also opens nbgrader's JupyterLab extensions: the
Validate button, the assignment list and the formgrader.

CI installs ``chromium`` (``.ci/run``). Without /usr/bin/chromium the test fails in CI
(``CI`` set) and is skipped with a printed reason elsewhere.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from genlab.classroom import grading

from conftest import RELEASE, ROOT, SOLUTIONS

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
CHAPTER = "00_jax_primer"
RUN_SECONDS = 600


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: `apt-get install -y chromium chromium-driver` (.ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    print(message)
    pytest.skip(message)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a course folder with the filled-in chapter; yields (url, token, dir)."""
    require_chromium()
    course = tmp_path / "course"
    (course / "student").mkdir(parents=True)
    (tmp_path / "exchange").mkdir()
    config = (ROOT / "nbgrader_config.py").read_text()
    config += f"\nc.Exchange.root = {str(tmp_path / 'exchange')!r}\n"
    (course / "nbgrader_config.py").write_text(config)
    release = nbformat.read(RELEASE / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    solution = nbformat.read(SOLUTIONS / CHAPTER / f"{CHAPTER}.ipynb", as_version=4)
    nbformat.write(grading.fill_answers(release, solution), course / "student" / "chapter.ipynb")

    port, token = free_port(), secrets.token_hex(8)
    env = {**os.environ, "GENLAB_FAST": "1", "PATH": f"{Path(sys.executable).parent}:"
           + os.environ["PATH"]}  # fmt: skip
    env.pop("MPLBACKEND", None)  # the tests' Agg backend would keep figures out of the page
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR"):
        env[name] = str(tmp_path / "jupyter" / name.lower())
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
        f"--port={port}", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={course}",
    ]  # fmt: skip
    if os.getuid() == 0:
        command.append("--allow-root")
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(command, cwd=course, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    pid = server.pid  # the server's own PID: we stop exactly this process (and its group)
    try:
        deadline = time.monotonic() + 120
        while f"127.0.0.1:{port}/lab" not in (tmp_path / "server.log").read_text():
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "JupyterLab did not start"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token, course
    finally:
        os.killpg(pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_filled_in_chapter_runs_in_a_real_browser_with_nbgrader_extensions(lab):
    from playwright.sync_api import sync_playwright

    url, token, course = lab
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/lab/tree/student/chapter.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_function(  # the kernel is up: the status bar says "... | Idle"
                "() => document.body.innerText.includes('| Idle')", timeout=120_000
            )

            # nbgrader's notebook extension: the Validate button in the toolbar.
            assert page.locator(".jp-Toolbar >> text=Validate").count() >= 1

            page.locator(".lm-MenuBar-itemLabel", has_text="Run").click()
            page.get_by_text("Run All Cells", exact=True).click()
            page.wait_for_function(
                """() => {
                    const prompts = [...document.querySelectorAll(
                        '.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent.trim());
                    return prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:$/.test(t));
                }""",
                timeout=RUN_SECONDS * 1000,
            )
            page.wait_for_function(  # the kernel finished the last cell
                "() => document.body.innerText.includes('| Idle')", timeout=RUN_SECONDS * 1000
            )
            images = page.evaluate(
                "() => document.querySelectorAll('.jp-RenderedImage img, "
                'img[src^="data:image/png"]\').length'
            )
            page.screenshot(path=str(course / "after-run.png"))
            page.keyboard.press("Control+s")
            page.wait_for_timeout(3000)

            # nbgrader's lab extensions: the assignment list and the formgrader.
            page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").click()
            page.get_by_text("Assignment List", exact=True).click()
            page.wait_for_selector("text=Released assignments", timeout=60_000)
            page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").click()
            page.get_by_text("Formgrader", exact=True).click()
            page.wait_for_function(
                "() => [...document.querySelectorAll('iframe')].some("
                "f => f.src.includes('/formgrader'))",
                timeout=60_000,
            )
            formgrader = page.frame_locator("iframe[src*='formgrader']")
            formgrader.get_by_text("Manage Assignments").first.wait_for(timeout=60_000)
        finally:
            browser.close()

    assert images >= 2, f"expected rendered figures in the page, found {images}"
    saved = nbformat.read(course / "student" / "chapter.ipynb", as_version=4)
    code = [c for c in saved.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "some cells did not run"
    errors = [
        (i, o.get("ename"), o.get("evalue"))
        for i, c in enumerate(code) for o in c.outputs if o.output_type == "error"
    ]  # fmt: skip
    assert not errors, errors
    pngs = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert pngs >= 2, f"expected figures in the saved notebook, found {pngs}"
    assert shutil.which("chromium") or CHROMIUM.exists()
