"""The output formats and forecast timestamps through the real broker, with each Kafka client."""

import json
from datetime import datetime

import pytest
from test_clients_kafka import CLIENTS, with_client

from forecaster.io import datasets
from forecaster.tools.replay import replay

from kafka_support import deploy, read_topic, serving

pytestmark = pytest.mark.kafka

RECORDS = 20


def epoch_ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


@pytest.mark.parametrize("client", CLIENTS)
def test_long_records_come_back_keyed_by_series_and_stamped_with_their_observation(broker, tmp_path, client):
    config = deploy(broker, tmp_path, pipelines=("weather",), changes={"weather": {"output": {"format": "long"}}})
    config = with_client(config, client)
    pipeline = config.pipeline("weather")
    replay(config.settings.kafka, "greensboro", pipeline.input_topic, limit=RECORDS)
    with serving(config):
        produced = read_topic(broker.bootstrap, pipeline.output_topic, RECORDS * pipeline.horizon)
    rows = [json.loads(r.value) for r in produced]
    assert len(rows) == RECORDS * pipeline.horizon
    assert {(r.key, row["series"]) for r, row in zip(produced, rows)} == {(b"723170", "723170")}
    assert all(r.timestamp == epoch_ms(row["time"]) for r, row in zip(produced, rows))
    inputs = datasets.load("greensboro").records[:RECORDS]
    assert {epoch_ms(row["time"]) for row in rows} == {epoch_ms(r["time"]) for r in inputs}
    assert sorted(row["step"] for row in rows) == sorted(list(range(1, pipeline.horizon + 1)) * RECORDS)
