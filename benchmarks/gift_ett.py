"""GIFT-Eval's hourly ETT windows and metrics: the forecaster beside the published models (issue 17, item 2).

    python benchmarks/gift_ett.py                   # ett1/H/short and ett2/H/short (H = 48): gift_ett.json
    python benchmarks/gift_ett.py --check           # only the naive rows against the published ones (seconds)
    python benchmarks/gift_ett.py --terms short,medium,long --out /tmp/all.json   # H = 480 and 720 too (slow)
    python benchmarks/gift_ett.py --validation      # the same windows moved back before the test part

GIFT-Eval (SalesforceAIResearch/gift-eval: src/gift_eval/data.py, notebooks/naive.ipynb, scored
with gluonts' evaluate_model) splits each 7-variate ETT series into 7 univariate ones
(`to_univariate`) and scores the last min(20, ceil(0.1 * length / H)) non-overlapping windows of
H steps, each forecast from everything before it: H = 48 (short, 20 windows), 480 (medium, 4)
and 720 (long, 3). MASE[0.5] divides each absolute error of the 0.5 quantile by the mean
|y[t] - y[t - 24]| over the whole past of its own window and channel (gluonts' seasonal_error,
24 = get_seasonality("H"); lag 1 if the past were shorter), then averages over every window,
channel and step. The CRPS is gluonts' mean_weighted_sum_quantile_loss over the levels 0.1..0.9
(scores.weighted_quantile_loss). The seasonal naive and naive rows are statsforecast's
SeasonalNaive(24) and Naive with their prediction intervals, as GIFT-Eval ran them.

The data. GIFT-Eval's ett1/H and ett2/H are not ETTh1 and ETTh2: they are the 15-minute ETTm1
and ETTm2 summed over each hour (17,420 rows from 2016-07-01 00:00, about 4x ETTh's values). A
public copy of GIFT-Eval's ett2/H series (gift-eval commit 103fa71,
results/MoiraiAgent/ett2_H_long.parquet) reproduces all six published ett2 naive and seasonal
naive figures exactly (to six digits) with this file's windows and metrics, while ETTh's values
miss 23 of the 24 naive figures by more than 1% (MASE by -6.6% to +2.5%, CRPS by +3.8% to
+30%): ETTh holds the value at the hour, not the hour's sum. So the
script reads data/ett/ETTm1.csv and ETTm2.csv (zhouhaoyi/ETDataset, unmodified) when they are
there and builds GIFT-Eval's hourly sums from them; without them it falls back to ETTh's values,
says so in every row, and the check fails (exit 1) after scoring, naming the gaps.

The forecaster runs as the accuracy benchmark's `forecaster` does on ETT (benchmarks/accuracy.py,
its ETT Network, whose settings were chosen on rows 3,484-4,354, long before these windows):
pretrained with tbptt.fit on the rows before the first test window only, then the daemon's
engine steps every row from the first, with a retraining round every 168 rows as the daemon
runs them (so the damping and the intervals' calibration are measured before the windows too),
serving the online combination. Its model forecasts the nine levels 0.1..0.9 (model.quantiles),
so the CRPS is computed from served quantiles, not approximated; MASE takes the served 0.5
quantile. The combination minimises the absolute error, the one MASE judges. Each window's
forecast is the engine's forecast after the row just before it. On --validation (the 20
windows before the test part) rounds from the first row scored MASE / CRPS 1.032 / 0.255
(ett1) and 0.810 / 0.085 (ett2), against 1.047 / 0.257 and 0.810 / 0.084 with rounds only
from the first window on; so they run from the first row.

Medium and long (H = 480, 720) are not in the default run: the network's head, its buffers'
targets and the intervals grow with H, and on this project's 2-core machine one configuration of
ett2/H/medium took about 9 CPU-minutes against about 3 for short: the two medium ones alone
would take most of the benchmark's half-hour budget (long was not timed).

Rows: {"config", "method", "mase", "crps", "source", "data", "windows", "seconds"}; source is
"published" (GIFT-Eval's results files, state of 2026-08-07, three decimals except the naive
rows) or "computed" (this script, on `data`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from forecaster.build import seeded_model
from forecaster.evaluation import prequential, scores
from forecaster.evaluation.network import OnlineMethod, observations
from forecaster.evaluation.prequential import Stream
from forecaster.io.datasets import data_dir
from forecaster.learning import tbptt

import accuracy  # benchmarks/accuracy.py, beside this script: the ETT network and its pipeline
import tables  # benchmarks/tables.py, beside this script

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MEDIAN = LEVELS.index(0.5)
SEASON = 24  # gluonts' get_seasonality("H"): the seasonal naive's period and MASE's lag
TEST_SPLIT, MAX_WINDOWS = 0.1, 20  # gift_eval/data.py
TERMS = {"short": 48, "medium": 480, "long": 720}  # gift_eval/data.py: 48 x Term.multiplier (1, 10, 15)
DATASETS = ("ett1", "ett2")
CHANNELS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
TOLERANCE = 0.01  # the naive rows must reproduce the published ones within 1%
METHODS = ("seasonal_naive", "naive", "forecaster")

# GIFT-Eval's results/<model>/all_results.csv (state of 2026-08-07): MASE[0.5] and
# mean_weighted_sum_quantile_loss of each configuration; the naive rows in full, the check needs them.
_CONFIGS = tuple(f"{d}/H/{t}" for d in DATASETS for t in TERMS)
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "Seasonal naive": dict(
        zip(
            _CONFIGS,
            [
                (0.9773176243434534, 0.24036844107833774),
                (1.5678007461285395, 0.4349118298516912),
                (1.4787012870437326, 0.47106248989542887),
                (0.9231678277377344, 0.08895289185095483),
                (1.2384249730532626, 0.1862050814081793),
                (1.1284016697207502, 0.20790633225768584),
            ],
        )
    ),
    "Naive": dict(
        zip(
            _CONFIGS,
            [
                (1.8250258188592174, 0.4067901701225723),
                (2.0328290422336406, 0.8414627329278955),
                (2.2728552413599847, 0.9868526334206741),
                (1.0872035620086857, 0.1127608016960007),
                (1.4275550147417344, 0.29476933710790065),
                (1.3228699351602262, 0.3493770970075422),
            ],
        )
    ),
}
# the other models of ../shared/data/ett/README.md's table: (MASE, CRPS) for ett1 short/medium/long, ett2 the same
_OTHERS = {
    "AutoARIMA": "0.995 0.223 1.570 0.384 1.650 0.430 0.952 0.089 1.460 0.245 1.280 0.272",
    "AutoETS": "1.940 0.440 5.380 15.400 6.830 448.000 1.030 0.103 1.410 0.272 1.300 0.329",
    "AutoTheta": "1.280 0.668 1.840 1.650 2.510 1.940 1.020 0.102 1.300 0.284 1.460 0.336",
    "Chronos-2 (zero-shot)": "0.787 0.171 1.274 0.261 1.380 0.275 0.736 0.064 1.090 0.109 1.048 0.105",
    "TiRex-2 (zero-shot)": "0.824 0.176 1.218 0.245 1.377 0.259 0.731 0.064 1.020 0.103 1.034 0.104",
    "TimesFM-2.5 (zero-shot)": "0.839 0.188 1.348 0.287 1.447 0.288 0.739 0.064 1.008 0.101 1.007 0.101",
    "Moirai 2": "0.836 0.185 1.304 0.287 1.465 0.323 0.735 0.064 1.085 0.111 1.052 0.109",
    "FlowState 9.1M (zero-shot)": "0.815 0.176 1.227 0.248 1.339 0.270 0.722 0.063 1.038 0.104 1.097 0.111",
    "PatchTST (trained)": "0.893 0.190 1.390 0.273 1.470 0.297 0.858 0.074 1.270 0.125 1.430 0.130",
    "DeepAR (trained)": "1.060 0.233 3.120 0.535 2.680 0.469 1.480 0.122 2.520 0.281 2.490 0.196",
    "TFT (trained)": "0.947 0.199 1.580 0.316 1.550 0.313 0.956 0.078 1.320 0.122 1.450 0.138",
    "N-BEATS (trained)": "0.930 0.249 1.670 0.450 1.960 0.567 0.819 0.091 1.050 0.130 1.260 0.156",
}
for _name, _text in _OTHERS.items():
    _pairs = np.array(_text.split(), dtype=float).reshape(-1, 2)
    PUBLISHED[_name] = {c: (float(m), float(p)) for c, (m, p) in zip(_CONFIGS, _pairs)}
# which published row each computed baseline must reproduce
REPRODUCES = {"seasonal_naive": "Seasonal naive", "naive": "Naive"}


# -- data and windows ------------------------------------------------------------------------


def load(dataset: str) -> tuple[Stream, str]:
    """GIFT-Eval's hourly series of `dataset` ("ett1", "ett2") as a (rows, 7) stream, and what it was built from.

    GIFT-Eval's are the 15-minute ETTm files summed over each hour; where those are not in the
    data folder, ETTh's value at each hour stands in (and the naive rows will not reproduce).
    """
    number = dataset.removeprefix("ett")
    folder = data_dir() / "ett"
    quarter_hours = folder / f"ETTm{number}.csv"
    if quarter_hours.is_file():
        times, values = _read(quarter_hours)
        return _stream(dataset, *hourly_sums(times, values)), f"ETTm{number} hourly sums"
    return _stream(dataset, *_read(folder / f"ETTh{number}.csv")), f"ETTh{number} values at the hour"


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(times as epoch seconds, values (rows, 7)) of an ETT CSV, its dates read as UTC."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    times = np.array([datetime.fromisoformat(r["date"]).replace(tzinfo=UTC).timestamp() for r in rows])
    return times, np.array([[float(r[c]) for c in CHANNELS] for r in rows])


def hourly_sums(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quarter-hourly rows summed over each hour [hh:00, hh+1:00), labelled hh:00, as GIFT-Eval's ett/H are."""
    if len(times) % 4 or times[0] % 3600 or np.any(np.diff(times) != 900):
        raise ValueError("expected quarter-hourly rows from a whole hour on, without gaps, in whole hours")
    return times[::4], values.reshape(-1, 4, values.shape[1]).sum(axis=1)


