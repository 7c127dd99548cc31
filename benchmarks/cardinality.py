"""One million distinct series keys through one pipeline: memory stays bounded, with the shipped defaults too.

Each configuration runs in a fresh process (so its RSS is its own): a GRU pipeline (hidden
64, 2 layers, the defaults) steps batches of 10,000 new keys, one record each, until
1,000,000 distinct keys have been seen; every 100,000 keys the process RSS, the device
state bytes, the spill's size and the series it dropped are recorded. The first four hold
max_series 10,000, one per kind of spill: `none` drops evicted state, `disk` keeps it in a
file, `memory` within its default budget (`spill_max_bytes`, 256 MiB) drops the series
spilled longest ago beyond it, and `memory` with no budget grows by the packed row of each
evicted series. The last is every setting as shipped (max_series 100,000, a memory spill
of 256 MiB).

With --admit-only the keys are admitted into the engine's state store (allocation, eviction,
spilling, dropping, as a step does) without stepping the network: the memory is the same,
since a series' rows are of fixed size whatever their values, and a million keys take
minutes less; keys/s is then not recorded.

    python benchmarks/cardinality.py            # writes benchmarks/results/cardinality.json
    python benchmarks/cardinality.py --admit-only
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
# label -> the pipeline settings that differ from the shipped defaults
CONFIGURATIONS = {
    "none": {"max_series": MAX_SERIES, "spill": "none"},
    "disk": {"max_series": MAX_SERIES, "spill": "disk"},
    "memory": {"max_series": MAX_SERIES, "spill": "memory"},
    "memory, no budget": {"max_series": MAX_SERIES, "spill": "memory", "spill_max_bytes": None},
    "defaults": {},
}


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(label: str, keys: int, admit_only: bool = False) -> dict:
    """In this process: stream `keys` distinct keys through an engine (or only its state store), recording memory as
    it goes."""
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
        model=ModelConfig(cell="gru", hidden_size=64, num_layers=2, weights=None),
        **CONFIGURATIONS[label],
    )
    with tempfile.TemporaryDirectory() as scratch:
        engine = build.engine(pipeline, seeded_model(pipeline), spill_path=Path(scratch) / "spill.sqlite")
        baseline = rss_bytes()
        samples, started = [], time.perf_counter()
        for first in range(0, keys, BATCH):
            names = tuple(f"series-{k}" for k in range(first, min(keys, first + BATCH)))
            n = len(names)
            times = np.full(n, 1.7e9 + first)
            if admit_only:
                engine.store.slots(names)
            else:
                values = np.random.default_rng(first).normal(100, 10, (n, 1))
                engine.step(Observations(names, times, times, values, np.arange(n)), now=time.time())
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
                        "dropped_series": store.spill.dropped if store.spill else 0,
                    }
                )
        seconds = time.perf_counter() - started
    return {
        "configuration": label,
        "spill": pipeline.spill,
        "spill_max_bytes": pipeline.spill_max_bytes if pipeline.spill == "memory" else None,
        "max_series": pipeline.max_series,
        "keys": keys,
        "baseline_rss_bytes": baseline,
        "stepped": not admit_only,
        "seconds": round(seconds, 1),
        "keys_per_s": None if admit_only else round(keys / seconds),
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/cardinality.json")
    parser.add_argument("--admit-only", action="store_true", help="admit the keys without stepping the network")
    parser.add_argument("--one", choices=list(CONFIGURATIONS), help=argparse.SUPPRESS)  # the child's configuration
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.keys, args.admit_only)))
        return 0
    rows = []
    for label in CONFIGURATIONS:
        child = subprocess.run(
            [sys.executable, __file__, "--one", label, "--keys", str(args.keys)] + ["--admit-only"] * args.admit_only,
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
        f"{row['configuration']:<17} keys={row['keys']:>9,} active={last['active_series']:>7,} "
        f"spilled={last['spilled_series']:>9,} dropped={last['dropped_series']:>9,} "
        f"device state={last['device_state_bytes'] / 2**20:6.1f} MiB  RSS={last['rss_bytes'] / 2**20:7.1f} MiB "
        f"(+{growth / 2**20:6.1f} MiB over baseline)  {row['keys_per_s'] or 0:,} keys/s"
    )


if __name__ == "__main__":
    sys.exit(main())
