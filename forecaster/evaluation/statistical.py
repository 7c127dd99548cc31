"""statsforecast's automatic models as prequential methods: AutoETS, AutoARIMA, AutoTheta and MSTL.

Each channel's model is fitted on its last `window` rows at the rows where the network's
retraining rounds run (after `start` rows, then every `every` rows), and at each origin in
between the fitted model is applied, with its parameters, to the channel's newest rows
(statsforecast's `forward`): a forecast uses every row that has arrived and nothing later.
A fit is made when an origin first needs it, on the rows up to its scheduled row, so
scoring every stride-th origin gives the same forecasts at those origins as scoring every
origin, with only the fits those origins use. statsforecast is the `bench` extra, imported
when a model is made, so the daemon never needs it.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter, deque

import numpy as np

from forecaster.evaluation.prequential import Stream

MODELS = ("autoets", "autoarima", "autotheta", "mstl")
LEVEL = 80  # each forecast keeps statsforecast's own 80% interval: [lo-80, hi-80]
# what a fit or a forward may raise on a history it cannot model; that channel then serves its last value
FIT_ERRORS = (ValueError, ArithmeticError, NotImplementedError, np.linalg.LinAlgError)


def model(name: str, seasons: tuple[int, ...], length: int):
    """A fresh statsforecast model for a history of `length` rows.

    The single-season models take the shortest of `seasons` that the history holds twice
    over, MSTL every such season; without one, MSTL is its own trend model alone.
    """
    from statsforecast.models import MSTL, AutoARIMA, AutoETS, AutoTheta  # the `bench` extra

    usable = [p for p in sorted(seasons) if length > 2 * p]
    season = usable[0] if usable else 1
    if name == "autoets":
        return AutoETS(season_length=season)
    if name == "autoarima":
        # As R's auto.arima does for series over 150 rows or seasons over 12: CSS in the search, maximum
        # likelihood for the model chosen. The exact search took 5 to 65 CPU seconds a fit on 672 hourly rows.
        return AutoARIMA(season_length=season, approximation=True)
    if name == "autotheta":
        return AutoTheta(season_length=season)
    if name == "mstl":
        return MSTL(season_length=usable) if usable else AutoETS(model="ZZN")
    raise ValueError(f"unknown statsforecast model {name!r}; expected one of {', '.join(MODELS)}")


def describe(fitted) -> str:
    """The form a fit selected, as the literature writes it: ETS(A,Ad,N), ARIMA(2,1,1)(0,0,1)[24], ..."""
    kind = type(fitted).__name__
    if kind == "AutoETS":
        error, trend, season, damped = fitted.model_["components"][:4]
        return f"ETS({error},{trend}{'d' if damped == 'D' else ''},{season})"
    if kind == "AutoARIMA":
        from statsforecast.arima import arima_string

        return " ".join(arima_string(fitted.model_, padding=False).split())
    if kind == "AutoTheta":
        seasonal = ", deseasonalised" if fitted.model_.get("decompose") else ""
        return f"Theta({fitted.model_['modeltype']}{seasonal})"
    if kind == "MSTL":
        return f"MSTL{tuple(fitted.season_length)} + {describe(fitted.trend_forecaster)}"
    return kind


def filled(history: np.ndarray) -> np.ndarray | None:
    """A history with its gaps filled by the last value before them, leading ones by the first value, so it
    keeps its length and phase (None if it has fewer than 10 values)."""
    valid = ~np.isnan(history)
    if valid.sum() < 10:
        return None
    history = history.copy()
    history[: int(np.argmax(valid))] = history[int(np.argmax(valid))]
    for i in range(1, len(history)):
        if np.isnan(history[i]):
            history[i] = history[i - 1]
    return history


class Statistical:
    """One statsforecast model per channel, fitted on the network's retraining schedule, forwarded in between.

    `forward` runs the fitted model's filter over the rows given from their first, which it
    takes to be at the season's phase of the first row fitted on: each forward window
    therefore starts a whole number of the longest season after the fitted window's start.
    NaN (a gap) is filled by the value before it; a channel with fewer than 10 values so far
    has no forecast (NaN) until it has them.
    """

    def __init__(self, name: str, seasons: tuple[int, ...], window: int, every: int, start: int):
        if window < 1 or every < 1 or start < 0:
            raise ValueError(f"window and every must be positive and start at least 0, got {window}, {every}, {start}")
        model(name, seasons, 0)  # an unknown name, or statsforecast missing, fails here, where the method is made
        self.name = name
        self.seasons, self.window, self.every, self.start = tuple(seasons), window, every, start
        self._longest = max(seasons, default=1)
        self._recent: deque[np.ndarray] = deque(maxlen=window + every)  # rows back to the oldest a forecast needs
        self._rows = 0  # rows learnt
        self._due = -1  # the scheduled row of the fits serving now
        self._fits: list = []  # per channel: (fitted model, row its window started at), or None
        self.intervals: list[np.ndarray] = []  # per forecast: (horizon, channels, 2) lower and upper
        self.fit_seconds: list[float] = []  # CPU seconds of each channel's fit
        self.selected: Counter[str] = Counter()  # the forms the fits chose
        self.refits = self.failures = 0  # fitting rounds; fits or forwards that fell back to the last value

    def learn(self, rows: Stream) -> None:
        self._recent.extend(rows.y[-self._recent.maxlen :].copy())
        self._rows += len(rows)
        if not self._fits:
            self._fits = [None] * len(rows.channels)

    def forecast(self, horizon: int) -> np.ndarray:
        if self._rows < self.start:
            raise ValueError(f"{self.name}: learn at least start ({self.start}) rows before forecasting")
        held = np.stack(self._recent)  # (rows held, channels)
        first = self._rows - len(held)  # the row number of held[0]
        due = self.start + (self._rows - self.start) // self.every * self.every
        if due != self._due:
            self._due, self.refits = due, self.refits + 1
            scheduled = held[max(0, due - self.window - first) : due - first]
            self._fits = [self._fit(scheduled[:, c], due) for c in range(held.shape[1])]
        out = np.full((horizon, held.shape[1], 3), np.nan)  # mean, lower, upper
        for c, fit in enumerate(self._fits):
            if fit is None:  # too few values at the scheduled row: fit on the newest rows
                fit = self._fits[c] = self._fit(held[-self.window :, c], self._rows)
            if fit is not None:
                out[:, c] = self._forward(fit, held[:, c], first, horizon)
        self.intervals.append(out[..., 1:].copy())
        return out[..., 0]

    def _fit(self, rows: np.ndarray, end: int) -> tuple | None:
        """(the model fitted on `rows`, the last `window` before row `end`, or None where the fit failed; the row
        they start at), or None where they hold fewer than 10 values."""
        history = filled(rows)
        if history is None:
            return None
        fresh = model(self.name, self.seasons, len(history))
        began = time.process_time()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence warnings: the fit is still the optimiser's best
                fitted = fresh.fit(y=history)
            self.selected[describe(fitted)] += 1
        except FIT_ERRORS:
            fitted, self.failures = None, self.failures + 1
        self.fit_seconds.append(time.process_time() - began)
        return fitted, end - len(rows)

    def _forward(self, fit: tuple, held: np.ndarray, first: int, horizon: int) -> np.ndarray:
        """(horizon, 3): mean, lower and upper of the fitted model applied to the newest of `held` (one channel's
        rows from row `first` on); the last value where the fit failed."""
        fitted, anchor = fit
        begin = max(anchor, self._rows - self.window)
        begin = anchor + (begin - anchor) // self._longest * self._longest  # at the fitted window's phase
        history = filled(held[begin - first :])
        if history is None:
            return np.full((horizon, 3), np.nan)  # too few values in the window: no forecast
        if fitted is not None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    found = fitted.forward(y=history, h=horizon, level=[LEVEL])
                return np.stack([found["mean"], found[f"lo-{LEVEL}"], found[f"hi-{LEVEL}"]], axis=1)
            except FIT_ERRORS:
                self.failures += 1
        return np.full((horizon, 3), history[-1])