def _stream(dataset: str, times: np.ndarray, values: np.ndarray) -> Stream:
    return Stream(times, times.copy(), values, np.zeros((len(times), 0)), tuple(f"{dataset}.{c}" for c in CHANNELS))


def window_count(length: int, horizon: int) -> int:
    """GIFT-Eval's test windows of a series of `length` rows: min(20, ceil(0.1 * length / horizon))."""
    return min(max(1, math.ceil(TEST_SPLIT * length / horizon)), MAX_WINDOWS)


def window_starts(length: int, horizon: int) -> np.ndarray:
    """The first row of each test window: the last window_count * horizon rows, cut into windows."""
    count = window_count(length, horizon)
    return length - horizon * np.arange(count, 0, -1)


# -- metrics ---------------------------------------------------------------------------------


def seasonal_error(past: np.ndarray) -> np.ndarray:
    """gluonts' seasonal_error of each channel of `past` (rows, C): mean |y[t] - y[t - 24]| (lag 1 when too short)."""
    lag = SEASON if SEASON < len(past) else 1
    return np.mean(np.abs(past[lag:] - past[:-lag]), axis=0)


def score(y: np.ndarray, starts: np.ndarray, quantiles: np.ndarray) -> tuple[float, float]:
    """(MASE[0.5], CRPS) of quantile forecasts (windows, levels, H, C) of the windows at `starts` of y (rows, C)."""
    horizon = quantiles.shape[2]
    actual = np.stack([y[s : s + horizon] for s in starts])  # (windows, H, C)
    scale = np.stack([seasonal_error(y[:s]) for s in starts])[:, None, :]  # (windows, 1, C)
    mase = float(np.mean(np.abs(actual - quantiles[:, MEDIAN]) / scale))
    return mase, scores.weighted_quantile_loss(actual, quantiles.transpose(1, 0, 2, 3), LEVELS)


