"""The only module that imports kafka-python: a consumer-group source, a producing sink, topic admin.

Nothing here depends on the embedded broker: the same calls serve a user's Kafka cluster.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from kafka.partitioner.default import DefaultPartitioner, murmur2
from kafka.structs import OffsetAndMetadata

from forecaster.config import Kafka
from forecaster.errors import DeliveryError, ForecasterError, TransactionError
from forecaster.io.messages import Delivered, Message, Polled, Rebalance, Rebalances, Refused, Sending
from forecaster.words import counted

log = logging.getLogger(__name__)

_FLUSH_SLICE_S = 5.0
# How long the broker may hold a fetch that finds no records (kafka-python's default: 500 ms). Kafka answers it as
# soon as records arrive; tansu, the embedded broker, only once the wait is over, and the records that arrived
# meanwhile waited up to that long before the daemon saw them (p50 130 ms at 500, 6 ms at 20). An idle consumer
# asks again each time: 40 small requests a second. kafka.consumer's fetch_max_wait_ms overrides it.
_FETCH_MAX_WAIT_MS = 25
_REVOKE_WAIT_S = 60.0  # how long a revocation waits for the run loop to write the partitions' state


_SECURITY = (
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
)


def client_settings(kafka: Kafka) -> dict:
    """Settings shared by every client: servers, identity, security (SASL and TLS only where configured)."""
    settings = {
        "bootstrap_servers": [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()],
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    settings.update({name: getattr(kafka, name) for name in _SECURITY if getattr(kafka, name) is not None})
    return settings


def _connect(factory, kafka: Kafka, **settings):
    """Build a client; an unreachable cluster is a ForecasterError that says where we looked."""
    try:
        return factory(**settings)
    except KafkaError as error:  # kafka-python 3 reports an unreachable cluster as "Unable to bootstrap"
        raise ForecasterError(
            f"cannot connect to Kafka at {kafka.bootstrap_servers}: {error} "
            "(check kafka.bootstrap_servers, or start a broker)"
        ) from None


class Source:
    """A consumer-group member reading one topic; offsets are committed only when told.

    `positions` is the caller's live map (partition -> next offset) of what its state
    reflects. Whenever partitions are assigned, at start or after any rebalance (a
    rejoin after an outage, say), consumption resumes there, wherever the group's
    committed offsets stand: records are neither skipped nor stepped twice.

    With `handover` (the changelog) an assigned partition is paused instead, until the run loop
    has restored its state and calls `resume`; `rebalances` tells the loop what was assigned, and
    `on_revoke` is called to write what is revoked before the group moves it on.
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
        self.topic, self._group_id = topic, group_id
        self._events = Rebalances()
        self._max_records = max_records
        settings = {"fetch_max_wait_ms": _FETCH_MAX_WAIT_MS, **client_settings(kafka), **kafka.consumer}
        self._session_timeout_s = settings.get("session_timeout_ms", 45_000) / 1000
        self._consumer = _connect(
            KafkaConsumer,
            kafka,
            group_id=group_id,
            enable_auto_commit=False,  # at-least-once: commit after the state is checkpointed
            auto_offset_reset=kafka.auto_offset_reset,  # where a new group starts
            max_poll_records=max_records,
            allow_auto_create_topics=False,  # topics are created on purpose (`forecaster topics`), never by accident
            **settings,
        )
        self.closing = threading.Event()
        # with `handover`: called with the revoked partitions, on a thread of its own; it must write their state
        self.on_revoke: Callable[[frozenset[int]], None] = lambda partitions: None
        if handover:
            listener = _HandOver(self, self._consumer, topic, self._events)
        else:
            listener = _SeekOnAssign(self._consumer, topic, positions if positions is not None else {}, self._events)
        self._consumer.subscribe([topic], listener=listener)

    def rebalances(self) -> list[Rebalance]:
        """What was assigned (and, without handover, revoked) since the last call, in order."""
        return self._events.take()

    def resume(self, positions: dict[int, int]) -> None:
        """Start consuming paused partitions, each at its offset (-1: where the group's committed offset says);
        partitions no longer assigned are left alone."""
        assigned = {tp.partition: tp for tp in self._consumer.assignment()}
        mine = [(assigned[p], offset) for p, offset in positions.items() if p in assigned]
        for tp, offset in mine:
            if offset >= 0:
                self._consumer.seek(tp, offset)
        self._consumer.resume(*[tp for tp, _ in mine])

    def group_metadata(self) -> str:
        """What a transaction's offsets are committed for: the group alone. A stale owner is fenced by the
        transactional id of its partition (`Transaction`), not by the group's generation."""
        return self._group_id

    def poll(self, timeout_ms: int) -> list[Polled]:
        """Records in partition order (each partition's records stay in offset order)."""
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=self._max_records)
        return [Polled(tp.partition, r.offset, r.key, r.value, r.timestamp) for tp, rs in batches.items() for r in rs]

    def commit(self, offsets: dict[int, int], timeout_ms: int = 5000) -> bool:
        """Commit `offsets` (partition -> next offset to consume) for the partitions still assigned.

        Best effort: during an outage the commit fails and the next checkpoint commits the
        (newer) offsets again; the checkpoint, not the group, is what a restart resumes from.
        """
        assigned = {tp.partition for tp in self._consumer.assignment()}
        committing = {
            TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items() if p in assigned
        }
        if not committing:
            return True
        try:
            self._consumer.commit(committing, timeout_ms=timeout_ms)
        except KafkaError as error:
            log.debug("%s: offset commit failed (%s); the next checkpoint retries", self.topic, error)
            return False
        return True

    def assigned(self) -> bool:
        return bool(self._consumer.assignment())

    def connected(self) -> bool:
        """In contact with the cluster: connections open and group heartbeats answered lately."""
        metrics = self._consumer.metrics()
        connections = metrics.get("consumer-metrics", {}).get("connection-count", 0)
        heartbeat_age = metrics.get("consumer-coordinator-metrics", {}).get("last-heartbeat-seconds-ago", math.inf)
        joining = heartbeat_age == math.inf  # no heartbeat yet: still joining the group
        return connections > 0 and (joining or heartbeat_age < self._session_timeout_s)

    def lag(self) -> int:
        """Records not yet consumed on the assigned partitions (from the last fetch's high watermarks)."""
        return sum(max(0, end - position) for position, end in self._fetched().values())

    def ahead(self) -> dict[int, tuple[int, int]]:
        """Assigned partitions whose next offset lies past the topic's end, by the last fetch's high
        watermarks: partition -> (next offset, end). A checkpoint resumed against a recreated
        topic, or another cluster, waits there for records that may never come."""
        return {p: (position, end) for p, (position, end) in self._fetched().items() if position > end}

    def _fetched(self) -> dict[int, tuple[int, int]]:
        """partition -> (next offset, high watermark) for the assigned partitions a fetch has reported on."""
        found = {}
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                found[tp.partition] = (self._consumer.position(tp), highwater)
        return found

    def close(self) -> None:
        self.closing.set()  # the loop has written its state and stopped: leaving writes nothing more
        self._consumer.close(autocommit=False)


