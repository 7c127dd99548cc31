"""Online skill: rolling MAE of one-step forecasts (model and naive), and the coverage of their intervals
(scored by intervals.IntervalHistory)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class RollingMean:
    """Mean of the last `window` values added, in O(1) memory per value kept."""

    def __init__(self, window: int):
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self._ring = np.zeros(window)
        self._next = 0
        self._filled = 0

    def extend(self, values: np.ndarray) -> None:
        """Add values in order; only the newest `window` are kept."""
        values = np.asarray(values, dtype=np.float64)[-len(self._ring) :]
        positions = (self._next + np.arange(len(values))) % len(self._ring)
        self._ring[positions] = values
        self._next = (self._next + len(values)) % len(self._ring)
        self._filled = min(len(self._ring), self._filled + len(values))

    @property
    def count(self) -> int:
        return self._filled

    @property
    def value(self) -> float:
        """The rolling mean, or NaN before anything was added."""
        return float(self._ring[: self._filled].mean()) if self._filled else float("nan")


class Skill:
    """Rolling one-step MAE of the model next to the naive last-value forecast, in original units."""

    def __init__(self, window: int):
        self.model = RollingMean(window)
        self.naive = RollingMean(window)
        self.totals = Totals()  # since the start: what the skill over a stretch is measured from

    def add(self, actual: np.ndarray, model_forecast: np.ndarray, naive_forecast: np.ndarray) -> None:
        """Score forecasts made one step earlier against the actuals that have now arrived.

        A batch in which every record was refused brings no actuals, and scores nothing; a step
        that filled a gap (NaN actual, gaps.py) is not scored, nor is the step after it.
        """
        if len(actual) == 0:
            return
        scored = np.isfinite(actual) & np.isfinite(model_forecast) & np.isfinite(naive_forecast)
        model, naive = np.abs(actual[scored] - model_forecast[scored]), np.abs(actual[scored] - naive_forecast[scored])
        self.model.extend(model)
        self.naive.extend(naive)
        self.totals = Totals(
            self.totals.model + model.sum(), self.totals.naive + naive.sum(), self.totals.scored + len(model)
        )


@dataclass(frozen=True)
class Totals:
    """Summed absolute one-step errors of the model and of the naive forecast, and how many were scored."""

    model: float = 0.0
    naive: float = 0.0
    scored: int = 0

    def since(self, earlier: Totals) -> Totals:
        """What was scored after `earlier` was taken."""
        return Totals(self.model - earlier.model, self.naive - earlier.naive, self.scored - earlier.scored)

    @property
    def skill(self) -> float:
        """1 - MAE / naive MAE: 0 as good as the last value, 1 exact; NaN with nothing scored."""
        if not self.scored:
            return float("nan")
        if self.naive == 0:
            return 0.0 if self.model == 0 else float("-inf")
        return 1.0 - self.model / self.naive


class Coverage:
    """Rolling share of one-step actuals inside the forecast interval issued for them a step earlier."""

    def __init__(self, window: int):
        self.inside = RollingMean(window)

    def add(self, inside: np.ndarray) -> None:
        """Add one-step scores (1.0 inside, 0.0 outside); NaN, a series' first step with none issued, is skipped."""
        self.inside.extend(inside[~np.isnan(inside)])

    @property
    def value(self) -> float:
        return self.inside.value
