"""The tables of figures in README.md and docs/, rendered from benchmarks/results/*.json.

    python benchmarks/tables.py            # rewrite every table block in its page
    python benchmarks/tables.py --check    # exit 1, naming the tables whose block is stale
    python benchmarks/tables.py accuracy-etth2 performance-gpu   # only these

A page holds each table between `<!-- table:NAME -->` and `<!-- /table:NAME -->`; `TABLES`
maps NAME to the page and the function that renders it. The functions read the results files
and nothing else, so a table in the docs is always the figures of the JSON next to it:
rerun a benchmark, then this script, and the docs follow. Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

BASELINES = ("persistence", "seasonal_naive", "seasonal_level", "ets", "snarimax")
NETWORK_METHODS = ("frozen_offline", "forecaster_network", "forecaster")
# statsforecast's models, from their own run (accuracy_statsforecast.json), and their names in the tables
STATSFORECAST = {"autoets": "AutoETS", "autoarima": "AutoARIMA", "autotheta": "AutoTheta", "mstl": "MSTL"}


# --- reading and formatting ---------------------------------------------------------------------


def results(name: str):
    """The parsed JSON of benchmarks/results/<name>."""
    return json.loads((RESULTS / name).read_text())


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, one line per row, no trailing newline."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def number(value, digits: int = 3) -> str:
    """A figure with `digits` decimals and thousands separators; '-' where the JSON has none."""
    return "-" if value is None else f"{value:,.{digits}f}"


def count(value) -> str:
    """A whole number with thousands separators."""
    return f"{round(value):,}"


def rate(value) -> str:
    """A rate as people read it: 1.35 M, 733 k, 8,730."""
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e5:
        return f"{value / 1e3:.0f} k"
    return count(value)


def times(value) -> str:
    """A ratio such as 92x, 2.5x or 1.15x."""
    return f"{value:.0f}x" if value >= 10 else f"{value:.2f}x" if value < 2 else f"{value:.1f}x"


def share(value) -> str:
    """A fraction as a whole percentage."""
    return f"{100 * value:.0f}%"


def mib(n_bytes, digits: int = 0) -> str:
    """Bytes in MiB."""
    return f"{n_bytes / 2**20:,.{digits}f} MiB"


# --- accuracy: benchmarks/results/accuracy.json -------------------------------------------------


def accuracy_rows(dataset: str) -> dict[tuple[str, str], dict]:
    """accuracy.json's rows of one dataset, by (method, horizon as text)."""
    return {(r["method"], str(r["horizon"])): r for r in results("accuracy.json") if r["dataset"] == dataset}


def forecaster_rows(dataset: str) -> dict[tuple[str, str], dict]:
    """The forecaster's run of one dataset (accuracy.json, or accuracy_published.json for the published split)."""
    if dataset.endswith("_published"):
        found = results("accuracy_published.json")
        return {(r["method"], str(r["horizon"])): r for r in found if r["dataset"] == dataset}
    return accuracy_rows(dataset)


def horizons(rows: dict, method: str = "forecaster") -> list[str]:
    """The horizons a dataset is scored at, integers in order and the averaged range ("1-48") last."""
    found = {h for m, h in rows if m == method}
    return sorted((h for h in found if h.isdigit()), key=int) + sorted(h for h in found if not h.isdigit())


def statsforecast_rows(dataset: str) -> dict[tuple[str, str], dict]:
    """accuracy_statsforecast.json's rows of one dataset, by (method, horizon as text)."""
    found = results("accuracy_statsforecast.json")
    return {(r["method"], str(r["horizon"])): r for r in found if r["dataset"] == dataset}


def statsforecast_header(rows: dict) -> list[str]:
    """The statsforecast columns' names, each with its stride where it scores fewer origins than every one."""
    strides = {m: r["stride"] for (m, _), r in rows.items()}
    return [name + (f", stride {strides[m]}" if strides.get(m, 1) > 1 else "") for m, name in STATSFORECAST.items()]


def cells(rows: dict, methods, horizon: str, metrics: tuple[str, ...], digits: int = 3) -> list[str]:
    """Each method's metrics at `horizon`, joined by ' / '; '-' where the rows have none."""
    return [
        " / ".join(number(rows[m, horizon][k], digits) for k in metrics) if (m, horizon) in rows else "-"
        for m in methods
    ]


def method_table(dataset: str, metrics: tuple[str, ...], digits: int = 3, keep: tuple[str, ...] | None = None) -> str:
    """Horizons down, methods across (the baselines, statsforecast's models, the forecaster's); each cell the metrics
    joined by ' / '."""
    rows, theirs = accuracy_rows(dataset), statsforecast_rows(dataset)
    body = [
        [h]
        + cells(rows, BASELINES, h, metrics, digits)
        + cells(theirs, STATSFORECAST, h, metrics, digits)
        + cells(rows, NETWORK_METHODS, h, metrics, digits)
        for h in horizons(rows)
        if keep is None or h in keep
    ]
    return table(["horizon", *BASELINES, *statsforecast_header(theirs), *NETWORK_METHODS], body)


def accuracy_etth1() -> str:
    return method_table("etth1", ("mse", "mae"))


def accuracy_etth2() -> str:
    return method_table("etth2", ("mse", "mae"))


def accuracy_taylor() -> str:
    return method_table("taylor", ("mape",), keep=("1", "2", "6", "12", "24", "36", "48", "1-48"))


def accuracy_greensboro() -> str:
    return method_table("greensboro_temp", ("mae",), keep=("1", "2", "3", "6", "12", "18", "24", "1-24"))


def accuracy_msft() -> str:
    return method_table("msft", ("mase", "relative_mae", "dm_pvalue"))


# The best published online method on ETTh2's published split, cumulative MSE in z-units, as
# ../shared/data/ett/README.md quotes them (DSOF, ICLR 2025; Proceed, KDD 2025, Table 3).
PUBLISHED_ONLINE_ETTH2 = {"24": ("DSOF", 1.694), "48": ("DSOF", 2.988), "96": ("Proceed", 5.555)}
PUBLISHED_BASELINES = ("persistence", "seasonal_naive", "ets", "snarimax")


def published_table(dataset: str) -> str:
    """ETT on the published online split (accuracy_published.json), MSE / MAE, with the best published method."""
    rows = forecaster_rows(dataset)
    theirs, metrics = statsforecast_rows(dataset), ("mse", "mae")
    published = dataset == "etth2_published"
    body = []
    for h in horizons(rows):
        row = [h] + cells(rows, PUBLISHED_BASELINES, h, metrics) + cells(theirs, STATSFORECAST, h, metrics)
        row += cells(rows, NETWORK_METHODS, h, metrics)
        if published:
            name, mse = PUBLISHED_ONLINE_ETTH2[h]
            row.append(f"{number(mse)} ({name})")
        body.append(row)
    header = ["horizon", *PUBLISHED_BASELINES, *statsforecast_header(theirs), *NETWORK_METHODS]
    return table(header + (["best published online, MSE"] if published else []), body)