class _SeekOnAssign(ConsumerRebalanceListener):
    """Resume assigned partitions where the state stands (a live map), not at the group's committed offsets."""

    def __init__(self, consumer, topic: str, offsets: dict[int, int], events: Rebalances):
        self._consumer, self._topic, self._offsets, self._events = consumer, topic, offsets, events

    def on_partitions_assigned(self, assigned):
        for tp in assigned:
            if tp.partition in self._offsets:
                self._consumer.seek(tp, self._offsets[tp.partition])
        self._events.add("assigned", frozenset(tp.partition for tp in assigned))
        log.info("%s: assigned partitions %s", self._topic, sorted(tp.partition for tp in assigned))

    def on_partitions_revoked(self, revoked):
        if revoked:
            self._events.add("revoked", frozenset(tp.partition for tp in revoked))
            log.info("%s: partitions %s revoked", self._topic, sorted(tp.partition for tp in revoked))


class _HandOver(AsyncConsumerRebalanceListener):
    """With the changelog: an assigned partition is paused until the run loop has restored its state; a revoked
    partition's state is written by `Source.on_revoke`, on a thread of its own, before the group moves it on.

    Nothing runs in the callbacks themselves: the revocation awaits that thread on kafka-python's own event loop,
    whose other tasks (heartbeats) go on meanwhile, so its next owner restores all of the state.
    """

    def __init__(self, source: Source, consumer, topic: str, events: Rebalances):
        self._source, self._consumer, self._topic, self._events = source, consumer, topic, events

    async def on_partitions_assigned(self, assigned):
        self._consumer.pause(*assigned)
        self._events.add("assigned", frozenset(tp.partition for tp in assigned))
        log.info("%s: assigned partitions %s", self._topic, sorted(tp.partition for tp in assigned))

    async def on_partitions_revoked(self, revoked):
        if not revoked or self._source.closing.is_set():  # closing: the loop has written everything already
            return
        partitions = frozenset(tp.partition for tp in revoked)
        log.info("%s: partitions %s revoked", self._topic, sorted(partitions))
        writer = threading.Thread(target=self._source.on_revoke, args=(partitions,), name="hand-over", daemon=True)
        writer.start()
        deadline = time.monotonic() + _REVOKE_WAIT_S
        while writer.is_alive() and time.monotonic() < deadline:
            await self._consumer._net.sleep(0.05)  # kafka-python's event loop: its other tasks run meanwhile
        if writer.is_alive():
            log.warning("%s: partitions %s handed over before their state was written", self._topic, sorted(partitions))


