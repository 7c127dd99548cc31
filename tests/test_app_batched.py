"""The run loop with batch messages: many observations in one input message, many forecasts in one output message."""

import dataclasses
import json
import threading
import zlib

from prometheus_client import CollectorRegistry
from test_app import FakeSink, FakeSource, record

from forecaster.app import PipelineWorker
from forecaster.build import seeded_model
from forecaster.io.messages import Polled
from forecaster.metrics import Metrics
from forecaster.serving.engine import Engine

from support import make_pipeline


def observation(key, hour, y) -> dict:
    return {"key": key, "time": f"2024-01-01T{hour:02d}:00:00+00:00", "y": y}


def batch_message(*objects, partition=0, offset=0, key=b"batch") -> Polled:
    return Polled(partition, offset, key, json.dumps(list(objects)).encode())


def worker(batches, forecasts_per_message=1, partitions=3):
    pipeline = make_pipeline()
    pipeline = dataclasses.replace(
        pipeline,
        partitions=partitions,
        batching=dataclasses.replace(pipeline.batching, forecasts_per_message=forecasts_per_message),
    )
    source = FakeSource(batches)
    sink = FakeSink(source)
    registry = CollectorRegistry()
    w = PipelineWorker(
        pipeline, Engine(pipeline, seeded_model(pipeline)), source, sink, Metrics(registry), threading.Event()
    )
    return w, source, sink, registry


def out(sink):
    return [m for m in sink.messages if m.topic == "out"]


def test_a_batch_message_is_forecast_as_its_observations_one_by_one():
    objects = [observation("a", 0, 1.0), observation("b", 0, 2.0), observation("a", 1, 3.0)]
    batched, _, batched_sink, _ = worker([[batch_message(*objects, offset=4)]])
    single, _, single_sink, _ = worker(
        [[Polled(0, i, o["key"].encode(), json.dumps(o).encode()) for i, o in enumerate(objects)]]
    )
    batched.run_once()
    single.run_once()
    drop_issued = lambda sink: [
        (m.key, {k: v for k, v in json.loads(m.value).items() if k != "issued_at"}) for m in out(sink)
    ]
    assert drop_issued(batched_sink) == drop_issued(single_sink)
    assert [m.key for m in out(batched_sink)] == [b"a", b"b", b"a"]  # each forecast keyed by its own series
    assert batched.offsets == {0: 5}


def test_each_bad_element_is_dead_lettered_alone_with_its_index_and_the_rest_forecast():
    message = batch_message(
        observation("a", 0, 1.0),
        {"key": "b", "time": "later", "y": 1.0},
        42,
        observation("a", 0, 2.0),
        observation("c", 0, 3.0),
        offset=7,
        key=b"k",
    )
    w, source, sink, registry = worker([[message]])
    w.run_once()
    assert [json.loads(m.value)["series"] for m in out(sink)] == ["a", "c"]
    dead = [m for m in sink.messages if m.topic == "dead"]
    assert [
        (json.loads(m.value), dict(m.headers)["forecaster.reason"], dict(m.headers)["forecaster.element"]) for m in dead
    ] == [
        ({"key": "b", "time": "later", "y": 1.0}, b"bad_timestamp", b"1"),
        (42, b"malformed", b"2"),
        (observation("a", 0, 2.0), b"duplicate_timestamp", b"3"),  # refused by the engine, still found by its element
    ]
    assert all(m.key == b"k" and dict(m.headers)["forecaster.source"] == b"in/0/7" for m in dead)
    assert (
        registry.get_sample_value("forecaster_records_rejected_total", {"pipeline": "test", "reason": "malformed"}) == 1
    )
    assert source.committed == [{0: 8}]


def test_a_plain_bad_message_has_no_element_header():
    w, _, sink, _ = worker([[record("a", 0, 1.0), Polled(0, 1, b"x", b"junk")]])
    w.run_once()
    dead = [m for m in sink.messages if m.topic == "dead"]
    assert [m.value for m in dead] == [b"junk"] and "forecaster.element" not in dict(dead[0].headers)


def test_forecasts_per_message_packs_forecasts_into_json_lists_keyed_by_series_bucket():
    keys = [f"s{i}" for i in range(10)]
    unpacked, _, plain_sink, _ = worker([[record(k, 0, float(i), offset=i) for i, k in enumerate(keys)]])
    packed, _, packed_sink, _ = worker(
        [[record(k, 0, float(i), offset=i) for i, k in enumerate(keys)]], forecasts_per_message=2, partitions=3
    )
    unpacked.run_once()
    packed.run_once()
    messages = out(packed_sink)
    assert all(len(json.loads(m.value)) <= 2 for m in messages)
    for m in messages:  # a message holds only series of its bucket, and is keyed by the bucket
        assert {zlib.crc32(f["series"].encode()) % 3 for f in json.loads(m.value)} == {int(m.key)}
    documents = [f for m in messages for f in json.loads(m.value)]
    strip = lambda fs: sorted((f["series"], f["values"]) for f in fs)
    assert strip(documents) == strip(json.loads(m.value) for m in out(plain_sink))
    assert len(messages) == sum(
        -(-n // 2) for n in [sum(zlib.crc32(k.encode()) % 3 == b for k in keys) for b in range(3)]
    )


def test_packed_forecasts_of_one_series_keep_their_order():
    objects = [observation("a", h, float(h)) for h in range(5)]
    w, _, sink, _ = worker([[batch_message(*objects)]], forecasts_per_message=2)
    w.run_once()
    times = [f["time"] for m in out(sink) for f in json.loads(m.value)]
    assert times == [o["time"] for o in objects]
    assert len({m.key for m in out(sink)}) == 1
