"""Warm start: a new series' first forecasts when its state comes from the history it arrives with,
by stepping the forecaster from a zero state (today) or by the bidirectional encoder's one pass.

    python benchmarks/warm_start.py            # writes results/warm_start.json and the docs table
    python benchmarks/warm_start.py --quick --out /tmp/warm_start.json

Data: the shipped etth1 and etth2, 7 hourly channels each. Per dataset a pipeline of the
defaults with what a user sets for hourly data (horizon 24, hour-of-day and day-of-week
features), and every channel's rows split by time: the first 60% train, the next 20% validate,
the last 20% test. The forecaster is pretrained with tbptt.fit (the pipeline's training
settings) on the training part only, then frozen.

A new series is a run of W + K rows cut from a channel (one every `stride` rows) and prepared
as if it were all the series had, scaling from its first row as the engine does for a new key:
it arrives with W rows of history, then its first K forecasts (each of every horizon step) are
scored against the truth. Its state at the end of the history comes from
  zero:     nothing (the history unused: a cold series' first forecast),
  stepped:  the forecaster stepped from a zero state over the W rows (today's engine),
  encoder:  the bidirectional encoder's one pass over the same W rows (serving/warm_start.py).
For each W, encoders of each width in WIDTHS are trained on the training part's runs; the one
with the lowest loss on the validation part's runs is kept and scored on the test part's. The
cost is the milliseconds per series to compute the state, for every test run in one batch and
for one series at a time, on this machine's CPU (stepping through the engine's FusedStep).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from forecaster.build import seeded_model
from forecaster.config import Calendar, ModelConfig, Pipeline, RecordFormat
from forecaster.io import datasets
from forecaster.learning import tbptt
from forecaster.learning.warm_start import NewSeries, errors, fit_encoder, new_series, trainable, warm_start_loss
from forecaster.serving import records
from forecaster.serving.fused_step import FusedStep
from forecaster.serving.warm_start import encoder_for, warm_state

import tables  # benchmarks/tables.py, beside this script

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
DATASETS = ("etth1", "etth2")
HISTORIES = (12, 48, 168)  # W: rows a new series arrives with (half a day, two days, a week)
FOLLOWING = 24  # K: the first forecasts scored
WIDTHS = (32, 64)  # encoder GRU units per direction, chosen on validation
PARTS = (0.6, 0.8)  # ends of the training and validation parts, as fractions of each channel's rows
STRIDES = {"train": 4, "validation": 12, "test": 12}
ENCODER_STEPS = 600


def pipeline(dataset: datasets.Dataset) -> Pipeline:
    """The defaults, with what a user sets for hourly data."""
    return Pipeline(
        name=dataset.name,
        input_topic="in",
        output_topic="out",
        dead_letter_topic="dead",
        record=RecordFormat(key=dataset.key_field, timestamp=dataset.time_field, target=dataset.target_field),
        cadence=dataset.cadence,
        horizon=24,
        calendar=Calendar(hour_of_day=True, day_of_week=True),
        model=ModelConfig(weights=None),
    )


def parts(the_pipeline: Pipeline, dataset: datasets.Dataset) -> dict[str, records.Observations]:
    """The dataset's observations cut by time into its training, validation and test parts."""
    payloads = [json.dumps(r).encode() for r in dataset.records]
    observations, rejected = records.decode(payloads, the_pipeline.record)
    if rejected:
        raise ValueError(f"{dataset.name}: {len(rejected)} records do not decode, the first: {rejected[0]}")
    times = np.unique(observations.times)
    train_end, validation_end = (times[int(f * len(times))] for f in PARTS)
    t = observations.times
    return {
        "train": observations.take(t < train_end),
        "validation": observations.take((t >= train_end) & (t < validation_end)),
        "test": observations.take(t >= validation_end),
    }


def pretrained(the_pipeline: Pipeline, train: records.Observations, steps: int | None):
    """The forecaster fitted on the training part, frozen from here on."""
    model = seeded_model(the_pipeline)
    training = the_pipeline.training if steps is None else dataclasses.replace(the_pipeline.training, steps=steps)
    tbptt.fit(model, tbptt.prepare(the_pipeline, train), training)
    return model.eval()


