"""One poisoned series cannot take the shared model, or the other series' forecasts, far from a clean run.

A clean run and a poisoned run of the same real data (ETTh1's seven hourly channels, ten days),
retraining on, through the run loop without Kafka. In the poisoned run one channel gets spikes,
a level shift and then a flood of extreme values (all within limits.max_abs_value, so they are
accepted). The other channels' forecasts and the shared weights must stay within a stated
tolerance of the clean run's (docs/security.md#input-poisoning).
"""

import dataclasses
import json
import threading

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry
from test_app import FakeSink, FakeSource

from forecaster.app import PipelineWorker
from forecaster.build import seeded_model
from forecaster.config import Calendar
from forecaster.io import datasets
from forecaster.io.messages import Polled
from forecaster.learning.trainer import Trainer
from forecaster.metrics import Metrics
from forecaster.serving.engine import Engine

from support import retraining_pipeline

HOURS = 240
POISONED = "etth1.OT"
# The tolerances docs/security.md states. Measured (CPU): the other series' one-step MAE 0.4 % apart, their
# forecasts apart by 3 % of it on average, the weights 15 % apart; a clean run with another training seed is as
# far from the clean run (0.6 %, 7 %, 15.5 %): the poison moves the model no more than retraining's own chance.
MAE_TOLERANCE = 0.02  # relative difference of the other series' one-step MAE
FORECAST_TOLERANCE = 0.1  # mean absolute difference of their forecasts, as a share of that MAE
WEIGHT_TOLERANCE = 0.25  # relative L2 distance of the shared weights


def etth1(hours=HOURS):
    """ETTh1's first `hours` hours, its seven channels as seven series: (key, epoch seconds, value) rows."""
    rows = datasets.load("etth1").records[: 7 * hours]
    times = np.array([np.datetime64(r["time"][:19]).astype("datetime64[s]").astype(np.int64) for r in rows], float)
    return [(r["series"], t, r["value"]) for r, t in zip(rows, times)]


def poisoned(rows):
    """`rows` with series POISONED spiked every 9th hour from hour 60, shifted by +500 over hours 100-140, and
    flooded with +-1e12 over hours 160-200."""
    mine = [i for i, (key, _, _) in enumerate(rows) if key == POISONED]
    rows = list(rows)
    for hour, i in enumerate(mine):
        key, t, y = rows[i]
        if 60 <= hour < 100 and hour % 9 == 0:
            y = y + 1e4
        elif 100 <= hour < 140:
            y = y + 500.0
        elif 160 <= hour < 200:
            y = 1e12 if hour % 2 else -1e12
        rows[i] = (key, t, y)
    return rows


def pipeline():
    p = retraining_pipeline(buffer=96, holdout=16, window=32, steps=20, calendar=Calendar(hour_of_day=True))
    retraining = dataclasses.replace(p.retraining, every_records=350, young_rounds=0)
    return dataclasses.replace(p, retraining=retraining)


def run(rows):
    """Every row through a worker, 7 records a batch, each round concluded at the batch after it starts (so the
    run does not depend on the machine's speed): the worker and each series' forecasts, (hours, horizon)."""
    p = pipeline()
    polled = [
        Polled(0, i, k.encode(), json.dumps({"key": k, "time": t, "y": y}).encode()) for i, (k, t, y) in enumerate(rows)
    ]
    source, stop = FakeSource([polled[a : a + 7] for a in range(0, len(polled), 7)]), threading.Event()
    sink = FakeSink(source)
    w = PipelineWorker(
        p, Engine(p, seeded_model(p)), source, sink, Metrics(CollectorRegistry()), stop, trainer=Trainer(p, "cpu", stop)
    )
    while source.batches:
        w.run_once()
        w.trainer.close(timeout=120)
    forecasts = {}
    for message in sink.messages:
        if message.topic == "out":
            f = json.loads(message.value)
            forecasts.setdefault(f["series"], []).append(f["values"])
    return w, {key: np.array(values) for key, values in forecasts.items()}


@pytest.fixture(scope="module")
def runs():
    rows = etth1()
    return rows, run(rows), run(poisoned(rows))


def one_step_mae(rows, forecasts, keys):
    """The one-step MAE of `forecasts` on the series `keys`: each hour's forecast scored against the next hour."""
    errors = []
    for key in keys:
        actual = np.array([y for k, _, y in rows if k == key])
        errors.append(np.abs(forecasts[key][:-1, 0] - actual[1:]))
    return float(np.mean(np.concatenate(errors)))


def test_both_runs_retrained_and_promoted(runs):
    _, (clean, _), (dirty, _) = runs
    assert clean.engine.model_version >= 1 and dirty.engine.model_version >= 1
    assert clean.trainer.rounds >= 3 and dirty.trainer.rounds >= 3


def test_the_other_series_forecasts_stay_within_the_tolerance_of_a_clean_run(runs):
    rows, (_, clean), (_, dirty) = runs
    others = sorted({key for key, _, _ in rows} - {POISONED})
    assert all(len(clean[k]) == len(dirty[k]) == HOURS for k in others)  # every record forecast in both runs

    clean_mae, dirty_mae = one_step_mae(rows, clean, others), one_step_mae(rows, dirty, others)
    apart = np.mean([np.abs(dirty[k] - clean[k]).mean() for k in others])

    assert abs(dirty_mae - clean_mae) <= MAE_TOLERANCE * clean_mae
    assert apart <= FORECAST_TOLERANCE * clean_mae


def test_the_shared_weights_stay_within_the_tolerance_of_a_clean_run(runs):
    _, (clean, _), (dirty, _) = runs
    a = torch.cat([w.flatten() for w in clean.engine.model.state_dict().values()])
    b = torch.cat([w.flatten() for w in dirty.engine.model.state_dict().values()])

    assert torch.isfinite(b).all()
    assert float((b - a).norm() / a.norm()) <= WEIGHT_TOLERANCE
