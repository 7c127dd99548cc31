"""A model that learns from its input defends itself: bounded targets, finite winners, the best expert to beat."""

import dataclasses

import numpy as np
import torch

from forecaster.build import seeded_model
from forecaster.learning import rounds, tbptt
from forecaster.serving import buffer as buffers
from forecaster.serving.engine import Engine

from support import mean_reverting, observations, retraining_pipeline

T0 = 1_600_000_000.0


def stepped(pipeline, data, batch=8) -> Engine:
    engine = Engine(pipeline, seeded_model(pipeline))
    keys, times, values = data
    for a in range(0, len(keys), batch):
        engine.step(observations(keys[a : a + batch], times[a : a + batch], values[a : a + batch]), now=0.0)
    return engine


def spiked(data, key="s0", step=60, size=1e12):
    """`data` with the value of series `key` at `step` replaced by an absurd `size`."""
    keys, times, values = data
    values = list(values)
    values[[i for i, k in enumerate(keys) if k == key][step]] = size
    return keys, times, values


def test_training_targets_are_clipped_to_the_moves_the_clipped_inputs_can_span():
    pipeline = retraining_pipeline()
    engine = stepped(pipeline, spiked(mean_reverting()))

    assert rounds.round_windows(engine, round_=1).targets is None  # left to the round's thread: not the loop's
    windows = rounds.with_targets(rounds.round_windows(engine, round_=1), pipeline)

    bound = buffers.target_bound(pipeline.scaling.clip)
    assert bound == 2 * pipeline.scaling.clip
    assert windows.targets.abs().max() == bound  # the spikes reach the bound, and no further


def test_targets_beyond_the_bound_are_clipped_and_the_rest_kept():
    actual = torch.tensor([[1.0, 2.0, 1e9, 3.0]], dtype=torch.float64)
    valid = torch.ones(1, 4, dtype=torch.bool)

    targets, _ = buffers.targets(actual, torch.ones(1, 4), valid, horizon=1, bound=16.0)

    assert targets[0, :, 0].tolist() == [1.0, 16.0, -16.0, 0.0]


def test_a_challenger_with_an_infinite_weight_is_never_promoted(monkeypatch):
    """An infinite bias saturates a gate: the forecasts stay finite and may even score well, the weights do not."""
    pipeline = retraining_pipeline()
    engine = stepped(pipeline, mean_reverting())
    assert rounds.round_windows(engine, round_=1).targets is None  # left to the round's thread: not the loop's
    windows = rounds.with_targets(rounds.round_windows(engine, round_=1), pipeline)
    fit = tbptt.fit

    def fit_then_saturate(model, *args, **kwargs):
        losses = fit(model, *args, **kwargs)
        with torch.no_grad():  # the reset gate of the first layer: sigmoid(inf) = 1, as if fully open
            model.layers[0].bias_ih[: model.spec.hidden_size] = float("inf")
        return losses

    monkeypatch.setattr(tbptt, "fit", fit_then_saturate)
    outcome = rounds.challenge(engine.model, windows, pipeline, round_=1)

    assert np.isfinite(outcome.challenger_loss) and np.isfinite(outcome.challenger_point_loss)
    assert outcome.challenger_loss < outcome.champion_loss and outcome.challenger_point_loss < outcome.expert_loss
    assert not outcome.promoted


def test_a_challenger_whose_held_out_loss_is_not_finite_is_never_promoted():
    pipeline = retraining_pipeline()
    model = seeded_model(pipeline)
    good = rounds.Scores(loss=0.5, point=0.5, widening=None, damping=None)

    assert rounds.finite(model, good)
    assert not rounds.finite(model, dataclasses.replace(good, loss=float("nan")))
    assert not rounds.finite(model, dataclasses.replace(good, point=float("inf")))


def level_shifting_sines(n_series=8, length=120, seed=0):
    """Daily sines on levels that wander: the seasonal level (last season moved to today's level) is nearly
    exact, the seasonal naive misses the wander and the last value misses the sine."""
    rng = np.random.default_rng(seed)
    level = np.cumsum(0.3 * rng.standard_normal((length, n_series)), axis=0)
    keys, times, values = [], [], []
    for step in range(length):
        for s in range(n_series):
            keys.append(f"s{s}")
            times.append(T0 + 3600.0 * step)
            values.append(10 * (s + 1) + level[step, s] + 3 * np.sin(2 * np.pi * (step + 3 * s) / 24))
    return keys, times, values


def test_with_the_combination_a_challenger_must_beat_its_seasonal_level_expert_too():
    pipeline = retraining_pipeline(combination=True)
    engine = stepped(pipeline, level_shifting_sines())
    assert rounds.round_windows(engine, round_=1).targets is None  # left to the round's thread: not the loop's
    windows = rounds.with_targets(rounds.round_windows(engine, round_=1), pipeline)

    alone = rounds.simple_losses(windows, pipeline.retraining.holdout, (24,))
    combined = rounds.simple_losses(windows, pipeline.retraining.holdout, (24,), level=True)

    assert "seasonal_level_24" not in alone
    assert combined["seasonal_level_24"] < min(alone.values())
    outcome = rounds.challenge(engine.model, windows, pipeline, round_=1)
    assert outcome.expert == "seasonal_level_24" and outcome.expert_loss == combined["seasonal_level_24"]


def test_the_seasonal_level_moves_last_season_to_the_current_level():
    actual = torch.tensor([[0.0, 1.0, 5.0, 6.0]], dtype=torch.float64)  # period 2: a season is (+0, +1)

    moves = rounds.seasonal_moves(actual, torch.ones(1, 4), period=2, horizon=1, level=True)

    # y[t + 1 - 2] - y[t - 2]: from t = 2 on; before it the last value (a zero move)
    assert moves[0, :, 0].tolist() == [0.0, 0.0, 1.0, 4.0]
