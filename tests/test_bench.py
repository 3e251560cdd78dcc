"""Each benchmark runs in quick mode and fills complete, consistent tables (no timing asserts)."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))
harness = importlib.import_module("bench.harness")
runner = importlib.import_module("bench.run")


def _numbers(table, column: str) -> list[float]:
    index = table.header.index(column)
    return [float(row[index].replace(",", "")) for row in table.rows]


@pytest.fixture(scope="module")
def quick_tables() -> dict[str, list]:
    return {
        name: importlib.import_module(f"bench.{name}").run(quick=True) for name in runner.BENCHMARKS
    }


def test_every_benchmark_fills_its_tables(quick_tables):
    for name, tables in quick_tables.items():
        assert tables, f"{name} produced no table"
        for table in tables:
            assert table.rows, f"{name}: {table.title} has no rows"
            assert all(len(row) == len(table.header) for row in table.rows)
            assert "| --- |" in table.markdown()


def test_attention_benchmark_agrees_and_blockwise_saves_memory_at_length(quick_tables):
    times, memory, skip = quick_tables["attention"]
    assert all(t > 0 for t in _numbers(times, "genlab naive (ms)"))
    assert all(t > 0 for t in _numbers(skip, "causal / non-causal"))
    scratch_naive = _numbers(memory, "XLA scratch naive (MB)")
    assert scratch_naive == sorted(scratch_naive), "naive scratch memory must grow with T"


def test_generation_benchmark_cached_matches_naive(quick_tables):
    (table,) = quick_tables["generation"]
    cached = [row for row in table.rows if row[0].startswith("KV cache")]
    assert len(cached) == 2 and all(row[-1] == "yes" for row in cached)
    assert "none per token" in " ".join(table.notes)


def test_training_benchmark_rows_are_positive(quick_tables):
    (table,) = quick_tables["training"]
    assert all(v > 0 for v in _numbers(table, "tokens/s"))
    assert table.rows[0][0].startswith("course step")


def test_diffusion_benchmark_samplers_are_one_program_and_the_peer_row_is_there(quick_tables):
    samplers, training = quick_tables["diffusion"]
    assert [row[0].split(",")[0] for row in samplers.rows] == [
        "DDPM ancestral",
        "DDPM respaced to 5 steps",
        "flow matching",
    ]
    assert all(v > 0 for v in _numbers(samplers, "steps/s") + _numbers(samplers, "first call (s)"))
    # The chapter's promise: every step in one lax.scan, no retrace for a second call.
    assert _numbers(samplers, "programs compiled in 2 calls") == [1, 1, 1], samplers.rows
    assert training.rows[0][0].startswith("course step") and training.rows[0][-1] == "1"
    assert all(v > 0 for v in _numbers(training, "steps/s"))
    if harness.optional_module("torch") is not None:
        assert training.rows[1][0].startswith("PyTorch eager"), training.rows
    else:
        assert "no PyTorch row" in " ".join(training.notes)


def test_course_benchmark_times_a_notebook_and_grading(quick_tables):
    notebooks, grading, sandbox, chapters = quick_tables["course"]
    assert notebooks.rows[0][0] == "tiny.ipynb"
    assert all(
        v > 0 for v in _numbers(notebooks, "full cold (s)") + _numbers(notebooks, "fast warm (s)")
    )
    # Equal scores across settings are tested for real in test_classroom_grade (serial vs
    # parallel); here the table must say whether they agreed and show them.
    assert {row[-1] for row in grading.rows[:3]} <= {"yes", "NO"}, grading.rows
    assert all(row[4].split() for row in grading.rows[:3]), grading.rows
    assert all(v > 0 for v in _numbers(grading, "s per submission"))
    assert sandbox.rows[0][-1] == "yes", "sandboxed and unsandboxed grading gave different scores"
    assert chapters.rows[0][0] == "tiny" and _numbers(chapters, "warm-up (s)")[0] > 0


def test_notebook_table_names_the_runs_over_their_budget():
    over = importlib.import_module("bench.course")._over_budget
    assert over([179.0, 40.0], [59.0, 30.0]) == "ok"
    assert over([181.0, 40.0], [61.0, 30.0]) == "OVER: full cold, fast cold"
    assert over([100.0, 40.0], [70.0, 61.0]) == "OVER: fast cold, fast warm"


def test_runner_writes_a_report_with_the_machine(tmp_path):
    out = tmp_path / "results.md"
    assert runner.main(["--quick", "--only", "attention", "--output", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmarks") and "- CPU:" in text and "JAX devices" in text
    with pytest.raises(SystemExit):
        runner.main(["--only", "nonsense"])


def test_fmt_rounds_to_three_significant_digits():
    assert harness.fmt(0.012345) == "0.0123"
    assert harness.fmt(12345.6) == "12,346"
    assert harness.fmt(float("nan")) == "n/a"
    assert harness.fmt("x") == "x"


def test_compiling_benchmark_measures_both_emitter_settings(quick_tables):
    (table,) = quick_tables["compiling"]
    assert [row[0].split()[0] for row in table.rows] == ["XLA's", "genlab's"], table.rows
    compiled = _numbers(table, "small programs")
    assert all(v > 0 for v in _numbers(table, "ms to compile each") + compiled)
    assert len(set(compiled)) == 1, "both settings compile the same programs"


def test_foreign_load_leaves_out_the_benchmarks_own_processes(monkeypatch):
    # The process tree's CPU time includes a child once it has been waited for.
    before = harness._own_cpu_seconds()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    assert harness._own_cpu_seconds() - before >= 0.45
    # Every core's busy time includes this process tree's.
    busy, own = harness._busy_cpu_seconds(), harness._own_cpu_seconds()
    subprocess.run([sys.executable, "-c", burn], check=True)
    tick = 1 / harness.os.sysconf("SC_CLK_TCK")
    assert harness._busy_cpu_seconds() - busy >= harness._own_cpu_seconds() - own - 2 * tick
    # The arithmetic: (busy - own) / wall, never negative.
    clocks = {"wall": 0.0, "busy": 100.0, "own": 5.0}
    monkeypatch.setattr(harness.time, "perf_counter", lambda: clocks["wall"])
    monkeypatch.setattr(harness, "_busy_cpu_seconds", lambda: clocks["busy"])
    monkeypatch.setattr(harness, "_own_cpu_seconds", lambda: clocks["own"])
    monkeypatch.setattr(harness, "_self_cpu_seconds", lambda: 0.0)
    load = harness.ForeignLoad()
    clocks.update(wall=10.0, busy=125.0, own=20.0)  # 25 s busy, 15 of them ours, in 10 s
    assert load.cores() == pytest.approx(1.0)
    clocks.update(busy=130.0, own=40.0)  # ticks round: never report negative foreign load
    assert load.cores() == 0.0


ORPHAN = """
import os, signal, sys, time
def burn(*_):
    start = time.process_time()
    while time.process_time() - start < 0.5:
        pass
    print("burnt", flush=True)