def chosen_encoder(model, runs: dict[str, NewSeries], steps: int, log) -> tuple:
    """The encoder of the width in WIDTHS with the lowest validation loss, and each width's losses."""
    tried, validation_runs = [], trainable(runs["validation"])
    for width in WIDTHS:
        encoder = encoder_for(model, width)
        losses = fit_encoder(model, encoder, runs["train"], steps=steps)
        with torch.no_grad():
            validation = warm_start_loss(model, validation_runs, encoder).item()
        log(f"  width {width}: train loss {np.mean(losses[-50:]):.4f}, validation loss {validation:.4f}")
        tried.append((validation, width, encoder, losses))
    validation, width, encoder, losses = min(tried, key=lambda t: t[0])
    with torch.no_grad():
        stepped = warm_start_loss(model, validation_runs).item()
    return encoder, {
        "width": width,
        "validation_loss": round(validation, 5),
        "validation_loss_stepped": round(stepped, 5),
        "widths_validation_loss": {str(w): round(v, 5) for v, w, _, _ in tried},
        "train_loss_first": round(float(np.mean(losses[:20])), 5),
        "train_loss_last": round(float(np.mean(losses[-20:])), 5),
    }


@torch.no_grad()
def cost_ms(model, encoder, history: torch.Tensor) -> dict:
    """Milliseconds per series to compute the state from `history` (W, n, input_size): all n at once, and one."""
    fast = FusedStep(model)

    def stepped(window):
        state = model.initial_state(window.shape[1])
        for x in window:
            fast.step_(x, state)
        return state

    def encoded(window):
        return warm_state(model, window, encoder)

    n = history.shape[1]
    timings = {}
    for name, how in (("stepped", stepped), ("encoder", encoded)):
        how(history)  # warm-up: allocations, oneDNN's packing
        began = time.perf_counter()
        how(history)
        timings[f"{name}_ms_per_series_batched"] = round(1e3 * (time.perf_counter() - began) / n, 4)
        single = []
        for j in range(min(n, 50)):
            began = time.perf_counter()
            how(history[:, j : j + 1])
            single.append(time.perf_counter() - began)
        timings[f"{name}_ms_one_series"] = round(1e3 * statistics.median(single), 3)
    return timings


def run_dataset(name: str, quick: bool, log) -> list[dict]:
    dataset = datasets.load(name)
    the_pipeline = pipeline(dataset)
    split = parts(the_pipeline, dataset)
    began = time.perf_counter()
    model = pretrained(the_pipeline, split["train"], 30 if quick else None)
    log(f"{name}: forecaster pretrained in {time.perf_counter() - began:.0f} s")
    rows = []
    for history in HISTORIES[:1] if quick else HISTORIES:
        runs = {
            part: new_series(the_pipeline, observations, history, FOLLOWING, STRIDES[part] * (4 if quick else 1))
            for part, observations in split.items()
        }
        log(f"{name} W={history}: " + ", ".join(f"{len(r)} {part} runs" for part, r in runs.items()))
        encoder, chosen = chosen_encoder(model, runs, 40 if quick else ENCODER_STEPS, log)
        test = runs["test"]
        zero = NewSeries(0, test.inputs[history:], test.targets, test.mask, test.std)  # the history left out
        scores = {"zero": errors(model, zero), "stepped": errors(model, test), "encoder": errors(model, test, encoder)}
        row = {
            "dataset": name,
            "history": history,
            "following": FOLLOWING,
            "test_series": len(test),
            "persistence_mae": round(scores["stepped"]["persistence_mae"], 5),
            **{f"{how}_mae": round(s["mae"], 5) for how, s in scores.items()},
            **chosen,
            **cost_ms(model, encoder, test.inputs[:history]),
        }
        row["encoder_over_stepped"] = round(row["encoder_mae"] / row["stepped_mae"], 4)
        log(f"  test MAE zero {row['zero_mae']:.4f} stepped {row['stepped_mae']:.4f} encoder {row['encoder_mae']:.4f}")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--quick", action="store_true", help="smoke run: 30 pretraining steps, 40 encoder steps")
    parser.add_argument("--out", type=Path, default=RESULTS / "warm_start.json")
    args = parser.parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # timings on one core, alike for both ways (and fair to a shared machine)
    try:
        rows = []
        for name in args.datasets.split(","):
            rows += run_dataset(name, args.quick, lambda line: print(line, file=sys.stderr, flush=True))
    finally:
        torch.set_num_threads(threads)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")
    tables.follow(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
