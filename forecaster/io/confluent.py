"""The only module that imports confluent-kafka (librdkafka): the same source, sink and topic admin as io/kafka.py.

Chosen with `kafka.client: confluent-kafka` (installed with the `confluent` extra). The
semantics are those of io/kafka.py: consumption resumes at the caller's `positions` on every
assignment, commits are best effort, a batch is delivered completely or retried until stopped
(what the cluster refuses for good is returned instead), and losing and regaining the cluster
is logged once each. `kafka.consumer`, `producer` and `admin` pass librdkafka properties; a
name written with underscores, as kafka-python spells it (`session_timeout_ms`), is taken
with dots (`session.timeout.ms`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_STORED,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from forecaster.config import Kafka
from forecaster.errors import DeliveryError, ForecasterError, TransactionError
from forecaster.io.messages import Delivered, Message, Polled, Rebalance, Rebalances, Refused, Sending
from forecaster.words import counted

log = logging.getLogger(__name__)
# librdkafka logs every failed reconnect; the daemon says an outage once, so its own lines are kept quiet.
_librdkafka_log = logging.getLogger(f"{__name__}.librdkafka")
_librdkafka_log.setLevel(logging.CRITICAL)

_FLUSH_SLICE_S = 5.0
_ADMIN_TIMEOUT_S = 15.0
_SECURITY = {
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}


def client_settings(kafka: Kafka, extra: dict[str, object]) -> dict:
    """librdkafka properties shared by every client, then `extra` (underscores read as dots)."""
    settings = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": kafka.client_id,
        "security.protocol": kafka.security_protocol.lower(),
        "logger": _librdkafka_log,
    }
    settings.update({name: getattr(kafka, key) for key, name in _SECURITY.items() if getattr(kafka, key) is not None})
    settings.update({key.replace("_", "."): value for key, value in extra.items()})
    return settings


class Source:
    """A consumer-group member reading one topic; offsets are committed only when told.

    `positions` is the caller's live map (partition -> next offset) of what its state
    reflects; whenever partitions are assigned, consumption resumes there. With `handover`, as
    io/kafka.py's: an assigned partition waits for `resume`, and `on_revoke` writes what is revoked
    (here in the poll that learns of it, on the loop's thread: librdkafka heartbeats on its own).
    """

    def __init__(
        self,
        kafka: Kafka,
        topic: str,
        group_id: str,
        max_records: int,
        positions: dict[int, int] | None = None,
        handover: bool = False,
    ):
        self.topic = topic
        self._handover = handover
        self._events = Rebalances()
        self.closing = threading.Event()
        self.on_revoke: Callable[[frozenset[int]], None] = lambda partitions: None
        self._max_records = max_records
        self._positions = positions if positions is not None else {}
        self._brokers_up = True  # until the first statistics say otherwise
        self._consumer = Consumer(
            {
                **client_settings(kafka, kafka.consumer),
                "group.id": group_id,
                "enable.auto.commit": False,  # at-least-once: commit after the state is checkpointed
                "auto.offset.reset": kafka.auto_offset_reset,  # where a new group starts
                "allow.auto.create.topics": False,  # topics are created on purpose, never by accident
                "statistics.interval.ms": 1000,  # broker states, for `connected`
                "stats_cb": self._on_statistics,
                "error_cb": _log_error,
            }
        )
        self._consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def group_metadata(self):
        """What a transaction's offsets are committed for: the group, with this member's generation."""
        return self._consumer.consumer_group_metadata()

    def poll(self, timeout_ms: int) -> list[Polled]:
        """Records in partition order (each partition's records stay in offset order)."""
        messages = self._consumer.consume(num_messages=self._max_records, timeout=timeout_ms / 1000)
        polled = []
        for m in messages:
            if m.error() is not None:
                log.debug("%s: fetch error %s", self.topic, m.error())
                continue
            kind, stamp = m.timestamp()
            polled.append(Polled(m.partition(), m.offset(), m.key(), m.value(), None if kind == 0 else stamp))
        return polled

    def commit(self, offsets: dict[int, int], timeout_ms: int = 5000) -> bool:
        """Commit `offsets` for the partitions still assigned; best effort, as io/kafka.py's."""
        assigned = {tp.partition for tp in self._consumer.assignment()}
        committing = [TopicPartition(self.topic, p, o) for p, o in offsets.items() if p in assigned]
        if not committing:
            return True
        try:
            self._consumer.commit(offsets=committing, asynchronous=False)
        except KafkaException as error:
            log.debug("%s: offset commit failed (%s); the next checkpoint retries", self.topic, error)
            return False
        return True

    def assigned(self) -> bool:
        return bool(self._consumer.assignment())

    def connected(self) -> bool:
        """In contact with the cluster: some broker connection up, per librdkafka's latest statistics."""
        return self._brokers_up

    def lag(self) -> int:
        """Records not yet consumed on the assigned partitions, from the high watermarks of the last fetches."""
        return sum(max(0, end - position) for position, end in self._fetched().values())

    def ahead(self) -> dict[int, tuple[int, int]]:
        """Assigned partitions whose next offset lies past the topic's end: as io/kafka.py's."""
        return {p: (position, end) for p, (position, end) in self._fetched().items() if position > end}

    def _fetched(self) -> dict[int, tuple[int, int]]:
        """partition -> (next offset, high watermark) for the assigned partitions the last fetches reported on."""
        assignment = self._consumer.assignment()
        if not assignment:
            return {}
        found = {}
        for tp in self._consumer.position(assignment):
            # librdkafka's position is invalid (-1001) until a record of the partition is consumed:
            # until then, the next offset is where the partition was resumed
            position = tp.offset if tp.offset >= 0 else self._positions.get(tp.partition, -1)
            watermarks = self._consumer.get_watermark_offsets(tp, cached=True)
            if watermarks is not None and watermarks[1] >= 0 and position >= 0:
                found[tp.partition] = (position, watermarks[1])
        return found

    def close(self) -> None:
        self.closing.set()
        self._consumer.close()

    def rebalances(self) -> list[Rebalance]:
        """What was assigned (and, without handover, revoked) since the last call, in order."""
        return self._events.take()

    def resume(self, positions: dict[int, int]) -> None:
        """Start consuming the partitions given, each at its offset (-1: the group's committed offset). The group
        assigns eagerly, every partition at once, so these are the member's whole assignment."""
        self._consumer.assign(
            [TopicPartition(self.topic, p, offset if offset >= 0 else OFFSET_STORED) for p, offset in positions.items()]
        )

    def _on_assign(self, consumer, partitions) -> None:
        """Resume assigned partitions where the state stands (a live map), not at the group's committed offsets;
        with `handover`, once the loop has restored them (`resume`)."""
        assigned = sorted(tp.partition for tp in partitions)
        if self._handover:
            consumer.assign([])  # nothing fetched before the state is restored
            self._events.add("assigned", frozenset(assigned))
        else:
            for tp in partitions:
                if tp.partition in self._positions:
                    tp.offset = self._positions[tp.partition]
            consumer.assign(partitions)
        log.info("%s: assigned partitions %s", self.topic, assigned)

    def _on_revoke(self, consumer, partitions) -> None:
        revoked = frozenset(tp.partition for tp in partitions)
        if revoked:
            log.info("%s: partitions %s revoked", self.topic, sorted(revoked))
        if self._handover and revoked and not self.closing.is_set():
            self.on_revoke(revoked)
        consumer.unassign()

    def _on_statistics(self, text: str) -> None:
        brokers = json.loads(text).get("brokers", {}).values()
        self._brokers_up = any(b.get("state") == "UP" for b in brokers if b.get("nodeid", -1) >= 0)


class Sink:
    """A producer that delivers a batch completely or keeps retrying, with backoff, until stopped.

    A failing cluster is logged once when deliveries start failing and once when they recover.
    What the cluster refuses for good (`_refusal`) is not retried but returned, for the run loop's policy.
    """

    def __init__(self, kafka: Kafka):
        self._producer = Producer(_producer_settings(kafka))
        self._failing_since: float | None = None

    def deliver(self, messages: Sequence[Message], stop: threading.Event) -> Delivered:
        """Send all, wait for acknowledgements; resend what failed until it succeeds or `stop` is set; say what was
        refused for good, and where the rest was written."""
        return self.send(messages, stop).wait(stop)

    def send(self, messages: Sequence[Message], stop: threading.Event) -> Sending:
        """Hand all to the producer; what `deliver` does after that is left to the Sending's `wait`."""
        if not messages:
            return Sending.delivered(Delivered())
        messages, failed, written = list(messages), [], []
        self._send(messages, failed, written, stop)
        return Sending(lambda stop: self._acknowledged(messages, failed, written, stop))

    def _acknowledged(self, pending: list[Message], failed: list, written: list, stop: threading.Event) -> Delivered:
        refused, backoff, waited = [], 0.5, 0.0
        while pending:
            waiting_since = time.perf_counter()
            self._wait_for_acknowledgements(len(pending), stop)
            waited += time.perf_counter() - waiting_since
            refused += [Refused(m, reason, e.str()) for m, e in failed if (reason := _refusal(e)) is not None]
            pending = [m for m, e in failed if _refusal(e) is None]
            if pending:
                self._announce_trouble(f"{counted(len(pending), 'record')} failed")
                if stop.wait(backoff):
                    raise DeliveryError(
                        f"{counted(len(pending), 'record')} undelivered at shutdown; their inputs stay uncommitted"
                    )
                backoff = min(2 * backoff, 30.0)
                failed = []
                self._send(pending, failed, written, stop)
        if self._failing_since is not None:
            log.info("deliveries recovered after %.0f s", time.monotonic() - self._failing_since)
            self._failing_since = None
        return Delivered(refused, written, waited)

    def _send(self, messages: Sequence[Message], failed: list, written: list, stop: threading.Event) -> None:
        """Produce each message; what fails lands in `failed` as (message, error), now or at its delivery report, and
        where each other was written in `written` as (partition, offset)."""
        for message in messages:

            def delivered(error, record, message=message):
                if error is not None:
                    log.debug("delivery to %s failed: %s", message.topic, error)
                    failed.append((message, error))
                else:
                    written.append((record.partition(), record.offset()))

            try:
                _produce(self._producer, message, stop, on_delivery=delivered)
            except KafkaException as error:
                log.debug("send to %s failed: %s", message.topic, error)
                failed.append((message, error.args[0]))

    def _wait_for_acknowledgements(self, count: int, stop: threading.Event) -> None:
        """Flush in slices: librdkafka retries internally for minutes, and a stall must be said, once."""
        while self._producer.flush(_FLUSH_SLICE_S) > 0:
            self._announce_trouble(f"{counted(count, 'record')} unacknowledged after {_FLUSH_SLICE_S:.0f} s")
            if stop.is_set():
                raise DeliveryError(
                    f"{counted(count, 'record')} unacknowledged at shutdown; their inputs stay uncommitted"
                )

    def _announce_trouble(self, what: str) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("deliveries failing (%s); retrying until the cluster answers", what)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout_s)


def _producer_settings(kafka: Kafka) -> dict:
    return {"acks": "all", "linger.ms": 5, **client_settings(kafka, kafka.producer), "error_cb": _log_error}


def _produce(producer: Producer, message: Message, stop: threading.Event, **delivery) -> None:
    """Produce one message, waiting while the local queue is full; a DeliveryError if `stop` is set meanwhile."""
    while True:
        try:
            producer.produce(
                message.topic,
                value=message.value,
                key=message.key,
                headers=list(message.headers),
                **delivery,
                **({} if message.partition is None else {"partition": message.partition}),
                **({} if message.timestamp_ms is None else {"timestamp": message.timestamp_ms}),
            )
            return
        except BufferError:  # the local queue is full: let deliveries drain it
            producer.poll(0.1)
            if stop.is_set():
                raise DeliveryError("records unsent at shutdown; their inputs stay uncommitted") from None


class Transaction:
    """The transactional producer of one input partition (exactly-once mode): as io/kafka.py's.

    The offsets are committed with the consumer's group metadata, so a Kafka broker of version 2.5 or
    later also refuses them from a member of an older generation (KIP-447); tansu does not check it.
    """

    def __init__(self, kafka: Kafka, transactional_id: str, timeout_ms: int):
        settings = {**_producer_settings(kafka), "transactional.id": transactional_id}
        self.id, self._open, self._timeout_s = transactional_id, False, timeout_ms / 1000
        self._producer = Producer({**settings, "transaction.timeout.ms": timeout_ms})
        self._call("starting", self._producer.init_transactions, self._timeout_s)

    def send(self, messages: Sequence[Message], stop: threading.Event) -> None:
        """Send within the open transaction (begun here if none is), without waiting: the commit does."""
        if not self._open:
            self._call("beginning", self._producer.begin_transaction)
            self._open = True
        for message in messages:
            self._call("sending", _produce, self._producer, message, stop)

    def commit(self, topic: str, partition: int, offset: int, group) -> None:
        """Commit what was sent, with `offset` as the group's next offset of input `partition`; nothing if none
        was sent."""
        if not self._open:
            return
        offsets = [TopicPartition(topic, partition, offset)]
        self._call("committing", self._producer.send_offsets_to_transaction, offsets, group, self._timeout_s)
        self._call("committing", self._producer.commit_transaction, self._timeout_s)
        self._open = False

    def _call(self, doing: str, action, *args):
        try:
            return action(*args)
        except KafkaException as error:
            self._abort()
            raise TransactionError(f"transaction {self.id}: {doing} failed: {error.args[0].str()}") from None

    def _abort(self) -> None:
        if self._open:
            self._open = False
            try:
                self._producer.abort_transaction(self._timeout_s)
            except KafkaException:  # fenced: the broker has aborted it already
                pass

    def close(self, timeout_s: float = 10.0) -> None:
        """Close without committing: an open transaction is aborted, by the broker at the latest."""
        try:
            self._producer.flush(timeout_s)
        except KafkaException:  # fenced, say: nothing of it is to be delivered
            pass


# Errors no retry can cure, by the label counted for them. librdkafka retries the rest itself, and a delivery report's
# `retriable()` is false for a message that merely timed out in an outage: only these codes are final.
_REFUSALS = {
    KafkaError.MSG_SIZE_TOO_LARGE: "message_too_large",
    KafkaError.TOPIC_AUTHORIZATION_FAILED: "not_authorized",
    KafkaError.CLUSTER_AUTHORIZATION_FAILED: "not_authorized",
    KafkaError._UNKNOWN_TOPIC: "unknown_topic",
    KafkaError.UNKNOWN_TOPIC_OR_PART: "unknown_topic",
    KafkaError.TOPIC_EXCEPTION: "unknown_topic",
}


def _refusal(error: KafkaError) -> str | None:
    """The reason Kafka refused a message for good, or None when retrying may help (an outage, a timeout)."""
    return _REFUSALS.get(error.code(), "refused" if error.fatal() else None)


def _log_error(error: KafkaError) -> None:
    """librdkafka's client-level errors (brokers down, and so on): retried internally, said by the daemon once."""
    log.debug("librdkafka: %s", error)


def create_topics(kafka: Kafka, topics: Iterable[tuple[str, int]], compacted: Collection[str] = ()) -> list[str]:
    """Create (name, partitions) topics that do not exist yet, those in `compacted` with cleanup.policy=compact;
    returns the names created."""
    admin = _admin(kafka)
    wanted = dict(topics)
    existing = _topic_names(admin, kafka)
    new = [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=-1,
            config={"cleanup.policy": "compact"} if name in compacted else {},
        )
        for name, partitions in wanted.items()
        if name not in existing
    ]
    if not new:
        return []
    for name, future in admin.create_topics(new, operation_timeout=_ADMIN_TIMEOUT_S).items():
        try:
            future.result()
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # created by someone else meanwhile
                raise ForecasterError(f"cannot create topic {name}: {error}") from None
    return [topic.topic for topic in new]


