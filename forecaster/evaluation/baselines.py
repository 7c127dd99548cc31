"""The forecasts a forecaster would otherwise use, behind the prequential verbs `learn` and `forecast`.

Each baseline takes every channel of a stream at once and forecasts each channel from its
own history only. `ETS` needs statsmodels and `Snarimax` needs river (the `bench` extra);
they are imported when such a baseline is made, so the daemon never needs them.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass

import numpy as np

from forecaster.evaluation.prequential import Stream


class Persistence:
    """The last value, for every step: the random walk's forecast."""

    name = "persistence"

    def __init__(self):
        self._last: np.ndarray | None = None

    def learn(self, rows: Stream) -> None:
        if len(rows):
            self._last = rows.y[-1].copy()

    def forecast(self, horizon: int) -> np.ndarray:
        if self._last is None:
            raise ValueError("persistence: learn at least one row before forecasting")
        return np.repeat(self._last[None, :], horizon, axis=0)


class SeasonalNaive:
    """The value one period before each step: y[t + h - period * ceil(h / period)]."""

    name = "seasonal_naive"

    def __init__(self, period: int):
        if period < 1:
            raise ValueError(f"period must be a positive integer, got {period}")
        self.period = period
        self._recent: deque[np.ndarray] = deque(maxlen=period)

    def learn(self, rows: Stream) -> None:
        self._recent.extend(rows.y[-self.period :].copy())

    def forecast(self, horizon: int) -> np.ndarray:
        if len(self._recent) < self.period:
            raise ValueError(
                f"seasonal_naive: learn at least period ({self.period}) rows before forecasting, "
                f"got {len(self._recent)}"
            )
        season = np.stack(self._recent)  # (period, C): y[t - period + 1 .. t]
        return season[np.arange(horizon) % self.period]


class SeasonalLevel:
    """The seasonal naive moved to today's level: y[t + h - period] + y[t] - y[t - period] (h <= period,
    and the seasonal naive's wrap beyond). What a `model.season` network forecasts when it outputs nothing."""

    name = "seasonal_level"

    def __init__(self, period: int):
        if period < 1:
            raise ValueError(f"period must be a positive integer, got {period}")
        self.period = period
        self._recent: deque[np.ndarray] = deque(maxlen=period + 1)  # y[t - period] .. y[t]

    def learn(self, rows: Stream) -> None:
        self._recent.extend(rows.y[-(self.period + 1) :].copy())

    def forecast(self, horizon: int) -> np.ndarray:
        if len(self._recent) <= self.period:
            raise ValueError(
                f"seasonal_level: learn at least period + 1 ({self.period + 1}) rows before "
                f"forecasting, got {len(self._recent)}"
            )
        history = np.stack(self._recent)  # (period + 1, C)
        return history[1 + np.arange(horizon) % self.period] + (history[-1] - history[0])[None, :]


@dataclass
class _Smoothing:
    """Additive damped-trend exponential smoothing, one entry per channel, as statsmodels' Holt-Winters.

    l_t = a (y_t - s_{t-m}) + (1 - a)(l_{t-1} + phi b_{t-1})
    b_t = b (l_t - l_{t-1}) + (1 - b) phi b_{t-1}
    s_t = g (y_t - l_{t-1} - phi b_{t-1}) + (1 - g) s_{t-m}
    y_{t+h} = l_t + (phi + ... + phi^h) b_t + s_{t+h-m(k+1)}, k = (h - 1) // m

    The updates equal statsmodels'; the forecast at steps h = k m uses s_t, where
    statsmodels' own forecast takes the state one period older (tests/evaluation/test_baselines.py).
    """

    alpha: np.ndarray  # (C,)
    beta: np.ndarray  # (C,)
    gamma: np.ndarray  # (C,), zero without a season
    phi: np.ndarray  # (C,)
    level: np.ndarray  # (C,)
    trend: np.ndarray  # (C,)
    season: np.ndarray  # (m, C): s_{t-m+1} .. s_t, the oldest first; (1, C) of zeros without a season

    def update(self, y: np.ndarray) -> None:
        """Take one observation per channel, (C,)."""
        damped = self.phi * self.trend
        oldest = self.season[0]
        level = self.alpha * (y - oldest) + (1 - self.alpha) * (self.level + damped)
        self.trend = self.beta * (level - self.level) + (1 - self.beta) * damped
        newest = self.gamma * (y - self.level - damped) + (1 - self.gamma) * oldest
        self.season = np.concatenate([self.season[1:], newest[None, :]])
        self.level = level

    def forecast(self, horizon: int) -> np.ndarray:
        """(horizon, C): l_t + (phi + ... + phi^h) b_t + s_{t+h-m(k+1)}."""
        powers = self.phi[None, :] ** np.arange(1, horizon + 1)[:, None]  # (horizon, C)
        season = self.season[np.arange(horizon) % len(self.season)]
        return self.level + np.cumsum(powers, axis=0) * self.trend + season


