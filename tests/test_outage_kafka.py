"""A broker outage mid-run: the daemon stays up, says so once, reports not-ready, and loses nothing."""

import json
import logging
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml
from prometheus_client import CollectorRegistry

from forecaster import config as config_module
from forecaster.app import Daemon
from forecaster.io.broker import EmbeddedBroker, free_port
from forecaster.tools.replay import replay

from kafka_support import deploy, metrics_url, read_topic, wait_for
from tcp_proxy import CuttableProxy

pytestmark = pytest.mark.kafka

RECORDS = 2000
OUTAGE_S = 30.0


def readyz(config) -> int:
    try:
        return urllib.request.urlopen(metrics_url(config) + "/readyz", timeout=2).status
    except urllib.error.HTTPError as error:
        return error.code


def quick_reconnects(config, client: str) -> config_module.Config:
    """Small batches (so the cut lands mid-stream), client reconnect backoff capped at 1 s, the given Kafka client."""
    pipeline_file = config.path.parent / "pipelines" / "power_load.yaml"
    pipeline = yaml.safe_load(pipeline_file.read_text())
    pipeline["batching"] = {"max_records": 50, "poll_timeout_ms": 100}
    pipeline_file.write_text(yaml.safe_dump(pipeline))
    settings = yaml.safe_load(config.path.read_text())
    for role in ("consumer", "producer"):
        settings["kafka"].setdefault(role, {})["reconnect_backoff_max_ms"] = 1000
    settings["kafka"]["client"] = client
    config.path.write_text(yaml.safe_dump(settings))
    return config_module.load(config.path)


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_the_daemon_rides_out_a_30_second_outage_without_losing_a_record(tmp_path, caplog, client):
    caplog.set_level(logging.INFO, logger="forecaster")
    proxy_port = free_port()
    with EmbeddedBroker(advertised_port=proxy_port) as broker:
        proxy = CuttableProxy(proxy_port, broker.port).start()
        config = quick_reconnects(deploy(broker, tmp_path, pipelines=("power_load",)), client)
        pipeline = config.pipeline("power_load")
        registry = CollectorRegistry()
        daemon = Daemon(config, registry=registry)
        codes = []
        runner = threading.Thread(target=lambda: codes.append(daemon.run()))
        runner.start()
        # Records keep arriving, paced, so the cut lands mid-stream however fast the daemon is.
        replayer = threading.Thread(
            target=replay,
            args=(config.settings.kafka, "taylor", pipeline.input_topic),
            kwargs={"rate": 100.0, "limit": RECORDS},
            name="replay",
        )
        replayer.start()
        produced = lambda: (
            registry.get_sample_value("forecaster_forecasts_produced_total", {"pipeline": "power_load"}) or 0
        )
        try:
            wait_for(lambda: produced() >= 200, 60, "the first forecasts", every_s=0.1)
            proxy.cut()
            cut_at = time.monotonic()
            wait_for(lambda: readyz(config) == 503, OUTAGE_S, "/readyz to report not ready", every_s=0.1)
            assert registry.get_sample_value("forecaster_pipeline_up", {"pipeline": "power_load"}) == 0
            assert runner.is_alive() and produced() < RECORDS
            time.sleep(max(0.0, cut_at + OUTAGE_S - time.monotonic()))  # the outage lasts its 30 s
            proxy.restore()
            forecasts = read_topic(broker.bootstrap, pipeline.output_topic, RECORDS, timeout_s=120)
            wait_for(lambda: readyz(config) == 200, 30, "/readyz to report ready again", every_s=0.1)
        finally:
            daemon.stop()
            runner.join(60)
            replayer.join(60)
            proxy.cut()
    assert codes == [0]
    assert len({json.loads(f.value)["time"] for f in forecasts}) == RECORDS  # every record has its forecast
    # The outage is announced once, not per retry: by the consumer's side (lost contact) when the
    # cut finds the loop polling, by the producer's (deliveries failing) when it finds it delivering.
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("forecaster") and r.threadName != "replay"]
    count = lambda text: sum(text in m for m in messages)
    assert count("lost contact with Kafka") + count("deliveries failing") >= 1
    for text in ("lost contact with Kafka", "Kafka reachable again", "deliveries failing", "deliveries recovered"):
        assert count(text) <= 1, f"{text!r} logged {count(text)} times"
