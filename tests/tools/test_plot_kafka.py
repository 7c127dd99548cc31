"""`forecaster plot --topic`: the newest forecast an output topic retains, drawn with the input topic's actuals."""

import json

import pytest

from forecaster import config as config_module
from forecaster.build import build_engine
from forecaster.cli import main
from forecaster.config import Kafka
from forecaster.io import datasets
from forecaster.io.kafka import create_topics
from forecaster.serving.records import decode, encode_many
from forecaster.tools.replay import replay

from support import pipeline_yaml

pytestmark = pytest.mark.kafka

HOURS = 48


def test_plot_from_the_output_topic_draws_the_newest_forecast_of_the_series(tmp_path, broker, capsys):
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "plots.yaml").write_text(pipeline_yaml("plots"))
    (tmp_path / "config.yaml").write_text(
        f"kafka:\n  bootstrap_servers: {broker.bootstrap}\npipelines:\n  - pipelines/plots.yaml\n"
    )
    config = config_module.load(tmp_path / "config.yaml")
    pipeline = config.pipeline("plots")
    kafka = Kafka(bootstrap_servers=broker.bootstrap)
    create_topics(kafka, [("plots.in", 1), ("plots.out", 1)])
    hours = [
        {"station": station, "time": r["time"], "temp": r["drybulb_c"] + offset}
        for r in datasets.load("greensboro").records[:HOURS]
        for station, offset in (("north", 0.0), ("south", 5.0))
    ]
    observations, _ = decode([json.dumps(r).encode() for r in hours], pipeline.record)
    forecasts, _ = build_engine(config, pipeline, "cpu").step(observations, now=0.0)
    made = [json.loads(f) for f in encode_many(forecasts, "plots", "temp")]
    assert replay(kafka, hours, "plots.in", key_field="station") == 2 * HOURS
    assert replay(kafka, made, "plots.out", key_field="series") == 2 * HOURS
    out = tmp_path / "north.png"
    argv = ["plot", "-c", str(tmp_path / "config.yaml"), "--pipeline", "plots", "--topic", "plots.out"]
    assert main([*argv, "--series", "north", "--last", "24", "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}: north, 24 actuals and a forecast of 24\n"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
