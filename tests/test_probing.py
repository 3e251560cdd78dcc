"""genlab.probing: cases drawn from a seed, records that survive a hostile kernel, the
verdict, and the catch of a call into the reference."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pytest

from genlab import check, probing
from genlab.probes import tiny


def spec(name="double"):
    return probing.probes_for("tiny")[name]


def outcomes_of(function, name="double", seed=3):
    """The cases of exercise ``name`` in a grading run of base ``seed``, and their outcomes."""
    cases = probing.make_cases(spec(name), probing.exercise_seed(seed, name))
    return cases, probing.run_cases(function, cases)


def test_cases_depend_on_the_seed_and_are_the_same_for_one_seed():
    labels = [c.label for c in probing.make_cases(spec(), 1)]
    assert labels == [c.label for c in probing.make_cases(spec(), 1)]
    assert labels != [c.label for c in probing.make_cases(spec(), 2)]


def test_judge_passes_the_reference_and_fails_a_wrong_answer_naming_the_case():
    cases, outcomes = outcomes_of(tiny.double)
    assert probing.judge(spec(), cases, outcomes, []).passed
    cases, outcomes = outcomes_of(lambda x: x * x)
    verdict = probing.judge(spec(), cases, outcomes, [])
    assert not verdict.passed and verdict.message.startswith("double(3)"), verdict.message


def test_a_case_that_must_raise_fails_when_the_call_returns():
    cases, outcomes = outcomes_of(lambda x: abs(x) ** 0.5, name="root")
    verdict = probing.judge(spec("root"), cases, outcomes, [])
    assert not verdict.passed and "expected ValueError to be raised" in verdict.message


def test_a_comparison_judged_alone_never_runs_the_reference():
    def reference(x):
        raise AssertionError("the reference ran")

    @probing.judged_alone
    def positive(got, want, label):
        assert want is None
        check.is_true(float(got) > 0, f"{label}: expected a positive value")

    probe_spec = probing.Probe("square", reference, lambda rng: [
        probing.Case("square(3) > 0", probing.call(3.0), positive)])  # fmt: skip
    cases = probe_spec.cases(np.random.default_rng(0))
    assert probing.reference_outputs(probe_spec, cases[0]) is None
    assert probing.judge(probe_spec, cases, probing.run_cases(lambda x: x * x, cases), []).passed
    verdict = probing.judge(probe_spec, cases, probing.run_cases(lambda x: -x * x, cases), [])
    assert not verdict.passed and "expected a positive value" in verdict.message


def _comparisons(tree):
    """Every ``(got, want, label)`` function in a probe module: (name, line, uses want, marked)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and [a.arg for a in node.args.args][:2] == [
            "got",
            "want",
        ]:
            uses = any(isinstance(n, ast.Name) and n.id == "want" for n in ast.walk(node))
            marked = any(getattr(d, "id", None) == "judged_alone" for d in node.decorator_list)
            yield node.name, node.lineno, uses, marked


def test_every_comparison_that_ignores_the_reference_is_marked_and_only_those():
    # Unmarked, the reference would run for nothing (whole training runs, on every probe);
    # marked but using ``want``, a correct answer would fail against None.
    folder = Path(probing.__file__).parent / "probes"
    wrong = []
    for path in sorted(folder.glob("*.py")):
        for name, line, uses, marked in _comparisons(ast.parse(path.read_text())):
            if uses == marked:
                wrong.append(f"{path.name}:{line} {name} ({'uses' if uses else 'ignores'} want)")
    assert not wrong, wrong


def test_records_round_trip_and_the_trusted_judge_agrees(tmp_path):
    cases, outcomes = outcomes_of(tiny.double, seed=11)
    probing.write_records(tmp_path, "double", probing.exercise_seed(11, "double"), outcomes, [])
    judge = probing.Judge("tiny", 11)
    assert judge.verdict(tmp_path, "double").passed
    assert not probing.Judge("tiny", 12).verdict(tmp_path, "double").passed  # another run's seed


DAMAGE = ["missing", "symlink", "huge", "malformed", "pickle", "strings", "zip bomb", "count"]


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_records_score_zero_with_a_reason(tmp_path, damage, monkeypatch):
    cases, outcomes = outcomes_of(tiny.double, seed=5)
    records = tmp_path / "records"
    probing.write_records(records, "double", probing.exercise_seed(5, "double"), outcomes, [])
    meta = records / "double.json"
    if damage == "missing":
        meta.unlink()
    elif damage == "symlink":  # a kernel pointing the grader at another file
        real = tmp_path / "elsewhere.json"
        meta.rename(real)
        os.symlink(real, meta)
    elif damage == "huge":
        monkeypatch.setattr(probing, "MAX_JSON_BYTES", 10)
    elif damage == "malformed":
        meta.write_text("{not json")
    elif damage == "pickle":  # an object array is stored pickled; the grader never unpickles
        np.savez(records / "double.npz", a0=np.array([{"x": 1}], dtype=object))
    elif damage == "strings":
        np.savez(records / "double.npz", **{f"a{i}": np.array(["6"]) for i in range(5)})
    elif damage == "zip bomb":  # a few KB on disk, 2 MB unpacked, over a 1 MB cap
        monkeypatch.setattr(probing, "MAX_ARRAY_BYTES", 1 << 20)
        np.savez_compressed(records / "double.npz", a0=np.zeros(1 << 18))
    elif damage == "count":
        data = json.loads(meta.read_text())
        meta.write_text(json.dumps(data | {"cases": data["cases"][:1]}))
    verdict = probing.Judge("tiny", 5).verdict(records, "double")
    assert not verdict.passed and "0 points" in verdict.message, verdict.message


