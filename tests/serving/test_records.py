"""Records: a poll batch decodes into columns plus rejections with reasons; forecasts encode to JSON."""

import calendar
import json
import math

import numpy as np
import pytest

from forecaster.config import Limits, RecordFormat
from forecaster.serving import records
from forecaster.serving.records import Forecast, Rejected

FMT = RecordFormat(key="station", timestamp="time", target="temp", covariates=("humidity",))

# 2024-03-10T12:30:00Z, computed without the code under test
NOON = calendar.timegm((2024, 3, 10, 12, 30, 0))


def payload(**fields) -> bytes:
    record = {"station": "KGSO", "time": "2024-03-10T12:30:00Z", "temp": 21.5, "humidity": 40}
    record.update(fields)
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


GOOD = payload()


def rejection(bad) -> Rejected:
    """Decode [good, bad, good] and return the one rejection, checking the good ones kept their places."""
    observations, rejected = records.decode([GOOD, bad, GOOD], FMT)
    assert observations.positions.tolist() == [0, 2]
    assert len(rejected) == 1 and rejected[0].position == 1
    return rejected[0]


@pytest.mark.parametrize(
    "bad, reason, detail",
    [
        (b"\x00\x01 not json", records.MALFORMED, "not a JSON document"),
        (b'{"station": "caf\xe9"}', records.MALFORMED, "not a JSON document"),
        (b'{"station": "KGSO", ', records.MALFORMED, "not a JSON document"),
        (b"", records.MALFORMED, "not a JSON document"),
        (None, records.MALFORMED, "not a JSON document"),
        (b"[1, 2]", records.MALFORMED, "expected a JSON object, got list"),
        (b'"KGSO"', records.MALFORMED, "expected a JSON object, got str"),
        (b"[" * 100_000, records.MALFORMED, "not a JSON document"),
    ],
    ids=["bytes", "invalid-utf8", "truncated", "empty", "none", "array", "string", "nested-too-deeply"],
)
def test_a_payload_that_is_not_a_json_object_is_malformed(bad, reason, detail):
    rejected = rejection(bad)
    assert rejected.reason == reason
    assert detail in rejected.detail


@pytest.mark.parametrize("missing", ["station", "time", "temp", "humidity"])
def test_a_missing_field_is_named(missing):
    rejected = rejection(payload(**{missing: ...}))
    assert (rejected.reason, rejected.detail) == (records.MISSING_FIELD, f"{missing}: missing")


@pytest.mark.parametrize(
    "fields, name",
    [
        ({"temp": "21.5"}, "temp"),
        ({"temp": True}, "temp"),
        ({"humidity": [40]}, "humidity"),
        ({"humidity": False}, "humidity"),
        ({"station": {"id": 1}}, "station"),
        ({"station": True}, "station"),
        ({"station": ""}, "station"),
        ({"station": 1.5}, "station"),
        ({"station": None}, "station"),
        ({"time": True}, "time"),
        ({"time": None}, "time"),
        ({"time": ["2024-03-10"]}, "time"),
    ],
    ids=[
        "string-target",
        "bool-target",
        "list-covariate",
        "bool-covariate",
        "dict-key",
        "bool-key",
        "empty-key",
        "float-key",
        "null-key",
        "bool-time",
        "null-time",
        "list-time",
    ],
)
def test_a_field_of_the_wrong_type_is_rejected(fields, name):
    rejected = rejection(payload(**fields))
    assert rejected.reason == records.WRONG_TYPE
    assert rejected.detail.startswith(f"{name}: expected ")


def test_a_series_key_that_is_not_valid_unicode_is_malformed():
    bad = payload(station="X").replace(b'"X"', b'"K\\udc80"')  # JSON may escape a lone surrogate; UTF-8 cannot hold one
    assert json.loads(bad)["station"] == "K\udc80"
    rejected = rejection(bad)
    assert rejected.reason == records.MALFORMED and rejected.detail.startswith("station: not valid Unicode text")
    assert rejected.detail.encode()  # the detail itself travels as a Kafka header
    # valid non-ASCII is fine
    assert records.decode([payload(station="K\u00e9\U0001f600")], FMT)[0].keys == ("K\u00e9\U0001f600",)


def test_a_null_target_or_covariate_is_a_missing_value_not_a_bad_record():
    observations, rejected = records.decode(
        [payload(temp=None), payload(humidity=None), payload(temp=None, humidity=None)], FMT, Limits(), now=NOON
    )

    assert rejected == [] and observations.keys == ("KGSO",) * 3
    np.testing.assert_array_equal(observations.values, [[np.nan, 40.0], [21.5, np.nan], [np.nan, np.nan]])


