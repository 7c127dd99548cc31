"""A timestamp ahead of the clock is bounded by the cadence: it cannot freeze its series for a week."""

import json
import time

from test_app import worker

from forecaster.config import Limits, RecordFormat
from forecaster.io.messages import Polled
from forecaster.serving import records

FMT = RecordFormat(key="key", timestamp="time", target="y")
NOW = 1_700_000_000.0
HOUR = 3600.0


def payload(key, t, y=1.0) -> bytes:
    return json.dumps({"key": key, "time": t, "y": y}).encode()


def test_the_bound_is_a_few_steps_of_the_cadence_and_never_beyond_max_future_seconds():
    limits = Limits()

    assert records.future_bound(limits, "1h") == 2 * HOUR
    assert records.future_bound(limits, "1d") == 2 * 86_400.0
    assert records.future_bound(limits, "7d") == limits.max_future_seconds  # two weeks' steps: a week's bound
    assert records.future_bound(limits, None) == limits.max_future_seconds
    assert records.future_bound(Limits(max_future_steps=0.5), "1h") == HOUR / 2


def test_a_timestamp_a_day_ahead_of_an_hourly_pipeline_is_rejected_and_one_step_ahead_is_not():
    batch = [payload("a", NOW + HOUR), payload("b", NOW + 86_400.0)]

    accepted, rejected = records.decode(batch, FMT, Limits(), NOW, cadence="1h")

    assert accepted.keys == ("a",)
    assert [(r.position, r.reason) for r in rejected] == [(1, records.FUTURE_TIMESTAMP)]
    assert "7200 s ahead of the clock" in rejected[0].detail


def test_a_record_a_day_ahead_does_not_freeze_its_series_in_the_run_loop():
    """Before the bound, the record a day ahead was taken, and every real record of its series for a day after it
    was refused as out_of_order."""
    now = time.time()
    hours = [now - 3 * HOUR, now + 86_400.0, now - 2 * HOUR, now - HOUR]
    batches = [[Polled(0, i, b"a", payload("a", t, float(i)))] for i, t in enumerate(hours)]
    w, _, sink, registry = worker(batches)

    for _ in batches:
        w.run_once()

    rejected = lambda reason: registry.get_sample_value(
        "forecaster_records_rejected_total", {"pipeline": "test", "reason": reason}
    )
    assert rejected("future_timestamp") == 1 and not rejected("out_of_order")
    assert len([m for m in sink.messages if m.topic == "out"]) == 3  # every real record forecast
