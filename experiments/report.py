"""Tables and learning curves for a sweep directory.

  python -m experiments.report --sweep_dir=runs/ablation \
      [--metrics=test_mse,best_eval_mse] [--curve_metric=train_loss] [--log_y] [--out_dir=DIR]

Writes results.md (group table, per-run table, runs without a result),
results.tex (booktabs), results.csv and curves_<metric>.png into --out_dir
(default: the sweep directory) and prints results.md to stdout. Groups are the
swept keys except the seed; statistics are over the finished seeds of a group
(seqjax/report.py documents them).
"""

import os
import sys

from absl import app, flags

from experiments import command
from seqjax import report

_SWEEP_DIR = flags.DEFINE_string("sweep_dir", None, "Sweep directory (holds sweep.json and runs/).")
_METRICS = flags.DEFINE_list("metrics", None, "Metrics to tabulate (default: every test_* and best_eval_*).")
_CURVE_METRIC = flags.DEFINE_string("curve_metric", "train_loss", "metrics.jsonl key to plot against step.")
_LOG_Y = flags.DEFINE_bool("log_y", False, "Logarithmic y axis for the learning curves.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the tables and plot go (default: --sweep_dir).")
_DIGITS = flags.DEFINE_integer("digits", 4, "Significant digits of the means in the tables.")
flags.mark_flags_as_required(["sweep_dir"])


def chosen_metrics(sweep: report.Sweep) -> list[str]:
    """--metrics, checked against what the finished runs report."""
    available = report.available_metrics(sweep)
    if not _METRICS.value:
        return [m for m in available if m != "wall_time_s"]
    # With no finished run yet there is nothing to check names against.
    unknown = [m for m in _METRICS.value if available and m not in available]
    if unknown:
        raise app.UsageError(f"no finished run reports {', '.join(unknown)}; available: {', '.join(available)}")
    return list(_METRICS.value)


def check_curve_metric(sweep: report.Sweep, metric: str) -> None:
    """A metric no finished run logged is a typo, not a sweep still in progress."""
    logged = {key for run in sweep.runs if run.status == "finished" for r in run.records for key in r} - {"step"}
    if logged and metric not in logged:
        raise app.UsageError(f"no finished run logged {metric!r}; metrics.jsonl has {', '.join(sorted(logged))}")


def results_markdown(sweep: report.Sweep, name: str, rows: list[report.GroupRow], metric_names: list[str]) -> str:
    """The group table, every run, and the runs without a result."""
    title = f"# {name}" + (f" ({sweep.config})" if sweep.config else "") + "\n\n"
    return (
        title
        + report.to_markdown(rows, sweep.swept_keys, _DIGITS.value)
        + "\n## Runs\n\n"
        + report.runs_markdown(sweep, metric_names, _DIGITS.value)
        + "\n"
        + report.failures_markdown(sweep)
    )


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    sweep = report.load_sweep(_SWEEP_DIR.value)
    out_dir = _OUT_DIR.value or _SWEEP_DIR.value
    os.makedirs(out_dir, exist_ok=True)
    metric_names = chosen_metrics(sweep)
    check_curve_metric(sweep, _CURVE_METRIC.value)
    groups = report.group_runs(sweep)
    rows = report.summarize_groups(groups, metric_names)
    name = sweep.name or os.path.basename(os.path.normpath(sweep.directory))
    markdown = results_markdown(sweep, name, rows, metric_names)
    write(os.path.join(out_dir, "results.md"), markdown)
    write(os.path.join(out_dir, "results.tex"), report.to_latex(rows, sweep.swept_keys, _DIGITS.value))
    write(os.path.join(out_dir, "results.csv"), report.to_csv(rows, sweep.swept_keys))
    plot_path = os.path.join(out_dir, f"curves_{_CURVE_METRIC.value}.png")
    try:
        report.plot_curves(
            groups,
            _CURVE_METRIC.value,
            plot_path,
            log_y=_LOG_Y.value,
            title=f"{_CURVE_METRIC.value}: mean ± std over seeds ({name})",
        )
    except ValueError as error:  # no run has finished yet: the tables are still worth having
        print(f"report: {error}; {plot_path} not written", file=sys.stderr)
    print(markdown, end="")


def entry() -> None:
    command.start(main)


if __name__ == "__main__":
    entry()
