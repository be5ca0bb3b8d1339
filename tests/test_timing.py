"""experiments/timing.py: the timing rules and the records the benchmark scripts print."""

import json
import time

import jax
import jax.numpy as jnp
import pytest

from experiments import timing

SLEEP = 0.02


def test_a_sleep_is_timed_within_tolerance():
    measured = timing.time_call(time.sleep, SLEEP, repeats=3)
    assert len(measured.seconds) == 3
    # A sleep never ends early; the upper bound leaves room for a busy shared machine.
    assert SLEEP <= measured.min <= measured.median < SLEEP + 0.05


def test_the_first_call_is_timed_apart_and_warmup_calls_not_at_all():
    calls = []

    def slow_first_call():
        calls.append(len(calls))
        time.sleep(0.2 if len(calls) == 1 else SLEEP)
        return len(calls)

    measured = timing.time_call(slow_first_call, repeats=4, warmup=2)
    assert len(calls) == 1 + 2 + 4
    assert measured.compile_seconds >= 0.2
    assert max(measured.seconds) < 0.2 and len(measured.seconds) == 4
    assert measured.result == 1  # what the first call returned


def test_jitted_calls_are_timed_until_the_result_is_ready():
    class Pending:
        """A result that takes SLEEP seconds to become ready, as a dispatched JAX array does."""

        def block_until_ready(self):
            time.sleep(SLEEP)
            return self

    measured = timing.time_call(lambda: Pending(), repeats=2)
    assert measured.min >= SLEEP
    jitted = timing.time_call(jax.jit(lambda x: x * 2), jnp.arange(3), repeats=1)
    assert jitted.result.tolist() == [0, 2, 4]


def test_cases_run_round_robin_after_each_ones_first_and_warmup_calls():
    order = []
    calls = {name: (lambda name=name: order.append(name)) for name in ("a", "b")}
    timings = timing.time_calls(calls, repeats=2, warmup=1)
    assert order == ["a", "a", "b", "b", "a", "b", "a", "b"]
    assert set(timings) == {"a", "b"}


def test_a_failing_case_is_reported_apart_only_when_asked():
    def out_of_memory():
        raise RuntimeError("RESOURCE_EXHAUSTED")

    calls = {"kernel": lambda: None, "baseline": out_of_memory}
    failures = {}
    timings = timing.time_calls(calls, repeats=1, failures=failures)
    assert list(timings) == ["kernel"] and str(failures["baseline"]) == "RESOURCE_EXHAUSTED"
    with pytest.raises(RuntimeError, match="RESOURCE_EXHAUSTED"):
        timing.time_calls(calls, repeats=1)


@pytest.mark.parametrize("counts", [{"repeats": 0}, {"repeats": 1, "warmup": -1}])
def test_counts_that_would_time_nothing_are_refused(counts):
    with pytest.raises(ValueError, match="repeats must be >= 1|warmup must be >= 0"):
        timing.time_call(time.sleep, 0, **counts)


def test_ratio_follows_the_definition_named_in_the_record():
    record = timing.measurement("b", "c", 2.0, "tokens/s", "base", 8.0, extra=1)
    assert record["ratio"] == 0.25 and record["ratio_definition"] == "value / baseline_value"
    speedup = timing.measurement("b", "c", 2.0, "s", "base", 8.0, ratio=timing.BASELINE_OVER_VALUE)
    assert speedup["ratio"] == 4.0 and speedup["ratio_definition"] == "baseline_value / value"
    assert record["extra"] == 1 and record["cpu_count"] >= 1 and len(record["load_avg"]) == 3
    with pytest.raises(ValueError, match="ratio must be one of"):
        timing.measurement("b", "c", 2.0, "s", "base", 8.0, ratio="value - baseline")


def test_a_missing_or_zero_side_gives_no_ratio_and_values_are_rounded():
    assert timing.measurement("b", "c", 2.0, "s", "base", None)["ratio"] is None
    assert timing.measurement("b", "c", 0.0, "s", "base", 1.0, ratio=timing.BASELINE_OVER_VALUE)["ratio"] is None
    record = timing.measurement("b", "c", 1234.5678, "s", "base", 3.0)
    assert record["value"] == 1235.0 and record["ratio"] == 411.5  # 4 significant digits, ratio before rounding
    assert timing.rounded(1234.5678, digits=None) == 1234.5678 and timing.rounded(None) is None


def test_emit_prints_one_json_line(capsys):
    record = timing.measurement("b", "c", 1.0, "s", "base", 2.0)
    assert timing.emit(record) is record
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == record


def test_context_names_the_machine():
    context = timing.context()
    assert context["backend"] == jax.default_backend() and context["jax_version"] == jax.__version__
    assert context["device"].startswith(jax.devices()[0].platform + " ")