class Sink:
    """A producer that delivers a batch completely or keeps retrying, with backoff, until stopped.

    A failing cluster is logged once when deliveries start failing and once when they
    recover, not on every retry. What the cluster refuses for good (`_refusal`) is not
    retried but returned, for the run loop's policy.
    """

    def __init__(self, kafka: Kafka):
        self._producer = _connect(KafkaProducer, kafka, **_producer_settings(kafka))
        self._failing_since: float | None = None

    def deliver(self, messages: Sequence[Message], stop: threading.Event) -> Delivered:
        """Send all, wait for acknowledgements; resend what failed until it succeeds or `stop` is set; say what was
        refused for good, and where the rest was written."""
        return self.send(messages, stop).wait(stop)

    def send(self, messages: Sequence[Message], stop: threading.Event) -> Sending:
        """Hand all to the producer; what `deliver` does after that is left to the Sending's `wait`."""
        if not messages:
            return Sending.delivered(Delivered())
        messages = list(messages)
        sent = self._send(messages)
        return Sending(lambda stop: self._acknowledged(messages, sent, stop))

    def _acknowledged(self, pending: list[Message], sent: list, stop: threading.Event) -> Delivered:
        refused, written, backoff, waited = [], [], 0.5, 0.0
        while pending:
            waiting_since = time.perf_counter()
            self._wait_for_acknowledgements(len(pending), stop)
            waited += time.perf_counter() - waiting_since
            pending = []
            for message, future in sent:  # one pass: written, refused for good, or to be sent again
                if not isinstance(future, Exception) and future.succeeded():
                    written.append((future.value.partition, future.value.offset))
                    continue
                error = future if isinstance(future, Exception) else future.exception
                reason = _refusal(error)
                if reason is None:
                    pending.append(message)
                else:
                    refused.append(Refused(message, reason, str(error)))
            if pending:
                self._announce_trouble(f"{counted(len(pending), 'record')} failed")
                if stop.wait(backoff):
                    raise DeliveryError(
                        f"{counted(len(pending), 'record')} undelivered at shutdown; their inputs stay uncommitted"
                    )
                backoff = min(2 * backoff, 30.0)
                sent = self._send(pending)
        if self._failing_since is not None:
            log.info("deliveries recovered after %.0f s", time.monotonic() - self._failing_since)
            self._failing_since = None
        return Delivered(refused, written, waited)

    def _send(self, messages: Sequence[Message]) -> list:
        """(message, its future, or the error that kept it from being sent) for each message."""
        sent = []
        for message in messages:
            try:
                future = _send(self._producer, message)
            except KafkaError as error:
                log.debug("send to %s failed: %s", message.topic, error)
                future = error
            sent.append((message, future))
        return sent

    def _wait_for_acknowledgements(self, count: int, stop: threading.Event) -> None:
        """Flush in slices: the producer retries internally for minutes, and a stall must be said, once."""
        while True:
            try:
                self._producer.flush(timeout=_FLUSH_SLICE_S)
                return
            except KafkaTimeoutError:
                self._announce_trouble(f"{counted(count, 'record')} unacknowledged after {_FLUSH_SLICE_S:.0f} s")
                if stop.is_set():
                    raise DeliveryError(
                        f"{counted(count, 'record')} unacknowledged at shutdown; their inputs stay uncommitted"
                    ) from None

    def _announce_trouble(self, what: str) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning("deliveries failing (%s); retrying until the cluster answers", what)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.close(timeout=timeout_s)


