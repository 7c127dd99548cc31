"""Checkpoints at 10k, 100k and 1M series: how long the run loop pauses, how long the write takes, how big.

The engine is the shipped weather pipeline's (pipelines/weather.yaml: LSTM 2 x 64, retraining
buffers of 512 steps, interval rings, the combination's history), with max_series raised to the
series count; every series is stepped a few records so its state, buffer and rings hold data.
Each way of writing is timed as the run loop meets it:

  before        the write as it was until December 2026, in the loop: the snapshot gathered,
                pickled into memory, header and body joined, then written (run only up to
                --before-max series: it holds about four copies of the state)
  thread        the snapshot gathered in the loop, then streamed to disk by a thread (the
                way a CUDA engine writes)
  fork          a forked child (copy-on-write) snapshots and streams; the loop pays the fork,
                which copies a page-table entry per 4 KiB page (THP_MEM_ALLOC_ENABLE=0)
  fork, huge pages   the same with torch's large tensors on transparent huge pages, one entry per
                2 MiB (THP_MEM_ALLOC_ENABLE=1, which forecaster sets unless told otherwise): the daemon

pause: the time the loop is blocked; total: from the snapshot until the file is durable;
peak extra: the process's peak resident memory above what it held before, plus for the fork the
peak of the memory private to the child (sampled). Each size runs in fresh processes.

    python benchmarks/checkpoint.py            # writes benchmarks/results/checkpoint.json
    python benchmarks/checkpoint.py --quick    # 2,000 and 5,000 series, to a scratch file
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import tables  # benchmarks/tables.py, beside this script

REPO = Path(__file__).resolve().parents[1]
BATCH = 20_000


def status(field: str, pid: str = "self") -> int:
    """A /proc/<pid>/status field in bytes (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as lines:
        for line in lines:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def private(pid: int) -> int:
    """The memory only process `pid` holds (Private_Clean + Private_Dirty), in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as lines:
            return sum(int(line.split()[1]) * 1024 for line in lines if line.startswith("Private_"))
    except (FileNotFoundError, ProcessLookupError):
        return 0


def available() -> int:
    with open("/proc/meminfo") as lines:
        for line in lines:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def filled_engine(series: int, steps: int):
    """The weather pipeline's engine holding `series` series, each stepped `steps` hourly records."""
    import torch

    from forecaster import build, config
    from forecaster.serving.records import Observations

    torch.set_num_threads(2)
    loaded = config.load(REPO / "config.yaml", require_weights=False)
    pipeline = next(p for p in loaded.pipelines if p.name == "weather")
    pipeline = dataclasses.replace(pipeline, max_series=series)
    engine = build.engine(pipeline, build.seeded_model(pipeline))
    names = tuple(f"station-{k}" for k in range(series))
    width = 1 + len(pipeline.record.covariates)
    for step in range(steps):
        for first in range(0, series, BATCH):
            keys = names[first : first + BATCH]
            times = np.full(len(keys), 1.7e9 + 3600 * step)
            values = np.random.default_rng(first + step).normal(10, 3, (len(keys), width))
            engine.step(Observations(keys, times, times, values, np.arange(len(keys))), now=time.time())
    return pipeline, engine


def write_before(folder: Path, payload) -> Path:
    """The checkpoint write as it was: the whole body pickled into memory, then header + body written."""
    import torch

    from forecaster.io.checkpoint import CHECKPOINT_MAGIC, next_checkpoint, write_atomically

    buffer = io.BytesIO()
    torch.save(payload(), buffer)
    body = buffer.getvalue()
    header = CHECKPOINT_MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n"
    return write_atomically(next_checkpoint(folder), header + body)


def timed(mode: str, folder: Path, payload) -> dict:
    """One checkpoint written the way `mode` says: pause, total, size, peak extra memory."""
    from forecaster.io.checkpoint_writer import CheckpointWriter

    for old in folder.glob("checkpoint-*.pt"):
        old.unlink()
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # the peak resident memory starts again from now
    before = status("VmRSS")
    started = time.perf_counter()
    if mode == "before":
        path = write_before(folder, payload)
        pause = total = time.perf_counter() - started
        child_peak = 0
    else:
        writer = CheckpointWriter(fork=mode.startswith("fork"))
        writer.start(folder, payload, keep=1)
        pause = time.perf_counter() - started
        child_peak, written = 0, None
        while written is None:  # the child's own memory: what it allocates and copies, not what it shares
            child_peak = max(child_peak, private(writer._pid) if writer.fork else 0)
            written = writer.finished()
            time.sleep(0.005)
        path, total = written.path, time.perf_counter() - started
    extra = status("VmHWM") - before + child_peak
    return {"pause_s": pause, "total_s": total, "bytes": path.stat().st_size, "peak_extra_bytes": extra}


def measure(series: int, modes: list[str], steps: int, repeat: int) -> dict:
    """In this process: fill an engine, then time each mode `repeat` times (the median of each figure)."""
    from forecaster.app import Checkpoints

    started = time.perf_counter()
    pipeline, engine = filled_engine(series, steps)
    filled = time.perf_counter() - started
    checkpoints = Checkpoints(Path("."), pipeline)
    offsets = {0: series * steps}
    payload = lambda: checkpoints._payload(engine, offsets, time.time())  # noqa: E731 - what the run loop hands the writer
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("CHECKPOINT_SCRATCH")) as scratch:
        for mode in modes:
            runs = [timed(mode, Path(scratch), payload) for _ in range(repeat)]
            row = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            rows.append({"series": series, "mode": mode, **row})
    return {"rows": rows, "state_bytes": engine.store.nbytes, "rss_bytes": status("VmRSS"), "fill_s": filled}


