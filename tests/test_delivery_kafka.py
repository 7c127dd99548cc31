"""Output Kafka refuses for good, against the embedded broker, with either client: an oversize dead letter arrives
truncated and the daemon goes on; oversize forecasts stop the pipeline and the daemon exits 1 instead of hanging."""

import json
import logging
import threading

import pytest
import yaml
from prometheus_client import CollectorRegistry

from forecaster import config as config_module
from forecaster.app import Daemon
from forecaster.delivery import TRUNCATED_BYTES
from forecaster.io.clients import deliver_all
from forecaster.io.kafka import Sink
from forecaster.io.messages import Message

from kafka_support import deploy, read_topic, wait_for

pytestmark = pytest.mark.kafka

LIMIT = 2000  # bytes a produced record may have: a forecast fits, a 6000-byte dead letter does not
LIMITS = {"kafka-python": {"max_request_size": LIMIT}, "confluent-kafka": {"message_max_bytes": LIMIT}}


def limited(broker, directory, client: str, forecasts_per_message: int, inputs: list[bytes]) -> config_module.Config:
    """The stock pipeline, without retraining, `inputs` on its input topic, its producer refusing records over LIMIT
    bytes."""
    changes = {"retraining": {"enabled": False}, "batching": {"forecasts_per_message": forecasts_per_message}}
    config = deploy(broker, directory, pipelines=("stock",), changes={"stock": changes})
    topic = config.pipeline("stock").input_topic
    deliver_all(Sink(config.settings.kafka), [Message(topic, b"MSFT", value) for value in inputs], threading.Event())
    settings = yaml.safe_load(config.path.read_text())
    settings["kafka"]["client"] = client
    settings["kafka"]["producer"] = LIMITS[client]
    config.path.write_text(yaml.safe_dump(settings))
    return config_module.load(config.path)


def close_on(day: int) -> bytes:
    return json.dumps(
        {"symbol": "MSFT", "time": f"2024-01-{day:02d}T00:00:00+00:00", "close": 3.0, "volume": 1}
    ).encode()


def started(config, registry):
    daemon, codes = Daemon(config, registry=registry), []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()), name="daemon")
    runner.start()
    return daemon, runner, codes


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_an_oversize_dead_letter_arrives_truncated_and_the_pipeline_goes_on(broker, tmp_path, client):
    config = limited(
        broker, tmp_path, client, forecasts_per_message=1, inputs=[b"\xff" * 6000, close_on(2), close_on(3)]
    )
    stock = config.pipeline("stock")
    registry = CollectorRegistry()
    daemon, runner, codes = started(config, registry)
    try:
        dead = read_topic(broker.bootstrap, stock.dead_letter_topic, 1, timeout_s=30, linger_s=0)
        forecasts = read_topic(broker.bootstrap, stock.output_topic, 2, timeout_s=30, linger_s=0)
    finally:
        daemon.stop()
        runner.join(30)
    assert codes == [0]
    assert [len(d.value) for d in dead] == [TRUNCATED_BYTES]
    headers = dict(dead[0].headers)
    assert headers["forecaster.truncated"] == b"key 4 bytes, value 6000 bytes"
    assert headers["forecaster.reason"] == b"malformed"
    assert len(forecasts) == 2
    failures = {"pipeline": "stock", "reason": "message_too_large"}
    assert registry.get_sample_value("forecaster_delivery_failures_total", failures) == 1


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_forecasts_kafka_refuses_stop_the_daemon_with_exit_code_1(broker, tmp_path, client, caplog):
    caplog.set_level(logging.ERROR, logger="forecaster")
    days = (2, 3, 4, 5, 8, 9, 10, 11, 12, 15)  # business days
    # ten forecasts in a record: too large
    config = limited(broker, tmp_path, client, forecasts_per_message=10, inputs=[close_on(day) for day in days])
    registry = CollectorRegistry()
    daemon, runner, codes = started(config, registry)
    try:
        wait_for(lambda: codes, 60, "the daemon to exit")
    finally:
        daemon.stop()
        runner.join(30)
    assert codes == [1]
    failures = {"pipeline": "stock", "reason": "message_too_large"}
    assert registry.get_sample_value("forecaster_delivery_failures_total", failures) >= 1
    assert not registry.get_sample_value("forecaster_forecasts_produced_total", {"pipeline": "stock"})
    stopped = [r.getMessage() for r in caplog.records if "pipeline stock stopped" in r.getMessage()]
    assert len(stopped) == 1 and "lower batching.forecasts_per_message" in stopped[0]