class ETS:
    """statsmodels' additive damped-trend Holt-Winters, refitted on a trailing window every `refit_every` rows.

    A refit estimates the smoothing parameters and the states on the last `window` rows;
    between refits each new row updates the states with those parameters, so every forecast
    uses everything that has arrived.
    """

    name = "ets"

    def __init__(self, period: int | None, window: int, refit_every: int):
        from statsmodels.tsa.holtwinters import ExponentialSmoothing  # the `bench` extra

        if period is not None and window < 2 * period:
            raise ValueError(f"window must hold at least two periods ({2 * period} rows), got {window}")
        self._model = ExponentialSmoothing
        self.period, self.window, self.refit_every = period, window, refit_every
        self._recent: deque[np.ndarray] = deque(maxlen=window)
        self._fitted: _Smoothing | None = None
        self._since_fit = 0
        self.refits = 0
        self.failures = 0

    def learn(self, rows: Stream) -> None:
        for y in rows.y:
            self._recent.append(y.copy())
            if self._fitted is not None:
                self._fitted.update(y)
        self._since_fit += len(rows)

    def forecast(self, horizon: int) -> np.ndarray:
        if self._fitted is None or self._since_fit >= self.refit_every:
            self._refit()
        return self._fitted.forecast(horizon)

    def _refit(self) -> None:
        """Fit every channel on the trailing window; the states then stand at the newest row."""
        if len(self._recent) < self.window:
            raise ValueError(
                f"ets: learn at least window ({self.window}) rows before forecasting, got {len(self._recent)}"
            )
        history = np.stack(self._recent)  # (window, C)
        fits = [self._fit_one(history[:, c]) for c in range(history.shape[1])]
        self._fitted = _Smoothing(
            *(np.array([fit[k] for fit in fits]) for k in range(6)), season=np.stack([fit[6] for fit in fits], axis=1)
        )
        self._since_fit = 0
        self.refits += 1

    def _fit_one(self, y: np.ndarray) -> tuple:
        """(alpha, beta, gamma, phi, level, trend, season (m,)) of one channel.

        A fit that fails or diverges falls back to the last value (alpha 1, no trend, no
        season) until the next refit, and is counted in `failures`.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings: the fit is still the optimiser's best
            try:
                result = self._model(
                    y,
                    trend="add",
                    damped_trend=True,
                    seasonal="add" if self.period else None,
                    seasonal_periods=self.period,
                    initialization_method="heuristic",
                ).fit()
            except (ValueError, np.linalg.LinAlgError):
                result = None
        season = np.zeros(self.period or 1)
        if result is not None:
            p = result.params
            fit = (
                p["smoothing_level"],
                p["smoothing_trend"],
                p["smoothing_seasonal"] if self.period else 0.0,
                p["damping_trend"],
                result.level[-1],
                result.trend[-1],
                np.asarray(result.season[-self.period :]) if self.period else season,
            )
            if all(np.all(np.isfinite(v)) for v in fit):
                return fit
        self.failures += 1
        return (1.0, 0.0, 0.0, 1.0, y[-1], 0.0, season)


class Snarimax:
    """River's SNARIMAX, one per channel: learns every row with `learn_one`, forecasts with `forecast`.

    The regressor is River's own: target standardised online, features (lagged differences
    and errors) standardised online, a linear model fitted by SGD with its gradient clipped,
    without which the moving-average terms feed back their own errors and SGD can diverge.
    """

    name = "snarimax"

    def __init__(
        self,
        p: int,
        d: int,
        q: int,
        m: int = 1,
        sp: int = 0,
        sd: int = 0,
        sq: int = 0,
        learning_rate: float = 0.01,
        clip_gradient: float = 1.0,
    ):
        from river import linear_model, optim, preprocessing, time_series  # the `bench` extra

        def regressor():
            return preprocessing.TargetStandardScaler(
                preprocessing.StandardScaler()
                | linear_model.LinearRegression(optimizer=optim.SGD(learning_rate), clip_gradient=clip_gradient)
            )

        self._make = lambda: time_series.SNARIMAX(p=p, d=d, q=q, m=m, sp=sp, sd=sd, sq=sq, regressor=regressor())
        self._models: list | None = None

    def learn(self, rows: Stream) -> None:
        if self._models is None:
            self._models = [self._make() for _ in rows.channels]
        for y in rows.y.tolist():
            for model, value in zip(self._models, y):
                model.learn_one(value)

    def forecast(self, horizon: int) -> np.ndarray:
        if self._models is None:
            raise ValueError("snarimax: learn at least one row before forecasting")
        return np.array([model.forecast(horizon) for model in self._models], dtype=np.float64).T
