"""The batched step: observations in, forecasts out, every series' state carried forward.

For one poll batch the engine
  1. looks up each series' slot (new series get one, the least recently seen may be evicted),
  2. orders each series' records by time and refuses stale or duplicate timestamps,
  3. runs the recurrent step in waves: wave k holds the k-th new record of every series,
     so a series seen 5 times costs 5 batched steps, not 5 x series calls,
  4. forecasts the horizon for every record with the direct multi-step head (with
     model.season the network sees the seasonal difference and last season is added
     back, seasonal.py), and
  5. scores the previous one-step forecasts against the actuals that just arrived, and
  6. with retraining on, appends each step's model inputs to its series' window buffer.
`install` swaps in new weights between batches; `calibrate` and the damping part take what a
retraining round measured (learning/rounds.py applies a round's outcome through these verbs).
It does no I/O and reads no clock: the run loop hands it decoded observations and the time,
and encodes what it returns.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from forecaster.config import Pipeline
from forecaster.serving import damping, gaps, records, scaling, threads
from forecaster.serving.buffer import WindowBuffer
from forecaster.serving.cadence import Cadence, calendar_features, horizon_times, step_numbers
from forecaster.serving.combination import Combination
from forecaster.serving.fused_step import FusedStep
from forecaster.serving.intervals import IntervalHistory, sort_levels, track
from forecaster.serving.model import Forecaster, ModelSpec, changes
from forecaster.serving.records import Observations, Rejected
from forecaster.serving.seasonal import SeasonRing
from forecaster.serving.skill import Coverage, Skill
from forecaster.serving.spill import Spill
from forecaster.serving.state import REFUSED, StateStore


@dataclass(frozen=True)
class Forecasts:
    """The forecasts of one step, column by column, in input order."""

    keys: tuple[str, ...]
    times: np.ndarray  # (m,) epoch seconds of the observations forecast from
    horizon_times: np.ndarray  # (m, horizon) epoch seconds
    values: np.ndarray  # (m, horizon) in the series' original units
    positions: np.ndarray  # (m,) poll-batch positions of the observations
    issued_at: float
    model_version: int
    quantiles: Mapping[float, np.ndarray] | None = None  # level -> (m, horizon), when the model forecasts quantiles

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self):
        """One `records.Forecast` per row (`records.encode_many` encodes them all at once, faster)."""
        for i, key in enumerate(self.keys):
            quantiles = {level: q[i].tolist() for level, q in self.quantiles.items()} if self.quantiles else None
            yield records.Forecast(
                key,
                float(self.times[i]),
                self.issued_at,
                self.model_version,
                self.horizon_times[i].tolist(),
                self.values[i].tolist(),
                quantiles,
            )


@dataclass(frozen=True)
class Plan:
    """Accepted rows in (series, time) order, and the wave of each."""

    order: np.ndarray  # (n,) indices into the observations, grouped by slot, by time within a slot
    waves: np.ndarray  # (n,) rank of each row within its series: the wave it is stepped in
    first: np.ndarray  # (n,) bool: the row is its series' first in this batch
    last: np.ndarray  # (n,) bool: the row is its series' last in this batch
    rejected: list[tuple[int, str, str]]  # (observation index, reason, detail)
    # (n,) for a row that fills a missing step (gaps.py), how many steps after its series' last observation; else 0
    distance: np.ndarray | None = None
    missing: np.ndarray | None = None  # (n,) bool: the row is a null reading, a record whose target was null

    @classmethod
    def of(cls, order: np.ndarray, slots: np.ndarray, rejected: list, distance=None, missing=None) -> Plan:
        """The plan of rows `order`, grouped by their `slots` (n,), in time order within each slot."""
        first, last = _edges(slots)
        return cls(order, _ranks(slots), first, last, rejected, distance, missing)

    @property
    def records(self) -> np.ndarray:
        """(n,) bool: the row is a record (a forecast follows it), not a step filled in for a gap."""
        return np.ones(len(self.order), bool) if self.distance is None else self.distance == 0

    @property
    def observed(self) -> np.ndarray:
        """(n,) bool: the row is a record with a value: neither a filled step nor a null reading."""
        return self.records if self.missing is None else self.records & ~self.missing

    @property
    def filling(self) -> np.ndarray | None:
        """(n,) bool: the network steps the row with a value of its own making (see `Engine._step_wave`); None:
        every row is stepped with its own value."""
        observed = self.observed
        return None if observed.all() else ~observed


def plan(slots: np.ndarray, times: np.ndarray, newest: np.ndarray) -> Plan:
    """Group rows by slot in time order; refuse rows not newer than what their series already has.

    `newest[slot]` is the newest time already taken for each slot (-inf for new series).
    """
    rejected = [
        (int(i), records.SERIES_CAPACITY, "more new series in one batch than max_series")
        for i in np.flatnonzero(slots == REFUSED)
    ]
    held = np.flatnonzero(slots != REFUSED)
    order = held[np.lexsort((times[held], slots[held]))]
    s, t = slots[order], times[order]
    same_series = np.r_[False, s[1:] == s[:-1]]
    floor = newest[s]
    stale = t < floor
    repeat = (t == floor) | (same_series & np.r_[False, t[1:] == t[:-1]])
    for i in order[stale]:
        rejected.append((int(i), records.OUT_OF_ORDER, "older than the newest observation of its series"))
    for i in order[repeat & ~stale]:
        rejected.append((int(i), records.DUPLICATE_TIMESTAMP, "its series already has an observation at this time"))
    order = order[~(stale | repeat)]
    return Plan.of(order, slots[order], rejected)


def _edges(slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows grouped by slot: whether each row is its slot's first, and whether it is its slot's last."""
    if not len(slots):
        return np.zeros(0, bool), np.zeros(0, bool)
    change = slots[1:] != slots[:-1]
    return np.r_[True, change], np.r_[change, True]


