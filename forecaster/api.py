"""The engine without Kafka: `Pipeline` builds a pipeline's engine from its file and serves it from Python.

For a notebook or another service: observations go in as a pandas DataFrame or a list of
dicts in the pipeline's record fields, and are decoded exactly as the daemon decodes its
input (`records.decode`), so what the API accepts the daemon accepts. Forecasts come back in
a long format, one row per series, origin and horizon step: a DataFrame when pandas is
installed (the `api` extra), else a list of dicts. Nothing here touches Kafka or the
daemon's state folder.

    pipeline = Pipeline.from_file("pipelines/weather.yaml")
    forecasts = pipeline.step(frame)      # forecast from each observation, as the daemon does
    pipeline.learn(history)               # step a history in time order, retraining on schedule
    scores = pipeline.backtest(history)   # `forecaster backtest --json`'s rows
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from pathlib import Path

import numpy as np

from forecaster import config as config_module
from forecaster.build import engine as build_engine
from forecaster.build import resolve_device, starting_model
from forecaster.errors import ConfigError, RecordError
from forecaster.evaluation.network import DaemonRetraining
from forecaster.schema import Builder, read_yaml
from forecaster.serving.engine import Forecasts
from forecaster.serving.records import Observations, decode, format_times, parse_time
from forecaster.tools import backtest as backtests


class Pipeline:
    """One pipeline's engine, stepped from Python: `step`, `learn`, `backtest`, `forecast`."""

    def __init__(self, config: config_module.Config, name: str | None = None, device: str | None = None):
        """The engine of pipeline `name` of `config` (default: its only pipeline) from its starting weights
        (`model.weights`, else seeded), on `device` (default: the config's `device`, auto picking CUDA)."""
        if name is None and len(config.pipelines) != 1:
            known = ", ".join(p.name for p in config.pipelines)
            raise ConfigError(f"{config.path}: name the pipeline (known: {known})")
        self.config = config
        self.settings = config.pipeline(name) if name is not None else config.pipelines[0]
        self.device = resolve_device(device or config.settings.device)
        model, version = starting_model(config, self.settings)
        # a disk spill needs a file: this object's own, never the daemon's state folder
        self._folder = tempfile.TemporaryDirectory(prefix="forecaster-api-")
        self.engine = build_engine(self.settings, model, self.device, version, Path(self._folder.name) / "spill.sqlite")
        self._retraining = DaemonRetraining(self.engine)
        self._latest: dict[str, tuple[Forecasts, int]] = {}  # series -> (the forecasts holding its newest, row)
        self.rejected: list[tuple[int, str, str]] = []  # the last call's records skipped with strict=False

    @classmethod
    def from_file(cls, path: str | Path, root: str | Path = ".", device: str | None = None) -> Pipeline:
        """The pipeline of one pipeline file, with the daemon's default settings; the file's relative paths
        (`model.weights`) are taken from `root` (default: the current folder), as config.yaml's folder would."""
        path = Path(path)
        settings = config_module.Settings(pipelines=(str(path),))
        pipeline = Builder(str(path)).build(config_module.Pipeline, read_yaml(str(path), str(path)))
        config = config_module.Config(path=Path(root) / "config.yaml", settings=settings, pipelines=(pipeline,))
        weights = pipeline.model.weights
        if weights is not None and not config.resolve(weights).is_file():
            raise ConfigError(
                f"{path}: model.weights: expected an existing weights file under {Path(root).resolve()}, got "
                f"{weights!r} (pass root=, or run `forecaster pretrain`)"
            )
        return cls(config, pipeline.name, device)

    @classmethod
    def from_config(cls, path: str | Path, name: str | None = None, device: str | None = None) -> Pipeline:
        """Pipeline `name` of a config.yaml (`config.load`: every pipeline file it names is checked)."""
        return cls(config_module.load(path), name, device)

    @property
    def name(self) -> str:
        return self.settings.name

    def step(self, data, now: float | None = None, strict: bool = True):
        """Step the observations into their series' state and forecast from each, as the daemon does with a
        poll batch (a series' observations in time order; no retraining): the forecasts in long format.

        `now` is the forecasts' issue time (default: the wall clock). A record the daemon would dead-letter
        raises a RecordError naming its row, or with `strict=False` is skipped and kept in `self.rejected`
        as (row, reason, detail)."""
        observations = self._decode(data, strict)
        forecasts, refused = self.engine.step(observations, time.time() if now is None else now)
        self._refused(refused, strict)
        self._remember(forecasts)
        return _table(forecasts)

    def learn(self, data, strict: bool = True) -> dict:
        """Step a history in time order, one batch per distinct time, retraining after each on the daemon's
        schedule (the young rounds, then `retraining.every_records`), each round run to its end and adopted
        before the next batch, as `forecaster backtest` does: the engine's state and weights follow the data.

        Returns what this call did: {"records", "rounds", "promotions"}."""
        observations = self._decode(data, strict)
        rounds, promotions = self._retraining.rounds, self._retraining.promotions
        for batch in _by_time(observations):
            forecasts, refused = self.engine.step(batch, float(batch.times[0]))
            self._refused(refused, strict)
            self._remember(forecasts)
            self._retraining.after(len(batch))
        return {
            "records": len(observations),
            "rounds": self._retraining.rounds - rounds,
            "promotions": self._retraining.promotions - promotions,
        }

    def backtest(self, data, start=None):
        """`forecaster backtest --json`'s rows for this history: the pipeline from its starting weights (not this
        object's engine, which is left as it is), scored from `start` (a time; default: the history's middle).

        Rows {"method", "horizon", "mae", "mase", "coverage80"}: a DataFrame with pandas, else a list of dicts."""
        observations = self._decode(data, strict=True)
        result = backtests.backtest(
            self.config, self.settings, observations, self.name, start=_moment(start), device=self.device
        )
        return _frame(result.rows)

    def forecast(self, series: Iterable[str] | None = None):
        """The newest forecast of each series (or of `series`) that `step` or `learn` made, in long format."""
        keys = list(self._latest) if series is None else [k for k in series if k in self._latest]
        rows = [self._latest[k] for k in keys]
        if not rows:
            return _table(_no_forecasts(self.settings.horizon))
        quantiles = rows[0][0].quantiles
        return _table(
            Forecasts(
                keys=tuple(keys),
                times=np.array([f.times[i] for f, i in rows]),
                horizon_times=np.stack([f.horizon_times[i] for f, i in rows]),
                values=np.stack([f.values[i] for f, i in rows]),
                positions=np.arange(len(rows)),
                issued_at=max(f.issued_at for f, _ in rows),
                model_version=self.engine.model_version,
                quantiles=None
                if not quantiles
                else {q: np.stack([f.quantiles[q][i] for f, i in rows]) for q in quantiles},
            )
        )

    def _remember(self, forecasts: Forecasts) -> None:
        """Each series' newest forecast, for `forecast`."""
        for i, key in enumerate(forecasts.keys):
            self._latest[key] = (forecasts, i)

    def _decode(self, data, strict: bool) -> Observations:
        """The data's records decoded as the daemon decodes its input (limits on values and keys; any time)."""
        records = _records(data, self.settings.record)
        payloads = [json.dumps(r).encode() for r in records]
        observations, rejected = decode(payloads, self.settings.record, self.settings.limits)
        self.rejected = []
        self._refused(rejected, strict)
        return observations

    def _refused(self, rejected, strict: bool) -> None:
        if rejected and strict:
            first = rejected[0]
            raise RecordError(
                first.reason,
                f"{first.detail} (row {first.position}; pipeline {self.name} refused {len(rejected)} records in "
                "all; strict=False skips them)",
            )
        self.rejected += [(r.position, r.reason, r.detail) for r in rejected]