def _producer_settings(kafka: Kafka) -> dict:
    # 512 KiB batches, not kafka-python's 16 KiB: each new batch wakes the sender thread, which
    # costs the run loop the GIL; a poll batch of forecasts (about 1 KiB each) then needs a few.
    return {
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 512 * 1024,
        "partitioner": KeyHashCache(),
        **client_settings(kafka),
        **kafka.producer,
    }


class KeyHashCache(DefaultPartitioner):
    """kafka-python's default partitioner, the Java client's murmur2 of the key modulo the partitions, with each
    key's hash remembered: a series' forecasts carry the same key every step, and the hash in pure Python takes
    3.5 µs of a send's 20 µs. Records go to the partitions they always went to."""

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        if serialized_key is None:
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        if topic not in cluster.topics():
            raise ValueError(f"Topic {topic} not found in ClusterMetadata")
        every = sorted(cluster.partitions_for_topic(topic))
        return every[(_murmur2(serialized_key) & 0x7FFFFFFF) % len(every)]


# About 130,000 keys (some 20 MB): beyond that the keys least recently sent are hashed again.
_murmur2 = functools.lru_cache(maxsize=1 << 17)(murmur2)


def _send(producer: KafkaProducer, message: Message):
    return producer.send(
        message.topic,
        value=message.value,
        key=message.key,
        headers=list(message.headers),
        partition=message.partition,
        timestamp_ms=message.timestamp_ms,
    )


class Transaction:
    """The transactional producer of one input partition (exactly-once mode, io/transactions.py).

    Starting it fences every earlier producer with the same transactional id, a previous owner of the
    partition: its open transaction is aborted and its next one fails. What is sent from one `commit`
    to the next is committed with the partition's input offset, atomically, or not at all. Any failure
    aborts the transaction and raises TransactionError: its partition's state is then suspect.
    """

    def __init__(self, kafka: Kafka, transactional_id: str, timeout_ms: int):
        settings = {**_producer_settings(kafka), "transactional_id": transactional_id}
        self.id, self._open = transactional_id, False
        self._producer = _connect(KafkaProducer, kafka, transaction_timeout_ms=timeout_ms, **settings)
        self._call("starting", self._producer.init_transactions)

    def send(self, messages: Sequence[Message], stop: threading.Event) -> None:
        """Send within the open transaction (begun here if none is), without waiting: the commit does."""
        if not self._open:
            self._call("beginning", self._producer.begin_transaction)
            self._open = True
        for message in messages:
            self._call("sending", _send, self._producer, message)

    def commit(self, topic: str, partition: int, offset: int, group: str) -> None:
        """Commit what was sent, with `offset` as the group's next offset of input `partition`; nothing if none
        was sent."""
        if not self._open:
            return
        offsets = {TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)}
        self._call("committing", self._producer.send_offsets_to_transaction, offsets, group)
        self._call("committing", self._producer.commit_transaction)
        self._open = False

    def _call(self, doing: str, action, *args):
        try:
            return action(*args)
        except KafkaError as error:
            self._abort()
            raise TransactionError(f"transaction {self.id}: {doing} failed: {error}") from None

    def _abort(self) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(KafkaError):  # fenced: the broker has aborted it already
                self._producer.abort_transaction()

    def close(self, timeout_s: float = 10.0) -> None:
        """Close without committing: an open transaction is aborted, by the broker at the latest."""
        with contextlib.suppress(KafkaError):  # fenced, say: nothing of it is to be delivered
            self._producer.close(timeout=timeout_s)


