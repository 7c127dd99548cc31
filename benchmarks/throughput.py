"""Throughput, memory and latency of forecaster on this machine, everything compared measured in one run.

    python benchmarks/throughput.py            # the full run, about 20 minutes on 2 cores
    python benchmarks/throughput.py --quick    # about 7 minutes: fewer repetitions, shorter latency runs

Writes benchmarks/results/throughput.json and prints a table. What each section measures:

engine   `Engine.step` on one poll batch holding one record of every series (Observations built
         directly as numpy from ETTh1's values, so no JSON or Kafka is timed): the series' lookup,
         the gather and scatter of states and normaliser moments, the recurrent step and the forecast
         head. GRU and LSTM, hidden 64, 2 layers, horizon 24, input 4 (target and 3 covariates).
         After two warm-up steps (the first admits every series), rows take rounds in turn: timed
         steps, then the naive loop; each figure is the row's best round (the median step within it),
         the round least disturbed if the machine is shared. The engine does not use torch.compile
         (benchmarks/engine_ablation.py --compile shows why), so no compile time hides anywhere.
         `naive`: the model called once per record with batch 1 (`model.step` then `model.head`,
         each series' state in a dict, no normaliser), timed over 1,000 series (3,000 in the full
         run) and reported per step; `naive_torch_rnn`: the same loop with torch's nn.GRU / nn.LSTM
         and an nn.Linear head holding the same weights, the faster of the two at batch 1.
memory   StateStore.nbytes / series (state, normaliser, host bookkeeping) and the process's VmRSS
         from /proc/self/status after stepping 1M GRU series.
daemon   The daemon (`forecaster.app.Daemon`, in this process) from a pre-loaded input topic to
         acknowledged forecasts: 2,000 series x 20 records of ETTh1 on the embedded broker, timed from
         the end of its first poll batch to the last acknowledged forecast (the consumer group's join is
         not timed). The ceiling: a bare kafka-python loop over the same topic in the same run, a
         consumer with manual partition assignment that polls, json-decodes and produces one small
         record per input record, flushing per poll batch, timed the same way; and the same bare loop
         written with confluent-kafka. `daemon` is the default daemon (kafka-python, one message per
         forecast) against the kafka-python ceiling; `daemon_rows` adds the daemon with each client,
         with and without batched output (`batching.forecasts_per_message`), each against its own
         client's ceiling and against kafka-python's, and kafka-python with its pure-Python CRC-32C
         (the `crc32c` C extension switched off in-process: what the daemon ran at before it was a
         dependency), daemon and ceiling both. Trials take every row in turn, each daemon with a fresh
         consumer group and state; the best trial of each row counts.
         `stages`: the default daemon's loop in its best trial, stage by stage (see latency).
latency  A producer in another process (kafka-python, linger_ms 5: batching, as a high-volume
         producer does) writes records at 50% and 90% of the daemon's measured records/s; latency per record =
         the forecast's Kafka timestamp minus its input record's,
         both CreateTime, set by the producers at send (the input: the paced producer; the
         forecast: the daemon, after decode, step and encode). The acknowledgement of the forecast
         (a few ms with linger_ms 5) is therefore not included. tansu ignores LogAppendTime, so
         broker time cannot be used. --latency-runs runs at each load (3), the loads taking turns
         (50%, 90%, 50%, ...), each a fresh daemon; a row's figures are the median of its runs, with
         the least and greatest (p50_ms_min, ...) and every run's (trials). `stages`: each stage of
         the run loop (forecaster/stages.py: wait, the batch's oldest record's wait before its poll;
         poll, decode, step, encode, produce, acknowledge, checkpoint, retrain; batch, all but wait
         and poll), the milliseconds a record's batch spent there, p50 / p99 / max over the records,
         and its share of the loop's time; `gc`, the garbage collector's pauses meanwhile.
retrain  benchmarks/retrain.py's figures (see its docstring): TBPTT windows trained per second by a
         retraining round alone, and the engine's steps/s while a round trains in the daemon's
         background thread over its steps/s alone (rounds alternate), at 10,000 GRU series.

The whole run keeps the memory it frees for reuse, as the default daemon does (the keep_freed_memory
setting, forecaster/process.py); --c-library-memory leaves glibc's defaults, as a daemon with the
setting off does: the run to compare with.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import yaml

from forecaster import config as config_module
from forecaster import process
from forecaster.build import resolve_device, seeded_model
from forecaster.config import Calendar, Combination, ModelConfig, Pipeline, RecordFormat, Retraining
from forecaster.io import datasets
from forecaster.serving.engine import Engine
from forecaster.serving.records import Observations

import retrain  # benchmarks/retrain.py, beside this script
import tables  # benchmarks/tables.py, beside this script

REPO = Path(__file__).resolve().parents[1]

CELLS = ("gru", "lstm")
SIZES = (100, 10_000, 100_000, 1_000_000)
MEMORY_AT = ("gru", 1_000_000)  # the engine row after which memory is read
COVARIATES = ("HUFL", "MUFL", "LUFL")  # ETTh1 channels fed as covariates; the target is OT
HOUR = 3600.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions and shorter latency runs (about 7 minutes)"
    )
    parser.add_argument(
        "--sections",
        default="engine,daemon,latency,retrain",
        metavar="LIST",
        help="comma-separated subset of engine,daemon,latency,retrain (memory comes with engine; default: all)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the daemon and retraining sections run (auto: CUDA when present); "
        "the engine section always measures the CPU, and CUDA too when present",
    )
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=3,
        metavar="N",
        help="latency runs at each load, interleaved (50%%, 90%%, 50%%, ...); each figure is their median (default 3)",
    )
    parser.add_argument(
        "--c-library-memory",
        action="store_true",
        help="leave glibc's allocator at its defaults, as a daemon with keep_freed_memory: false (default: keep "
        "freed memory for reuse, as the default daemon does; forecaster/process.py)",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks/results/throughput.json", help="where to write the JSON"
    )
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    sections = set(args.sections.split(","))
    unknown = sections - {"engine", "daemon", "latency", "retrain"}
    if unknown:
        parser.error(
            f"--sections: expected names among engine, daemon, latency, retrain, got {', '.join(sorted(unknown))}"
        )
    if args.latency_runs < 1:
        parser.error(f"--latency-runs: expected a positive integer, got {args.latency_runs}")
    result = {
        "machine": machine(),
        "command": " ".join(["python benchmarks/throughput.py", *(argv or sys.argv[1:])]),
        "quick": args.quick,
        # before any thread starts, as `forecaster run` does (cli.py)
        "keep_freed_memory": False if args.c_library_memory else process.keep_freed_memory(),
    }
    if "engine" in sections:
        result["engine"], result["memory"] = engine_section(args.quick)
        print_engine(result["engine"], result["memory"])
        result["engine_scaling"] = engine_scaling(result["engine"])
        if result["engine_scaling"]:
            scaling = result["engine_scaling"]
            print(
                f"the step at {scaling['n_series']:,} series: {scaling['step_ms']:,.0f} ms, {scaling['ratio']:.2f}x "
                f"the same series-steps at 10,000 a step ({scaling['steps_of_10000_ms']:,.0f} ms)"
            )
        result["combination"] = combination_cost(args.quick)
    if sections & {"daemon", "latency"}:
        result.update(kafka_sections(args.quick, sections, device, args.latency_runs))
    if "retrain" in sections:
        result["retrain"] = retrain.measure(args.quick, device=device)
        retrain.print_table(result["retrain"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    tables.follow(args.out)  # the docs' tables are drawn from the results files
    print(f"wrote {args.out}")
    return 0


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return {
        "cpu": names[0] if names else cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "when": datetime.now().isoformat(timespec="seconds"),
    }


# -- data ----------------------------------------------------------------------------------------


def etth1() -> np.ndarray:
    """ETTh1 as (hours, 4): OT, then the covariates; a real series to feed every benchmark."""
    columns: dict[str, list[float]] = {}
    for record in datasets.load("etth1").records:
        columns.setdefault(record["series"].split(".", 1)[1], []).append(record["value"])
    return np.stack([np.asarray(columns[name]) for name in ("OT", *COVARIATES)], axis=1)


class Feed:
    """Poll batches of one record for each of n series: series i reads ETTh1 from its own offset."""

    def __init__(self, n: int, values: np.ndarray):
        self.keys = tuple(f"s{i:07d}" for i in range(n))
        self.values = values
        self.offsets = (np.arange(n) * 7919) % (len(values) - 1)
        self.t = 0

    def next(self) -> Observations:
        rows = (self.offsets + self.t) % len(self.values)
        times = np.full(len(self.keys), 1.5e9 + HOUR * self.t)
        self.t += 1
        return Observations(self.keys, times, times.copy(), self.values[rows], np.arange(len(self.keys)))


# -- engine --------------------------------------------------------------------------------------


def bench_pipeline(
    cell: str, max_series: int, combination: bool = False, hidden_size: int = 64, num_layers: int = 2
) -> Pipeline:
    """The benchmark network: hidden 64, 2 layers, horizon 24, input 4 (target + 3 covariates, no calendar);
    served alone unless `combination` (the engine's rows measure the network's step, `combination_cost` what
    the online combination adds to it), and without retraining: the rows measure serving, and the retraining
    buffer (retraining.buffer steps of every series: 14 GB at a million series of this network) is what a
    pipeline of that many series must size for itself. benchmarks/compress.py times other widths and depths."""
    return Pipeline(
        name="bench",
        input_topic="bench.in",
        output_topic="bench.out",
        dead_letter_topic="bench.dead",
        record=RecordFormat(key="series", timestamp="time", target="OT", covariates=COVARIATES),
        cadence="1h",
        horizon=24,
        calendar=Calendar(),
        max_series=max(max_series, 1000),
        spill="none",
        model=ModelConfig(cell=cell, hidden_size=hidden_size, num_layers=num_layers, weights=None),
        combination=Combination(enabled=combination),
        retraining=Retraining(enabled=False),
    )


def combination_cost(quick: bool, n: int = 10_000) -> dict:
    """The GRU engine's step at n series without and with the online combination, in interleaved rounds:
    the median step of each round, the best round of each."""
    engines = {on: Engine(bench_pipeline("gru", n, on), seeded_model(bench_pipeline("gru", n))) for on in (False, True)}
    best = step_seconds(engines, n, *repetitions(n, quick))
    alone, combined = best[False], best[True]
    print(f"  combination at {n:,} series: {1e3 * alone:.1f} ms -> {1e3 * combined:.1f} ms a step", flush=True)
    return {
        "n_series": n,
        "cell": "gru",
        "step_ms_network": round(1e3 * alone, 3),
        "step_ms_with_combination": round(1e3 * combined, 3),
        "ratio": round(combined / alone, 2),
    }


def step_seconds(engines: dict, n: int, rounds: int, steps: int, clock=time.perf_counter) -> dict:
    """Each engine's step on n series (one record of each, ETTh1's values) in interleaved rounds: the median
    step of each round, the best round of each engine, in seconds of `clock`, by the engines' keys."""
    values = etth1()
    feeds = {key: Feed(n, values) for key in engines}
    for key, engine in engines.items():
        for _ in range(2):  # the first steps admit every series
            engine.step(feeds[key].next(), now=time.time())
    medians = {key: [] for key in engines}
    for _ in range(rounds):
        for key, engine in engines.items():
            seconds = []
            for _ in range(steps):
                batch = feeds[key].next()
                started = clock()
                engine.step(batch, now=time.time())
                seconds.append(clock() - started)
            medians[key].append(statistics.median(seconds))
    return {key: min(m) for key, m in medians.items()}


