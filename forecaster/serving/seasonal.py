"""Seasonal differencing: the network models the change from one season ago, z[t] = y[t] - y[t - P].

With `model.season: P` the engine feeds the network z instead of y, so everything the
network learns and forecasts (scaled inputs, training targets, buffered windows, damping)
is about z; it adds the season back when it emits. The forecast it emits is

    y_hat[t + h] = y[t + h - P] + z[t] + std_t * out[h]       (h <= P)

that is, last season's value at the step forecast, moved by how far this season runs above
the last one now, plus the network's correction: a zero output is the seasonal naive moved
to today's level, the structure SARIMA's seasonal difference and ETS's seasonal component
give their forecasts. In the engine's terms the point forecast is still y[t] plus a delta,
the delta now including the `shift` y[t + h - P] - y[t - P].

A series' first P observations have no value one season back: its history starts filled
with its first value, so z[t] = y[t] - y[0] and the shift is 0 until a season has passed,
which makes the forecast y[t] + std_t * out[h], the form without a season. Offline
training (`difference`) and the engine (`SeasonRing`) follow the same rule, so both feed
the network identical inputs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_FIELDS = ("values", "first", "written")


def difference(y: np.ndarray, period: int) -> np.ndarray:
    """z[t] = y[t] - y[t - period] along the first axis, y[0] standing in before the start."""
    before = np.concatenate([np.repeat(y[:1], period, axis=0), y[:-period]])[: len(y)]
    return y - before


class SeasonRing:
    """The last `period` + 1 raw values of each slot, y[t - P] .. y[t]; a `state.Part` of the store."""

    def __init__(self, period: int, device: torch.device | str = "cpu"):
        if period < 1:
            raise ValueError(f"period must be a positive number of steps, got {period}")
        self.period, self.device = period, torch.device(device)
        self.allocate(0)

    def allocate(self, capacity: int) -> None:
        self.values = torch.zeros(capacity, self.period + 1, device=self.device, dtype=torch.float64)  # a ring per slot
        self.first = torch.zeros(capacity, device=self.device, dtype=torch.float64)  # stands in before the start
        self.written = torch.zeros(capacity, device=self.device, dtype=torch.int64)  # values ever written

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.values, self.first, self.written))

    def step(self, slots: Tensor, y: Tensor, horizon: int) -> tuple[Tensor, Tensor]:
        """Append y (n,) to distinct `slots`; return z[t] (n,) and the shifts (n, horizon), float64."""
        y = y.to(torch.float64)
        written = self.written[slots]
        self.first[slots] = torch.where(written == 0, y, self.first[slots])
        self.values[slots, written % (self.period + 1)] = y
        self.written[slots] = written + 1
        return self.read(slots, horizon)

    def read(self, slots: Tensor, horizon: int) -> tuple[Tensor, Tensor]:
        """For the newest step t of each slot: z[t] = y[t] - y[t - P] (n,) and y[t + h - P] - y[t - P] (n, horizon).

        No device-to-host sync: values older than a slot's first come from `first` by a mask.
        """
        length, written = self.period + 1, self.written[slots]
        k = torch.arange(horizon + 1, device=self.device)  # y[t - P + k]: k steps after the oldest kept
        where = (written[:, None] + k[None, :]) % length  # the oldest, y[t - P], sits just after the newest
        known = (self.period - k)[None, :] < written[:, None]  # y[t - a] exists once a + 1 values are written
        history = torch.where(known, self.values[slots[:, None], where], self.first[slots, None])
        newest = self.values[slots, (written - 1) % length]
        return newest - history[:, 0], history[:, 1:] - history[:, :1]

    def grow(self, capacity: int) -> None:
        old = (self.values, self.first, self.written)
        self.allocate(capacity)
        for mine, theirs in zip((self.values, self.first, self.written), old):
            mine[: len(theirs)] = theirs

    def reset(self, slots: np.ndarray) -> None:
        """Forget what `slots` held: a new series starts its history afresh."""
        self.written[torch.as_tensor(slots, device=self.device)] = 0

    def snapshot(self, slots: np.ndarray) -> dict:
        slots = torch.as_tensor(slots, device=self.device)
        return {name: getattr(self, name)[slots].cpu() for name in _FIELDS}

    def restore(self, slots: np.ndarray, snapshot: dict) -> None:
        slots = torch.as_tensor(slots, device=self.device)
        for name in _FIELDS:
            getattr(self, name)[slots] = snapshot[name].to(self.device)
