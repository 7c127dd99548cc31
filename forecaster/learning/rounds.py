"""Online retraining, the pure part: windows from the buffers, a challenger, its judgement, re-sync.

One round of retraining is
  1. `collect`: copy the buffered windows of the series with the most data,
  2. `challenge`: fine-tune a copy of the serving weights (the champion) with TBPTT on the
     windows' older steps, then score champion and challenger on the targets that fall in
     each window's newest `holdout` steps, which the challenger never trained on; it is
     promoted only if it beats the champion and the best simple forecast there,
  3. `adopt` (by the caller, at a batch boundary): install the winner and re-synchronise every
     series' state by replaying its newest buffered steps through the new weights (resync.py),
     and serve the damping and interval calibration the round measured.
No threads, clocks or I/O here: `trainer.py` runs rounds in the background.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from forecaster.config import Pipeline
from forecaster.errors import NotEnoughData
from forecaster.learning import tbptt
from forecaster.learning.resync import install, replay
from forecaster.serving import buffer as buffers
from forecaster.serving import damping
from forecaster.serving.buffer import WindowBuffer
from forecaster.serving.cadence import seasons
from forecaster.serving.engine import Engine
from forecaster.serving.model import Forecaster, split_head
from forecaster.serving.state import StateStore


@dataclass(frozen=True)
class Windows:
    """Buffered windows of n series, oldest step first; a series with fewer steps has them at the end."""

    inputs: Tensor  # (n, W, input_size): what the engine fed the model
    # (n, W, horizon): (y[t + h] - y[t]) / std_t, from steps already in the window; None until `with_targets`
    targets: Tensor | None
    mask: Tensor | None  # (n, W, horizon) bool: the target exists
    valid: Tensor  # (n, W) bool: the step holds data
    actual: Tensor  # (n, W) float64: the raw target
    scale: Tensor  # (n, W): std_t
    slots: np.ndarray  # (n,): where each series lives
    keys: tuple[str | None, ...]  # (n,): which series, to tell a slot that changed hands since

    def __len__(self) -> int:
        return self.inputs.shape[0]


@dataclass(frozen=True)
class Outcome:
    """What one round produced: the challenger, its losses next to the champion's, and the verdict."""

    challenger: Forecaster
    promoted: bool
    champion_loss: float  # on the held-out newest steps
    challenger_loss: float
    training_loss: float  # mean over the round's last optimisation steps
    series: int  # series whose windows were trained on
    # The held-out point MSE of the challenger and of the best simple forecast (persistence, or a seasonal
    # naive; with the combination, a seasonal level too), which a promoted challenger must beat; and its name.
    challenger_point_loss: float = math.nan
    expert_loss: float = math.nan
    expert: str = ""
    # With quantiles: per horizon step, how far the outermost quantiles must move out (in units
    # of the series' scale) for their interval to cover its nominal share of the held-out targets.
    champion_widening: Tensor | None = None
    challenger_widening: Tensor | None = None
    # With retraining.damping: per window, how much of each model's move away from the last
    # value the held-out steps support (damping.py); NaN where a window had no held-out target.
    champion_damping: Tensor | None = None
    challenger_damping: Tensor | None = None
    slots: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))  # the windows' (Windows)
    keys: tuple[str | None, ...] = ()

    @property
    def widening(self) -> Tensor | None:
        """The calibration of whichever model serves after this round."""
        return self.challenger_widening if self.promoted else self.champion_widening

    @property
    def damping(self) -> Tensor | None:
        """The per-window damping of whichever model serves after this round."""
        return self.challenger_damping if self.promoted else self.champion_damping


