"""A monthly CSV of a series never seen before, end to end: backtest, pretrain on it, replay it into a running
daemon, and read its forecasts back in the long format, one record per month ahead."""

import csv
import json
import math
from datetime import datetime

import numpy as np
import pytest
import yaml

from forecaster import config as config_module
from forecaster.build import topics_of
from forecaster.cli import main
from forecaster.io.broker import free_port
from forecaster.io.kafka import create_topics

from kafka_support import read_topic, serving
from support import pipeline_yaml

pytestmark = pytest.mark.kafka

MONTHS, HORIZON = 120, 6
MISSING = (40, 75)  # months whose cell is empty: null readings


def write_setup(tmp_path, broker) -> tuple[str, str]:
    """A config with one monthly pipeline writing long records, and ten years of a made-up series as a CSV."""
    (tmp_path / "pipelines").mkdir()
    extra = "output:\n  format: long\ntraining:\n  window: 48\n  chunk: 24\n  batch_size: 4\n  steps: 3\n"
    text = pipeline_yaml("sales", extra).replace("cadence: 1h", "cadence: 1M").replace("horizon: 24", "horizon: 6")
    text = text.replace("sales.in", "monthly.sales.in").replace("sales.out", "monthly.sales.out")
    (tmp_path / "pipelines" / "sales.yaml").write_text(text.replace("sales.dead", "monthly.sales.dead"))
    settings = {
        "kafka": {"bootstrap_servers": broker.bootstrap, "group_id": "test-monthly-file"},
        "metrics": {"port": free_port()},
        "state_dir": str(tmp_path / "state"),
        "pipelines": ["pipelines/sales.yaml"],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(settings))
    rng = np.random.default_rng(7)
    with (tmp_path / "sales.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["month", "sales"])
        for k in range(MONTHS):
            value = 50 + 10 * math.sin(2 * math.pi * k / 12) + rng.normal()
            writer.writerow([f"{2010 + k // 12}-{k % 12 + 1:02d}-01", "" if k in MISSING else f"{value:.2f}"])
    return str(tmp_path / "config.yaml"), str(tmp_path / "sales.csv")


def test_a_monthly_file_is_backtested_pretrained_on_replayed_and_forecast_month_by_month(tmp_path, broker, capsys):
    config_path, data = write_setup(tmp_path, broker)
    mapping = ["--map", "time=month", "--map", "temp=sales"]
    assert main(["backtest", "-c", config_path, "--pipeline", "sales", "--file", data, *mapping, "--json"]) == 0
    assert {r["method"] for r in json.loads(capsys.readouterr().out)} == {"forecaster", "persistence", "seasonal_naive"}
    weights = tmp_path / "pipelines" / "sales.pt"
    assert (
        main(["pretrain", "-c", config_path, "--pipeline", "sales", "--file", data, *mapping, "--out", str(weights)])
        == 0
    )
    pipeline_file = tmp_path / "pipelines" / "sales.yaml"
    pipeline_file.write_text(pipeline_file.read_text().replace("weights: null", "weights: pipelines/sales.pt"))
    config = config_module.load(config_path)
    pipeline = config.pipeline("sales")
    create_topics(config.settings.kafka, topics_of(config, pipeline))
    assert main(["replay", "-c", config_path, "--file", data, *mapping, "--topic", pipeline.input_topic]) == 0
    capsys.readouterr()

    with serving(config):
        records = read_topic(broker.bootstrap, pipeline.output_topic, MONTHS * HORIZON)

    forecasts = [json.loads(r.value) for r in records]
    assert all(b"NaN" not in r.value and b"Infinity" not in r.value for r in records)
    assert len(forecasts) == MONTHS * HORIZON  # a forecast a month, the null readings' included, a record a step
    last = [f for f in forecasts if f["time"].startswith("2019-12-01")]
    assert [f["step"] for f in last] == list(range(1, HORIZON + 1))
    assert [datetime.fromisoformat(f["target_time"]).date().isoformat() for f in last] == [
        f"2020-{m:02d}-01" for m in range(1, HORIZON + 1)
    ]
    assert all(isinstance(f["value"], float) and math.isfinite(f["value"]) for f in forecasts)
