"""The stages of a pipeline's run loop, timed per poll batch: where a batch's time, and so its latency, goes.

Each batch's seconds per stage are observed into `forecaster_stage_seconds{pipeline,stage}` once the
batch is done, so a slow batch shows which stage made it slow, and the histogram's tail shows which
stage makes the latency's tail.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

from forecaster.io.messages import Polled
from forecaster.metrics import Metrics

# `wait` is not the loop's time: how long the batch's oldest record waited, from its Kafka timestamp to the poll
# that returned it (behind the batches before it, in the producer, the broker and the fetch)
STAGES = ("wait", "poll", "decode", "step", "encode", "produce", "acknowledge", "checkpoint", "retrain")


class Stages:
    """Seconds per stage of the poll batch in hand, observed into the pipeline's histogram by `observe`."""

    def __init__(self, metrics: Metrics, pipeline: str):
        self._histograms = {stage: metrics.stage_seconds.labels(pipeline, stage) for stage in STAGES}
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.last = dict.fromkeys(STAGES, 0.0)  # the seconds of the batch observed last (a benchmark reads them)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the time inside the block to `stage`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started

    def waited(self, polled: Sequence[Polled], now_ms: float) -> None:
        """The poll returned `polled` at `now_ms` (Unix milliseconds): its oldest record's wait (none if unknown)."""
        stamps = [p.timestamp_ms for p in polled if p.timestamp_ms is not None]
        if stamps:
            self.seconds["wait"] = max(0.0, now_ms - min(stamps)) / 1000

    def idle(self) -> None:
        """A poll brought nothing: its wait is no batch's, but what else was done then delays the next batch."""
        self.seconds["poll"] = 0.0

    def observe(self) -> None:
        """The batch is done: observe each stage's seconds, and start the next batch at zero."""
        for stage, seconds in self.seconds.items():
            self._histograms[stage].observe(seconds)
        self.last, self.seconds = self.seconds, dict.fromkeys(STAGES, 0.0)
