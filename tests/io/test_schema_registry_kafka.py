"""The forecast records against their JSON Schemas, enforced by the broker: tansu, with a schema registry read from
the files `forecaster schema --write` makes, refuses any record of the output topic that does not conform."""

import json
import threading

import pytest

from forecaster.cli import main
from forecaster.io import clients
from forecaster.io.broker import EmbeddedBroker
from forecaster.io.messages import Message
from forecaster.tools.replay import replay

from kafka_support import deploy, read_topic, serving

pytestmark = pytest.mark.kafka

RECORDS = 10


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A broker of its own, validating against the schemas in its folder (written by each test)."""
    folder = tmp_path_factory.mktemp("schemas")
    with EmbeddedBroker(schema_registry=folder) as broker:
        yield broker, folder


@pytest.mark.parametrize("layout", ["nested", "long", "wide"])
def test_every_forecast_record_conforms_to_its_schema_and_others_are_refused(registry, tmp_path, layout):
    broker, folder = registry
    config = deploy(broker, tmp_path, pipelines=("weather",), changes={"weather": {"output": {"format": layout}}})
    pipeline = config.pipeline("weather")
    assert main(["schema", "-c", str(config.path), "--write", str(folder)]) == 0
    assert json.loads((folder / f"{pipeline.output_topic}.json").read_text())["properties"]["value"]["title"] == (
        f"weather forecast ({layout})"
    )
    replay(config.settings.kafka, "greensboro", pipeline.input_topic, limit=RECORDS)
    expected = RECORDS * (pipeline.horizon if layout == "long" else 1)
    with serving(config):  # a record the broker refused would stop the pipeline (Undeliverable)
        produced = read_topic(broker.bootstrap, pipeline.output_topic, expected)
    assert len(produced) == expected
    stop = threading.Event()
    threading.Timer(30.0, stop.set).start()  # a bound on retries, were the refusal taken for an outage
    wrong = {**json.loads(produced[0].value), "unexpected": 1}
    delivered = clients.make_sink(config.settings.kafka).deliver(
        [Message(pipeline.output_topic, b"723170", json.dumps(wrong).encode())], stop
    )
    assert [r.reason for r in delivered.refused] == ["refused"]  # for good: not retried, the daemon would stop
