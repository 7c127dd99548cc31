"""Truncated-BPTT training on windows of prepared series; pure and seeded.

`prepare` turns decoded observations into exactly the inputs the engine feeds the model,
step by step with the same `scaling` and `calendar_features`, plus the targets the engine's
forecast implies: y_hat[t + h] = y[t] + std_t * head[h], so the head learns
(y[t + h] - y[t]) / std_t; with model.season, y is the seasonal difference z (seasonal.py)
throughout. `fit` samples windows with a seeded generator and unrolls them
chunk by chunk, stopping gradients at each chunk boundary. `evaluate` scores one-step
forecasts against the naive last value, as the engine's skill does. pretrain.py does all
of it for one pipeline, from a dataset, and writes the starting weights.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from forecaster.config import Pipeline, Training
from forecaster.serving import scaling, seasonal, threads
from forecaster.serving.cadence import calendar_features
from forecaster.serving.model import Forecaster, split_head
from forecaster.serving.records import Observations


@dataclass(frozen=True, eq=False)
class Series:
    """One series prepared for training, in time order; float32 on the CPU except `actual`."""

    key: str
    inputs: Tensor  # (T, input_size): what the engine feeds the model at each step
    targets: Tensor  # (T, horizon): (y[t + h] - y[t]) / std_t, 0 where masked
    mask: Tensor  # (T, horizon) bool: y[t + h] exists
    actual: Tensor  # (T,) float64: the target y[t], or with model.season its seasonal difference z[t]
    std: Tensor  # (T,): std_t, the scale the engine multiplies the head by
    level: Tensor | None = None  # (T,) float64: y[t] when `actual` is z[t]; None: `actual` is y[t], or y is not kept
    soft: Tensor | None = None  # (T, outputs): a teacher's head outputs at each step (distill.py); None: no teacher

    def __len__(self) -> int:
        return len(self.actual)


# -- preparing series ---------------------------------------------------------------------


def prepare(pipeline: Pipeline, observations: Observations) -> list[Series]:
    """Every series of `observations`, in order of first appearance, as the engine would see it.

    Rows are taken in time order and a repeated timestamp keeps only its first row, as the
    engine refuses duplicates. Series of equal length are scaled together in one batch.
    """
    rows = rows_by_series(observations)
    by_length: dict[int, list[str]] = {}
    for key, index in rows.items():
        by_length.setdefault(len(index), []).append(key)
    prepared = {}
    for keys in by_length.values():
        index = np.stack([rows[k] for k in keys], axis=1)  # (T, n)
        for key, series in zip(keys, prepare_rows(pipeline, observations, index)):
            prepared[key] = dataclasses.replace(series, key=key)
    return [prepared[key] for key in rows]


def rows_by_series(observations: Observations) -> dict[str, np.ndarray]:
    """Row indices of each series key, sorted by time, without repeated timestamps."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(observations.keys):
        groups.setdefault(key, []).append(i)
    rows = {}
    for key, index in groups.items():
        index = np.asarray(index)
        index = index[np.argsort(observations.times[index], kind="stable")]
        times = observations.times[index]
        rows[key] = index[np.r_[True, times[1:] != times[:-1]]]
    return rows


def prepare_rows(pipeline: Pipeline, observations: Observations, index: np.ndarray) -> list[Series]:
    """Series whose rows are the columns of `index` (T, n): the engine's step, once per time. Each column is
    prepared as a new series from its first row (scaling from nothing), so a column may be any run of a
    series' rows (learning/warm_start.py cuts new series so)."""
    values = observations.values[index]  # (T, n, F), a copy (fancy indexing)
    levels = None
    if pipeline.model.season:  # the engine's float32 target, differenced in float64 as SeasonRing does
        levels = values[..., 0].astype(np.float32).astype(np.float64)
        values[..., 0] = seasonal.difference(levels, pipeline.model.season)
    actual = values[..., 0]  # (T, n) float64: what the model forecasts
    values = torch.as_tensor(values, dtype=torch.float32)
    local_times = observations.local_times[index]
    calendar = torch.as_tensor(calendar_features(local_times.ravel(), pipeline.calendar), dtype=torch.float32)
    calendar = calendar.reshape(*index.shape, -1)  # (T, n, C)
    scaled, std = _scale(values, scaling.decay(pipeline.scaling.halflife), pipeline.scaling.clip)
    inputs = torch.cat([scaled, calendar], dim=2)
    return [
        _series(inputs[:, j], actual[:, j], std[:, j], pipeline.horizon, None if levels is None else levels[:, j])
        for j in range(index.shape[1])
    ]


