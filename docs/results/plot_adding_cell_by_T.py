"""test MSE against T per cell for the adding_cell_by_T_cpu sweep.

  python docs/results/plot_adding_cell_by_T.py RESULTS_CSV OUT_PNG

RESULTS_CSV is the results.csv that experiments.report writes; the dashed
line is the MSE of predicting the mean of the 128 test targets (the same
sequences for every cell), computed from task.batch("test", i, 32, seed=0).
"""

import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

rows = list(csv.DictReader(open(sys.argv[1])))
baseline = {50: 0.1822, 100: 0.1368, 200: 0.1745, 400: 0.1640, 1000: 0.1895}  # var of the 128 test targets
fig, ax = plt.subplots(figsize=(6.4, 4.2))
lengths = sorted(baseline)
ax.plot(lengths, [baseline[t] for t in lengths], "k--", label="predict the test mean")
for cell in dict.fromkeys(r["model.cell"] for r in rows):
    points = [(int(r["task.seq_len"]), float(r["test_mse_mean"])) for r in rows if r["model.cell"] == cell]
    ok = [(t, v) for t, v in points if np.isfinite(v)]
    (line,) = ax.plot(*zip(*ok), "o-", label=cell)
    for t, v in points:
        if not np.isfinite(v):
            ax.plot([t], [0.3], "x", color=line.get_color(), markersize=9)
ax.set(
    xscale="log",
    yscale="log",
    xlabel="T (1000 steps; 400 at T=1000)",
    ylabel="test MSE (128 sequences)",
    title="Adding problem, hidden 64, one seed (x: diverged to NaN)",
)
ax.set_xticks(lengths, [str(t) for t in lengths])
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=120)
