"""`forecaster plot` and `forecaster backtest --plot`: PNGs that show what they claim, drawn by pure functions."""

import csv
import json
import sys

import numpy as np
import pytest

from forecaster import config as config_module
from forecaster.cli import main
from forecaster.io import datasets
from forecaster.io.files import read_records
from forecaster.serving.engine import Forecasts
from forecaster.serving.records import decode, encode_many
from forecaster.tools import plot
from forecaster.tools.backtest import backtest

from support import pipeline_yaml

HOURS = 300
PIPELINE = pipeline_yaml("weather", "retraining:\n  young_steps: 10\n  steps: 10\n")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A config with one small pipeline and Greensboro's first hours as a CSV in its record fields."""
    folder = tmp_path_factory.mktemp("plot")
    (folder / "pipelines").mkdir()
    (folder / "pipelines" / "weather.yaml").write_text(PIPELINE)
    (folder / "config.yaml").write_text("pipelines:\n  - pipelines/weather.yaml\n")
    with (folder / "history.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["station", "time", "temp"])
        writer.writeheader()
        for r in datasets.load("greensboro").records[:HOURS]:
            writer.writerow({"station": r["station"], "time": r["time"], "temp": r["drybulb_c"]})
    return folder


@pytest.fixture(scope="module")
def result(setup):
    config = config_module.load(setup / "config.yaml")
    pipeline = config.pipeline("weather")
    payloads = [json.dumps(r).encode() for r in read_records(setup / "history.csv", pipeline.record)]
    observations, rejected = decode(payloads, pipeline.record)
    assert rejected == []
    return backtest(config, pipeline, observations, "history")


def is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 10_000


def test_the_forecast_view_is_the_last_origins_forecast_after_its_actuals(result):
    view = plot.backtest_view(result, "723170", last=48)
    row = int(result.origin_rows[-1])
    assert view.origin == result.panel.times[row]
    assert len(view.actuals) == 48 + 24  # 48 up to the origin, then the horizon's
    assert view.times[47] == view.origin
    np.testing.assert_array_equal(view.target_times, result.panel.times[row + 1 : row + 25])
    np.testing.assert_array_equal(view.values, result.forecasts[-1, 0])
    assert (view.lower <= view.upper).all()


def test_at_picks_the_forecast_made_from_the_last_origin_at_or_before_it(result):
    times = result.panel.times[result.origin_rows]
    view = plot.backtest_view(result, None, at=times[10] + 1800)  # half an hour after the 11th origin
    assert view.origin == times[10]
    np.testing.assert_array_equal(view.values, result.forecasts[10, 0])


def test_the_forecast_picture_draws_actuals_forecast_and_interval(result):
    figure = plot.draw_forecast(plot.backtest_view(result, "723170"))
    axes = figure.axes[0]
    assert [line.get_label() for line in axes.get_lines()[:2]] == ["actual", "forecast"]
    assert len(axes.collections) == 1  # the interval's band
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["actual", "forecast", "80% interval"]
    assert len(axes.get_lines()[1].get_xdata()) == 24


def test_the_error_picture_draws_a_line_per_method_over_the_horizon_steps(result):
    figure = plot.draw_errors(result.rows)
    lines = figure.axes[0].get_lines()
    assert [line.get_label().split(" (")[0] for line in lines] == ["forecaster", "persistence", "seasonal naive"]
    assert all(list(line.get_xdata()) == list(range(1, 25)) for line in lines)
    mean = next(r["mae"] for r in result.rows if r["method"] == "forecaster" and r["horizon"] == "mean")
    assert lines[0].get_label() == f"forecaster (mean {mean:.3g})"


def test_forecaster_plot_and_backtest_plot_write_pngs(setup, capsys):
    config, history = str(setup / "config.yaml"), str(setup / "history.csv")
    out = setup / "forecast.png"
    assert main(["plot", "-c", config, "--pipeline", "weather", "--file", history, "--out", str(out)]) == 0
    assert is_png(out)
    assert "wrote" in capsys.readouterr().out
    errors = setup / "errors.png"
    argv = ["backtest", "-c", config, "--pipeline", "weather", "--file", history, "--plot", str(errors), "--json"]
    assert main(argv) == 0
    assert is_png(errors)


def test_the_topic_view_takes_the_newest_forecast_record_and_the_actuals_before_it():
    pipeline = config_module.Pipeline(
        name="weather",
        input_topic="in",
        output_topic="out",
        dead_letter_topic="dead",
        record=config_module.RecordFormat(key="station", timestamp="time", target="temp"),
        cadence="1h",
        horizon=2,
    )
    inputs = [
        json.dumps({"station": s, "time": t * 3600.0, "temp": t + (s == "b")}).encode() for t in range(10) for s in "ab"
    ]
    forecasts = []
    for origin in (5, 7):
        made = Forecasts(
            ("a", "b"),
            np.array([origin * 3600.0] * 2),
            np.array([[(origin + 1) * 3600.0, (origin + 2) * 3600.0]] * 2),
            np.array([[origin + 0.5, origin + 1.5], [origin + 9.0, origin + 9.0]]),
            np.arange(2),
            0.0,
            1,
            {0.1: np.full((2, 2), -1.0), 0.9: np.full((2, 2), 20.0)},
        )
        forecasts.append(b"[" + b",".join(encode_many(made, "weather", "temp")) + b"]")  # packed, as the daemon does
    view = plot.topic_view(forecasts, inputs, pipeline, "a", last=3)
    assert view.origin == 7 * 3600.0
    assert list(view.values) == [7.5, 8.5]
    assert list(view.actuals) == [5.0, 6.0, 7.0, 8.0, 9.0]  # 3 up to the origin, then the horizon's
    assert list(view.lower) == [-1.0, -1.0] and list(view.upper) == [20.0, 20.0]
    earlier = plot.topic_view(forecasts, inputs, pipeline, "a", at=6 * 3600.0)
    assert earlier.origin == 5 * 3600.0


def test_without_matplotlib_drawing_says_how_to_install_it(result, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(Exception, match=r"pip install 'forecaster-daemon\[plot\]'"):
        plot.draw_errors(result.rows)