def test_a_null_does_not_hide_an_out_of_range_value_beside_it():
    observations, rejected = records.decode([payload(temp=None, humidity=1e300)], FMT, Limits(), now=NOON)

    assert len(observations) == 0 and [r.reason for r in rejected] == [records.OUT_OF_RANGE]


@pytest.mark.parametrize(
    "text, name",
    [
        ("NaN", "temp"),
        ("Infinity", "temp"),
        ("-Infinity", "humidity"),
        ("1" + "0" * 400, "temp"),  # an integer no float can hold
        ("NaN", "time"),
        ("1" + "0" * 400, "time"),
    ],
    ids=["nan", "infinity", "minus-infinity", "huge-integer", "nan-time", "huge-integer-time"],
)
def test_nan_and_infinite_numbers_are_rejected(text, name):
    bad = GOOD.decode().replace(f'"{name}": {json.dumps(json.loads(GOOD)[name])}', f'"{name}": {text}').encode()
    assert bad != GOOD
    rejected = rejection(bad)
    assert rejected.reason == records.NON_FINITE
    assert rejected.detail.startswith(f"{name}: expected a finite ")


@pytest.mark.parametrize(
    "time",
    ["yesterday", "2024-13-01T00:00:00", "2024-03-10 25:00", "", 1e20, -1e13, "0001-01-01T00:30:00+01:00"],
    ids=["words", "month-13", "hour-25", "empty", "far-future-epoch", "far-past-epoch", "before-year-1"],
)
def test_a_time_that_does_not_parse_or_cannot_be_written_back_is_a_bad_timestamp(time):
    rejected = rejection(payload(time=time))
    assert rejected.reason == records.BAD_TIMESTAMP
    assert rejected.detail.startswith("time: ")


def test_good_records_keep_their_batch_positions_around_bad_ones():
    batch = [
        payload(station="a", temp=1.0),
        b"junk",
        payload(station="b", temp=2.0, humidity=20),
        payload(temp="x"),
        payload(station="c", temp=3.0),
        None,
    ]
    observations, rejected = records.decode(batch, FMT)
    assert observations.keys == ("a", "b", "c")
    assert observations.positions.tolist() == [0, 2, 4]
    assert observations.values.tolist() == [[1.0, 40.0], [2.0, 20.0], [3.0, 40.0]]
    assert [(r.position, r.reason) for r in rejected] == [
        (1, records.MALFORMED),
        (3, records.WRONG_TYPE),
        (5, records.MALFORMED),
    ]


def test_observations_are_typed_columns():
    observations, rejected = records.decode([GOOD, GOOD], FMT)
    assert rejected == [] and len(observations) == 2
    assert observations.times.dtype == np.float64 and observations.times.shape == (2,)
    assert observations.local_times.dtype == np.float64
    assert observations.values.dtype == np.float64 and observations.values.shape == (2, 2)
    assert observations.positions.dtype == np.int64
    assert observations.values[0].tolist() == [21.5, 40.0]  # target first, then covariates


def test_an_empty_batch_keeps_the_value_width():
    observations, rejected = records.decode([], FMT)
    assert len(observations) == 0 and rejected == []
    assert observations.values.shape == (0, 2)


def test_an_all_bad_batch_keeps_the_value_width():
    observations, rejected = records.decode([b"junk"], FMT)
    assert observations.values.shape == (0, 2)
    assert [r.position for r in rejected] == [0]


def test_an_iso_time_with_an_offset_gives_utc_epoch_and_local_time():
    observations, _ = records.decode([payload(time="2024-03-10T14:30:00+02:00")], FMT)
    assert observations.times.tolist() == [NOON]
    assert observations.local_times.tolist() == [NOON + 2 * 3600]


def test_a_negative_offset_shifts_local_time_back():
    observations, _ = records.decode([payload(time="2024-03-10T07:30:00-05:00")], FMT)
    assert observations.times.tolist() == [NOON]
    assert observations.local_times.tolist() == [NOON - 5 * 3600]


@pytest.mark.parametrize("time", ["2024-03-10T12:30:00", "2024-03-10T12:30:00Z", "2024-03-10T12:30:00+00:00"])
def test_a_naive_or_zulu_iso_time_is_utc(time):
    observations, _ = records.decode([payload(time=time)], FMT)
    assert observations.times.tolist() == [NOON]
    assert observations.local_times.tolist() == [NOON]


@pytest.mark.parametrize("time", [NOON, float(NOON) + 0.25])
def test_epoch_seconds_are_accepted_as_utc(time):
    observations, rejected = records.decode([payload(time=time)], FMT)
    assert rejected == []
    assert observations.times.tolist() == [float(time)]
    assert observations.local_times.tolist() == [float(time)]


def test_integer_series_keys_become_strings():
    observations, _ = records.decode([payload(station=42), payload(station="42")], FMT)
    assert observations.keys == ("42", "42")


