"""The Kafka client a configuration names, behind one small interface: kafka-python (default) or confluent-kafka.

Each client module offers the same `Source`, `Sink`, `create_topics` and `missing_topics`;
confluent-kafka is imported only when chosen, so it stays an optional extra.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType

from forecaster.config import Kafka


def client(kafka: Kafka) -> ModuleType:
    """The module of the client `kafka.client` names."""
    if kafka.client == "confluent-kafka":
        from forecaster.io import confluent

        return confluent
    from forecaster.io import kafka as kafka_python

    return kafka_python


def make_source(kafka: Kafka, topic: str, group_id: str, max_records: int, positions: dict[int, int] | None = None):
    return client(kafka).Source(kafka, topic, group_id, max_records, positions=positions)


def make_sink(kafka: Kafka):
    return client(kafka).Sink(kafka)


def create_topics(kafka: Kafka, topics: Iterable[tuple[str, int]]) -> list[str]:
    return client(kafka).create_topics(kafka, topics)


def missing_topics(kafka: Kafka, names: Iterable[str]) -> list[str]:
    return client(kafka).missing_topics(kafka, names)
