"""Calendar cadences: weeks, months, quarters, business days with holidays, and days and hours in a time zone.

Each forecast step's time follows the calendar exactly: month ends stay month ends, leap
days count, and a day in a zone is a local date, 23 or 25 hours long across a DST change.
"""

import dataclasses
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from forecaster.build import seeded_model
from forecaster.config import Calendar
from forecaster.serving.cadence import (
    Cadence,
    calendar_features,
    horizon_times,
    seasons,
    step_numbers,
    step_seconds,
    to_local,
)
from forecaster.serving.engine import Engine
from forecaster.serving.gaps import missing_steps
from forecaster.serving.records import Observations, parse_time

from support import make_pipeline

LONDON = Cadence("1d", zone="Europe/London")
NEW_YORK_HOURS = Cadence("1h", zone="America/New_York")


def observed(*iso_times: str) -> tuple[np.ndarray, np.ndarray]:
    """(times, local_times) columns for ISO-8601 record times, as records.decode makes them."""
    pairs = [parse_time(t, "time") for t in iso_times]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def in_zone(cadence: Cadence, *iso_times: str) -> tuple[np.ndarray, np.ndarray]:
    """(times, local_times) for record times in a cadence with a zone, as the engine localises them."""
    times, _ = observed(*iso_times)
    return times, to_local(times, 0.0, cadence)


def ahead(times, local, cadence, horizon: int) -> list[str]:
    """The forecast steps of the first row, as UTC ISO text."""
    return [
        datetime.fromtimestamp(t, ZoneInfo("UTC")).isoformat() for t in horizon_times(times, local, cadence, horizon)[0]
    ]