def repetitions(n: int, quick: bool) -> tuple[int, int]:
    """(rounds, timed steps a round) for n series."""
    steps = {100: 100, 10_000: 15, 100_000: 3, 1_000_000: 1}[n]
    return (4, steps) if quick else (8, 2 * steps)


def engine_section(quick: bool) -> tuple[list[dict], dict]:
    """Every row's engine is built and warmed first (memory is read right after the one named by
    MEMORY_AT, built first, while it is alone); then the rows take their rounds in turn, so that each
    row's rounds are spread over the whole section and a busy spell on a shared machine spoils at
    most some rounds of every row, rather than all rounds of one."""
    values, devices = etth1(), ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    order = [(d, c, n) for d in devices for c in CELLS for n in SIZES]
    order.sort(key=lambda row: row != ("cpu", *MEMORY_AT))
    benches, memory = {}, {}
    for device, cell, n in order:
        benches[device, cell, n] = EngineBench(cell, n, device, values, quick)
        if (device, cell, n) == ("cpu", *MEMORY_AT):
            memory = memory_figures(benches[device, cell, n].engine, n)
    for _ in range(max(bench.rounds for bench in benches.values())):
        for bench in benches.values():
            bench.round()
    for bench in benches.values():  # after the timed rounds: the wrappers cost a little
        bench.profile_stages()
    rows = [benches[key].row() for key in sorted(benches, key=lambda k: (devices.index(k[0]), CELLS.index(k[1]), k[2]))]
    return rows, memory