def accuracy_etth1_published() -> str:
    return published_table("etth1_published")


def accuracy_etth2_published() -> str:
    return published_table("etth2_published")


# --- GIFT-Eval's ETT windows: benchmarks/results/gift_ett.json ------------------------------------


def gift_label(row: dict) -> str:
    """A gift_ett.json row's name in the table: published models as GIFT-Eval names them, computed rows with
    their data."""
    if row["source"] == "published":
        return row["method"]
    data = "ETTh values" if row["data"].startswith("ETTh") else "ETTm hourly sums"
    names = {"seasonal_naive": "Seasonal naive", "naive": "Naive", "forecaster": "**forecaster**"}
    return f"{names[row['method']]} (computed here, on {data})"


def geometric_mean(values: list[float]) -> float:
    product = 1.0
    for value in values:
        product *= value
    return product ** (1 / len(values))


def accuracy_gift_ett() -> str:
    """Every model's MASE / CRPS per configuration, best first by the geometric mean of its MASE over the seasonal
    naive's of the same data (GIFT-Eval's leaderboard normalisation), over the configurations the forecaster was
    scored on."""
    rows = results("gift_ett.json")
    configs = list(dict.fromkeys(r["config"] for r in rows if r["method"] == "forecaster"))
    cells: dict[str, dict[str, dict]] = {}  # label -> config -> row
    for r in rows:
        cells.setdefault(gift_label(r), {})[r["config"]] = r
    ours = next(label for label in cells if label.startswith("Seasonal naive (computed"))

    def relative(label: str, metric: str) -> float:
        """Over the seasonal naive of the same data: published rows over the published one, computed over ours."""
        reference = cells[ours if cells[label][configs[0]]["source"] == "computed" else "Seasonal naive"]
        return geometric_mean([cells[label][c][metric] / reference[c][metric] for c in configs])

    complete = [label for label in cells if all(c in cells[label] for c in configs)]
    labels = sorted(complete, key=lambda label: relative(label, "mase"))
    body = [
        [label]
        + [f"{number(cells[label][c]['mase'])} / {number(cells[label][c]['crps'])}" for c in configs]
        + [number(relative(label, "mase")), number(relative(label, "crps"))]
        for label in labels
    ]
    return table(["model"] + configs + ["MASE ÷ seasonal naive", "CRPS ÷ seasonal naive"], body)


def accuracy_gift_ett_check() -> str:
    """The naive rows computed here against GIFT-Eval's published ones."""
    rows = results("gift_ett.json")
    published = {(r["method"], r["config"]): r for r in rows if r["source"] == "published"}
    names = {"seasonal_naive": "Seasonal naive", "naive": "Naive"}
    body = []
    for r in rows:
        if r["source"] != "computed" or r["method"] not in names:
            continue
        theirs = published[names[r["method"]], r["config"]]
        gaps = [f"{100 * (r[m] / theirs[m] - 1):+.1f}%" for m in ("mase", "crps")]
        body.append(
            [r["config"], names[r["method"]], r["data"], f"{number(r['mase'])} / {number(r['crps'])}"]
            + [f"{number(theirs['mase'])} / {number(theirs['crps'])}", " / ".join(gaps)]
        )
    return table(["configuration", "model", "computed on", "computed", "published", "gap"], body)


# --- statsforecast's models: benchmarks/results/accuracy_statsforecast.json --------------------

STATSFORECAST_DATASETS = ("etth1", "etth2", "etth1_published", "etth2_published", "taylor", "greensboro_temp", "msft")


def accuracy_statsforecast() -> str:
    """How statsforecast's models ran on each dataset, and the median CPU seconds of a channel's fit and how many."""
    body = []
    for dataset in STATSFORECAST_DATASETS:
        rows = statsforecast_rows(dataset)
        each = {m: r for (m, _), r in rows.items()}  # the fields shown are the same at every horizon
        if "autoets" not in each:
            continue
        usual = each["autoets"]["refit_every"]
        fits = [
            "-"
            if m not in each
            else f"{number(each[m]['fit_seconds'], 2)} s × {count(each[m]['fits'])}"
            + (f" (every {count(each[m]['refit_every'])})" if each[m]["refit_every"] != usual else "")
            for m in STATSFORECAST
        ]
        origins = max(r["origins"] for (m, _), r in rows.items() if m == "autoets")
        common = [str(each["autoets"]["stride"]), count(origins), count(each["autoets"]["window"]), count(usual)]
        body.append([dataset, *common, *fits])
    header = ["dataset", "stride", "origins", "window (rows)", "refit every (rows)", *STATSFORECAST.values()]
    return table(header, body)


# Where statsmodels' ETS and statsforecast's AutoETS are compared, from the same run at the same origins.
ETS_ROWS = (
    ("etth1", "24", "mse"),
    ("etth1", "96", "mse"),
    ("etth2", "24", "mse"),
    ("etth2", "96", "mse"),
    ("etth1_published", "24", "mse"),
    ("etth1_published", "96", "mse"),
    ("etth2_published", "24", "mse"),
    ("etth2_published", "96", "mse"),
    ("taylor", "1", "mape"),
    ("taylor", "1-48", "mape"),
    ("greensboro_temp", "1", "mae"),
    ("greensboro_temp", "1-24", "mae"),
    ("msft", "1", "mae"),
    ("msft", "5", "mae"),
)


def forms(row: dict) -> str:
    """The two forms a method's fits chose most often, with their share of the fits."""
    top = sorted(row["selected"].items(), key=lambda pair: -pair[1])[:2]
    return ", ".join(f"{form} {share(n / row['fits'])}" for form, n in top)


def accuracy_ets_autoets() -> str:
    """statsmodels' ETS against statsforecast's AutoETS at the same origins, with the forms AutoETS chose."""
    body = []
    for dataset, horizon, metric in ETS_ROWS:
        rows = statsforecast_rows(dataset)
        if ("autoets", horizon) not in rows:
            continue
        ets, auto = rows["ets", horizon][metric], rows["autoets", horizon][metric]
        body.append(
            [dataset, horizon, metric]
            + [number(rows[m, horizon][metric]) for m in ("persistence", "ets", "autoets")]
            + [f"{100 * (auto / ets - 1):+.1f}%", forms(rows["autoets", horizon])]
        )
    header = ["dataset", "horizon", "metric", "persistence", "ets", "AutoETS", "AutoETS against ets"]
    return table(header + ["AutoETS's forms, share of its fits"], body)


# The target: each shipped dataset's forecaster at or below statsforecast's best model, on the mean over
# horizons (ETT's scores at horizon H are means over steps 1..H; taylor and greensboro_temp have their 1-H rows).
STATSFORECAST_TARGET = (
    ("etth1", ("24", "48", "96"), "mse"),
    ("etth2", ("24", "48", "96"), "mse"),
    ("etth1_published", ("24", "48", "96"), "mse"),
    ("etth2_published", ("24", "48", "96"), "mse"),
    ("taylor", ("1-48",), "mape"),
    ("greensboro_temp", ("1-24",), "mae"),
    ("msft", ("1", "5"), "mae"),
)


