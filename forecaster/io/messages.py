"""What the run loop exchanges with Kafka, whichever client serves it: records in, messages out.

`Source` and `Sink` are the two protocols each client module (io/kafka.py, io/confluent.py)
implements; the run loop depends on these alone, so it runs without Kafka in tests.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Message:
    """A record to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = field(default=())
    partition: int | None = None  # None: the producer's partitioner picks it from the key
    origin: int | None = None  # the input partition it follows from: its transaction, in exactly-once mode
    timestamp_ms: int | None = None  # its Kafka timestamp, epoch milliseconds; None: the producer's clock


@dataclass(frozen=True)
class Refused:
    """A message Kafka refused for good: retrying cannot help. `reason` is a short label for metrics:
    `message_too_large`, `not_authorized`, `unknown_topic` or `refused` (another non-retriable error)."""

    message: Message
    reason: str
    detail: str


@dataclass(frozen=True)
class Delivered:
    """What a Sink's `deliver` says of a batch: the records Kafka refused for good, and the (partition, offset) each
    acknowledged record was written at, in no promised order (none from a sink that learns them only at a commit:
    io/transactions.py)."""

    refused: list[Refused] = field(default_factory=list)
    written: list[tuple[int, int]] = field(default_factory=list)
    waiting_s: float = 0.0  # seconds of the call spent waiting for acknowledgements (the stage `acknowledge`)


class Sending:
    """Messages handed to a producer, their acknowledgements still to come: `wait` blocks until Kafka has them all
    (retrying what failed, as `Sink.deliver` does) and says what became of them. A sink with nothing to wait for
    returns one already `done`."""

    def __init__(self, wait: Callable[[threading.Event], Delivered]):
        self._wait, self._delivered = wait, None

    @classmethod
    def delivered(cls, delivered: Delivered) -> Sending:
        sending = cls(lambda stop: delivered)
        sending._delivered = delivered
        return sending

    @property
    def done(self) -> bool:
        return self._delivered is not None

    def wait(self, stop: threading.Event) -> Delivered:
        if self._delivered is None:
            self._delivered = self._wait(stop)
        return self._delivered


@dataclass(frozen=True)
class Rebalance:
    """Partitions of the input topic this member lost ("revoked") or was given ("assigned"), in the order the
    group moved them. An assigned partition stays paused until `Source.resume`: its state is restored first."""

    kind: str
    partitions: frozenset[int]


@dataclass(frozen=True)
class Polled:
    """One consumed record: what the run loop needs of it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None  # its Kafka timestamp (the producer's clock, or the broker's); None: unknown


class Rebalances:
    """What the group moved, from the consumer's callbacks to the run loop: appended there, taken here, in order
    (a deque: safe across the two threads)."""

    def __init__(self):
        self._moved: collections.deque[Rebalance] = collections.deque()

    def add(self, kind: str, partitions) -> None:
        self._moved.append(Rebalance(kind, frozenset(partitions)))

    def take(self) -> list[Rebalance]:
        moved = []
        while self._moved:
            moved.append(self._moved.popleft())
        return moved


class Source(Protocol):
    """A consumer-group member of one input topic that resumes each partition where the state stands."""

    def poll(self, timeout_ms: int) -> list[Polled]: ...
    def commit(self, offsets: dict[int, int]) -> bool: ...
    def assigned(self) -> bool: ...
    def connected(self) -> bool: ...
    def lag(self) -> int: ...
    def ahead(self) -> dict[int, tuple[int, int]]: ...
    def close(self) -> None: ...

    # with the changelog: what moved, resuming what was restored, and writing what is revoked (on another thread)
    on_revoke: Callable[[frozenset[int]], None]

    def rebalances(self) -> list[Rebalance]: ...
    def resume(self, positions: dict[int, int]) -> None: ...


class Sink(Protocol):
    """A producer that delivers a batch completely, or raises DeliveryError once `stop` is set.

    Retriable errors (an outage, a leader moving) are retried with backoff; what Kafka refuses for
    good is returned, once the rest is acknowledged, for the caller's policy (forecaster/delivery.py),
    with the (partition, offset) each other record was written at (io/clients.py's changelog copies).
    """

    def deliver(self, messages: Sequence[Message], stop: threading.Event) -> Delivered: ...

    # what deliver does in two halves: hand the messages to the client, and later wait for Kafka's acknowledgements
    def send(self, messages: Sequence[Message], stop: threading.Event) -> Sending: ...
    def close(self) -> None: ...