def collect(
    store: StateStore,
    buffer: WindowBuffer,
    horizon: int,
    max_series: int,
    bound: float = float("inf"),
    targets: bool = True,
) -> Windows:
    """CPU copies of the windows of up to `max_series` of the store's series, those with the most buffered steps
    first; their targets clipped to +-`bound` (`with_targets`), or without `targets` none yet: the run loop copies
    the windows between two batches and leaves the targets, ten times the copy's time, to the round's thread."""
    slots = torch.as_tensor(store.active, device=buffer.device)
    if len(slots) > max_series:
        written = buffer.written[slots]
        slots = slots[torch.topk(written, max_series).indices.sort().values]
    inputs, actual, scale, valid = buffer.read(slots)
    on_host = slots.cpu().numpy()
    windows = Windows(inputs.cpu(), None, None, valid.cpu(), actual.cpu(), scale.cpu(), on_host, store.keys_of(on_host))
    return _targeted(windows, horizon, bound) if targets else windows


def with_targets(windows: Windows, pipeline: Pipeline) -> Windows:
    """`windows` with their training targets, clipped to the moves the engine's clipped inputs can span
    (buffer.target_bound); as they are if they have them."""
    if windows.targets is not None:
        return windows
    return _targeted(windows, pipeline.horizon, buffers.target_bound(pipeline.scaling.clip))


def _targeted(windows: Windows, horizon: int, bound: float) -> Windows:
    targets, mask = buffers.targets(windows.actual, windows.scale, windows.valid, horizon, bound)
    return dataclasses.replace(windows, targets=targets, mask=mask)


def minimal_steps(pipeline: Pipeline) -> int:
    """Buffered steps a young round needs: the held-out steps, and a short training window before them."""
    training = pipeline.training
    return pipeline.retraining.holdout + min(training.window, 2 * training.chunk)


def young(pipeline: Pipeline, round_: int) -> bool:
    """Whether round `round_` (1, 2, ...) is one of the pipeline's young rounds."""
    return round_ <= pipeline.retraining.young_rounds


def young_steps_buffered(engine: Engine, started: int) -> int:
    """What starts a young round (`young_round_due`): the most steps any series has buffered, while the next
    round is young (`_learning_young`); 0 otherwise."""
    if not _learning_young(engine, started):
        return 0
    written = engine.buffer.written
    return int(written.max()) if len(written) else 0


def _learning_young(engine: Engine, started: int) -> bool:
    """Whether the next round is young: one of the first young_rounds, and the serving model not promoted that
    many times (a restarted daemon's network that has learnt is not young again)."""
    return young(engine.pipeline, started + 1) and engine.model_version < engine.pipeline.retraining.young_rounds


def records_to_young_round(engine: Engine, started: int, keys: Sequence[str]) -> int | None:
    """How many of a batch's records (`keys`, in arrival order) bring a series to the buffered steps that start
    the next young round (`young_round_due`), so it can start at that record; None when none does or the
    network is not young. Gap-filled steps are not foreseen: such a round starts at the batch's end."""
    if not _learning_young(engine, started) or not len(keys):
        return None
    needed = min(engine.pipeline.retraining.buffer, minimal_steps(engine.pipeline) << started)
    distinct, series = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    slots = engine.store.lookup(distinct)
    written = engine.buffer.written.cpu().numpy()
    before = np.where(slots >= 0, written[np.maximum(slots, 0)], 0)
    by_series = np.argsort(series, kind="stable")
    starts = np.searchsorted(series[by_series], series[by_series])
    occurrence = np.empty(len(keys), np.int64)
    occurrence[by_series] = np.arange(len(keys)) - starts  # 0 for a series' first record of the batch
    reached = np.flatnonzero(before[series] + occurrence + 1 >= needed)
    return int(reached[0]) + 1 if len(reached) else None


def young_round_due(pipeline: Pipeline, started: int, longest: int) -> bool:
    """While the network is young, whether its longest buffered series (`longest` steps) calls for the next
    round, when `started` rounds have started: at `minimal_steps`, then each time that has doubled, up to the
    buffer."""
    if not young(pipeline, started + 1):
        return False
    return longest >= min(pipeline.retraining.buffer, minimal_steps(pipeline) << started)


