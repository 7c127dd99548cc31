"""Cold start: how soon a new pipeline's one-step forecasts beat the last value, on series nobody tuned for.

    python benchmarks/cold_start.py            # writes results/cold_start.json and the docs table

The pipelines, data and engine path are benchmarks/generalisation.py's: the defaults, a
seeded network, nothing pretrained, retraining on the daemon's schedule. Every series starts
at its first record; the one-step absolute errors of the forecaster and of persistence (the
last value), and the network's weight in the combination, are pooled over the series in
blocks of records since each series' first (the first day, the second, days 3-4, ...), so a
block shows how the forecasts fare after that many records of a new series. Only the first
`LENGTH` steps of each data set are run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from generalisation import LOADERS, Panel, pipeline  # benchmarks/generalisation.py, beside this script

from forecaster.build import seeded_model
from forecaster.evaluation.network import DaemonRetraining
from forecaster.evaluation.panel import step_row
from forecaster.serving.engine import Engine

import tables

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
LENGTH = 2000
BLOCKS = (0, 24, 48, 96, 168, 336, 720, 1440, 2000)  # records since a series' first, in steps


def one_step_errors(panel: Panel, length: int) -> tuple[np.ndarray, ...]:
    """Per (row, series): the records the series had seen, the forecaster's and persistence's one-step
    absolute errors (NaN where the series had no record, or no truth one step later), and the network's
    weight in the combination, averaged over the horizon steps."""
    the_pipeline = pipeline(panel)
    engine = Engine(the_pipeline, seeded_model(the_pipeline))
    retraining = DaemonRetraining(engine)
    T, N = min(length, len(panel.times) - 1), len(panel.keys)
    seen = np.zeros(N, np.int64)
    counts, model, naive = np.zeros((T, N)), np.full((T, N), np.nan), np.full((T, N), np.nan)
    weight = np.full((T, N), np.nan)
    for t in range(T):
        present, forecasts = step_row(engine, panel, t)
        if forecasts is None:
            continue
        seen[present] += 1
        counts[t, present] = seen[present]
        following = panel.truth[t + 1, present]
        model[t, present] = np.abs(forecasts.values[:, 0] - following)
        naive[t, present] = np.abs(panel.inputs[t, present] - following)
        weight[t, present] = engine.combination.mean_weights()[:, 0].mean()
        retraining.after(len(present))
    return counts, model, naive, weight


def blocks(panel: Panel, length: int) -> list[dict]:
    counts, model, naive, weight = one_step_errors(panel, length)
    rows = []
    for begin, end in zip(BLOCKS[:-1], BLOCKS[1:]):
        inside = (counts > begin) & (counts <= end) & ~np.isnan(model) & ~np.isnan(naive)
        if not inside.any():
            continue
        rows.append(
            {
                "dataset": panel.name,
                "records_from": begin + 1,
                "records_to": end,
                "forecaster_mae": round(float(model[inside].mean()), 5),
                "persistence_mae": round(float(naive[inside].mean()), 5),
                "ratio": round(float(model[inside].mean() / naive[inside].mean()), 4),
                "network_weight": round(float(weight[inside].mean()), 4),
                "forecasts": int(inside.sum()),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(LOADERS))
    parser.add_argument("--length", type=int, default=LENGTH, help="steps of each data set run")
    parser.add_argument("--out", type=Path, default=RESULTS / "cold_start.json")
    args = parser.parse_args(argv)
    began, rows = time.perf_counter(), []
    for name in args.datasets.split(","):
        rows += blocks(LOADERS[name](), args.length)
        print(f"{name:<17} done at {time.perf_counter() - began:6.1f} s", file=sys.stderr)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    tables.follow(args.out)
    for row in rows:
        print(f"{row['dataset']:<17} records {row['records_from']:>5}-{row['records_to']:<5} ratio {row['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
