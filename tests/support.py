"""Builders shared by the tests: small pipelines and observation batches, and the benchmark scripts."""

import dataclasses
import importlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from forecaster.build import seeded_model
from forecaster.config import Calendar, Combination, Gaps, ModelConfig, Pipeline, RecordFormat, Retraining, Training
from forecaster.errors import TransactionError
from forecaster.io.messages import Sending
from forecaster.serving.records import Observations

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def pipeline_yaml(name: str, extra: str = "") -> str:
    """A small pipeline file's YAML (hourly, horizon 24, a 2x8 GRU from seeded weights), plus `extra` lines."""
    return (
        textwrap.dedent(f"""\
        name: {name}
        input_topic: {name}.in
        output_topic: {name}.out
        dead_letter_topic: {name}.dead
        record:
          key: station
          timestamp: time
          target: temp
        cadence: 1h
        horizon: 24
        model:
          hidden_size: 8
          num_layers: 2
          weights: null
        """)
        + extra
    )


class PretrainFolder:
    """A config folder for `forecaster pretrain` tests: one small pipeline, weather (`pipeline_yaml` plus
    `extra`), and 300 hours of Greensboro's temperature as hours.csv (time, temp)."""

    def __init__(self, folder: Path, extra: str = ""):
        from forecaster.io import datasets

        self.folder = folder
        (folder / "pipelines").mkdir()
        (folder / "pipelines" / "weather.yaml").write_text(pipeline_yaml("weather", extra))
        (folder / "config.yaml").write_text("pipelines:\n  - pipelines/weather.yaml\n")
        rows = datasets.load("greensboro").records[:300]
        (folder / "hours.csv").write_text("time,temp\n" + "".join(f"{r['time']},{r['drybulb_c']}\n" for r in rows))

    def pipeline(self, **model) -> Pipeline:
        """The weather pipeline as loaded, its model section changed by `model` (e.g. hidden_size=16)."""
        from forecaster import config

        loaded = config.load(self.folder / "config.yaml", require_weights=False).pipeline("weather")
        return dataclasses.replace(loaded, model=dataclasses.replace(loaded.model, **model))

    def pretrain(self, *extra: str) -> int:
        """`forecaster pretrain` of the weather pipeline on hours.csv, writing w.pt; its exit code."""
        from forecaster.cli import main

        config, data, out = (str(self.folder / name) for name in ("config.yaml", "hours.csv", "w.pt"))
        return main(["pretrain", "-c", config, "--pipeline", "weather", "--file", data, "--out", out, *extra])


