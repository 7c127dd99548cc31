"""The bidirectional warm-start encoder: a new series' recurrent state from its past, in one pass.

A forecast may not read the future, so the live path steps a unidirectional network: the state
after row t has seen rows 0..t only. A series that arrives with a window of history (a backfill,
the rows buffered before its first forecast) offers rows that are all in the past of its first
forecast, so reading them in both directions reads nothing after the newest observation. A
bidirectional GRU over that window, then a linear map, gives every layer's state of the
forecaster at the window's end (num_layers, batch, state_width) in one pass, where today the
forecaster steps from a zero state over the same rows. learning/warm_start.py trains it.

Pure tensor math, as model.py: no logging, files or clocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from forecaster.serving.model import Forecaster


@dataclass(frozen=True)
class EncoderSpec:
    """The encoder's shape: what it reads, how wide it is, and the forecaster state it writes."""

    input_size: int  # the forecaster's inputs at each step (scaled values, covariates, calendar)
    hidden_size: int  # GRU units per direction
    num_layers: int  # of the forecaster: one state per layer is written
    state_width: int  # of the forecaster's state (2 x hidden for an LSTM's [h | c])

    def __post_init__(self):
        for name in ("input_size", "hidden_size", "num_layers", "state_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


class WarmStartEncoder(nn.Module):
    """A bidirectional GRU over a history window and a linear map from its two final states to the forecaster's."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec
        self.rnn = nn.GRU(spec.input_size, spec.hidden_size, bidirectional=True)
        self.to_state = nn.Linear(2 * spec.hidden_size, spec.num_layers * spec.state_width)

    def forward(self, window: Tensor) -> Tensor:
        """A history window (W, B, input_size) -> the forecaster's state at its end (num_layers, B, state_width).

        The forward direction's final state has read the window oldest to newest, the backward
        direction's newest to oldest; both end inside the window, so nothing after it is read.
        """
        if window.dim() != 3 or window.shape[0] == 0 or window.shape[2] != self.spec.input_size:
            raise ValueError(
                f"window must have shape (steps >= 1, batch, {self.spec.input_size}), got {tuple(window.shape)}"
            )
        _, final = self.rnn(window)  # (2, B, hidden): forward's, then backward's
        summary = torch.cat([final[0], final[1]], dim=-1)  # (B, 2 * hidden)
        state = self.to_state(summary)  # (B, num_layers * state_width)
        return state.unflatten(-1, (self.spec.num_layers, self.spec.state_width)).transpose(0, 1).contiguous()


def encoder_for(model: Forecaster, hidden_size: int, seed: int = 0) -> WarmStartEncoder:
    """A seeded encoder that writes `model`'s state; the global random state is left as it was."""
    spec = EncoderSpec(model.spec.input_size, hidden_size, model.spec.num_layers, model.state_width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = WarmStartEncoder(spec)
    return encoder.to(model.readout.weight.device)


def warm_state(model: Forecaster, window: Tensor, encoder: WarmStartEncoder | None = None) -> Tensor:
    """The state (num_layers, B, state_width) `model` forecasts from after a history window (W, B, input_size).

    With an encoder, its one pass over the window; without (today's way), `model` stepped over the
    window from a zero state.
    """
    if encoder is None:
        _, state = model(window, model.initial_state(window.shape[1], device=window.device, dtype=window.dtype))
        return state
    return encoder(window)