def accuracy_statsforecast_target() -> str:
    """The forecaster against statsforecast's best model at each horizon, each also over persistence at its own
    origins: the forecaster's every origin, the models' every `stride`-th."""
    body = []
    for dataset, hs, metric in STATSFORECAST_TARGET:
        ours, theirs = forecaster_rows(dataset), statsforecast_rows(dataset)
        for h in hs:
            if ("forecaster", h) not in ours or not any((m, h) in theirs for m in STATSFORECAST):
                continue
            best = min((m for m in STATSFORECAST if (m, h) in theirs), key=lambda m: theirs[m, h][metric])
            mine, their = ours["forecaster", h][metric], theirs[best, h][metric]
            mine_rel = mine / ours["persistence", h][metric]
            their_rel = their / theirs["persistence", h][metric]
            body.append(
                [dataset, h, metric, number(mine), f"{STATSFORECAST[best]} {number(their)}"]
                + [number(mine_rel), number(their_rel), "yes" if mine_rel <= their_rel else "**no**"]
            )
    header = ["dataset", "horizon", "metric", "forecaster", "statsforecast's best", "forecaster / persistence"]
    return table(header + ["best / persistence, its origins", "at or below"], body)


# The one figure per dataset that the summaries quote: (dataset, horizon, metric, how it reads).
HEADLINES = (
    ("etth1", "24", "mse", "ETTh1, MSE at horizon 24 (z-units)"),
    ("etth2", "24", "mse", "ETTh2, MSE at horizon 24 (z-units)"),
    ("taylor", "1-48", "mape", "taylor, MAPE % over steps 1-48"),
    ("greensboro_temp", "1-24", "mae", "greensboro_temp, MAE °C over steps 1-24"),
    ("msft", "1", "relative_mae", "msft, MAE relative to the random walk, step 1"),
)


def best_baseline(rows: dict, horizon: str, metric: str) -> tuple[str, float]:
    """The baseline other than persistence with the lowest `metric` at `horizon`."""
    return min(((m, rows[m, horizon][metric]) for m in BASELINES if m != "persistence"), key=lambda pair: pair[1])


def coverage_range(dataset: str | None = None) -> tuple[float, float, int]:
    """Lowest and highest 80%-interval coverage of the forecaster over its scored rows, and how many rows."""
    found = [
        r["coverage80"]
        for r in results("accuracy.json")
        if r["method"] == "forecaster" and (dataset is None or r["dataset"] == dataset)
    ]
    return min(found), max(found), len(found)


def readme_results() -> str:
    """The README's results at a glance: one accuracy figure per dataset, coverage, and speed."""
    body = []
    for dataset, horizon, metric, label in HEADLINES:
        rows = accuracy_rows(dataset)
        name, best = best_baseline(rows, horizon, metric)
        body.append(
            [
                label,
                number(rows["forecaster", horizon][metric]),
                f"persistence {number(rows['persistence', horizon][metric])}; best other baseline, {name}: "
                f"{number(best)}",
            ]
        )
    published = {
        (r["method"], r["horizon"]): r["mse"]
        for r in results("accuracy_published.json")
        if r["dataset"] == "etth2_published"
    }
    name, best = PUBLISHED_ONLINE_ETTH2["24"]
    body.append(
        [
            "ETTh2, published online split, MSE at horizon 24 (z-units)",
            number(published["forecaster", 24]),
            f"persistence {number(published['persistence', 24])}; best published online method, {name}: {number(best)}",
        ]
    )
    low, high, n = coverage_range()
    body.append(
        [
            f"80% intervals: share of actuals inside, over all {n} scored rows",
            f"{number(low)}-{number(high)}",
            "nominal 0.800",
        ]
    )
    speed = results("throughput.json")
    engine = next(r for r in speed["engine"] if r["cell"] == "gru" and r["n_series"] == 10_000 and r["device"] == "cpu")
    body.append(
        [
            f"engine, GRU 2 x 64, one record of each of 10,000 series, {speed['machine']['cores']} CPU cores",
            f"{rate(engine['batched_steps_per_s'])} series-steps/s",
            f"{times(engine['speedup'])} the model called once per record",
        ]
    )
    daemon = speed["daemon_rows"][0]
    body.append(
        [
            f"daemon end to end, {daemon['client']}, {speed['machine']['cores']} CPU cores",
            f"{count(daemon['records_per_s'])} records/s",
            f"{share(daemon['fraction_of_ceiling'])} of a bare {daemon['ceiling']} loop",
        ]
    )
    return table(["what", "forecaster", "for comparison"], body)


def accuracy_coverage() -> str:
    """The forecaster's 80% interval coverage per dataset: its range over the scored rows and the averaged row."""
    body = []
    for dataset in ("etth1", "etth2", "taylor", "greensboro_temp", "msft"):
        rows = accuracy_rows(dataset)
        low, high, n = coverage_range(dataset)
        averaged = [h for h in horizons(rows) if not h.isdigit()]
        body.append(
            [
                dataset,
                str(n),
                number(low),
                number(high),
                f"{averaged[0]}: {number(rows['forecaster', averaged[0]]['coverage80'])}" if averaged else "-",
            ]
        )
    return table(["dataset", "rows scored", "lowest", "highest", "over all steps"], body)


# Rows of the ablation table: (dataset, horizon, metric, decimals).
ABLATION_ROWS = (
    ("etth1", "24", "mse", 3),
    ("etth1", "48", "mse", 3),
    ("etth1", "96", "mse", 3),
    ("etth2", "24", "mse", 3),
    ("etth2", "48", "mse", 3),
    ("etth2", "96", "mse", 3),
    ("taylor", "1-48", "mape", 3),
    ("greensboro_temp", "1-24", "mae", 3),
    ("msft", "1", "mae", 4),
    ("msft", "5", "mae", 4),
)
VARIANTS = ("frozen_offline", "forecaster_no_resync", "forecaster_lstm")


def accuracy_ablations() -> str:
    """The forecaster against its variants, each with its change relative to the forecaster."""
    body = []
    for dataset, horizon, metric, digits in ABLATION_ROWS:
        rows = accuracy_rows(dataset)
        base = rows["forecaster", horizon][metric]
        cells = [
            f"{number(rows[v, horizon][metric], digits)} ({100 * (rows[v, horizon][metric] / base - 1):+.1f}%)"
            for v in VARIANTS
        ]
        body.append([dataset, horizon, metric, number(base, digits)] + cells)
    return table(["dataset", "horizon", "metric", "forecaster"] + list(VARIANTS), body)


