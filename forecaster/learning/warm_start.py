"""Training and scoring the warm-start encoder (serving/warm_start.py) on new series cut from old ones.

A new series that arrives with `history` rows is imitated by a run of history + following rows
of a longer series, prepared as if that run were all the series had (scaling starts at its first
row, as the engine's does for a new key). Its state at the history's end comes either from the
forecaster stepped from zero over the history (today) or from the encoder's one pass; the
forecaster then steps the `following` rows from that state and forecasts at each.

The encoder learns to minimise the forecaster's own loss on those following forecasts, with
the forecaster's weights frozen. That is what is measured, and it needs nothing but the window:
the alternative, matching the state the forward network reaches after a long burn-in, needs
history far longer than the window for every training example, and rewards reproducing a state
rather than forecasting well from one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from forecaster.config import Pipeline
from forecaster.learning.tbptt import forecast_loss, prepare_rows, rows_by_series
from forecaster.serving.model import Forecaster, split_head
from forecaster.serving.records import Observations
from forecaster.serving.warm_start import WarmStartEncoder, warm_state

_COLUMNS_AT_ONCE = 2048  # runs prepared together: bounds the memory of their full-length targets
# A run whose history is flat (ETT's sensors hold a value for hours) has its std at the floor and targets
# of thousands of scales: their squares would swamp every other run's loss. Training leaves them out.
TARGET_BOUND = 30.0


@dataclass(frozen=True, eq=False)
class NewSeries:
    """Runs of rows, each a new series: `history` rows, then the rows forecast from; column j is one series."""

    history: int
    inputs: Tensor  # (history + following, n, input_size): what the engine feeds the model
    targets: Tensor  # (following, n, horizon): (y[t + h] - y[t]) / std_t of the following rows
    mask: Tensor  # (following, n, horizon) bool: the target exists
    std: Tensor  # (following, n): std_t, the scale the engine multiplies the head by

    def __len__(self) -> int:
        return self.inputs.shape[1]

    def take(self, columns: Tensor) -> NewSeries:
        """The series at `columns`."""
        return NewSeries(
            self.history,
            self.inputs[:, columns],
            self.targets[:, columns],
            self.mask[:, columns],
            self.std[:, columns],
        )


def trainable(series: NewSeries, bound: float = TARGET_BOUND) -> NewSeries:
    """The runs of `series` whose targets stay within `bound` scales of the last value."""
    largest = (series.targets.abs() * series.mask).amax(dim=(0, 2))  # (n,)
    return series.take(torch.nonzero(largest <= bound).squeeze(1))


def new_series(pipeline: Pipeline, observations: Observations, history: int, following: int, stride: int) -> NewSeries:
    """Every run of history + following rows of every series in `observations`, starting every `stride`
    rows, prepared as a new series; runs end `horizon` rows before a series' end, so every following
    forecast has all its targets."""
    length = history + following + pipeline.horizon
    runs = [
        rows[start : start + length]
        for rows in rows_by_series(observations).values()
        for start in range(0, len(rows) - length + 1, stride)
    ]
    if not runs:
        raise ValueError(f"no series of the observations holds history + following + horizon = {length} rows")
    parts = [
        _prepared(pipeline, observations, np.stack(runs[a : a + _COLUMNS_AT_ONCE], axis=1), history, following)
        for a in range(0, len(runs), _COLUMNS_AT_ONCE)
    ]
    return NewSeries(history, *(torch.cat(tensors, dim=1) for tensors in zip(*parts)))


def _prepared(
    pipeline: Pipeline, observations: Observations, index: np.ndarray, history: int, following: int
) -> tuple[Tensor, ...]:
    """inputs, targets, mask and std of the runs that are the columns of `index`, cut as `NewSeries` holds them."""
    series = prepare_rows(pipeline, observations, index)
    kept = slice(history, history + following)
    inputs = torch.stack([s.inputs[: history + following] for s in series], dim=1)
    targets = torch.stack([s.targets[kept] for s in series], dim=1)
    mask = torch.stack([s.mask[kept] for s in series], dim=1)
    std = torch.stack([s.std[kept] for s in series], dim=1)
    return inputs, targets, mask, std


def forecasts(model: Forecaster, series: NewSeries, encoder: WarmStartEncoder | None = None) -> Tensor:
    """The head outputs (following, n, outputs) at each following row, from the state the history leaves:
    the encoder's, or without one the model's stepped from zero (today's)."""
    state = warm_state(model, series.inputs[: series.history], encoder)
    inputs = series.inputs[series.history :]
    outputs, _ = model(inputs, state)
    return model.head(outputs, inputs)


def warm_start_loss(
    model: Forecaster, series: NewSeries, encoder: WarmStartEncoder | None = None, relative: bool = False
) -> Tensor:
    """The forecaster's training loss (tbptt.forecast_loss) on the following forecasts of `series`."""
    return forecast_loss(forecasts(model, series, encoder), series.targets, series.mask, model.spec.quantiles, relative)


@torch.no_grad()
def errors(model: Forecaster, series: NewSeries, encoder: WarmStartEncoder | None = None) -> dict:
    """Mean absolute error, in the series' own units, of the point forecasts at the following rows (every
    horizon step), and of persistence (the last value) on the same targets."""
    model.eval()
    point, _ = split_head(forecasts(model, series, encoder), model.spec.horizon)
    scale = series.std.unsqueeze(-1).double() * series.mask  # (following, n, 1): back to the series' units
    count = series.mask.sum().item()
    return {
        "mae": float((scale * (point.double() - series.targets).abs()).sum() / count),
        "persistence_mae": float((scale * series.targets.abs()).sum() / count),
        "forecasts": len(series) * series.targets.shape[0],
    }


def fit_encoder(
    model: Forecaster,
    encoder: WarmStartEncoder,
    series: NewSeries,
    *,
    steps: int,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
    relative: bool = False,
) -> list[float]:
    """Train `encoder` in place for `steps` AdamW steps on batches of `series`, `model` frozen; returns each
    step's loss. The rate decays by a cosine to a tenth; the seed fixes the batches. Only `trainable` runs
    are drawn."""
    series = trainable(series)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, steps), eta_min=learning_rate / 10)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    encoder.train()
    with _frozen(model):
        for _ in range(steps):
            batch = series.take(torch.randint(len(series), (batch_size,), generator=generator))
            loss = warm_start_loss(model, batch, encoder, relative)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
    encoder.eval()
    return losses


@contextlib.contextmanager
def _frozen(model: Forecaster) -> Iterator[None]:
    """`model` in eval mode with no gradients of its own inside (they flow through it to the encoder)."""
    flags = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
