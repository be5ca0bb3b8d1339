r"""Sweep reports: per-group statistics over seeds as Markdown, LaTeX and CSV
tables, and learning-curve plots.

    sweep = report.load_sweep("sweeps/cell_by_length")
    groups = report.group_runs(sweep)                   # swept keys except `seed`
    rows = report.summarize_groups(groups, ["test_mse", "best_eval_mse"])
    print(report.to_markdown(rows, sweep.swept_keys))

Run status. A run is *finished* when `final_metrics.json` exists, *failed*
when `failed.json` exists without it, *unfinished* when it has started
(run_info.json) with neither (running, or killed), *pending* when its
directory holds only what the sweep prepared (submitted or printed, not
started), and *missing* when it has no directory.
Statistics use finished runs only; every other run is counted per group
(`failed`, `unfinished` columns) and listed by `failures_markdown`, never dropped.

Metrics of a finished run:
  test_*         from final_metrics.json (the last step's);
  best_test_*    from final_metrics.json of runs with config.train.best_metric:
                 the test metrics of the best checkpoint by that metric;
  best_eval_*    the best value of each eval_* metric over the eval lines of
                 metrics.jsonl (see `seqjax.metrics.metric_direction` for which way is best);
  wall_time_s    from run_info.json.

Statistics over the n finished runs of a group that report a metric:
  mean;
  std    sample standard deviation (ddof=1); NaN when n < 2;
  ci95   half-width of the 95% Student-t interval for the mean,
         t.ppf(0.975, n - 1) * std / sqrt(n); NaN when n < 2.
Undefined numbers show as "–" in Markdown and "--" in LaTeX and are written
as "nan" in CSV. A run whose own value is NaN (a diverged loss) makes its
group's mean NaN, shown as "nan": it is reported, not skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from seqjax import metrics as metrics_lib
from seqjax import sweeps

SEED_KEY = "seed"
UNDEFINED_MD, UNDEFINED_TEX = "–", "--"


# --------------------------------------------------------------------------- loading


@dataclasses.dataclass
class RunResult:
    """One run of a sweep as found on disk."""

    name: str
    overrides: dict[str, Any]
    status: str  # finished | failed | unfinished | pending | missing
    metrics: dict[str, float]  # test_*, best_eval_*, wall_time_s (finished runs only)
    records: list[dict]  # metrics.jsonl, one dict per logged step
    wall_time_s: float | None = None
    returncode: int | None = None
    log_tail: str = ""


@dataclasses.dataclass
class Sweep:
    """A sweep directory: its record (sweep.json) and every run of it."""

    directory: str
    config: str | None
    name: str | None
    swept_keys: list[str]
    runs: list[RunResult]
    unlisted_dirs: list[str]  # run directories that sweep.json does not name (not reported)


def best_metrics(records: Iterable[dict]) -> dict[str, float]:
    """{best_eval_X: best value of eval_X over `records`} for eval metrics
    whose direction is known (seqjax.metrics.metric_direction); NaN values are ignored unless
    every value is NaN."""
    series: dict[str, list[float]] = {}
    for record in records:
        for key, value in record.items():
            if key.startswith("eval_") and isinstance(value, (int, float)):
                series.setdefault(key, []).append(float(value))
    best = {}
    for key, values in series.items():
        direction = metrics_lib.metric_direction(key)
        if direction is None:
            continue
        finite = [v for v in values if not math.isnan(v)] or [math.nan]
        best[f"best_{key}"] = min(finite) if direction == "min" else max(finite)
    return best


def load_run(directory: str, name: str, overrides: dict[str, Any]) -> RunResult:
    """Reads one run's directory (which need not exist)."""
    final = metrics_lib.read_json(os.path.join(directory, "final_metrics.json"))
    failed = metrics_lib.read_json(os.path.join(directory, "failed.json"))
    info = metrics_lib.read_json(os.path.join(directory, "run_info.json")) or {}
    records = metrics_lib.read_jsonl(os.path.join(directory, "metrics.jsonl"))
    if final is not None:
        status = "finished"
    elif failed is not None:
        status = "failed"
    else:
        status = "missing" if not os.path.isdir(directory) else "unfinished" if info else "pending"
    wall = info.get("wall_time_s")
    run_metrics: dict[str, float] = {}
    if final is not None:
        run_metrics.update({k: float(v) for k, v in final.items() if k.startswith(("test_", "best_test_"))})
        run_metrics.update(best_metrics(records))
        if wall is not None:
            run_metrics["wall_time_s"] = float(wall)
    failed = failed or {}
    return RunResult(
        name=name,
        overrides=dict(overrides),
        status=status,
        metrics=run_metrics,
        records=records,
        wall_time_s=wall,
        returncode=failed.get("returncode"),
        log_tail=failed.get("log_tail", ""),
    )


