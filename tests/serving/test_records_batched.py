"""Records, many at a time: batch messages in (a JSON list of observations), a whole step's forecasts out."""

import calendar
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from forecaster.config import RecordFormat
from forecaster.serving import records
from forecaster.serving.engine import Forecasts
from forecaster.serving.records import Forecast, Origin

FMT = RecordFormat(key="station", timestamp="time", target="temp", covariates=("humidity",))
NOON = calendar.timegm((2024, 3, 10, 12, 30, 0))


def obj(station="KGSO", time="2024-03-10T12:30:00Z", temp=21.5, humidity=40) -> dict:
    return {"station": station, "time": time, "temp": temp, "humidity": humidity}


def message(*objects) -> bytes:
    return json.dumps(list(objects)).encode()


# --- batch messages in --------------------------------------------------------------------------


def test_a_batch_message_gives_one_record_per_element_in_order():
    batch = [json.dumps(obj("a")).encode(), message(obj("b"), obj("c", temp=3.0)), json.dumps(obj("d")).encode()]
    observations, rejected = records.decode(batch, FMT)
    assert rejected == []
    assert observations.keys == ("a", "b", "c", "d")
    assert observations.positions.tolist() == [0, 1, 2, 3]
    assert observations.values[2].tolist() == [3.0, 40.0]
    assert records.origins(batch) == [Origin(0, None), Origin(1, 0), Origin(1, 1), Origin(2, None)]


def test_each_bad_element_of_a_batch_message_is_rejected_on_its_own():
    batch = [message(obj("a"), obj("b", temp="warm"), 7, obj("c"), {"station": "d"})]
    observations, rejected = records.decode(batch, FMT)
    assert observations.keys == ("a", "c")
    assert [(r.position, r.reason) for r in rejected] == [
        (1, records.WRONG_TYPE),
        (2, records.MALFORMED),
        (4, records.MISSING_FIELD),
    ]
    assert [records.origins(batch)[r.position] for r in rejected] == [Origin(0, 1), Origin(0, 2), Origin(0, 4)]


def test_a_list_without_any_object_is_one_malformed_record():
    for payload in (b"[]", b"[1, 2]", b'[["nested"]]'):
        observations, rejected = records.decode([payload], FMT)
        assert len(observations) == 0
        assert [(r.position, r.reason) for r in rejected] == [(0, records.MALFORMED)]
        assert "expected a JSON object, got list" in rejected[0].detail
        assert records.origins([payload]) == [Origin(0, None)]


def test_origins_of_messages_that_are_not_json_are_the_messages_themselves():
    batch = [None, b"\xff[", b"  [ {", b"junk", b" \n[" + json.dumps(obj()).encode() + b"]"]
    assert records.origins(batch) == [Origin(0, None), Origin(1, None), Origin(2, None), Origin(3, None), Origin(4, 0)]
    observations, rejected = records.decode(batch, FMT)
    assert observations.positions.tolist() == [4] and [r.position for r in rejected] == [0, 1, 2, 3]


def test_limits_reject_elements_by_their_own_position():
    from forecaster.config import Limits

    batch = [message(obj("a"), obj("b", temp=1e20), obj("c"))]
    observations, rejected = records.decode(batch, FMT, Limits(), now=NOON)
    assert observations.keys == ("a", "c")
    assert [(r.position, r.reason) for r in rejected] == [(1, records.OUT_OF_RANGE)]


def test_an_elements_payload_is_its_json_on_its_own():
    payload = message(obj("a"), {"station": "b", "temp": float("nan")})
    assert json.loads(records.element_payload(payload, 0)) == obj("a")
    assert records.element_payload(payload, 1) == b'{"station":"b","temp":NaN}'


# --- forecasts out --------------------------------------------------------------------------------


def reference(forecast: Forecast, pipeline: str, target: str) -> bytes:
    """The documented forecast record, written the plain way: a dict, datetime.isoformat, json.dumps."""
    iso = lambda t: datetime.fromtimestamp(t, UTC).isoformat()  # noqa: E731
    document = {
        "series": forecast.series,
        "pipeline": pipeline,
        "target": target,
        "time": iso(forecast.time),
        "issued_at": iso(forecast.issued_at),
        "model_version": forecast.model_version,
        "horizon": len(forecast.values),
        "times": [iso(t) for t in forecast.times],
        "values": [finite(v) for v in forecast.values],
    }
    if forecast.quantiles:
        document["quantiles"] = {f"{level:g}": [finite(v) for v in vs] for level, vs in forecast.quantiles.items()}
    return json.dumps(document, separators=(",", ":")).encode()


def finite(value) -> float | None:
    """A number as the records carry it: None (JSON null) where it is NaN or infinite."""
    return float(value) if np.isfinite(value) else None


EDGE_TIMES = [
    0.0,
    -1.0,
    -0.5,
    1.5e9 + 0.5,
    1.5e9 + 1e-7,
    1.5e9 + 0.0000005,
    1.5e9 + 0.0000015,
    -62135596800.0,
    253402300799.0,
    253402300798.999999,
    NOON + 1 / 3,
    -1e-7,
]


def test_many_times_are_written_as_datetime_writes_each():
    rng = np.random.default_rng(0)
    epochs = np.r_[
        EDGE_TIMES,
        rng.uniform(-6e10, 2.5e11, 2000),
        np.round(rng.uniform(0, 2e9, 500)),
        np.round(rng.uniform(0, 2e9, 500), 6),
    ]
    assert records.format_times(epochs) == [datetime.fromtimestamp(t, UTC).isoformat() for t in epochs.tolist()]
    assert records.format_time(NOON) == "2024-03-10T12:30:00+00:00"


def forecasts(rng, m: int, horizon: int, quantiles: bool = False, shared_time: bool = False) -> Forecasts:
    times = np.full(m, float(NOON)) if shared_time else rng.uniform(0, 2e9, m) + rng.choice([0, 0.25, 1 / 3], m)
    values = (rng.normal(size=(m, horizon)) * 1000).astype(np.float32)
    if m:
        values[0, 0] = np.nan
    return Forecasts(
        keys=tuple(rng.choice(["KGSO", "Zürich", 'q"uote', "\u6771\u4eac", "s\\1", "\ud83d\ude00"], m)),
        times=times,
        horizon_times=times[:, None] + 1800.0 * np.arange(1, horizon + 1),
        values=values,
        positions=np.arange(m),
        issued_at=NOON + 0.123456,
        model_version=7,
        quantiles={0.1: values - 1, 0.9: values + np.float32(0.5)} if quantiles else None,
    )


@pytest.mark.parametrize("quantiles", [False, True], ids=["points", "quantiles"])
@pytest.mark.parametrize("shared_time", [False, True], ids=["own-times", "shared-times"])
def test_a_steps_forecasts_encode_to_exactly_the_documented_json_each(quantiles, shared_time):
    batch = forecasts(np.random.default_rng(1), 300, 24, quantiles, shared_time)
    assert records.encode_many(batch, "weather", "temp") == [reference(row, "weather", "temp") for row in batch.rows()]


def test_one_forecast_encodes_as_in_a_batch():
    batch = forecasts(np.random.default_rng(2), 3, 5, quantiles=True)
    assert [records.encode(row, "p", "y") for row in batch.rows()] == records.encode_many(batch, "p", "y")


def test_no_forecasts_encode_to_no_records():
    assert records.encode_many(forecasts(np.random.default_rng(3), 0, 4), "p", "y") == []