def training_window(pipeline: Pipeline, windows: Windows, round_: int) -> int:
    """The steps of each TBPTT window round `round_` trains on: training.window, or in a young round as many as
    the longest buffered series holds before its held-out steps (at least `minimal_steps` less those)."""
    window = pipeline.training.window
    if not young(pipeline, round_):
        return window
    holdout = pipeline.retraining.holdout
    longest = int(windows.valid.sum(dim=1).max()) if len(windows) else 0
    return min(window, max(longest - holdout, minimal_steps(pipeline) - holdout))


def round_windows(engine: Engine, round_: int) -> Windows:
    """The windows round `round_` would train on (`collect`, up to retraining.max_series series), without their
    targets: `challenge` adds them in the round's thread; NotEnoughData if none is long enough for its
    `training_window`."""
    pipeline = engine.pipeline
    settings = pipeline.retraining
    windows = collect(engine.store, engine.buffer, pipeline.horizon, settings.max_series, targets=False)
    trainable(windows, settings.holdout, training_window(pipeline, windows, round_))
    return windows


def trainable(windows: Windows, holdout: int, window: int) -> list[int]:
    """The windows with at least `window` steps before the newest `holdout`; NotEnoughData if none has."""
    steps = windows.valid.sum(dim=1)
    chosen = torch.nonzero(steps - holdout >= window).flatten().tolist()
    if not chosen:
        longest = int(steps.max()) if len(windows) else 0
        raise NotEnoughData(
            f"no series has {window + holdout} buffered steps yet (training.window {window} "
            f"+ retraining.holdout {holdout}); the longest has {longest}"
        )
    return chosen


def training_series(windows: Windows, holdout: int, window: int) -> list[tbptt.Series]:
    """Each `trainable` window's valid steps as a `tbptt.Series`, every target inside the newest `holdout` steps
    masked."""
    W = windows.inputs.shape[1]
    series = []
    for i in trainable(windows, holdout, window):
        a = W - int(windows.valid[i].sum())  # the window's oldest valid step
        whole = tbptt.Series(
            key=str(i),
            inputs=windows.inputs[i, a:],
            targets=windows.targets[i, a:],
            mask=windows.mask[i, a:],
            actual=windows.actual[i, a:],
            std=windows.scale[i, a:],
        )
        series.append(tbptt.head(whole, W - holdout - a))
    return series


@dataclass(frozen=True)
class Scores:
    """A model judged on the held-out steps, as it would serve."""

    loss: float  # the training loss on the held-out targets, after damping
    point: float  # the point forecast's MSE on them
    widening: Tensor | None  # (horizon,) with quantiles: the conformal widening of the outer interval
    damping: Tensor | None  # (n,) with damping on: per window, NaN where it had no held-out target


def heldout_loss(model: Forecaster, windows: Windows, holdout: int) -> float:
    """The training loss on the targets that lie in each window's newest `holdout` steps.

    Each window is replayed from a zero state, so the older steps warm the state up.
    """
    return heldout_scores(model, windows, holdout).loss