def load_sweep(sweep_dir: str) -> Sweep:
    """Every run named in `sweep_dir/sweep.json`, in sweep order.

    Without sweep.json, every directory under `runs/` with its overrides.json
    is taken, and the swept keys are those whose value varies.
    """
    record = metrics_lib.read_json(os.path.join(sweep_dir, "sweep.json"))
    runs_dir = os.path.join(sweep_dir, "runs")
    on_disk = sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []
    if record is None:
        if not on_disk:
            raise FileNotFoundError(f"{sweep_dir} holds neither sweep.json nor runs/<name>/ directories")
        listed = [
            {"name": name, "overrides": metrics_lib.read_json(os.path.join(runs_dir, name, "overrides.json")) or {}}
            for name in on_disk
        ]
        record = {"runs": listed, "swept_keys": sweeps.swept_keys([r["overrides"] for r in listed])}
    runs = [load_run(os.path.join(runs_dir, r["name"]), r["name"], r.get("overrides", {})) for r in record["runs"]]
    named = {r.name for r in runs}
    return Sweep(
        directory=sweep_dir,
        config=record.get("config"),
        name=record.get("sweep"),
        swept_keys=list(record.get("swept_keys", [])),
        runs=runs,
        unlisted_dirs=[d for d in on_disk if d not in named],
    )


# --------------------------------------------------------------------------- grouping and statistics


@dataclasses.dataclass
class Group:
    """Runs that differ only in their seed."""

    values: dict[str, Any]  # swept key (except seed) -> value
    runs: list[RunResult]

    def count(self, *statuses: str) -> int:
        return sum(run.status in statuses for run in self.runs)

    @property
    def finished(self) -> list[RunResult]:
        return [run for run in self.runs if run.status == "finished"]


def group_keys(swept_keys: Sequence[str]) -> list[str]:
    return [key for key in swept_keys if key != SEED_KEY]


def group_runs(sweep: Sweep) -> list[Group]:
    """Groups by the swept keys except `seed`, in order of first appearance."""
    keys = group_keys(sweep.swept_keys)
    groups: dict[str, Group] = {}
    for run in sweep.runs:
        values = {key: run.overrides.get(key) for key in keys}
        groups.setdefault(repr(tuple(values.values())), Group(values, [])).runs.append(run)
    return list(groups.values())


def group_label(values: dict[str, Any]) -> str:
    """`cell=lstm,seq_len=100`, named as sweeps.expand names runs."""
    names = sweeps.short_keys(values)
    return ",".join(f"{names[k]}={sweeps.format_value(v)}" for k, v in values.items()) or "all runs"


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean, std (ddof=1), 95% CI half-width and count of a set of values."""

    mean: float
    std: float
    ci95: float
    n: int


def summarize(values: Sequence[float]) -> Summary:
    """Summary of `values`; std and ci95 are NaN for n < 2, everything for n = 0.
    A non-finite value makes the mean NaN (or ±inf) and std and ci95 NaN."""
    n = len(values)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0)
    # statistics.mean/stdev sum exactly, so three seeds at 0.8 give mean 0.8 and
    # std 0, not 0.8000000000000002 and 1e-16 (which would also break bold ties).
    values = [float(v) for v in values]
    if not all(math.isfinite(v) for v in values):  # a diverged run: report it, as nan/inf
        return Summary(float(np.mean(values)), math.nan, math.nan, n)
    mean = statistics.mean(values)
    if n == 1:
        return Summary(mean, math.nan, math.nan, 1)
    std = statistics.stdev(values)
    ci95 = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return Summary(mean, std, ci95, n)


@dataclasses.dataclass
class GroupRow:
    """One table row: a group, its run counts and a Summary per metric."""

    group: Group
    stats: dict[str, Summary]

    @property
    def n_finished(self) -> int:
        return self.group.count("finished")

    @property
    def n_failed(self) -> int:
        return self.group.count("failed")

    @property
    def n_unfinished(self) -> int:
        """Unfinished (started, no result) plus missing (never started)."""
        return self.group.count("unfinished", "pending", "missing")


def summarize_groups(groups: Sequence[Group], metric_names: Sequence[str]) -> list[GroupRow]:
    """Per group, the Summary of each metric over the group's finished runs."""
    rows = []
    for group in groups:
        per_metric = {
            name: summarize([run.metrics[name] for run in group.finished if name in run.metrics])
            for name in metric_names
        }
        rows.append(GroupRow(group, per_metric))
    return rows


