"""The Kafka client a configuration names, behind one small interface: kafka-python (default) or confluent-kafka.

Each client module offers the same `Source`, `Sink`, `create_topics` and `missing_topics`;
confluent-kafka is imported only when chosen, so it stays an optional extra.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable, Sequence
from types import ModuleType

from forecaster.config import Kafka
from forecaster.errors import ForecasterError, Undeliverable
from forecaster.io.messages import Message, Sink
from forecaster.words import counted

log = logging.getLogger(__name__)


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


def deliver_all(sink: Sink, messages: Sequence[Message], stop: threading.Event) -> None:
    """Deliver every message or raise Undeliverable: for records that have no other way than to arrive (a series'
    state, a model version, a replayed record)."""
    refused = sink.deliver(messages, stop)
    if refused:
        first = refused[0]
        raise Undeliverable(
            f"{first.message.topic}: {counted(len(refused), 'record')} refused by Kafka "
            f"({first.reason}: {first.detail})"
        )


class ChangelogTopic:
    """A pipeline's changelog topic: partition p holds the state of input partition p (serving/handover.py).

    In exactly-once mode `sink` is the member's transactions (io/transactions.py): partition p's records go into
    input partition p's transaction, and a restore reads only what was committed.
    """

    def __init__(self, kafka: Kafka, topic: str, sink=None):
        self.kafka, self.topic = kafka, topic
        self._committed = sink is not None
        self._sink = sink if sink is not None else make_sink(kafka)

    def write(self, records: dict[int, list[tuple[bytes, bytes]]], stop: threading.Event) -> None:
        """Produce every partition's (key, value) records and wait until all are acknowledged (in exactly-once
        mode: until the transaction commits)."""
        messages = [
            Message(self.topic, key, value, partition=p, origin=p)
            for p, pairs in records.items()
            for key, value in pairs
        ]
        deliver_all(self._sink, messages, stop)

    def read(self, partition: int) -> list[tuple[bytes | None, bytes | None]]:
        """The partition's records, (key, value) in log order, up to its end as it stands now."""
        return read_partition(self.kafka, self.topic, partition, committed=self._committed)

    def close(self) -> None:
        self._sink.close()


def read_partition(
    kafka: Kafka, topic: str, partition: int, committed: bool = False
) -> list[tuple[bytes | None, bytes | None]]:
    """A partition's records, (key, value) in log order, up to its end as it stands now (with `committed`, those of
    committed transactions only); without a producer, for readers that only look (`forecaster inspect`)."""
    return [(r.key, r.value) for r in client(kafka).read_partition(kafka, topic, partition, committed=committed)]


class ModelTopic:
    """A pipeline's model topic: one partition, a record per published model version (learning/published.py).

    `read_new` reads what was published since the last read. `watch` reads on a thread of its own every few
    seconds, so the run loop never waits on Kafka for it, and `take` hands the loop what that thread found.
    Values come in no promised order: the caller keeps the newest version.
    """

    KEY = b"model"

    def __init__(self, kafka: Kafka, topic: str):
        self.kafka, self.topic = kafka, topic
        self._sink = make_sink(kafka)
        self._next = 0  # the offset after the last record read
        self._reading = threading.Lock()  # the watcher and the loop both read
        self._found: list[bytes] = []  # read by the watcher, not yet taken
        self._taking = threading.Lock()
        self._watcher: threading.Thread | None = None

    def publish(self, value: bytes, stop: threading.Event) -> None:
        """Produce one version's record and wait until it is acknowledged."""
        deliver_all(self._sink, [Message(self.topic, self.KEY, value, partition=0)], stop)

    def read_new(self) -> list[bytes]:
        """The values published since the last read, now, and those the watcher found but were not taken."""
        new = self._read()
        return self.take() + new

    def take(self) -> list[bytes]:
        """What the watcher read since the last take, without waiting for Kafka."""
        with self._taking:
            found, self._found = self._found, []
            return found

    def watch(self, every_s: float, stop: threading.Event) -> None:
        """Read new records every `every_s` seconds on a thread of its own until `stop`."""
        self._watcher = threading.Thread(target=self._watch, args=(every_s, stop), name="model-topic", daemon=True)
        self._watcher.start()

    def _watch(self, every_s: float, stop: threading.Event) -> None:
        while not stop.wait(every_s):
            try:
                found = self._read()
            except Exception as error:  # noqa: BLE001 - an outage: the next read tries again
                log.debug("%s: reading failed (%s); trying again in %g s", self.topic, error, every_s)
                continue
            with self._taking:
                self._found += found

    def _read(self) -> list[bytes]:
        with self._reading:
            records = client(self.kafka).read_partition(self.kafka, self.topic, 0, start=self._next)
            if records:
                self._next = records[-1].offset + 1
            return [r.value for r in records if r.key == self.KEY and r.value is not None]

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.join(10.0)
        self._sink.close()


def missing_topics(kafka: Kafka, names: Iterable[str]) -> list[str]:
    return client(kafka).missing_topics(kafka, names)


def read_retained(kafka: Kafka, topic: str) -> list[bytes]:
    """The value of every record `topic` retains, partition after partition in log order (each series keeps its
    order: it has one partition), up to each partition's end as it stands when asked; records without a value
    are skipped."""
    count = partition_count(kafka, topic)
    if not count:
        raise ForecasterError(f"topic {topic}: not found at {kafka.bootstrap_servers}")
    return [r.value for p in range(count) for r in client(kafka).read_partition(kafka, topic, p) if r.value is not None]