def accuracy_pipelines() -> str:
    """The shipped pipelines through the daemon: benchmarks/results/daemon_replay.json."""

    def mae(value):
        return number(value, 1 if value >= 100 else 3)

    body = [
        [
            r["pipeline"],
            r["dataset"],
            count(r["records"]),
            count(r["forecasts_read_back"]),
            number(r["records_per_s"], 0),
            mae(r["held_out_model_mae"]),
            mae(r["held_out_naive_mae"]),
        ]
        for r in results("daemon_replay.json")["rows"]
    ]
    return table(
        [
            "pipeline",
            "dataset",
            "records",
            "forecasts read back",
            "records/s",
            "one-step MAE, second half: model",
            "naive",
        ],
        body,
    )


# --- performance: throughput.json and the other benchmark files ---------------------------------


def performance_engine() -> str:
    """The batched engine against the model called once per record, CPU rows of throughput.json."""
    speed = results("throughput.json")
    body = [
        [
            r["cell"],
            count(r["n_series"]),
            rate(r["batched_steps_per_s"]),
            number(r["step_ms"], 1),
            rate(r["naive_steps_per_s"]),
            times(r["speedup"]),
            rate(r["naive_torch_rnn_steps_per_s"]),
            times(r["speedup_vs_torch_rnn"]),
        ]
        for r in speed["engine"]
        if r["device"] == "cpu"
    ]
    return table(
        [
            "cell (2 x 64)",
            "series",
            "series-steps/s",
            "one full step, ms",
            "model once per record, steps/s",
            "gain",
            "nn.GRU / nn.LSTM at batch 1, steps/s",
            "gain",
        ],
        body,
    )


def performance_engine_stages() -> str:
    """Where the GRU engine's step goes on the CPU, stage by stage (throughput.json's stages_ms: the median of three
    more steps, each stage's methods timed on their own), and the step at the most series against the same
    series-steps taken 10,000 at a time (engine_scaling, from the same run)."""
    speed = results("throughput.json")
    rows = [r for r in speed["engine"] if r["cell"] == "gru" and r["device"] == "cpu"]
    stages = [s for s in rows[0]["stages_ms"] if s not in ("combination", "step")]  # the rows serve no combination
    body = [[count(r["n_series"]), *(number(r["stages_ms"][s], 1) for s in stages)] for r in rows]
    scaling = speed.get("engine_scaling")
    lines = [table(["series", *stages], body)]
    if scaling:
        lines.append(
            f"\nThe step at {count(scaling['n_series'])} series, {number(scaling['step_ms'], 0)} ms, against 100 "
            f"steps of 10,000 series in the same run, {number(scaling['steps_of_10000_ms'], 0)} ms: "
            f"{number(scaling['ratio'], 2)}x."
        )
    return "\n".join(lines)


def output_name(row: dict) -> str:
    n = row["forecasts_per_message"]
    return "one message per forecast" if n == 1 else f"{n} forecasts per message"


def performance_daemon() -> str:
    """The daemon from a loaded topic to acknowledged forecasts, against bare client loops."""
    body = [
        [
            r["client"],
            output_name(r),
            r["crc"],
            count(r["records_per_s"]),
            count(r["ceiling_records_per_s"]),
            share(r["fraction_of_ceiling"]),
            share(r["fraction_of_kafka_python_ceiling"]),
        ]
        for r in results("throughput.json")["daemon_rows"]
    ]
    return table(
        [
            "client",
            "output",
            "CRC-32C",
            "records/s",
            "its bare loop, records/s",
            "of its bare loop",
            "of the bare kafka-python loop",
        ],
        body,
    )


def performance_latency() -> str:
    """Latency at a fraction of the default daemon's measured rate: with several runs, their median and range."""
    body = [
        [
            share(r["load_fraction"]),
            count(r["offered_records_per_s"]),
            count(r["records"]),
            ranged(r, "p50_ms"),
            ranged(r, "p99_ms"),
            number(r["max_ms"], 0),
        ]
        for r in results("throughput.json")["latency"]
    ]
    return table(["load", "offered records/s", "records", "p50 ms", "p99 ms", "max ms"], body)


def ranged(row: dict, figure: str) -> str:
    """A figure with the range of its runs beside it, where the row is the median of several."""
    if row.get("runs", 1) < 2:
        return number(row[figure], 0)
    low, high = number(row[f"{figure}_min"], 0), number(row[f"{figure}_max"], 0)
    return f"{number(row[figure], 0)} ({low} to {high}, {row['runs']} runs)"


def performance_memory() -> str:
    """Memory per series, from throughput.json's memory section."""
    memory = results("throughput.json")["memory"]
    body = [
        [
            f"recurrent state of one series ({memory['cell']} 2 x 64, float32)",
            f"{count(memory['raw_state_bytes_per_series'])} B",
        ],
        [
            "everything the engine keeps per series, without a retraining buffer",
            f"{count(memory['bytes_per_series'])} B",
        ],
        [
            f"resident memory of the process holding {count(memory['n_series'])} series",
            mib(memory["rss_bytes_at_1m_series"]),
        ],
        ["its peak while they arrived", mib(memory["peak_rss_bytes"])],
    ]
    return table(["what", "bytes"], body)


