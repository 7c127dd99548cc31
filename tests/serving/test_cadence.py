"""Cadence: horizon timestamps from a cadence, and calendar features of the records' local time."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from forecaster.config import Calendar
from forecaster.serving.cadence import calendar_features, horizon_times, step_seconds
from forecaster.serving.records import parse_time

DAY = 86_400.0
EST = timezone(timedelta(hours=-5))


def observed(*iso_times: str) -> tuple[np.ndarray, np.ndarray]:
    """(times, local_times) columns for ISO-8601 record times, as records.decode makes them."""
    pairs = [parse_time(t, "time") for t in iso_times]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@pytest.mark.parametrize(
    "cadence, seconds",
    [
        ("15s", 15.0),
        ("30m", 1800.0),
        ("1h", 3600.0),
        ("6h", 21_600.0),
        ("1d", DAY),
        ("1b", DAY),
        ("2b", 2 * DAY),
    ],
)
def test_a_cadence_is_a_fixed_number_of_seconds_and_a_business_day_counts_as_a_day(cadence, seconds):
    assert step_seconds(cadence) == seconds


@pytest.mark.parametrize("cadence, step", [("30m", 1800.0), ("1h", 3600.0), ("1d", DAY)])
def test_fixed_cadences_step_evenly_from_each_observation(cadence, step):
    times = np.array([1_000_000.0, 2_000_000.0])
    result = horizon_times(times, times + 7200, cadence, 3)
    assert result.shape == (2, 3)
    assert result.tolist() == [[1_000_000.0 + step * k for k in (1, 2, 3)], [2_000_000.0 + step * k for k in (1, 2, 3)]]


def test_a_daily_cadence_does_not_skip_weekends():
    times, local = observed("2024-01-05T16:00:00-05:00")  # a Friday
    assert horizon_times(times, local, "1d", 2).tolist() == [
        [at("2024-01-06T16:00:00-05:00"), at("2024-01-07T16:00:00-05:00")]
    ]


def test_business_days_from_a_friday_skip_the_weekend_and_keep_the_wall_clock_time():
    times, local = observed("2024-01-05T16:00:00-05:00")  # Friday 16:00 in New York
    expected = ["2024-01-08", "2024-01-09", "2024-01-10", "2024-01-11", "2024-01-12", "2024-01-15"]
    assert horizon_times(times, local, "1b", 6).tolist() == [[at(f"{d}T16:00:00-05:00") for d in expected]]


def test_business_days_from_a_wednesday_run_to_friday_then_monday():
    times, local = observed("2024-01-03T09:30:00+00:00")  # a Wednesday
    expected = ["2024-01-04", "2024-01-05", "2024-01-08"]
    assert horizon_times(times, local, "1b", 3).tolist() == [[at(f"{d}T09:30:00+00:00") for d in expected]]


def test_weekdays_are_judged_in_local_time():
    # Friday 22:00 in New York is already Saturday 03:00 UTC: still a Friday for the record.
    times, local = observed("2024-01-05T22:00:00-05:00")
    result = horizon_times(times, local, "1b", 2)[0]
    assert result.tolist() == [at("2024-01-08T22:00:00-05:00"), at("2024-01-09T22:00:00-05:00")]
    assert [datetime.fromtimestamp(t, EST).strftime("%a %H:%M") for t in result] == ["Mon 22:00", "Tue 22:00"]


@pytest.mark.parametrize("weekend_day", ["2024-01-06", "2024-01-07"])
def test_the_first_business_day_after_a_weekend_observation_is_monday(weekend_day):
    times, local = observed(f"{weekend_day}T12:00:00+00:00")
    expected = ["2024-01-08", "2024-01-09"]
    assert horizon_times(times, local, "1b", 2).tolist() == [[at(f"{d}T12:00:00+00:00") for d in expected]]


def test_a_two_business_day_cadence_counts_business_days():
    times, local = observed("2024-01-04T12:00:00+00:00")  # a Thursday
    expected = ["2024-01-08", "2024-01-10", "2024-01-12"]
    assert horizon_times(times, local, "2b", 3).tolist() == [[at(f"{d}T12:00:00+00:00") for d in expected]]


def test_each_row_of_a_batch_steps_business_days_in_its_own_utc_offset():
    times, local = observed("2024-01-05T16:00:00-05:00", "2024-01-05T16:00:00+09:00", "2024-01-08T00:00:00+00:00")
    assert horizon_times(times, local, "1b", 1).tolist() == [
        [at("2024-01-08T16:00:00-05:00")],
        [at("2024-01-08T16:00:00+09:00")],
        [at("2024-01-09T00:00:00+00:00")],
    ]


# --- calendar features ----------------------------------------------------------------


@pytest.mark.parametrize("hour_of_day", [False, True])
@pytest.mark.parametrize("day_of_week", [False, True])
def test_feature_width_matches_the_calendar(hour_of_day, day_of_week):
    cal = Calendar(hour_of_day=hour_of_day, day_of_week=day_of_week)
    features = calendar_features(np.array([0.0, 3600.0, 7200.0]), cal)
    assert features.shape == (3, cal.width)
    assert cal.width == 2 * (hour_of_day + day_of_week)


HOURS = Calendar(hour_of_day=True)
WEEKDAYS = Calendar(day_of_week=True)


@pytest.mark.parametrize("hour, sin, cos", [(0, 0.0, 1.0), (6, 1.0, 0.0), (12, 0.0, -1.0), (18, -1.0, 0.0)])
def test_hour_of_day_is_a_point_on_the_daily_circle(hour, sin, cos):
    local = np.array([19_000 * DAY + hour * 3600.0])
    np.testing.assert_allclose(calendar_features(local, HOURS), [[sin, cos]], atol=1e-12)


def test_hour_of_day_follows_the_records_local_time():
    # local midnight in Tokyo is 15:00 UTC the day before
    times, local = observed("2024-03-10T00:00:00+09:00", "2024-03-10T06:00:00+09:00")
    np.testing.assert_allclose(calendar_features(local, HOURS), [[0.0, 1.0], [1.0, 0.0]], atol=1e-12)
    assert not np.allclose(calendar_features(times, HOURS), calendar_features(local, HOURS))


def test_day_of_week_tells_monday_from_sunday():
    monday, sunday = 4 * DAY, 3 * DAY  # 1970-01-05 was a Monday
    features = calendar_features(np.array([monday, sunday]), WEEKDAYS)
    np.testing.assert_allclose(features[0], [0.0, 1.0], atol=1e-12)  # Monday is weekday 0
    np.testing.assert_allclose(features[1], [np.sin(2 * np.pi * 6 / 7), np.cos(2 * np.pi * 6 / 7)], atol=1e-12)


def test_each_weekday_is_distinct_and_repeats_a_week_later():
    days = np.arange(7) * DAY + 12 * 3600.0
    week = calendar_features(days, WEEKDAYS)
    assert len({tuple(np.round(row, 9)) for row in week}) == 7
    np.testing.assert_allclose(calendar_features(days + 7 * DAY, WEEKDAYS), week, atol=1e-9)


def test_a_known_monday_has_weekday_zero():
    _, local = observed("2024-01-01T23:30:00-05:00")  # Monday evening in New York (Tuesday in UTC)
    np.testing.assert_allclose(calendar_features(local, WEEKDAYS), [[0.0, 1.0]], atol=1e-12)


def test_hour_features_come_before_weekday_features():
    local = np.array([4 * DAY + 6 * 3600.0])  # Monday 06:00
    np.testing.assert_allclose(
        calendar_features(local, Calendar(hour_of_day=True, day_of_week=True)), [[1.0, 0.0, 0.0, 1.0]], atol=1e-12
    )
