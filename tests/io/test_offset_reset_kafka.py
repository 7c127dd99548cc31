"""`kafka.auto_offset_reset` decides where a new consumer group starts, with either client."""

import threading

import pytest

from forecaster.config import Kafka
from forecaster.io import clients
from forecaster.io.messages import Message

pytestmark = pytest.mark.kafka

GROUP_SETTINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
OLD = [b"old-%d" % i for i in range(5)]


def fresh_group(broker, client: str, reset: str, topic: str):
    """A topic holding OLD records and a source of a new group reading it, with `reset`."""
    kafka = Kafka(bootstrap_servers=broker.bootstrap, client=client, consumer=GROUP_SETTINGS, auto_offset_reset=reset)
    clients.create_topics(kafka, [(topic, 1)])
    sink = clients.make_sink(kafka)
    sink.deliver([Message(topic, b"k", value) for value in OLD], threading.Event())
    return kafka, sink, clients.make_source(kafka, topic, f"{topic}.group", max_records=100)


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_a_new_group_starts_at_the_earliest_record_by_default(broker, client):
    kafka, sink, source = fresh_group(broker, client, Kafka().auto_offset_reset, f"{client}.reset.earliest")
    polled = []
    for _ in range(150):
        polled += source.poll(200)
        if len(polled) >= len(OLD):
            break
    source.close(), sink.close()
    assert [p.value for p in polled] == OLD


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_a_new_group_with_latest_reads_only_what_is_produced_after_it_joined(broker, client):
    kafka, sink, source = fresh_group(broker, client, "latest", f"{client}.reset.latest")
    polled, sent = [], 0
    while not polled and sent < 150:  # keep producing until the group is placed and reads something
        sink.deliver([Message(source.topic, b"k", b"new-%d" % sent)], threading.Event())
        sent += 1
        polled += source.poll(200)
    polled += source.poll(200)
    source.close(), sink.close()
    assert polled, f"nothing read after {sent} new records"
    assert not {p.value for p in polled} & set(OLD)
    assert all(p.value.startswith(b"new-") for p in polled)