def local_text(instants, zone: str) -> list[str]:
    return [datetime.fromtimestamp(t, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z") for t in instants]


# --- months and quarters ------------------------------------------------------------------


def test_a_month_end_is_followed_by_month_ends_through_a_leap_february():
    times, local = observed("2024-01-31T00:00:00+00:00")
    assert ahead(times, local, "1M", 4) == [
        "2024-02-29T00:00:00+00:00",
        "2024-03-31T00:00:00+00:00",
        "2024-04-30T00:00:00+00:00",
        "2024-05-31T00:00:00+00:00",
    ]


def test_a_month_end_in_a_common_year_is_followed_by_february_the_28th():
    times, local = observed("2023-01-31T00:00:00+00:00")
    assert ahead(times, local, "1M", 2) == ["2023-02-28T00:00:00+00:00", "2023-03-31T00:00:00+00:00"]


def test_february_the_28th_is_a_month_end_only_outside_a_leap_year():
    times, local = observed("2023-02-28T00:00:00+00:00", "2024-02-28T00:00:00+00:00")
    steps = horizon_times(times, local, "1M", 1)[:, 0]
    assert [datetime.fromtimestamp(t, ZoneInfo("UTC")).date() for t in steps] == [date(2023, 3, 31), date(2024, 3, 28)]


def test_a_month_start_is_followed_by_month_starts_keeping_the_time_of_day_and_offset():
    times, local = observed("2023-11-01T09:30:00+01:00")
    assert [datetime.fromtimestamp(t, ZoneInfo("UTC")) for t in horizon_times(times, local, "1M", 3)[0]] == [
        datetime.fromisoformat(s)
        for s in ("2023-12-01T09:30:00+01:00", "2024-01-01T09:30:00+01:00", "2024-02-01T09:30:00+01:00")
    ]


def test_a_day_past_a_shorter_months_length_is_clipped_to_that_months_last_day():
    times, local = observed("2024-01-30T00:00:00+00:00")
    assert ahead(times, local, "1M", 2) == ["2024-02-29T00:00:00+00:00", "2024-03-30T00:00:00+00:00"]


def test_quarters_step_three_months_and_keep_quarter_ends():
    times, local = observed("2023-11-30T00:00:00+00:00")
    assert ahead(times, local, "1Q", 3) == [
        "2024-02-29T00:00:00+00:00",
        "2024-05-31T00:00:00+00:00",
        "2024-08-31T00:00:00+00:00",
    ]


def test_a_leap_day_twelve_months_on_is_the_next_februarys_end():
    times, local = observed("2024-02-29T00:00:00+00:00")
    assert ahead(times, local, "12M", 1) == ["2025-02-28T00:00:00+00:00"]


def test_month_step_numbers_count_calendar_months_whatever_the_day():
    times, local = observed(
        "2023-12-31T00:00:00+00:00",
        "2024-01-01T00:00:00+00:00",
        "2024-01-31T23:00:00+00:00",
        "2024-02-29T00:00:00+00:00",
    )
    months = step_numbers(times, local, "1M")
    assert np.diff(months).tolist() == [1, 0, 1]
    assert months[1] == 54 * 12  # January 2024 is month 648 after January 1970
    assert step_numbers(times, local, "1Q").tolist() == [215, 216, 216, 216]


def test_a_month_missed_between_month_ends_is_one_missing_step():
    times, local = observed("2024-03-31T00:00:00+00:00", "2024-02-29T00:00:00+00:00")
    previous, _ = observed("2024-01-31T00:00:00+00:00", "2024-01-31T00:00:00+00:00")
    assert missing_steps(times, local, previous, "1M").tolist() == [1, 0]


def test_monthly_steps_are_read_in_the_records_local_date():
    # 23:00 on January 31 in New York is February 1 in UTC: still a January month end for the record
    times, local = observed("2024-01-31T23:00:00-05:00")
    assert step_numbers(times, local, "1M").tolist() == [54 * 12]
    assert horizon_times(times, local, "1M", 1)[0].tolist() == [
        datetime.fromisoformat("2024-02-29T23:00:00-05:00").timestamp()
    ]


# --- weeks --------------------------------------------------------------------------------


def test_weeks_keep_the_weekday_and_step_numbers_are_iso_weeks_monday_to_sunday():
    times, local = observed("2024-12-23T00:00:00+00:00")  # a Monday
    assert ahead(times, local, "1w", 2) == ["2024-12-30T00:00:00+00:00", "2025-01-06T00:00:00+00:00"]
    week, _ = observed("2024-12-23T00:00:00+00:00", "2024-12-29T23:00:00+00:00", "2024-12-30T00:00:00+00:00")
    assert np.diff(step_numbers(week, week, "1w")).tolist() == [0, 1]  # Sunday is the Monday's week


# --- business days with holidays ------------------------------------------------------------


CHRISTMAS = Cadence("1b", holidays=(date(2024, 12, 25), date(2024, 12, 26)))


def test_business_days_skip_the_holidays_as_they_skip_weekends():
    times, local = observed("2024-12-24T16:00:00+00:00")  # Tuesday; Wednesday and Thursday are holidays
    assert ahead(times, local, CHRISTMAS, 3) == [
        "2024-12-27T16:00:00+00:00",
        "2024-12-30T16:00:00+00:00",
        "2024-12-31T16:00:00+00:00",
    ]


def test_no_step_is_missing_across_holidays_and_the_first_step_after_a_holiday_is_the_next_business_day():
    times, local = observed("2024-12-27T16:00:00+00:00")
    previous, _ = observed("2024-12-24T16:00:00+00:00")
    assert missing_steps(times, local, previous, CHRISTMAS).tolist() == [0]
    assert missing_steps(times, local, previous, "1b").tolist() == [2]  # without the holidays, two were missed
    christmas, local = observed("2024-12-25T12:00:00+00:00")
    assert ahead(christmas, local, CHRISTMAS, 1) == ["2024-12-27T12:00:00+00:00"]


# --- days and hours in a time zone ----------------------------------------------------------


def test_a_day_in_london_is_23_hours_in_spring_and_25_in_autumn():
    times, local = in_zone(LONDON, "2024-03-30T00:00:00+00:00")
    spring = horizon_times(times, local, LONDON, 2)[0]
    assert local_text(spring, "Europe/London") == ["2024-03-31 00:00 GMT", "2024-04-01 00:00 BST"]
    assert np.diff(np.r_[times, spring]).tolist() == [86_400.0, 82_800.0]
    times, local = in_zone(LONDON, "2024-10-26T00:00:00+01:00")
    autumn = horizon_times(times, local, LONDON, 2)[0]
    assert local_text(autumn, "Europe/London") == ["2024-10-27 00:00 BST", "2024-10-28 00:00 GMT"]
    assert np.diff(np.r_[times, autumn]).tolist() == [86_400.0, 90_000.0]


def test_local_midnights_across_a_dst_change_are_consecutive_days_with_none_missing():
    times, local = in_zone(LONDON, "2024-03-31T00:00:00+00:00", "2024-04-01T00:00:00+01:00")
    assert np.diff(step_numbers(times, local, LONDON)).tolist() == [1]
    assert missing_steps(times[1:], local[1:], times[:1], LONDON).tolist() == [0]


def test_without_a_zone_a_day_is_24_hours_whatever_the_clocks_do():
    times, local = observed("2024-03-30T00:00:00+00:00")
    assert ahead(times, local, "1d", 2) == ["2024-03-31T00:00:00+00:00", "2024-04-01T00:00:00+00:00"]


def test_a_wall_time_the_spring_change_skips_is_read_with_the_offset_before_it():
    new_york = Cadence("1d", zone="America/New_York")
    times, local = in_zone(new_york, "2024-03-09T02:30:00-05:00")  # 02:30 on March 10 does not exist there
    assert local_text(horizon_times(times, local, new_york, 2)[0], "America/New_York") == [
        "2024-03-10 03:30 EDT",
        "2024-03-11 02:30 EDT",
    ]


def test_hours_step_in_absolute_time_and_their_features_read_the_local_clock_across_dst():
    times, local = in_zone(NEW_YORK_HOURS, "2024-03-10T06:00:00+00:00")  # 01:00 EST
    steps = horizon_times(times, local, NEW_YORK_HOURS, 2)[0]
    assert np.diff(np.r_[times, steps]).tolist() == [3600.0, 3600.0]
    assert local_text(steps, "America/New_York") == ["2024-03-10 03:00 EDT", "2024-03-10 04:00 EDT"]
    hours = calendar_features(to_local(steps, 0.0, NEW_YORK_HOURS), Calendar(hour_of_day=True))
    np.testing.assert_allclose(hours[0], [np.sin(2 * np.pi * 3 / 24), np.cos(2 * np.pi * 3 / 24)], atol=1e-12)


def test_a_zone_takes_the_place_of_the_records_offsets():
    times, record_local = observed("2024-07-01T12:00:00+00:00")
    assert to_local(times, record_local - times, "1d").tolist() == record_local.tolist()
    assert (to_local(times, 0.0, LONDON) - times).tolist() == [3600.0]  # BST


# --- seasons, lengths and features -------------------------------------------------------------


@pytest.mark.parametrize(
    "cadence, found",
    [
        ("1w", (52,)),
        ("2w", (26,)),
        ("3w", ()),
        ("1M", (12,)),
        ("3M", (4,)),
        ("5M", ()),
        ("1Q", (4,)),
        ("2Q", (2,)),
        ("4Q", ()),
    ],
)
def test_the_season_of_weeks_months_and_quarters_is_a_year(cadence, found):
    assert seasons(cadence) == found


def test_a_zone_leaves_the_daily_season_a_week():
    assert seasons(LONDON) == seasons("1d") == (7,)


def test_a_month_counts_as_31_days_where_only_a_length_is_needed():
    assert step_seconds("1M") == 31 * 86_400.0
    assert step_seconds("1Q") == 92 * 86_400.0
    assert step_seconds("2w") == 14 * 86_400.0


def test_month_of_year_is_a_point_on_the_yearly_circle():
    _, local = observed("2024-01-15T00:00:00+00:00", "2024-07-15T00:00:00+00:00")
    np.testing.assert_allclose(calendar_features(local, Calendar(month_of_year=True)), [[0, 1], [0, -1]], atol=1e-12)


def test_week_of_year_is_the_iso_week_for_every_day_of_a_dozen_years():
    first = date(2015, 1, 1)
    dates = [first + timedelta(days=k) for k in range(12 * 366)]
    local = np.array([(d - date(1970, 1, 1)).days * 86_400.0 + 43_200.0 for d in dates])
    angle = np.arctan2(*calendar_features(local, Calendar(week_of_year=True)).T)
    weeks = np.rint(np.mod(angle, 2 * np.pi) * (365.2425 / 7) / (2 * np.pi)).astype(int) + 1
    assert weeks.tolist() == [d.isocalendar().week for d in dates]


def test_features_come_in_the_order_hour_weekday_month_week():
    calendar = Calendar(hour_of_day=True, day_of_week=True, month_of_year=True, week_of_year=True)
    _, local = observed("2024-01-01T06:00:00+00:00")  # Monday 06:00 of ISO week 1 in January
    np.testing.assert_allclose(calendar_features(local, calendar), [[1, 0, 0, 1, 0, 1, 0, 1]], atol=1e-12)
    assert calendar.width == 8


# --- the engine on a calendar -------------------------------------------------------------------


def month_ends(first: date, count: int) -> np.ndarray:
    """UTC midnights of `count` month ends from the end of `first`'s month."""
    ends = []
    for k in range(count):
        months = first.month + k
        ends.append(date(first.year + months // 12, months % 12 + 1, 1) - timedelta(days=1))
    return np.array([datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() for d in ends])


def step_each(engine: Engine, times: np.ndarray, values: np.ndarray) -> list:
    """Step one series' records one batch each (local time UTC, as the engine gets epoch seconds); its forecasts."""
    out = []
    for t, y in zip(times.tolist(), values.tolist()):
        one = np.array([t])
        forecasts, rejected = engine.step(Observations(("a",), one, one, np.array([[y]]), np.arange(1)), now=t)
        assert not rejected
        out.append(forecasts)
    return out


def test_the_engine_forecasts_month_ends_and_learns_a_yearly_pattern_a_year_back_across_a_missing_month():
    pipeline = make_pipeline(cadence="1M", horizon=3, combination=True, fill_gaps=True)
    engine = Engine(pipeline, seeded_model(pipeline))
    assert "seasonal_naive_12" in engine.combination.names
    times = month_ends(date(2010, 1, 1), 96)  # Jan 2010 .. Dec 2017
    pattern = 100 + 20 * np.sin(2 * np.pi * np.arange(96 + 3) / 12)  # and the three months forecast after
    kept = np.arange(96) != 60  # January 2015 never arrives: February is a month after a missing one
    forecasts = step_each(engine, times[kept], pattern[:96][kept])
    last = forecasts[-1]
    assert [datetime.fromtimestamp(t, UTC).date() for t in last.horizon_times[0]] == [
        date(2018, 1, 31),
        date(2018, 2, 28),
        date(2018, 3, 31),
    ]
    late = [np.abs(f.values[0] - pattern[i + 1 : i + 4]).mean() for i, f in zip(np.flatnonzero(kept), forecasts)]
    assert (
        np.mean(late[:12]) > 1 and np.mean(late[-24:]) < 0.02 * 20
    )  # the last two years: the year-back expert's, almost exactly


def test_a_daily_pipeline_in_a_zone_forecasts_local_midnights_across_both_dst_changes():
    pipeline = dataclasses.replace(make_pipeline(cadence="1d", horizon=2), cadence_tz="Europe/London")
    engine = Engine(pipeline, seeded_model(pipeline))
    london = ZoneInfo("Europe/London")
    days = [date(2024, 3, 1) + timedelta(days=k) for k in range(250)]  # March to early November
    times = np.array([datetime(d.year, d.month, d.day, tzinfo=london).timestamp() for d in days])
    forecasts = step_each(engine, times, np.arange(250.0))
    steps = np.concatenate([f.horizon_times[0] for f in forecasts])
    assert {datetime.fromtimestamp(t, london).strftime("%H:%M") for t in steps} == {"00:00"}
    first_steps = np.array([f.horizon_times[0, 0] for f in forecasts])
    assert first_steps[:-1].tolist() == times[1:].tolist()  # each forecast's first step is the next record's day
    assert set(np.diff(times).tolist()) == {82_800.0, 86_400.0, 90_000.0}
