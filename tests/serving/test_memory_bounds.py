"""Memory bounded by default: a spill within its byte budget, keys of bounded length, poll batches decoded a slice at
a time. The run loop's side (slices delivered one by one, the metrics) is in tests/test_app_slices.py."""

import dataclasses
import json
import tracemalloc

import numpy as np

from forecaster import build
from forecaster.build import seeded_model
from forecaster.config import Limits, Pipeline
from forecaster.serving import records
from forecaster.serving.spill import MemorySpill

from support import make_pipeline, observations

WIDE = 11  # packed floats per series in these tests
ROW = WIDE * 4 + 3 * 8 + 256  # what the budget counts per spilled series: the two rows and the key's entry


def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row i is filled with i, so a row taken back says whose it is."""
    filled = np.arange(n, dtype=np.float64)[:, None]
    return np.repeat(filled, WIDE, 1).astype(np.float32), np.repeat(filled, 3, 1)


def held(spill: MemorySpill, keys: list[str]) -> list[str]:
    found, wide, _ = spill.take(keys)
    spill.put(found, wide, np.zeros((len(found), 3)))
    return sorted(found)


# --- the memory spill's budget -----------------------------------------------------------------


def test_a_memory_spill_beyond_its_budget_drops_the_series_spilled_longest_ago_and_counts_them():
    spill = MemorySpill(WIDE, 3, max_bytes=5 * ROW)
    spill.put(["a", "b", "c", "d", "e"], *rows(5))
    spill.put(["f", "g"], *rows(2))
    assert len(spill) == 5 and spill.dropped == 2
    assert spill.take(["a", "b"])[0] == []  # the two oldest are gone
    found, wide, _ = spill.take(["c", "g"])
    assert found == ["c", "g"] and wide[:, 0].tolist() == [2.0, 1.0]  # the others come back exactly


def test_a_series_spilled_again_counts_as_the_newest():
    spill = MemorySpill(WIDE, 3, max_bytes=3 * ROW)
    spill.put(["a", "b", "c"], *rows(3))
    spill.put(["a"], *rows(1))  # "a" returned and was evicted again
    spill.put(["d"], *rows(1))
    assert held(spill, ["a", "b", "c", "d"]) == ["a", "c", "d"] and spill.dropped == 1


def test_more_series_than_the_budget_at_once_keeps_the_last_of_them():
    spill = MemorySpill(WIDE, 3, max_bytes=4 * ROW)
    keys = [f"k{i}" for i in range(10)]
    spill.put(keys, *rows(10))
    assert held(spill, keys) == ["k6", "k7", "k8", "k9"] and spill.dropped == 6


def test_a_memory_spill_at_its_budget_takes_no_more_memory_than_its_budget():
    wide = 1000  # wide rows, so that the arrays dominate what the spill holds
    spill = MemorySpill(wide, 3, max_bytes=2500 * (wide * 4 + 3 * 8 + 256))
    budget = 2500 * spill.nbytes_per_series  # more than the first allocation of 1024 rows, less than its doubling
    tracemalloc.start()
    try:
        for start in range(0, 10_000, 1000):
            keys = [f"k{i}" for i in range(start, start + 1000)]
            spill.put(keys, np.ones((1000, wide), np.float32), np.ones((1000, 3)))
        held_bytes = tracemalloc.get_traced_memory()[0]  # the spill's arrays, its index and the keys it keeps
    finally:
        tracemalloc.stop()
    assert len(spill) == 2500 and spill.dropped == 7500
    assert held_bytes <= budget


def test_the_shipped_default_spill_is_bounded():
    pipeline = make_pipeline()
    default = Pipeline.__dataclass_fields__["spill_max_bytes"].default
    assert default is not None and pipeline.spill_max_bytes == default
    spill = build.spill(pipeline, seeded_model(pipeline), None)
    assert isinstance(spill, MemorySpill) and spill.max_series is not None
    assert spill.max_series * (spill.nbytes_per_series) <= default


def test_a_flood_of_new_keys_through_an_engine_keeps_the_memory_spill_within_budget(device):
    pipeline = make_pipeline(max_series=8)
    spill = build.spill(pipeline, seeded_model(pipeline), None)
    budget = 20 * spill.nbytes_per_series
    pipeline = dataclasses.replace(pipeline, spill_max_bytes=budget)
    engine = build.engine(pipeline, seeded_model(pipeline), device)
    for batch in range(10):
        keys = [f"flood-{batch}-{i}" for i in range(8)]
        engine.step(observations(keys, [1.7e9] * 8, np.arange(8.0)), now=0.0)
    store = engine.store
    assert store.evictions == 72 and len(store.spill) == 20 and store.spill.dropped == 52
    assert store.spill.nbytes <= budget


# --- keys of bounded length --------------------------------------------------------------------


def payload(key: str) -> bytes:
    return json.dumps({"key": key, "time": 1.7e9, "y": 1.0}).encode()


def test_a_key_longer_than_max_key_bytes_in_utf8_is_rejected_as_key_too_long():
    limits = Limits(max_key_bytes=8)
    accepted, rejected = records.decode(
        [payload("a" * 8), payload("a" * 9), payload("é" * 4), payload("é" * 5)],
        make_pipeline().record,
        limits,
        now=1.7e9,
    )
    assert accepted.keys == ("a" * 8, "é" * 4)  # "é" is two bytes: four of them fit, five do not
    assert [(r.position, r.reason) for r in rejected] == [(1, records.KEY_TOO_LONG), (3, records.KEY_TOO_LONG)]
    assert "9 bytes, more than 8" in rejected[0].detail


def test_the_detail_of_a_huge_key_does_not_repeat_it():
    _, rejected = records.decode([payload("x" * 100_000)], make_pipeline().record, Limits(), now=1.7e9)
    assert rejected[0].reason == records.KEY_TOO_LONG and len(rejected[0].detail) < 200


# --- poll batches decoded a slice at a time ----------------------------------------------------


def batch(*keys: str) -> bytes:
    return json.dumps([{"key": k, "time": 1.7e9, "y": 1.0} for k in keys]).encode()


def test_decode_slice_takes_the_leading_messages_that_hold_at_most_most_records():
    payloads = [batch("a", "b", "c"), payload("d"), batch("e", "f"), payload("g")]
    fmt = make_pipeline().record
    decoded, rejected, taken = records.decode_slice(payloads, 4, fmt, None, None)
    assert taken == 2 and decoded.keys == ("a", "b", "c", "d") and rejected == []
    decoded, _, taken = records.decode_slice(payloads[2:], 4, fmt, None, None)
    assert taken == 2 and decoded.keys == ("e", "f", "g")
    assert decoded.positions.tolist() == [0, 1, 2]  # positions within the slice, as `origins` of it numbers them


def test_one_message_holding_more_than_most_records_is_a_slice_of_its_own():
    payloads = [batch(*"abcdef"), payload("g")]
    decoded, _, taken = records.decode_slice(payloads, 4, make_pipeline().record, None, None)
    assert taken == 1 and decoded.keys == tuple("abcdef")
    assert [len(piece) for piece in decoded.pieces(4)] == [4, 2]


def test_rejected_records_count_towards_a_slice():
    payloads = [b"not json", batch("a", "b"), payload("c")]
    decoded, rejected, taken = records.decode_slice(payloads, 3, make_pipeline().record, None, None)
    assert taken == 2 and decoded.keys == ("a", "b") and [r.position for r in rejected] == [0]


def test_a_restored_memory_spill_keeps_its_spilling_order_and_its_budget():
    spill = MemorySpill(WIDE, 3)  # no budget: a checkpoint written before one was set
    spill.put(["a", "b", "c", "d"], *rows(4))
    spill.put(["a"], *rows(1))  # "a" spilled again: now the newest
    bounded = MemorySpill(WIDE, 3, max_bytes=3 * ROW)
    bounded.restore(spill.snapshot())
    assert held(bounded, ["a", "b", "c", "d"]) == ["a", "c", "d"] and bounded.dropped == 1
