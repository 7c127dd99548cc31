"""`forecaster backtest`: how a pipeline would have done on a history, before it is deployed on such data.

The history's observations are laid on the cadence's grid (a `Panel`: one column per
series, NaN where a series has no observation) and run through the pipeline's own engine,
with its starting weights and its retraining schedule, by evaluation/panel.py: the code
path of benchmarks/generalisation.py, so the figures are the harness's. Scored from the
origin `start` (default: the grid's middle) against persistence and the seasonal naive.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from forecaster.build import engine as build_engine
from forecaster.build import starting_model
from forecaster.config import Config, Pipeline
from forecaster.errors import ForecasterError
from forecaster.evaluation import panel as panels
from forecaster.serving.cadence import Cadence, seasons, step_numbers, step_seconds
from forecaster.serving.records import Observations, localised

METHODS = ("forecaster", "persistence", "seasonal_naive")
MAX_CELLS = 50_000_000  # steps x series of the grid: 400 MB of float64


@dataclass(frozen=True)
class Result:
    rows: list[dict]  # {"method", "horizon", "mae", "mase", "coverage80"}; horizon a step number or "mean"
    origins: int  # forecasts scored per series (at most)
    first_origin: float  # epoch seconds of the first origin scored
    rounds: int  # retraining rounds run
    promotions: int  # of which the challenger won
    # What was scored, for pictures (tools/plot.py): the grid, the origins' rows, the forecaster's forecasts
    # (origins, series, horizon) and its intervals between the outermost quantiles (origins, series, 2, horizon).
    panel: panels.Panel | None = None
    origin_rows: np.ndarray | None = None
    forecasts: np.ndarray | None = None
    intervals: np.ndarray | None = None


def panel_of(pipeline: Pipeline, observations: Observations, name: str) -> panels.Panel:
    """The observations on the cadence's grid, from the first step any series has to the last: one column per
    series (in order of first appearance), NaN where it has no observation; a repeated step keeps the last."""
    if not len(observations):
        raise ForecasterError(f"{name}: no observations")
    cadence = Cadence.of(pipeline)
    observations = localised(observations, cadence)
    steps = step_numbers(observations.times, observations.local_times, cadence)  # as grid_steps, localised once
    rows = steps - steps.min()
    keys = tuple(dict.fromkeys(observations.keys))
    column = {k: i for i, k in enumerate(keys)}
    columns = np.fromiter((column[k] for k in observations.keys), np.int64, len(observations))
    T = int(rows.max()) + 1
    if T * len(keys) > MAX_CELLS:  # a stray timestamp years away, or a cadence far finer than the data's
        raise ForecasterError(
            f"{name}: the observations span {T:,} steps of {pipeline.cadence} for {len(keys)} series, more than "
            f"{MAX_CELLS:,} cells; check the timestamps and the pipeline's cadence"
        )
    values = np.full((T, len(keys)), np.nan)
    values[rows, columns] = observations.values[:, 0]
    covariates = None
    if observations.values.shape[1] > 1:
        covariates = np.full((T, len(keys), observations.values.shape[1] - 1), np.nan)
        covariates[rows, columns] = observations.values[:, 1:]
    times, local = _grid_times(cadence, steps, rows, observations, T)
    return panels.Panel(name, keys, times, values, values, covariates, pipeline.cadence, pipeline.horizon, 1, local)


def grid_steps(pipeline: Pipeline, observations: Observations) -> np.ndarray:
    """Each observation's step number on the cadence's grid (read in the cadence's time zone): row r of the
    backtest's grid holds the observations whose step is the smallest plus r."""
    cadence = Cadence.of(pipeline)
    observations = localised(observations, cadence)
    return step_numbers(observations.times, observations.local_times, cadence)


def _grid_times(cadence: Cadence, steps, rows, observations: Observations, T: int):
    """Each grid row's time and local time: its observations' (the last one's where they differ), else the
    step's on a fixed-length cadence (a row without observations is never stepped)."""
    times = np.full(T, np.nan)
    if not cadence.calendar:
        times = (steps.min() + np.arange(T)) * step_seconds(cadence)
    local = times.copy()
    times[rows] = observations.times
    local[rows] = observations.local_times
    return times, local


def start_row(panel: panels.Panel, start: float | None) -> int:
    """The first origin: the first row at or after `start` (epoch seconds), else the middle of the grid."""
    last = len(panel.times) - panel.horizon - 1  # the last origin whose every step has an actual
    if start is None:
        row = len(panel.times) // 2
    else:
        later = np.flatnonzero(panel.times >= start)  # rows without a time (NaN) are never later
        row = int(later[0]) if len(later) else len(panel.times)
    if row < 1 or row > last:
        raise ForecasterError(
            f"{panel.name}: --from: expected a time between the grid's second row and {panel.horizon} steps "
            f"before its end ({len(panel.times)} rows), got row {row}"
        )
    return row


def seasonal_period(pipeline: Pipeline) -> int | None:
    """The seasonal naive's period: model.season, else the cadence's shortest season (None: it has none)."""
    return pipeline.model.season or min(seasons(pipeline.cadence), default=None)


def backtest(
    config: Config,
    pipeline: Pipeline,
    observations: Observations,
    name: str,
    *,
    start: float | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
    interim: Callable[[int, float], None] | None = None,
) -> Result:
    """The pipeline's engine, from its starting weights, over the observations prequentially; scored from
    `start` on. The daemon's state folder is never touched: any spill goes to a temporary folder.

    `interim(k, mase)` is called once a share INTERIM_SHARES[k - 1] of the origins is forecast, with the
    forecaster's mean MASE over those: a search stops a hopeless run there by raising."""
    panel = panel_of(pipeline, observations, name)
    first = start_row(panel, start)
    origins = np.arange(first, len(panel.times) - panel.horizon, panel.stride)
    model, version = starting_model(config, pipeline)
    watch = None if interim is None else _interim_scores(panel, origins, first, interim)
    with tempfile.TemporaryDirectory(prefix="forecaster-backtest-") as folder:
        engine = build_engine(pipeline, model, device, version, Path(folder) / "spill.sqlite")
        forecasts, intervals, retraining = panels.engine_forecasts(engine, panel, origins, progress, watch)
    period = seasonal_period(pipeline)
    baselines = panels.baseline_forecasts(panel, origins, () if period is None else (period,))
    methods = {"forecaster": forecasts, "persistence": baselines["persistence"]}
    if period is not None:
        methods["seasonal_naive"] = baselines[f"seasonal_naive_{period}"]
    rows = panels.score(panel, origins, methods, {"forecaster": intervals}, scale_before=first)
    keep = ("method", "horizon", "mae", "mase", "coverage80")
    return Result(
        [{k: r[k] for k in keep} for r in rows],
        len(origins),
        float(panel.times[first]),
        retraining.rounds,
        retraining.promotions,
        panel,
        origins,
        forecasts,
        intervals,
    )


INTERIM_SHARES = (0.25, 0.5, 0.75)  # of the origins, where `backtest` reports interim scores


def _interim_scores(
    panel: panels.Panel, origins: np.ndarray, first: int, interim: Callable[[int, float], None]
) -> Callable[[int, np.ndarray], None]:
    """engine_forecasts' `forecast` callback: past each of INTERIM_SHARES of the origins, `interim` with the
    mean MASE of the origins forecast so far (scaled as the final score is)."""
    marks = [max(1, int(len(origins) * share)) for share in INTERIM_SHARES]
    reported = 0

    def forecast(done: int, forecasts: np.ndarray) -> None:
        nonlocal reported
        while reported < len(marks) and done >= marks[reported]:
            reported += 1
            rows = panels.score(panel, origins[:done], {"forecaster": forecasts[:done]}, {}, scale_before=first)
            interim(reported, mean_mase(rows))

    return forecast


def mean_mase(rows: list[dict], method: str = "forecaster") -> float:
    """A method's MASE over every horizon step (the row with horizon "mean")."""
    return next(r["mase"] for r in rows if r["method"] == method and r["horizon"] == "mean")


def table(rows: list[dict]) -> str:
    """MAE, MASE and coverage per horizon step (rows) and method (columns), the mean last."""
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    by = {(r["horizon"], r["method"]): r for r in rows}
    steps = list(dict.fromkeys(r["horizon"] for r in rows))
    head = f"{'step':>5} " + " ".join(f"{m + ' MAE':>20} {'MASE':>6}" for m in methods) + f" {'coverage80':>11}"
    lines = [head]
    for step in steps:
        cells = " ".join(f"{by[step, m]['mae']:>20.4g} {by[step, m]['mase']:>6.3f}" for m in methods)
        coverage = by[step, "forecaster"]["coverage80"]
        lines.append(f"{step!s:>5} {cells} {'-' if coverage is None else f'{coverage:.1%}':>11}")
    return "\n".join(lines)
