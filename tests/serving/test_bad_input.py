"""Generated garbage through decode and the engine: nothing raises, every record is accounted
for with a documented reason, and no other series' state moves (property-based, hypothesis)."""

import functools
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from forecaster import build
from forecaster.build import seeded_model
from forecaster.config import Limits
from forecaster.serving import records
from forecaster.serving.engine import Engine

from support import make_pipeline, observations

RECORDS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "records.md"
PIPELINE = make_pipeline(covariates=("x",), max_series=2)  # garbage keys evict the anchor, which spills
FMT, LIMITS = PIPELINE.record, Limits()
NOW = 1_700_000_000.0
HOUR = 3600.0
ANCHOR = "anchor"  # a well-behaved series that the garbage must not disturb
LONE_SURROGATE = b'{"key": "\\ud800", "time": 1700000000, "y": 1.0, "x": 2.0}'  # valid JSON, no UTF-8 for the key

DECODE_REASONS = {
    records.MALFORMED,
    records.MISSING_FIELD,
    records.WRONG_TYPE,
    records.NON_FINITE,
    records.BAD_TIMESTAMP,
    records.OUT_OF_RANGE,
    records.FUTURE_TIMESTAMP,
    records.KEY_TOO_LONG,
}
ENGINE_REASONS = {records.OUT_OF_ORDER, records.DUPLICATE_TIMESTAMP, records.SERIES_CAPACITY, records.NO_VALUE_YET}
# steps vary in time
UNTIMED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# --- what garbage looks like ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
# JSON text that no json.dumps of a Python value writes: overflowing and over-long numbers, lone surrogates.
raw_tokens = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1e999",
        "1e-999",
        "-0",
        "1e308",
        "9" * 5000,
        "-" + "9" * 400,
        '"\\ud800"',
        '"k\\udfff"',
        '""',
        '"\\u0000"',
        "[]",
        "{}",
        "true",
        "null",
    ]
)
fragments = json_values.map(json.dumps) | raw_tokens
offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
iso_times = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone).isoformat(),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.none() | offsets.map(timezone),
)
plausible_keys = st.one_of(
    st.sampled_from(["s0", "s1", "s2", "s3", "s4", "s5"]),
    st.integers(),
    st.text(min_size=1, max_size=6),
    st.text(st.characters(categories=["Cc", "Lo", "So"]), min_size=1, max_size=3),  # controls, CJK, emoji
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),  # lone surrogates: json.dumps writes "\ud800"
)
plausible_times = st.floats(NOW - 1e9, NOW + 30 * 86_400.0) | st.integers(-(10**11), 10**11) | iso_times
plausible_values = st.floats(-1e16, 1e16) | st.integers(-(10**16), 10**16) | st.floats() | st.integers()


def field(plausible):
    """A field's JSON text, more often plausible (of the right type, perhaps out of bounds) than garbage; None:
    absent."""
    return st.one_of(plausible.map(json.dumps), plausible.map(json.dumps), fragments, st.none())


def json_object(fields: dict[str, str | None]) -> bytes:
    present = {name: fragment for name, fragment in fields.items() if fragment is not None}
    return ("{" + ",".join(f"{json.dumps(name)}:{fragment}" for name, fragment in present.items()) + "}").encode()


# Objects with the record's fields (some absent, perhaps one extra), each of any type or value.
shaped = st.fixed_dictionaries(
    {
        "key": field(plausible_keys),
        "time": field(plausible_times),
        "y": field(plausible_values),
        "x": field(plausible_values),
        "extra": fragments | st.none(),
    }
).map(json_object)
# Well-formed records of a few series at a few times (so the engine sees stale and repeated times),
# or of series with odd keys.
clean = st.builds(
    lambda key, hour, y, x: json.dumps({"key": key, "time": NOW - HOUR * hour, "y": y, "x": x}).encode(),
    st.sampled_from(["s0", "s1", "s2", "s3", "s4", "s5", "s6"]) | plausible_keys,
    st.integers(0, 5),
    st.floats(-1e6, 1e6),
    st.floats(-1e15, 1e15),
)
# Batch messages: JSON lists of records of either kind and of garbage values.
batched = st.lists(shaped | clean | fragments.map(str.encode), min_size=1, max_size=4).map(
    lambda items: b"[" + b",".join(items) + b"]"
)
payloads = st.one_of(
    shaped,
    shaped,
    clean,
    batched,
    st.none(),
    st.binary(max_size=40),
    json_values.map(lambda v: json.dumps(v).encode()),
)
batches = st.lists(payloads, max_size=40)


# --- properties -----------------------------------------------------------------------------------


def test_the_reasons_are_the_documented_set():
    constants = {value for name, value in vars(records).items() if name.isupper() and isinstance(value, str)}
    assert DECODE_REASONS | ENGINE_REASONS == constants
    table = RECORDS_PAGE.read_text().split("\n## Bad input\n", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M)) == constants


def alone(batch: list, origin: records.Origin) -> bytes:
    """The record at `origin` as a message of its own (an element: as a batch message of one)."""
    if origin.element is None:
        return batch[origin.message]
    return b"[" + records.element_payload(batch[origin.message], origin.element) + b"]"