def run_sizes(sizes: list[int], steps: int, repeat: int, before_max: int) -> tuple[list[dict], list[dict]]:
    """Each size in fresh processes (plain, then with huge pages); sizes the machine cannot hold are skipped."""
    rows, sizes_out, per_series = [], [], None
    for series in sizes:
        if per_series is not None and 2 * per_series * series > available():
            need = per_series * series
            sizes_out.append({"series": series, "skipped": f"needs {need / 2**30:.0f} GiB for the state alone"})
            print(f"{series:>9,} series: skipped, the state alone needs {need / 2**30:.0f} GiB")
            continue
        plain = ["thread", "fork"] if series > before_max else ["before", "thread", "fork"]
        for modes, huge in ((plain, False), (["fork"], True)):
            found = child(series, modes, steps, repeat, huge)
            for row in found["rows"]:
                row["mode"] = "fork, huge pages" if huge else row["mode"]
                rows.append(row)
                print_row(row)
            if not huge:
                per_series = found["rss_bytes"] / series
                sizes_out.append({"series": series, **{k: v for k, v in found.items() if k != "rows"}})
    return rows, sizes_out


def child(series: int, modes: list[str], steps: int, repeat: int, huge: bool) -> dict:
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if huge else "0"}  # forecaster's default is 1
    command = [sys.executable, __file__, "--one", str(series), "--modes", ",".join(modes)]
    command += ["--steps", str(steps), "--repeat", str(repeat)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_row(row: dict) -> None:
    print(
        f"{row['series']:>9,} series  {row['mode']:<16} pause {1000 * row['pause_s']:9.1f} ms  "
        f"total {row['total_s']:7.2f} s  file {row['bytes'] / 2**20:8.1f} MiB  "
        f"peak extra {row['peak_extra_bytes'] / 2**20:8.1f} MiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 and 5,000 series, once each, to a scratch file")
    parser.add_argument("--series", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=3, help="records stepped per series before measuring")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before-max", type=int, default=10_000, help="the largest size the old write runs at")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one size, these modes
    parser.add_argument("--modes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.modes.split(","), args.steps, args.repeat)))
        return 0
    if args.quick:
        args.series, args.repeat = [2_000, 5_000], 1
    out = args.out or (Path(tempfile.gettempdir()) / "checkpoint-quick.json" if args.quick else None)
    out = out or REPO / "benchmarks/results/checkpoint.json"
    started = time.perf_counter()
    rows, sizes = run_sizes(args.series, args.steps, args.repeat, args.before_max)
    result = {
        "pipeline": "weather",
        "steps_per_series": args.steps,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "seconds": round(time.perf_counter() - started),
        "sizes": sizes,
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    tables.follow(out)  # the docs' tables are drawn from the results files
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