def engine_scaling(rows: list[dict]) -> dict:
    """The issue's measure of how the step scales: the full step at the most series against the same number of
    series-steps taken at 10,000 series a step, GRU on the CPU, from the same run."""
    by_size = {r["n_series"]: r for r in rows if r["cell"] == "gru" and r["device"] == "cpu"}
    largest = max(by_size)
    if 10_000 not in by_size or largest <= 10_000:
        return {}
    small = by_size[10_000]["step_ms"] * largest / 10_000
    return {
        "n_series": largest,
        "step_ms": by_size[largest]["step_ms"],
        "steps_of_10000_ms": round(small, 3),
        "ratio": round(by_size[largest]["step_ms"] / small, 3),
    }


# Engine.step's parts, timed one by one (`EngineBench.profile_stages`): stage -> the engine's methods in it
ENGINE_STAGES = {
    "lookup": ("store.slots",),
    "plan": ("plan",),
    "gaps": ("_stand_in_for_missing", "_fill_gaps"),
    "recurrent": ("_run_waves",),
    "quantiles": ("_quantiles",),
    "combination": ("_combine",),
    "scoring": ("_score_and_remember", "_track_and_score"),
    "forecasts": ("_forecasts",),
}


@contextlib.contextmanager
def timed_stages(engine: Engine):
    """Seconds per ENGINE_STAGES stage of the engine's steps while inside (each method wrapped on the instance;
    `plan`, a function of the module, wrapped there)."""
    from forecaster.serving import engine as engine_module

    seconds = dict.fromkeys(ENGINE_STAGES, 0.0)

    def timing(stage, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[stage] += time.perf_counter() - started

        return timed

    plan = engine_module.plan
    for stage, names in ENGINE_STAGES.items():
        for name in names:
            if name == "plan":
                engine_module.plan = timing(stage, plan)
            else:
                owner, _, attribute = name.rpartition(".")
                target = engine.store if owner == "store" else engine
                setattr(target, attribute, timing(stage, getattr(target, attribute)))
    try:
        yield seconds
    finally:
        engine_module.plan = plan
        for names in ENGINE_STAGES.values():
            for name in names:
                if name != "plan":
                    owner, _, attribute = name.rpartition(".")
                    delattr(engine.store if owner == "store" else engine, attribute)


class EngineBench:
    """One row: an engine on n series and its feed, and the naive loop to compare it with.

    Each round times `steps` batched steps, then the naive loop; a figure is the row's best round
    (the median step within it): the round least disturbed if the machine is shared.
    """

    def __init__(self, cell: str, n: int, device: str, values: np.ndarray, quick: bool):
        pipeline = bench_pipeline(cell, n)
        self.cell, self.n, self.device = cell, n, device
        self.engine = Engine(pipeline, seeded_model(pipeline), device)
        self.feed = Feed(n, values)
        self.naive = Naive(self.engine.model, min(n, 1000 if quick else 3000), values, device)
        for _ in range(2):  # the first step admits every series
            self.engine.step(self.feed.next(), now=time.time())
        self.rounds, self.steps = repetitions(n, quick)
        self.batched, self.naive_rates, self.every_step = [], [], []
        self.stages: dict[str, float] = {}

    def round(self) -> None:
        if len(self.batched) == self.rounds:
            return
        seconds = []
        for _ in range(self.steps):
            batch = self.feed.next()
            started = time.perf_counter()
            self.engine.step(batch, now=time.time())
            seconds.append(time.perf_counter() - started)
        self.batched.append(statistics.median(seconds))
        self.every_step += seconds
        self.naive_rates.append(self.naive.steps_per_s())

    def profile_stages(self, steps: int = 3) -> None:
        """The median of `steps` more steps, stage by stage (ENGINE_STAGES; `other`: the rest of the step)."""
        found = []
        for _ in range(steps):
            batch = self.feed.next()
            with timed_stages(self.engine) as seconds:
                started = time.perf_counter()
                self.engine.step(batch, now=time.time())
                total = time.perf_counter() - started
            found.append({**seconds, "other": total - sum(seconds.values()), "step": total})
        self.stages = {stage: round(1e3 * statistics.median(f[stage] for f in found), 3) for stage in found[0]}

    def row(self) -> dict:
        n, best = self.n, min(self.batched)
        naive_model, naive_rnn = (max(r[kind] for r in self.naive_rates) for kind in ("model", "torch_rnn"))
        row = {
            "cell": self.cell,
            "n_series": n,
            "device": self.device,
            "batched_steps_per_s": round(n / best),
            "naive_steps_per_s": round(naive_model),
            "speedup": round(n / best / naive_model, 1),
            "naive_torch_rnn_steps_per_s": round(naive_rnn),
            "speedup_vs_torch_rnn": round(n / best / naive_rnn, 1),
            "step_ms": round(1e3 * best, 3),
            "step_ms_median_all_rounds": round(1e3 * statistics.median(self.every_step), 3),
            "rounds": self.rounds,
            "steps_per_round": self.steps,
            "naive_series": self.naive.count,
            "stages_ms": self.stages,  # one step, stage by stage (ENGINE_STAGES), median of three more steps
        }
        print(
            f"  engine {self.device} {self.cell:<4} {n:>9,} series: {row['batched_steps_per_s']:>12,} series-steps/s, "
            f"naive {row['naive_steps_per_s']:,}/s",
            flush=True,
        )
        return row


class Naive:
    """Without the engine: one call per record, batch 1, each series' state kept in a dict.

    `model`: the pipeline's own network, `model.step` then `model.head` (the naive loop the targets
    are stated against). `torch_rnn`: torch's nn.GRU / nn.LSTM and an nn.Linear head with the same
    weights, torch's fused recurrent kernel and the faster of the two at batch 1.
    """

    def __init__(self, model, count: int, values: np.ndarray, device: str):
        spec = model.spec
        self.model, self.count = model, count
        self.rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[spec.cell](spec.input_size, spec.hidden_size, spec.num_layers)
        self.rnn = self.rnn.to(device).eval()
        with torch.no_grad():
            for i, cell in enumerate(model.layers):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(self.rnn, f"{name}_l{i}").copy_(getattr(cell, name))
        self.keys = [f"s{i}" for i in range(count)]
        self.inputs = torch.as_tensor(values[:count], dtype=torch.float32, device=device).view(count, 1, 1, -1)
        self.model_states, self.rnn_states = {}, {}
        self.steps_per_s()  # fills the dicts of states

    @torch.no_grad()
    def steps_per_s(self) -> dict[str, float]:
        model, states, started = self.model, self.model_states, time.perf_counter()
        for key, x in zip(self.keys, self.inputs):
            state = states.get(key)
            out, states[key] = model.step(x[0], model.initial_state(1) if state is None else state)
            model.head(out, x[0]).cpu()
        model_rate, states, started = self.count / (time.perf_counter() - started), self.rnn_states, time.perf_counter()
        for key, x in zip(self.keys, self.inputs):
            out, states[key] = self.rnn(x, states.get(key))
            model.readout(out[0, 0]).cpu()
        return {"model": model_rate, "torch_rnn": self.count / (time.perf_counter() - started)}


def memory_figures(engine: Engine, n: int) -> dict:
    """Bytes of per-series state, against the raw recurrent state, and the process's RSS."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    kib = {name: int(status[name].split()[0]) * 1024 for name in ("VmRSS", "VmHWM")}
    store = engine.store
    raw = store.layers * store.width * store.state.element_size()
    return {
        "cell": engine.model.spec.cell,
        "n_series": n,
        "bytes_per_series": round(store.nbytes / n, 1),
        "raw_state_bytes_per_series": raw,
        "rss_bytes_at_1m_series": kib["VmRSS"],
        "peak_rss_bytes": kib["VmHWM"],
    }


def print_engine(rows: list[dict], memory: dict) -> None:
    print(
        f"\n{'cell':<5} {'device':<6} {'series':>10} {'batched steps/s':>16} {'naive steps/s':>14} {'speedup':>8} "
        f"{'nn.GRU/LSTM steps/s':>20} {'speedup':>8} {'step ms':>9}"
    )
    for r in rows:
        print(
            f"{r['cell']:<5} {r['device']:<6} {r['n_series']:>10,} {r['batched_steps_per_s']:>16,} "
            f"{r['naive_steps_per_s']:>14,} {r['speedup']:>7,.0f}x {r['naive_torch_rnn_steps_per_s']:>20,} "
            f"{r['speedup_vs_torch_rnn']:>7,.0f}x {r['step_ms']:>9.2f}"
        )
    for r in rows:
        if r["cell"] == "gru" and r.get("stages_ms"):
            parts = ", ".join(f"{stage} {ms:,.1f}" for stage, ms in r["stages_ms"].items() if stage != "step")
            print(f"  {r['device']} gru {r['n_series']:>9,} series, ms a step: {parts}")
    if memory:
        print(
            f"memory: {memory['bytes_per_series']:.0f} B per series (raw state {memory['raw_state_bytes_per_series']} "
            f"B); "
            f"RSS at 1M {memory['cell']} series {memory['rss_bytes_at_1m_series'] / 2**30:.2f} GiB\n"
        )


# -- daemon and latency, through the embedded broker ------------------------------------------------


def kafka_sections(quick: bool, sections: set[str], device: torch.device, latency_runs: int = 3) -> dict:
    from forecaster.io.broker import EmbeddedBroker

    values, out = etth1(), {}
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as folder:
        bench = KafkaBench(broker.bootstrap, Path(folder), values, device)
        out["daemon"] = bench.throughput(series=2000, per_series=20, trials=2 if quick else 3)
        out["daemon_rows"] = out["daemon"].pop("rows")
        print_daemon(out["daemon_rows"])
        print_stages("the default daemon's loop, all out", out["daemon"]["stages"])
        if "latency" in sections:
            out["latency"] = latency_rows(bench, out["daemon"]["records_per_s"], 8.0 if quick else 30.0, latency_runs)
            for row in out["latency"]:
                print(
                    f"latency at {row['load_fraction']:.0%} load ({row['offered_records_per_s']:,.0f} records/s), "
                    f"median of {row['runs']} runs: p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms "
                    f"({row['p99_ms_min']:.1f} to {row['p99_ms_max']:.1f}), max {row['max_ms']:.1f} ms",
                    flush=True,
                )
                print_stages(f"at {row['load_fraction']:.0%} load", row["stages"])
                sizes, gc = row["records_per_batch"], row["gc"]
                print(
                    f"    records a batch: p50 {sizes['p50']:.0f}, p99 {sizes['p99']:.0f}, max {sizes['max']:.0f}; "
                    f"GC: {gc['collections']:.0f} pauses, p99 {gc['p99_ms']:.1f} ms, max {gc['max_ms']:.1f} ms",
                    flush=True,
                )
    return out


LOADS = (0.5, 0.9)  # the latency runs' fractions of the default daemon's measured records/s


def latency_rows(bench: KafkaBench, max_rate: float, seconds: float, runs: int) -> list[dict]:
    """Each load's latency: `runs` runs, the loads taking turns (so a busy spell spoils one run of each, not all
    runs of one); each figure is the median of the runs, with their least and greatest beside p50 and p99."""
    trials = {fraction: [] for fraction in LOADS}
    for _ in range(runs):
        for fraction in LOADS:
            trials[fraction].append(bench.latency(fraction, max_rate, seconds))
    return [median_row(fraction, found) for fraction, found in trials.items()]


def median_row(fraction: float, trials: list[dict]) -> dict:
    """One load's row: the median of its runs, each figure's range, every run's figures, the stages' medians."""
    middle = lambda values: round(float(statistics.median(values)), 2)  # noqa: E731
    row = {
        "load_fraction": fraction,
        "offered_records_per_s": trials[0]["offered_records_per_s"],
        "records": trials[0]["records"],
        "runs": len(trials),
    }
    for figure in ("p50_ms", "p99_ms", "max_ms"):
        values = [t[figure] for t in trials]
        row[figure] = middle(values)
        row[f"{figure}_min"], row[f"{figure}_max"] = min(values), max(values)
    row["stages"] = {
        stage: {key: middle([t["stages"][stage][key] for t in trials]) for key in trials[0]["stages"][stage]}
        for stage in trials[0]["stages"]
    }
    for part in ("records_per_batch", "gc"):
        row[part] = {key: middle([t[part][key] for t in trials]) for key in trials[0][part]}
    row["trials"] = [{k: t[k] for k in ("p50_ms", "p99_ms", "max_ms")} for t in trials]
    row["method"] = trials[0]["method"]
    return row


@contextlib.contextmanager
def traced_batches():
    """Every poll batch a daemon of this process handles while inside: (its records, its seconds per stage)."""
    from forecaster.app import PipelineWorker

    batches, original = [], PipelineWorker.run_once

    def run_once(worker: PipelineWorker) -> int:
        consumed = original(worker)
        if consumed:
            batches.append((consumed, worker.stages.last))
        return consumed

    PipelineWorker.run_once = run_once
    try:
        yield batches
    finally:
        PipelineWorker.run_once = original


def stage_summary(batches: list[tuple[int, dict]]) -> dict:
    """Per stage of the run loop (forecaster/stages.py), and for the whole batch but its wait and poll: the
    milliseconds a record's batch spent there, median, p99 and max over the records (each batch counted once
    per record it held: what the records went through), and the stage's share of the loop's time (`wait`, the
    batch's oldest record's wait before the poll, is none of the loop's)."""
    from forecaster.stages import STAGES

    if not batches:
        return {}
    held = np.array([n for n, _ in batches])
    columns = {stage: np.array([1e3 * seconds[stage] for _, seconds in batches]) for stage in STAGES}
    total = sum(float(c.sum()) for stage, c in columns.items() if stage != "wait")
    columns["batch"] = sum(c for stage, c in columns.items() if stage not in ("wait", "poll"))
    summary = {}
    for stage, ms in columns.items():
        per_record = np.repeat(ms, held)
        summary[stage] = {
            "p50_ms": round(float(np.percentile(per_record, 50)), 2),
            "p99_ms": round(float(np.percentile(per_record, 99)), 2),
            "max_ms": round(float(ms.max()), 2),
            "share": round(float(ms.sum()) / total, 3) if total and stage != "wait" else 0.0,
        }
    return summary


def batch_sizes(batches: list[tuple[int, dict]]) -> dict:
    """Records per poll batch: median, p99 and max over the batches."""
    held = np.array([n for n, _ in batches] or [0])
    return {"p50": float(np.percentile(held, 50)), "p99": float(np.percentile(held, 99)), "max": int(held.max())}


@contextlib.contextmanager
def traced_gc():
    """The garbage collector's pauses while inside (every thread waits on one): their count, total, p99 and max."""
    import gc

    pauses, started = [], [0.0]

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(1e3 * (time.perf_counter() - started[0]))

    found: dict = {}
    gc.callbacks.append(callback)
    try:
        yield found
    finally:
        gc.callbacks.remove(callback)
        ms = np.asarray(pauses or [0.0])
        found.update(
            collections=len(pauses),
            total_ms=round(float(ms.sum()), 2),
            p99_ms=round(float(np.percentile(ms, 99)), 2),
            max_ms=round(float(ms.max()), 2),
        )


def print_stages(title: str, stages: dict) -> None:
    if not stages:
        return
    print(f"  stages {title}: ms a record's batch spent in each, p50 / p99 / max (share of the loop's time)")
    for stage, row in stages.items():
        print(
            f"    {stage:<13} {row['p50_ms']:>9.2f} {row['p99_ms']:>9.2f} {row['max_ms']:>9.2f} ({row['share']:.0%})",
            flush=True,
        )


def stream(values: np.ndarray, series: int, per_series: int) -> list[tuple[bytes, bytes]]:
    """(key, JSON) records of `series` series read from ETTh1 at their own offsets, interleaved in time."""
    offsets = (np.arange(series) * 7919) % (len(values) - per_series)
    records = []
    for t in range(per_series):
        when = datetime.fromtimestamp(1.5e9 + HOUR * t).astimezone().isoformat()
        for i, row in enumerate(values[offsets + t]):
            body = {"series": f"s{i:05d}", "time": when, "OT": row[0], **dict(zip(COVARIATES, row[1:].tolist()))}
            records.append((body["series"].encode(), json.dumps(body, separators=(",", ":")).encode()))
    return records


class KafkaBench:
    """Topics, a config and the clients for the daemon, ceiling and latency runs on one broker."""

    def __init__(self, bootstrap: str, folder: Path, values: np.ndarray, device: torch.device, max_records: int = 2000):
        self.bootstrap, self.folder, self.values, self.device = bootstrap, folder, values, device
        self.max_records = max_records  # per poll batch, as the daemon's default batching.max_records
        self.runs = 0

    def config(self, name: str) -> config_module.Config:
        """A config with one benchmark pipeline on fresh topics, consumer group and state folder."""
        from forecaster.io.broker import free_port
        from forecaster.io.kafka import create_topics

        root = self.folder / name
        (root / "pipelines").mkdir(parents=True)
        pipeline = {
            "name": "bench",
            "input_topic": f"{name}.in",
            "output_topic": f"{name}.out",
            "dead_letter_topic": f"{name}.dead",
            "partitions": 3,
            "cadence": "1h",
            "horizon": 24,
            "record": {"key": "series", "timestamp": "time", "target": "OT", "covariates": list(COVARIATES)},
            "model": {"cell": "gru", "hidden_size": 64, "num_layers": 2, "weights": None},
            "max_series": 100_000,
            "batching": {"max_records": self.max_records},
            # latency is the forecast's Kafka timestamp minus its input record's: stamped when produced, not
            # with the observation's time (the default)
            "output": {"timestamp": "now"},
        }
        (root / "pipelines/bench.yaml").write_text(yaml.safe_dump(pipeline))
        settings = {
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "group_id": name,
                "consumer": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
                "producer": {"acks": "all", "linger_ms": 5},
            },
            "device": self.device.type,
            "metrics": {"host": "127.0.0.1", "port": free_port()},
            "log_level": "WARNING",
            "state_dir": str(root / "state"),
            "pipelines": ["pipelines/bench.yaml"],
        }
        (root / "config.yaml").write_text(yaml.safe_dump(settings))
        config = config_module.load(root / "config.yaml")
        p = config.pipelines[0]
        create_topics(
            config.settings.kafka, [(t, p.partitions) for t in (p.input_topic, p.output_topic, p.dead_letter_topic)]
        )
        return config

    def throughput(self, series: int, per_series: int, trials: int) -> dict:
        """The default daemon against the bare kafka-python ceiling, plus every row of DAEMON_ROWS and CEILINGS."""
        from forecaster.io.kafka import create_topics

        config = self.config("throughput")
        pipeline, records = config.pipelines[0], stream(self.values, series, per_series)
        preload(config, pipeline.input_topic, records)
        create_topics(config.settings.kafka, [("throughput.ceiling", 3)])
        ceilings = {name: [] for name in CEILINGS}
        daemons = {row: [] for row in DAEMON_ROWS}
        default_batches = []  # the default daemon's poll batches, trial by trial
        for trial in range(trials):
            for name, (loop, pure_crc) in CEILINGS.items():
                with pure_python_crc(pure_crc):
                    ceilings[name].append(
                        loop(
                            self.bootstrap,
                            pipeline.input_topic,
                            "throughput.ceiling",
                            len(records),
                            pipeline.batching.max_records,
                        )
                    )
            for row in DAEMON_ROWS:
                client, per_message, pure_crc = row
                variant = with_client(
                    with_group(config, f"throughput-{trial}-{client}-{per_message}-{pure_crc}"), client, per_message
                )
                with pure_python_crc(pure_crc), traced_batches() as batches:
                    daemons[row].append(run_daemon(variant, len(records)))
                if row == DAEMON_ROWS[0]:
                    default_batches.append(batches)
        best = {name: max(rates) for name, rates in ceilings.items()}
        rows = [daemon_row(row, max(rates), best, ceilings, rates) for row, rates in daemons.items()]
        default = rows[0]
        return {
            "records": len(records),
            "series": series,
            "dataset": "etth1",
            "records_per_s": default["records_per_s"],
            "ceiling_records_per_s": default["ceiling_records_per_s"],
            "fraction_of_ceiling": default["fraction_of_ceiling"],
            "confluent_ceiling_records_per_s": round(best["confluent-kafka"]),
            "trials": {
                "records_per_s": default["trials"],
                "ceiling_records_per_s": [round(c) for c in ceilings["kafka-python"]],
            },
            "rows": rows,
            # its best trial's loop, stage by stage (run with every record waiting: each batch is max_records)
            "stages": stage_summary(default_batches[int(np.argmax(daemons[DAEMON_ROWS[0]]))]),
        }

    def latency(self, fraction: float, max_rate: float, seconds: float) -> dict:
        """Latency percentiles with a paced producer at `fraction` of the daemon's measured records/s."""
        from prometheus_client import CollectorRegistry

        from forecaster.app import Daemon

        self.runs += 1
        config = self.config(f"latency{self.runs}")
        pipeline, rate = config.pipelines[0], fraction * max_rate
        total = int(rate * seconds)
        records = stream(self.values, 2000, -(-total // 2000))[:total]
        registry = CollectorRegistry()
        daemon = Daemon(config, registry=registry)
        runner = threading.Thread(target=daemon.run, name="daemon")
        runner.start()
        try:
            wait_for(lambda: registry.get_sample_value("forecaster_pipeline_up", {"pipeline": "bench"}) == 1, 60)
            producer = multiprocessing.get_context("spawn").Process(
                target=paced_produce, args=(self.bootstrap, pipeline.input_topic, records, rate)
            )
            with traced_batches() as batches, traced_gc() as gc_pauses:
                producer.start()
                producer.join()
                wait_for(lambda: produced(registry) >= total, 120)
        finally:
            daemon.stop()
            runner.join(60)
        latencies = matched_latencies(self.bootstrap, pipeline.input_topic, pipeline.output_topic, total)
        print(
            f"  run at {fraction:.0%} load: p50 {np.percentile(latencies, 50):.1f} ms, "
            f"p99 {np.percentile(latencies, 99):.1f} ms",
            flush=True,
        )
        return {
            "load_fraction": fraction,
            "offered_records_per_s": round(rate),
            "records": total,
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2),
            "max_ms": round(float(latencies.max()), 2),
            "stages": stage_summary(batches),
            "records_per_batch": batch_sizes(batches),
            "gc": gc_pauses,
            "method": "Kafka CreateTime of the forecast minus CreateTime of its input record (acknowledgement not "
            "included)",
        }


def daemon_row(row: tuple, rate: float, best: dict, ceilings: dict, trials: list[float]) -> dict:
    """One daemon variant against its own client's ceiling (same CRC) and against kafka-python's."""
    client, per_message, pure_crc = row
    own = f"{client}, pure-Python CRC" if pure_crc else client
    return {
        "client": client,
        "forecasts_per_message": per_message,
        "crc": "pure-Python" if pure_crc else "C (crc32c)",
        "records_per_s": round(rate),
        "ceiling": own,
        "ceiling_records_per_s": round(best[own]),
        "fraction_of_ceiling": round(rate / best[own], 3),
        "fraction_of_kafka_python_ceiling": round(rate / best["kafka-python"], 3),
        "trials": [round(r) for r in trials],
        "ceiling_trials": [round(c) for c in ceilings[own]],
    }


def print_daemon(rows: list[dict]) -> None:
    print(
        f"\n{'daemon client':<16} {'CRC':<12} {'forecasts/msg':>13} {'records/s':>10} {'its ceiling':>12} "
        f"{'fraction':>9} {'of kafka-python ceiling':>24}"
    )
    for r in rows:
        print(
            f"{r['client']:<16} {r['crc']:<12} {r['forecasts_per_message']:>13} {r['records_per_s']:>10,} "
            f"{r['ceiling_records_per_s']:>12,} {r['fraction_of_ceiling']:>9.0%} "
            f"{r['fraction_of_kafka_python_ceiling']:>24.0%}",
            flush=True,
        )


def with_client(config: config_module.Config, client: str, forecasts_per_message: int) -> config_module.Config:
    """The same config with another Kafka client and output packing."""
    import dataclasses

    kafka = dataclasses.replace(config.settings.kafka, client=client)
    pipelines = tuple(
        dataclasses.replace(p, batching=dataclasses.replace(p.batching, forecasts_per_message=forecasts_per_message))
        for p in config.pipelines
    )
    return dataclasses.replace(config, settings=dataclasses.replace(config.settings, kafka=kafka), pipelines=pipelines)


@contextlib.contextmanager
def pure_python_crc(on: bool):
    """kafka-python's CRC-32C in pure Python (as without the crc32c package) while inside, when `on`."""
    from kafka.record import util

    saved = util.calc_crc32c.__defaults__
    if on:
        util.calc_crc32c.__defaults__ = (util.crc32c_py,)
    try:
        yield
    finally:
        util.calc_crc32c.__defaults__ = saved


def with_group(config: config_module.Config, group: str) -> config_module.Config:
    """The same config under another consumer group (and state folder): a daemon that starts from scratch."""
    import dataclasses

    kafka = dataclasses.replace(config.settings.kafka, group_id=group)
    settings = dataclasses.replace(config.settings, kafka=kafka, state_dir=f"{config.settings.state_dir}-{group}")
    return dataclasses.replace(config, settings=settings)


def preload(config: config_module.Config, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from forecaster.io.kafka import Sink
    from forecaster.io.messages import Message

    sink = Sink(config.settings.kafka)
    try:
        for begin in range(0, len(records), 5000):
            sink.deliver([Message(topic, k, v) for k, v in records[begin : begin + 5000]], threading.Event())
    finally:
        sink.close()


def bare_loop(bootstrap: str, topic: str, out_topic: str, total: int, max_records: int) -> float:
    """The ceiling: poll, json-decode, produce one small record per input record, flush per poll batch.
    Records/s from the end of the first poll batch to the end of the last, as the daemon is timed."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=max_records)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        consumer.assign([TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))])
        consumer.seek_to_beginning()
        done, first, first_batch = 0, None, 0
        while done < total:
            polled = [r for rs in consumer.poll(timeout_ms=200, max_records=max_records).values() for r in rs]
            for record in polled:
                body = json.loads(record.value)
                producer.send(out_topic, key=record.key, value=b'{"ok":%d}' % (len(body) > 0))
            producer.flush()
            done += len(polled)
            if polled and first is None:
                first, first_batch = time.perf_counter(), done
        return rate(total, first_batch, time.perf_counter() - first)
    finally:
        consumer.close()
        producer.close()


def bare_confluent_loop(bootstrap: str, topic: str, out_topic: str, total: int, max_records: int) -> float:
    """The ceiling with confluent-kafka: the same loop as `bare_loop`, timed the same way."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bare-confluent", "enable.auto.commit": False})
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])
        done, first, first_batch = 0, None, 0
        while done < total:
            polled = [m for m in consumer.consume(num_messages=max_records, timeout=0.2) if m.error() is None]
            for message in polled:
                body = json.loads(message.value())
                producer.produce(out_topic, key=message.key(), value=b'{"ok":%d}' % (len(body) > 0))
            producer.flush()
            done += len(polled)
            if polled and first is None:
                first, first_batch = time.perf_counter(), done
        return rate(total, first_batch, time.perf_counter() - first)
    finally:
        consumer.close()
        producer.flush()


