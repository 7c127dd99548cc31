"""Series on a common time grid, run through a pipeline's engine prequentially and scored against the naive
forecasts: the code path of `forecaster backtest` and of benchmarks/generalisation.py, so their figures agree.

The engine runs its own online path: every grid row's observations are one batch
(`engine.step`: forecast, and learn from the targets that matured), and retraining runs on
the daemon's schedule (`DaemonRetraining`), each round adopted before the next row, where
the daemon adopts it a few batches later. At an origin t the engine has seen rows 0..t and
nothing later. Scores are per horizon step and over steps 1..H: MAE, MASE (errors over the
in-sample MAE of the seasonal naive with the shortest season, before the first origin) and
the coverage of the interval between the outermost quantiles (80% with the default levels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from forecaster.evaluation.network import DaemonRetraining
from forecaster.serving.cadence import seasons
from forecaster.serving.engine import Engine
from forecaster.serving.records import Observations


@dataclass(frozen=True)
class Panel:
    """Series on a common grid: values (T, N) with NaN where missing, covariates (T, N, C) or None."""

    name: str
    keys: tuple[str, ...]
    times: np.ndarray  # (T,) epoch seconds
    truth: np.ndarray  # (T, N): what is scored
    inputs: np.ndarray  # (T, N): what the methods see (the truth, or the truth with gaps)
    covariates: np.ndarray | None
    cadence: str
    horizon: int
    # Origins are every `stride`-th step; a stride prime to the day and the week makes them fall at every hour of
    # the day and every day of the week, where a stride of a whole day would score only one hour's forecasts.
    stride: int = 1
    local_times: np.ndarray | None = None  # (T,) the times shifted by their UTC offset; None: the times (UTC)


def engine_forecasts(
    engine: Engine,
    panel: Panel,
    origins: np.ndarray,
    progress: Callable[[int, int], None] | None = None,
    forecast: Callable[[int, np.ndarray], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, DaemonRetraining]:
    """The engine's forecasts (origins, N, H) made right after each origin's row, its intervals between the
    outermost quantiles (origins, N, 2, H), NaN where a series had none, and the retraining that ran.

    `progress(done, total)` is called with the rows stepped so far; `forecast(done, forecasts)` after each
    origin's row with the origins done so far and the forecasts array, filled up to them (for interim scores)."""
    retraining = DaemonRetraining(engine)
    T, N = panel.inputs.shape
    wanted = {int(t): i for i, t in enumerate(origins)}
    out = np.full((len(origins), N, panel.horizon), np.nan)
    intervals = np.full((len(origins), N, 2, panel.horizon), np.nan)
    last = min(T, int(origins.max(initial=0)) + 1)  # nothing after the last origin is needed
    for t in range(last):
        present, forecasts = step_row(engine, panel, t)
        if progress is not None:
            progress(t + 1, last)
        if forecasts is None:
            continue
        if t in wanted:
            out[wanted[t], present] = forecasts.values
            if forecasts.quantiles:
                levels = sorted(forecasts.quantiles)
                intervals[wanted[t], present] = np.stack(
                    [forecasts.quantiles[levels[0]], forecasts.quantiles[levels[-1]]], 1
                )
            if forecast is not None:
                forecast(wanted[t] + 1, out)
        retraining.after(len(present))
    return out, intervals, retraining


def step_row(engine: Engine, panel: Panel, t: int):
    """Step the observations of row `t` (one batch): the series present (indices) and their forecasts (None
    when no series had a record)."""
    present = np.flatnonzero(~np.isnan(panel.inputs[t]))
    if not len(present):
        return present, None
    values = panel.inputs[t, present][:, None]
    if panel.covariates is not None:
        values = np.concatenate([values, panel.covariates[t, present]], axis=1)
    times = np.full(len(present), panel.times[t])
    local = times.copy() if panel.local_times is None else np.full(len(present), panel.local_times[t])
    keys = tuple(panel.keys[i] for i in present)
    forecasts, rejected = engine.step(
        Observations(keys, times, local, values, np.arange(len(present))), now=float(panel.times[t])
    )
    if rejected:
        raise ValueError(f"{panel.name}: the engine refused {len(rejected)} rows, first {rejected[0]}")
    return present, forecasts


