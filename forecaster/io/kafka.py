"""The only module that imports kafka-python: a consumer-group source, a producing sink, topic admin.

Nothing here depends on the embedded broker: the same calls serve a user's Kafka cluster.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from ..config import Kafka
from ..errors import ForecasterError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """A record to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = field(default=())


@dataclass(frozen=True)
class Polled:
    """One consumed record: what the run loop needs of it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class DeliveryError(ForecasterError):
    """Forecasts could not be delivered before shutdown; their input offsets stay uncommitted."""


def client_settings(kafka: Kafka) -> dict:
    """Settings shared by every client: servers, identity, security."""
    return {
        "bootstrap_servers": [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()],
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }


def _connect(factory, kafka: Kafka, **settings):
    """Build a client; an unreachable cluster is a ForecasterError that says where we looked."""
    try:
        return factory(**settings)
    except KafkaError as error:  # kafka-python 3 reports an unreachable cluster as "Unable to bootstrap"
        raise ForecasterError(f"cannot connect to Kafka at {kafka.bootstrap_servers}: {error} "
                              "(check kafka.bootstrap_servers, or start a broker)") from None


class Source:
    """A consumer-group member reading one topic; offsets are committed only when told."""

    def __init__(self, kafka: Kafka, topic: str, group_id: str, max_records: int):
        self.topic = topic
        self._max_records = max_records
        self._consumer = _connect(
            KafkaConsumer, kafka,
            group_id=group_id,
            enable_auto_commit=False,       # at-least-once: commit after the forecasts are acknowledged
            auto_offset_reset="earliest",   # a new group starts at the beginning of the topic
            max_poll_records=max_records,
            allow_auto_create_topics=False,  # topics are created on purpose (`forecaster topics`), never by accident
            **{**client_settings(kafka), **kafka.consumer},
        )
        self._consumer.subscribe([topic])

    def poll(self, timeout_ms: int) -> list[Polled]:
        """Records in partition order (each partition's records stay in offset order)."""
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=self._max_records)
        return [Polled(tp.partition, r.offset, r.key, r.value) for tp, rs in batches.items() for r in rs]

    def commit(self, polled: Sequence[Polled]) -> None:
        """Commit the offsets after `polled`: the next record each partition should deliver."""
        newest: dict[int, int] = {}
        for record in polled:
            newest[record.partition] = max(record.offset, newest.get(record.partition, -1))
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(o + 1, "", -1) for p, o in newest.items()}
        if offsets:
            self._consumer.commit(offsets)

    def assigned(self) -> bool:
        return bool(self._consumer.assignment())

    def lag(self) -> int:
        """Records not yet consumed on the assigned partitions (from the last fetch's high watermarks)."""
        total = 0
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                total += max(0, highwater - self._consumer.position(tp))
        return total

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class Sink:
    """A producer that delivers a batch completely or keeps retrying, with backoff, until stopped."""

    def __init__(self, kafka: Kafka):
        settings = {"acks": "all", "linger_ms": 5, **client_settings(kafka), **kafka.producer}
        self._producer = _connect(KafkaProducer, kafka, **settings)

    def deliver(self, messages: Sequence[Message], stop: threading.Event) -> None:
        """Send all, wait for acknowledgements; resend what failed until it succeeds or `stop` is set."""
        pending, backoff = list(messages), 0.5
        while pending:
            pending = self._send_and_wait(pending)
            if not pending:
                return
            log.warning("%d records not acknowledged; retrying in %.1f s", len(pending), backoff)
            if stop.wait(backoff):
                raise DeliveryError(f"{len(pending)} records undelivered at shutdown; their inputs stay uncommitted")
            backoff = min(2 * backoff, 30.0)

    def _send_and_wait(self, messages: Sequence[Message]) -> list[Message]:
        futures = []
        for message in messages:
            try:
                futures.append((message, self._producer.send(message.topic, value=message.value, key=message.key,
                                                             headers=list(message.headers))))
            except KafkaError as error:
                log.warning("send to %s failed: %s", message.topic, error)
                futures.append((message, None))
        self._producer.flush()
        return [m for m, f in futures if f is None or f.failed()]

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.close(timeout=timeout_s)


def create_topics(kafka: Kafka, topics: Iterable[tuple[str, int]]) -> list[str]:
    """Create (name, partitions) topics that do not exist yet; returns the names created.

    Replication is left to the cluster's default.replication.factor (Kafka >= 2.4).
    """
    wanted = dict(topics)
    with _admin(kafka) as admin:
        new = {name: {"num_partitions": partitions, "replication_factor": -1}
               for name, partitions in wanted.items() if name not in set(admin.list_topics())}
        if new:
            try:
                admin.create_topics(new, wait_for_metadata=True)
            except TopicAlreadyExistsError:  # created by someone else meanwhile
                pass
        return list(new)


def missing_topics(kafka: Kafka, names: Iterable[str]) -> list[str]:
    """Which of `names` the cluster does not have."""
    with _admin(kafka) as admin:
        existing = set(admin.list_topics())
    return [name for name in names if name not in existing]


@contextlib.contextmanager
def _admin(kafka: Kafka):
    admin = _connect(KafkaAdminClient, kafka, **{**client_settings(kafka), **kafka.admin})
    try:
        yield admin
    finally:
        admin.close()