def missing_topics(kafka: Kafka, names: Iterable[str]) -> list[str]:
    """Which of `names` the cluster does not have."""
    existing = _topic_names(_admin(kafka), kafka)
    return [name for name in names if name not in existing]


def _admin(kafka: Kafka) -> AdminClient:
    return AdminClient({**client_settings(kafka, kafka.admin), "error_cb": _log_error})


def _topic_names(admin: AdminClient, kafka: Kafka) -> set[str]:
    """The cluster's topics; an unreachable cluster is a ForecasterError that says where we looked."""
    try:
        return set(admin.list_topics(timeout=_ADMIN_TIMEOUT_S).topics)
    except KafkaException as error:
        raise ForecasterError(
            f"cannot connect to Kafka at {kafka.bootstrap_servers}: {error} "
            "(check kafka.bootstrap_servers, or start a broker)"
        ) from None


def partition_count(kafka: Kafka, topic: str) -> int | None:
    """How many partitions `topic` has (None: no such topic)."""
    try:
        found = _admin(kafka).list_topics(topic, timeout=_ADMIN_TIMEOUT_S).topics.get(topic)
    except KafkaException as error:
        raise ForecasterError(f"cannot read the partitions of {topic}: {error}") from None
    return None if found is None or found.error is not None else len(found.partitions)