def baseline_forecasts(
    panel: Panel, origins: np.ndarray, periods: tuple[int, ...] | None = None
) -> dict[str, np.ndarray]:
    """Persistence, and the seasonal naive per season (default: the cadence's) and at today's level, from the
    inputs: (origins, N, H) each."""
    H, x = panel.horizon, panel.inputs
    h = np.arange(1, H + 1)
    last = np.repeat(x[origins][:, :, None], H, axis=2)
    found = {"persistence": last}
    for period in seasons(panel.cadence) if periods is None else periods:
        back = period * np.ceil(h / period).astype(np.int64)
        then = at(x, origins[:, None] + h[None, :] - back[None, :])  # (O, H, N)
        before = at(x, origins[:, None] - back[None, :])
        then, before = then.transpose(0, 2, 1), before.transpose(0, 2, 1)
        found[f"seasonal_naive_{period}"] = np.where(np.isnan(then), last, then)
        level = then + x[origins][:, :, None] - before
        found[f"seasonal_level_{period}"] = np.where(np.isnan(level), last, level)
    return found


def at(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """x[rows] for rows (O, H), NaN before the start and past the end: (O, H, N)."""
    safe = np.clip(rows, 0, len(x) - 1)
    return np.where(((rows >= 0) & (rows < len(x)))[:, :, None], x[safe], np.nan)


def scales(panel: Panel, before: int | None = None) -> np.ndarray:
    """(N,) in-sample mean absolute error of the seasonal naive with the shortest season (1 without one) on each
    series' rows before `before` (default: the first half)."""
    period = min(seasons(panel.cadence), default=1)
    x = panel.truth[: len(panel.truth) // 2 if before is None else before]
    return np.nanmean(np.abs(x[period:] - x[:-period]), axis=0)


def score(
    panel: Panel,
    origins: np.ndarray,
    forecasts: dict[str, np.ndarray],
    intervals: dict[str, np.ndarray],
    scale_before: int | None = None,
) -> list[dict]:
    """MASE, MAE and (for methods with `intervals` (O, N, 2, H)) the interval's coverage per horizon step and
    over steps 1..H, per method, skipping origins where a series had no input."""
    H, scale = panel.horizon, scales(panel, scale_before)
    h = np.arange(1, H + 1)
    targets = at(panel.truth, origins[:, None] + h[None, :]).transpose(0, 2, 1)  # (O, N, H)
    present = ~np.isnan(panel.inputs[origins])  # (O, N): the series had a record at the origin
    rows = []
    for method, f in forecasts.items():
        error = np.abs(f - targets)
        usable = present[:, :, None] & ~np.isnan(error)
        scaled = np.where(usable, error / scale[None, :, None], np.nan)
        inside = None
        if method in intervals:
            lower, upper = intervals[method][:, :, 0], intervals[method][:, :, 1]
            inside = np.where(usable & ~np.isnan(lower), (lower <= targets) & (targets <= upper), np.nan)
        for step in range(H):
            covered = None if inside is None else inside[:, :, step]
            rows.append(
                _row(panel, method, step + 1, scaled[:, :, step], error[:, :, step], usable[:, :, step], covered)
            )
        rows.append(_row(panel, method, "mean", scaled, error, usable, inside))
    return rows


def _row(panel: Panel, method: str, horizon, scaled, error, usable, inside=None) -> dict:
    return {
        "dataset": panel.name,
        "horizon": horizon,
        "method": method,
        "mase": round(float(np.nanmean(np.where(usable, scaled, np.nan))), 5),
        "mae": round(float(np.nanmean(np.where(usable, error, np.nan))), 5),
        "coverage80": None if inside is None else round(float(np.nanmean(inside)), 4),
        "series": len(panel.keys),
        "origins": int(usable.any(axis=tuple(range(1, usable.ndim))).sum()) if usable.ndim > 1 else 0,
    }
