"""Retraining speed, and what a round in the background costs the forecasts (issue 3 item 2; issue 5's `retrain`).

    python benchmarks/retrain.py            # writes benchmarks/results/retrain.json, prints a table
    python benchmarks/retrain.py --quick

An engine (GRU, hidden 64, 2 layers, horizon 24, input 4: ETTh1-shaped) holds 10,000
series with full retraining buffers. Measured in one run:

tbptt_windows_per_s            A retraining round's optimisation steps (TBPTT, window 96 in
                               chunks of 24, the first a burn-in, batch 32, AdamW, clipping),
                               timed alone: windows trained per second.
inference_ratio_while_training `Engine.step` over one record of every series, timed in rounds
                               that alternate: alone, then while a round trains in the
                               daemon's background thread (`trainer.Trainer`). The ratio of the
                               medians of steps/s, with to without: 1.0 means retraining costs
                               the forecasts nothing; on 2 cores the two threads share them.
resync_seconds                 `Engine.install` of new weights with re-synchronisation of all
                               10,000 states from 64 buffered steps: the pause of a promotion.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from forecaster.build import resolve_device, seeded_model
from forecaster.config import Calendar, ModelConfig, Pipeline, RecordFormat, Retraining, Training
from forecaster.learning import resync, rounds, tbptt
from forecaster.learning.trainer import Trainer
from forecaster.serving.engine import Engine
from forecaster.serving.records import Observations

import tables  # benchmarks/tables.py, beside this script

REPO = Path(__file__).resolve().parents[1]

RESULTS = REPO / "benchmarks" / "results"
SERIES = 10_000
T0 = 1_600_000_000.0


def pipeline(series: int = SERIES) -> Pipeline:
    return Pipeline(
        name="bench",
        input_topic="in",
        output_topic="out",
        dead_letter_topic="dead",
        record=RecordFormat(key="key", timestamp="time", target="y", covariates=("a", "b", "c")),
        cadence="1h",
        horizon=24,
        calendar=Calendar(),
        emit="latest_per_series",
        spill="none",
        max_series=series,
        model=ModelConfig(cell="gru", hidden_size=64, num_layers=2, dropout=0.1, residual=True),
        training=Training(window=96, chunk=24, batch_size=32, steps=10_000, warmup_steps=5),
        retraining=Retraining(enabled=True, buffer=160, holdout=24, steps=10_000, max_series=2048, resync_steps=64),
    )


class Feed:
    """Random walks with 3 covariates, one record of every series per hour."""

    def __init__(self, series: int, seed: int = 0):
        self.keys = tuple(f"s{i}" for i in range(series))
        self.rng = np.random.default_rng(seed)
        self.level = np.zeros((series, 4))
        self.hour = 0

    def __len__(self) -> int:
        return len(self.keys)

    def next(self) -> Observations:
        self.level += self.rng.standard_normal(self.level.shape)
        self.hour += 1
        times = np.full(len(self), T0 + 3600.0 * self.hour)
        return Observations(
            keys=self.keys, times=times, local_times=times, values=self.level.copy(), positions=np.arange(len(self))
        )


def filled_engine(the_pipeline: Pipeline, feed: Feed, steps: int, device: torch.device) -> Engine:
    """An engine whose every series has `steps` buffered steps."""
    engine = Engine(the_pipeline, seeded_model(the_pipeline), device)
    for _ in range(steps):
        engine.step(feed.next(), now=time.time())
    return engine


def step_rate(engine: Engine, feed: Feed, seconds: float) -> float:
    """Series-steps/s of `Engine.step` over one record of every series, for about `seconds`."""
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        engine.step(feed.next(), now=time.time())
        done += len(feed)
    return done / (time.perf_counter() - began)


def tbptt_rate(the_pipeline: Pipeline, engine: Engine, steps: int, device: torch.device) -> float:
    """Training windows per second of a round's optimisation steps (after one untimed step)."""
    windows = rounds.collect(engine.store, engine.buffer, the_pipeline.horizon, 2048)
    series = rounds.training_series(windows, the_pipeline.retraining.holdout, the_pipeline.training.window)
    model = seeded_model(the_pipeline)
    tbptt.fit(model, series, dataclasses.replace(the_pipeline.training, steps=1), device=device)
    began = time.perf_counter()
    tbptt.fit(model, series, dataclasses.replace(the_pipeline.training, steps=steps), device=device)
    return steps * the_pipeline.training.batch_size / (time.perf_counter() - began)


