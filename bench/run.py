"""Run the benchmarks and write ``bench/results.md``: ``make bench`` (or ``python -m bench.run``).

    python -m bench.run                      # every benchmark, full sizes -> bench/results.md
    python -m bench.run --only attention     # some of them
    python -m bench.run --quick --output -   # tiny sizes, print only (the test suite does this)
    python -m bench.run --only course --chapters 05,06 --output /tmp/x.md   # some chapters' rows

Every table's comparisons are ratios measured in the same run, on the machine described at the
top of the file. Optional peers (torch, transformers) are measured when installed:
``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import ROOT, ForeignLoad, machine_summary

BENCHMARKS = (
    "attention",
    "generation",
    "training",
    "compiling",
    "diffusion",
    "course",
    "similarity",
)


def _jupyter_state() -> None:
    """Kernels started by the course benchmark keep their state out of ~."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    state = Path(tempfile.mkdtemp(prefix="genlab-bench-"))
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        os.environ.setdefault(name, str(state / name.lower()))


# Other processes may keep at most this many cores busy, on average, during a benchmark.
FOREIGN_CORES = 0.2
LOADED = (
    "**NOT A RESULT: the machine was loaded** (other processes kept {foreign:.2f} cores busy on "
    "average while this benchmark ran; at most {limit} is a quiet machine), so other work "
    "competed for the CPU and these times and ratios are distorted. Measure again on a quiet "
    "machine."
)


def report(names: list[str], quick: bool) -> str:
    parts = [
        "# Benchmarks",
        "",
        f"Written {datetime.date.today()} by `make bench`"
        + (" in quick mode (sizes too small to mean anything)" if quick else "")
        + ". Machine:",
        "",
        *machine_summary(),
        "",
    ]
    cores = os.cpu_count() or 1
    for name in names:
        start, load, foreign = time.perf_counter(), os.getloadavg()[0], ForeignLoad()
        module = importlib.import_module(f"bench.{name}")
        tables = module.run(quick=quick)
        others = foreign.cores()
        for table in tables:
            table.notes.append(
                f"Other processes kept {others:.2f} of the {cores} cores busy on average while "
                f"this benchmark ran (load average, which counts the benchmark's own work: "
                f"{load:.1f} at its start, {os.getloadavg()[0]:.1f} at its end)."
            )
            if not others <= FOREIGN_CORES:  # NaN (no /proc/stat) is not quiet either
                table.notes.insert(0, LOADED.format(foreign=others, limit=FOREIGN_CORES))
            parts.append(table.markdown())
        print(f"bench {name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check it works")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated names")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results.md"), help="or -")
    parser.add_argument(
        "--allow-load",
        action="store_true",
        help="measure on a loaded machine anyway (tables marked NOT A RESULT)",
    )
    parser.add_argument(
        "--chapters", default="", help="course benchmark: only these chapters' rows, e.g. 05,06,07"
    )
    args = parser.parse_args(argv)
    if args.chapters:
        os.environ["GENLAB_BENCH_CHAPTERS"] = args.chapters
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    _jupyter_state()
    cores, load = os.cpu_count() or 1, os.getloadavg()[0]
    if load > cores and not args.quick and args.output != "-" and not args.allow_load:
        parser.error(f"the load average is {load:.1f} on {cores} cores: the numbers would not be "
                     "results. Stop other work and run again (or pass --allow-load, and the tables "
                     "will be marked NOT A RESULT)")  # fmt: skip
    text = report(names, args.quick)
    if args.output == "-":
        print(text)
    else:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