# Errors no retry can cure, by the label counted for them; other non-retriable broker errors count as `refused`
_REFUSALS = {
    kafka_errors.MessageSizeTooLargeError: "message_too_large",
    kafka_errors.RecordListTooLargeError: "message_too_large",
    kafka_errors.TopicAuthorizationFailedError: "not_authorized",
    kafka_errors.ClusterAuthorizationFailedError: "not_authorized",
    kafka_errors.InvalidTopicError: "unknown_topic",
}


def _refusal(error: Exception) -> str | None:
    """The reason Kafka refused a message for good, or None when retrying may help (an outage, a timeout)."""
    for kind, reason in _REFUSALS.items():
        if isinstance(error, kind):
            return reason
    if isinstance(error, kafka_errors.BrokerResponseError) and not error.retriable:
        return "refused"
    return None


def create_topics(kafka: Kafka, topics: Iterable[tuple[str, int]], compacted: Collection[str] = ()) -> list[str]:
    """Create (name, partitions) topics that do not exist yet, those in `compacted` with cleanup.policy=compact;
    returns the names created.

    Replication is left to the cluster's default.replication.factor (Kafka >= 2.4).
    """
    wanted = dict(topics)
    with _admin(kafka) as admin:
        new = {
            name: {
                "num_partitions": partitions,
                "replication_factor": -1,
                **({"configs": {"cleanup.policy": "compact"}} if name in compacted else {}),
            }
            for name, partitions in wanted.items()
            if name not in set(admin.list_topics())
        }
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


def read_topic(bootstrap: str, topic: str, count: int, timeout_s: float = 90.0, linger_s: float = 1.0) -> list:
    """Every record of `topic` from the beginning, once `count` have arrived (plus any that follow within
    `linger_s`): for tests and benchmarks that check what a pipeline produced."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        got, deadline = [], time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            got += [r for rs in consumer.poll(timeout_ms=500).values() for r in rs]
        linger_until = time.monotonic() + linger_s
        while time.monotonic() < linger_until:  # anything beyond `count` would be a duplicate
            got += [r for rs in consumer.poll(timeout_ms=200).values() for r in rs]
        return got
    finally:
        consumer.close()


def partition_count(kafka: Kafka, topic: str) -> int | None:
    """How many partitions `topic` has (None: no such topic)."""
    consumer = _connect(KafkaConsumer, kafka, **client_settings(kafka))
    try:
        partitions = consumer.partitions_for_topic(topic)
        return None if partitions is None else len(partitions)
    finally:
        consumer.close()


def read_partition(
    kafka: Kafka, topic: str, partition: int, timeout_s: float = 60.0, start: int = 0, committed: bool = False
) -> list[Polled]:
    """Every record of one partition from offset `start` (or its start, if later) to its end as it stands when
    asked (by position: the end offset counts transaction markers and compacted gaps alike). With `committed`,
    only records of committed transactions, up to the last stable offset."""
    return read_tail(kafka, topic, partition, start, timeout_s, committed)[0]


def read_tail(
    kafka: Kafka, topic: str, partition: int, start: int, timeout_s: float = 60.0, committed: bool = False
) -> tuple[list[Polled], int, int]:
    """`read_partition`'s records, and the partition's first and end offsets when asked."""
    consumer = _connect(
        KafkaConsumer,
        kafka,
        enable_auto_commit=False,
        isolation_level="read_committed" if committed else "read_uncommitted",
        **client_settings(kafka),
    )
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        first = consumer.beginning_offsets([tp])[tp]
        consumer.seek(tp, max(first, start))
        end = consumer.end_offsets([tp])[tp]
        found, deadline = [], time.monotonic() + timeout_s
        while consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise ForecasterError(
                    f"{topic}[{partition}]: read {len(found)} records in {timeout_s:g} s, short of {end}"
                )
            for records in consumer.poll(timeout_ms=200).values():
                found += [Polled(partition, r.offset, r.key, r.value) for r in records]
        return found, first, end
    finally:
        consumer.close()
