"""The README's first command, `make lab`, starts JupyterLab serving chapters/."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
import urllib.request

from conftest import RELEASE, ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect_when_listening(port: int, attempts: int = 100) -> None:
    for _ in range(attempts):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return
        except ConnectionRefusedError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


def test_make_lab_serves_the_chapters(tmp_path):
    port, token = free_port(), secrets.token_hex(8)
    args = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token}"
    server = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"LAB_ARGS={args}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so the server stops with make
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)},
    )
    log = []
    try:
        for line in server.stdout:  # wait for the server to say it is up, however long it takes
            log.append(line)
            if re.search(rf"127\.0\.0\.1:{port}/lab", line):
                break
        else:
            raise AssertionError("make lab exited:\n" + "".join(log))
        # The server logs its address just before it binds the port: connect once it accepts.
        connect_when_listening(port)
        url = f"http://127.0.0.1:{port}/api/contents?token={token}"
        with urllib.request.urlopen(url, timeout=30) as response:
            listing = json.load(response)
        served = {item["name"] for item in listing["content"]}
        expected = {p.name for p in RELEASE.iterdir() if p.is_dir()}
        assert expected and expected <= served, (served, expected)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=30) as r:
            assert "JupyterLab" in r.read().decode()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
