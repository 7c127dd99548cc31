"""Prequential evaluation in stream order: at each origin, learn what has arrived, then forecast.

A method sees a stream only through two verbs (River's, batched over channels):
`learn(rows)` with the rows that arrived since its last call, and `forecast(horizon)`,
which returns (horizon, channels). `run` is the only caller: at origin t it hands over the
rows up to and including t, never one after, and asks for t+1..t+H. Scoring against the
targets happens outside, on what `run` returns, so no method can see a target before it
forecasts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Stream:
    """A multichannel series in time order; its arrays are read-only, so a method cannot alter them."""

    times: np.ndarray  # (T,) epoch seconds, UTC
    local_times: np.ndarray  # (T,) epoch seconds shifted by the UTC offset: for calendar features
    y: np.ndarray  # (T, C) the targets, one column per channel
    x: np.ndarray  # (T, K) covariates known at the same time as y (K may be 0)
    channels: tuple[str, ...]  # the name of each column of y
    covariates: tuple[str, ...] = ()  # the name of each column of x

    def __post_init__(self):
        n = len(self.times)
        for name in ("local_times", "y", "x"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} must have {n} rows like times, got {len(getattr(self, name))}")
        if self.y.ndim != 2 or self.y.shape[1] != len(self.channels):
            raise ValueError(f"y must be (T, {len(self.channels)}) for channels {self.channels}, got {self.y.shape}")
        if self.x.ndim != 2 or self.x.shape[1] != len(self.covariates):
            raise ValueError(
                f"x must be (T, {len(self.covariates)}) for covariates {self.covariates}, got {self.x.shape}"
            )
        for array in (self.times, self.local_times, self.y, self.x):
            array.flags.writeable = False

    def __len__(self) -> int:
        return len(self.times)

    def __getitem__(self, rows: slice) -> Stream:
        if not isinstance(rows, slice):
            raise TypeError(f"a Stream is sliced by rows (stream[a:b]), got {rows!r}")
        return Stream(
            self.times[rows], self.local_times[rows], self.y[rows], self.x[rows], self.channels, self.covariates
        )


class Method(Protocol):
    """What `run` needs of a forecasting method."""

    name: str

    def learn(self, rows: Stream) -> None:
        """Take the rows that arrived since the last call, in time order."""

    def forecast(self, horizon: int) -> np.ndarray:
        """(horizon, channels) forecasts of the steps after the newest row learnt."""


def origins(first: int, last: int, stride: int = 1) -> np.ndarray:
    """Every `stride`-th origin from `first` to `last` inclusive: the rows forecasts are made after."""
    if stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride}")
    if not 0 <= first <= last:
        raise ValueError(f"origins must satisfy 0 <= first <= last, got first={first}, last={last}")
    return np.arange(first, last + 1, stride)


def run(method: Method, stream: Stream, at: np.ndarray, horizon: int) -> np.ndarray:
    """Forecasts (len(at), horizon, channels): at origin t the method has learnt rows 0..t and nothing later."""
    if np.any(np.diff(at) <= 0) or (len(at) and (at[0] < 0 or at[-1] >= len(stream))):
        raise ValueError(f"origins must increase strictly within 0..{len(stream) - 1}")
    expected = (horizon, len(stream.channels))
    forecasts = np.empty((len(at), *expected))
    learnt = 0
    for i, t in enumerate(at):
        method.learn(stream[learnt : t + 1])
        learnt = t + 1
        forecast = np.asarray(method.forecast(horizon), dtype=np.float64)
        if forecast.shape != expected:
            raise ValueError(f"{method.name}.forecast({horizon}) must return shape {expected}, got {forecast.shape}")
        forecasts[i] = forecast
    return forecasts


def targets(stream: Stream, at: np.ndarray, horizon: int) -> np.ndarray:
    """The actuals (len(at), horizon, channels) of the steps forecast from each origin; NaN past the end."""
    padded = np.concatenate([stream.y, np.full((horizon, stream.y.shape[1]), np.nan)])
    steps = np.asarray(at)[:, None] + np.arange(1, horizon + 1)[None, :]
    return padded[steps]
