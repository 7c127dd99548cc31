"""Both Kafka clients against the real embedded broker: the same interface, the same semantics,
and the daemon end to end with each, plain and with batch messages."""

import dataclasses
import json
import threading
from datetime import datetime

import pytest

from forecaster.app import Daemon
from forecaster.config import Kafka
from forecaster.errors import ForecasterError
from forecaster.io import clients, datasets
from forecaster.io.broker import free_port
from forecaster.io.checkpoint import load_latest_checkpoint
from forecaster.io.messages import Message
from forecaster.tools.replay import replay

from kafka_support import deploy, read_topic

pytestmark = pytest.mark.kafka

CLIENTS = ["kafka-python", "confluent-kafka"]
GROUP_SETTINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}  # a first join in about 3.5 s


def settings(broker, client: str) -> Kafka:
    return Kafka(bootstrap_servers=broker.bootstrap, client=client, consumer=GROUP_SETTINGS)


def with_client(config, client: str, **batching):
    """The config with another Kafka client, and the pipelines' batching settings changed."""
    kafka = dataclasses.replace(config.settings.kafka, client=client)
    pipelines = tuple(
        dataclasses.replace(p, batching=dataclasses.replace(p.batching, **batching)) for p in config.pipelines
    )
    return dataclasses.replace(config, settings=dataclasses.replace(config.settings, kafka=kafka), pipelines=pipelines)


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def poll_until(source, count: int, rounds: int = 150) -> list:
    polled = []
    for _ in range(rounds):
        polled += source.poll(200)
        if len(polled) >= count:
            break
    return polled


@pytest.mark.parametrize("client", CLIENTS)
def test_topics_are_created_once_and_missing_ones_named(broker, client):
    kafka = settings(broker, client)
    names = [f"{client}.topics.{i}" for i in range(2)]
    assert sorted(clients.create_topics(kafka, [(names[0], 2), (names[1], 1)])) == names
    assert clients.create_topics(kafka, [(names[0], 2)]) == []
    assert clients.missing_topics(kafka, [names[0], f"{client}.absent"]) == [f"{client}.absent"]


@pytest.mark.parametrize("client", CLIENTS)
def test_an_unreachable_cluster_is_an_error_that_says_where_we_looked(client):
    kafka = Kafka(
        bootstrap_servers=f"127.0.0.1:{free_port()}",
        client=client,
        admin={"request_timeout_ms": 2000, "bootstrap_timeout_ms": 2000} if client == "kafka-python" else {},
    )
    with pytest.raises(ForecasterError, match="cannot connect to Kafka at 127.0.0.1"):
        clients.missing_topics(kafka, ["any"])


@pytest.mark.parametrize("client", CLIENTS)
def test_a_source_resumes_at_the_given_positions_and_measures_lag_from_high_watermarks(broker, client):
    kafka, topic = settings(broker, client), f"{client}.resume"
    clients.create_topics(kafka, [(topic, 1)])
    sink = clients.make_sink(kafka)
    sink.deliver([Message(topic, b"k", b"%d" % i, (("h", b"v"),)) for i in range(30)], threading.Event())
    source = clients.make_source(kafka, topic, f"{client}.resume.group", max_records=10, positions={0: 12})
    try:
        first = poll_until(source, 10)
        assert [r.offset for r in first][:1] == [12] and [r.value for r in first][:1] == [b"12"]
        assert source.assigned() and source.connected()
        assert source.lag() == 30 - 12 - len(first)  # from the last fetch's high watermark
        assert source.commit({0: 12 + len(first)})
    finally:
        source.close()
        sink.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_a_source_resumed_past_the_end_of_its_topic_says_where_it_stands(broker, client):
    kafka, topic = settings(broker, client), f"{client}.recreated"
    clients.create_topics(kafka, [(topic, 1)])
    sink = clients.make_sink(kafka)
    sink.deliver([Message(topic, b"k", b"%d" % i) for i in range(10)], threading.Event())
    source = clients.make_source(kafka, topic, f"{client}.recreated.group", max_records=10, positions={0: 100})
    try:
        for _ in range(150):  # until a fetch has reported the partition's end
            if source.poll(200) or source.ahead():
                break
        assert source.ahead() == {0: (100, 10)} and source.lag() == 0
    finally:
        source.close()
        sink.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_the_daemon_forecasts_every_record_and_dead_letters_bad_ones(broker, tmp_path, client):
    config = with_client(deploy(broker, tmp_path, pipelines=("weather",)), client)
    pipeline, kafka = config.pipeline("weather"), config.settings.kafka
    replay(kafka, "greensboro", pipeline.input_topic, limit=300)
    clients.make_sink(kafka).deliver([Message(pipeline.input_topic, b"723170", b"not json")], threading.Event())
    daemon, codes = Daemon(config), []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()))
    runner.start()
    try:
        forecasts = read_topic(broker.bootstrap, pipeline.output_topic, 300)
        dead = read_topic(broker.bootstrap, pipeline.dead_letter_topic, 1)
    finally:
        daemon.stop()
        runner.join(60)
    assert codes == [0]
    inputs = datasets.load("greensboro").records[:300]
    assert sorted(epoch(json.loads(f.value)["time"]) for f in forecasts) == sorted(epoch(r["time"]) for r in inputs)
    assert {f.key for f in forecasts} == {b"723170"}
    assert [(d.value, dict(d.headers)["forecaster.reason"]) for d in dead] == [(b"not json", b"malformed")]
    checkpoint, _ = load_latest_checkpoint(tmp_path / "state" / "weather")
    assert sum(checkpoint["offsets"].values()) == 301  # the stop checkpointed everything consumed


@pytest.mark.parametrize("client", CLIENTS)
def test_batch_messages_in_and_packed_forecasts_out_through_the_broker(broker, tmp_path, client):
    config = with_client(deploy(broker, tmp_path, pipelines=("weather",)), client, forecasts_per_message=16)
    pipeline, kafka = config.pipeline("weather"), config.settings.kafka
    records = datasets.load("greensboro").records[:200]
    objects = [{**r, "station": f"S{i % 10}"} for i, r in enumerate(records)]  # ten series
    bad = {"station": "S0", "time": "never", "drybulb_c": 1.0}
    batches = [objects[i : i + 50] for i in range(0, 200, 50)]
    batches[1].insert(3, bad)
    clients.make_sink(kafka).deliver(
        [Message(pipeline.input_topic, b"batch", json.dumps(b).encode()) for b in batches], threading.Event()
    )
    daemon, codes = Daemon(config), []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()))
    runner.start()
    try:
        dead = read_topic(broker.bootstrap, pipeline.dead_letter_topic, 1)
        messages = read_topic(broker.bootstrap, pipeline.output_topic, 13, linger_s=2.0)
    finally:
        daemon.stop()
        runner.join(60)
    assert codes == [0]
    forecasts = [f for m in messages for f in json.loads(m.value)]
    assert len(forecasts) == 200 and all(len(json.loads(m.value)) <= 16 for m in messages)
    by_series = {}
    for f in forecasts:
        by_series.setdefault(f["series"], []).append(f["time"])
    assert sorted(by_series) == [f"S{i}" for i in range(10)]
    for times in by_series.values():  # each series' forecasts in one partition, in order
        assert times == sorted(times, key=epoch)
    assert [
        (json.loads(d.value), dict(d.headers)["forecaster.element"], dict(d.headers)["forecaster.reason"]) for d in dead
    ] == [(bad, b"3", b"bad_timestamp")]
