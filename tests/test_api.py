"""`from forecaster import Pipeline`: the engine stepped from Python, without Kafka, on Greensboro's temperature."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecaster import ConfigError, Pipeline, RecordError
from forecaster.cli import main
from forecaster.io import datasets

from support import pipeline_yaml

HOURS = 400
PIPELINE = pipeline_yaml("weather", "retraining:\n  young_steps: 10\n  steps: 10\n")


def hours(n: int = HOURS) -> list[dict]:
    """The first `n` hours of Greensboro's temperature as records of the small pipeline: station, time, temp."""
    rows = datasets.load("greensboro").records[:n]
    return [{"station": r["station"], "time": r["time"], "temp": r["drybulb_c"]} for r in rows]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "weather.yaml").write_text(PIPELINE)
    (tmp_path / "config.yaml").write_text("pipelines:\n  - pipelines/weather.yaml\n")
    return tmp_path


@pytest.fixture
def pipeline(folder):
    return Pipeline.from_file(folder / "pipelines" / "weather.yaml", device="cpu")


def test_step_returns_one_row_per_observation_and_horizon_step(pipeline):
    records = hours(3)
    out = pipeline.step(records)
    assert isinstance(out, pd.DataFrame)
    assert len(out) == 3 * 24
    assert list(out.columns[:7]) == ["series", "time", "issued_at", "model_version", "step", "target_time", "value"]
    assert list(out["step"]) == list(range(1, 25)) * 3
    assert set(out["series"]) == {"723170"}
    assert (out["time"].iloc[::24].tolist()) == [pd.Timestamp(r["time"]).tz_convert("UTC") for r in records]
    assert (out["target_time"] - out["time"] == pd.to_timedelta(out["step"], unit="h")).all()
    assert np.isfinite(out["value"]).all()
    quantiles = [c for c in out.columns if c.startswith("q")]
    assert quantiles == ["q0.1", "q0.5", "q0.9"]
    assert (out["q0.1"] <= out["q0.9"]).all()


def test_a_dataframe_steps_as_its_list_of_dicts_does(folder):
    records = hours(48)
    frame = pd.DataFrame(records)
    frame["time"] = pd.to_datetime(frame["time"], utc=True)  # Timestamps, as a notebook would have them
    frame["extra"] = 1.0  # columns beyond the pipeline's fields are ignored
    from_dicts = Pipeline.from_file(folder / "pipelines" / "weather.yaml", device="cpu").step(records, now=0.0)
    from_frame = Pipeline.from_file(folder / "pipelines" / "weather.yaml", device="cpu").step(frame, now=0.0)
    pd.testing.assert_frame_equal(from_dicts, from_frame)


def test_a_missing_value_is_stepped_over_and_a_bad_record_refused(pipeline):
    records = hours(6)
    records[3]["temp"] = float("nan")  # NaN in a DataFrame is a missing reading, as JSON null is
    assert len(pipeline.step(pd.DataFrame(records))) == 6 * 24
    bad = hours(8)[6:]
    bad[0]["temp"] = "warm"
    with pytest.raises(RecordError, match=r"^wrong_type: .* \(row 0; pipeline weather refused 1 records in all"):
        pipeline.step(bad)
    assert len(pipeline.step(bad, strict=False)) == 24
    assert [(row, reason) for row, reason, _ in pipeline.rejected] == [(0, "wrong_type")]


def test_without_pandas_the_forecasts_are_a_list_of_dicts(pipeline, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` raises ImportError
    out = pipeline.step(hours(2))
    assert isinstance(out, list) and len(out) == 48
    assert out[0]["series"] == "723170" and out[0]["step"] == 1
    assert out[0]["time"] == "2001-01-01T06:00:00+00:00" and out[0]["target_time"] == "2001-01-01T07:00:00+00:00"


def test_learn_retrains_on_the_daemons_schedule_and_forecast_gives_the_newest(pipeline):
    done = pipeline.learn(hours(200))
    assert done["records"] == 200
    assert done["rounds"] >= 1
    newest = pipeline.forecast()
    assert len(newest) == 24
    assert (newest["time"] == pd.Timestamp(hours(200)[-1]["time"]).tz_convert("UTC")).all()
    stepped = pipeline.step(hours(201)[-1:])
    assert (pipeline.forecast()["value"].to_numpy() == stepped["value"].to_numpy()).all()


def test_backtest_gives_the_rows_of_forecaster_backtest_json(folder, capsys):
    records = hours()
    with (folder / "history.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["station", "time", "temp"])
        writer.writeheader()
        writer.writerows(records)
    config, start = str(folder / "config.yaml"), records[250]["time"]
    argv = ["backtest", "-c", config, "--pipeline", "weather", "--file", str(folder / "history.csv"), "--json"]
    assert main([*argv, "--from", start]) == 0
    cli = json.loads(capsys.readouterr().out)
    ours = Pipeline.from_config(config, "weather").backtest(pd.DataFrame(records), start=pd.Timestamp(start))
    assert ours.astype(object).where(ours.notna(), None).to_dict("records") == cli  # a baseline's NaN coverage: null


def test_a_pipeline_file_whose_weights_are_not_under_root_is_refused(folder):
    (folder / "pipelines" / "weather.yaml").write_text(PIPELINE.replace("weights: null", "weights: models/w.pt"))
    with pytest.raises(ConfigError, match=r"model.weights: expected an existing weights file under .*'models/w.pt'"):
        Pipeline.from_file(folder / "pipelines" / "weather.yaml", root=folder)


def test_importing_forecaster_does_not_import_torch():
    code = "import sys, forecaster; forecaster.ConfigError; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_the_example_of_docs_api_runs_as_written(monkeypatch, capsys):
    root = Path(__file__).resolve().parents[1]
    example = re.search(r"```python\n(.*?)```", (root / "docs" / "api.md").read_text(), re.S).group(1)
    monkeypatch.chdir(root)  # the example names the shipped pipeline file and weights from the repository's root
    exec(compile(example, "docs/api.md", "exec"), {})
    assert "723170" in capsys.readouterr().out
