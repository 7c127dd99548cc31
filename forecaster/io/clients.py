"""The Kafka client a configuration names, behind one small interface: kafka-python (default) or confluent-kafka.

Each client module offers the same `Source`, `Sink`, `create_topics` and `missing_topics`;
confluent-kafka is imported only when chosen, so it stays an optional extra.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from types import ModuleType

from forecaster.config import Kafka
from forecaster.errors import ForecasterError, Undeliverable
from forecaster.io.checkpoint import load_changelog_cache, save_changelog_cache
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


def deliver_all(sink: Sink, messages: Sequence[Message], stop: threading.Event) -> list[tuple[int, int]]:
    """Deliver every message or raise Undeliverable: for records that have no other way than to arrive (a series'
    state, a model version, a replayed record). Returns the (partition, offset) each was written at, as far as
    the sink says (`Delivered.written`)."""
    delivered = sink.deliver(messages, stop)
    if delivered.refused:
        first = delivered.refused[0]
        raise Undeliverable(
            f"{first.message.topic}: {counted(len(delivered.refused), 'record')} refused by Kafka "
            f"({first.reason}: {first.detail})"
        )
    return delivered.written


class ChangelogTopic:
    """A pipeline's changelog topic: partition p holds the state of input partition p (serving/handover.py).

    In exactly-once mode `sink` is the member's transactions (io/transactions.py): partition p's records go into
    input partition p's transaction, and a restore reads only what was committed.

    With a `cache` folder, a member keeps a local copy of each partition it gives up (`keep`), and its next read
    of that partition reads the log only after the copy's position: a restarted member, or a partition that
    comes back to it, reads the records written since, not every checkpoint ever written. The log stays the
    source of truth: a copy ends where this member's own reads and writes are known to account for every
    record of the log (any record another wrote in between holds it back to where the member's last read
    ended), and a copy whose position lies outside the log (a changelog deleted and recreated) is discarded.
    Transactions say no offsets (they are known at the commit only, with its markers between), so in
    exactly-once mode a copy always ends where the member's last read ended.
    """

    def __init__(self, kafka: Kafka, topic: str, sink=None, cache: Path | None = None):
        self.kafka, self.topic, self.cache = kafka, topic, cache
        self._committed = sink is not None
        self._sink = sink if sink is not None else make_sink(kafka)
        self._read_to: dict[int, int] = {}  # partition -> the offset its last read reached
        self._written: dict[int, tuple[int, int]] = {}  # partition -> (records, highest offset) written since

    def write(self, records: dict[int, list[tuple[bytes, bytes]]], stop: threading.Event) -> None:
        """Produce every partition's (key, value) records and wait until all are acknowledged (in exactly-once
        mode: until the transaction commits)."""
        messages = [
            Message(self.topic, key, value, partition=p, origin=p)
            for p, pairs in records.items()
            for key, value in pairs
        ]
        for partition, offset in deliver_all(self._sink, messages, stop):
            if partition in self._written:
                count, highest = self._written[partition]
                self._written[partition] = (count + 1, max(highest, offset))

    def read(self, partition: int) -> list[tuple[bytes | None, bytes | None]]:
        """The partition's records, (key, value) in log order, up to its end as it stands now: the local copy's, if
        one is valid, then the log's after it."""
        kept = self._cached(partition)
        position, copied = kept if kept is not None else (0, [])
        tail, first, end = self._read_from(partition, position)
        if kept is not None and not first <= position <= end:
            log.warning(
                "%s[%d]: the local copy (up to %d) lies outside the log (%d to %d); discarded",
                *(self.topic, partition, position, first, end),
            )
            copied = []
            tail, first, end = self._read_from(partition, 0)
        self._read_to[partition], self._written[partition] = end, (0, -1)
        return copied + [(r.key, r.value) for r in tail]

    def _read_from(self, partition: int, start: int) -> tuple[list, int, int]:
        """The records from `start` on, and the log's first and end offsets, its end as the records show it: some
        brokers (tansu) report the first offset of the last batch instead, so a `start` beyond that is looked up
        in the last batch."""
        read_tail = client(self.kafka).read_tail
        tail, first, end = read_tail(self.kafka, self.topic, partition, start, committed=self._committed)
        if start >= end > first:
            last = read_tail(self.kafka, self.topic, partition, end - 1, committed=self._committed)[0]
            tail = [r for r in last if r.offset >= start]
            end = max(end, last[-1].offset + 1 if last else end)
        return tail, first, max(end, tail[-1].offset + 1 if tail else end)

    def keep(self, partition: int, records: list[tuple[bytes, bytes]]) -> None:
        """Copy the partition locally: `records` (key, value), each key's newest, are what its log comes to as far
        as this member has read and written it since its last `read`."""
        if self.cache is None or partition not in self._read_to:
            return
        read_to, (count, highest) = self._read_to.pop(partition), self._written.pop(partition)
        # The member's records filled the log from where its read ended: the copy holds all of it up to them.
        # Otherwise another wrote in between, or a record written twice on a retry: the copy goes as far as the read.
        position = highest + 1 if highest == read_to + count - 1 else read_to
        save_changelog_cache(self._cache_file(partition), position, records)

    def close(self) -> None:
        self._sink.close()

    def _cached(self, partition: int) -> tuple[int, list[tuple[bytes, bytes]]] | None:
        return None if self.cache is None else load_changelog_cache(self._cache_file(partition))

    def _cache_file(self, partition: int) -> Path:
        return self.cache / f"{self.topic}.{partition}.cache"


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
