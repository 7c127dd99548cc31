"""The daemon's engine as a prequential method (prequential.py): what the accuracy benchmark scores.

`EngineMethod` steps a stream's rows through the serving engine and keeps its newest
forecasts; `OnlineMethod` also retrains in stream order, exactly as the run loop does,
but synchronously, every so many rows; `DaemonRetraining` retrains on the daemon's own
schedule. `Lags` and `observations` turn a stream's rows into the engine's input.
"""

from __future__ import annotations

import threading

import numpy as np

from forecaster.config import Pipeline
from forecaster.evaluation.prequential import Stream
from forecaster.learning import rounds
from forecaster.learning.trainer import Trainer
from forecaster.serving.engine import Engine, Forecasts
from forecaster.serving.records import Observations


class Lags:
    """Past values of each channel, y[t - k] for k in `back`, fed to the network as covariates of row t.

    Every k is at least 1, so the features of row t come from rows already learnt; the
    method keeps the last max(back) rows to compute them. Where the history is too short
    (the start of a stream) a lag is the row's own value. With `season` (the network's
    model.season) the lags are of the seasonal difference the network models,
    z[t] = y[t] - y[t - season], the first row standing in before the start as in
    `forecaster.serving.seasonal.difference`.
    """

    def __init__(self, back: tuple[int, ...], channels: int, season: int | None = None):
        if not back or min(back) < 1:
            raise ValueError(f"lags must look back at least 1 step, got {back}")
        self.back, self.season = np.asarray(back), season
        self._past = np.full((max(back), channels), np.nan)  # the newest row last
        self._season: np.ndarray | None = None  # the last `season` raw rows

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """(n, C) new rows in time order -> (n, C, len(back)); remembers them for the next call."""
        if self.season:
            y = self._difference(y)
        history = np.concatenate([self._past, y])  # row i of y sits at len(_past) + i
        rows = len(self._past) + np.arange(len(y))[:, None] - self.back[None, :]  # (n, L)
        lagged = history[rows].transpose(0, 2, 1)  # (n, C, L)
        self._past = history[-len(self._past) :]
        return np.where(np.isnan(lagged), y[:, :, None], lagged)

    def _difference(self, y: np.ndarray) -> np.ndarray:
        if self._season is None:
            self._season = np.repeat(y[:1], self.season, axis=0)
        history = np.concatenate([self._season, y])  # y[t - season] of row i sits at i
        self._season = history[-self.season :]
        return y - history[: len(y)]


def observations(rows: Stream, covariates: bool, lags: np.ndarray | None = None) -> Observations:
    """A stream's rows as engine observations: one per (row, channel), row after row, keyed by channel.

    A record's values are its target, then the stream's covariates (with `covariates`), then
    its channel's lags (n, C, L) when given.
    """
    n, channels = rows.y.shape
    columns = [rows.y.reshape(-1, 1)]
    if covariates:
        columns.append(np.repeat(rows.x, channels, axis=0))
    if lags is not None:
        columns.append(lags.reshape(n * channels, -1))
    return Observations(
        keys=rows.channels * n,
        times=np.repeat(rows.times, channels),
        local_times=np.repeat(rows.local_times, channels),
        values=np.ascontiguousarray(np.concatenate(columns, axis=1)),
        positions=np.arange(n * channels),
    )