@settings(UNTIMED, max_examples=300)
@given(batches)
@example([LONE_SURROGATE, b"[]", None])
@example([b"[null,{}]", b'[[{}], {"key": "k", "time": 0, "y": 1, "x": 2}]'])
@example([b'[{"key":"s4","x":1.0,"extra":NaN},{"key": -9223372036854775809, "time": 1699982000.0, "y": 1, "x": 2}]'])
def test_decode_accounts_for_every_record_and_accepts_only_sane_values(batch):
    accepted, rejected = records.decode(batch, FMT, LIMITS, NOW)
    origins = records.origins(batch)
    assert sorted(accepted.positions.tolist() + [r.position for r in rejected]) == list(range(len(origins)))
    assert sorted({o.message for o in origins}) == list(range(len(batch)))  # every message holds a record
    for bad in rejected:
        assert bad.reason in DECODE_REASONS and bad.detail.encode()  # the detail goes into a Kafka header
        reasons = [r.reason for r in records.decode([alone(batch, origins[bad.position])], FMT, LIMITS, NOW)[1]]
        assert reasons == [bad.reason]  # the reason belongs to the record at that position
    assert not np.isinf(accepted.values).any() and np.isfinite(accepted.times).all()  # NaN: a null, a missing value
    assert (np.abs(np.nan_to_num(accepted.values)) <= LIMITS.max_abs_value).all()
    assert (accepted.times <= NOW + LIMITS.max_future_seconds).all()
    assert all(len(key.encode()) <= LIMITS.max_key_bytes for key in accepted.keys)
    for i, key in enumerate(accepted.keys):
        assert isinstance(key, str) and key and key.encode()  # the series key becomes the Kafka record key
        record = json.loads(alone(batch, origins[accepted.positions[i]]))
        record = record[0] if isinstance(record, list) else record
        assert np.isnan(accepted.values[i]).tolist() == [record["y"] is None, record["x"] is None]
        itself = records.decode([alone(batch, origins[accepted.positions[i]])], FMT, LIMITS, NOW)[0]
        assert itself.keys == (key,) and itself.times[0] == accepted.times[i]
        np.testing.assert_array_equal(itself.values[0], accepted.values[i])


MODEL = seeded_model(PIPELINE)  # shared by every engine here: stepping never changes weights


def anchored_engine() -> Engine:
    """An engine whose anchor series has taken one clean record."""
    engine = build.engine(PIPELINE, MODEL)
    forecasts, rejected = engine.step(observations([ANCHOR], [NOW - 240 * HOUR], [[20.0, 1.0]]), now=0.0)
    assert len(forecasts) == 1 and rejected == []
    return engine


def anchor_next(engine: Engine) -> np.ndarray:
    forecasts, rejected = engine.step(observations([ANCHOR], [NOW - 239 * HOUR], [[21.0, 2.0]]), now=0.0)
    assert rejected == []
    return forecasts.values


def anchor_state(engine: Engine) -> dict:
    store = engine.store
    slot = store.slots([ANCHOR])  # brings it back from the spill if the garbage evicted it
    state, moments = store.gather(torch.as_tensor(slot, device=store.device))
    s = int(slot[0])
    return {
        "state": state,
        "mean": moments.mean,
        "var": moments.var,
        "count": moments.count,
        "host": np.array([store.last_time[s], store.last_value[s], store.last_forecast[s]]),
    }


@functools.cache
def undisturbed() -> dict:
    """The anchor's state and next forecast where no garbage came."""
    twin = anchored_engine()
    return {"state": anchor_state(twin), "next": anchor_next(twin)}


@settings(UNTIMED, max_examples=150)
@given(batches)
@example([b"not json", None])  # a poll batch with nothing usable in it
@example([LONE_SURROGATE])
# a new series' null reading, refused (no value yet), then its first value: no null reading left in the batch
@example([b'{"key":"s0","time":700000000.0,"y":null,"x":0.0}', b'{"key":"s0","time":1700000000.0,"y":0.0,"x":0.0}'])
def test_garbage_through_the_engine_never_raises_and_leaves_other_series_alone(batch):
    accepted, _ = records.decode(batch, FMT, LIMITS, NOW)
    assume(ANCHOR not in accepted.keys)
    engine = anchored_engine()

    forecasts, refused = engine.step(accepted, now=0.0)

    assert {r.reason for r in refused} <= ENGINE_REASONS
    assert sorted(forecasts.positions.tolist() + [r.position for r in refused]) == sorted(accepted.positions.tolist())
    assert np.isfinite(forecasts.values).all() and np.isfinite(forecasts.horizon_times).all()
    for row in forecasts.rows():
        assert row.series.encode() and records.encode(row, PIPELINE.name, FMT.target)  # what the run loop produces
    mine, expected = anchor_state(engine), undisturbed()
    for name in ("state", "mean", "var", "count"):
        assert torch.equal(mine[name], expected["state"][name]), name
    np.testing.assert_array_equal(mine["host"], expected["state"]["host"])
    np.testing.assert_array_equal(anchor_next(engine), expected["next"])
