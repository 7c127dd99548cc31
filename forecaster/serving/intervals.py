"""The intervals a series was issued, kept until their actuals arrive, and coverage tracked online.

With quantiles the engine serves the outermost levels as an interval (0.1 and 0.9: an 80%
one), widened by the conformal widening of the latest retraining rounds (learning/rounds.py). That
widening is measured on the held-out steps just before it is served. When a series drifts,
the steps ahead are not like them, and the intervals cover less than they claim (taylor's
test weeks: 71% for 80%, falling from 79% at step 1 to 64% at step 48). With
`intervals.tracking_rate: eta` the engine also moves the outermost quantiles it serves (the
combination's, when there is one) of each horizon step h by an offset of its own, in the
series' scales, wave by wave (each series' next record, in time order):

    offset[h] += eta * (share of step h's newly arrived actuals outside their interval - (1 - coverage))

Wave by wave, not batch by batch: a record is served with the offsets the records before it
left, however the stream was cut into batches (tests/serving/test_batching.py).

The offsets are the pipeline's, one per step, shared by its series, so they hold the
coverage of all the series together rather than of each. This is quantile tracking
(Angelopoulos, Candès & Tibshirani, 2023, "Conformal PID control"), the online form of
adaptive conformal inference (Gibbs & Candès, 2021): whatever the series do, as long as
how far an actual can fall outside is bounded, the mean miss share over T waves comes to
the nominal one, the gap shrinking as 1 / (eta * T). A larger rate adapts faster and makes
the intervals jumpier; the feedback arrives h records late at step h.

Scoring step h needs the interval issued h records earlier, so each series keeps a ring of
the intervals issued at its last `depth` records: 8 * depth**2 bytes a series (18 KB at a
horizon of 48). Without tracking the depth is 1: only the one-step interval, which the
coverage metric scores. Records of a series are counted, not timed: step h is scored
against the h-th record after the one that issued it.
"""

from __future__ import annotations

import numpy as np
import torch


class IntervalHistory:
    """Each slot's intervals issued at its last `depth` records, for steps 1..depth; a `state.Part`.

    `bounds[slot, i % depth, h - 1]` is the (lower, upper) bound its record number i issued
    for step h; NaN where none was issued.
    """

    def __init__(self, depth: int):
        if depth < 1:
            raise ValueError(f"depth must be at least 1 step, got {depth}")
        self.depth = depth
        steps = np.arange(depth)  # h - 1
        # Where a slot's ring keeps what was issued for its next record, if that record is number
        # i: row i - h for step h, as offsets into the slot's depth x depth cells, by i % depth.
        self._due = ((steps[:, None] - 1 - steps[None, :]) % depth) * depth + steps[None, :]
        self.allocate(0)

    def allocate(self, capacity: int) -> None:
        self.bounds = np.full((capacity, self.depth, self.depth, 2), np.nan, np.float32)
        self.issued = np.zeros(capacity, np.int64)  # records that issued an interval, per slot

    @property
    def nbytes(self) -> int:
        return self.bounds.nbytes + self.issued.nbytes

    def score_and_keep(
        self, slots: np.ndarray, waves: np.ndarray, actual: np.ndarray, bounds: np.ndarray
    ) -> np.ndarray:
        """Score each row's actual against the intervals issued for it 1..depth records earlier, then
        keep the row's own intervals `bounds` (n, 2, horizon >= depth).

        Rows come in (series, time) order, `waves` numbering each series' rows 0, 1, ...: what
        a series' row issued h rows before in the batch is scored here too. Returns (n, depth):
        1.0 inside, 0.0 outside, NaN where nothing was issued for it (a series' first records) or its
        actual is NaN (a step that filled a gap).
        No loop over rows or waves: a replay's batch of thousands of one series' records costs
        a few array operations.
        """
        n, depth = len(slots), self.depth
        back = np.arange(1, depth + 1)  # h
        record = self.issued[slots] + waves  # each row's record number in its series
        own = np.ascontiguousarray(bounds[:, :, :depth].transpose(0, 2, 1), dtype=np.float32)  # (n, depth, 2)
        # Issued before this batch: still in the ring, which is written only below.
        ringed = np.take(self.bounds.reshape(-1, 2), slots[:, None] * depth**2 + self._due[record % depth], axis=0)
        held = ringed  # (n, depth, 2)
        if waves.any():  # issued earlier in this batch: the row h before, same series, its step h
            in_batch = waves[:, None] >= back[None, :]
            rows_back = np.where(in_batch, np.arange(n)[:, None] - back[None, :], 0)
            batched = np.take(own.reshape(-1, 2), rows_back * depth + (back - 1)[None, :], axis=0)
            held = np.where(in_batch[..., None], batched, ringed)
        y = actual[:, None]
        unscored = np.isnan(held[..., 0]) | np.isnan(y)  # nothing issued for it, or a filled step (gaps.py)
        inside = np.where(unscored, np.nan, (held[..., 0] <= y) & (y <= held[..., 1]))
        last = np.r_[waves[1:] == 0, True]  # each series' newest row of the batch
        newest = (record[last] + 1)[np.cumsum(waves == 0) - 1]  # per row: its series' records after the batch
        kept = record >= newest - depth  # a series' last `depth` rows: distinct ring rows
        self.bounds[slots[kept], record[kept] % depth] = own[kept]
        self.issued[slots[last]] = record[last] + 1
        return inside

    def grow(self, capacity: int) -> None:
        old = (self.bounds, self.issued)
        self.allocate(capacity)
        self.bounds[: len(old[0])], self.issued[: len(old[1])] = old

    def reset(self, slots: np.ndarray) -> None:
        self.bounds[slots] = np.nan
        self.issued[slots] = 0

    def snapshot(self, slots: np.ndarray) -> dict:
        return {
            "bounds": torch.from_numpy(self.bounds[slots].copy()),
            "issued": torch.from_numpy(self.issued[slots].copy()),
        }

    def restore(self, slots: np.ndarray, snapshot: dict) -> None:
        """Restore `slots`; intervals kept at another depth (tracking switched on or off since)
        are forgotten: a few steps go unscored, nothing else changes."""
        self.reset(slots)
        bounds = snapshot["bounds"].numpy()
        if bounds.shape[1:] == self.bounds.shape[1:]:
            self.bounds[slots] = bounds
            self.issued[slots] = snapshot["issued"].numpy()


