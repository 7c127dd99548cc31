"""Accuracy of the forecaster and its baselines on real data, prequentially (issue 3, item 7).

    python benchmarks/accuracy.py               # everything: benchmarks/results/accuracy.json
    python benchmarks/accuracy.py --quick       # a smoke run in a minute or two: accuracy_quick.json
    python benchmarks/accuracy.py --datasets etth2 --methods persistence,ets

The ets and snarimax baselines need the `bench` extra (statsmodels, river, scipy), which
`make install` includes; elsewhere `pip install -e '.[bench]'`. Without it they are skipped.

Every method sees each dataset in stream order through `forecaster.prequential.run`: at
origin t it has learnt rows 0..t and nothing later, forecasts t+1..t+H, and only then may
learn row t+1. Every method of a dataset is scored at the same origins; a stride above 1
(written into each row) forecasts from every stride-th origin while methods still learn
every row. Protocols (see PROTOCOLS):

- etth1, etth2: every channel z-normalised with the mean and (population) standard
  deviation of the first 20% of rows; the next 5% is validation, never scored; the last
  75% is the online test. A row with horizon H scores every origin whose H targets all lie
  in the test part, the error at an origin averaging its H steps and 7 channels, and MSE
  and MAE are the means over origins: the "cumulative" figures of the published table in
  data/ett/README.md, in z-units.
- taylor, greensboro_temp: the second half. An integer horizon h scores the h-step-ahead
  forecast alone; "1-48" (or "1-24") is the mean over steps 1..48, at the same origins.
- msft: the second half, steps 1 and 5 alone; Diebold-Mariano against the random walk
  (persistence) on absolute errors, with the variance of h-step errors.

Rows: {"dataset", "horizon", "method", "mse", "mae", "mape", "mase", "smape", "coverage80",
"relative_mae", "dm_stat", "dm_pvalue", "origins", "stride", "seconds"}; null where a metric
does not apply: MAPE and sMAPE only for series that stay positive (taylor, msft), no
intervals yet (coverage80), a DM test only on msft. MASE divides by the one-step naive MAE
of each channel's leading part (first 20% for ETT, first half otherwise). relative_mae is
the MAE divided by persistence's at the same origins and steps (the MASE "against the
random walk" of the issue's stock target). seconds covers the method's whole run on the
dataset, pretraining included.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forecaster import baselines, datasets, evaluation, prequential, records, train  # noqa: E402
from forecaster.config import Calendar, ModelConfig, Pipeline, RecordFormat, Scaling, Training  # noqa: E402
from forecaster.engine import Engine, seeded_model  # noqa: E402
from forecaster.records import Observations  # noqa: E402
from forecaster.prequential import Stream  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
METHODS = ("persistence", "seasonal_naive", "ets", "snarimax", "frozen_offline", "forecaster")
HOURLY = Calendar(hour_of_day=True, day_of_week=True)


# -- protocols -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """The forecaster's pipeline on a dataset: its model, scaling and pretraining."""

    cadence: str
    calendar: Calendar
    cell: str = "gru"
    hidden_size: int = 64
    layer_norm: bool = False
    halflife: float = 336.0
    window: int = 336
    chunk: int = 48
    steps: int = 300
    covariates: bool = False  # feed the stream's covariates to the model


@dataclass(frozen=True)
class Protocol:
    """How one dataset is split, fed and scored."""

    name: str                  # the "dataset" of a row
    source: str                # the forecaster.datasets name
    train_fraction: float      # the leading part: normalisation (ETT), MASE scale, pretraining
    test_start: float          # the first target scored, as a fraction of the rows
    horizons: tuple[tuple[int | str, tuple[int, ...]], ...]  # (row label, steps scored, 1-based)
    own_origins: bool          # a row scores every origin whose own steps exist (ETT), else whose every step does
    period: int                # of the seasonal naive
    ets: dict
    snarimax: dict
    network: Network
    normalise: bool = False    # z-normalise each channel with the leading part's statistics
    percentages: bool = False  # MAPE and sMAPE apply: the series stays positive
    dm_test: bool = False      # Diebold-Mariano against persistence
    headline: tuple[str, ...] = ("mae",)  # what the Markdown table shows
    shown: tuple[int | str, ...] | None = None  # horizons in the Markdown table; None: all
    stride: int = 1

    @property
    def horizon(self) -> int:
        return max(max(steps) for _, steps in self.horizons)


