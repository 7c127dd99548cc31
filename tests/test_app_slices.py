"""The run loop keeps a poll batch's memory bounded: it decodes, steps and delivers `batching.slice_records` records
at a time; overlong keys are dead-lettered; series the memory spill drops are counted."""

import dataclasses
import json
import logging
import threading

import numpy as np
from prometheus_client import CollectorRegistry
from test_app import FakeSink, FakeSource, record
from test_app_batched import batch_message, observation

from forecaster import build
from forecaster.app import PipelineWorker
from forecaster.build import seeded_model
from forecaster.config import Limits
from forecaster.io.messages import Polled
from forecaster.metrics import Metrics

from support import make_pipeline


class CountingSink(FakeSink):
    """Keeps, for each delivery, how many forecasts it carried."""

    def __init__(self, source):
        super().__init__(source)
        self.deliveries = []

    def deliver(self, messages, stop):
        self.deliveries.append(sum(m.topic == "out" for m in messages))
        return super().deliver(messages, stop)


def worker(batches, slice_records=10_000, **changes):
    pipeline = make_pipeline(**changes.pop("make", {}))
    pipeline = dataclasses.replace(
        pipeline, batching=dataclasses.replace(pipeline.batching, slice_records=slice_records), **changes
    )
    source = FakeSource(batches)
    sink = CountingSink(source)
    registry = CollectorRegistry()
    engine = build.engine(pipeline, seeded_model(pipeline))
    w = PipelineWorker(pipeline, engine, source, sink, Metrics(registry), threading.Event())
    return w, source, sink, registry


def poll_batch():
    """Seven records in four messages: a batch message of three, one of its own, a batch message of two, one."""
    return [
        batch_message(observation("a", 0, 1.0), observation("b", 0, 2.0), observation("c", 0, 3.0), offset=0),
        record("d", 0, 4.0, offset=1),
        batch_message(observation("a", 1, 1.5), observation("e", 0, 5.0), offset=2),
        record("b", 1, 2.5, offset=3),
    ]


def forecasts(sink):
    return [
        {k: v for k, v in json.loads(m.value).items() if k != "issued_at"} for m in sink.messages if m.topic == "out"
    ]


def test_a_poll_batch_is_delivered_in_slices_of_at_most_slice_records_forecasts_each():
    sliced, source, sliced_sink, registry = worker([poll_batch()], slice_records=2)
    whole, _, whole_sink, _ = worker([poll_batch()])
    assert sliced.run_once() == 4 and whole.run_once() == 4
    assert whole_sink.deliveries == [7]
    assert sliced_sink.deliveries == [2, 1, 1, 2, 1]  # [a b | c], [d], [a e], [b]: each slice acknowledged in turn
    sliced_out, whole_out = forecasts(sliced_sink), forecasts(whole_sink)
    values = lambda out: np.array([f.pop("values") for f in out])  # noqa: E731
    # the same forecasts, in the same order (to float32 rounding: a step's batch is smaller)
    np.testing.assert_allclose(values(sliced_out), values(whole_out), rtol=1e-5)
    assert sliced_out == whole_out
    assert sliced.offsets == {0: 4} and source.events[-1] == "commit"
    assert registry.get_sample_value("forecaster_batch_records_count", {"pipeline": "test"}) == 1  # one poll batch


def test_a_slice_stops_before_the_message_that_would_take_it_past_slice_records():
    w, _, sink, _ = worker([poll_batch()], slice_records=4)
    w.run_once()
    assert sink.deliveries == [4, 3]  # [a b c d], [a e b]


def test_a_key_longer_than_max_key_bytes_is_dead_lettered_and_the_rest_forecast():
    long_key = "k" * 300
    batch = [record("a", 0, 1.0, offset=0), Polled(0, 1, b"x", json.dumps(observation(long_key, 0, 1.0)).encode())]
    w, _, sink, registry = worker([batch])
    w.run_once()
    assert [f["series"] for f in forecasts(sink)] == ["a"]
    dead = [m for m in sink.messages if m.topic == "dead"]
    assert [dict(m.headers)["forecaster.reason"] for m in dead] == [b"key_too_long"]
    assert (
        registry.get_sample_value("forecaster_records_rejected_total", {"pipeline": "test", "reason": "key_too_long"})
        == 1
    )
    assert make_pipeline().limits == Limits() and Limits().max_key_bytes == 256


def test_series_the_memory_spill_drops_are_counted_and_logged_once(caplog):
    pipeline = make_pipeline(max_series=2)
    per_series = build.spill(pipeline, seeded_model(pipeline), None).nbytes_per_series
    keys = [f"s{i}" for i in range(6)]
    batches = [[record(key, 0, 1.0, offset=i)] for i, key in enumerate(keys)]
    w, _, _, registry = worker(batches, make={"max_series": 2}, spill_max_bytes=2 * per_series)
    with caplog.at_level(logging.WARNING, logger="forecaster.app"):
        for _ in batches:
            w.run_once()
    # six series through two slots: four evicted, the spill keeps the newest two of them
    assert w.engine.store.evictions == 4
    assert registry.get_sample_value("forecaster_spill_dropped_total", {"pipeline": "test"}) == 2
    assert registry.get_sample_value("forecaster_spilled_series", {"pipeline": "test"}) == 2
    full = [r.getMessage() for r in caplog.records if "the spill is full" in r.getMessage()]
    assert len(full) == 1 and f"spill_max_bytes {2 * per_series}" in full[0]