def track(offset: np.ndarray, inside: np.ndarray, coverage: float, rate: float) -> np.ndarray:
    """The per-step offsets (depth,) after a batch scored `inside` (n, depth; NaN: not scored): each
    step's moves by `rate` times its share of misses less the nominal share, 1 - `coverage`.
    A step with nothing scored stays."""
    scored = ~np.isnan(inside)
    count = scored.sum(axis=0)
    missed = np.where(scored, 1.0 - inside, 0.0).sum(axis=0)
    excess = np.divide(missed, count, out=np.zeros(len(offset)), where=count > 0) - (1.0 - coverage)
    return offset + rate * np.where(count > 0, excess, 0.0)


def sort_levels(quantiles: np.ndarray) -> np.ndarray:
    """(n, levels, horizon) sorted along the levels (in place but with a NaN), so that quantiles never cross.

    A trained quantile head's levels seldom cross (at some step of 0.5% of the rows of taylor's shipped network,
    13% of greensboro's), so only the rows where they do are sorted: finding them reads the array once, where
    sorting every row reads and writes it several times over. An untrained head's cross in most rows: when a
    sample of the rows says so, all are sorted without looking for them.
    """
    if not len(quantiles):
        return quantiles
    if _crossing(quantiles[:: max(1, len(quantiles) // 1000)]).mean() > 0.5:
        return _sorted(quantiles)
    crossed = np.flatnonzero(_crossing(quantiles))
    if len(crossed):
        quantiles[crossed] = _sorted(quantiles[crossed])
    return quantiles


def _crossing(quantiles: np.ndarray) -> np.ndarray:
    """(n,) whether a row's levels are out of order at some step, or NaN (which compares false)."""
    ordered = np.ones(len(quantiles), bool)
    for i in range(quantiles.shape[1] - 1):
        ordered &= (quantiles[:, i] <= quantiles[:, i + 1]).all(axis=1)
    return ~ordered


def _sorted(quantiles: np.ndarray) -> np.ndarray:
    """`quantiles` sorted along its levels (in place but with a NaN).

    A few levels are sorted by compare-and-swap passes of np.minimum and np.maximum over whole (n, horizon) planes,
    with no copy of the array: np.sort along that short middle axis copied the whole array and sorted rows of 3
    (at 1M series 576 MB copied).
    """
    levels = quantiles.shape[1]
    if levels > 8 or np.isnan(quantiles).any():  # np.sort puts a NaN last, where min and max would spread it
        return np.sort(quantiles, axis=1)
    if levels == 3:
        return _sorted_three(quantiles)
    low = np.empty_like(quantiles[:, 0])
    for sweep in range(levels):  # odd-even transposition: `levels` sweeps sort any order
        for i in range(sweep % 2, levels - 1, 2):
            a, b = quantiles[:, i], quantiles[:, i + 1]
            np.minimum(a, b, out=low)
            np.maximum(a, b, out=b)
            a[...] = low
    return quantiles


def _sorted_three(quantiles: np.ndarray) -> np.ndarray:
    """Three levels (the default) sorted in place by three compare-and-swaps, each result written where the next
    one reads it: six passes over a plane and one spare plane, where the general passes above copy too."""
    a, b, c = quantiles[:, 0], quantiles[:, 1], quantiles[:, 2]
    low = np.minimum(a, b)
    np.maximum(a, b, out=b)  # b: the higher of the first two
    np.minimum(b, c, out=a)  # a (free): the lower of that and c
    np.maximum(b, c, out=c)  # c: the highest
    np.maximum(low, a, out=b)
    np.minimum(low, a, out=a)
    return quantiles