def _scale(values: Tensor, alpha: float, clip: float) -> tuple[Tensor, Tensor]:
    """Online scaling of (T, n, F) values exactly as `Engine._step_wave`: scaled (T, n, F), std_t (T, n)."""
    moments = scaling.Moments.zeros(values.shape[1], values.shape[2])
    scaled = torch.empty_like(values)
    std = torch.empty(values.shape[:2])
    for t, x in enumerate(values):  # x: (n, F)
        moments = scaling.update(moments, x, alpha)
        scaled[t] = scaling.scale(moments, x, clip)
        std[t] = scaling.std(moments)[:, 0]
    return scaled, std


def _series(inputs: Tensor, actual: np.ndarray, std: Tensor, horizon: int, level: np.ndarray | None) -> Series:
    """Targets (y[t + h] - y[t]) / std_t for h = 1..horizon, masked past the series' end."""
    padded = np.r_[actual, np.full(horizon, np.nan)]
    future = np.lib.stride_tricks.sliding_window_view(padded[1:], horizon)[: len(actual)]  # (T, horizon)
    mask = ~np.isnan(future)
    targets = np.where(mask, (future - actual[:, None]) / std.double().numpy()[:, None], 0.0)
    return Series(
        key="",
        inputs=inputs.contiguous(),
        targets=torch.as_tensor(targets, dtype=torch.float32),
        mask=torch.as_tensor(mask),
        actual=torch.as_tensor(actual),
        std=std.contiguous(),
        level=None if level is None else torch.as_tensor(level),
    )


def equal_lengths(series: Sequence[Series]) -> Iterator[tuple[list[int], Tensor]]:
    """The series in groups of equal length, for a network to step each group as one batch: the indices of a
    group's series and their inputs (T, n, input_size)."""
    groups: dict[int, list[int]] = {}
    for i, s in enumerate(series):
        groups.setdefault(len(s), []).append(i)
    for members in groups.values():
        yield members, torch.stack([series[i].inputs for i in members], dim=1)


def head(series: Series, length: int) -> Series:
    """The first `length` steps of a series, as if nothing came after: later targets are masked.

    Inputs only depend on the past, so this equals preparing the truncated observations.
    """
    t = torch.arange(length).unsqueeze(1)
    h = torch.arange(1, series.targets.shape[1] + 1)
    inside = t + h < length
    return dataclasses.replace(
        series,
        inputs=series.inputs[:length],
        targets=series.targets[:length] * inside,
        mask=series.mask[:length] & inside,
        actual=series.actual[:length],
        std=series.std[:length],
        level=None if series.level is None else series.level[:length],
        soft=None if series.soft is None else series.soft[:length],
    )


# -- fitting ------------------------------------------------------------------------------


def learning_rate(training: Training, step: int) -> float:
    """The rate of optimisation step `step` (0-based): linear warm-up, then cosine decay to 10% of the peak.

    The decay ends exactly at the last step, so a short run still finishes on a low rate.
    """
    peak = training.learning_rate
    if step < training.warmup_steps:
        return peak * (step + 1) / training.warmup_steps
    progress = (step - training.warmup_steps) / max(1, training.steps - training.warmup_steps - 1)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


