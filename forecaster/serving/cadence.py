"""Time arithmetic on whole batches: horizon timestamps from a cadence, and calendar features."""

from __future__ import annotations

import math

import numpy as np

from forecaster.config import Calendar

_DAY, _WEEK = 86_400.0, 604_800.0
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": _DAY}
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday is 0


def step_seconds(cadence: str) -> float:
    """Seconds per step of a cadence such as '30m' or '1h' ('Nb' counts N days per business day)."""
    count, unit = int(cadence[:-1]), cadence[-1]
    return count * (_DAY if unit == "b" else _UNIT_SECONDS[unit])


# Seasons longer than this many steps are left out: their history would cost more than it is
# worth per series (a week of 5-minute steps is 2,016).
MAX_SEASON = 2016


def seasons(cadence: str) -> tuple[int, ...]:
    """The seasonal periods, in steps, that a cadence implies: a day and a week where they are whole steps."""
    count = int(cadence[:-1])
    if cadence[-1] == "b":  # business days: a week is 5 of them
        return (5 // count,) if count < 5 and 5 % count == 0 else ()
    found = []
    for length in (_DAY, _WEEK):
        steps = length / step_seconds(cadence)
        if steps > 1 and math.isclose(steps, round(steps)) and round(steps) <= MAX_SEASON:
            found.append(round(steps))
    return tuple(found)


def step_numbers(times: np.ndarray, local_times: np.ndarray, cadence: str) -> np.ndarray:
    """Each observation's step number on the cadence's grid, rounded to the nearest step (int64)."""
    if cadence[-1] == "b":
        days = np.floor(local_times / _DAY).astype("datetime64[D]")
        return np.busday_count(np.datetime64("1970-01-01"), days) // int(cadence[:-1])
    return np.rint(times / step_seconds(cadence)).astype(np.int64)


def horizon_times(times: np.ndarray, local_times: np.ndarray, cadence: str, horizon: int) -> np.ndarray:
    """(n,) observation times -> (n, horizon) times of the steps forecast.

    Business-day cadences ('Nb') skip Saturdays and Sundays, judged in the records' local time;
    the first step after a weekend observation is the Monday.
    """
    steps = np.arange(1, horizon + 1, dtype=np.float64)
    if cadence[-1] != "b":
        return times[:, None] + steps[None, :] * step_seconds(cadence)
    offset = (local_times - times)[:, None]
    local_day = np.floor(local_times / _DAY)
    time_of_day = (local_times - local_day * _DAY)[:, None]
    days = np.busday_offset(
        local_day.astype("datetime64[D]")[:, None],
        (steps * int(cadence[:-1])).astype(np.int64)[None, :],
        roll="backward",
    ).astype(np.float64)
    return days * _DAY + time_of_day - offset


def calendar_features(local_times: np.ndarray, calendar: Calendar) -> np.ndarray:
    """(n,) local times -> (n, calendar.width) sine/cosine features of hour of day and day of week."""
    columns = []
    if calendar.hour_of_day:
        angle = 2 * np.pi * np.mod(local_times, _DAY) / _DAY
        columns += [np.sin(angle), np.cos(angle)]
    if calendar.day_of_week:
        weekday = np.mod(np.floor(local_times / _DAY) + _EPOCH_WEEKDAY, 7)
        angle = 2 * np.pi * weekday / 7
        columns += [np.sin(angle), np.cos(angle)]
    if not columns:
        return np.zeros((len(local_times), 0))
    return np.stack(columns, axis=1)
