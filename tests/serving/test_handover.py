"""A partition's series move between engines through their changelog records and go on exactly as if they had not."""

import dataclasses

import numpy as np
import pytest

from forecaster.build import seeded_model
from forecaster.config import Intervals, Retraining
from forecaster.serving import changelog, handover
from forecaster.serving.engine import Engine
from forecaster.serving.records import Observations

from support import make_pipeline, mean_reverting


def shipped_like():
    """Every per-series part a shipped pipeline keeps: combination, gaps, quantiles, tracking, buffer."""
    pipeline = make_pipeline(horizon=6, combination=True, fill_gaps=True, quantiles=(0.1, 0.5, 0.9))
    return dataclasses.replace(
        pipeline,
        intervals=Intervals(tracking_rate=0.0),
        retraining=Retraining(enabled=True, buffer=64, holdout=8),
        training=dataclasses.replace(pipeline.training, window=32, chunk=16),
    )


def stream(length=60, n_series=6):
    """Hourly mean-reverting series; series s on input partition s % 2, offsets counting records per partition."""
    keys, times, values = mean_reverting(n_series=n_series, length=length)
    partitions = np.array([int(k[1:]) % 2 for k in keys])
    offsets = np.zeros(len(keys), np.int64)
    for p in (0, 1):
        offsets[partitions == p] = np.arange((partitions == p).sum())
    return keys, np.asarray(times, float), np.asarray(values, float)[:, None], partitions, offsets


def batch(data, rows):
    keys, times, values, partitions, offsets = data
    rows = np.asarray(rows)
    return Observations(
        tuple(keys[i] for i in rows),
        times[rows],
        times[rows],
        values[rows],
        np.arange(len(rows)),
        partitions[rows],
        offsets[rows],
    )


def test_a_partition_restored_elsewhere_forecasts_exactly_as_its_old_engine_would():
    pipeline = shipped_like()
    data = stream()
    first, later = np.arange(6 * 40), np.arange(6 * 40, 6 * 60)
    old = Engine(pipeline, seeded_model(pipeline))
    old.step(batch(data, first), now=0.0)
    records, _ = handover.series_records(old, [0])
    own = handover.partition_record(old, 0, offset=int(data[4][first][data[3][first] == 0].max()) + 1)

    new = Engine(pipeline, seeded_model(pipeline))
    restored = handover.restore(new, 0, records[0] + [(handover.PARTITION_KEY, own)])

    assert restored.series == 3 and restored.offset == 120
    mine = later[data[3][later] == 0]
    expected, _ = old.step(batch(data, mine), now=0.0)
    got, _ = new.step(batch(data, mine), now=0.0)
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-6, atol=1e-6)
    for level in (0.1, 0.5, 0.9):
        np.testing.assert_allclose(got.quantiles[level], expected.quantiles[level], rtol=1e-6, atol=1e-6)


def test_only_series_touched_since_they_were_last_taken_are_written():
    pipeline = shipped_like()
    data = stream(length=10)
    engine = Engine(pipeline, seeded_model(pipeline))
    engine.step(batch(data, np.arange(60)), now=0.0)
    records, slots = handover.series_records(engine, [0, 1])
    engine.store.touched[slots] = False

    engine.step(batch(data, [0]), now=0.0)  # s0 again, at the same time: refused as not newer, yet taken
    assert sum(map(len, records.values())) == 6
    assert handover.series_records(engine, [0, 1])[0] == {}


def test_the_record_reflecting_the_highest_offset_wins_wherever_it_stands_in_the_log():
    pipeline = shipped_like()
    data = stream(length=20)
    early, late = Engine(pipeline, seeded_model(pipeline)), Engine(pipeline, seeded_model(pipeline))
    early.step(batch(data, np.arange(60)), now=0.0)
    late.step(batch(data, np.arange(120)), now=0.0)
    newer = handover.series_records(late, [0], touched_only=False)[0][0]
    stale = handover.series_records(early, [0], touched_only=False)[0][0]  # a stale owner writing last

    fresh = Engine(pipeline, seeded_model(pipeline))
    handover.restore(fresh, 0, newer + stale)

    np.testing.assert_array_equal(
        fresh.store.reflected_offsets(["s0", "s2", "s4"]), late.store.reflected_offsets(["s0", "s2", "s4"])
    )


def test_dropping_a_partition_forgets_its_series_and_keeps_the_others():
    pipeline = shipped_like()
    data = stream(length=5)
    engine = Engine(pipeline, seeded_model(pipeline))
    engine.step(batch(data, np.arange(30)), now=0.0)

    assert handover.drop(engine, [1]) == 3
    assert sorted(engine.store.keys_of(engine.store.active)) == ["s0", "s2", "s4"]


def test_a_record_of_another_layout_is_refused_not_misread():
    pipeline = shipped_like()
    data = stream(length=5)
    engine = Engine(pipeline, seeded_model(pipeline))
    engine.step(batch(data, np.arange(30)), now=0.0)
    records = handover.series_records(engine, [0])[0][0]
    other = dataclasses.replace(pipeline, model=dataclasses.replace(pipeline.model, hidden_size=4))

    with pytest.raises(ValueError, match="another format or layout"):
        handover.restore(Engine(other, seeded_model(other)), 0, records)
    assert changelog.reflected_offset(records[0][1]) == 12  # s0's last record: the 13th of partition 0


def test_records_decode_to_the_snapshot_they_were_encoded_from_whichever_optional_parts_each_holds():
    rng = np.random.default_rng(0)
    n = 6
    snapshot = {
        "wide": rng.standard_normal((n, 5)).astype(np.float32),
        "exact": rng.standard_normal((n, 3)),
        "parts": {  # two optional parts of one size: records of equal length, of different byte layouts
            "p": {"held": np.array([1, 0, 1, 0, 1, 1], bool), "x": rng.standard_normal((4, 2, 3)).astype(np.float32)},
            "q": {"held": np.array([0, 1, 1, 0, 0, 1], bool), "y": rng.standard_normal((3, 2, 3)).astype(np.float32)},
            "r": {"count": np.arange(n, dtype=np.int64)},
        },
    }
    layout = changelog.layout_of(snapshot)
    keys = [f"s{i}" for i in range(n)]
    offsets = np.arange(n, dtype=np.int64) * 10

    decoded = changelog.decode(keys, changelog.encode(snapshot, keys, offsets, 7, layout), layout)

    np.testing.assert_array_equal(decoded.offsets, offsets)
    np.testing.assert_array_equal(decoded.versions, np.full(n, 7))
    for name in ("wide", "exact"):
        np.testing.assert_array_equal(decoded.snapshot[name], snapshot[name])
    for part, fields in snapshot["parts"].items():
        for field, array in fields.items():
            np.testing.assert_array_equal(decoded.snapshot["parts"][part][field], array)