def heldout_scores(
    model: Forecaster, windows: Windows, holdout: int, damp: bool = False, relative: bool = False
) -> Scores:
    """`heldout_loss`; with `damp`, the per-window damping fitted on the held-out targets first
    (damping.py) and the loss of the damped forecasts; with `relative`, the point forecast's
    part of the loss is the relative MSE (tbptt.masked_mse); with quantiles, the widening of
    the outermost interval per horizon step, of the (damped) forecasts.

    The widening is conformalized quantile regression (Romano et al., 2019) on the held-out
    targets: the score of a target is how far it falls outside [lowest, highest quantile]
    (negative inside), and the widening is the score's empirical quantile at the interval's
    nominal coverage, so the widened interval covers that share of held-out targets.
    """
    device = next(model.parameters()).device
    heads, _ = replay(model, windows.inputs.to(device), windows.valid.to(device))
    heads = heads.cpu()
    horizon = windows.targets.shape[2]
    mask = heldout_mask(windows, holdout)
    factors = None
    if damp:
        factors = damping.least_squares(heads[..., :horizon], windows.targets, mask)
        damping.apply(heads, torch.nan_to_num(factors, nan=1.0)[:, None], horizon)
    loss = float(tbptt.forecast_loss(heads, windows.targets, mask, model.spec.quantiles, relative))
    point = float(tbptt.masked_mse(heads[..., :horizon], windows.targets, mask))
    levels = model.spec.quantiles
    if len(levels) < 2:
        return Scores(loss, point, None, factors)
    _, quantiles = split_head(heads, horizon)  # (n, W, Q, horizon)
    scores = torch.maximum(quantiles[..., 0, :] - windows.targets, windows.targets - quantiles[..., -1, :])
    return Scores(loss, point, conformal_widening(scores, mask, levels[-1] - levels[0]), factors)


def heldout_mask(windows: Windows, holdout: int) -> Tensor:
    """(n, W, horizon): the targets that exist and fall in each window's newest `holdout` steps."""
    W, horizon = windows.targets.shape[1:]
    target_step = torch.arange(W)[:, None] + torch.arange(1, horizon + 1)[None, :]  # (W, horizon)
    return windows.mask & (target_step >= W - holdout)


def simple_losses(windows: Windows, holdout: int, periods: tuple[int, ...], level: bool = False) -> dict[str, float]:
    """The held-out point MSE, in the targets' units, of the forecasts a user would make by hand: the last
    value (a zero move) and the seasonal naive y[t + h - kP] for each period P (the last value where that is
    not buffered), as the combination's experts forecast; with `level` (the combination on), its seasonal level
    experts y[t + h - kP] + y[t] - y[t - kP] too, so a challenger must beat the best expert it serves beside."""
    mask, targets = heldout_mask(windows, holdout), windows.targets
    losses = {"persistence": float(tbptt.masked_mse(torch.zeros_like(targets), targets, mask))}
    for period in periods:
        moves = seasonal_moves(windows.actual, windows.scale, period, targets.shape[2])
        losses[f"seasonal_naive_{period}"] = float(tbptt.masked_mse(moves, targets, mask))
        if level:
            moves = seasonal_moves(windows.actual, windows.scale, period, targets.shape[2], level=True)
            losses[f"seasonal_level_{period}"] = float(tbptt.masked_mse(moves, targets, mask))
    return losses


def seasonal_moves(actual: Tensor, scale: Tensor, period: int, horizon: int, level: bool = False) -> Tensor:
    """(n, W, horizon): the seasonal naive's move (y[t + h - kP] - y[t]) / scale[t], k = ceil(h / P), or with
    `level` the seasonal level's (y[t + h - kP] - y[t - kP]) / scale[t]; 0 where a value it needs is not in the
    window or not observed (NaN)."""
    n, W = actual.shape
    moves = torch.zeros(n, W, horizon)
    for h in range(1, horizon + 1):
        season = period * math.ceil(h / period)
        back = season - h  # y[t - back]
        base = season if level else 0  # moved from y[t - base]
        start = max(back, base)  # the first step t with both in the window
        if start >= W:
            continue
        then, since = actual[:, start - back : W - back], actual[:, start - base : W - base]
        move = ((then - since) / scale[:, start:]).float()
        moves[:, start:, h - 1] = torch.nan_to_num(move, nan=0.0)
    return moves


def conformal_widening(scores: Tensor, mask: Tensor, coverage: float) -> Tensor:
    """Per horizon step (last dim), the ceil((m + 1) * coverage)-th smallest of its m scores; 0 without any."""
    widening = torch.zeros(scores.shape[-1])
    for h in range(scores.shape[-1]):
        held = scores[..., h][mask[..., h]].sort().values
        if len(held):
            widening[h] = held[min(len(held) - 1, math.ceil((len(held) + 1) * coverage) - 1)]
    return widening


