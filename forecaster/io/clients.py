"""The Kafka client a configuration names, behind one small interface: kafka-python (default) or confluent-kafka.

Each client module offers the same `Source`, `Sink`, `create_topics` and `missing_topics`;
confluent-kafka is imported only when chosen, so it stays an optional extra.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable
from types import ModuleType

from forecaster.config import Kafka
from forecaster.io.messages import Message


def client(kafka: Kafka) -> ModuleType:
    """The module of the client `kafka.client` names."""
    if kafka.client == "confluent-kafka":
        from forecaster.io import confluent

        return confluent
    from forecaster.io import kafka as kafka_python

    return kafka_python


def make_source(
    kafka: Kafka,
    topic: str,
    group_id: str,
    max_records: int,
    positions: dict[int, int] | None = None,
    handover: bool = False,
):
    return client(kafka).Source(kafka, topic, group_id, max_records, positions=positions, handover=handover)


def make_sink(kafka: Kafka):
    return client(kafka).Sink(kafka)


def create_topics(kafka: Kafka, topics: Iterable[tuple[str, int]], compacted: Collection[str] = ()) -> list[str]:
    return client(kafka).create_topics(kafka, topics, compacted)


def partition_count(kafka: Kafka, topic: str) -> int | None:
    return client(kafka).partition_count(kafka, topic)


class ChangelogTopic:
    """A pipeline's changelog topic: partition p holds the state of input partition p (serving/handover.py)."""

    def __init__(self, kafka: Kafka, topic: str):
        self.kafka, self.topic = kafka, topic
        self._sink = make_sink(kafka)

    def write(self, records: dict[int, list[tuple[bytes, bytes]]], stop: threading.Event) -> None:
        """Produce every partition's (key, value) records and wait until all are acknowledged."""
        messages = [
            Message(self.topic, key, value, partition=p) for p, pairs in records.items() for key, value in pairs
        ]
        self._sink.deliver(messages, stop)

    def read(self, partition: int) -> list[tuple[bytes | None, bytes | None]]:
        """The partition's records, (key, value) in log order, up to its end as it stands now."""
        return read_partition(self.kafka, self.topic, partition)

    def close(self) -> None:
        self._sink.close()


def read_partition(kafka: Kafka, topic: str, partition: int) -> list[tuple[bytes | None, bytes | None]]:
    """A partition's records, (key, value) in log order, up to its end as it stands now; without a producer, for
    readers that only look (`forecaster inspect`)."""
    return [(r.key, r.value) for r in client(kafka).read_partition(kafka, topic, partition)]


def missing_topics(kafka: Kafka, names: Iterable[str]) -> list[str]:
    return client(kafka).missing_topics(kafka, names)
