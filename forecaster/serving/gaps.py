"""Missing observations: the steps a record skipped, and the rows that stand in for them.

A record that arrives k > 1 cadence steps after its series' newest observation leaves k - 1
steps unobserved. The engine steps the network over each of the first `horizon` of them as
if it had been observed at the value the network forecast for it from the series' last
observation (`LastForecasts` keeps those forecasts per series). Everything the engine counts
by record then counts by step: the one-step skill, the intervals kept until their actuals
arrive and the retraining buffer. A filled step is never a target: its value is NaN wherever
something would be scored or learnt against it, so nothing learns from its own forecast.

A null reading (a record whose target is null) is such a missing step that came as a record:
the engine steps over it in the same way, and forecasts from it (engine.py).

The spacing of two records is rounded to whole steps: a record less than one and a half
steps after its predecessor is the next step, one two steps after it leaves one step
missing, and so on. Calendar cadences (business days, weeks, months, quarters, days in a time
zone) count the steps of the calendar: January 31 to March 31 leaves February missing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from forecaster.serving.cadence import Cadence, as_cadence, horizon_times, step_numbers, step_seconds, to_local
from forecaster.serving.records import Observations


def missing_steps(
    times: np.ndarray, local_times: np.ndarray, previous: np.ndarray, cadence: str | Cadence
) -> np.ndarray:
    """Per row, the whole cadence steps strictly between `previous` (its series' previous observation
    time, -inf for none) and its own time; 0 where none is missing or there is no previous."""
    cadence = as_cadence(cadence)
    known = np.isfinite(previous)
    before = np.where(known, previous, times)
    if cadence.calendar:  # the previous observation's local time in the row's UTC offset, or in the zone
        local_before = to_local(before, local_times - times, cadence)
        spacing = step_numbers(times, local_times, cadence) - step_numbers(before, local_before, cadence)
    else:
        spacing = np.rint((times - before) / step_seconds(cadence)).astype(np.int64)
    return np.where(known, np.maximum(spacing - 1, 0), 0)


@dataclass(frozen=True)
class Filled:
    """A batch with rows for its missing steps: the observations extended, and the order to step them in."""

    observations: Observations  # the batch's rows, then one row per filled step (its successor's fields)
    slots: np.ndarray  # (n + m,) the slot of every row
    order: np.ndarray  # (n',) rows in (series, time) order, each filled step just before its successor
    distance: np.ndarray  # (n',) in order: steps after the series' last observation; 0 for an observed row


def fill(
    observations: Observations,
    slots: np.ndarray,
    order: np.ndarray,
    previous: np.ndarray,
    previous_values: np.ndarray,
    cadence: str | Cadence,
    limit: int,
) -> Filled:
    """Insert, before each row of `order` (accepted rows in (series, time) order), a row for each of the
    first `limit` steps missing since `previous[i]`, the time of the row's predecessor in its series
    (`previous_values[i]` its value).

    A filled row carries its successor's key, covariates, partition and position, the time of
    the step it fills, and as its value the predecessor's (what the engine serves where it
    holds no forecast to fill with).
    """
    times, local = observations.times[order], observations.local_times[order]
    counts = np.minimum(missing_steps(times, local, previous, cadence), limit)
    total = int(counts.sum())
    if total == 0:
        return Filled(observations, slots, order, np.zeros(len(order), np.int64))
    ends = np.cumsum(counts)
    successor = np.repeat(np.arange(len(order)), counts)  # for each filled row, the row of `order` it precedes
    distance = np.arange(total) - np.repeat(ends - counts, counts) + 1  # 1 .. count before each successor
    source = order[successor]
    start = previous[successor]
    offset = observations.local_times[source] - observations.times[source]
    ahead = horizon_times(start, to_local(start, offset, cadence), cadence, int(distance.max()))
    filled_times = ahead[np.arange(total), distance - 1]
    values = observations.values[source].copy()
    values[:, 0] = previous_values[successor]
    n = len(observations)
    extended = dataclasses.replace(  # each filled row is its successor's copy, at its own time and value
        observations.take(np.r_[np.arange(n), source]),
        times=np.r_[observations.times, filled_times],
        local_times=np.r_[observations.local_times, to_local(filled_times, offset, cadence)],
        values=np.concatenate([observations.values, values]),
    )
    new_order = np.empty(len(order) + total, np.int64)
    observed = np.arange(len(order)) + ends  # where each row of `order` lands
    is_filled = np.ones(len(new_order), bool)
    is_filled[observed] = False
    new_order[observed] = order
    new_order[is_filled] = n + np.arange(total)
    new_distance = np.zeros(len(new_order), np.int64)
    new_distance[is_filled] = distance
    return Filled(extended, np.r_[slots, slots[source]], new_order, new_distance)


class LastForecasts:
    """Each slot's network forecasts (horizon,) for the steps after its newest one, in original units; a `state.Part`.

    NaN where none is held: a new series, or one brought back from the spill. An observed step
    writes them; each step stood in for (a gap's, a null reading's) takes the first, and the
    rest move up a step, so the steps after the last observation read its forecasts in turn.
    """

    def __init__(self, horizon: int, device: torch.device | str = "cpu"):
        self.horizon, self.device = horizon, torch.device(device)
        self.allocate(0)

    def allocate(self, capacity: int) -> None:
        self.values = torch.full((capacity, self.horizon), float("nan"), device=self.device)

    @property
    def nbytes(self) -> int:
        return self.values.element_size() * self.values.nelement()

    def take(self, slots: Tensor, filling: Tensor) -> Tensor:
        """Where `filling` (n,), the forecast held for the next step of that row's slot (`slots` (n,), distinct),
        which moves the slot's forecasts up a step (the last stays, for any step past the horizon); NaN elsewhere.

        Every slot of the wave is read and written back, the others unchanged: no host round trip to pick rows.
        """
        held = self.values[slots]  # (n, horizon)
        moved = torch.cat([held[:, 1:], held[:, -1:]], dim=1)
        self.values[slots] = torch.where(filling[:, None], moved, held)
        return torch.where(filling, held[:, 0], torch.nan)

    def write(self, slots: Tensor, forecasts: Tensor) -> None:
        self.values[slots] = forecasts.to(self.values.dtype)

    def grow(self, capacity: int) -> None:
        old = self.values
        self.allocate(capacity)
        self.values[: len(old)] = old

    def reset(self, slots) -> None:
        self.values[torch.as_tensor(slots, device=self.device)] = float("nan")

    def snapshot(self, slots) -> dict:
        return {"values": self.values[torch.as_tensor(slots, device=self.device)].cpu()}

    def restore(self, slots, snapshot: dict) -> None:
        self.values[torch.as_tensor(slots, device=self.device)] = snapshot["values"].to(self.device)
