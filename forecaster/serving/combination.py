"""Online forecast combination: the network and simple experts, weighted per horizon step by how they fare.

A network that has not learnt a series yet, or learnt another one, can lose to what a user
would do by hand: repeat the last value, or the value one season ago. The engine therefore
serves, per horizon step h, a weighted mean of experts

    persistence        y[t]
    seasonal naive     y[t + h - kP]                     for each season P the cadence implies (day, week)
    seasonal level     y[t + h - kP] + y[t] - y[t - kP]  last season moved to today's level (k = ceil(h / P))
    seasonal drift     y[t + h - kP] + k d[t]            last season moved by d, the recent change from one
                                                         season to the next, smoothed over about a day
    online linear      y[t] + s[t] * (a[h] . x[t, h])   a ridge regression on the experts' moves, recent change
                                                         and distance to the series' mean, refitted as targets mature
    network            the engine's own forecast

with weights learnt online by ML-Poly (Gaillard, Stoltz & van Erven, 2014, "A second-order bound
with excess losses"; the `opera` package's default), a parameter-free rule whose regret against
the best convex combination of the experts grows as the square root of the summed squared
gradients. It uses the gradient trick on the absolute error (or with loss "squared", the
squared error) in units of the series' scale, so
every series contributes alike, and discounts its sums by `discount` per round, so it follows
a network that improves (or series that change). Until the weights have seen a target they are
uniform.

The weights and the linear expert are learnt per input partition (a `Learner`), in the
partition's own order, one round per epoch of about one record of each of its series: the
same records give the same weights however the stream was cut into poll batches, so a
restored checkpoint replays exactly. They learn from the matured targets of the first
`scored_series` slots (a sample of the series, so the memory for pending forecasts stays
bounded); every series of the partition is served with them, a new one from its first record.
Only matured targets are used: a forecast issued at step s for step s + h is scored when the
observation of step s + h arrives, matched by its time, so a gap leaves the steps it skipped
unscored rather than scoring against the wrong observation.

Values are looked up by time, not by record: each series keeps its last `length` values in
a ring indexed by step number (time / cadence, rounded), so a missing observation is missing
and a seasonal expert whose value one season back is missing serves the last value instead.
A null reading is missing too: it is forecast from the value the network stepped it with,
but not kept as a value, not scored against, and what it issued is never scored.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from forecaster.serving.aggregation import MLPoly, OnlineLinear
from forecaster.serving.cadence import seasons
from forecaster.serving.intervals import sort_levels
from forecaster.serving.quantile_weights import QuantileWeights

# Moves and targets are clipped to this many scales when scored.
_BOUND = 20.0


def expert_names(periods: tuple[int, ...]) -> tuple[str, ...]:
    """The experts in the order the combination holds them."""
    return (
        ("network", "persistence")
        + tuple(f"seasonal_naive_{p}" for p in periods)
        + tuple(f"seasonal_level_{p}" for p in periods)
        + tuple(f"seasonal_drift_{p}" for p in periods)
        + ("linear",)
    )


def _grow(part, fields: tuple[str, ...], capacity: int) -> None:
    """Reallocate a part's arrays for `capacity` slots, keeping what every slot held."""
    old = [getattr(part, name) for name in fields]
    part.allocate(capacity)
    for name, theirs in zip(fields, old):
        getattr(part, name)[: len(theirs)] = theirs