# name -> (bare loop, pure-Python CRC); the first is the ceiling the issue states the target against.
CEILINGS = {
    "kafka-python": (bare_loop, False),
    "confluent-kafka": (bare_confluent_loop, False),
    "kafka-python, pure-Python CRC": (bare_loop, True),
}
# (client, forecasts per output message, pure-Python CRC); the first is the default daemon.
PACKED = 100
DAEMON_ROWS = [
    ("kafka-python", 1, False),
    ("kafka-python", PACKED, False),
    ("confluent-kafka", 1, False),
    ("confluent-kafka", PACKED, False),
    ("kafka-python", 1, True),
]


def rate(total: int, first_batch: float, seconds: float) -> float:
    """Records/s after the first poll batch (the clock starts when it is done)."""
    if first_batch >= total:
        raise RuntimeError(f"benchmark: all {total} records came in the first poll batch; nothing left to time")
    return (total - first_batch) / seconds


def produced(registry) -> float:
    """Forecasts acknowledged so far. Only the counter is collected: the whole registry (/proc read by its process
    collector) every 2 ms took the GIL from the daemon for a quarter of a run, which the bare loops never pay."""
    name = "forecaster_forecasts_produced_total"
    for metric in registry.restricted_registry([name]).collect():
        for sample in metric.samples:
            if sample.name == name and sample.labels == {"pipeline": "bench"}:
                return sample.value
    return 0