def benchmark(name: str):
    """benchmarks/<name>.py as the module `name`, imported once per session (it may import its siblings)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def make_pipeline(
    cell="gru",
    horizon=4,
    emit="per_record",
    covariates=(),
    max_series=1000,
    calendar=Calendar(hour_of_day=True, day_of_week=True),
    cadence="1h",
    spill="memory",
    combination=False,
    fill_gaps=False,
    **model,
) -> Pipeline:
    """A small pipeline with seeded weights, as config.load would build it; the network alone unless
    `combination`, stepped record by record unless `fill_gaps` (the tests of the network's path compare
    with its own arithmetic, which the offline path repeats record by record)."""
    return Pipeline(
        name="test",
        input_topic="in",
        output_topic="out",
        dead_letter_topic="dead",
        record=RecordFormat(key="key", timestamp="time", target="y", covariates=tuple(covariates)),
        cadence=cadence,
        horizon=horizon,
        calendar=calendar,
        emit=emit,
        max_series=max_series,
        spill=spill,
        combination=Combination(enabled=combination),
        gaps=Gaps(fill=fill_gaps),
        retraining=Retraining(enabled=False),
        model=dataclasses.replace(
            ModelConfig(cell=cell, hidden_size=8, num_layers=2, weights=None, quantiles=()), **model
        ),
    )


def observations(keys, times, values, positions=None) -> Observations:
    """Observations from lists: values is a list of targets or of [target, *covariates] rows."""
    values = np.asarray(values, dtype=np.float64)
    values = values.reshape(len(keys), -1)
    times = np.asarray(times, dtype=np.float64)
    return Observations(
        tuple(keys), times, times.copy(), values, np.arange(len(keys)) if positions is None else np.asarray(positions)
    )


def random_walks(n_series=5, length=12, seed=0, covariates=0):
    """Interleaved records of several series of different scales, in arrival order."""
    rng = np.random.default_rng(seed)
    keys, times, rows = [], [], []
    for t in range(length):
        for s in range(n_series):
            if rng.random() < 0.8:  # series do not all report every step
                keys.append(f"s{s}")
                times.append(1_600_000_000 + 3600.0 * t)
                level = 10.0**s
                rows.append([level * (1 + 0.1 * rng.standard_normal())] + list(rng.standard_normal(covariates)))
    return keys, times, rows


def torch_reference(model):
    """nn.GRU / nn.LSTM / nn.RNN with the model's weights copied in: what the model claims to equal."""
    import torch
    from torch import nn

    s = model.spec
    kind = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[s.cell]
    kw = {"nonlinearity": s.nonlinearity} if s.cell == "rnn" else {}
    ref = kind(s.input_size, s.hidden_size, s.num_layers, **kw).to(model.readout.weight.device)
    with torch.no_grad():
        for i, cell in enumerate(model.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{i}").copy_(getattr(cell, name))
    return ref


def ordered_quantiles_model(pipeline, spread=1.0):
    """Seeded weights for quantiles (0.1, 0.5, 0.9) whose heads are the point head shifted by -spread, 0
    and +spread scales: they never cross."""
    model, H = seeded_model(pipeline), pipeline.horizon
    with torch.no_grad():
        for k, shift in enumerate((-spread, 0.0, spread), start=1):
            model.readout.weight[k * H : (k + 1) * H] = model.readout.weight[:H]
            model.readout.bias[k * H : (k + 1) * H] = model.readout.bias[:H] + shift
    return model


T0 = 1_600_000_000.0


def retraining_pipeline(
    buffer=96, holdout=16, steps=40, min_improvement=0.0, max_series=1000, quantiles=(), window=32, **kw
):
    pipeline = make_pipeline(max_series=max_series, quantiles=tuple(quantiles), **kw)
    return dataclasses.replace(
        pipeline,
        training=Training(
            window=window, chunk=min(8, window // 2), batch_size=16, steps=10, learning_rate=1e-2, warmup_steps=2
        ),
        retraining=Retraining(
            enabled=True,
            buffer=buffer,
            holdout=holdout,
            steps=steps,
            learning_rate=1e-2,
            min_improvement=min_improvement,
            resync_steps=buffer,
        ),
    )


def mean_reverting(n_series=8, length=120, seed=0, phi=0.5):
    """Hourly AR(1) series around different levels, every series at every step: a network that learns the
    pull back to the level beats the last value and the seasonal naive, which do not know it."""
    rng = np.random.default_rng(seed)
    keys, times, values = [], [], []
    deviation = np.zeros(n_series)
    for step in range(length):
        deviation = phi * deviation + rng.standard_normal(n_series)
        for s in range(n_series):
            keys.append(f"s{s}")
            times.append(T0 + 3600.0 * step)
            values.append(10.0 * (s + 1) + deviation[s])
    return keys, times, values


def sines(n_series=8, length=120, seed=0, noise=0.1):
    """Noisy daily sines of different phases and levels, hourly, every series at every step."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    keys, times, values = [], [], []
    for step in t:
        for s in range(n_series):
            keys.append(f"s{s}")
            times.append(T0 + 3600.0 * step)
            values.append(10 * (s + 1) + 3 * np.sin(2 * np.pi * (step + 3 * s) / 24) + noise * rng.standard_normal())
    return keys, times, values


class DeliversAtOnce:
    """A fake sink's `send`: its `deliver`, done before it returns (nothing left to acknowledge later)."""

    def send(self, messages, stop):
        return Sending.delivered(self.deliver(messages, stop))


class FakeTransaction:
    """A client's transactional producer in memory: what it sent, what it committed, and whether it is fenced."""

    def __init__(self, kafka, transactional_id, timeout_ms):
        self.id, self.timeout_ms = transactional_id, timeout_ms
        self.sent, self.committed, self.fenced, self.closed = [], [], False, False

    def send(self, messages, stop):
        if self.fenced:
            raise TransactionError(f"transaction {self.id}: fenced")
        self.sent += messages

    def commit(self, topic, partition, offset, group):
        if self.sent:
            self.committed.append((self.sent, topic, partition, offset, group))
            self.sent = []

    def close(self):
        self.closed = True
