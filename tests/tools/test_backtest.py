"""`forecaster backtest`: the rows it prints, and figures equal to the generalisation harness's on the same data."""

import csv
import dataclasses
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from forecaster import config as config_module
from forecaster.cli import main
from forecaster.errors import ForecasterError
from forecaster.evaluation.panel import Panel
from forecaster.io import datasets
from forecaster.serving.records import Observations
from forecaster.tools.backtest import panel_of

from support import benchmark, make_pipeline, pipeline_yaml

HOURS = 400  # about 17 days of Greensboro's hourly temperature: a few retraining rounds, a few seconds
PIPELINE = pipeline_yaml("weather", "retraining:\n  young_steps: 10\n  steps: 10\n")


def greensboro() -> tuple[np.ndarray, np.ndarray]:
    """The first HOURS hours' times (epoch seconds) and temperatures."""
    rows = datasets.load("greensboro").records[:HOURS]
    times = np.array([datetime.fromisoformat(r["time"]).timestamp() for r in rows])
    return times, np.array([r["drybulb_c"] for r in rows])


@pytest.fixture
def setup(tmp_path):
    """A config with one small pipeline, and the hours as a CSV of date and temperature (one series, UTC)."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "weather.yaml").write_text(PIPELINE)
    (tmp_path / "config.yaml").write_text("pipelines:\n  - pipelines/weather.yaml\n")
    times, temps = greensboro()
    with (tmp_path / "greensboro.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["date", "temperature"])
        for t, y in zip(times, temps):
            writer.writerow([datetime.fromtimestamp(t, UTC).isoformat(), y])
    return tmp_path


def command(setup, *extra: str) -> list[str]:
    """`forecaster backtest` of the small pipeline on the CSV, its columns mapped onto the pipeline's fields."""
    config, data = str(setup / "config.yaml"), str(setup / "greensboro.csv")
    return ["backtest", "-c", config, "--pipeline", "weather", "--file", data, "--map", "time=date", *extra]


def backtest_rows(setup, capsys, *extra: str) -> list[dict]:
    assert main(command(setup, "--map", "temp=temperature", "--json", *extra)) == 0
    return json.loads(capsys.readouterr().out)


def test_json_rows_are_each_method_per_horizon_step_then_the_mean(setup, capsys):
    rows = backtest_rows(setup, capsys)
    assert [r["method"] for r in rows] == ["forecaster"] * 25 + ["persistence"] * 25 + ["seasonal_naive"] * 25
    assert [r["horizon"] for r in rows[:25]] == list(range(1, 25)) + ["mean"]
    assert all(set(r) == {"method", "horizon", "mae", "mase", "coverage80"} for r in rows)
    assert all(0.0 <= r["coverage80"] <= 1.0 for r in rows if r["method"] == "forecaster")
    assert all(r["coverage80"] is None for r in rows if r["method"] != "forecaster")  # a baseline has no interval
    mean = {r["method"]: r for r in rows if r["horizon"] == "mean"}
    assert mean["persistence"]["mae"] > 0 and mean["seasonal_naive"]["mae"] > 0


def test_the_figures_equal_the_generalisation_harness_on_the_same_data_and_settings(setup, capsys, monkeypatch):
    ours = backtest_rows(setup, capsys)
    generalisation = benchmark("generalisation")
    configured = config_module.load(setup / "config.yaml").pipeline("weather")
    monkeypatch.setattr(  # the harness's pipeline is the configured one (with the combination on or off)
        generalisation,
        "pipeline",
        lambda panel, combination=True, loss=None: dataclasses.replace(
            configured, combination=dataclasses.replace(configured.combination, enabled=combination)
        ),
    )
    times, temps = greensboro()
    panel = Panel("greensboro", ("723170",), times, temps[:, None], temps[:, None], None, "1h", 24, 1)
    theirs = generalisation.evaluate(panel, with_statsforecast=False, quick=False, log=lambda *_: None)
    named = {"forecaster": "forecaster", "persistence": "persistence", "seasonal_naive": "seasonal_naive_24"}
    harness = {(r["method"], r["horizon"]): r for r in theirs}
    for row in ours:
        same = harness[named[row["method"]], row["horizon"]]
        assert (row["mae"], row["mase"], row["coverage80"]) == (same["mae"], same["mase"], same["coverage80"])


def test_from_moves_the_scored_part(setup, capsys):
    times, _ = greensboro()
    late = datetime.fromtimestamp(times[HOURS - 60], UTC).isoformat()
    first = backtest_rows(setup, capsys)
    later = backtest_rows(setup, capsys, "--from", late)
    assert first != later
    assert len(later) == len(first)


def test_a_from_too_late_to_score_is_an_error(setup, capsys):
    times, _ = greensboro()
    late = datetime.fromtimestamp(times[-5], UTC).isoformat()
    assert main(command(setup, "--map", "temp=temperature", "--from", late)) == 1
    err = capsys.readouterr().err
    assert "--from: expected a time between the grid's second row and 24 steps before its end" in err