def performance_cardinality() -> str:
    """A million distinct keys through one pipeline, by spill and as shipped: benchmarks/results/cardinality.json."""
    body = []
    for r in results("cardinality.json")["rows"]:
        samples = r["samples"]
        last = samples[-1]
        half = max((s for s in samples if s["keys_seen"] <= r["keys"] // 2), key=lambda s: s["keys_seen"])
        budget = r["spill_max_bytes"]
        spill = f"`{r['spill']}`" + (f", {mib(budget)}" if budget else ", no budget" if r["spill"] == "memory" else "")
        body.append(
            [
                r["configuration"],
                count(r["keys"]),
                count(r["max_series"]),
                spill,
                count(last["spilled_series"]),
                count(last["dropped_series"]),
                f"+{mib(last['rss_bytes'] - r['baseline_rss_bytes'])}",
                f"+{mib(last['rss_bytes'] - half['rss_bytes'])}",
                mib(last["device_state_bytes"], 1),
                count(r["keys_per_s"]) if r["stepped"] else "-",
            ]
        )
    return table(
        [
            "configuration",
            "keys",
            "max_series",
            "spill",
            "spilled series",
            "dropped from the spill",
            "resident memory growth",
            "of which over the last half of the keys",
            "device state",
            "keys/s",
        ],
        body,
    )


_CHECKPOINT_WRITES = {
    "before": "before: in the loop, pickled in memory",
    "thread": "snapshot in the loop, written by a thread (a CUDA engine)",
    "fork": "forked child, 4 KiB pages",
    "fork, huge pages": "forked child, huge pages (the default)",
}


def performance_checkpoint() -> str:
    """A checkpoint's pause, write, size and memory by series count: benchmarks/results/checkpoint.json."""
    found = results("checkpoint.json")
    body = [
        [
            count(r["series"]),
            _CHECKPOINT_WRITES[r["mode"]],
            f"{number(1000 * r['pause_s'], 0)} ms",
            f"{number(r['total_s'], 1)} s",
            mib(r["bytes"]),
            mib(r["peak_extra_bytes"]),
        ]
        for r in found["rows"]
    ]
    for size in found["sizes"]:
        if "skipped" in size:
            body.append([count(size["series"]), f"not run here: {size['skipped']}", "-", "-", "-", "-"])
    return table(["series", "write", "loop pause", "until durable", "file", "peak extra memory"], body)


def performance_retraining() -> str:
    """Retraining's cost while serving: the retrain section of throughput.json."""
    r = results("throughput.json")["retrain"]
    body = [
        [
            f"TBPTT windows trained per second (window {r['window']} in chunks of {r['chunk']}, batch "
            f"{r['batch_size']})",
            count(r["tbptt_windows_per_s"]),
        ],
        [
            f"engine steps/s at {count(r['n_series'])} series while a round trains, over alone",
            f"{number(r['inference_ratio_while_training'], 2)} ({rate(r['steps_per_s_while_training'])} against "
            f"{rate(r['steps_per_s_alone'])})",
        ],
        [
            f"promotion pause: install and re-sync of {count(r['n_series'])} states from {r['resync_steps']} steps",
            f"{number(r['resync_seconds'], 2)} s",
        ],
    ]
    return table(["what", f"{r['device'].upper()}, {r['torch_threads']} threads"], body)


def performance_combination() -> str:
    """What the online combination adds to the engine's step: the combination section of throughput.json."""
    c = results("throughput.json")["combination"]
    body = [
        [
            count(c["n_series"]),
            c["cell"].upper(),
            number(c["step_ms_network"], 1),
            number(c["step_ms_with_combination"], 1),
            times(c["ratio"]),
        ]
    ]
    return table(["series", "cell", "step ms, network alone", "with the combination", "ratio"], body)


def performance_intervals() -> str:
    """What quantile tracking costs the engine's step: benchmarks/results/intervals.json."""
    body = [
        [
            count(r["n_series"]),
            count(r["records_per_batch"]),
            str(r["horizon"]),
            number(r["step_ms"]["one-step only"], 2),
            number(r["step_ms"]["tracking"], 2),
            times(r["tracking_over_one_step"]),
            count(r["interval_bytes_per_series"]["tracking"]),
        ]
        for r in results("intervals.json")["rows"]
    ]
    return table(
        [
            "series",
            "records per batch",
            "horizon",
            "step ms, one-step interval only",
            "with tracking",
            "ratio",
            "interval bytes per series, tracking",
        ],
        body,
    )


def performance_gpu() -> str:
    """CUDA against the CPU of the same machine: the files of benchmarks/results/h100/."""
    gpu, cpu_daemon, cpu_retrain = (
        results(f"h100/{n}") for n in ("throughput.json", "throughput_daemon_cpu.json", "retrain.json")
    )

    def engine(cell: str, n: int, device: str) -> dict:
        return next(r for r in gpu["engine"] if (r["cell"], r["n_series"], r["device"]) == (cell, n, device))

    def daemon(source: dict, client: str, per_message: int) -> dict:
        return next(
            r
            for r in source["daemon_rows"]
            if (r["client"], r["forecasts_per_message"], r["crc"]) == (client, per_message, "C (crc32c)")
        )

    def row(label, on_cuda, on_cpu, text, ratio=True):
        return [label, text(on_cuda), text(on_cpu), times(on_cuda / on_cpu) if ratio else ""]

    body = []
    for cell, n in (("gru", 10_000), ("gru", 100_000), ("lstm", 100_000)):
        body.append(
            row(
                f"engine, {cell.upper()} 2 x 64, {count(n)} series, series-steps/s",
                engine(cell, n, "cuda")["batched_steps_per_s"],
                engine(cell, n, "cpu")["batched_steps_per_s"],
                rate,
            )
        )
    cuda_m, cpu_m = engine("gru", 1_000_000, "cuda")["step_ms"], engine("gru", 1_000_000, "cpu")["step_ms"]
    body.append(
        [
            "engine, GRU 2 x 64, 1,000,000 series: one full step",
            f"{cuda_m / 1e3:.2f} s",
            f"{cpu_m / 1e3:.2f} s",
            times(cpu_m / cuda_m),
        ]
    )
    for client, per_message in (("kafka-python", 1), ("kafka-python", 100), ("confluent-kafka", 100)):
        body.append(
            row(
                f"daemon, {client}, {output_name({'forecasts_per_message': per_message})}, records/s",
                daemon(gpu, client, per_message)["records_per_s"],
                daemon(cpu_daemon, client, per_message)["records_per_s"],
                count,
            )
        )
    body.append(
        row(
            "bare kafka-python loop, records/s",
            gpu["daemon"]["ceiling_records_per_s"],
            cpu_daemon["daemon"]["ceiling_records_per_s"],
            count,
            ratio=False,
        )
    )
    body.append(
        row(
            "latency at 50% of the default daemon's load, p99 ms",
            gpu["latency"][0]["p99_ms"],
            cpu_daemon["latency"][0]["p99_ms"],
            lambda v: number(v, 0),
            ratio=False,
        )
    )
    r_gpu, r_cpu = gpu["retrain"], cpu_retrain
    body.append(
        row(
            "retraining: TBPTT windows/s (bf16 autocast on CUDA)",
            r_gpu["tbptt_windows_per_s"],
            r_cpu["tbptt_windows_per_s"],
            count,
        )
    )
    body.append(
        row(
            "retraining: engine steps/s while a round trains, over alone",
            r_gpu["inference_ratio_while_training"],
            r_cpu["inference_ratio_while_training"],
            lambda v: number(v, 2),
            ratio=False,
        )
    )
    body.append(
        [
            f"promotion pause: install and re-sync of {count(r_gpu['n_series'])} states",
            f"{number(r_gpu['resync_seconds'], 2)} s",
            f"{number(r_cpu['resync_seconds'], 2)} s",
            times(r_cpu["resync_seconds"] / r_gpu["resync_seconds"]),
        ]
    )
    threads = gpu["machine"]["torch_threads"]
    return table(["what", "CUDA", f"CPU, {threads} threads, same machine", "CUDA's speed-up"], body)


# --- operations: benchmarks/results/chaos.json --------------------------------------------------


def generalisation_summary() -> str:
    """The held-out data sets: MASE of each method at step 1, at the last step and over all steps."""
    rows = results("generalisation.json")
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    found = {(r["dataset"], r["method"], str(r["horizon"])): r["mase"] for r in rows}
    covered = {(r["dataset"], str(r["horizon"])): r["coverage80"] for r in rows if r["method"] == "forecaster"}
    body = []
    for dataset in datasets:
        methods = list(dict.fromkeys(r["method"] for r in rows if r["dataset"] == dataset))
        last = str(max(r["horizon"] for r in rows if r["dataset"] == dataset and r["horizon"] != "mean"))
        seasonal = [m for m in methods if m.startswith("seasonal")]
        for step in ("1", last, "mean"):
            best = min(seasonal, key=lambda m: found[dataset, m, step])
            cells = [number(found.get((dataset, m, step))) for m in ("persistence",)]
            cells += [f"{number(found[dataset, best, step])} ({best})"]
            cells += [number(found.get((dataset, m, step))) for m in ("autoets", "mstl", "network", "forecaster")]
            cells += [number(covered.get((dataset, step)), 2)]
            body.append([dataset, step if step != "mean" else f"1-{last}"] + cells)
    header = ["dataset", "step", "persistence", "best seasonal", "AutoETS", "MSTL", "network alone", "forecaster"]
    header += ["coverage of its 80% interval"]
    return table(header, body)


def generalisation_calendar() -> str:
    """The held-out monthly and quarterly sets: MASE of each method at step 1, at the last step and over all steps;
    the seasonal naive and the seasonal naive at today's level a year back, each in its own column."""
    rows = results("generalisation_calendar.json")
    found = {(r["dataset"], r["method"], str(r["horizon"])): r for r in rows}
    methods = ("persistence", "seasonal_naive", "seasonal_level", "autoets", "mstl", "network", "forecaster")
    body = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        named = {
            m.rsplit("_", 1)[0] if m.startswith("seasonal") else m: m
            for m in dict.fromkeys(r["method"] for r in rows if r["dataset"] == dataset)
        }
        last = str(max(r["horizon"] for r in rows if r["dataset"] == dataset and r["horizon"] != "mean"))
        for step in ("1", last, "mean"):
            cells = [number(found[dataset, named[m], step]["mase"]) if m in named else "-" for m in methods]
            coverage = found[dataset, "forecaster", step]["coverage80"]
            body.append([dataset, step if step != "mean" else f"1-{last}", *cells, number(coverage, 2)])
    header = ["dataset", "step", "persistence", "seasonal naive", "seasonal naive at today's level", "AutoETS"]
    header += ["MSTL", "network alone", "forecaster", "coverage of its 80% interval"]
    return table(header, body)


def cold_start_blocks() -> str:
    """One-step MAE of the forecaster over persistence's, by records since a series' first."""
    rows = results("cold_start.json")
    spans = list(dict.fromkeys((r["records_from"], r["records_to"]) for r in rows))
    found = {(r["dataset"], r["records_from"]): r["ratio"] for r in rows}
    body = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        ratios = [found.get((dataset, begin)) for begin, _ in spans]
        # the first block from which every block is below persistence
        since = next((spans[i][0] for i in range(len(spans)) if all(r < 1 for r in ratios[i:] if r is not None)), None)
        weights = [r["network_weight"] for r in rows if r["dataset"] == dataset]
        body.append(
            [dataset]
            + [number(r) for r in ratios]
            + ["never" if since is None else f"{since:,}", f"{number(weights[0], 2)} to {number(weights[-1], 2)}"]
        )
    header = ["dataset"] + [f"records {a:,}-{b:,}" for a, b in spans]
    header += ["below persistence from record", "network's weight, first block to last"]
    return table(header, body)


def warm_start_histories() -> str:
    """A new series' first forecasts from a state stepped over its history, or encoded from it in one pass."""
    body = [
        [
            r["dataset"],
            count(r["history"]),
            count(r["test_series"]),
            number(r["persistence_mae"]),
            number(r["zero_mae"]),
            number(r["stepped_mae"]),
            number(r["encoder_mae"]),
            number(r["encoder_over_stepped"]),
            str(r["width"]),
            f"{number(r['stepped_ms_per_series_batched'], 4)} / {number(r['encoder_ms_per_series_batched'], 4)}",
            f"{number(r['stepped_ms_one_series'], 2)} / {number(r['encoder_ms_one_series'], 2)}",
        ]
        for r in results("warm_start.json")
    ]
    header = [
        "dataset",
        "history rows",
        "new series (test)",
        "persistence MAE",
        "zero state MAE",
        "stepped MAE (today)",
        "encoder MAE",
        "encoder / stepped",
        "encoder width",
        "ms per series, all at once: stepped / encoder",
        "ms for one series: stepped / encoder",
    ]
    return table(header, body)


def operations_chaos() -> str:
    """Kill -9 recovery on a paced replay."""
    c = results("chaos.json")
    exits = sorted(set(c["clean_stop_exit_codes"]))
    stops = "all exit 0" if exits == [0] else f"exit codes {', '.join(map(str, exits))}"
    return table(
        [
            "records",
            "SIGKILLs",
            "clean stops",
            "lost",
            "duplicates (bound)",
            "largest relative difference from an uninterrupted run",
        ],
        [
            [
                count(c["records"]),
                str(c["kills"]),
                f"{c['terms']}, {stops}",
                count(c["lost"]),
                f"{count(c['duplicates'])} ({count(c['max_duplicates_allowed'])})",
                f"{c['max_rel_diff_vs_shadow']:.1e} ({count(c['forecasts_after_final_restart'])} forecasts after the "
                f"final restart)",
            ]
        ],
    )


# --- scaling out: benchmarks/results/scaleout.json -----------------------------------------------


def scaling_scaleout() -> str:
    """Members coming and going on one pipeline: what was done to them and what it cost."""
    s = results("scaleout.json")
    events = f"{s['kills']} SIGKILLs, {s['terms']} SIGTERMs, {s['stale_owner_episodes']} stale owner"
    rows = [
        ["membership events", f"{events} ({' / '.join(s['events'])})"],
        ["records (series, partitions)", f"{count(s['records'])} ({s['series']}, {s['partitions']})"],
        ["forecasts", count(s["forecasts"])],
        ["lost", count(s["lost"])],
        ["duplicates (bound)", f"{count(s['duplicates'])} ({count(s['max_duplicates_allowed'])})"],
        ["largest relative difference from one uninterrupted member", f"{s['max_rel_diff_vs_shadow']:.1e}"],
        ["clean stops' exit codes", ", ".join(map(str, s["clean_stop_exit_codes"] + s["final_exit_codes"]))],
    ]
    if s.get("throughput"):
        t = s["throughput"]
        rows.append(
            [
                "records/s, 1 member / 2 members (same backlog)",
                f"{count(t['records_per_s_one_member'])} / {count(t['records_per_s_two_members'])} "
                f"({times(t['two_members_over_one'])})",
            ]
        )
    if s.get("handover"):
        h = s["handover"]
        rows.append(
            [
                f"handover pause at {count(h['series_per_partition'])} series per partition (restore alone)",
                f"{number(h['pause_s'], 2)} s ({number(h['restore_s'], 2)} s)",
            ]
        )
    if s.get("checkpoint"):
        c = s["checkpoint"]
        touched = c["seconds_touched"]
        rows.append(
            [
                f"a checkpoint's changelog write, {count(c['series_held'])} series held, "
                f"{' / '.join(count(int(n)) for n in touched)} touched",
                " / ".join(number(v, 2) for v in touched.values()) + " s",
            ]
        )
    return table(["what", "measured"], rows)


# --- smaller networks: benchmarks/results/compress.json ----------------------------------------

COMPRESSION_HOW = {
    "scratch": "from its seed",
    "scratch_longer": "from its seed, twice the steps",
    "distilled": "distilled from 2 x 128",
    "pruned_not_tuned": "2 x 128 pruned, not fine-tuned",
    "pruned": "2 x 128 pruned, fine-tuned",
    "pruned_activation": "2 x 128 pruned by activation, fine-tuned",
    "pruned_distilled": "2 x 128 pruned, fine-tuned with it as teacher",
}


def compression_speed() -> dict[tuple[int, int], dict]:
    """compress.json's dense speed rows by (layers, hidden)."""
    return {(r["layers"], r["hidden"]): r for r in results("compress.json")["speed"] if not r["zeroed"]}


def compression_accuracy(dataset: str) -> str:
    """One dataset's networks on its validation part (the longest horizon label), with the engine's speed of
    their size against the 2 x 128 teacher's."""
    rows = [r for r in results("compress.json")["accuracy"] if r["dataset"] == f"{dataset}_validation"]
    label = rows[-1]["horizon"]
    speed = compression_speed()
    teacher = speed[2, 128]["steps_per_cpu_s"]
    body = [
        [
            f"{r['layers']} x {r['hidden']}",
            COMPRESSION_HOW[r["how"]],
            count(r["parameters"]),
            number(r["mae"]),
            number(r["relative_mae"]),
            share(r["coverage80"]),
            rate(speed[r["layers"], r["hidden"]]["steps_per_cpu_s"]),
            times(speed[r["layers"], r["hidden"]]["steps_per_cpu_s"] / teacher),
        ]
        for r in rows
        if r["horizon"] == label
    ]
    header = ["network", "trained", "parameters", f"MAE {label}", "/ persistence", "coverage80"]
    return table(header + ["series-steps / CPU-s", "speed"], body)


def compression_greensboro() -> str:
    return compression_accuracy("greensboro_temp")


def compression_etth2() -> str:
    return compression_accuracy("etth2")


def compression_unstructured() -> str:
    """The teacher's speed with a share of every weight matrix zeroed, beside the dense one's."""
    speed = [r for r in results("compress.json")["speed"] if (r["layers"], r["hidden"]) == (2, 128)]
    dense = next(r for r in speed if not r["zeroed"])["steps_per_cpu_s"]
    body = [
        [share(r["zeroed"]), rate(r["steps_per_cpu_s"]), times(r["steps_per_cpu_s"] / dense)]
        for r in sorted(speed, key=lambda r: r["zeroed"])
    ]
    return table(["2 x 128, weights zeroed", "series-steps / CPU-s", "speed"], body)


def tuning_search() -> str:
    """Per `forecaster tune --json` run (results/tune_*.json): the trials, the validation MASE of the pipeline's own
    settings (trial 0), of the best trial and of the others, and the settings where the best differs from trial 0."""
    body = []
    for path in sorted(RESULTS.glob("tune_*.json")):
        run = json.loads(path.read_text())
        trials, best = run["trials"], run["best"]
        own = trials[0]
        states = [t["state"] for t in trials]
        others = [f"{number(t['mase'], 4)} (trial {t['number']})" for t in trials[1:] if t["state"] == "complete"]
        changed = [
            f"`{name}` {own['settings'][name]} → {value}"
            for name, value in best["settings"].items()
            if value != own["settings"][name]
        ]
        body.append(
            [
                f"{run['pipeline']} on {run['source']}",
                f"{len(trials)} ({states.count('complete')} complete, {states.count('pruned')} pruned)",
                number(own["mase"], 4),
                f"{number(best['mase'], 4)} (trial {best['trial']})",
                ", ".join(others) or "-",
                ", ".join(changed) or "none: the pipeline's own",
            ]
        )
    header = ["pipeline on data", "trials", "validation MASE, own settings", "best", "the other trials"]
    return table([*header, "best differs in"], body)


def defaults_search(run: dict | None = None) -> str:
    """benchmarks/results/defaults_search.json (or the search `run`): each complete trial, best first, with the
    geometric mean of its validation MASE over the data sets and its change from the defaults' (trial 0), each
    set's MASE, and the settings in which it differs from the defaults; then the best's changes split
    (`ablations`), and the pruned trials in one row."""
    run = results("defaults_search.json") if run is None else run
    names, defaults = run["datasets"], run["defaults"]
    own = next(t for t in run["trials"] if t["trial"] == 0)

    def row(label: str, scored: dict) -> list[str]:
        changed = [f"`{p}` {defaults[p]} → {v}" for p, v in scored["settings"].items() if v != defaults[p]]
        return [
            label,
            f"{number(scored['score'], 4)} ({scored['score'] / own['score'] - 1:+.1%})",
            *(number(scored["mase"][n], 4) for n in names),
            ", ".join(changed) or "-",
        ]

    complete = sorted((t for t in run["trials"] if t["state"] == "complete"), key=lambda t: t["score"])
    body = [row(f"{t['trial']}{' (defaults)' if t['trial'] == 0 else ''}", t) for t in complete]
    body += [row(f"trial {run['best']}'s {part} settings alone", a) for part, a in run.get("ablations", {}).items()]
    pruned = [str(t["trial"]) for t in run["trials"] if t["state"] != "complete"]
    if pruned:
        body.append([f"pruned: {', '.join(pruned)}", "-", *("-" for _ in names), "stopped by the median pruner"])
    header = ["trial", "geometric mean (against the defaults)", *names, "differs from the defaults in"]
    return table(header, body)


# --- attention over recent states: benchmarks/results/attention.json ----------------------------

# (dataset, horizon label, metric) shown: each protocol's headline at its scored horizons
ATTENTION_ROWS = (
    ("taylor", "1", "mape"),
    ("taylor", "1-48", "mape"),
    ("greensboro_temp", "1", "mae"),
    ("greensboro_temp", "1-24", "mae"),
    ("etth2", "24", "mse"),
    ("etth2", "48", "mse"),
    ("etth2", "96", "mse"),
)


def attention_accuracy() -> str:
    """The online forecaster on validation parts without and with attention, each metric's change beside it."""
    run = results("attention.json")
    k = run["k"]
    rows = {(r["dataset"].removesuffix("_validation"), str(r["horizon"]), r["attention"]): r for r in run["accuracy"]}
    body = []
    for dataset, horizon, metric in ATTENTION_ROWS:
        if (dataset, horizon, 0) not in rows:
            continue
        base, attended = rows[dataset, horizon, 0], rows[dataset, horizon, k]
        change = f"{100 * (attended[metric] / base[metric] - 1):+.1f}%"
        coverage = f"{share(base['coverage80'])} / {share(attended['coverage80'])}"
        body.append([dataset, horizon, metric, number(base[metric]), number(attended[metric]), change, coverage])
    header = ["dataset", "horizon", "metric", "without", f"attention {k}", "change", "coverage80 without / with"]
    return table(header, body)


def attention_speed() -> str:
    """The engine's step at 10,000 series by K, with the state each series carries."""
    rows = results("attention.json")["speed"]
    base = next(r for r in rows if r["attention"] == 0)
    body = [
        [
            str(r["attention"]) if r["attention"] else "off",
            f"{r['state_bytes_per_series']:,} B",
            rate(r["steps_per_cpu_s"]),
            times(base["steps_per_cpu_s"] / r["steps_per_cpu_s"]),
        ]
        for r in rows
    ]
    return table(["attention K", "state per series", "series-steps / CPU-s", "cost per step"], body)


# --- the registry and the block writer ----------------------------------------------------------

TABLES = {
    "readme-results": ("README.md", readme_results),
    "accuracy-etth1": ("docs/accuracy.md", accuracy_etth1),
    "accuracy-etth2": ("docs/accuracy.md", accuracy_etth2),
    "accuracy-taylor": ("docs/accuracy.md", accuracy_taylor),
    "accuracy-greensboro": ("docs/accuracy.md", accuracy_greensboro),
    "accuracy-msft": ("docs/accuracy.md", accuracy_msft),
    "accuracy-etth1-published": ("docs/accuracy.md", accuracy_etth1_published),
    "accuracy-etth2-published": ("docs/accuracy.md", accuracy_etth2_published),
    "accuracy-statsforecast": ("docs/accuracy.md", accuracy_statsforecast),
    "accuracy-ets-autoets": ("docs/accuracy.md", accuracy_ets_autoets),
    "accuracy-statsforecast-target": ("docs/accuracy.md", accuracy_statsforecast_target),
    "accuracy-coverage": ("docs/accuracy.md", accuracy_coverage),
    "accuracy-ablations": ("docs/accuracy.md", accuracy_ablations),
    "accuracy-pipelines": ("docs/accuracy.md", accuracy_pipelines),
    "performance-engine": ("docs/performance.md", performance_engine),
    "performance-engine-stages": ("docs/performance.md", performance_engine_stages),
    "performance-daemon": ("docs/performance.md", performance_daemon),
    "performance-latency": ("docs/performance.md", performance_latency),
    "performance-memory": ("docs/performance.md", performance_memory),
    "performance-cardinality": ("docs/performance.md", performance_cardinality),
    "performance-checkpoint": ("docs/performance.md", performance_checkpoint),
    "performance-retraining": ("docs/performance.md", performance_retraining),
    "performance-intervals": ("docs/performance.md", performance_intervals),
    "performance-combination": ("docs/performance.md", performance_combination),
    "performance-gpu": ("docs/performance.md", performance_gpu),
    "operations-chaos": ("docs/operations.md", operations_chaos),
    "scaling-scaleout": ("docs/scaling.md", scaling_scaleout),
    "accuracy-generalisation": ("docs/accuracy.md", generalisation_summary),
    "accuracy-generalisation-calendar": ("docs/accuracy.md", generalisation_calendar),
    "accuracy-cold-start": ("docs/accuracy.md", cold_start_blocks),
    "accuracy-warm-start": ("docs/accuracy.md", warm_start_histories),
    "compression-greensboro": ("docs/compression.md", compression_greensboro),
    "compression-etth2": ("docs/compression.md", compression_etth2),
    "compression-unstructured": ("docs/compression.md", compression_unstructured),
    "accuracy-gift-ett": ("docs/accuracy.md", accuracy_gift_ett),
    "accuracy-gift-ett-check": ("docs/accuracy.md", accuracy_gift_ett_check),
    "tuning-search": ("docs/tuning.md", tuning_search),
    "tuning-defaults": ("docs/tuning.md", defaults_search),
    "accuracy-attention": ("docs/accuracy.md", attention_accuracy),
    "performance-attention": ("docs/performance.md", attention_speed),
}


def block(name: str) -> re.Pattern:
    """The marker pair of table `name` and what lies between them."""
    return re.compile(rf"(<!-- table:{re.escape(name)} -->\n)(.*?)(<!-- /table:{re.escape(name)} -->)", re.S)


def rendered(name: str) -> str:
    """What belongs between the markers of table `name`: the table, set off by blank lines so that
    Markdown does not read it as part of the HTML comments around it."""
    return "\n" + TABLES[name][1]() + "\n\n"


def current(name: str) -> str:
    """What lies between the markers of table `name` in its page now."""
    page, _ = TABLES[name]
    found = block(name).search((ROOT / page).read_text())
    if found is None:
        raise ValueError(f"{page}: expected the markers <!-- table:{name} --> and <!-- /table:{name} -->, found none")
    return found.group(2)


def stale(names=None) -> list[str]:
    """The tables whose block differs from what the JSON renders now."""
    return [name for name in names or TABLES if current(name) != rendered(name)]


def write_docs(names=None) -> list[str]:
    """Replace each named table's block (every table when names is None) with its fresh rendering; return the
    names whose block changed."""
    changed = []
    for name in names or TABLES:
        page, _ = TABLES[name]
        path = ROOT / page
        text = path.read_text()
        current(name)  # raises, naming the page, when the markers are missing
        fresh = rendered(name)
        new = block(name).sub(lambda m, fresh=fresh: m.group(1) + fresh + m.group(3), text, count=1)
        if new != text:
            path.write_text(new)
            changed.append(name)
    return changed


def write_results(out: Path, result) -> None:
    """Write a benchmark's results as JSON to `out`, then the docs' tables drawn from it (see `follow`)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    follow(out)


def follow(out: Path) -> None:
    """Called by each benchmark after writing `out`: when it is one of the results files the docs are
    drawn from, rewrite the tables (a run to a scratch file, as the tests make, leaves the docs alone)."""
    if Path(out).resolve().parent in (RESULTS, RESULTS / "h100"):
        for name in write_docs():
            print(f"rewrote {name} in {TABLES[name][0]}")


def main(argv: list[str]) -> int:
    check = "--check" in argv
    names = [a for a in argv if not a.startswith("--")] or None
    unknown = sorted(set(names or ()) - set(TABLES))
    if unknown:
        print(f"tables.py: unknown table {', '.join(unknown)}; known: {', '.join(TABLES)}", file=sys.stderr)
        return 2
    if check:
        old = stale(names)
        for name in old:
            print(f"stale: {name} in {TABLES[name][0]}; run `python benchmarks/tables.py`")
        return 1 if old else 0
    for name in write_docs(names):
        print(f"rewrote {name} in {TABLES[name][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