class EngineMethod:
    """The daemon's engine as a prequential method: stepping a row is learning it; forecasts are the engine's.

    The engine forecasts each record right after stepping it, so the newest forecast of a
    series uses data up to that record only. With quantiles, each `forecast` also keeps the
    outermost levels as that origin's interval, in `intervals`.
    """

    def __init__(
        self,
        name: str,
        pipeline: Pipeline,
        model,
        channels: tuple[str, ...],
        covariates: bool,
        lags: Lags | None = None,
    ):
        self.name = name
        self.engine = Engine(pipeline, model)
        self.covariates, self.lags = covariates, lags
        self._index = {key: i for i, key in enumerate(channels)}
        self._latest = np.full((len(channels), pipeline.horizon), np.nan)
        self._bounds = np.full((len(channels), 2, pipeline.horizon), np.nan)
        self.intervals: list[np.ndarray] = []  # per forecast: (horizon, channels, 2) lower and upper
        self.reused_seconds = 0.0  # pretraining done for an earlier method, counted in this one's time too

    def learn(self, rows: Stream) -> None:
        if not len(rows):
            return
        lags = None if self.lags is None else self.lags(rows.y)
        forecasts, rejected = self.engine.step(observations(rows, self.covariates, lags), now=float(rows.times[-1]))
        if rejected:
            raise ValueError(f"{self.name}: the engine refused {len(rejected)} rows, first: {rejected[0]}")
        self.keep(forecasts)

    def keep(self, forecasts: Forecasts) -> None:
        """Remember each series' newest forecast and interval; a subclass keeping more extends this."""
        outer = (
            None
            if not forecasts.quantiles
            else np.stack(
                [forecasts.quantiles[min(forecasts.quantiles)], forecasts.quantiles[max(forecasts.quantiles)]], axis=1
            )
        )
        for i, (key, values) in enumerate(zip(forecasts.keys, forecasts.values)):
            self._latest[self._index[key]] = values
            if outer is not None:
                self._bounds[self._index[key]] = outer[i]  # (2, horizon): lowest and highest level

    def forecast(self, horizon: int) -> np.ndarray:
        if self.engine.model.spec.quantiles:
            self.intervals.append(self._bounds[:, :, :horizon].transpose(2, 0, 1).copy())
        return self._latest[:, :horizon].T.copy()


class OnlineMethod(EngineMethod):
    """The engine retraining as the daemon does, in stream order and synchronously.

    After every `every` rows past `start` (the pretrained part), a round runs exactly as
    `app.PipelineWorker._start_round/_conclude/_adopt` run it: `rounds.collect` the
    buffers, `rounds.challenge` the serving weights, and `rounds.adopt` the outcome (the
    challenger if it won, and the interval calibration). The buffers hold only rows already learnt, so no training
    target is later
    than the newest row; the daemon runs the round in the background and installs it a
    few batches later, this installs it before the next row.
    """

    def __init__(self, *args, start: int, every: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.every, self._due = every, start + every  # rows learnt when the next round runs
        self.rows = self.rounds = self.promotions = 0

    def learn(self, rows: Stream) -> None:
        while len(rows):
            take = min(len(rows), self._due - self.rows)
            super().learn(rows[:take])
            self.rows, rows = self.rows + take, rows[take:]
            if self.rows == self._due:
                self._round()
                self._due += self.every

    def _round(self) -> None:
        engine = self.engine
        try:
            windows = rounds.round_windows(engine, self.rounds + 1)
        except rounds.NotEnoughData:
            return
        self.rounds += 1
        outcome = rounds.challenge(engine.model, windows, engine.pipeline, self.rounds)
        # the winner, and the calibration of the intervals
        rounds.adopt(engine, outcome, engine.pipeline.retraining.resync_steps)
        self.promotions += outcome.promoted


class DaemonRetraining:
    """Retraining on the daemon's own schedule (`Trainer`: every_records, every_seconds, and the young rounds
    by buffered steps), run synchronously: `after` each batch, a round that is due runs to its end on the
    trainer's thread and is adopted before the next batch, as `app.PipelineWorker` adopts it a few batches
    later."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.trainer = Trainer(engine.pipeline, engine.device, threading.Event(), background=False)
        self.promotions = 0

    @property
    def rounds(self) -> int:
        return self.trainer.rounds

    def after(self, records: int) -> None:
        """`records` more were stepped: run the round that is now due, if any."""
        engine, trainer = self.engine, self.trainer
        if engine.buffer is None:
            return
        trainer.count(records)
        if not trainer.due(rounds.young_steps_buffered(engine, trainer.rounds)):
            return
        try:
            windows = rounds.round_windows(engine, trainer.rounds + 1)
        except rounds.NotEnoughData:
            trainer.postpone()
            return
        trainer.start(engine.model, windows)
        trainer.close(timeout=None)
        finished = trainer.finished()
        if finished.error is not None:
            raise finished.error
        rounds.adopt(engine, finished.outcome, engine.pipeline.retraining.resync_steps)
        self.promotions += finished.outcome.promoted