class History:
    """Each slot's last `length` values by step number, its running level and scale, and per season its drift.

    A `state.Part` of the store: it grows, resets, snapshots and restores with the slots. A
    value sits in the cell of its step number modulo `length`; the cells of steps skipped by a
    gap are cleared when the next value arrives, and a missing one (NaN, a null reading) is
    written as missing, so within the last `length` steps a missing observation reads as missing.
    The scale is the exponentially weighted mean absolute change between consecutive observations
    (the error of the last value at one step), the unit every loss is measured in. The drift of a
    season P is the exponentially weighted mean of y[t] - y[t - P] with a half-life of the
    shortest season (a day, for a cadence under a day): how far this season runs from the last,
    less noisy than the one difference the seasonal level expert moves by. It is 0 until a value one
    season back has been seen, and a missing value, or one a gap hides, leaves it where it is.
    """

    _FIELDS = ("values", "newest", "level", "scale", "count", "drift")  # the drift last: `restore` says why

    def __init__(self, length: int, halflife: float = 500.0, periods: tuple[int, ...] = ()):
        self.length, self.periods = length, tuple(periods)
        if any(period >= length for period in self.periods):
            raise ValueError(f"a history of {length} steps cannot hold a value one season ({max(periods)}) back")
        self.alpha = 1.0 - 0.5 ** (1.0 / halflife)
        # The shortest season as the drift's half-life: on the validation parts of ETTh1, ETTh2, greensboro_temp
        # and taylor it beat an eighth, a quarter and half of it on most channels (docs/decisions.md).
        self.drift_alpha = 1.0 - 0.5 ** (1.0 / min(self.periods, default=1))
        self.allocate(0)

    def allocate(self, capacity: int) -> None:
        self.values = np.full((capacity, self.length), np.nan)
        self.newest = np.zeros(capacity, np.int64)  # the step number of the newest step written (with count > 0)
        self.level = np.zeros(capacity)
        self.scale = np.zeros(capacity)
        self.count = np.zeros(capacity, np.int64)  # values written (a missing one is not counted)
        self.drift = np.zeros((capacity, len(self.periods)))  # per season: the smoothed y[t] - y[t - P]

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self._FIELDS)

    def write(self, slots: np.ndarray, steps: np.ndarray, y: np.ndarray) -> None:
        """Keep each slot's value at its step (distinct slots, newer than their newest); move its level and scale.
        A NaN value is a missing one: its cell reads as missing, and the level and scale stay."""
        held = self.count[slots] > 0
        gap = np.where(held, steps - self.newest[slots], 1)
        wide = gap > 1
        self._clear(slots[wide], self.newest[slots[wide]], np.minimum(gap[wide], self.length + 1))
        self._move_drift(slots, steps, y, held)
        previous = np.where(held & (gap == 1), self.values[slots, (steps - 1) % self.length], np.nan)
        change = np.abs(y - previous)  # NaN after a gap, at the first value or at a missing one: the scale stays
        level = self.level[slots]
        known = ~np.isnan(y)
        self.level[slots] = np.where(known, np.where(held, level + self.alpha * (y - level), y), level)
        scale = self.scale[slots]
        moved = np.where(scale > 0, scale + self.alpha * (change - scale), change)
        self.scale[slots] = np.where(np.isnan(change), scale, moved)
        self.values[slots, steps % self.length] = y
        self.newest[slots] = steps
        self.count[slots] += known

    def _move_drift(self, slots: np.ndarray, steps: np.ndarray, y: np.ndarray, held: np.ndarray) -> None:
        """Move each season's drift by y - y[t - P] where both are known (a gap's cells are cleared already)."""
        for j, period in enumerate(self.periods):
            then = np.where(held, self.values[slots, (steps - period) % self.length], np.nan)
            change = y - then
            drift = self.drift[slots, j]
            self.drift[slots, j] = np.where(np.isnan(change), drift, drift + self.drift_alpha * (change - drift))

    def _clear(self, slots: np.ndarray, newest: np.ndarray, gaps: np.ndarray) -> None:
        """Forget the cells of the steps newest + 1 .. newest + gap - 1 of each slot: a gap's."""
        for k in range(1, int(gaps.max(initial=1))):
            rows = gaps > k
            self.values[slots[rows], (newest[rows] + k) % self.length] = np.nan

    def lookup(self, slots: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Values at `steps` (n, m) of `slots` (n,), each within the last `length` steps of its slot's
        newest: NaN where not observed."""
        flat = slots[:, None] * self.length + steps % self.length  # np.take on the flat ring: one pass
        return np.take(self.values.reshape(-1), flat)

    def scales(self, slots: np.ndarray) -> np.ndarray:
        """The unit of each slot's losses: its scale, or a small share of its level before it has one."""
        floor = 1e-6 * (np.abs(self.level[slots]) + 1.0)
        return np.maximum(self.scale[slots], floor)

    def grow(self, capacity: int) -> None:
        _grow(self, self._FIELDS, capacity)

    def reset(self, slots: np.ndarray) -> None:
        self.values[slots] = np.nan
        self.newest[slots], self.level[slots], self.scale[slots], self.count[slots] = 0, 0.0, 0.0, 0
        self.drift[slots] = 0.0

    def snapshot(self, slots: np.ndarray) -> dict:
        return {name: torch.from_numpy(getattr(self, name)[slots]) for name in self._FIELDS}

    def restore(self, slots: np.ndarray, snapshot: dict) -> None:
        """A checkpoint without the drift (older, or of other seasons) restores the rest: the drift starts at 0."""
        for name in self._FIELDS[:-1]:
            getattr(self, name)[slots] = snapshot[name].numpy()
        drift = snapshot.get("drift")
        fits = drift is not None and tuple(drift.shape[1:]) == (len(self.periods),)
        self.drift[slots] = drift.numpy() if fits else 0.0


_SHAPED = ("moves", "features", "quantiles")  # Pending's fields whose shapes follow the experts and levels


class Pending:
    """What the scored slots (those below `slots`) were issued at their last `depth` records, until scored.

    Per issue: its step number, its base value y[t] and scale, and every expert's forecast and
    the combination's, as moves from the base in scales (depth, experts + 1, horizon), the
    linear expert's features (horizon, features), and per quantile level the network's, the
    empirical and the served offsets from the combined point (3, levels, horizon,
    quantile_weights.py). A `state.Part` whose rows beyond `slots` stay empty.
    """

    _FIELDS = ("step", "base", "scale", "moves", "features", "quantiles", "issued")

    def __init__(self, slots: int, depth: int, experts: int, horizon: int, features: int, levels: int = 0):
        self.slots, self.depth, self.experts, self.horizon, self.width = slots, depth, experts, horizon, features
        self.levels = levels
        self.allocate(0)

    def allocate(self, capacity: int) -> None:
        rows = min(capacity, self.slots)
        self.step = np.full((rows, self.depth), np.iinfo(np.int64).min // 2, np.int64)
        self.base = np.zeros((rows, self.depth))
        self.scale = np.ones((rows, self.depth))
        self.moves = np.zeros((rows, self.depth, self.experts + 1, self.horizon), np.float32)
        self.features = np.zeros((rows, self.depth, self.horizon, self.width), np.float32)
        self.quantiles = np.zeros((rows, self.depth, 3, self.levels, self.horizon), np.float32)
        self.issued = np.zeros(rows, np.int64)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in self._FIELDS)

    def grow(self, capacity: int) -> None:
        _grow(self, self._FIELDS, capacity)

    def reset(self, slots: np.ndarray) -> None:
        mine = slots[slots < len(self.issued)]
        self.step[mine] = np.iinfo(np.int64).min // 2
        self.issued[mine] = 0

    def snapshot(self, slots: np.ndarray) -> dict:
        mine = slots < len(self.issued)
        fields = {name: torch.from_numpy(getattr(self, name)[slots[mine]]) for name in self._FIELDS}
        return {"held": torch.from_numpy(mine), **fields}

    def restore(self, slots: np.ndarray, snapshot: dict) -> None:
        """Restore the scored slots among `slots`; a series restored into a slot beyond them keeps nothing, and so
        does every series of a checkpoint with other experts, features or levels: its pending issues go unscored."""
        if any(tuple(snapshot[name].shape[2:]) != getattr(self, name).shape[2:] for name in _SHAPED):
            return
        mine = slots[snapshot["held"].numpy()]
        fits = mine < len(self.issued)
        for name in self._FIELDS:
            getattr(self, name)[mine[fits]] = snapshot[name].numpy()[fits]


class Learner:
    """What one input partition learns across its series: the weights and the linear expert.

    Scored targets are gathered over an epoch of `epoch` records of the partition, in the
    partition's order, and learnt from at its end; forecasts within an epoch use the weights of
    its start. An epoch is as many records as the partition has seen series, about one step of
    every series: the same records in the same order give the same weights, however the stream
    was cut into poll batches, so a restored checkpoint replays exactly.
    """

    def __init__(self, horizon: int, experts: int, features: int, discount: float, levels: tuple[float, ...] = ()):
        self.weights = MLPoly(horizon, experts, discount)
        self.quantiles = QuantileWeights(levels, horizon, discount) if levels else None
        self.served = self.weights.weights()  # (horizon, experts): the weights forecasts are served with
        self.linear = OnlineLinear(horizon, features, discount)
        self.increments = np.zeros((horizon, experts))  # summed over the epoch so far
        self.scored = np.zeros(horizon, np.int64)
        self.gram = np.zeros_like(self.linear.gram)
        self.moment = np.zeros_like(self.linear.moment)
        self.series = 0  # series first seen in this partition
        self.seen = 0  # records of the current epoch
        self.epoch = 1  # records in the current epoch

    def remaining(self) -> int:
        """Records left in the current epoch; an epoch that is complete is learnt from first, so the
        weights kept are always those the latest forecasts were served with."""
        if self.seen >= self.epoch:
            self._conclude()
        return self.epoch - self.seen

    def gather(self, steps: np.ndarray, increments: np.ndarray, features: np.ndarray, targets: np.ndarray) -> None:
        """Keep what scored targets teach, for the end of the epoch."""
        np.add.at(self.increments, steps, increments)
        np.add.at(self.scored, steps, 1)
        np.add.at(self.gram, steps, features[:, :, None] * features[:, None, :])
        np.add.at(self.moment, steps, features * targets[:, None])

    def count(self, records: int) -> None:
        """`records` more of the epoch served."""
        self.seen += records

    def _conclude(self) -> None:
        """Learn from the epoch's scored targets, and start the next epoch."""
        mean = self.increments / np.maximum(self.scored, 1)[:, None]
        self.weights.update(mean)
        self.served = self.weights.weights()
        self.linear.update(self.gram, self.moment, self.scored)
        if self.quantiles is not None:
            self.quantiles.conclude()
        self.increments[:], self.scored[:], self.gram[:], self.moment[:] = 0.0, 0, 0.0, 0.0
        self.seen, self.epoch = 0, max(1, self.series)

    _ARRAYS = ("increments", "scored", "gram", "moment")

    def snapshot(self) -> dict:
        arrays = {name: torch.from_numpy(getattr(self, name).copy()) for name in self._ARRAYS}
        counters = torch.tensor([self.series, self.seen, self.epoch])
        quantiles = None if self.quantiles is None else self.quantiles.snapshot()
        return {
            "weights": self.weights.snapshot(),
            "linear": self.linear.snapshot(),
            "quantiles": quantiles,
            "counters": counters,
            **arrays,
        }

    def restore(self, snapshot: dict) -> None:
        self.weights.restore(snapshot["weights"])
        self.served = self.weights.weights()
        self.linear.restore(snapshot["linear"])
        if self.quantiles is not None and snapshot.get("quantiles") is not None:
            self.quantiles.restore(snapshot["quantiles"])
        for name in self._ARRAYS:
            setattr(self, name, snapshot[name].numpy().copy())
        self.series, self.seen, self.epoch = (int(v) for v in snapshot["counters"])


class Combination:
    """The experts of one pipeline and, per input partition, their weights; `step` serves a wave of distinct series."""

    def __init__(
        self,
        cadence: str,
        horizon: int,
        scored_series: int = 256,
        discount: float = 0.9999,
        levels: tuple[float, ...] = (),
        loss: str = "absolute",
    ):
        self.horizon, self.periods, self.discount, self.levels = horizon, seasons(cadence), discount, tuple(levels)
        self.loss = loss
        self.names = expert_names(self.periods)
        self.features = 3 + 3 * len(self.periods)
        longest = max(self.periods, default=1)
        self.history = History(longest * math.ceil(horizon / longest) + 2, periods=self.periods)
        self.pending = Pending(scored_series, horizon, len(self.names), horizon, self.features, len(self.levels))
        self.learners: dict[int, Learner] = {}

    def learner(self, partition: int) -> Learner:
        """The partition's learner, made on its first record."""
        if partition not in self.learners:
            self.learners[partition] = Learner(self.horizon, len(self.names), self.features, self.discount, self.levels)
        return self.learners[partition]

    def mean_weights(self) -> np.ndarray:
        """(horizon, experts): the weights, averaged over the partitions (uniform before any)."""
        if not self.learners:
            return np.full((self.horizon, len(self.names)), 1.0 / len(self.names))
        return np.mean([learner.served for learner in self.learners.values()], axis=0)

    def step(self, partition: int, slots, steps, y, network, quantiles=None, observed=None):
        """One wave of one partition: score what matured with these observations, then forecast.

        `slots` (n,) distinct; `steps` (n,) their step numbers; `y` (n,) the values forecast from; `network`
        (n, horizon) the network's forecasts and, with levels, `quantiles` (n, levels, horizon) its
        quantiles. Where `observed` (n,) is False (None: nowhere), the row is a null reading and its `y`
        the value the network stepped it with: not a value of the series, so not kept, nor scored against,
        and what the row issues is not kept for scoring. Returns the combined forecasts (n, horizon) and
        quantiles (n, levels, horizon) or None. The caller counts the records into the learner's epoch
        (`Learner.count`).
        """
        learner = self.learner(partition)
        value = y if observed is None else np.where(observed, y, np.nan)  # NaN: missing
        self._learn(learner, slots, steps, value)
        learner.series += int(((self.history.count[slots] == 0) & ~np.isnan(value)).sum())
        self.history.write(slots, steps, value)
        scale = self.history.scales(slots)
        experts, change, reversion, seasonal = self._experts(learner, slots, steps, y, scale, network)
        combined = self._weigh(learner, experts)
        offsets = None  # (n, 3, L, H): the network's, the empirical and the served quantile offsets, in scales
        if learner.quantiles is not None and quantiles is not None:
            mine = (quantiles - network[:, None, :]) / scale[:, None, None]
            served = learner.quantiles.combine(mine)
            offsets = np.stack([mine, np.broadcast_to(learner.quantiles.offset, mine.shape), served], axis=1)
        # Only series with a scale of their own are kept for scoring: before, a loss in scales means nothing.
        kept = (slots < len(self.pending.issued)) & (self.history.scale[slots] > 0) & ~np.isnan(value)
        if kept.any():
            moves = np.stack([e[kept] for e in (*experts, combined)], axis=1)  # (m, K + 1, H)
            features = self._features(change[kept], reversion[kept], [m[kept] for m in seasonal])
            issued = None if offsets is None else offsets[kept]
            self._keep(slots[kept], steps[kept], y[kept], scale[kept], moves, features, issued)
        point = y[:, None] + scale[:, None] * combined
        if offsets is None:
            return point, None
        return point, sort_levels(point[:, None, :] + scale[:, None, None] * offsets[:, 2])

    def forecast(self, partition: int, slots, steps, y, network) -> np.ndarray:
        """What `step` serves for slots whose newest value `y` at `steps` is already held, without learning."""
        learner, scale = self.learner(partition), self.history.scales(slots)
        combined = self._weigh(learner, self._experts(learner, slots, steps, y, scale, network)[0])
        return y[:, None] + scale[:, None] * combined

    def expert_forecasts(self, partition: int, slots, steps, y, network) -> np.ndarray:
        """Every expert's forecasts (n, experts, horizon) for slots whose newest value `y` at `steps` is held."""
        scale = self.history.scales(slots)
        experts = self._experts(self.learner(partition), slots, steps, y, scale, network)[0]
        return y[:, None, None] + scale[:, None, None] * np.stack(experts, axis=1)

    @staticmethod
    def _weigh(learner: Learner, experts: list[np.ndarray]) -> np.ndarray:
        """The combined move (n, H) in scales: each expert's move weighted by the partition's weights of its step
        (persistence's move is 0)."""
        weights = learner.served  # (H, K)
        combined = weights[:, 0] * experts[0] + weights[:, -1] * experts[-1]
        for k in range(2, len(experts) - 1):
            combined = combined + weights[:, k] * experts[k]
        return combined

    def _experts(self, learner: Learner, slots, steps, y, scale, network):
        """Every expert's move from the last value in scales (a list of K arrays (n, H), in `names` order),
        and what the linear expert's features are made of: the last change, the distance to the running
        mean (n,) and the seasonal moves."""
        seasonal, change, reversion = self._moves(slots, steps, y, scale)
        coef = learner.linear.coef  # (H, F)
        linear = coef[:, 0] + change[:, None] * coef[:, 1] + reversion[:, None] * coef[:, 2]
        for j, move in enumerate(seasonal):
            linear = linear + move * coef[:, 3 + j]
        linear = np.clip(linear, -_BOUND, _BOUND)  # as bounded as the losses it is weighed by
        network_move = (network - y[:, None]) / scale[:, None]
        persistence = np.zeros_like(network_move)
        return [network_move, persistence, *seasonal, linear], change, reversion, seasonal

    def _moves(self, slots, steps, y, scale) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Each seasonal expert's move from the last value in scales (n, H): the naive ones, the today's-level
        ones, then the drifting ones; the last change and the distance to the running mean, in scales (n,)."""
        h = np.arange(1, self.horizon + 1)
        naive, level, drift = [], [], []
        for j, period in enumerate(self.periods):
            back = period * np.ceil(h / period).astype(np.int64)  # k * P for each step
            then = self.history.lookup(slots, steps[:, None] + (h - back)[None, :])  # y[t + h - kP]
            before = np.empty_like(then)  # y[t - kP]: one value a row for each k
            for shift in np.unique(back).tolist():
                before[:, back == shift] = self.history.lookup(slots, (steps - shift)[:, None])
            move = (then - y[:, None]) / scale[:, None]
            naive.append(np.where(np.isnan(then), 0.0, move))  # missing: the last value stands in
            today = move + (y[:, None] - before) / scale[:, None]
            level.append(np.where(np.isnan(then) | np.isnan(before), 0.0, today))
            drifted = move + (back // period)[None, :] * (self.history.drift[slots, j] / scale)[:, None]
            drift.append(np.where(np.isnan(then), 0.0, drifted))
        previous = self.history.lookup(slots, (steps - 1)[:, None])[:, 0]
        change = np.where(np.isnan(previous), 0.0, y - previous) / scale
        reversion = (self.history.level[slots] - y) / scale
        return naive + level + drift, change, reversion

    def _features(self, change, reversion, moves) -> np.ndarray:
        """The linear expert's features (n, H, F): 1, the last change, the distance to the mean, the seasonal moves."""
        n, H = len(change), self.horizon
        columns = [np.ones((n, H)), np.repeat(change[:, None], H, 1), np.repeat(reversion[:, None], H, 1), *moves]
        return np.stack(columns, axis=2)

    def _keep(self, slots, steps, y, scale, moves, features, offsets) -> None:
        """Remember what scored slots were issued, as moves in scales (m, K + 1, H), and the quantile
        `offsets` (m, 3, L, H) or None, until their targets arrive."""
        p = self.pending
        row = p.issued[slots] % p.depth
        p.step[slots, row] = steps
        p.base[slots, row] = y
        p.scale[slots, row] = scale
        p.moves[slots, row] = moves
        p.features[slots, row] = features
        if offsets is not None:
            p.quantiles[slots, row] = offsets
        p.issued[slots] += 1

    def _learn(self, learner: Learner, slots, steps, y) -> None:
        """Score what the scored slots were issued for this step, for the learner's epoch."""
        p = self.pending
        mine = (slots < len(p.issued)) & ~np.isnan(y)  # a missing value scores nothing
        s, t, value = slots[mine], steps[mine], y[mine]
        ahead = t[:, None] - p.step[s]  # (m, depth): how many steps ahead each kept issue forecast this one
        row, entry = np.nonzero((ahead >= 1) & (ahead <= self.horizon))
        h = ahead[row, entry] - 1
        moves = p.moves[s[row], entry, :, h]  # (r, K + 1) in the scales
        target = (value[row] - p.base[s[row], entry]) / p.scale[s[row], entry]
        # Bounded losses, as the rule's guarantee assumes: one wild value moves the weights by a bounded step.
        moves, target = np.clip(moves, -_BOUND, _BOUND), np.clip(target, -_BOUND, _BOUND)
        miss = moves[:, -1] - target  # the gradient of the loss at the combination's forecast:
        gradient = np.sign(miss) if self.loss == "absolute" else 2.0 * miss
        increments = gradient[:, None] * (moves[:, -1:] - moves[:, :-1])  # (r, K): regret against each expert
        learner.gather(h, increments, p.features[s[row], entry, h].astype(np.float64), target)
        if learner.quantiles is not None:
            offsets = p.quantiles[s[row], entry, :, :, h].astype(np.float64)  # (r, 3, L)
            learner.quantiles.gather(h, target - moves[:, -1], offsets)

    # -- the pipeline's part of a checkpoint ---------------------------------------------------

    def snapshot(self) -> dict:
        learners = {str(p): learner.snapshot() for p, learner in self.learners.items()}
        return {"names": list(self.names), "learners": learners}

    def restore(self, snapshot: dict) -> None:
        """Take the learners of a checkpoint with the same experts; otherwise start afresh."""
        self.learners = {}
        if list(snapshot["names"]) != list(self.names):
            return
        for partition, state in snapshot["learners"].items():
            self.learner(int(partition)).restore(state)
