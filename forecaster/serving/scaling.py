"""Per-series online normalisation: running mean and variance updated as records arrive.

Pure tensor arithmetic, batched over series. The same `update` and `scale` serve the
stateful engine (one step per wave) and offline training (one step per time index), so
both see identical model inputs.

The model forecasts in scaled units relative to the latest value:
    y_hat[t + h] = y[t] + std[t] * out[h]
so a zero output is the naive last-value forecast, and series of any scale share one model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Below this the spread is treated as noise around the level: a flat stretch (a night
# of zero irradiance) must not turn the next small move into a huge scaled input.
_RELATIVE_STD_FLOOR = 1e-3
_ABSOLUTE_STD_FLOOR = 1e-6


@dataclass(frozen=True)
class Moments:
    """Running statistics of a batch of series: mean and var (n, features), count (n,)."""

    mean: Tensor
    var: Tensor
    count: Tensor

    @staticmethod
    def zeros(n: int, features: int, device=None, dtype=torch.float32) -> Moments:
        return Moments(
            mean=torch.zeros(n, features, device=device, dtype=dtype),
            var=torch.zeros(n, features, device=device, dtype=dtype),
            count=torch.zeros(n, device=device, dtype=dtype),
        )


def decay(halflife: float | None) -> float:
    """Weight of the newest observation once warmed up; 0 means all history weighs equally."""
    return 0.0 if halflife is None else 1.0 - math.pow(0.5, 1.0 / halflife)


def update(moments: Moments, x: Tensor, alpha: float) -> Moments:
    """Fold one observation per series (x: (n, features)) into the running moments.

    Early on the weight is 1/count (an exact mean), so the first observations are not
    biased towards zero; afterwards it is the exponential weight `alpha`.
    """
    count = moments.count + 1
    weight = torch.maximum(1.0 / count, torch.full_like(count, alpha)).unsqueeze(1)  # (n, 1)
    diff = x - moments.mean
    increment = weight * diff
    mean = moments.mean + increment
    var = (1 - weight) * (moments.var + diff * increment)
    return Moments(mean=mean, var=var, count=count)


def std(moments: Moments) -> Tensor:
    """Standard deviation with a floor relative to the level, (n, features)."""
    floor = _RELATIVE_STD_FLOOR * moments.mean.abs() + _ABSOLUTE_STD_FLOOR
    return torch.maximum(moments.var.clamp_min(0).sqrt(), floor)


def scale(moments: Moments, x: Tensor, clip: float) -> Tensor:
    """Standardise x (n, features) with the moments, clipped to +-clip."""
    return ((x - moments.mean) / std(moments)).clamp(-clip, clip)