def _ett(name: str) -> Protocol:
    return Protocol(
        name=name, source=name, train_fraction=0.2, test_start=0.25,
        horizons=tuple((h, tuple(range(1, h + 1))) for h in (24, 48, 96)), own_origins=True, period=24,
        ets=dict(period=24, window=1344, refit_every=336),
        snarimax=dict(p=2, d=0, q=1, m=24, sp=1, learning_rate=0.001),
        network=Network(cadence="1h", calendar=HOURLY),
        normalise=True, headline=("mse", "mae"))


def _steps(horizon: int) -> tuple[tuple[int | str, tuple[int, ...]], ...]:
    """Each step alone, then the mean over all of them as "1-H"."""
    return tuple((h, (h,)) for h in range(1, horizon + 1)) + ((f"1-{horizon}", tuple(range(1, horizon + 1))),)


PROTOCOLS: dict[str, Protocol] = {
    "etth1": _ett("etth1"),
    "etth2": _ett("etth2"),
    "taylor": Protocol(
        name="taylor", source="taylor", train_fraction=0.5, test_start=0.5, horizons=_steps(48), own_origins=False,
        period=336, ets=dict(period=336, window=1344, refit_every=48),
        snarimax=dict(p=2, d=0, q=1, m=336, sp=1, sd=1, sq=1),
        network=Network(cadence="30m", calendar=HOURLY, halflife=672.0),
        percentages=True, headline=("mape",), shown=(1, 2, 6, 12, 24, 36, 48, "1-48")),
    "greensboro_temp": Protocol(
        name="greensboro_temp", source="greensboro", train_fraction=0.5, test_start=0.5, horizons=_steps(24),
        own_origins=False, period=24, ets=dict(period=24, window=672, refit_every=24),
        snarimax=dict(p=2, d=0, q=1, m=24, sp=1, sd=1, sq=1),
        network=Network(cadence="1h", calendar=Calendar(hour_of_day=True), cell="lstm", layer_norm=True,
                        covariates=True),
        headline=("mae",), shown=(1, 2, 3, 6, 12, 18, 24, "1-24")),
    "msft": Protocol(
        name="msft", source="msft", train_fraction=0.5, test_start=0.5, horizons=((1, (1,)), (5, (5,))),
        own_origins=False, period=5, ets=dict(period=None, window=500, refit_every=20),
        snarimax=dict(p=1, d=1, q=1),
        network=Network(cadence="1b", calendar=Calendar(day_of_week=True), hidden_size=32, halflife=60.0,
                        window=256, chunk=32, covariates=True),
        percentages=True, dm_test=True, headline=("mase", "relative_mae", "dm_pvalue")),
}


@dataclass(frozen=True)
class Settings:
    """What --quick changes: fewer origins, fewer ETS refits, shorter pretraining."""

    stride_factor: dict[str, int] = field(default_factory=dict)  # dataset -> stride multiplier
    refit_factor: int = 1
    steps: int | None = None  # pretraining steps; None: the protocol's


FULL = Settings()
QUICK = Settings(stride_factor={"etth1": 48, "etth2": 48, "taylor": 12, "greensboro_temp": 12, "msft": 6},
                 refit_factor=8, steps=30)


# -- streams ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def load_stream(name: str) -> Stream:
    """The dataset of protocol `name` as a Stream, z-normalised where the protocol says so."""
    protocol = PROTOCOLS[name]
    dataset = datasets.load(protocol.source)
    stream = _ett_stream(dataset) if protocol.source.startswith("etth") else _single_stream(dataset)
    if not protocol.normalise:
        return stream
    leading = stream.y[:split(protocol, len(stream))[0]]
    z = (stream.y - leading.mean(axis=0)) / leading.std(axis=0)
    return replace(stream, y=z)


