"""Online learning rules of the combination: ML-Poly weights over experts and a discounted ridge regression.

Pure arithmetic on small arrays; combination.py and quantile_weights.py keep one of each per
input partition and feed them what matured targets teach.
"""

from __future__ import annotations

import numpy as np
import torch


class MLPoly:
    """ML-Poly weights over `experts`, one set per horizon step, with discounted sums.

    w[h, k] is proportional to eta[h, k] * max(R[h, k], 0), with R the (discounted) cumulative
    regret of the combination against expert k on linearised losses and eta = 1 / (1 + the
    discounted sum of the squared regret increments); uniform while no regret is positive.
    """

    def __init__(self, horizon: int, experts: int, discount: float):
        self.discount = discount
        self.regret = np.zeros((horizon, experts))
        self.squares = np.zeros((horizon, experts))

    def weights(self) -> np.ndarray:
        """(horizon, experts), each row summing to 1."""
        positive = np.maximum(self.regret, 0.0) / (1.0 + self.squares)
        total = positive.sum(axis=1, keepdims=True)
        uniform = np.full_like(positive, 1.0 / positive.shape[1])
        return np.where(total > 0, positive / np.where(total > 0, total, 1.0), uniform)

    def update(self, increments: np.ndarray) -> None:
        """One round: discount every step's sums, then add its regret increments (horizon, experts)."""
        self.regret = self.regret * self.discount + increments
        self.squares = self.squares * self.discount + increments**2

    def snapshot(self) -> dict:
        return {"regret": torch.from_numpy(self.regret.copy()), "squares": torch.from_numpy(self.squares.copy())}

    def restore(self, snapshot: dict) -> None:
        self.regret, self.squares = snapshot["regret"].numpy().copy(), snapshot["squares"].numpy().copy()


class OnlineLinear:
    """Per horizon step, a ridge regression of the scaled move (y[t + h] - y[t]) / s[t] on features,
    its sums discounted by `discount` per step; zero, the last value, until it has been fitted on
    `SAMPLES_PER_FEATURE` targets per feature: fitted on a handful, it extrapolates a morning's
    ramp into a forecast far below zero."""

    SAMPLES_PER_FEATURE = 10

    def __init__(self, horizon: int, features: int, discount: float, ridge: float = 1.0):
        self.discount, self.ridge = discount, ridge
        self.gram = np.zeros((horizon, features, features))
        self.moment = np.zeros((horizon, features))
        self.coef = np.zeros((horizon, features))
        self.samples = np.zeros(horizon, np.int64)  # targets fitted on, per step

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(n, horizon, features) -> (n, horizon) scaled moves."""
        return np.einsum("nhf,hf->nh", features, self.coef)

    def update(self, gram: np.ndarray, moment: np.ndarray, samples: np.ndarray) -> None:
        """Discount the sums, add a round's (horizon, features, features) and (horizon, features) from
        `samples` (horizon,) targets, refit."""
        self.gram = self.gram * self.discount + gram
        self.moment = self.moment * self.discount + moment
        self.samples = self.samples + samples
        eye = self.ridge * np.eye(self.gram.shape[1])
        coef = np.linalg.solve(self.gram + eye, self.moment[:, :, None])[:, :, 0]
        enough = self.samples >= self.SAMPLES_PER_FEATURE * self.gram.shape[1]
        self.coef = np.where(enough[:, None], coef, 0.0)

    def snapshot(self) -> dict:
        return {name: torch.from_numpy(getattr(self, name).copy()) for name in ("gram", "moment", "coef", "samples")}

    def restore(self, snapshot: dict) -> None:
        self.gram, self.moment, self.coef = (snapshot[k].numpy().copy() for k in ("gram", "moment", "coef"))
        # a checkpoint from before the count was kept: its regression has been serving, so it has enough
        default = np.full(len(self.coef), np.iinfo(np.int64).max // 2)
        self.samples = snapshot["samples"].numpy().copy() if "samples" in snapshot else default
