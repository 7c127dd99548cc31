"""The embedded broker starts, serves Kafka clients, stops, and says why it cannot start."""

import socket
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from forecaster.io import broker as broker_module
from forecaster.io.broker import HOST, EmbeddedBroker, free_port

pytestmark = pytest.mark.kafka


@pytest.fixture
def listening_socket():
    """A loopback port held by a listener that never answers a Kafka request."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        sock.listen()
        yield sock.getsockname()[1]


def _create_topic(bootstrap: str, partitions: int) -> str:
    """Create a topic explicitly: tansu auto-creates on produce, but Kafka need not."""
    name = f"test-broker-{uuid.uuid4().hex[:8]}"
    with KafkaAdminClient(bootstrap_servers=bootstrap) as admin:
        admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}})
    return name


def test_a_produced_record_is_consumed_back(broker):
    topic = _create_topic(broker.bootstrap, partitions=3)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    sent = producer.send(topic, key=b"sensor-7", value=b"21.5", headers=[("reason", b"x")]).get(timeout=10)
    producer.close()

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=10_000)
    partition = TopicPartition(topic, sent.partition)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    record = next(consumer)
    consumer.close()

    assert (record.key, record.value, record.offset) == (b"sensor-7", b"21.5", sent.offset)
    assert record.headers == [("reason", b"x")]


def test_stop_ends_the_process_and_frees_the_port(tmp_path):
    log_path = tmp_path / "tansu.log"
    embedded = EmbeddedBroker(log_path=log_path).start()
    assert embedded.running
    assert f"listening on: tcp://{embedded.bootstrap}" in log_path.read_text()

    embedded.stop()

    assert not embedded.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, embedded.port), timeout=5).close()
    embedded.stop()  # a second stop is a no-op


def test_stop_before_start_is_a_no_op():
    broker = EmbeddedBroker()
    broker.stop()  # raises nothing
    assert not broker.running


def test_start_on_a_port_in_use_fails_with_a_clear_error(listening_socket):
    with pytest.raises(RuntimeError, match=f"port {listening_socket} .* already in use"):
        EmbeddedBroker(port=listening_socket).start()


def test_start_on_the_port_of_a_running_broker_leaves_that_broker_alone(broker):
    with pytest.raises(RuntimeError, match="already in use"):
        EmbeddedBroker(port=broker.port).start()
    assert broker.running
    assert broker_module._answers_metadata(broker.port, broker.advertised_port)


def test_a_broker_that_exits_during_start_is_reported_with_its_log(listening_socket, monkeypatch):
    # Skip the pre-check so that tansu itself meets the taken port and exits.
    monkeypatch.setattr(broker_module, "_port_is_taken", lambda port: False)
    with pytest.raises(RuntimeError, match="exited with status .* before it was ready(.|\n)*Address in use"):
        EmbeddedBroker(port=listening_socket).start()


def test_free_port_can_be_bound():
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, port))  # raises OSError if the port were taken
        assert sock.getsockname()[1] == port > 0
