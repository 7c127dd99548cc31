"""What the run loop exchanges with Kafka, whichever client serves it: records in, messages out.

`Source` and `Sink` are the two protocols each client module (io/kafka.py, io/confluent.py)
implements; the run loop depends on these alone, so it runs without Kafka in tests.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


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


class Source(Protocol):
    """A consumer-group member of one input topic that resumes each partition where the state stands."""

    def poll(self, timeout_ms: int) -> list[Polled]: ...
    def commit(self, offsets: dict[int, int]) -> bool: ...
    def assigned(self) -> bool: ...
    def connected(self) -> bool: ...
    def lag(self) -> int: ...
    def ahead(self) -> dict[int, tuple[int, int]]: ...
    def close(self) -> None: ...


class Sink(Protocol):
    """A producer that delivers a batch completely, or raises DeliveryError once `stop` is set."""

    def deliver(self, messages: Sequence[Message], stop: threading.Event) -> None: ...
    def close(self) -> None: ...