def test_a_bad_file_fails_with_one_line_naming_the_file_and_line(setup, capsys):
    bad = setup / "greensboro.csv"
    bad.write_text(bad.read_text().replace("\n", "\n2024-01-01T00:00:00,warm\n", 1))
    assert main(command(setup, "--map", "temp=temperature")) == 1
    assert capsys.readouterr().err == f"forecaster: {bad}:line 2: temperature: expected a number, got 'warm'\n"


def observations(keys, times, values):
    times = np.asarray(times, dtype=np.float64)
    return Observations(
        tuple(keys), times, times.copy(), np.asarray(values, dtype=np.float64)[:, None], np.arange(len(keys))
    )


def test_a_history_is_laid_on_the_cadences_grid_with_gaps_missing():
    pipeline = make_pipeline()
    hour = 3600.0
    panel = panel_of(pipeline, observations(["a", "b", "a", "a"], [0, 0, hour, 3 * hour], [1, 2, 3, 4]), "h")
    assert panel.keys == ("a", "b")
    np.testing.assert_array_equal(panel.times, [0, hour, 2 * hour, 3 * hour])
    np.testing.assert_array_equal(panel.inputs, [[1, 2], [3, np.nan], [np.nan, np.nan], [4, np.nan]])


def test_a_stray_timestamp_years_away_is_an_error_not_a_huge_grid():
    with pytest.raises(ForecasterError, match="check the timestamps and the pipeline's cadence"):
        panel_of(make_pipeline(), observations(["a", "a"], [0, 3600.0 * 10**8], [1, 2]), "h")


# --- a monthly series ----------------------------------------------------------------------


MONTHLY = pipeline_yaml("sales", "retraining:\n  young_steps: 10\n  steps: 10\n").replace("cadence: 1h", "cadence: 1M")


def month_starts(years: int) -> list[str]:
    return [f"{2001 + k // 12}-{k % 12 + 1:02d}-01" for k in range(12 * years)]


@pytest.fixture
def monthly(tmp_path):
    """A config with a monthly pipeline (horizon 24), and 16 years of a made-up series of month starts as a CSV
    (a yearly pattern, a trend and noise; two months empty)."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "sales.yaml").write_text(MONTHLY)
    (tmp_path / "config.yaml").write_text("pipelines:\n  - pipelines/sales.yaml\n")
    rng = np.random.default_rng(3)
    months = month_starts(16)
    values = [f"{200 + k + 40 * np.sin(2 * np.pi * k / 12) + rng.normal(0, 3):.1f}" for k in range(len(months))]
    values[30] = values[100] = ""  # missing values: null in the records
    with (tmp_path / "sales.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["month", "sales"], *zip(months, values)])
    return tmp_path


def test_a_monthly_csv_is_backtested_on_the_month_grid_against_the_seasonal_naive_a_year_back(monthly, capsys):
    config, data = str(monthly / "config.yaml"), str(monthly / "sales.csv")
    argv = ["backtest", "-c", config, "--pipeline", "sales", "--file", data, "--map", "time=month"]
    assert main([*argv, "--map", "temp=sales", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    mean = {r["method"]: r for r in rows if r["horizon"] == "mean"}
    assert set(mean) == {"forecaster", "persistence", "seasonal_naive"}
    assert [r["horizon"] for r in rows if r["method"] == "seasonal_naive"] == list(range(1, 25)) + ["mean"]
    # a year-back naive of a yearly pattern beats the last value; scaled by its own in-sample error it is near 1
    assert mean["seasonal_naive"]["mase"] < mean["persistence"]["mase"]
    assert 0.5 < mean["seasonal_naive"]["mase"] < 2.5
    assert np.isfinite(mean["forecaster"]["mase"])


def test_month_starts_lay_on_one_grid_row_a_month_whatever_the_months_length():
    pipeline = make_pipeline(cadence="1M")
    days = ["2024-01-01", "2024-02-01", "2024-03-01", "2024-05-01"]  # April missing
    times = [datetime.fromisoformat(d).replace(tzinfo=UTC).timestamp() for d in days]
    panel = panel_of(pipeline, observations(["a"] * 4, times, [1, 2, 3, 5]), "months")
    np.testing.assert_array_equal(panel.inputs[:, 0], [1, 2, 3, np.nan, 5])
    assert np.isnan(panel.times[3]) and panel.times[4] == times[3]  # a row without observations has no time


def test_a_backtest_keeps_freed_memory_for_reuse_unless_the_config_says_not_to(setup, capsys, kept_memory):
    backtest_rows(setup, capsys)
    assert kept_memory == [True]
    config = setup / "config.yaml"
    config.write_text("keep_freed_memory: false\n" + config.read_text())
    backtest_rows(setup, capsys)
    assert kept_memory == [True]