def test_calling_the_reference_is_caught_and_scores_zero():
    def sneaky(x):
        return tiny.double(x)

    with probing.tripwire(tiny.double, sneaky) as flags:
        sneaky(2.0)
    assert flags and probing.FLAG_REFERENCE in flags[0]
    with probing.tripwire(tiny.double, tiny.double) as flags:
        pass
    assert flags and "the reference itself" in flags[0]
    with probing.tripwire(tiny.double, lambda x: 2 * x) as flags:
        pass
    assert not flags
    cases, outcomes = outcomes_of(tiny.double)
    assert not probing.judge(spec(), cases, outcomes, ["called the reference"]).passed


def test_a_forbidden_function_is_caught_under_any_name_even_if_compiled_before():
    import jax
    import jax.numpy as jnp
    from jax import vjp as renamed

    def by_autodiff(x):
        return renamed(jnp.sin, x)[1](jnp.ones_like(x))[0]

    def by_hand(x):
        return jnp.cos(x)

    compiled = jax.jit(by_autodiff)
    compiled(jnp.float32(1.0))  # traced and compiled before the probe
    expected = ["used jax.vjp, which this exercise asks you to work out yourself"]
    for answer, flagged in ((by_autodiff, expected), (compiled, expected), (by_hand, [])):
        with probing.forbidding(("jax.vjp",), []) as flags:
            answer(jnp.float32(1.0))
        assert flags == flagged
    assert float(by_autodiff(jnp.float32(0.0))) == 1.0  # jax.vjp works again afterwards
    # Nested in the reference's tripwire, on a function of the same module: both are caught.
    with (
        probing.tripwire(tiny.double, by_hand) as flags,
        probing.forbidding(("genlab.probes.tiny.root",), flags),
    ):
        assert tiny.root(4.0) == 2.0 and not flags[1:]
        assert flags == [
            "used genlab.probes.tiny.root, which this exercise asks you to work out yourself"
        ]
        assert tiny.double(3.0) == 6.0
    assert flags == flags[:1] and tiny.double(2.0) == 4.0 and tiny.root(9.0) == 3.0
    with (
        probing.tripwire(tiny.double, by_hand) as flags,
        probing.forbidding(("genlab.probes.tiny.root",), flags),
    ):
        assert tiny.double(3.0) == 6.0
    assert flags == [f"{probing.FLAG_REFERENCE} double while being graded"]
    cases, outcomes = outcomes_of(tiny.double)
    assert not probing.judge(spec(), cases, outcomes, expected).passed
    with (
        pytest.raises(TypeError, match="not a Python function"),
        probing.forbidding(("math.sqrt",), []),
    ):
        pass
    with pytest.raises(ImportError, match="no_such"), probing.forbidding(("no_such.thing",), []):
        pass


def test_probe_in_a_plain_kernel_raises_a_check_error_and_records_when_told(tmp_path, monkeypatch):
    namespace = {"double": lambda x: x + 1}
    with pytest.raises(check.CheckError, match="double"):
        probing.probe("tiny", "double", namespace)
    monkeypatch.setenv(probing.RECORD_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(probing.SEED_ENV, "9")
    probing.probe("tiny", "double", namespace)  # records, judges nothing
    assert not probing.Judge("tiny", 9).verdict(tmp_path, "double").passed
    namespace["double"] = lambda x: x + x
    probing.probe("tiny", "double", namespace)
    assert probing.Judge("tiny", 9).verdict(tmp_path, "double").passed


def test_earlier_exercises_are_bound_to_their_references_while_probed_then_restored():
    namespace = {"root": "student's root"}
    with probing.bound_to_references(namespace, ("root", "double"), "tiny"):
        assert namespace["root"] is tiny.root and namespace["double"] is tiny.double
    assert namespace == {"root": "student's root"}


def test_f32_converts_like_jax_without_compiling_a_program_per_shape():
    import jax
    import jax.numpy as jnp

    compiled = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(duration)

    values = np.random.default_rng(0).normal(size=(13, 7)) * 1e3  # float64, rounded on the way
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        got = probing.f32(values)
        assert not compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert isinstance(got, jax.Array) and got.dtype == jnp.float32 and got.shape == (13, 7)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jnp.asarray(values, jnp.float32)))


