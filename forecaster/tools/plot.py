"""Pictures: a series' recent actuals with a forecast and its 80% interval, and a backtest's error by horizon step.

Drawing is pure: `draw_forecast` and `draw_errors` take arrays and rows and return a
matplotlib `Figure` (no pyplot, so no display and no global state: the Agg canvas writes
the PNG), and `save` writes it. Where the arrays come from is apart: a backtest's result
(`backtest_view`) or the forecast records of an output topic with the actuals of the input
topic (`topic_view`). matplotlib is the `plot` extra, imported only when a picture is drawn.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from forecaster.config import Pipeline
from forecaster.errors import ForecasterError
from forecaster.serving.records import decode, parse_time
from forecaster.tools.backtest import METHODS, Result

LAST = 168  # actuals shown before the forecast's origin by default: a week of hours


@dataclass(frozen=True)
class View:
    """One series' actuals and one forecast of it, in epoch seconds; lower/upper None without quantiles."""

    series: str
    times: np.ndarray  # (n,) the actuals'
    actuals: np.ndarray  # (n,)
    origin: float  # the time of the observation forecast from
    target_times: np.ndarray  # (horizon,)
    values: np.ndarray  # (horizon,)
    lower: np.ndarray | None
    upper: np.ndarray | None


def _figure():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ForecasterError(
            "drawing a picture needs matplotlib: pip install 'forecaster-daemon[plot]' (or pip install matplotlib)"
        ) from None
    return Figure(figsize=(9, 4), layout="constrained")


def _dates(epochs: np.ndarray) -> list[datetime]:
    return [datetime.fromtimestamp(float(t), UTC) for t in epochs]


def draw_forecast(view: View, title: str = ""):
    """The actuals as a line, the forecast from the origin as a line, its interval as a band, the origin marked."""
    figure = _figure()
    axes = figure.add_subplot()
    axes.plot(_dates(view.times), view.actuals, color="black", linewidth=1, label="actual")
    axes.plot(_dates(view.target_times), view.values, color="tab:blue", linewidth=1.5, label="forecast")
    if view.lower is not None and view.upper is not None:
        axes.fill_between(
            _dates(view.target_times), view.lower, view.upper, color="tab:blue", alpha=0.25, label="80% interval"
        )
    axes.axvline(_dates(np.array([view.origin]))[0], color="gray", linestyle=":", linewidth=1)
    origin = datetime.fromtimestamp(view.origin, UTC)
    axes.set_title(title or f"{view.series}: forecast from {origin:%Y-%m-%d %H:%M} UTC")
    axes.legend(loc="upper left")
    figure.autofmt_xdate()
    return figure


def draw_errors(rows: Sequence[dict], metric: str = "mae", title: str = ""):
    """`metric` (mae or mase) by horizon step, a line per method (forecaster, persistence, seasonal naive), each
    labelled with its mean over steps."""
    figure = _figure()
    axes = figure.add_subplot()
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        steps = [r for r in mine if r["horizon"] != "mean"]
        mean = next(r[metric] for r in mine if r["horizon"] == "mean")
        label = f"{method.replace('_', ' ')} (mean {mean:.3g})"
        axes.plot([r["horizon"] for r in steps], [r[metric] for r in steps], marker=".", label=label)
    axes.set_xlabel("horizon step")
    axes.set_ylabel(metric.upper())
    axes.set_title(title or f"{metric.upper()} by horizon step")
    axes.legend()
    return figure


def save(figure, path: str | Path) -> Path:
    """Write the figure as a PNG; the folder must exist."""
    path = Path(path)
    figure.savefig(path, format="png", dpi=100)
    return path


def backtest_view(result: Result, series: str | None, at: float | None = None, last: int = LAST) -> View:
    """The series' forecast from the last origin scored (or the last at or before `at`), with the `last` actuals
    before it and those of its horizon."""
    panel = result.panel
    column = _column(panel.keys, series)
    origins = result.origin_rows
    chosen = len(origins) - 1 if at is None else int(np.searchsorted(panel.times[origins], at, side="right")) - 1
    if chosen < 0:
        raise ForecasterError(f"--at: expected a time at or after the first origin scored, got {_text(at)}")
    row = int(origins[chosen])
    shown = slice(max(0, row - last + 1), row + panel.horizon + 1)
    lower, upper = result.intervals[chosen, column, 0], result.intervals[chosen, column, 1]
    has_interval = not np.isnan(lower).all()
    return View(
        panel.keys[column],
        panel.times[shown],
        panel.truth[shown, column],
        float(panel.times[row]),
        panel.times[row + 1 : row + panel.horizon + 1],
        result.forecasts[chosen, column],
        lower if has_interval else None,
        upper if has_interval else None,
    )


def _column(keys: Sequence[str], series: str | None) -> int:
    if series is None:
        if len(keys) != 1:
            raise ForecasterError(f"--series: expected one of the {len(keys)} series ({', '.join(keys[:5])}, ...)")
        return 0
    if series not in keys:
        raise ForecasterError(f"--series: expected a series of the history, got {series!r}")
    return list(keys).index(series)


def topic_view(
    forecasts: Sequence[bytes],
    inputs: Sequence[bytes],
    pipeline: Pipeline,
    series: str,
    at: float | None = None,
    last: int = LAST,
) -> View:
    """The series' newest forecast record (or the newest made from an observation at or before `at`) from an
    output topic's records (the nested format: `times`, `values`, `quantiles`), with the series' `last` actuals
    up to its origin and those since, from the input topic's records."""
    found = [f for f in _forecast_records(forecasts) if f.get("series") == series]
    if at is not None:
        found = [f for f in found if parse_time(f["time"], "time")[0] <= at]
    if not found:
        raise ForecasterError(f"--series: no forecast of {series!r} in the output topic{_at(at)}")
    record = max(found, key=lambda f: parse_time(f["time"], "time")[0])
    origin = parse_time(record["time"], "time")[0]
    target_times = np.array([parse_time(t, "times")[0] for t in record["times"]])
    observations, _ = decode(list(inputs), pipeline.record)
    mine = np.array([k == series for k in observations.keys], dtype=bool)
    times, actuals = observations.times[mine], observations.values[mine, 0]
    keep = (times <= target_times[-1]) & (np.cumsum((times <= origin)[::-1])[::-1] <= last)
    quantiles = {float(level): values for level, values in (record.get("quantiles") or {}).items()}
    levels = sorted(quantiles)
    return View(
        series,
        times[keep],
        actuals[keep],
        origin,
        target_times,
        np.array(record["values"], dtype=float),
        np.array(quantiles[levels[0]], dtype=float) if levels else None,
        np.array(quantiles[levels[-1]], dtype=float) if levels else None,
    )


def _forecast_records(payloads: Sequence[bytes]) -> list[dict]:
    """Every forecast object of the payloads: a message holds one, or a JSON list of them (packed output)."""
    found = []
    for payload in payloads:
        try:
            document = json.loads(payload)
        except (TypeError, ValueError):
            continue
        found += [d for d in (document if isinstance(document, list) else [document]) if isinstance(d, dict)]
    return found


def _text(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at, UTC).isoformat()


def _at(at: float | None) -> str:
    return "" if at is None else f" made at or before {_text(at)}"
