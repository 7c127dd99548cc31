"""Publish a real public dataset to a topic as JSON records, paced to a rate."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from forecaster.config import Kafka
from forecaster.io import datasets
from forecaster.io.clients import deliver_all, make_sink
from forecaster.io.messages import Message

_CHUNK = 500  # records per delivery: large enough to batch, small enough to pace smoothly


def messages(dataset: datasets.Dataset, topic: str, limit: int | None = None) -> list[Message]:
    """The dataset's records as keyed Kafka messages, in stream order."""
    rows = dataset.records if limit is None else dataset.records[:limit]
    key = dataset.key_field
    return [Message(topic, str(r[key]).encode(), json.dumps(r, separators=(",", ":")).encode()) for r in rows]


def replay(
    kafka: Kafka,
    dataset: str,
    topic: str,
    *,
    rate: float = 0.0,
    limit: int | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Publish `dataset` to `topic` at `rate` records/s (0: as fast as the broker takes them).

    Returns the number of records acknowledged; stops early when `stop` is set.
    """
    stop = stop or threading.Event()
    batch = messages(datasets.load(dataset), topic, limit)
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
