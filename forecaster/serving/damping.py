"""Per-series damping of the model's forecast towards the last value.

The model forecasts a move away from the newest value, y[t] + std[t] * out[h]. Where a
series changes regime (a level shift, a sensor gone wild) the model's moves can hurt more
than they help, and the last value is the better forecast. Each retraining round measures,
per series, how much of the model's move the held-out steps support: the least-squares
factor of the move against the actual one,

    damping = clip(sum(move * actual_move) / sum(move ** 2), 0, 1)

over the series' held-out targets, every horizon step together (one factor per series:
enough to switch a misbehaving series off, too few to overfit its 48-odd held-out origins).
0 serves the last value, 1 the model as it is. The engine multiplies each series' moves,
quantiles included, by its factor.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def least_squares(moves: Tensor, actual_moves: Tensor, mask: Tensor) -> Tensor:
    """Per series (first dim), the damping the masked (move, actual move) pairs support; NaN without any.

    moves, actual_moves, mask: (n, ...) of the same shape, in units of the series' scale.
    """
    moves = torch.where(mask, moves, torch.zeros_like(moves)).flatten(1)
    actual = torch.where(mask, actual_moves, torch.zeros_like(actual_moves)).flatten(1)
    fit = (moves * actual).sum(1) / (moves * moves).sum(1)  # 0 / 0 = NaN: no evidence
    return fit.clamp(0.0, 1.0)


def apply(head: Tensor, damping: Tensor, horizon: int) -> Tensor:
    """Damp a head's outputs (..., horizon * (1 + Q)) in place by `damping` (...): the point's move is
    scaled, and each quantile shifts with it, so the spread around the point is kept."""
    point = head[..., :horizon]
    shift = point * (damping[..., None] - 1)
    head.unflatten(-1, (head.shape[-1] // horizon, horizon)).add_(shift.unsqueeze(-2))
    return head


class Damping:
    """Each slot's damping factor, 1 (the model as it is) until a round measures it; a `state.Part`."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.factors = torch.ones(0, device=self.device)

    @property
    def nbytes(self) -> int:
        return self.factors.element_size() * self.factors.nelement()

    def allocate(self, capacity: int) -> None:
        self.factors = torch.ones(capacity, device=self.device)

    def grow(self, capacity: int) -> None:
        old = self.factors
        self.allocate(capacity)
        self.factors[: len(old)] = old

    def reset(self, slots: np.ndarray) -> None:
        self.factors[self._on_device(slots)] = 1.0

    def set(self, slots: np.ndarray, factors: Tensor) -> None:
        """Measured factors for `slots`; a NaN (no evidence) leaves its slot as it was."""
        factors = factors.to(self.device, self.factors.dtype)
        known = ~torch.isnan(factors)
        self.factors[self._on_device(slots)[known]] = factors[known]

    def snapshot(self, slots: np.ndarray) -> dict:
        return {"factors": self.factors[self._on_device(slots)].cpu()}

    def restore(self, slots: np.ndarray, snapshot: dict) -> None:
        self.factors[self._on_device(slots)] = snapshot["factors"].to(self.device)

    def _on_device(self, slots: np.ndarray) -> Tensor:
        return torch.as_tensor(slots, device=self.device)
