"""Time arithmetic on whole batches: step numbers and horizon timestamps from a cadence, and calendar features.

A cadence of seconds, minutes or hours ('30m', '1h') is a fixed number of seconds, and so is
a day ('1d') without a time zone. Business days ('Nb'), weeks ('Nw'), months ('NM'),
quarters ('NQ') and days with a zone (`Cadence.zone`) follow the local calendar instead: an
observation's step number is its local date's (its business day's, ISO week's, month's or
quarter's), and the steps after it keep its local time of day on later dates, then go back
to UTC. Local time is the zone's where the cadence names one (so a day is 23 or 25 hours
across a DST change), else the record's own UTC offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cached_property
from zoneinfo import ZoneInfo

import numpy as np

from forecaster.config import Calendar, Pipeline

_DAY, _WEEK = 86_400.0, 604_800.0
# Nominal seconds per step, for what needs only a length (how far ahead a timestamp may lie): a month counts as
# the longest, 31 days, and a quarter as 92.
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": _DAY, "b": _DAY, "w": _WEEK, "M": 31 * _DAY, "Q": 92 * _DAY}
_MONTHS = {"M": 1, "Q": 3}  # months per step of a calendar-month unit
# Steps per year of the yearly season. A year is 52.18 weeks: 52 weeks back lands within a day and a quarter of
# the same date, and the seasonal naive a year back needs a whole number of steps.
_PER_YEAR = {"w": 52, "M": 12, "Q": 4}
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday is 0
_WEEKS_PER_YEAR = 365.2425 / 7


@dataclass(frozen=True)
class Cadence:
    """A cadence ('1h', '1M') with the time zone its calendar is read in and the holidays of business days."""

    every: str
    zone: str | None = None  # an IANA name; None: the records' own UTC offsets
    holidays: tuple[date, ...] = ()  # dates that are not business days (Nb only)

    @classmethod
    def of(cls, pipeline: Pipeline) -> Cadence:
        return cls(pipeline.cadence, pipeline.cadence_tz, pipeline.holidays)

    @property
    def count(self) -> int:
        return int(self.every[:-1])

    @property
    def unit(self) -> str:
        return self.every[-1]

    @property
    def calendar(self) -> bool:
        """Whether steps follow local dates rather than a fixed number of seconds."""
        return self.unit in "bwMQ" or (self.unit == "d" and self.zone is not None)

    @cached_property
    def holiday_dates(self) -> np.ndarray:
        return np.array(self.holidays, dtype="datetime64[D]")


def as_cadence(cadence: str | Cadence) -> Cadence:
    """A plain string is a cadence without a zone or holidays."""
    return cadence if isinstance(cadence, Cadence) else Cadence(cadence)


def step_seconds(cadence: str | Cadence) -> float:
    """Nominal seconds per step of a cadence such as '30m' or '1h' (a business day counts as a day, a month as 31)."""
    cadence = as_cadence(cadence)
    return cadence.count * _UNIT_SECONDS[cadence.unit]


# Seasons longer than this many steps are left out: their history would cost more than it is
# worth per series (a week of 5-minute steps is 2,016).
MAX_SEASON = 2016


def seasons(cadence: str | Cadence) -> tuple[int, ...]:
    """The seasonal periods, in steps, that a cadence implies: a day and a week where they are whole steps; a
    week of business days; a year of weeks, months or quarters."""
    cadence = as_cadence(cadence)
    count = cadence.count
    if cadence.unit == "b":  # business days: a week is 5 of them
        return (5 // count,) if count < 5 and 5 % count == 0 else ()
    if cadence.unit in _PER_YEAR:
        per_year = _PER_YEAR[cadence.unit]
        return (per_year // count,) if count < per_year and per_year % count == 0 else ()
    found = []
    for length in (_DAY, _WEEK):
        steps = length / step_seconds(cadence)
        if steps > 1 and math.isclose(steps, round(steps)) and round(steps) <= MAX_SEASON:
            found.append(round(steps))
    return tuple(found)


def to_local(times: np.ndarray, offsets: np.ndarray | float, cadence: str | Cadence) -> np.ndarray:
    """Local wall-clock times of UTC `times` (epoch seconds): in the cadence's zone where it names one, else
    shifted by `offsets` (the records' own UTC offsets)."""
    cadence = as_cadence(cadence)
    if cadence.zone is None:
        return times + offsets
    zone = ZoneInfo(cadence.zone)
    distinct, index = np.unique(times, return_inverse=True)  # a batch repeats its times: each is looked up once
    shifts = [datetime.fromtimestamp(t, zone).utcoffset().total_seconds() for t in distinct.tolist()]
    return (distinct + np.array(shifts, dtype=np.float64))[index].reshape(np.shape(times))


def _to_utc(wall: np.ndarray, offsets: np.ndarray, cadence: Cadence) -> np.ndarray:
    """UTC epoch seconds of local wall-clock times: `to_local` reversed. In a zone, a wall time that a DST change
    skips or repeats is read with the offset before the change (zoneinfo's fold=0)."""
    if cadence.zone is None:
        return wall - offsets
    zone = ZoneInfo(cadence.zone)
    distinct, index = np.unique(wall, return_inverse=True)
    utc = [datetime.fromtimestamp(w, UTC).replace(tzinfo=zone).timestamp() for w in distinct.tolist()]
    return np.array(utc, dtype=np.float64)[index].reshape(wall.shape)


def _days(local_times: np.ndarray) -> np.ndarray:
    """Local dates as days since 1970-01-01 (int64)."""
    return np.floor(local_times / _DAY).astype(np.int64)


def _months(days: np.ndarray) -> np.ndarray:
    """Months since January 1970 (int64) of dates given as days since 1970-01-01."""
    return days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def step_numbers(times: np.ndarray, local_times: np.ndarray, cadence: str | Cadence) -> np.ndarray:
    """Each observation's step number on the cadence's grid (int64): a fixed-length cadence's time rounded to the
    nearest step; a calendar cadence's local business day, date, ISO week (Monday to Sunday), month or quarter."""
    cadence = as_cadence(cadence)
    if not cadence.calendar:
        return np.rint(times / step_seconds(cadence)).astype(np.int64)
    days = _days(local_times)
    if cadence.unit == "b":
        epoch = np.datetime64("1970-01-01")
        count = np.busday_count(epoch, days.astype("datetime64[D]"), holidays=cadence.holiday_dates)
        return count // cadence.count
    if cadence.unit in _MONTHS:
        return _months(days) // (cadence.count * _MONTHS[cadence.unit])
    if cadence.unit == "w":
        return (days + _EPOCH_WEEKDAY) // (7 * cadence.count)
    return days // cadence.count  # days in a zone


def horizon_times(times: np.ndarray, local_times: np.ndarray, cadence: str | Cadence, horizon: int) -> np.ndarray:
    """(n,) observation times -> (n, horizon) times of the steps forecast.

    Fixed-length cadences step evenly. Calendar cadences keep the observation's local time of day
    on the dates ahead: business days ('Nb') skip Saturdays, Sundays and the holidays, and the
    first step after a weekend or holiday observation is the next business day; a month keeps
    its day of the month, clipped to a shorter month's length, and an observation on the last
    day of its month is followed by month ends (Jan 31, Feb 29, Mar 31).
    """
    cadence = as_cadence(cadence)
    steps = np.arange(1, horizon + 1, dtype=np.float64)
    if not cadence.calendar:
        return times[:, None] + steps[None, :] * step_seconds(cadence)
    day = np.floor(local_times / _DAY)
    time_of_day = (local_times - day * _DAY)[:, None]
    dates = _dates_ahead(day.astype(np.int64), steps.astype(np.int64) * cadence.count, cadence)
    return _to_utc(dates.astype(np.float64) * _DAY + time_of_day, (local_times - times)[:, None], cadence)


def _dates_ahead(days: np.ndarray, steps: np.ndarray, cadence: Cadence) -> np.ndarray:
    """(n,) local dates and (H,) steps in the cadence's unit -> (n, H) dates ahead, as days since 1970-01-01."""
    if cadence.unit == "b":
        ahead = np.busday_offset(
            days.astype("datetime64[D]")[:, None], steps[None, :], roll="backward", holidays=cadence.holiday_dates
        )
        return ahead.astype(np.int64)
    if cadence.unit in _MONTHS:
        return _months_ahead(days, steps * _MONTHS[cadence.unit])
    return days[:, None] + steps[None, :] * (7 if cadence.unit == "w" else 1)


def _months_ahead(days: np.ndarray, months: np.ndarray) -> np.ndarray:
    """(n,) dates and (H,) month counts -> (n, H) dates that many months later, on the same day of the month
    (clipped to the month's length), or on the month's last day where the date is its month's last."""
    dates = days.astype("datetime64[D]")
    month = dates.astype("datetime64[M]")
    day_of_month = (dates - month.astype("datetime64[D]")).astype(np.int64)  # 0 on the 1st
    last_day = (dates == (month + 1).astype("datetime64[D]") - 1)[:, None]
    target = month[:, None] + months[None, :]  # (n, H) datetime64[M]
    first = target.astype("datetime64[D]")
    length = ((target + 1).astype("datetime64[D]") - first).astype(np.int64)
    within = np.where(last_day, length - 1, np.minimum(day_of_month[:, None], length - 1))
    return first.astype(np.int64) + within


def _iso_weeks(days: np.ndarray) -> np.ndarray:
    """ISO week numbers (1..53) of dates given as days since 1970-01-01: the week of the year its Thursday is in."""
    thursday = days - (days + _EPOCH_WEEKDAY) % 7 + 3
    year_start = thursday.astype("datetime64[D]").astype("datetime64[Y]").astype("datetime64[D]").astype(np.int64)
    return (thursday - year_start) // 7 + 1


def calendar_features(local_times: np.ndarray, calendar: Calendar) -> np.ndarray:
    """(n,) local times -> (n, calendar.width) sine/cosine features: hour of day, day of week, month of year and
    week of year, in that order, each a point on its circle."""
    angles = []
    if calendar.hour_of_day:
        angles.append(2 * np.pi * np.mod(local_times, _DAY) / _DAY)
    if calendar.day_of_week:
        weekday = np.mod(np.floor(local_times / _DAY) + _EPOCH_WEEKDAY, 7)
        angles.append(2 * np.pi * weekday / 7)
    if calendar.month_of_year:
        angles.append(2 * np.pi * np.mod(_months(_days(local_times)), 12) / 12)
    if calendar.week_of_year:  # week 53 comes round to just before week 1
        angles.append(2 * np.pi * (_iso_weeks(_days(local_times)) - 1) / _WEEKS_PER_YEAR)
    if not angles:
        return np.zeros((len(local_times), 0))
    return np.stack([f(angle) for angle in angles for f in (np.sin, np.cos)], axis=1)