def _ett_stream(dataset: datasets.Dataset) -> Stream:
    """ETT's records, one per (row, channel) in row order, as a (rows, 7) stream."""
    rows = dataset.records
    channels = tuple(r[dataset.key_field] for r in rows[:7])
    if any(r[dataset.key_field] != channels[i % 7] for i, r in enumerate(rows)) or len(rows) % 7:
        raise ValueError(f"{dataset.name}: expected every row to hold the channels {channels} in order")
    y = np.array([r[dataset.target_field] for r in rows]).reshape(-1, 7)
    times = np.array([records.parse_time(r[dataset.time_field], dataset.time_field) for r in rows[::7]])
    return Stream(times[:, 0], times[:, 1], y, np.zeros((len(y), 0)), channels)


def _single_stream(dataset: datasets.Dataset) -> Stream:
    """A dataset of one series: its target as the only channel, its covariates as x."""
    rows = dataset.records
    times = np.array([records.parse_time(r[dataset.time_field], dataset.time_field) for r in rows])
    y = np.array([[r[dataset.target_field]] for r in rows])
    x = np.array([[r[c] for c in dataset.covariate_fields] for r in rows]).reshape(len(rows), -1)
    return Stream(times[:, 0], times[:, 1], y, x, (dataset.target_field,), dataset.covariate_fields)


def split(protocol: Protocol, rows: int) -> tuple[int, int]:
    """(end of the leading part, first row scored as a target)."""
    return int(protocol.train_fraction * rows), int(protocol.test_start * rows)


def origin_set(protocol: Protocol, rows: int, stride: int) -> np.ndarray:
    """Origins from the last row before the test part to the last one any scored row needs."""
    _, test_start = split(protocol, rows)
    shortest = min(max(steps) for _, steps in protocol.horizons) if protocol.own_origins else protocol.horizon
    return prequential.origins(test_start - 1, rows - 1 - shortest, stride)


# -- the forecaster --------------------------------------------------------------------------


def observations(rows: Stream, covariates: bool) -> Observations:
    """A stream's rows as engine observations: one per (row, channel), row after row, keyed by channel."""
    n, channels = rows.y.shape
    values = rows.y.reshape(-1, 1)
    if covariates:
        values = np.concatenate([values, np.repeat(rows.x, channels, axis=0)], axis=1)
    return Observations(keys=rows.channels * n, times=np.repeat(rows.times, channels),
                        local_times=np.repeat(rows.local_times, channels), values=np.ascontiguousarray(values),
                        positions=np.arange(n * channels))


class EngineMethod:
    """The daemon's engine as a prequential method: stepping a row is learning it; forecasts are the engine's.

    The engine forecasts each record right after stepping it, so the newest forecast of a
    series uses data up to that record only.
    """

    def __init__(self, name: str, pipeline: Pipeline, model, channels: tuple[str, ...], covariates: bool):
        self.name = name
        self.engine = Engine(pipeline, model)
        self.covariates = covariates
        self._index = {key: i for i, key in enumerate(channels)}
        self._latest = np.full((len(channels), pipeline.horizon), np.nan)

    def learn(self, rows: Stream) -> None:
        if not len(rows):
            return
        forecasts, rejected = self.engine.step(observations(rows, self.covariates))
        if rejected:
            raise ValueError(f"{self.name}: the engine refused {len(rejected)} rows, first: {rejected[0]}")
        for key, values in zip(forecasts.keys, forecasts.values):
            self._latest[self._index[key]] = values

    def forecast(self, horizon: int) -> np.ndarray:
        return self._latest[:, :horizon].T.copy()


def pipeline(protocol: Protocol, horizon: int, stream: Stream, steps: int | None = None) -> Pipeline:
    """The forecaster's pipeline for a dataset, built as config.load would."""
    net = protocol.network
    return Pipeline(
        name=protocol.name, input_topic="in", output_topic="out", dead_letter_topic="dead",
        record=RecordFormat(key="key", timestamp="time", target="y",
                            covariates=stream.covariates if net.covariates else ()),
        cadence=net.cadence, horizon=horizon, calendar=net.calendar, emit="latest_per_series", spill="none",
        model=ModelConfig(cell=net.cell, hidden_size=net.hidden_size, num_layers=2, dropout=0.1,
                          layer_norm=net.layer_norm, residual=True, weights=None, seed=0),
        scaling=Scaling(halflife=net.halflife),
        training=Training(train_fraction=protocol.train_fraction, window=net.window, chunk=net.chunk,
                          batch_size=32, steps=steps or net.steps, learning_rate=3e-3, seed=0),
    )