def challenge(
    champion: Forecaster,
    windows: Windows,
    pipeline: Pipeline,
    round_: int,
    device: torch.device | str = "cpu",
    progress=None,
) -> Outcome:
    """Fine-tune a copy of `champion` on `windows` and judge it against the champion on the holdout.

    `round_` varies the seed from round to round, so each samples other windows; `progress`
    is `tbptt.fit`'s per-step callback (it may raise to cancel the round).
    """
    windows = with_targets(windows, pipeline)  # here, in the round's thread, not the run loop's
    retraining = pipeline.retraining
    steps = retraining.young_steps if young(pipeline, round_) else retraining.steps
    training = dataclasses.replace(
        pipeline.training,
        window=training_window(pipeline, windows, round_),
        steps=steps,
        learning_rate=retraining.learning_rate,
        warmup_steps=min(pipeline.training.warmup_steps, steps // 5),
        seed=pipeline.training.seed + round_,
    )
    series = training_series(windows, retraining.holdout, training.window)
    challenger = copy.deepcopy(champion)
    losses = tbptt.fit(challenger, series, training, device=device, progress=progress)
    # judged by the loss it was trained on
    judge = functools.partial(
        heldout_scores,
        windows=windows,
        holdout=retraining.holdout,
        damp=retraining.damping,
        relative=training.loss == "relative_mse",
    )
    champion_scores, challenger_scores = judge(champion), judge(challenger)
    # With model.season the targets are seasonal differences: there the last value is the seasonal naive.
    periods = () if champion.spec.season else seasons(pipeline.cadence)
    simple = simple_losses(windows, retraining.holdout, periods, level=pipeline.combination.enabled)
    expert = min(simple, key=simple.__getitem__)
    tail = losses[-max(1, len(losses) // 5) :]
    return Outcome(
        challenger=challenger.cpu().eval(),
        promoted=finite(challenger, challenger_scores)
        and challenger_scores.loss < champion_scores.loss * (1 - retraining.min_improvement)
        and challenger_scores.point < simple[expert],
        champion_loss=champion_scores.loss,
        challenger_loss=challenger_scores.loss,
        training_loss=float(np.mean(tail)),
        series=len(series),
        challenger_point_loss=challenger_scores.point,
        expert_loss=simple[expert],
        expert=expert,
        champion_widening=champion_scores.widening,
        challenger_widening=challenger_scores.widening,
        champion_damping=champion_scores.damping,
        challenger_damping=challenger_scores.damping,
        slots=windows.slots,
        keys=windows.keys,
    )


def finite(model: Forecaster, scores: Scores) -> bool:
    """Whether a model's held-out scores and every one of its weights are finite numbers.

    Windows poisoned with absurd values can drive a round's weights to infinities that saturate
    a gate and still give finite forecasts here, and to NaN somewhere else later: such a model
    is never promoted, however its held-out loss compares.
    """
    if not (math.isfinite(scores.loss) and math.isfinite(scores.point)):
        return False
    return all(bool(torch.isfinite(weights).all()) for weights in model.state_dict().values())


def adopt(engine: Engine, outcome: Outcome, resync_steps: int = 0) -> None:
    """Serve what a round concluded: its challenger if it won, as the next version (states
    re-synchronised over `resync_steps`), and the damping and interval calibration measured on the
    held-out steps for whichever model serves. Between batches, from the thread that steps."""
    if outcome.promoted:
        install(engine, outcome.challenger, engine.model_version + 1, resync_steps)
    if engine.damping is not None and outcome.damping is not None:
        now = engine.store.keys_of(outcome.slots)
        same = np.array([a == b for a, b in zip(now, outcome.keys)], bool)  # not a slot that changed hands
        engine.damping.set(outcome.slots[same], outcome.damping[torch.as_tensor(same)])
    engine.calibrate(outcome.widening)