def inference_ratio(
    the_pipeline: Pipeline, engine: Engine, feed: Feed, repeats: int, seconds: float, device: torch.device
) -> dict:
    """Alternating rounds of stepping alone and stepping while a round trains in the background."""
    alone, training = [], []
    stop = threading.Event()
    trainer = Trainer(the_pipeline, device, stop)
    windows = rounds.collect(engine.store, engine.buffer, the_pipeline.horizon, 2048)
    trainer.start(engine.model, windows)  # 10,000 steps: it trains for as long as the benchmark runs
    try:
        time.sleep(1.0)  # past its first step
        for _ in range(repeats):
            training.append(step_rate(engine, feed, seconds))
            stop.set()
            trainer.close(60)
            alone.append(step_rate(engine, feed, seconds))
            stop.clear()
            trainer.finished()
            trainer.start(engine.model, windows)
            time.sleep(1.0)
    finally:
        stop.set()
        trainer.close(60)
    return {
        "steps_per_s_alone": statistics.median(alone),
        "steps_per_s_while_training": statistics.median(training),
        "inference_ratio_while_training": statistics.median(training) / statistics.median(alone),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the engine and the round run (auto: CUDA when present)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "retrain.json")
    args = parser.parse_args(argv)
    result = measure(args.quick, log=lambda line: print(line, file=sys.stderr), device=resolve_device(args.device))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    tables.follow(args.out)  # the docs' tables are drawn from the results files
    print_table(result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def measure(
    quick: bool,
    log=print,
    series: int = SERIES,
    phase_seconds: float | None = None,
    device: torch.device = torch.device("cpu"),
) -> dict:
    the_pipeline = pipeline(series)
    log(f"retrain: filling {series:,} series' buffers ({the_pipeline.retraining.buffer} steps each) on {device}")
    feed = Feed(series)
    engine = filled_engine(the_pipeline, feed, the_pipeline.retraining.buffer, device)
    log("retrain: TBPTT optimisation steps alone")
    windows_per_s = tbptt_rate(the_pipeline, engine, 5 if quick else 20, device)
    log("retrain: engine steps alone and while a round trains, alternating")
    ratio = inference_ratio(
        the_pipeline,
        engine,
        feed,
        repeats=2 if quick else 4,
        seconds=phase_seconds or (3.0 if quick else 6.0),
        device=device,
    )
    began = time.perf_counter()
    resync.install(engine, seeded_model(the_pipeline), 1, the_pipeline.retraining.resync_steps)
    resync_seconds = time.perf_counter() - began
    return {
        "cell": "gru",
        "n_series": series,
        "device": device.type,
        "torch_threads": torch.get_num_threads(),
        "window": the_pipeline.training.window,
        "chunk": the_pipeline.training.chunk,
        "batch_size": the_pipeline.training.batch_size,
        "tbptt_windows_per_s": round(windows_per_s, 1),
        **{k: round(v, 3) for k, v in ratio.items()},
        "resync_seconds": round(resync_seconds, 3),
        "resync_steps": the_pipeline.retraining.resync_steps,
        "quick": quick,
    }


def print_table(result: dict) -> None:
    print(
        f"| retraining ({result['n_series']:,} GRU series, {result['device']}, {result['torch_threads']} threads) | |"
    )
    print("| --- | --- |")
    print(
        f"| TBPTT windows/s (window {result['window']}, chunk {result['chunk']}, batch {result['batch_size']}) "
        f"| {result['tbptt_windows_per_s']:,.0f} |"
    )
    print(f"| engine steps/s alone | {result['steps_per_s_alone']:,.0f} |")
    print(f"| engine steps/s while a round trains | {result['steps_per_s_while_training']:,.0f} |")
    print(f"| inference ratio while training | {result['inference_ratio_while_training']:.2f} |")
    print(
        f"| promotion pause: install + re-sync of every state ({result['resync_steps']} steps) "
        f"| {result['resync_seconds']:.2f} s |"
    )


if __name__ == "__main__":
    raise SystemExit(main())
