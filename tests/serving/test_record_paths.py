"""Nested input fields: a dotted field name is a path into the record's JSON objects."""

import json

import pytest

from forecaster.config import RecordFormat
from forecaster.serving import records

NESTED = RecordFormat(key="meta.station", timestamp="meta.time", target="payload.temp", covariates=("payload.rh",))


def decode(document: dict):
    return records.decode([json.dumps(document).encode()], NESTED)


def reading(**payload) -> dict:
    return {"meta": {"station": "KGSO", "time": "2024-03-10T12:30:00Z"}, "payload": {"temp": 21.5, "rh": 40, **payload}}


def test_dotted_paths_read_fields_of_nested_objects():
    observations, rejected = decode(reading())
    assert rejected == []
    assert observations.keys == ("KGSO",)
    assert observations.values.tolist() == [[21.5, 40.0]]
    assert observations.times.tolist() == [records.parse_time("2024-03-10T12:30:00Z", "t")[0]]


def test_a_null_at_the_end_of_a_path_is_a_missing_value():
    observations, rejected = decode(reading(temp=None))
    assert (
        rejected == [] and observations.values[0, 1] == 40.0 and observations.values[0, 0] != observations.values[0, 0]
    )


def test_a_field_literally_named_with_dots_is_taken_before_the_path():
    document = {**reading(), "payload.temp": 3.0}
    assert decode(document)[0].values.tolist() == [[3.0, 40.0]]


@pytest.mark.parametrize(
    ("document", "reason", "detail"),
    [
        ({"meta": reading()["meta"], "payload": {"rh": 40}}, records.MISSING_FIELD, "payload.temp: missing"),
        ({"meta": reading()["meta"]}, records.MISSING_FIELD, "payload.temp: missing"),
        ({"meta": reading()["meta"], "payload": [21.5]}, records.WRONG_TYPE, "payload: expected a JSON object"),
        ({**reading(), "meta": "KGSO"}, records.WRONG_TYPE, "meta: expected a JSON object, got 'KGSO'"),
    ],
    ids=["missing-leaf", "missing-object", "list-not-object", "text-not-object"],
)
def test_a_broken_path_is_rejected_with_where_it_broke(document, reason, detail):
    observations, rejected = decode(document)
    assert len(observations) == 0
    assert [r.reason for r in rejected] == [reason] and rejected[0].detail.startswith(detail)


@pytest.mark.parametrize("name", ["payload.", ".temp", "payload..temp"])
def test_a_path_with_an_empty_step_is_refused_at_load(name):
    with pytest.raises(ValueError, match="expected names or dotted paths"):
        RecordFormat(key="station", timestamp="time", target=name)