def _records(data, fmt: config_module.RecordFormat) -> list[dict]:
    """A DataFrame's rows or a list of dicts as JSON-ready records of the pipeline's fields: times as ISO text
    (a naive one is UTC) or epoch seconds, NaN and None as null (a missing value)."""
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a pandas DataFrame, without importing pandas
        data = data.to_dict("records")
    if isinstance(data, Mapping) or not isinstance(data, Iterable):
        raise TypeError(f"expected a DataFrame or a list of dicts, got {type(data).__name__}")
    fields = (fmt.key, fmt.timestamp, fmt.target, *fmt.covariates)
    return [{f: _plain(r[f]) for f in fields if f in r} for r in data]


def _plain(value):
    """A value as JSON has it: datetimes as ISO text, numpy scalars as Python numbers, NaN and NaT as null."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value != value:  # NaN, NaT
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _by_time(observations: Observations) -> list[Observations]:
    """The observations in batches of one time each, in time order (a series' order kept: the sort is stable)."""
    order = np.argsort(observations.times, kind="stable")
    ordered = observations.take(order)
    cuts = np.flatnonzero(np.diff(ordered.times)) + 1
    return [ordered.take(rows) for rows in np.split(np.arange(len(ordered)), cuts) if len(rows)]


def _moment(value) -> float | None:
    """A time as epoch seconds: ISO text, a datetime or pandas Timestamp, or epoch seconds."""
    if value is None:
        return None
    return parse_time(_plain(value), "start")[0]


def _table(forecasts: Forecasts):
    """Forecasts in long format: one row per series, origin and step, with its target time, value and
    quantiles (q0.1, q0.9, ...)."""
    m, horizon = forecasts.values.shape
    columns = {
        "series": np.repeat(np.array(forecasts.keys, dtype=object), horizon),
        "time": np.repeat(forecasts.times, horizon),
        "issued_at": np.full(m * horizon, forecasts.issued_at),
        "model_version": np.full(m * horizon, forecasts.model_version),
        "step": np.tile(np.arange(1, horizon + 1), m),
        "target_time": forecasts.horizon_times.ravel(),
        "value": forecasts.values.ravel(),
    }
    for level, values in (forecasts.quantiles or {}).items():
        columns[f"q{level:g}"] = values.ravel()
    return _frame(columns, times=("time", "issued_at", "target_time"))


def _no_forecasts(horizon: int) -> Forecasts:
    empty = np.zeros((0, horizon))
    return Forecasts((), np.zeros(0), empty, empty, np.zeros(0, np.int64), 0.0, 0)


def _frame(data: dict | list[dict], times: tuple[str, ...] = ()):
    """Columns (a dict of arrays) or rows as a DataFrame, times as UTC Timestamps, when pandas is installed;
    else as a list of dicts with times as ISO-8601 text."""
    try:
        import pandas as pd
    except ImportError:
        return _dicts(data, times)
    frame = pd.DataFrame(data)
    for column in times:
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame


def _dicts(data: dict | list[dict], times: tuple[str, ...]) -> list[dict]:
    """`_frame` without pandas: rows of plain Python values."""
    if isinstance(data, list):
        return [dict(row) for row in data]
    columns = {name: np.asarray(values) for name, values in data.items()}
    for name in times:
        columns[name] = np.array(format_times(columns[name].astype(np.float64)), dtype=object)
    names = list(columns)
    return [dict(zip(names, row)) for row in zip(*(c.tolist() for c in columns.values()))]