def chunks(
    model: Forecaster, inputs: Tensor, state: Tensor, chunk: int, backprop: int | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Unroll a window (T, B, input_size) `chunk` steps at a time: yields (forecasts (c, B, outputs), state).

    TBPTT(k1=chunk, k2=backprop): the forecasts of each chunk carry gradients back through the
    last `backprop` steps (a multiple of `chunk`; default `chunk`) and no further, because the
    pass is recomputed from the state `backprop` steps back, detached. Forward values are those
    of one pass over the whole window; only gradients are cut.
    """
    backprop = backprop or chunk
    if backprop % chunk:
        raise ValueError(f"backprop ({backprop}) must be a multiple of chunk ({chunk})")
    precision = _precision(inputs.device)
    starts = {0: state}  # detached states at chunk boundaries, as far back as backprop reaches
    for start in range(0, len(inputs), chunk):
        end, begin = min(start + chunk, len(inputs)), max(0, start + chunk - backprop)
        with precision:
            outputs, state = model(inputs[begin:end], starts[begin])  # (end - begin, B, hidden)
            forecasts = model.head(outputs[start - begin :], inputs[start:end])
        yield forecasts, state
        starts[end] = state.detach()  # truncated BPTT: gradients never reach past `begin`
        starts.pop(end - backprop - chunk, None)


def _precision(device: torch.device):
    """bfloat16 autocast on CUDA (no loss scaling needed); plain float32 elsewhere."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


# In scaled units (std_t = 1): a horizon whose targets barely move (a flat stretch) is not
# divided by almost nothing.
_NAIVE_MSE_FLOOR = 1e-4


def masked_mse(forecasts: Tensor, targets: Tensor, mask: Tensor, relative: bool = False) -> Tensor:
    """Mean squared error over every step and horizon whose target exists.

    `relative` divides each horizon's squared errors by the mean square of its targets: the
    MSE of the last-value forecast (a zero move) on the same targets. The long horizons'
    larger moves then no longer drown the short ones, which a linear model fits far more
    precisely than an unweighted multi-horizon loss lets the network learn.
    """
    errors = (forecasts.float() - targets).square() * mask
    if relative:
        steps = tuple(range(targets.dim() - 1))  # every dimension but the horizon's
        naive = (targets.square() * mask).sum(steps) / mask.sum(steps).clamp_min(1)
        errors = errors / naive.clamp_min(_NAIVE_MSE_FLOOR)
    return errors.sum() / mask.sum().clamp_min(1)


def pinball(quantiles: Tensor, targets: Tensor, mask: Tensor, levels: Sequence[float]) -> Tensor:
    """Mean pinball loss of quantile forecasts (..., Q, horizon) at `levels` against targets (..., horizon).

    Its minimiser is the level-q quantile: an underforecast costs q per unit, an
    overforecast 1 - q.
    """
    q = torch.tensor(levels, device=targets.device).unsqueeze(-1)  # (Q, 1)
    error = targets.unsqueeze(-2) - quantiles.float()  # (..., Q, horizon)
    losses = torch.maximum(q * error, (q - 1) * error) * mask.unsqueeze(-2)
    return losses.sum() / (mask.sum() * len(levels)).clamp_min(1)


def forecast_loss(
    forecasts: Tensor, targets: Tensor, mask: Tensor, levels: Sequence[float] = (), relative: bool = False
) -> Tensor:
    """The training loss of a head's outputs: MSE of the point forecast (relative: see `masked_mse`),
    plus the pinball loss of its quantiles."""
    point, quantiles = split_head(forecasts, targets.shape[-1])
    loss = masked_mse(point, targets, mask, relative)
    return loss + pinball(quantiles, targets, mask, levels) if levels else loss


def imitation_loss(forecasts: Tensor, soft: Tensor, horizon: int, relative: bool = False) -> Tensor:
    """How far a student's head outputs (..., outputs) lie from a teacher's on the same steps: the point
    forecast's MSE against the teacher's (relative: see `masked_mse`), plus the mean squared difference of
    the quantiles. Every step counts: the teacher has an output where the target is not known yet."""
    point, quantiles = split_head(forecasts, horizon)
    taught_point, taught_quantiles = split_head(soft, horizon)
    loss = masked_mse(point, taught_point, torch.ones_like(taught_point, dtype=torch.bool), relative)
    if quantiles.shape[-2] == 0:
        return loss
    return loss + (quantiles.float() - taught_quantiles).square().mean()


def window_loss(
    forecasts: Tensor, targets: Tensor, mask: Tensor, soft: Tensor | None, levels: Sequence[float], training: Training
) -> Tensor:
    """The loss of one chunk: `forecast_loss` on the targets, or with a teacher's outputs (`soft`) that loss
    and `imitation_loss` mixed by training.teacher_weight (knowledge distillation, Hinton et al. 2015)."""
    relative = training.loss == "relative_mse"
    loss = forecast_loss(forecasts, targets, mask, levels, relative)
    if soft is None:
        return loss
    weight = training.teacher_weight
    return (1 - weight) * loss + weight * imitation_loss(forecasts, soft, targets.shape[-1], relative)


WINDOW_FIELDS = ("inputs", "targets", "mask")


def sample_windows(
    series: Sequence[Series], training: Training, generator: torch.Generator, fields: Sequence[str] = WINDOW_FIELDS
) -> tuple[Tensor, ...]:
    """`batch_size` windows, uniform over every (series, start) pair: each of `fields` (default inputs, targets,
    mask; "soft" too when distilling), each (window, B, ...).

    Drawing starts rather than series first gives every time step the same chance, so a
    long series is not underweighted against a short one.
    """
    window = training.window
    starts_per_series = torch.tensor([max(0, len(s) - window + 1) for s in series])
    if starts_per_series.sum() == 0:
        longest = max((len(s) for s in series), default=0)
        raise ValueError(f"training.window ({window}) must not exceed the longest series ({longest} steps)")
    ends = starts_per_series.cumsum(0)
    draws = torch.randint(int(ends[-1]), (training.batch_size,), generator=generator)
    which = torch.searchsorted(ends, draws, right=True)
    starts = draws - (ends[which] - starts_per_series[which])
    picked = [(series[int(i)], int(a)) for i, a in zip(which, starts)]
    return tuple(torch.stack([getattr(s, name)[a : a + window] for s, a in picked], dim=1) for name in fields)


def fit(
    model: Forecaster,
    series: Sequence[Series],
    training: Training,
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train `model` in place for `training.steps` optimisation steps; returns the loss of each.

    Each window starts from a zero state, like a new series in the engine; its first chunk
    only warms the state up (no loss), so the model learns to forecast from a warmed state.
    Every later chunk is one step. The seed fixes window sampling and dropout, and the
    global random state is left as it was. Series that carry a teacher's outputs (`Series.soft`,
    from distill.py) are learnt from those too (`window_loss`).
    """
    if training.window <= training.chunk:
        raise ValueError(
            f"training.window ({training.window}) must be longer than training.chunk ({training.chunk}): "
            "the first chunk of every window only warms the state up"
        )
    device = torch.device(device)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: learning_rate(training, i) / training.learning_rate
    )
    generator = torch.Generator().manual_seed(training.seed)
    taught = bool(series) and series[0].soft is not None  # distill.taught gives every series its soft targets
    fields = (*WINDOW_FIELDS, "soft") if taught else WINDOW_FIELDS
    losses: list[float] = []
    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
    with rng, threads.sized(training.batch_size, device):  # the seed's draws, and a small batch on one thread
        torch.manual_seed(training.seed)
        while len(losses) < training.steps:
            inputs, targets, mask, *soft = (t.to(device) for t in sample_windows(series, training, generator, fields))
            state = model.initial_state(inputs.shape[1], device=device)
            unrolled = chunks(model, inputs, state, training.chunk, training.backprop_steps)
            for k, (forecasts, _) in enumerate(unrolled):
                if k == 0:
                    continue  # burn-in: the state warms up, nothing is learnt
                rows = slice(k * training.chunk, (k + 1) * training.chunk)
                chunk_soft = soft[0][rows] if soft else None
                loss = window_loss(forecasts, targets[rows], mask[rows], chunk_soft, model.spec.quantiles, training)
                _optimise(model, loss, optimizer, schedule, training.grad_clip)
                losses.append(loss.item())
                if progress is not None:
                    progress(len(losses), losses[-1])
                if len(losses) == training.steps:
                    break
    model.eval()
    return losses


def _optimise(model: Forecaster, loss: Tensor, optimizer, schedule, grad_clip: float) -> None:
    """One AdamW step on `loss`, gradients clipped by global norm, then the next learning rate."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    schedule.step()


# -- evaluating ---------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: Forecaster, series: Sequence[Series], device: str | torch.device = "cpu", *, warmup_fraction: float = 0.0
) -> dict:
    """One-step-ahead MAE in original units of the model, the naive forecast and the last value, from a stateful pass.

    "naive" is what a zero output forecasts. Without a season that is the last value y[t];
    with model.season the series model z, so it is last season's value moved to today's
    level, y[t + 1 - P] + y[t] - y[t - P], and "last_value_mae" still scores y[t], the
    forecast a network must beat at step 1 to be worth serving.

    Each series is stepped from a zero state from its start; forecasts issued in its leading
    `warmup_fraction` only warm the state up and are not scored, so a held-out tail can be
    scored with the state the model would have reached by then.
    """
    model.to(device).eval()
    model_error = naive_error = last_value_error = 0.0
    steps = 0
    for s in series:
        inputs = s.inputs.to(device).unsqueeze(1)  # (T, 1, input_size)
        outputs, _ = model(inputs, model.initial_state(1, device=device))
        delta = (s.std * model.head(outputs, inputs)[:, 0, 0].float().cpu()).double()  # as the engine: std * head
        scored = slice(int(warmup_fraction * len(s)), len(s) - 1)  # forecasts from t, actual at t + 1
        y, following = s.actual[scored], s.actual[1:][scored]
        model_error += (following - (y + delta[scored])).abs().sum().item()
        naive_error += (following - y).abs().sum().item()
        level = s.actual if s.level is None else s.level
        last_value_error += (level[1:][scored] - level[scored]).abs().sum().item()
        steps += len(y)
    if steps == 0:
        return {"model_mae": math.nan, "naive_mae": math.nan, "last_value_mae": math.nan, "steps": 0}
    return {
        "model_mae": model_error / steps,
        "naive_mae": naive_error / steps,
        "last_value_mae": last_value_error / steps,
        "steps": steps,
    }