def test_integer_values_become_floats():
    observations, _ = records.decode([payload(temp=21, humidity=40)], FMT)
    assert observations.values.tolist() == [[21.0, 40.0]]


def test_extra_fields_are_ignored():
    observations, rejected = records.decode([payload(comment="calibrated", wind=None)], FMT)
    assert rejected == [] and observations.keys == ("KGSO",)


def test_a_format_without_covariates_reads_only_the_target():
    fmt = RecordFormat(key="station", timestamp="time", target="temp")
    observations, _ = records.decode([payload(humidity="not read")], fmt)
    assert observations.values.tolist() == [[21.5]]


# --- encode ---------------------------------------------------------------------------


def test_a_forecast_encodes_to_the_documented_json():
    forecast = Forecast(
        series="KGSO",
        time=NOON,
        issued_at=NOON + 1.5,
        model_version=3,
        times=[NOON + 3600, NOON + 7200],
        values=[np.float32(22.5), 23.25],
    )
    document = json.loads(records.encode(forecast, "weather", "temp"))
    assert document == {
        "series": "KGSO",
        "pipeline": "weather",
        "target": "temp",
        "time": "2024-03-10T12:30:00+00:00",
        "issued_at": "2024-03-10T12:30:01.500000+00:00",
        "model_version": 3,
        "horizon": 2,
        "times": ["2024-03-10T13:30:00+00:00", "2024-03-10T14:30:00+00:00"],
        "values": [22.5, 23.25],
    }
    assert type(document["values"][0]) is float


def at_noon(values, quantiles=None) -> Forecast:
    """A forecast of series "a" made at NOON, a minute a step."""
    times = [NOON + 60.0 * (k + 1) for k in range(len(values))]
    return Forecast(
        series="a", time=NOON, issued_at=NOON, model_version=1, times=times, values=values, quantiles=quantiles
    )


def test_quantile_forecasts_are_keyed_by_their_level():
    forecast = at_noon([1.0, 2.0], {0.1: [0.5, 1.0], 0.9: [np.float32(1.5), 3.0]})
    document = json.loads(records.encode(forecast, "p", "y"))
    assert document["quantiles"] == {"0.1": [0.5, 1.0], "0.9": [1.5, 3.0]}


def test_nan_and_infinite_forecasts_are_written_as_null_never_as_bare_nan():
    forecast = at_noon([1.0, math.inf, np.float32(np.nan)], {0.1: [np.nan, 0.5, -math.inf], 0.9: [2.0, 3.0, 4.0]})
    text = records.encode(forecast, "p", "y")
    document = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in {text!r}"))
    assert document["values"] == [1.0, None, None]
    assert document["quantiles"] == {"0.1": [None, 0.5, None], "0.9": [2.0, 3.0, 4.0]}


def test_encoded_forecast_times_parse_back_to_the_same_instants():
    times = [NOON + 1800.0 * k for k in range(1, 5)]
    forecast = Forecast(series="a", time=NOON, issued_at=NOON, model_version=0, times=times, values=[0.0] * 4)
    document = json.loads(records.encode(forecast, "p", "y"))
    assert [records.parse_time(t, "t")[0] for t in document["times"]] == times
    assert records.parse_time(document["time"], "t") == (NOON, NOON)


def test_a_non_ascii_series_key_round_trips():
    forecast = Forecast(series="Zürich", time=NOON, issued_at=NOON, model_version=1, times=[NOON + 60], values=[1.0])
    assert json.loads(records.encode(forecast, "p", "y"))["series"] == "Zürich"


def test_each_record_carries_its_messages_partition_through_batch_messages_and_rejections():
    element = json.loads(GOOD)
    batch = json.dumps([element, {**element, "station": "KRDU"}]).encode()
    out_of_range = json.dumps({**element, "station": "KCLT", "temp": 1e300}).encode()
    observations, rejected = records.decode(
        [GOOD, b"not json", batch, out_of_range], FMT, Limits(), now=NOON, partitions=[3, 5, 7, 9]
    )
    assert observations.partitions.tolist() == [3, 7, 7]
    assert sorted(r.reason for r in rejected) == [records.MALFORMED, records.OUT_OF_RANGE]
    assert records.decode([GOOD], FMT)[0].partitions is None


def test_nulled_documents_hold_null_wherever_a_number_is_not_finite():
    document = {"mase": math.nan, "rows": [{"mae": math.inf, "n": 3}, (-math.inf, 1.5)], "name": "NaN"}
    text = json.dumps(records.nulled(document), allow_nan=False)
    assert json.loads(text) == {"mase": None, "rows": [{"mae": None, "n": 3}, [None, 1.5]], "name": "NaN"}