def test_a_worker_thread_started_before_the_probe_is_caught_calling_the_reference():
    import queue
    import threading

    requests, replies = queue.Queue(), queue.Queue()

    def worker():  # started before the probe: no profile hook reaches it
        while (x := requests.get()) is not None:
            replies.put(tiny.double(x))

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()

    def answer(x):
        requests.put(x)
        return replies.get()

    try:
        with probing.tripwire(tiny.double, answer) as flags:
            assert answer(2.0) == 4.0  # the reference still works, flagged
        assert flags and probing.FLAG_REFERENCE in flags[0], flags
        with probing.tripwire(tiny.root, lambda x: x**0.5) as flags:
            assert answer(3.0) == 6.0 and not flags  # another exercise's probe: not watched
    finally:
        requests.put(None)
        thread.join()
    assert tiny.double.__code__.co_name == "double" and tiny.double(5) == 10  # restored


def test_a_jitted_reference_called_in_a_thread_while_probed_is_caught():
    import threading

    import jax.numpy as jnp

    from genlab import primer

    x = jnp.ones((2, 3))
    primer.logsumexp(x)  # compiled and cached before the probe

    def answer(x, axis=-1):
        out = []
        thread = threading.Thread(target=lambda: out.append(primer.logsumexp(x, axis=axis)))
        thread.start()
        thread.join()
        return out[0]

    with probing.tripwire(primer.logsumexp, answer) as flags:
        answer(x)
    assert flags and "logsumexp" in flags[0], flags


def _pipes(tmp_path, seeds):
    return probing.SeedPipes(tmp_path / "seeds", seeds)


def test_the_seed_is_consumed_by_the_probe_and_a_seed_read_first_is_flagged(tmp_path, monkeypatch):
    judge = probing.Judge("tiny", 41)
    seeds = {name: judge.seed_of(name) for name in ("double", "root")}
    records = tmp_path / "records"
    namespace = {"double": lambda x: 2 * x, "root": lambda x: abs(x) ** 0.5}
    with _pipes(tmp_path, seeds) as pipes:
        monkeypatch.delenv(probing.SEED_ENV, raising=False)
        monkeypatch.setenv(probing.RECORD_DIR_ENV, str(records))
        monkeypatch.setenv(probing.SEED_DIR_ENV, str(pipes.folder))
        probing.probe("tiny", "double", namespace)
        assert probing.take_seed("double") is None  # consumed: a second reader gets nothing
        stolen = probing.take_seed("root")  # an answer cell reads the next exercise's seed
        assert stolen == seeds["root"]
        probing.probe("tiny", "root", namespace)
        digests = pipes.digests()
    assert judge.verdict(records, "double", digests["double"]).passed
    verdict = judge.verdict(records, "root", digests["root"])
    assert not verdict.passed and verdict.flags == [probing.FLAG_SEED], verdict


def test_records_rewritten_after_the_probe_or_without_it_are_flagged(tmp_path, monkeypatch):
    judge = probing.Judge("tiny", 42)
    records = tmp_path / "records"
    with _pipes(tmp_path, {"double": judge.seed_of("double")}) as pipes:
        monkeypatch.setenv(probing.RECORD_DIR_ENV, str(records))
        monkeypatch.setenv(probing.SEED_DIR_ENV, str(pipes.folder))
        probing.probe("tiny", "double", {"double": lambda x: x + 1})  # wrong: records say so
        cases = judge.cases("double")
        outcomes = probing.run_cases(tiny.double, cases)  # later: the reference's outputs
        probing.write_records(records, "double", judge.seed_of("double"), outcomes, [])
        digest = pipes.digests()["double"]
    verdict = judge.verdict(records, "double", digest)
    assert not verdict.passed and verdict.flags == [probing.FLAG_CHANGED], verdict
    verdict = judge.verdict(records, "double", "")  # records, but no probe reported any
    assert not verdict.passed and verdict.flags, verdict
    assert judge.verdict(records, "double").passed  # (unchecked, they would have passed)


def test_seed_pipes_are_read_only_for_the_kernel_side(tmp_path):
    with _pipes(tmp_path, {"double": 7}) as pipes:
        seed = pipes.folder / "double.seed"
        assert oct(seed.stat().st_mode & 0o777) == "0o444"
        assert oct((pipes.folder / "double.done").stat().st_mode & 0o777) == "0o222"


def test_exercise_seeds_are_independent_of_each_other():
    seeds = {probing.exercise_seed(5, n) for n in ("double", "root")} | {
        probing.exercise_seed(6, "double")
    }
    assert len(seeds) == 3 and all(0 <= s < 2**63 for s in seeds)