# -- the naive rows --------------------------------------------------------------------------


def statsforecast_quantiles(method: str, past: np.ndarray, horizon: int) -> np.ndarray:
    """(levels, H) quantiles of statsforecast's SeasonalNaive(24) or Naive fitted on `past` (rows,), as GIFT-Eval's
    StatsForecastPredictor asks for them: level q is the lower (q <= 0.5) or upper end of the central
    interval of round(200 |q - 0.5|)%."""
    from statsforecast.models import Naive, SeasonalNaive

    model = SeasonalNaive(season_length=SEASON) if method == "seasonal_naive" else Naive()
    widths = sorted({round(200 * abs(q - 0.5)) for q in LEVELS})
    # float32, as GIFT-Eval's predictor hands the target over
    out = model.forecast(y=past.astype(np.float32), h=horizon, level=widths)
    keys = [f"{'hi' if q > 0.5 else 'lo'}-{round(200 * abs(q - 0.5))}" for q in LEVELS]
    return np.stack([np.asarray(out[k], dtype=np.float64) for k in keys])


def naive_quantiles(method: str, y: np.ndarray, starts: np.ndarray, horizon: int) -> np.ndarray:
    """(windows, levels, H, C): each window's forecast of each channel from everything before it."""
    return np.stack(
        [
            np.stack([statsforecast_quantiles(method, y[:s, c], horizon) for c in range(y.shape[1])], axis=-1)
            for s in starts
        ]
    )


