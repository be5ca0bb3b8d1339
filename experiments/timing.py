"""The timing and reporting pieces the experiments/benchmark_*.py scripts share.

  time_calls(calls, repeats=, warmup=)  times no-argument callables round-robin
  time_call(fn, *args, repeats=, warmup=)  the same for one function
  measurement(...)                      one record comparing a case with a baseline
  median_and_best(...)                  the same for rates, with the best rounds alongside
  emit(record)                          prints a record as one JSON line on stdout
  context()                             the machine a record was measured on

Timing rules, the same for every script: a case's first call (tracing, XLA
compilation and one run) is timed on its own as `compile_seconds`; then
`warmup` untimed calls; then `repeats` rounds, each calling every case once
in turn (round-robin, so that load from other processes on a shared machine
hits all cases alike). Every call is timed up to `jax.block_until_ready` of
what it returns, since JAX dispatches asynchronously and would otherwise
report the time to enqueue the work, not to do it.

Ratio: a measurement's `ratio` is `value / baseline_value` unless the script
asks for `baseline_value / value` (for times, where that is the speed-up);
every record names the one it uses in `ratio_definition`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax

VALUE_OVER_BASELINE = "value / baseline_value"
BASELINE_OVER_VALUE = "baseline_value / value"
_RATIOS = {VALUE_OVER_BASELINE: lambda value, base: value / base, BASELINE_OVER_VALUE: lambda value, base: base / value}


@dataclass(frozen=True)
class Timing:
    """What time_calls measured for one case."""

    compile_seconds: float  # the first call: tracing, compilation and one run
    seconds: tuple[float, ...]  # one entry per timed round
    result: Any = field(default=None, repr=False, compare=False)  # what the first call returned

    @property
    def median(self) -> float:
        """Median seconds per call: the figure the scripts report."""
        return statistics.median(self.seconds)

    @property
    def min(self) -> float:
        """Fastest call: on a shared machine, the closest to the uncontended speed."""
        return min(self.seconds)


def _check_counts(repeats: int, warmup: int) -> None:
    """Fails early: repeats=0 would otherwise surface later as a median of no times."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1 (timed calls per case), got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0 (untimed calls per case after the first), got {warmup}")


def _seconds(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds until fn's result is ready, the result)."""
    start = time.perf_counter()
    result = jax.block_until_ready(fn())
    return time.perf_counter() - start, result


def _first_call(fn: Callable[[], Any], warmup: int) -> tuple[float, Any]:
    """(seconds, result) of fn's first call, after which `warmup` untimed calls."""
    seconds, result = _seconds(fn)
    for _ in range(warmup):
        _seconds(fn)
    return seconds, result


def time_calls(
    calls: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int = 0,
    failures: dict[str, Exception] | None = None,
) -> dict[str, Timing]:
    """name -> Timing of each no-argument callable, following the module's rules.

    With a `failures` dict, a case whose first or warm-up call raises is left
    out of the rounds and its exception stored there under its name (a
    baseline that runs out of memory then does not stop the others);
    without one, the exception propagates.
    """
    _check_counts(repeats, warmup)
    first = {}
    for name, fn in calls.items():
        try:
            first[name] = _first_call(fn, warmup)
        except Exception as error:
            if failures is None:
                raise
            failures[name] = error
    rounds = {name: [] for name in first}
    for _ in range(repeats):
        for name in first:
            rounds[name].append(_seconds(calls[name])[0])
    return {name: Timing(seconds, tuple(rounds[name]), result) for name, (seconds, result) in first.items()}


def time_call(fn: Callable[..., Any], *args: Any, repeats: int, warmup: int = 0) -> Timing:
    """Timing of fn(*args): time_calls for a single case."""
    return time_calls({"call": lambda: fn(*args)}, repeats=repeats, warmup=warmup)["call"]


def rounded(x: float | None, digits: int | None = 4) -> float | None:
    """x to `digits` significant digits (None: as it is). Four is more than a
    shared machine's run-to-run noise (percents) lets one read."""
    if x is None or digits is None or not math.isfinite(x) or x == 0:
        return x
    return float(f"{x:.{digits}g}")


def measurement(
    benchmark: str,
    case: str,
    value: float | None,
    unit: str,
    baseline: str,
    baseline_value: float | None,
    *,
    ratio: str = VALUE_OVER_BASELINE,
    **fields: Any,
) -> dict:
    """One record: `case` against `baseline`, both in `unit`, measured in the
    same run; then the script's own `fields`, then context().

    `ratio` names the definition (VALUE_OVER_BASELINE or BASELINE_OVER_VALUE);
    it is computed before value, baseline_value and it are rounded (see
    rounded()), and is None where either side is missing (a failed baseline)
    or it would divide by zero.
    """
    if ratio not in _RATIOS:
        raise ValueError(f"ratio must be one of {sorted(_RATIOS)}, got {ratio!r}")
    divisor = baseline_value if ratio == VALUE_OVER_BASELINE else value
    computable = value is not None and baseline_value is not None and divisor != 0
    return {
        "benchmark": benchmark,
        "case": case,
        "value": rounded(value),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": rounded(baseline_value),
        "ratio": rounded(_RATIOS[ratio](value, baseline_value)) if computable else None,
        "ratio_definition": ratio,
        **fields,
        **context(),
    }


def median_and_best(
    benchmark: str, case: str, unit: str, baseline: str, rates: Mapping[str, tuple[float, float]], **fields: Any
) -> dict:
    """The measurement of rates[case] against rates[baseline], each a (median,
    best) pair of a rate (higher is better): value and ratio from the medians,
    and alongside them the best rounds' `value_best`, `baseline_value_best`
    and `ratio_best`, which show the uncontended speed on a shared machine."""
    (value, best), (base, base_best) = rates[case], rates[baseline]
    best_fields = {
        "value_best": rounded(best),
        "baseline_value_best": rounded(base_best),
        "ratio_best": rounded(best / base_best),
    }
    return measurement(benchmark, case, value, unit, baseline, base, **best_fields, **fields)


def emit(record: dict) -> dict:
    """Prints `record` as one JSON line on stdout (flushed, so that a long
    sweep's finished lines survive an interrupted run); returns it."""
    print(json.dumps(record), flush=True)
    return record


def context() -> dict:
    """The machine: device, JAX, and how busy the host was (the load average
    when the record was made; on a shared machine it says how far to trust
    the times)."""
    device = jax.devices()[0]
    return {
        "device": describe_device(),
        "device_kind": device.device_kind,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "cpu_count": os.cpu_count(),
        "load_avg": [round(load, 2) for load in os.getloadavg()],
    }


@functools.cache
def describe_device() -> str:
    """'<platform> <model> host x<cores> cores': the CPU model on CPU (XLA's
    device kind there is just 'cpu'), the device kind otherwise."""
    device = jax.devices()[0]
    model = device.device_kind
    if device.platform == "cpu" and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return f"{device.platform} {model} host x{os.cpu_count()} cores"
