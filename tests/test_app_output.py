"""What the run loop produces in each output format, and the Kafka timestamps it gives forecasts."""

import calendar
import dataclasses
import json
import threading

from prometheus_client import CollectorRegistry
from test_app import FakeSink, FakeSource, record

from forecaster.app import PipelineWorker
from forecaster.build import seeded_model
from forecaster.config import Batching, Output
from forecaster.metrics import Metrics
from forecaster.serving.engine import Engine

from support import make_pipeline

MIDNIGHT_MS = calendar.timegm((2024, 1, 1, 0, 0, 0)) * 1000
HOUR_MS = 3_600_000


def produced(batch, output: Output | None = None, per_message=1, registry=None) -> list:
    """The forecast messages a worker produces for one poll batch, with `output` settings (None: the defaults)."""
    pipeline = make_pipeline(horizon=4)
    batching = Batching(forecasts_per_message=per_message)
    pipeline = dataclasses.replace(pipeline, output=output or Output(), batching=batching)
    source = FakeSource([batch])
    sink = FakeSink(source)
    engine = Engine(pipeline, seeded_model(pipeline))
    metrics = Metrics(registry or CollectorRegistry())
    PipelineWorker(pipeline, engine, source, sink, metrics, threading.Event(), None, {}).run_once()
    return [m for m in sink.messages if m.topic == "out"]


BATCH = [record("a", 0, 1.0, offset=0), record("b", 2, 2.0, offset=1)]


def test_long_records_are_one_per_step_each_keyed_by_its_series():
    messages = produced(BATCH, Output(format="long"))
    rows = [json.loads(m.value) for m in messages]
    assert [(m.key, r["series"], r["step"]) for m, r in zip(messages, rows)] == [
        (key, key.decode(), step) for key in (b"a", b"b") for step in (1, 2, 3, 4)
    ]
    assert rows[0]["target_time"] == "2024-01-01T01:00:00+00:00" and isinstance(rows[0]["value"], float)


def test_wide_records_are_one_per_forecast_keyed_by_its_series():
    messages = produced(BATCH, Output(format="wide"))
    assert [(m.key, json.loads(m.value)["value_4"] is not None) for m in messages] == [(b"a", True), (b"b", True)]


def test_a_forecast_is_stamped_with_its_observations_time_by_default():
    assert [m.timestamp_ms for m in produced(BATCH)] == [MIDNIGHT_MS, MIDNIGHT_MS + 2 * HOUR_MS]
    assert [m.timestamp_ms for m in produced(BATCH, Output(format="long"))] == [MIDNIGHT_MS] * 4 + [
        MIDNIGHT_MS + 2 * HOUR_MS
    ] * 4


def test_with_timestamp_now_the_producer_stamps_forecasts():
    assert [m.timestamp_ms for m in produced(BATCH, Output(timestamp="now"))] == [None, None]
    assert {m.timestamp_ms for m in produced(BATCH, Output(timestamp="now"), per_message=10)} == {None}


def test_a_packed_message_is_stamped_with_its_newest_observation():
    hours = {"a": 0, "b": 5, "c": 3, "d": 1, "e": 7, "f": 2}  # six series in three buckets: some share a message
    messages = produced(
        [record(key, hour, 1.0, offset=i) for i, (key, hour) in enumerate(hours.items())], per_message=10
    )
    packed = [(m.timestamp_ms, [f["series"] for f in json.loads(m.value)]) for m in messages]
    assert max(len(series) for _, series in packed) > 1
    assert [stamp for stamp, _ in packed] == [
        MIDNIGHT_MS + HOUR_MS * max(hours[s] for s in series) for _, series in packed
    ]
    assert sorted(s for _, series in packed for s in series) == sorted(hours)


def test_records_keyed_otherwise_are_counted_and_forecast_under_their_series_key():
    registry = CollectorRegistry()
    other = dataclasses.replace(record("b", 1, 2.0, offset=1), key=b"not-b")
    unkeyed = dataclasses.replace(record("c", 1, 2.0, offset=2), key=None)
    messages = produced([record("a", 0, 1.0, offset=0), other, unkeyed], registry=registry)
    assert [m.key for m in messages] == [b"a", b"b", b"c"]
    assert registry.get_sample_value("forecaster_key_mismatches_total", {"pipeline": "test"}) == 2