def forecaster_method(dataset: str, horizon: int, variant: str, *, steps: int | None = None) -> EngineMethod:
    """The forecaster on `dataset` as a prequential method forecasting `horizon` steps.

    variant "frozen_offline": seeded weights pretrained with train.fit on the leading part
    only (first 20% for ETT, first half otherwise), then frozen; the engine runs
    prequentially. "online" (the daemon retraining as data arrives) is issue 3's work.
    """
    if variant != "frozen_offline":
        raise NotImplementedError(f"forecaster variant {variant!r} is not built yet; only 'frozen_offline' is")
    protocol, stream = PROTOCOLS[dataset], load_stream(dataset)
    the_pipeline = pipeline(protocol, horizon, stream, steps)
    covariates = protocol.network.covariates
    leading = stream[:split(protocol, len(stream))[0]]
    model = seeded_model(the_pipeline)
    train.fit(model, train.prepare(the_pipeline, observations(leading, covariates)), the_pipeline.training)
    return EngineMethod(variant, the_pipeline, model, stream.channels, covariates)


# -- running and scoring ---------------------------------------------------------------------


def make_method(name: str, protocol: Protocol, settings: Settings):
    """A fresh method for one dataset; NotImplementedError or ImportError when it cannot be had."""
    if name == "persistence":
        return baselines.Persistence()
    if name == "seasonal_naive":
        return baselines.SeasonalNaive(protocol.period)
    if name == "ets":
        ets = protocol.ets
        return baselines.ETS(ets["period"], ets["window"], ets["refit_every"] * settings.refit_factor)
    if name == "snarimax":
        return baselines.Snarimax(**protocol.snarimax)
    if name == "frozen_offline":
        return forecaster_method(protocol.name, protocol.horizon, "frozen_offline", steps=settings.steps)
    if name == "forecaster":
        return forecaster_method(protocol.name, protocol.horizon, "online", steps=settings.steps)
    raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")


def evaluate_dataset(protocol: Protocol, methods: list[str], settings: Settings, log=print) -> list[dict]:
    """Every method of `methods` on one dataset, at the same origins; one row per (horizon, method)."""
    stream = load_stream(protocol.name)
    stride = protocol.stride * settings.stride_factor.get(protocol.name, 1)
    at = origin_set(protocol, len(stream), stride)
    reference = None
    rows = []
    for name in ["persistence"] + [m for m in methods if m != "persistence"]:
        began = time.perf_counter()
        try:
            method = make_method(name, protocol, settings)
        except (NotImplementedError, ImportError) as error:
            log(f"{protocol.name:<16} {name:<15} skipped: {error}")
            continue
        forecasts = prequential.run(method, stream, at, protocol.horizon)
        seconds = time.perf_counter() - began
        log(f"{protocol.name:<16} {name:<15} {len(at):>6,} origins, stride {stride:<3} {seconds:7.1f} s{_notes(method)}")
        if reference is None:
            reference = forecasts
        if name in methods:
            rows += score(protocol, stream, at, forecasts, reference, name, stride, seconds)
    return rows


def _notes(method) -> str:
    refits = getattr(method, "refits", None)
    return f" ({refits} refits, {method.failures} fits fell back to the last value)" if refits is not None else ""


def score(protocol: Protocol, stream: Stream, at: np.ndarray, forecasts: np.ndarray, reference: np.ndarray,
          method: str, stride: int, seconds: float) -> list[dict]:
    """One row per horizon of the protocol, from forecasts (origins, H, C) and persistence's."""
    actual = prequential.targets(stream, at, protocol.horizon)
    leading = stream.y[:split(protocol, len(stream))[0]]
    rows = []
    for label, steps in protocol.horizons:
        need = max(steps) if protocol.own_origins else protocol.horizon
        keep, idx = at + need <= len(stream) - 1, np.asarray(steps) - 1
        a, f, r = (v[keep][:, idx] for v in (actual, forecasts, reference))
        rows.append({
            "dataset": protocol.name, "horizon": label, "method": method,
            "mse": evaluation.mse(a, f), "mae": evaluation.mae(a, f),
            "mape": evaluation.mape(a, f) if protocol.percentages else None,
            "mase": evaluation.mase(a, f, leading),
            "smape": evaluation.smape(a, f) if protocol.percentages else None,
            "coverage80": None,
            "relative_mae": evaluation.mae(a, f) / evaluation.mae(a, r),
            **_dm(protocol, a, f, r, method, math.ceil(max(steps) / stride)),
            "origins": int(keep.sum()), "stride": stride, "seconds": round(seconds, 1),
        })
    return rows