def _move_outermost(quantiles: np.ndarray, shift: np.ndarray) -> None:
    """Move the outermost levels of `quantiles` (n, levels, horizon) out by `shift` (n, horizon), in place.

    An inward shift stops at the next level in (with two levels, at their middle): an interval tracked
    too far in becomes narrow and misses more, so tracking widens it again. Sorting crossed levels
    instead turned it inside out into a wide one that covered everything, which tracking answered
    by moving further in, without end (GIFT-Eval's ETTh2 windows: offsets of -27 scales at the last steps).
    """
    inward = shift < 0
    if quantiles.shape[1] > 2:
        inner_low, inner_high = quantiles[:, 1].copy(), quantiles[:, -2].copy()
    else:
        inner_low = inner_high = quantiles.mean(axis=1)
    lower, upper = quantiles[:, 0] - shift, quantiles[:, -1] + shift
    quantiles[:, 0] = np.where(inward, np.minimum(lower, inner_low), lower)
    quantiles[:, -1] = np.where(inward, np.maximum(upper, inner_high), upper)


def _wave_order(waves: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """An order of the rows that puts wave 0 first, then wave 1, ..., and each wave's bounds in it.

    The order is None when every row is in wave 0 (each series once in the batch, the usual case):
    the rows are already in order, and nothing needs permuting on the way in or out.
    """
    if not waves.any():
        return None, np.array([0, len(waves)])
    by_wave = np.argsort(waves, kind="stable")
    return by_wave, np.searchsorted(waves[by_wave], np.arange(waves.max() + 2))


# On the CPU a wave is stepped in pieces of this many rows: a piece's gathered states, normaliser
# and gates stay in cache, instead of a million rows' worth streaming through memory at each stage.
_ROWS_PER_STEP = 16384


def _pieces(bounds: np.ndarray, rows: int | None) -> list[tuple[int, int]]:
    """(begin, end) of each wave, waves longer than `rows` cut into pieces (None: whole waves)."""
    pieces = []
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        step = rows or max(1, b - a)
        pieces += [(c, min(b, c + step)) for c in range(a, b, step)]
    return pieces


class Engine:
    """One pipeline's model and every series' state, stepped a batch at a time."""

    def __init__(
        self,
        pipeline: Pipeline,
        model: Forecaster,
        device: torch.device | str = "cpu",
        model_version: int = 0,
        spill: Spill | None = None,
    ):
        self.pipeline = pipeline
        self.cadence = Cadence.of(pipeline)  # with its time zone and holidays
        self.device = torch.device(device)
        self.most_threads = torch.get_num_threads()  # what a large step takes on the CPU (threads.py)
        self.model = model.to(self.device).eval()
        self.model_version = model_version
        features = 1 + len(pipeline.record.covariates)
        self.store = StateStore(
            layers=model.spec.num_layers,
            width=model.state_width,
            features=features,
            max_series=pipeline.max_series,
            device=self.device,
            spill=spill,
        )
        self.skill = Skill(pipeline.skill_window)
        self.coverage = Coverage(pipeline.skill_window)
        self._alpha = scaling.decay(pipeline.scaling.halflife)
        self._fast: FusedStep | None = None  # the inference step, made for the serving model on first use
        self.buffer: WindowBuffer | None = None
        if pipeline.retraining.enabled:
            self.buffer = WindowBuffer(
                self.store.capacity, pipeline.retraining.buffer, pipeline.input_size, self.device
            )
            self.store.attach("buffer", self.buffer)
        self.season: SeasonRing | None = None  # per series: the last season of raw values (model.season)
        if model.spec.season:
            self.season = SeasonRing(model.spec.season, self.device)
            self.store.attach("season", self.season)
        self.damping: damping.Damping | None = None  # per series: how much of the model's move to serve
        if pipeline.retraining.enabled and pipeline.retraining.damping:
            self.damping = damping.Damping(self.device)
            self.store.attach("damping", self.damping)
        self.widening: torch.Tensor | None = None  # (horizon,): the intervals' calibration, from retraining
        # the latest rounds'
        self._widenings: deque[torch.Tensor] = deque(maxlen=pipeline.retraining.calibration_rounds)
        self.intervals: IntervalHistory | None = None  # per series: the intervals issued, until their actuals arrive
        self.tracked = np.zeros(pipeline.horizon)  # (horizon,): quantile tracking's offsets, in scales (intervals.py)
        if model.spec.quantiles:
            self.intervals = IntervalHistory(pipeline.horizon if pipeline.intervals.tracking_rate else 1)
            self.store.attach("interval", self.intervals)
        self.combination: Combination | None = None  # the network and simple experts, weighted per step
        if pipeline.combination.enabled:
            combine = pipeline.combination
            self.combination = Combination(
                pipeline.cadence,
                pipeline.horizon,
                combine.scored_series,
                combine.discount,
                model.spec.quantiles,
                combine.loss,
            )
            self.store.attach("history", self.combination.history)
            self.store.attach("pending", self.combination.pending)
        self.last_forecasts: gaps.LastForecasts | None = None  # per series: what a missing step is filled with
        if pipeline.gaps.fill:
            self.last_forecasts = gaps.LastForecasts(pipeline.horizon, self.device)
            self.store.attach("last_forecasts", self.last_forecasts)

    def mean_damping(self) -> float:
        """The mean damping factor over the series held (1.0 with none, or with damping off)."""
        active = self.store.active
        if self.damping is None or not len(active):
            return 1.0
        return float(self.damping.factors[torch.as_tensor(active, device=self.device)].mean())

    def calibrate(self, widening: torch.Tensor | None) -> None:
        """Add a round's `widening` (horizon,) of the outermost quantiles, in scales: from now on they move
        out by the mean of the last retraining.calibration_rounds ones (None: as the head says, forgetting them).

        One round's held-out steps estimate the widening noisily, and an interval too narrow
        loses more coverage than one as much too wide gains: the mean of a few rounds covers better.
        """
        if widening is None:
            self._widenings.clear()
            self.widening = None
        else:
            self._widenings.append(widening.to(self.device, self.store.dtype))
            self.widening = torch.stack(tuple(self._widenings)).mean(dim=0)

    @property
    def widenings(self) -> list[torch.Tensor]:
        """The rounds' widenings `calibrate` averages, oldest first (CPU copies)."""
        return [w.cpu() for w in self._widenings]

    def recalibrate(self, widenings) -> None:
        """Serve the calibration of `widenings` (as `widenings` gave them), forgetting the engine's own."""
        self.calibrate(None)
        for widening in widenings:
            self.calibrate(widening)

    def install(self, model: Forecaster, version: int) -> None:
        """Serve `model` from the next batch on, as `version` (learning/resync.py re-synchronises the states).

        Call it between batches, from the thread that steps: no forecast is ever computed
        with some of the old weights and some of the new.
        """
        if model.spec != self.model.spec:
            raise ValueError(f"the new model ({model.spec}) is not the pipeline's ({self.model.spec})")
        self.model = model.to(self.device).eval()
        self.model_version = version

    def snapshot(self) -> dict:
        """Weights, version and every series' state: what a checkpoint needs to resume exactly."""
        return {
            "model": {
                "spec": dataclasses.asdict(self.model.spec),
                "version": self.model_version,
                "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            },
            "store": self.store.snapshot(),
            "widenings": self.widenings,
            "tracked": torch.from_numpy(self.tracked.copy()),
            "combination": None if self.combination is None else self.combination.snapshot(),
        }

    def restore(self, snapshot: dict) -> None:
        """Resume from `snapshot`; its model must be the one the pipeline configures (learning/migration.py
        starts from a checkpoint of another)."""
        spec = ModelSpec(**snapshot["model"]["spec"])
        if spec != self.model.spec:
            raise ValueError(f"the checkpoint's model is not the pipeline's: {changes(spec, self.model.spec)}")
        self.model.load_state_dict(snapshot["model"]["state_dict"])
        self.model_version = int(snapshot["model"]["version"])
        self.store.restore(snapshot["store"])
        self.tracked = snapshot["tracked"].numpy().copy()
        self.recalibrate(snapshot["widenings"])
        if self.combination is not None and snapshot["combination"] is not None:  # else the weights start afresh
            self.combination.restore(snapshot["combination"])

    @torch.no_grad()
    def step(self, observations: Observations, now: float) -> tuple[Forecasts, list[Rejected]]:
        """Step every observation into its series' state and forecast, issued at `now` (epoch seconds);
        refused rows come back as Rejected."""
        observations = records.localised(observations, self.cadence)
        slots = self.store.slots(observations.keys)
        the_plan = plan(slots, observations.times, self.store.newest_times())
        observations, the_plan = self._stand_in_for_missing(observations, slots, the_plan)
        rejected = [Rejected(int(observations.positions[i]), reason, detail) for i, reason, detail in the_plan.rejected]
        if observations.offsets is not None:  # which input partition each series follows, and how far (changelog)
            rows = the_plan.order
            partitions = (
                np.zeros(len(observations), np.int64) if observations.partitions is None else observations.partitions
            )
            self.store.note(slots[rows], partitions[rows], observations.offsets[rows])
        if self.last_forecasts is not None:
            observations, slots, the_plan = self._fill_gaps(observations, slots, the_plan)
        order, observed, served = the_plan.order, the_plan.observed, the_plan.records
        with threads.sized(len(order), self.device, self.most_threads):
            deltas, scales, stepped = self._run_waves(
                slots[order], observations, order, the_plan.waves, the_plan.filling
            )
        values = observations.values[order, 0]
        actual = np.where(observed, values, np.nan)  # a filled step or a null reading has no actual
        # a record is forecast from its value; a null reading from the value it was stepped with
        missing = the_plan.missing
        base = actual if missing is None or not missing.any() else np.where(missing, stepped, actual)
        forecast = base[:, None] + deltas[:, : self.pipeline.horizon]  # (n, horizon), original units
        quantiles = self._quantiles(base, deltas)
        if self.combination is not None:  # the served forecast and quantiles: the combination's (combination.py)
            rows = order[served]
            network_quantiles = None if quantiles is None else quantiles[served]
            point, combined = self._combine(
                slots[rows], observations, rows, base[served], forecast[served], network_quantiles, observed[served]
            )
            forecast[served] = point  # both arrays are this batch's own
            if quantiles is not None:
                quantiles[served] = combined
        one_step = np.where(observed, forecast[:, 0], np.nan)  # what a null reading issued is never scored
        self._score_and_remember(slots[order], observations.times[order], values, actual, one_step, the_plan)
        if quantiles is not None:
            self._track_and_score(slots[order], the_plan.waves, actual, quantiles, scales, the_plan.missing)
        emit = served if self.pipeline.emit == "per_record" else served & the_plan.last
        if not emit.all():  # else every row is forecast, the usual batch: no copies (at 1M series, 0.8 GB)
            order, forecast, quantiles = order[emit], forecast[emit], None if quantiles is None else quantiles[emit]
        return self._forecasts(observations, order, forecast, now, quantiles), rejected

    def _stand_in_for_missing(self, observations: Observations, slots: np.ndarray, the_plan: Plan):
        """The batch with each null reading (a NaN target) marked in the plan and holding its series' last value,
        which stands in for it where the network holds no forecast for its step (`_step_wave`), and that plan.

        A null reading of a series with no value yet, in the batch or before it, has nothing to stand in: refused.
        """
        if not np.isnan(observations.values[:, 0]).any():  # the usual batch: a look at one column, no copies
            return observations, the_plan
        order = the_plan.order
        values = observations.values[order, 0]
        missing = np.isnan(values)
        if not missing.any():
            return observations, the_plan
        last = _carried(values, the_plan.first, self.store.remembered(slots[order])[0])
        refused = missing & np.isnan(last)
        detail = "a null target, and its series has no value before it to stand in for it"
        rejected = the_plan.rejected + [(int(i), records.NO_VALUE_YET, detail) for i in order[refused]]
        stood_in = observations.values.copy()
        stood_in[order, 0] = last
        kept = order[~refused]
        return (
            dataclasses.replace(observations, values=stood_in),
            Plan.of(kept, slots[kept], rejected, missing=missing[~refused]),
        )

    def _fill_gaps(self, observations: Observations, slots: np.ndarray, the_plan: Plan):
        """The batch with a row before each observation for each step its series missed (gaps.py), and its plan."""
        order = the_plan.order
        if not len(order):
            return observations, slots, the_plan
        s = slots[order]
        values, _ = self.store.remembered(s[the_plan.first])
        previous = _previous(observations.times[order], the_plan.first, self.store.newest_times()[s[the_plan.first]])
        previous_values = _previous(observations.values[order, 0], the_plan.first, values)
        filled = gaps.fill(observations, slots, order, previous, previous_values, self.cadence, self.pipeline.horizon)
        if not filled.distance.any():
            return observations, slots, the_plan
        missing = None
        if the_plan.missing is not None:  # the records keep their order among the filled steps
            missing = np.zeros(len(filled.order), bool)
            missing[filled.distance == 0] = the_plan.missing
        order = filled.order
        return (
            filled.observations,
            filled.slots,
            Plan.of(order, filled.slots[order], the_plan.rejected, filled.distance, missing),
        )

    def _combine(self, slots, observations: Observations, order, base, network, quantiles, observed):
        """The combination's forecasts (n, horizon) and quantiles (n, levels, horizon) or None, for records in
        (series, time) order, each forecast from its `base` value; `quantiles` are the network's, `observed` (n,)
        False at a null reading.

        Each partition's rows go in its own order, an epoch of its learner at a time, and within
        an epoch wave after wave, so a series' later record is scored and forecast after its earlier one.
        """
        steps = step_numbers(observations.times[order], observations.local_times[order], self.cadence)
        partitions = (
            np.zeros(len(order), np.int64) if observations.partitions is None else observations.partitions[order]
        )
        point = np.empty_like(network)
        combined = None if quantiles is None else np.empty_like(quantiles)
        for partition in np.unique(partitions).tolist():
            mine = np.flatnonzero(partitions == partition)  # in (series, time) order
            arrival = mine[np.argsort(observations.positions[order[mine]], kind="stable")]
            learner, start = self.combination.learner(partition), 0
            while start < len(arrival):
                take = min(len(arrival) - start, learner.remaining())
                epoch = np.sort(arrival[start : start + take])  # back in (series, time) order
                by_wave, bounds = _wave_order(_ranks(slots[epoch]))
                rows = epoch if by_wave is None else epoch[by_wave]
                for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
                    wave = rows[a:b]
                    point[wave], wave_quantiles = self.combination.step(
                        partition,
                        slots[wave],
                        steps[wave],
                        base[wave],
                        network[wave],
                        None if quantiles is None else quantiles[wave],
                        observed[wave],
                    )
                    if combined is not None:
                        combined[wave] = wave_quantiles
                learner.count(take)
                start += take
        return point, combined

    def _quantiles(self, base: np.ndarray, deltas: np.ndarray) -> np.ndarray | None:
        """(n, levels, horizon) quantile forecasts in original units, sorted so they never cross; None without."""
        levels, horizon = self.model.spec.quantiles, self.pipeline.horizon
        if not levels:
            return None
        offsets = deltas[:, horizon:].reshape(len(deltas), len(levels), horizon)  # a view: deltas is not used after
        # Sorted before the base is added, in float32: the base is one number for all levels of a row's step and
        # adding it keeps their order (rounding is monotonic), so the result is the same from half the bytes.
        return base[:, None, None] + sort_levels(offsets)

    def _run_waves(
        self,
        slots: np.ndarray,
        observations: Observations,
        order: np.ndarray,
        waves: np.ndarray,
        filling: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Batched recurrent steps, one per wave; returns std * head output (plus the
        seasonal shift with model.season), (n, outputs) float32, and each row's std (n,), on the
        host, and with `filling` (n,) marking rows stepped with a value of the network's making
        (`Plan.filling`), the value each row was stepped with (n,) (else None).

        The batch crosses to the device once (values, calendar features, slots) and back once
        (the deltas, and the values where some were made); each wave writes its own rows of one `deltas` tensor.
        """
        n = len(order)
        if n == 0:
            return np.zeros((0, self.model.spec.outputs), np.float32), np.zeros(0, np.float32), None
        by_wave, bounds = _wave_order(waves)
        rows = order if by_wave is None else order[by_wave]
        dtype = self.store.dtype
        x = torch.as_tensor(observations.values[rows], device=self.device, dtype=dtype)  # (n, F)
        # (n, C)
        cal = torch.as_tensor(
            calendar_features(observations.local_times[rows], self.pipeline.calendar), device=self.device, dtype=dtype
        )
        device_slots = torch.as_tensor(slots if by_wave is None else slots[by_wave], device=self.device)
        if filling is not None:
            filling = torch.as_tensor(filling if by_wave is None else filling[by_wave], device=self.device)
        # each row's outputs, then its scale: one tensor, that crosses back in one copy
        outputs = torch.empty(n, self.model.spec.outputs + 1, device=self.device, dtype=dtype)
        deltas, scales = outputs[:, :-1], outputs[:, -1]
        for a, b in _pieces(bounds, _ROWS_PER_STEP if self.device.type == "cpu" else None):
            rows_filling = None if filling is None else filling[a:b]
            self._step_wave(
                device_slots[a:b], x[a:b], cal[a:b], out=deltas[a:b], scales=scales[a:b], filling=rows_filling
            )
        stepped = None if filling is None else _in_row_order(x[:, 0].double().cpu().numpy(), by_wave)
        outputs = _in_row_order(outputs.cpu().numpy(), by_wave)
        return outputs[:, :-1], outputs[:, -1], stepped

    def _step_wave(
        self,
        slots: torch.Tensor,
        x: torch.Tensor,
        cal: torch.Tensor,
        out: torch.Tensor,
        scales: torch.Tensor,
        filling=None,
    ) -> None:
        """One recurrent step for distinct series: gather, normalise, step, scatter, forecast into `out`, and
        each series' scale (the target's standard deviation) into `scales`.

        Rows `filling` stand for a step without a value (a gap's, gaps.py, or a null reading's): each is
        stepped with the network's forecast for that step, from the series' last observation, where one is
        held (else with the stand-in it carries), written into `x`. A null covariate (NaN) enters at its
        series' running mean, a scaled input of 0: as if at its usual level.
        Equal, to float rounding, to `model.step` then `std * model.head` (tests/serving/test_fused_step.py).
        """
        if filling is not None and self.last_forecasts is not None:
            held = self.last_forecasts.take(slots, filling)
            x[:, 0] = torch.where(torch.isnan(held), x[:, 0], held.to(x.dtype))
        raw = x[:, 0]
        state, moments = self.store.gather(slots)  # (layers, n, width): this wave's own copy
        if x.shape[1] > 1:  # a null covariate (NaN): at its running mean
            x = torch.where(torch.isnan(x), moments.mean.to(x.dtype), x)
        shift = None
        if self.season is not None:  # the network sees z[t] = y[t] - y[t - season] (seasonal.py)
            z, shift = self.season.step(slots, x[:, 0], self.pipeline.horizon)
            x = torch.cat([z.to(x.dtype)[:, None], x[:, 1:]], dim=1)
        moments = scaling.update(moments, x, self._alpha)
        inputs = torch.cat([scaling.scale(moments, x, self.pipeline.scaling.clip), cal], dim=1)
        self._fast_step().step_(inputs, state, out=out)  # steps `state` in place; out: head, (n, outputs)
        if self.damping is not None:
            damping.apply(out, self.damping.factors[slots], self.pipeline.horizon)
        if self.widening is not None:  # the rounds' calibration of the outermost quantiles
            horizon = self.pipeline.horizon
            out[:, horizon : 2 * horizon].sub_(self.widening)
            out[:, -horizon:].add_(self.widening)
        self.store.scatter(slots, state, moments)
        std = scaling.std(moments)[:, :1]
        scales.copy_(std[:, 0])
        out.mul_(std)
        if shift is not None:  # every output, point and quantiles, moves by y[t + h - season] - y[t - season]
            out.unflatten(1, (-1, self.pipeline.horizon)).add_(shift.to(out.dtype)[:, None])
        if self.last_forecasts is not None:
            forecasts = raw[:, None] + out[:, : self.pipeline.horizon]
            if filling is None:
                self.last_forecasts.write(slots, forecasts)
            else:
                self.last_forecasts.write(slots[~filling], forecasts[~filling])
        if self.buffer is not None:  # a filled step's value is not a target: NaN
            actual = x[:, 0] if filling is None else torch.where(filling, torch.nan, x[:, 0])
            self.buffer.write(slots, inputs, actual, std[:, 0])

    def _fast_step(self) -> FusedStep:
        """The model's inference step (fused_step.py), made on first use; it follows the model's weights."""
        if self._fast is None or self._fast.model is not self.model:
            self._fast = FusedStep(self.model)
        return self._fast

    def _score_and_remember(self, slots, times, values, actual, one_step, the_plan: Plan) -> None:
        """Score last step's one-step forecasts against the `actual`s, then keep this batch's newest per series:
        its time, its last value (a null reading's `values` carry the one before it) and its one-step forecast."""
        if len(slots) == 0:  # every record of the batch was rejected or refused
            return
        first = the_plan.first
        remembered, forecasts = self.store.remembered(slots[first])
        self.skill.add(actual, _previous(one_step, first, forecasts), _previous(values, first, remembered))
        last = the_plan.last
        self.store.remember(slots[last], times[last], values[last], one_step[last])

    def _track_and_score(
        self, slots, waves, actual, quantiles: np.ndarray, scales: np.ndarray, missing: np.ndarray | None = None
    ) -> None:
        """Score the intervals issued for these actuals and keep each row's own until theirs arrive (a null
        reading's, `missing`, never scored); with intervals.tracking_rate, first move the outermost `quantiles`
        (n, levels, horizon; in place) by each step's offset in the row's `scales`, and move the offsets by how
        the intervals fared, wave by wave.

        Wave by wave, in time order: a wave's intervals are served with the offsets its series' earlier
        records left, whether those came in this batch or an earlier one, so what is served and learnt does
        not depend on how the stream was cut into batches.
        """
        if len(slots) == 0:
            return
        rate = self.pipeline.intervals.tracking_rate
        if not rate:
            self._score(slots, waves, actual, quantiles, missing)
            return
        levels = self.model.spec.quantiles
        by_wave, bounds = _wave_order(waves)
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            wave = slice(a, b) if by_wave is None else by_wave[a:b]  # one wave, the usual batch: views, no copies
            moved = quantiles[wave]
            _move_outermost(moved, self.tracked[None, :] * scales[wave, None])
            quantiles[wave] = moved
            unscored = None if missing is None else missing[wave]
            inside = self._score(slots[wave], np.zeros(b - a, np.int64), actual[wave], moved, unscored)
            self.tracked = track(self.tracked, inside, levels[-1] - levels[0], rate)

    def _score(self, slots, waves, actual, quantiles: np.ndarray, missing: np.ndarray | None) -> np.ndarray:
        """Score and keep the outermost `quantiles` as intervals (a null reading's as none); the scores (n, depth)."""
        bounds = quantiles[:, [0, -1]]  # a copy
        if missing is not None:
            bounds[missing] = np.nan  # what a null reading issued is never scored
        inside = self.intervals.score_and_keep(slots, waves, actual, bounds)
        self.coverage.add(inside[:, 0])
        return inside

    def _forecasts(
        self,
        observations: Observations,
        rows: np.ndarray,
        values: np.ndarray,
        now: float,
        quantiles: np.ndarray | None = None,
    ) -> Forecasts:
        """Columnar forecasts for `rows`, back in input order; `quantiles` (m, levels, horizon) or None.

        Usually every observation is forecast and already in input order (series come in slot
        order): then nothing is permuted and the keys are the observations' own tuple, which at
        a million series saves a third of a second of per-key Python work.
        """
        positions = observations.positions[rows]
        if np.any(positions[1:] < positions[:-1]):
            arrival = np.argsort(positions, kind="stable")
            rows, values, positions = rows[arrival], values[arrival], positions[arrival]
            quantiles = None if quantiles is None else quantiles[arrival]
        times = observations.times[rows]
        return Forecasts(
            keys=records.take_keys(observations.keys, rows),
            times=times,
            horizon_times=horizon_times(times, observations.local_times[rows], self.cadence, self.pipeline.horizon),
            values=values,
            positions=positions,
            issued_at=now,
            model_version=self.model_version,
            quantiles=None if quantiles is None else dict(zip(self.model.spec.quantiles, quantiles.transpose(1, 0, 2))),
        )


def _ranks(slots: np.ndarray) -> np.ndarray:
    """Each row's rank among the rows of its slot, for rows grouped by slot: the wave it belongs to."""
    if not len(slots):
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, slots[1:] != slots[:-1]])
    return np.arange(len(slots)) - np.repeat(starts, np.diff(np.r_[starts, len(slots)]))


def _in_row_order(values: np.ndarray, by_wave: np.ndarray | None) -> np.ndarray:
    """Values computed in wave order (`_wave_order`), back in the order of the rows."""
    if by_wave is None:
        return values
    result = np.empty_like(values)
    result[by_wave] = values
    return result


def _carried(values: np.ndarray, first: np.ndarray, remembered: np.ndarray) -> np.ndarray:
    """Each row's newest value up to it in its series, NaN skipped: its own, an earlier row's or, with none,
    what the store `remembered` for it (n,). Rows are in (series, time) order, `first` marking each series' first."""
    index = np.arange(len(values))
    start = np.maximum.accumulate(np.where(first, index, 0))  # each row's series' first row
    newest = np.maximum.accumulate(np.where(np.isnan(values), -1, index))  # the newest row with a value so far
    return np.where(newest >= start, values[np.maximum(newest, 0)], remembered)


def _previous(values: np.ndarray, first: np.ndarray, remembered: np.ndarray) -> np.ndarray:
    """Each row's value one step earlier in its series: the row before it, or at a series' first row
    in the batch (`first`), what the store `remembered` from earlier batches. Rows are in (series, time) order."""
    previous = np.concatenate([np.full((1, *values.shape[1:]), np.nan), values[:-1]])
    previous[first] = remembered
    return previous
