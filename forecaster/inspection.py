"""What a checkpoint holds, for people: pipelines, model version, series, and one series in detail.

Pure functions over a restored engine; the `forecaster inspect` command prints them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import scaling
from .cadence import horizon_times
from .engine import Engine
from .model import Forecaster


def top_output(model: Forecaster, state: torch.Tensor) -> torch.Tensor:
    """The top layer's last output, rebuilt from the carried state (layers, n, width) -> (n, hidden).

    At inference (no dropout) layer l's output is its h, plus, with residual connections,
    the output of the layer below: so the top output is h of the top layer, or the sum of
    every layer's h.
    """
    hidden = model.spec.hidden_size
    h = state[..., :hidden]  # LSTM carries [h | c]; the output is h
    return h.sum(dim=0) if model.spec.residual else h[-1]


@dataclass(frozen=True)
class SeriesView:
    key: str
    last_time: float
    last_value: float
    mean: float
    std: float
    state_norms: list[float]        # L2 norm of each layer's state
    forecast_times: list[float]
    forecast_values: list[float]    # the forecast made after the series' newest observation


@torch.no_grad()
def series_view(engine: Engine, key: str) -> SeriesView:
    """One series as its checkpoint holds it, with the forecast its newest observation produced."""
    store = engine.store
    if key not in store:
        raise KeyError(key)
    slot = torch.as_tensor([store.slots([key])[0]], device=store.device)
    state, moments = store.gather(slot)                       # (layers, 1, width)
    std = scaling.std(moments)                                # (1, features)
    head = engine.model.head(top_output(engine.model, state))[:, :engine.pipeline.horizon]  # the point forecast
    deltas = (std[:, :1] * head).cpu().numpy()[0]
    s = int(slot[0])
    last_time, last_value = float(store.last_time[s]), float(store.last_value[s])
    times = horizon_times(np.array([last_time]), np.array([last_time]), engine.pipeline.cadence, engine.pipeline.horizon)[0]
    return SeriesView(key=key, last_time=last_time, last_value=last_value, mean=float(moments.mean[0, 0]),
                      std=float(std[0, 0]), state_norms=[float(x) for x in state[:, 0].norm(dim=-1)],
                      forecast_times=times.tolist(), forecast_values=(last_value + deltas).tolist())
