"""Attention over recent states (model.attention): validation accuracy and the engine's cost per step, with and
without it.

    python benchmarks/attention.py                    # about 25 minutes on 2 shared cores
    python benchmarks/attention.py --datasets taylor --k 8
    python benchmarks/attention.py --runs /tmp/attend # reuse (or keep) each accuracy run's rows there

Writes benchmarks/results/attention.json and the tables of docs/accuracy.md and docs/performance.md
(Attention over recent states). Two sections:

accuracy  Each dataset's validation protocol (benchmarks/accuracy.py --validation: the rows before its
          test part, never the test part), the daemon's online forecaster (method `forecaster`) with the
          protocol's own network, once as it is and once with model.attention K, everything else equal:
              python benchmarks/accuracy.py --validation --datasets D --methods forecaster \\
                  --set attention=K --out RUNS/D_kK.json
          one process a run; with --runs, a run whose file is already there is read, not run again (so
          the runs can be split across processes).
speed     `Engine.step` on throughput.py's benchmark pipeline (a 2 x 64 GRU, input 4, horizon 24, three
          quantiles), one record of each of 10,000 series a step, without attention and with each K of
          SPEED_K, in interleaved rounds (throughput.step_seconds: each engine's best round's median
          step), on one torch thread, in the process's CPU seconds (as compress.py times: on a shared
          2-core machine a step's wall time measures the neighbours as much as the step).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from forecaster.build import seeded_model
from forecaster.serving.engine import Engine

import tables  # benchmarks/tables.py
import throughput  # benchmarks/throughput.py: the engine's timing

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("taylor", "greensboro_temp", "etth2")
K = 16
SPEED_K = (4, 16, 64)
SPEED_SERIES = 10_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument(
        "--datasets", default=",".join(DATASETS), help=f"comma-separated (default {','.join(DATASETS)})"
    )
    parser.add_argument("--k", type=int, default=K, help=f"the K compared with no attention (default {K})")
    parser.add_argument("--runs", type=Path, help="folder of the accuracy runs' rows, read where there, else written")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/attention.json")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    torch.set_num_threads(1)  # as compress.py: CPU seconds of one core
    speed = speed_section()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    runs = args.runs or Path(tempfile.mkdtemp(prefix="attention-"))
    rows = [row for name in names for k in (0, args.k) for row in accuracy_run(name, k, runs)]
    result = {
        "machine": throughput.machine(),
        "k": args.k,
        "seconds": round(time.perf_counter() - began),
        "accuracy": rows,
        "speed": speed,
    }
    tables.write_results(args.out, result)
    print(f"wrote {args.out} in {result['seconds']} s")
    return 0


def accuracy_run(name: str, k: int, runs: Path) -> list[dict]:
    """The online forecaster's validation rows of dataset `name` with model.attention `k`, each marked with it: from
    `runs` where an earlier run left them, else run into it."""
    path = runs / f"{name}_k{k}.json"
    if not path.exists():
        command = [sys.executable, str(REPO / "benchmarks/accuracy.py"), "--validation", "--datasets", name]
        command += ["--methods", "forecaster", "--set", f"attention={k}", "--out", str(path)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    rows = json.loads(path.read_text())
    return [{**row, "attention": k} for row in rows if row["method"] == "forecaster"]


def speed_section() -> list[dict]:
    """Series-steps per CPU-second without attention and with each K, and the state each series carries."""
    n, engines = SPEED_SERIES, {}
    for k in (0, *SPEED_K):
        pipeline = throughput.bench_pipeline("gru", n)
        pipeline = replace(pipeline, model=replace(pipeline.model, attention=k))
        engines[k] = Engine(pipeline, seeded_model(pipeline))
    best = throughput.step_seconds(engines, n, rounds=6, steps=5, clock=time.process_time)
    rows = []
    for k, seconds in best.items():
        store = engines[k].store
        rows.append(
            {
                "n_series": n,
                "attention": k,
                "state_bytes_per_series": store.layers * store.width * store.state.element_size(),
                "steps_per_cpu_s": round(n / seconds),
                "step_cpu_ms": round(1e3 * seconds, 3),
            }
        )
        print(f"  speed attention {k:<3}: {n / seconds:>10,.0f} series-steps/CPU-s", flush=True)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