# -- the forecaster --------------------------------------------------------------------------


class QuantileMethod(OnlineMethod):
    """The online forecaster keeping every quantile level of each series' newest forecast, and of each origin's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        levels, horizon = len(self.engine.model.spec.quantiles), self.engine.pipeline.horizon
        self._newest = np.full((len(self._index), levels, horizon), np.nan)
        self.quantiles: list[np.ndarray] = []  # per forecast: (levels, horizon, channels)

    def keep(self, forecasts) -> None:
        super().keep(forecasts)
        stacked = np.stack([forecasts.quantiles[q] for q in self.engine.model.spec.quantiles], axis=1)  # (m, Q, H)
        for i, key in enumerate(forecasts.keys):
            self._newest[self._index[key]] = stacked[i]

    def forecast(self, horizon: int) -> np.ndarray:
        self.quantiles.append(self._newest[:, :, :horizon].transpose(1, 2, 0).copy())
        return super().forecast(horizon)


def protocol(dataset: str, lead: int, rows: int) -> accuracy.Protocol:
    """The accuracy benchmark's ETT protocol with the nine levels, pretraining on the first `lead` of `rows`, and a
    combination minimising the absolute error (MASE's)."""
    ett = accuracy.PROTOCOLS["etth1"]
    network = replace(ett.network, quantiles=LEVELS, combination_loss="absolute")
    return replace(ett, name=f"gift_{dataset}", source=dataset, train_fraction=lead / rows, network=network)


def forecaster_quantiles(dataset: str, stream: Stream, starts: np.ndarray, horizon: int, steps: int | None):
    """(windows, levels, H, C) of the online forecaster, and its (rounds, promotions).

    Pretrained on the rows before the first window only; then every row is stepped in order, with
    a retraining round every 168 rows, and the forecast after row s - 1 is window s's.
    """
    lead = int(starts[0])
    the_protocol = protocol(dataset, lead, len(stream))
    the_pipeline = accuracy.pipeline(the_protocol, horizon, stream, steps, online_=True)
    model = seeded_model(the_pipeline)
    leading = stream[:lead]
    tbptt.fit(model, tbptt.prepare(the_pipeline, observations(leading, False)), the_pipeline.training)
    # From the first row on, as a daemon replaying that history after `forecaster pretrain` would: its
    # retraining rounds also measure the damping and the intervals' calibration before the first window.
    every = the_protocol.network.every
    method = QuantileMethod("forecaster", the_pipeline, model, stream.channels, False, start=0, every=every)
    prequential.run(method, stream, starts - 1, horizon)
    return np.stack(method.quantiles), (method.rounds, method.promotions)


# -- running ---------------------------------------------------------------------------------


def evaluate(dataset: str, term: str, methods: list[str], validation: bool, steps: int | None, log=print) -> list[dict]:
    """The computed rows of one configuration. With `validation`, the series ends where its test windows begin,
    and the same windows are cut from what is left."""
    stream, data = load(dataset)
    horizon = TERMS[term]
    if validation:
        stream = stream[: int(window_starts(len(stream), horizon)[0])]
        data += ", validation (the test part cut off)"
    starts = window_starts(len(stream), horizon)
    config = f"{dataset}/H/{term}"
    rows = []
    for method in methods:
        began = time.perf_counter()
        note = ""
        if method == "forecaster":
            quantiles, (n_rounds, promoted) = forecaster_quantiles(dataset, stream, starts, horizon, steps)
            note = f" ({n_rounds} retraining rounds, {promoted} promoted)"
        else:
            quantiles = naive_quantiles(method, stream.y, starts, horizon)
        mase, crps = score(stream.y, starts, quantiles)
        seconds = time.perf_counter() - began
        log(f"{config:<14} {method:<15} MASE {mase:.4f}  CRPS {crps:.4f}  {seconds:7.1f} s{note}")
        rows.append(
            {
                "config": config,
                "method": method,
                "mase": mase,
                "crps": crps,
                "source": "computed",
                "data": data,
                "windows": len(starts),
                "seconds": round(seconds, 1),
            }
        )
    return rows


def gaps(rows: list[dict]) -> list[str]:
    """Each computed naive figure more than 1% away from the published one, in words."""
    found = []
    for row in rows:
        published = PUBLISHED.get(REPRODUCES.get(row["method"], ""), {}).get(row["config"])
        if published is None or row["source"] != "computed":
            continue
        for metric, theirs in zip(("mase", "crps"), published):
            gap = row[metric] / theirs - 1
            if abs(gap) > TOLERANCE:
                found.append(
                    f"{row['config']} {row['method']} {metric}: {row[metric]:.4f} against {theirs:.4f} published "
                    f"({100 * gap:+.2f}%, on {row['data']})"
                )
    return found


def published_rows() -> list[dict]:
    return [
        {"config": config, "method": name, "mase": mase, "crps": crps, "source": "published"}
        for name, figures in PUBLISHED.items()
        for config, (mase, crps) in figures.items()
    ]


def _clean(value):
    return float(f"{value:.6g}") if isinstance(value, float) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument("--terms", default="short", help=f"comma-separated, from {', '.join(TERMS)} (default: short)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, from {', '.join(DATASETS)}")
    parser.add_argument("--check", action="store_true", help="only the naive rows and their check; writes nothing")
    parser.add_argument(
        "--validation",
        action="store_true",
        help="score the windows before the test part instead (for choosing settings): gift_ett_validation.json",
    )
    parser.add_argument("--steps", type=int, help="pretraining steps (default: the ETT network's)")
    parser.add_argument("--out", type=Path, help="JSON rows (default: benchmarks/results/gift_ett.json)")
    args = parser.parse_args(argv)
    terms = accuracy._choices(args.terms, TERMS, "--terms")
    names = accuracy._choices(args.datasets, DATASETS, "--datasets")
    methods = list(REPRODUCES) if args.check else list(METHODS)
    torch.set_num_threads(1)  # as accuracy.py: the engine steps 7 series at a time
    began = time.perf_counter()
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    rows = []
    for name in names:
        for term in terms:
            rows += evaluate(name, term, methods, args.validation, args.steps, log)
    missed = [] if args.validation else gaps(rows)
    if not args.check:
        out = args.out or RESULTS / ("gift_ett_validation.json" if args.validation else "gift_ett.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        every = rows + ([] if args.validation else published_rows())
        out.write_text(json.dumps([{k: _clean(v) for k, v in row.items()} for row in every], indent=1) + "\n")
        tables.follow(out)
        print(f"wrote {out} ({len(every)} rows) in {time.perf_counter() - began:.0f} s", file=sys.stderr)
    for line in missed:
        print(f"NOT REPRODUCED: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