def available_metrics(sweep: Sweep) -> list[str]:
    """Metrics some finished run reports: test_* first, then best_test_* and best_eval_*, then wall time."""
    found = {name for run in sweep.runs for name in run.metrics}

    def order(name):
        return (not name.startswith("test_"), not name.startswith("best_"), name)

    return sorted(found, key=order)


def best_row_indices(rows: Sequence[GroupRow], metric: str) -> set[int]:
    """Rows whose mean of `metric` is the best finite one (ties, to 1e-9
    relative, all count); empty when the metric's direction is unknown or
    fewer than two rows have a finite mean."""
    direction = metrics_lib.metric_direction(metric)
    means = [row.stats[metric].mean for row in rows]
    finite = [m for m in means if math.isfinite(m)]
    if direction is None or len(finite) < 2:  # nothing to compare against
        return set()
    best = min(finite) if direction == "min" else max(finite)
    return {i for i, m in enumerate(means) if math.isfinite(m) and math.isclose(m, best, rel_tol=1e-9)}


# --------------------------------------------------------------------------- tables


def _number(value: float, digits: int, undefined: str) -> str:
    return undefined if math.isnan(value) else f"{value:.{digits}g}"


def _mean_std(s: Summary, digits: int, undefined: str, pm: str) -> str:
    """`mean ± std`; a NaN mean of n > 0 runs (a diverged run) shows as `nan`,
    unlike an undefined one (no runs), so the two are never confused."""
    if s.n == 0:
        return undefined
    return f"{s.mean:.{digits}g}{pm}{_number(s.std, 2, undefined)}"


def _key_headers(swept_keys: Sequence[str]) -> list[str]:
    keys = group_keys(swept_keys)
    names = sweeps.short_keys(keys)
    return [names[k] for k in keys]