def _dm(protocol: Protocol, actual, forecast, reference, method: str, overlap: int) -> dict:
    """Diebold-Mariano against persistence on each origin's mean absolute error, where the protocol asks.

    Null too where the losses are the same at every origin (the seasonal naive of period 5
    at step 5 is the random walk): the test has nothing to compare.
    """
    none = {"dm_stat": None, "dm_pvalue": None}
    if not protocol.dm_test or method == "persistence":
        return none
    mine = np.abs(actual - forecast).mean(axis=(1, 2))
    theirs = np.abs(actual - reference).mean(axis=(1, 2))
    try:
        statistic, p = evaluation.diebold_mariano(mine, theirs, horizon=overlap, power=1)
    except ValueError:
        return none
    return {"dm_stat": statistic, "dm_pvalue": p}


# -- output ----------------------------------------------------------------------------------


def markdown(rows: list[dict]) -> str:
    """One table per dataset: its headline metrics by horizon (rows) and method (columns)."""
    parts = []
    for name in dict.fromkeys(row["dataset"] for row in rows):
        protocol, mine = PROTOCOLS[name], [row for row in rows if row["dataset"] == name]
        methods = list(dict.fromkeys(row["method"] for row in mine))
        labels = [h for h, _ in protocol.horizons if protocol.shown is None or h in protocol.shown]
        cell = {(row["horizon"], row["method"]): row for row in mine}
        first = mine[0]
        parts.append(f"**{name}**: {' / '.join(protocol.headline)}, {first['origins']:,} origins at stride "
                     f"{first['stride']}\n")
        parts.append("| horizon | " + " | ".join(methods) + " |")
        parts.append("| --- |" + " --- |" * len(methods))
        for label in labels:
            parts.append(f"| {label} | " + " | ".join(_cell(cell.get((label, m)), protocol.headline) for m in methods) + " |")
        parts.append("")
    return "\n".join(parts)


def _cell(row: dict | None, metrics: tuple[str, ...]) -> str:
    if row is None:
        return ""
    return " / ".join("-" if row[m] is None else f"{row[m]:.3f}" for m in metrics)


def _clean(value):
    """JSON-safe: non-finite floats become null, floats keep 6 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a large stride of origins, rare ETS refits, 30 pretraining steps")
    parser.add_argument("--datasets", default=",".join(PROTOCOLS),
                        help=f"comma-separated, from {', '.join(PROTOCOLS)} (default: all)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, from {', '.join(METHODS)} (default: all)")
    parser.add_argument("--out", type=Path, help="JSON rows (default: benchmarks/results/accuracy.json, "
                                                  "or accuracy_quick.json with --quick)")
    args = parser.parse_args(argv)
    names = _choices(args.datasets, PROTOCOLS, "--datasets")
    methods = _choices(args.methods, METHODS, "--methods")
    settings = QUICK if args.quick else FULL
    # One thread: the engine steps a handful of series at a time, where a second OpenMP thread
    # costs more in synchronisation than it saves (10-20x slower on a busy 2-core machine).
    torch.set_num_threads(1)
    began = time.perf_counter()
    rows = []
    for name in names:
        rows += evaluate_dataset(PROTOCOLS[name], methods, settings, log=lambda line: print(line, file=sys.stderr))
    out = args.out or RESULTS / ("accuracy_quick.json" if args.quick else "accuracy.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([{k: _clean(v) for k, v in row.items()} for row in rows], indent=1) + "\n")
    print(markdown(rows))
    print(f"wrote {out} ({len(rows)} rows) in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return 0


def _choices(text: str, allowed, flag: str) -> list[str]:
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in allowed]
    if unknown or not chosen:
        raise SystemExit(f"{flag}: expected a comma-separated list from {', '.join(allowed)}, got {text!r}")
    return chosen


if __name__ == "__main__":
    raise SystemExit(main())
