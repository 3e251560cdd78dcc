"""Benchmark: wall time of every solution notebook, full and fast mode (GENLAB_FAST=1).

Run ``make bench``; the table goes to ``bench/RESULTS.md`` (commit it with the code it measured).
Budget (design section 4): under 3 minutes per chapter in full mode on 2 CPU cores.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
BUDGET_SECONDS = 180


def run_seconds(path: Path, fast: bool) -> float:
    os.environ.pop("GENLAB_FAST", None)
    if fast:
        os.environ["GENLAB_FAST"] = "1"
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def main() -> int:
    os.environ.setdefault("MPLBACKEND", "Agg")
    state = Path(tempfile.mkdtemp(prefix="genlab-bench-"))
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        os.environ.setdefault(name, str(state / name.lower()))
    rows = []
    for path in sorted((ROOT / "solutions").glob("*/*.ipynb")):
        full, fast = run_seconds(path, fast=False), run_seconds(path, fast=True)
        verdict = "ok" if full <= BUDGET_SECONDS else "OVER BUDGET"
        rows.append(f"| {path.parent.name}/{path.name} | {full:.1f} | {fast:.1f} | {verdict} |")
        print(rows[-1], flush=True)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"jax {jax.__version__} ({jax.default_backend()})"
    )
    table = "\n".join(
        [
            "# Notebook run times",
            "",
            f"Measured {datetime.date.today()} on {machine} by `make bench`.",
            f"Budget: {BUDGET_SECONDS} s per chapter in full mode.",
            "",
            "| notebook | full mode (s) | fast mode (s) | budget |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )
    (ROOT / "bench" / "RESULTS.md").write_text(table)
    return 0 if all(row.endswith("ok |") for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
