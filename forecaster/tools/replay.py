"""Publish a bundled dataset, or the records of a file, to a topic as JSON records, paced to a rate."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence

from forecaster.config import Kafka
from forecaster.io import datasets
from forecaster.io.clients import deliver_all, make_sink
from forecaster.io.messages import Message
from forecaster.serving.records import field

_CHUNK = 500  # records per delivery: large enough to batch, small enough to pace smoothly


def messages(dataset: datasets.Dataset, topic: str, limit: int | None = None) -> list[Message]:
    """The dataset's records as keyed Kafka messages, in stream order."""
    return record_messages(dataset.records, dataset.key_field, topic, limit)


def record_messages(rows: Sequence[dict], key_field: str, topic: str, limit: int | None = None) -> list[Message]:
    """Records as Kafka messages keyed by their series (`key_field` may be a dotted path), in the order given."""
    rows = rows if limit is None else rows[:limit]
    return [
        Message(topic, str(field(r, key_field)).encode(), json.dumps(r, separators=(",", ":")).encode()) for r in rows
    ]


def replay(
    kafka: Kafka,
    source: str | Sequence[dict],
    topic: str,
    *,
    rate: float = 0.0,
    limit: int | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
    key_field: str | None = None,
) -> int:
    """Publish a bundled dataset (by name) or records (read from a file, keyed by `key_field`) to `topic` at
    `rate` records/s (0: as fast as the broker takes them).

    Returns the number of records acknowledged; stops early when `stop` is set.
    """
    stop = stop or threading.Event()
    if isinstance(source, str):
        batch = messages(datasets.load(source), topic, limit)
    else:
        batch = record_messages(source, key_field, topic, limit)
    sink = make_sink(kafka)
    chunk_size = _CHUNK if rate <= 0 else max(1, min(_CHUNK, int(rate / 10)))  # about 10 deliveries a second
    started, sent = time.monotonic(), 0
    try:
        for begin in range(0, len(batch), chunk_size):
            if stop.is_set():
                break
            chunk = batch[begin : begin + chunk_size]
            deliver_all(sink, chunk, stop)
            sent += len(chunk)
            if progress:
                progress(sent, len(batch))
            if rate > 0 and stop.wait(max(0.0, started + sent / rate - time.monotonic())):
                break
    finally:
        sink.close()
    return sent