def to_markdown(rows: Sequence[GroupRow], swept_keys: Sequence[str], digits: int = 4) -> str:
    """A Markdown table: group keys, counts, then per metric `mean ± std` and the 95% CI."""
    metric_names = list(rows[0].stats) if rows else []
    header = [*_key_headers(swept_keys), "n", "failed", "unfinished"]
    for name in metric_names:
        header += [f"{name} (mean ± std)", f"{name} 95% CI"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [sweeps.format_value(v) if v is not None else UNDEFINED_MD for v in row.group.values.values()]
        cells += [str(row.n_finished), str(row.n_failed), str(row.n_unfinished)]
        for name in metric_names:
            s = row.stats[name]
            ci = UNDEFINED_MD if math.isnan(s.ci95) else f"±{_number(s.ci95, 2, UNDEFINED_MD)}"
            cells += [_mean_std(s, digits, UNDEFINED_MD, " ± "), ci]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = re.compile(r"([&%$#_{}])")


def tex_escape(text: str) -> str:
    return _TEX_SPECIAL.sub(r"\\\1", text).replace("~", r"\textasciitilde{}")


def to_latex(rows: Sequence[GroupRow], swept_keys: Sequence[str], digits: int = 4) -> str:
    """A booktabs tabular: `mean $\\pm$ std` per metric, the best mean of each
    column in bold (direction from seqjax.metrics.metric_direction; needs \\usepackage{booktabs}).
    Its `no result` column counts every run without a result (failed,
    unfinished, missing): calling an unfinished run failed would be wrong."""
    metric_names = list(rows[0].stats) if rows else []
    keys = _key_headers(swept_keys)
    header = [*keys, "n", "no result", *metric_names]
    best = {name: best_row_indices(rows, name) for name in metric_names}
    lines = [
        r"\begin{tabular}{" + "l" * len(keys) + "r" * (len(header) - len(keys)) + "}",
        r"\toprule",
        " & ".join(tex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(rows):
        cells = [
            tex_escape(sweeps.format_value(v)) if v is not None else UNDEFINED_TEX for v in row.group.values.values()
        ]
        # One column for every run without a result: a paper table has no room for three.
        cells += [str(row.n_finished), str(row.n_failed + row.n_unfinished)]
        for name in metric_names:
            s = row.stats[name]
            cell = _mean_std(s, digits, UNDEFINED_TEX, r" $\pm$ ")
            cells.append(rf"\textbf{{{cell}}}" if i in best[name] else cell)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[GroupRow], swept_keys: Sequence[str]) -> str:
    """One row per group: the swept keys (full dotted names), n_finished,
    n_failed, n_unfinished, then per metric M: M_mean, M_std, M_ci95, M_n and
    M_failed (runs of the group that gave no value of M: failed, unfinished,
    missing, or finished without M). Undefined numbers are written as `nan`."""
    metric_names = list(rows[0].stats) if rows else []
    keys = group_keys(swept_keys)
    header = [*keys, "n_finished", "n_failed", "n_unfinished"]
    for name in metric_names:
        header += [f"{name}_{field}" for field in ("mean", "std", "ci95", "n", "failed")]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        cells: list[Any] = [row.group.values[k] for k in keys]
        cells += [row.n_finished, row.n_failed, row.n_unfinished]
        for name in metric_names:
            s = row.stats[name]
            cells += [repr(s.mean), repr(s.std), repr(s.ci95), s.n, len(row.group.runs) - s.n]
        writer.writerow(cells)
    return buffer.getvalue()


WITHOUT_RESULT = {"unfinished": "started, no result yet", "pending": "not started yet", "missing": "no run directory"}


def failures_markdown(sweep: Sweep, tail_lines: int = 5) -> str:
    """Every run without a result: failed runs with the last lines of their
    log, then unfinished and missing runs; empty when every run finished."""
    lines = []
    for run in sweep.runs:
        if run.status == "failed":
            lines.append(f"- **{run.name}**: failed (return code {run.returncode})")
            tail = run.log_tail.rstrip("\n").splitlines()[-tail_lines:]
            if tail:
                lines += ["  ```", *(f"  {line}" for line in tail), "  ```"]
        elif run.status in WITHOUT_RESULT:
            lines.append(f"- **{run.name}**: {run.status} ({WITHOUT_RESULT[run.status]})")
    if sweep.unlisted_dirs:
        lines.append(f"- not in sweep.json, not reported: {', '.join(sweep.unlisted_dirs)}")
    return ("## Runs without a result\n\n" + "\n".join(lines) + "\n") if lines else ""


def runs_markdown(sweep: Sweep, metric_names: Sequence[str], digits: int = 4) -> str:
    """Every run on its own line: status, wall time and the chosen metrics."""
    header = ["run", "status", "wall time (s)", *metric_names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in sweep.runs:
        wall = UNDEFINED_MD if run.wall_time_s is None else f"{run.wall_time_s:.1f}"
        values = [_number(run.metrics.get(name, math.nan), digits, UNDEFINED_MD) for name in metric_names]
        lines.append("| " + " | ".join([run.name, run.status, wall, *values]) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- learning curves


@dataclasses.dataclass
class Curve:
    """A group's metric over steps: mean and std (ddof=1) over its finished runs.

    steps, mean, std, n: [S] arrays, S = the steps any of its runs logged;
    n counts the runs that logged each step; std is NaN where n < 2.
    """

    label: str
    steps: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: np.ndarray


def run_series(records: Iterable[dict], metric: str) -> dict[int, float]:
    """{step: value} of `metric`; a step logged twice keeps its last value."""
    return {int(r["step"]): float(r[metric]) for r in records if metric in r and "step" in r}


def group_curve(group: Group, metric: str) -> Curve | None:
    """The group's curve over its finished runs; None when none logged `metric`.

    Only finished runs count, so that a crashed run's short curve does not
    change the mean partway along the axis.
    """
    series = [s for s in (run_series(run.records, metric) for run in group.finished) if s]
    if not series:
        return None
    steps = np.array(sorted(set().union(*series)))
    table = np.array([[s.get(int(step), np.nan) for step in steps] for s in series])  # [R, S]
    n = np.sum(~np.isnan(table), axis=0)
    mean = np.nanmean(table, axis=0)
    std = np.full(len(steps), np.nan)
    enough = n >= 2
    std[enough] = np.nanstd(table[:, enough], axis=0, ddof=1)
    return Curve(group_label(group.values), steps, mean, std, n)


def plot_curves(
    groups: Sequence[Group], metric: str, path: str, log_y: bool = False, title: str | None = None
) -> list[Curve]:
    """Saves a PNG of each group's mean `metric` vs step with a ±std band.

    Raises ValueError when no finished run logged `metric`.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    from matplotlib import pyplot as plt

    curves = [c for c in (group_curve(g, metric) for g in groups) if c is not None]
    if not curves:
        raise ValueError(f"no finished run logged {metric!r} in metrics.jsonl")
    figure, axes = plt.subplots(figsize=(7, 4.5))
    # tab10 repeats colours past ten groups; tab20 keeps every group distinct.
    colours = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20").colors
    for index, curve in enumerate(curves):
        (line,) = axes.plot(
            curve.steps,
            curve.mean,
            color=colours[index % len(colours)],
            label=f"{curve.label} (n={int(curve.n.max())})",
        )
        band = ~np.isnan(curve.std)
        axes.fill_between(
            curve.steps[band],
            (curve.mean - curve.std)[band],
            (curve.mean + curve.std)[band],
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
        )
    if log_y:
        axes.set_yscale("log", nonpositive="clip")  # mean - std can fall below 0
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    axes.set_title(title or f"{metric}: mean ± std over seeds")
    axes.legend(fontsize="small")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return curves