def run_daemon(config: config_module.Config, total: int) -> float:
    """Records/s of the daemon, from the end of its first poll batch to its last acknowledged forecast."""
    from prometheus_client import CollectorRegistry

    from forecaster.app import Daemon

    registry = CollectorRegistry()
    daemon = Daemon(config, registry=registry)
    runner = threading.Thread(target=daemon.run, name="daemon")
    runner.start()
    try:
        wait_for(lambda: produced(registry) > 0, 120, interval=0.005)
        first, first_batch = time.perf_counter(), produced(registry)
        wait_for(lambda: produced(registry) >= total, 300, interval=0.005)
        return rate(total, first_batch, time.perf_counter() - first)
    finally:
        daemon.stop()
        runner.join(60)


def wait_for(condition, timeout_s: float, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: nothing happened within {timeout_s:.0f} s")
        time.sleep(interval)


def paced_produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], rate: float) -> None:
    """Send `records` at `rate` records/s, in 10 ms slices (run in its own process: no GIL shared with the daemon)."""
    from kafka import KafkaProducer

    # batches, as a high-volume producer would
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    started, sent = time.perf_counter(), 0
    while sent < len(records):
        due = min(len(records), int((time.perf_counter() - started) * rate) + 1)
        for key, value in records[sent:due]:
            producer.send(topic, key=key, value=value)
        sent = due
        time.sleep(max(0.0, started + sent / rate - time.perf_counter()))
    producer.flush()
    producer.close()


def matched_latencies(bootstrap: str, input_topic: str, output_topic: str, total: int) -> np.ndarray:
    """Milliseconds from each input record's CreateTime to the CreateTime of its forecast."""
    from forecaster.io.kafka import read_topic

    sent = {}
    for record in read_topic(bootstrap, input_topic, total, linger_s=0.2):
        body = json.loads(record.value)
        sent[(body["series"], datetime.fromisoformat(body["time"]).timestamp())] = record.timestamp
    latencies = []
    for record in read_topic(bootstrap, output_topic, total, linger_s=0.2):
        body = json.loads(record.value)
        latencies.append(record.timestamp - sent[(body["series"], datetime.fromisoformat(body["time"]).timestamp())])
    if len(latencies) < total:
        raise RuntimeError(f"latency: expected {total} forecasts, read {len(latencies)}")
    return np.asarray(latencies, dtype=np.float64)


if __name__ == "__main__":
    sys.exit(main())
