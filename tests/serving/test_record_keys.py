"""The Kafka message key against the series key field: a mismatch is marked, the key field wins."""

import json

import numpy as np

from forecaster.config import Limits, RecordFormat
from forecaster.serving import records

FMT = RecordFormat(key="station", timestamp="time", target="temp")


def obj(station: str, temp: float = 1.0) -> dict:
    return {"station": station, "time": "2024-03-10T12:30:00Z", "temp": temp}


def decode(payloads, keys, limits=None):
    observations, _, _ = records.decode_slice(payloads, None, FMT, limits, 2e9, message_keys=keys)
    return observations


def test_a_record_whose_kafka_key_differs_or_is_null_is_marked_and_kept_under_its_key_field():
    payloads = [json.dumps(obj(s)).encode() for s in ("a", "b", "c", "7")]
    observations = decode(payloads, [b"a", b"other", None, b"7"])
    assert observations.keys == ("a", "b", "c", "7")
    assert observations.mismatched.tolist() == [False, True, True, False]


def test_the_records_of_a_batch_message_are_never_marked():
    batch = json.dumps([obj("a"), obj("b")]).encode()
    observations = decode([batch, json.dumps(obj("c")).encode()], [b"bucket-0", b"x"])
    assert observations.keys == ("a", "b", "c")
    assert observations.mismatched.tolist() == [False, False, True]


def test_marks_follow_their_records_past_rejections_and_limits():
    payloads = [b"junk", json.dumps(obj("a", 1e300)).encode(), json.dumps(obj("b")).encode()]
    observations = decode(payloads, [b"j", b"x", b"x"], Limits())
    assert observations.keys == ("b",) and observations.mismatched.tolist() == [True]


def test_without_message_keys_nothing_is_checked():
    observations, _ = records.decode([json.dumps(obj("a")).encode()], FMT)
    assert observations.mismatched is None
    assert decode([], []).mismatched.dtype == np.bool_
