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
    cases = probing.make_cases(spec(name), seed)
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
    probing.write_records(tmp_path, "double", 11, outcomes, [])
    judge = probing.Judge("tiny", 11)
    assert judge.verdict(tmp_path, "double").passed
    assert not probing.Judge("tiny", 12).verdict(tmp_path, "double").passed  # another run's seed


DAMAGE = ["missing", "symlink", "huge", "malformed", "pickle", "strings", "zip bomb", "count"]


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_records_score_zero_with_a_reason(tmp_path, damage, monkeypatch):
    cases, outcomes = outcomes_of(tiny.double, seed=5)
    records = tmp_path / "records"
    probing.write_records(records, "double", 5, outcomes, [])
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


# --- the function under test, compiled whole -----------------------------------------------


def _array_cases(shapes, extra=()):
    rng = np.random.default_rng(0)
    return [probing.Case(f"shape {s}", probing.call(probing.f32(rng.normal(size=s)), *extra))
            for s in shapes]  # fmt: skip


def _traces(function):
    """``function`` that also records, on each call, whether it runs under a trace."""
    import jax

    seen = []

    def wrapped(*args, **kwargs):
        seen.append(isinstance(args[0], jax.core.Tracer))
        return function(*args, **kwargs)

    return wrapped, seen


def test_a_function_of_arrays_is_traced_once_per_case_with_the_same_outputs():
    import jax.numpy as jnp

    def softplus_sum(x, scale):
        return jnp.sum(jnp.log1p(jnp.exp(scale * x)), axis=-1) / scale

    cases = _array_cases([(3,), (2, 5), (4, 1)], extra=(2.0,))
    function, traced = _traces(softplus_sum)
    outcomes = probing.run_cases(function, cases)
    assert traced == [True, True, True]  # one trace per case: one program, not one per operation
    for case, outcome in zip(cases, outcomes):
        np.testing.assert_array_equal(outcome.outputs, probing.to_plain(case.run(softplus_sum)))


def test_a_value_read_in_python_falls_back_to_the_call_as_written_and_stops_tracing():
    import jax.numpy as jnp

    def clipped(x):
        if float(jnp.max(x)) > 0.0:  # reads a value: cannot be traced
            return jnp.maximum(x, 0.0)
        return x

    function, traced = _traces(clipped)
    outcomes = probing.run_cases(function, _array_cases([(3,), (4,), (5,)]))
    assert traced == [True, False, False, False]  # one failed trace, then every case as written
    assert all(not o.raised and o.outputs.min() >= 0 for o in outcomes)


def test_an_error_raised_on_purpose_is_the_outcome_and_tracing_goes_on():
    def checked(x, temperature):
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        return x / temperature

    rng = np.random.default_rng(1)
    x = probing.f32(rng.normal(size=4))
    cases = [probing.Case("t = -1", probing.call(x, -1.0), raises=(ValueError,)),
             probing.Case("t = 2", probing.call(x, 2.0))]  # fmt: skip
    function, traced = _traces(checked)
    bad, good = probing.run_cases(function, cases)
    assert "ValueError" in bad.raised and "positive" in bad.message
    np.testing.assert_allclose(good.outputs, np.asarray(x) / 2.0)
    assert traced == [True, False, True]  # the raise re-run as written, then traced again


def test_numpy_arrays_modules_and_jitted_functions_run_as_they_are():
    import jax
    from flax import nnx

    function, traced = _traces(lambda x, *rest: x * 2)
    probing.run_cases(function, [probing.Case("numpy", probing.call(np.ones(3))),
                                 probing.Case("module", probing.call(jax.numpy.ones(3), nnx.Linear(
                                     3, 3, rngs=nnx.Rngs(0))))])  # fmt: skip
    assert traced == [False, False]
    jitted = jax.jit(lambda x: x * 2)
    is_jitted = probing.Case("has .lower", lambda f: np.asarray(hasattr(f, "lower")), probing.exact)
    assert probing.run_cases(jitted, [is_jitted])[0].outputs  # not hidden behind a wrapper
    assert not probing.run_cases(lambda x: x, [is_jitted])[0].outputs