signal.signal(signal.SIGUSR1, burn)
print(os.getpid(), flush=True)
sys.stdin.read()
"""
# Starts ORPHAN (which shares its stdin and stdout), then ends on its first line of input.
PARENT = "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', sys.argv[1]])\ninput()"


def test_foreign_load_counts_a_descendant_adopted_by_init():
    # A sandboxed kernel's helpers can outlive their parent: init adopts them and nobody in the
    # benchmark's tree waits for them, so getrusage never sees their CPU time.
    load = harness.ForeignLoad()
    parent = subprocess.Popen([sys.executable, "-c", PARENT, ORPHAN], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        orphan = int(parent.stdout.readline())
        load.tree_seconds()  # seen while its parent lives
        parent.stdin.write("end\n")
        parent.stdin.flush()
        assert parent.wait() == 0  # the orphan now belongs to init
        waited = harness._own_cpu_seconds()
        os.kill(orphan, signal.SIGUSR1)
        assert parent.stdout.readline() == "burnt\n"  # 0.5 s of CPU after its adoption
        assert harness._own_cpu_seconds() - waited < 0.25  # getrusage: not ours
        assert load.tree_seconds() >= 0.45  # followed by process id: ours
    finally:
        parent.stdin.close()  # the orphan reads the end of its input and exits
        parent.stdout.close()
    load.cores()


def test_similarity_benchmark_finds_every_copy_and_no_other_pair(quick_tables):
    (table,) = quick_tables["similarity"]
    for row in table.rows:
        cells = dict(zip(table.header, row))
        found, _, planted = cells["copies found"].split()
        assert found == planted and cells["flagged"] == planted, row
