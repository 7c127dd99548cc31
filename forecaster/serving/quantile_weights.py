"""The combination's quantiles: per level and horizon step, the network's and the combined forecast's own.

The combination (combination.py) serves a point forecast that can lean on the simple experts,
which have no quantiles; shifting the network's quantiles with it would keep intervals only
as good as an untrained head. Per level q and step h, each partition therefore weighs two
offsets from the combined point, in units of the series' scale:

    network    the network's quantile less its point forecast
    empirical  the q-quantile of the combined forecast's own errors at step h, tracked online
               (r <- r - rate * spread * (share of errors below r - q), the stochastic
               approximation of Gibbs & Candes' adaptive conformal inference)

by ML-Poly on the pinball loss (the gradient trick: the loss's subgradient at the served
offset, 1{error < offset} - q, times each expert's distance from it). The served quantile is
the combined point plus the weighted offset, sorted across levels so they never cross. Like
the point weights, all of it is learnt from matured targets only, an epoch at a time.
"""

from __future__ import annotations

import numpy as np
import torch

from forecaster.serving.aggregation import MLPoly

# How fast the empirical offsets move: a share of the errors' spread per epoch, at full miscoverage.
_RATE = 0.05
# How fast the spread (the mean absolute error of the combined forecast, per step) follows.
_SPREAD_ALPHA = 0.02


class QuantileWeights:
    """One partition's quantile experts and their weights, for `levels` (L,) over `horizon` steps."""

    def __init__(self, levels: tuple[float, ...], horizon: int, discount: float):
        self.levels = np.asarray(levels, np.float64)
        L = len(levels)
        self.offset = np.zeros((L, horizon))  # the empirical offsets, in scales
        self.spread = np.zeros(horizon)  # mean absolute error of the combined point, in scales; 0 before any
        self.weights = MLPoly(L * horizon, 2, discount)
        self.served = self.weights.weights().reshape(L, horizon, 2)
        self.increments = np.zeros((L * horizon, 2))
        self.below = np.zeros((L, horizon))  # per epoch: summed 1{error < empirical offset} - q
        self.errors = np.zeros(horizon)  # per epoch: summed |error|
        self.scored = np.zeros(horizon, np.int64)

    def combine(self, network: np.ndarray) -> np.ndarray:
        """The served offsets (n, L, H) from the network's (n, L, H), and the empirical ones."""
        return self.served[..., 0] * network + self.served[..., 1] * self.offset

    def gather(self, steps: np.ndarray, errors: np.ndarray, offsets: np.ndarray) -> None:
        """Keep what matured targets teach: at step index `steps` (r,), the combined point's `errors` (r,) and
        the offsets (r, 3, L) issued for them (network, empirical, served)."""
        network, empirical, served = offsets[:, 0], offsets[:, 1], offsets[:, 2]
        gradient = (errors[:, None] < served) - self.levels[None, :]  # (r, L): of the pinball loss at `served`
        rows = np.arange(len(self.levels))[None, :] * len(self.spread) + steps[:, None]  # (r, L) into L * H
        np.add.at(self.increments[:, 0], rows, gradient * (served - network))
        np.add.at(self.increments[:, 1], rows, gradient * (served - empirical))
        np.add.at(self.below, (slice(None), steps), ((errors[:, None] < empirical) - self.levels[None, :]).T)
        np.add.at(self.errors, steps, np.abs(errors))
        np.add.at(self.scored, steps, 1)

    def conclude(self) -> None:
        """The end of an epoch: move the weights, the empirical offsets and the spread; start afresh."""
        count = np.maximum(self.scored, 1)
        self.weights.update(self.increments / np.tile(count, len(self.levels))[:, None])
        self.served = self.weights.weights().reshape(len(self.levels), -1, 2)
        seen = self.scored > 0
        mean_error = self.errors / count
        self.spread = np.where(
            seen,
            np.where(self.spread > 0, self.spread + _SPREAD_ALPHA * (mean_error - self.spread), mean_error),
            self.spread,
        )
        self.offset -= _RATE * self.spread[None, :] * self.below / count[None, :]
        self.increments[:], self.below[:], self.errors[:], self.scored[:] = 0.0, 0.0, 0.0, 0

    _ARRAYS = ("offset", "spread", "increments", "below", "errors", "scored")

    def snapshot(self) -> dict:
        arrays = {name: torch.from_numpy(getattr(self, name).copy()) for name in self._ARRAYS}
        return {"weights": self.weights.snapshot(), **arrays}

    def restore(self, snapshot: dict) -> None:
        self.weights.restore(snapshot["weights"])
        self.served = self.weights.weights().reshape(len(self.levels), -1, 2)
        for name in self._ARRAYS:
            setattr(self, name, snapshot[name].numpy().copy())
