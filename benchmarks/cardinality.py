"""One million distinct series keys through one pipeline with `max_series` set: memory stays bounded.

Each spill mode runs in a fresh process (so its RSS is its own): a GRU pipeline (hidden 64,
2 layers) with max_series 10,000 steps batches of 10,000 new keys, one record each, until
1,000,000 distinct keys have been seen; every 100,000 keys the process RSS, the device
state bytes and the spill size are recorded. With `spill: memory` memory grows by the
packed row of each evicted series; with `spill: disk` it stays flat; with `spill: none`
evicted state is dropped.

    python benchmarks/cardinality.py            # writes benchmarks/results/cardinality.json
    python benchmarks/cardinality.py --keys 200000 --out /tmp/c.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from forecaster import build

import tables  # benchmarks/tables.py, beside this script

REPO = Path(__file__).resolve().parents[1]

MAX_SERIES = 10_000
BATCH = 10_000


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(spill: str, keys: int) -> dict:
    """In this process: stream `keys` distinct keys through an engine, recording memory as it goes."""
    import torch

    from forecaster.build import seeded_model
    from forecaster.config import Calendar, ModelConfig, Pipeline, RecordFormat
    from forecaster.serving.records import Observations

    torch.set_num_threads(2)
    pipeline = Pipeline(
        name="test",
        input_topic="in",
        output_topic="out",
        dead_letter_topic="dead",
        record=RecordFormat(key="key", timestamp="time", target="y"),
        cadence="1h",
        horizon=24,
        calendar=Calendar(hour_of_day=True, day_of_week=True),
        max_series=MAX_SERIES,
        spill=spill,
        model=ModelConfig(cell="gru", hidden_size=64, num_layers=2, weights=None),
    )
    with tempfile.TemporaryDirectory() as scratch:
        engine = build.engine(pipeline, seeded_model(pipeline), spill_path=Path(scratch) / "spill.sqlite")
        baseline = rss_bytes()
        samples, started = [], time.perf_counter()
        for first in range(0, keys, BATCH):
            names = tuple(f"series-{k}" for k in range(first, min(keys, first + BATCH)))
            n = len(names)
            times = np.full(n, 1.7e9 + first)
            engine.step(
                Observations(names, times, times, np.random.default_rng(first).normal(100, 10, (n, 1)), np.arange(n)),
                now=time.time(),
            )
            seen = first + n
            if seen % 100_000 == 0 or seen == keys:
                store = engine.store
                samples.append(
                    {
                        "keys_seen": seen,
                        "rss_bytes": rss_bytes(),
                        "device_state_bytes": store.nbytes,
                        "active_series": len(store),
                        "spilled_series": len(store.spill) if store.spill else 0,
                    }
                )
        seconds = time.perf_counter() - started
    return {
        "spill": spill,
        "max_series": MAX_SERIES,
        "keys": keys,
        "baseline_rss_bytes": baseline,
        "seconds": round(seconds, 1),
        "keys_per_s": round(keys / seconds),
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/cardinality.json")
    parser.add_argument("--one", choices=["memory", "disk", "none"], help=argparse.SUPPRESS)  # the child's mode
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.keys)))
        return 0
    rows = []
    for spill in ("none", "disk", "memory"):
        child = subprocess.run(
            [sys.executable, __file__, "--one", spill, "--keys", str(args.keys)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print_row(rows[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    tables.follow(args.out)  # the docs' tables are drawn from the results files
    print(f"wrote {args.out}")
    return 0


def print_row(row: dict) -> None:
    last = row["samples"][-1]
    growth = last["rss_bytes"] - row["baseline_rss_bytes"]
    print(
        f"spill={row['spill']:<6} keys={row['keys']:>9,} active={last['active_series']:>6,} "
        f"spilled={last['spilled_series']:>9,} "
        f"device state={last['device_state_bytes'] / 2**20:6.1f} MiB  RSS={last['rss_bytes'] / 2**20:7.1f} MiB "
        f"(+{growth / 2**20:6.1f} MiB over baseline)  {row['keys_per_s']:,} keys/s"
    )


if __name__ == "__main__":
    sys.exit(main())
