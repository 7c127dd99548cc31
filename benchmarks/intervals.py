"""What quantile tracking (intervals.tracking_rate) costs the engine, measured side by side in one run.

    python benchmarks/intervals.py [--sizes 1000,10000] [--horizons 24,48] [--replay 2000]

For each series count and horizon, two engines of the throughput benchmark's network with
quantiles 0.1, 0.5 and 0.9 step the same poll batches: one record of each series, ETTh1's
values, as benchmarks/throughput.py; and one series with 2,000 of its consecutive records
a batch, as a replay delivers them, stepped in as many waves. One engine keeps only the
one-step interval its coverage metric scores, the other tracks every step's coverage
(intervals.py), which keeps and scores each series' last `horizon` intervals. They take
turns round by round, so that a noisy neighbour slows both alike; the figure is each one's
best round. Memory is the interval part of the state store (bytes per series). Writes
benchmarks/results/intervals.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from forecaster.build import seeded_model
from forecaster.config import Intervals
from forecaster.serving.engine import Engine
from forecaster.serving.records import Observations

import tables  # benchmarks/tables.py, beside this script
from throughput import HOUR, Feed, bench_pipeline, etth1, machine

REPO = Path(__file__).resolve().parents[1]

VARIANTS = {"one-step only": 0.0, "tracking": 0.02}


def engines(n: int, horizon: int) -> dict[str, Engine]:
    base = bench_pipeline("gru", n)
    base = dataclasses.replace(base, horizon=horizon, model=dataclasses.replace(base.model, quantiles=(0.1, 0.5, 0.9)))
    made = {}
    for name, rate in VARIANTS.items():
        pipeline = dataclasses.replace(base, intervals=Intervals(tracking_rate=rate))
        made[name] = Engine(pipeline, seeded_model(pipeline))
    return made


class Replay:
    """Poll batches of `records` consecutive records of one series, as a replay of a dataset delivers them."""

    def __init__(self, records: int, values):
        self.records, self.values, self.t = records, values, 0

    def next(self) -> Observations:
        hours = self.t + np.arange(self.records)
        self.t += self.records
        times = 1.5e9 + HOUR * hours.astype(np.float64)
        return Observations(
            ("s",) * self.records, times, times.copy(), self.values[hours % len(self.values)], np.arange(self.records)
        )


def measure(n: int, horizon: int, rounds: int, values, replay: int = 0) -> dict:
    """Both engines on the same batches: one record of each of n series, or (`replay`) that many
    consecutive records of one series."""
    made, feed = engines(n, horizon), (Replay(replay, values) if replay else Feed(n, values))
    steps = max(2, 20_000 // max(n, replay))
    for batch in [feed.next() for _ in range(1 if replay else horizon + 1)]:  # admit, fill the intervals
        for engine in made.values():
            engine.step(batch, now=time.time())
    seconds = {name: [] for name in made}
    for _ in range(rounds):
        batches = [feed.next() for _ in range(steps)]
        for name, engine in made.items():
            started = time.perf_counter()
            for batch in batches:
                engine.step(batch, now=time.time())
            seconds[name].append((time.perf_counter() - started) / steps)
    best = {name: min(s) for name, s in seconds.items()}
    return {
        "n_series": n,
        "records_per_batch": replay or n,
        "horizon": horizon,
        "step_ms": {name: round(1e3 * s, 2) for name, s in best.items()},
        "tracking_over_one_step": round(best["tracking"] / best["one-step only"], 2),
        "interval_bytes_per_series": {
            name: engine.intervals.nbytes // engine.store.capacity for name, engine in made.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="series counts (default 1000,10000)")
    parser.add_argument("--horizons", default="24,48", help="horizons (default 24,48)")
    parser.add_argument(
        "--replay",
        type=int,
        default=2000,
        help="also one series, this many of its records a batch (default 2000; 0: not)",
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/intervals.json")
    args = parser.parse_args()
    values, rows = etth1(), []
    print(
        f"{'series':>7} {'records':>8} {'horizon':>7} {'one-step only ms':>17} {'tracking ms':>12} {'ratio':>6} "
        f"{'bytes/series':>13}"
    )
    cases = [(n, 0) for n in map(int, args.sizes.split(","))] + ([(1, args.replay)] if args.replay else [])
    with torch.no_grad():
        for n, replay in cases:
            for horizon in map(int, args.horizons.split(",")):
                row = measure(n, horizon, args.rounds, values, replay)
                rows.append(row)
                ms, size = row["step_ms"], row["interval_bytes_per_series"]
                print(
                    f"{n:>7,} {row['records_per_batch']:>8,} {horizon:>7} {ms['one-step only']:>17} "
                    f"{ms['tracking']:>12} "
                    f"{row['tracking_over_one_step']:>6} {size['one-step only']:>5} / {size['tracking']:<6}",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    tables.follow(args.out)  # the docs' tables are drawn from the results files
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