def read_partition(
    kafka: Kafka, topic: str, partition: int, timeout_s: float = 60.0, start: int = 0, committed: bool = False
) -> list[Polled]:
    """Every record of one partition from offset `start` (or its start, if later) to its end as it stands when
    asked (by position). With `committed`, only records of committed transactions, up to the last stable offset."""
    return read_tail(kafka, topic, partition, start, timeout_s, committed)[0]


def read_tail(
    kafka: Kafka, topic: str, partition: int, start: int, timeout_s: float = 60.0, committed: bool = False
) -> tuple[list[Polled], int, int]:
    """`read_partition`'s records, and the partition's first and end offsets when asked."""
    consumer = Consumer(
        {
            **client_settings(kafka, {}),
            "group.id": f"{topic}.reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
            "error_cb": _log_error,
        }
    )
    try:
        low, end = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=_ADMIN_TIMEOUT_S)
        position = max(low, start)
        consumer.assign([TopicPartition(topic, partition, position if position > low else OFFSET_BEGINNING)])
        found, deadline = [], time.monotonic() + timeout_s
        while position < end:
            if time.monotonic() > deadline:
                raise ForecasterError(
                    f"{topic}[{partition}]: read {len(found)} records in {timeout_s:g} s, short of {end}"
                )
            for m in consumer.consume(num_messages=10_000, timeout=0.2):
                if m.error() is None:
                    found.append(Polled(partition, m.offset(), m.key(), m.value()))
                    position = m.offset() + 1
            position = max(position, consumer.position([TopicPartition(topic, partition)])[0].offset)
        return found, low, end
    finally:
        consumer.close()
