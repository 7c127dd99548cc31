"""The shipped datasets load as the record streams the replay tool publishes."""

import csv
import json
import math
import shutil
from datetime import datetime, timedelta

import pytest

from forecaster.io import datasets

ROWS = {"msft": 7983, "taylor": 4032, "greensboro": 8760, "etth1": 17420 * 7, "etth2": 17420 * 7}

FIRST_LAST = {
    "msft": (
        {"symbol": "MSFT", "time": "1986-03-13T00:00:00+00:00", "close": 0.07533, "volume": 1371330506.0},
        {"symbol": "MSFT", "time": "2017-11-10T00:00:00+00:00", "close": 83.87, "volume": 19396301.0},
    ),
    "taylor": (
        {"region": "england_wales", "time": "2000-06-05T00:00:00+00:00", "demand_mw": 22262.0},
        {"region": "england_wales", "time": "2000-08-27T23:30:00+00:00", "demand_mw": 23132.0},
    ),
    "greensboro": (
        {
            "station": "723170",
            "time": "2001-01-01T01:00:00-05:00",
            "drybulb_c": 10.0,
            "dewpoint_c": 6.1,
            "rel_humidity_pct": 77.0,
            "pressure_mbar": 993.0,
            "wind_speed_ms": 6.2,
            "ghi_wm2": 0.0,
        },
        {
            "station": "723170",
            "time": "2002-01-01T00:00:00-05:00",
            "drybulb_c": 2.2,
            "dewpoint_c": 0.6,
            "rel_humidity_pct": 89.0,
            "pressure_mbar": 980.0,
            "wind_speed_ms": 2.6,
            "ghi_wm2": 0.0,
        },
    ),
    # ETT values are the CSV text parsed as float64, not rounded to 3 decimals.
    "etth1": (
        {"series": "etth1.HUFL", "time": "2016-07-01T00:00:00+00:00", "value": 5.827000141143799},
        {"series": "etth1.OT", "time": "2018-06-26T19:00:00+00:00", "value": 9.56700038909912},
    ),
    "etth2": (
        {"series": "etth2.HUFL", "time": "2016-07-01T00:00:00+00:00", "value": 41.13000106811523},
        {"series": "etth2.OT", "time": "2018-06-26T19:00:00+00:00", "value": 45.98649978637695},
    ),
}


@pytest.mark.parametrize("name", datasets.NAMES)
def test_each_dataset_has_its_documented_number_of_rows(name):
    assert len(datasets.load(name).records) == ROWS[name]


@pytest.mark.parametrize("name", datasets.NAMES)
def test_first_and_last_records_are_pinned(name):
    records = datasets.load(name).records
    first, last = FIRST_LAST[name]
    assert records[0] == first and list(records[0]) == list(first)
    assert records[-1] == last


@pytest.mark.parametrize("name", datasets.NAMES)
def test_records_carry_the_declared_fields_and_serialise(name):
    ds = datasets.load(name)
    fields = {ds.key_field, ds.time_field, ds.target_field, *ds.covariate_fields}
    assert ds.name == name
    for record in ds.records:
        assert set(record) == fields
    assert json.loads(json.dumps(ds.records[0])) == ds.records[0]


@pytest.mark.parametrize("name", datasets.NAMES)
def test_times_have_an_offset_and_increase_strictly_per_series(name):
    ds = datasets.load(name)
    last: dict[str, datetime] = {}
    for record in ds.records:
        time = datetime.fromisoformat(record[ds.time_field])
        assert time.utcoffset() is not None, record
        key = record[ds.key_field]
        assert key not in last or time > last[key], record
        last[key] = time


@pytest.mark.parametrize("name", datasets.NAMES)
def test_all_values_are_finite_floats(name):
    ds = datasets.load(name)
    for record in ds.records:
        for field in (ds.target_field, *ds.covariate_fields):
            assert isinstance(record[field], float) and math.isfinite(record[field]), record


@pytest.mark.parametrize(
    "name, cadence",
    [
        ("taylor", timedelta(minutes=30)),
        ("greensboro", timedelta(hours=1)),
        ("etth1", timedelta(hours=1)),
        ("etth2", timedelta(hours=1)),
    ],
)
def test_regular_series_have_no_gaps(name, cadence):
    ds = datasets.load(name)
    key = ds.records[0][ds.key_field]
    times = [datetime.fromisoformat(r[ds.time_field]) for r in ds.records if r[ds.key_field] == key]
    assert all(b - a == cadence for a, b in zip(times, times[1:]))


def test_ett_emits_seven_channels_per_row_in_column_order():
    records = datasets.load("etth2").records
    channels = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    assert [r["series"] for r in records[:7]] == [f"etth2.{c}" for c in channels]
    assert len({r["time"] for r in records[:7]}) == 1
    assert records[7]["time"] == "2016-07-01T01:00:00+00:00"


def test_greensboro_times_agree_with_the_tmy_hour_ending_stamps():
    path = datasets.data_dir() / "tmy3" / "greensboro_nc_tmy3.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row, record in zip(rows, datasets.load("greensboro").records, strict=True):
        hour_start = datetime.fromisoformat(record["time"]) - timedelta(hours=1)
        assert hour_start.strftime("%m/%d") == row["tmy_date"][:5], row
        assert f"{hour_start.hour + 1:02d}:00" == row["tmy_time"], row


def test_unknown_name_lists_the_known_names():
    with pytest.raises(ValueError, match="unknown dataset 'nope'") as info:
        datasets.load("nope")
    for name in datasets.NAMES:
        assert name in str(info.value)


def test_missing_data_dir_from_env_is_named(tmp_path, monkeypatch):
    missing = tmp_path / "absent"
    monkeypatch.setenv("FORECASTER_DATA_DIR", str(missing))
    with pytest.raises(FileNotFoundError, match="FORECASTER_DATA_DIR") as info:
        datasets.load("msft")
    assert str(missing) in str(info.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="FORECASTER_DATA_DIR") as info:
        datasets.load("taylor", data_dir=tmp_path)
    assert str(tmp_path / "taylor" / "taylor.csv") in str(info.value)


def test_env_var_selects_the_data_dir(tmp_path, monkeypatch):
    (tmp_path / "taylor").mkdir()
    (tmp_path / "taylor" / "taylor.csv").write_text("time,demand_mw\n2000-01-01T00:00:00Z,1\n")
    monkeypatch.setenv("FORECASTER_DATA_DIR", str(tmp_path))
    assert datasets.data_dir() == tmp_path
    assert datasets.load("taylor").records == (
        {"region": "england_wales", "time": "2000-01-01T00:00:00+00:00", "demand_mw": 1.0},
    )


def test_a_bad_value_is_reported_with_file_line_and_column(tmp_path):
    (tmp_path / "taylor").mkdir()
    path = tmp_path / "taylor" / "taylor.csv"
    path.write_text("time,demand_mw\n2000-01-01T00:00:00Z,1\n2000-01-01T00:30:00Z,nan\n")
    expected = r"taylor\.csv:3: demand_mw: expected a finite number, got 'nan'"
    with pytest.raises(ValueError, match=expected):
        datasets.load("taylor", data_dir=tmp_path)


def test_loads_are_cached_per_data_dir(tmp_path):
    shutil.copytree(datasets.data_dir() / "taylor", tmp_path / "taylor")
    assert datasets.load("taylor") is datasets.load("taylor")
    copy = datasets.load("taylor", data_dir=tmp_path)
    assert copy is not datasets.load("taylor") and copy == datasets.load("taylor")
