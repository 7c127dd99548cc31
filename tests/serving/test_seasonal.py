"""Seasonal differencing (model.season): the network models z[t] = y[t] - y[t - P], the engine adds the season back."""

import dataclasses

import numpy as np
import pytest
import torch

from forecaster.build import load_model, model_spec, save_model, seeded_model
from forecaster.errors import ConfigError
from forecaster.learning import tbptt
from forecaster.serving import seasonal
from forecaster.serving.engine import Engine
from forecaster.serving.seasonal import SeasonRing

from support import make_pipeline, observations

PERIOD, HORIZON = 5, 3


def back(y: np.ndarray, t: int, lag: int) -> float:
    """y[t - lag], the first value standing in before the start."""
    return y[max(t - lag, 0)]


def test_the_difference_is_the_change_from_one_season_ago_and_from_the_first_value_before_that():
    y = np.array([3.0, 5.0, 4.0, 8.0, 6.0, 9.0, 7.0])
    np.testing.assert_array_equal(seasonal.difference(y, 3), [0.0, 2.0, 1.0, 5.0, 1.0, 5.0, -1.0])


def test_the_ring_gives_each_step_its_difference_and_the_shifts_to_last_seasons_values():
    y = np.random.default_rng(0).normal(size=(4 * PERIOD, 2))
    ring = SeasonRing(PERIOD)
    ring.allocate(4)
    slots = torch.tensor([3, 1])
    for t in range(len(y)):
        z, shift = ring.step(slots, torch.as_tensor(y[t]), HORIZON)
        np.testing.assert_allclose(z.numpy(), seasonal.difference(y, PERIOD)[t])
        expected = [
            [back(y[:, s], t, PERIOD - h) - back(y[:, s], t, PERIOD) for h in range(1, HORIZON + 1)] for s in range(2)
        ]
        np.testing.assert_allclose(shift.numpy(), expected)


def test_reading_again_gives_the_newest_steps_difference_and_shifts_without_changing_them():
    ring = SeasonRing(PERIOD)
    ring.allocate(2)
    slots = torch.tensor([0, 1])
    for t in range(7):
        stepped = ring.step(slots, torch.tensor([float(t), 10.0 * t]), HORIZON)
    for again in (ring.read(slots, HORIZON), ring.read(slots, HORIZON)):
        for a, b in zip(stepped, again):
            torch.testing.assert_close(a, b)


def test_a_reset_slot_starts_afresh_from_its_next_value():
    ring = SeasonRing(PERIOD)
    ring.allocate(1)
    slot = torch.tensor([0])
    for t in range(8):
        ring.step(slot, torch.tensor([float(t)]), HORIZON)
    ring.reset(np.array([0]))
    z, shift = ring.step(slot, torch.tensor([100.0]), HORIZON)
    assert float(z) == 0.0 and torch.all(shift == 0)


def test_a_grown_or_restored_ring_continues_exactly():
    y = np.arange(20, dtype=float)
    ring = SeasonRing(PERIOD)
    ring.allocate(2)
    slot = torch.tensor([1])
    for t in range(9):
        ring.step(slot, torch.tensor([y[t]]), HORIZON)
    copy = SeasonRing(PERIOD)
    copy.allocate(1)
    copy.restore(np.array([0]), ring.snapshot(np.array([1])))
    ring.grow(8)
    for t in range(9, 20):
        mine = ring.step(slot, torch.tensor([y[t]]), HORIZON)
        theirs = copy.step(torch.tensor([0]), torch.tensor([y[t]]), HORIZON)
        for a, b in zip(mine, theirs):
            torch.testing.assert_close(a, b)


# -- in the engine and in training -----------------------------------------------------------


def last_season_at_todays_level(y: np.ndarray) -> np.ndarray:
    """(T, HORIZON): y[t] + y[t + h - P] - y[t - P], what a network that outputs nothing forecasts."""
    return np.array(
        [[y[t] + back(y, t, PERIOD - h) - back(y, t, PERIOD) for h in range(1, HORIZON + 1)] for t in range(len(y))]
    )


def seasonal_pipeline(**kwargs):
    return make_pipeline(horizon=HORIZON, season=PERIOD, **kwargs)


def series(length=30, seed=1):
    """One series with a daily-like cycle of period PERIOD, a trend and noise, a record per hour."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    y = 100 + 10 * np.sin(2 * np.pi * t / PERIOD) + 0.5 * t + rng.normal(size=length)
    return observations(["a"] * length, 1_600_000_000 + 3600.0 * t, y), y


def test_a_network_that_outputs_nothing_forecasts_last_season_moved_to_todays_level():
    pipeline = seasonal_pipeline()
    model = seeded_model(pipeline)
    with torch.no_grad():
        for parameter in model.readout.parameters():
            parameter.zero_()
    batch, y = series()
    forecasts = Engine(pipeline, model).step(batch, now=0.0)[0].values
    np.testing.assert_allclose(forecasts, last_season_at_todays_level(y), rtol=1e-6)


def test_training_prepares_the_differenced_inputs_and_targets_the_engine_uses():
    pipeline = seasonal_pipeline()
    model = seeded_model(pipeline)
    batch, y = series()
    forecasts = Engine(pipeline, model).step(batch, now=0.0)[0].values
    (prepared,) = tbptt.prepare(pipeline, batch)

    z = seasonal.difference(y.astype(np.float32).astype(np.float64), PERIOD)
    np.testing.assert_allclose(prepared.actual.numpy(), z)
    np.testing.assert_allclose(
        prepared.targets[:-HORIZON, 0].numpy(),
        (z[1 : -HORIZON + 1] - z[:-HORIZON]) / prepared.std[:-HORIZON].numpy(),
        rtol=1e-5,
    )
    with torch.no_grad():
        outputs, _ = model(prepared.inputs.unsqueeze(1), model.initial_state(1))
        head = model.head(outputs, prepared.inputs.unsqueeze(1))[:, 0, :HORIZON]
    expected = last_season_at_todays_level(y) + (prepared.std[:, None] * head).double().numpy()
    np.testing.assert_allclose(forecasts, expected, rtol=1e-5)


def test_quantiles_move_with_the_season_like_the_point_forecast():
    pipeline = seasonal_pipeline(quantiles=(0.1, 0.9))
    model = seeded_model(pipeline)
    with torch.no_grad():  # the network says: no correction, and one scale either side
        model.readout.weight.zero_()
        model.readout.bias.copy_(torch.tensor([0.0] * HORIZON + [-1.0] * HORIZON + [1.0] * HORIZON))
    batch, y = series()
    forecasts = Engine(pipeline, model).step(batch, now=0.0)[0]
    np.testing.assert_allclose(forecasts.values, last_season_at_todays_level(y), rtol=1e-6)
    below, above = forecasts.values - forecasts.quantiles[0.1], forecasts.quantiles[0.9] - forecasts.values
    assert np.all(below > 0)
    np.testing.assert_allclose(below, above, rtol=1e-4)


def test_a_checkpoint_keeps_each_series_season():
    pipeline = seasonal_pipeline()
    batch, y = series(length=40)
    first = take(batch, range(20)), take(batch, range(20, 40))
    whole = Engine(pipeline, seeded_model(pipeline))
    whole.step(first[0], now=0.0)
    resumed = Engine(pipeline, seeded_model(pipeline))
    resumed.restore(whole.snapshot())
    np.testing.assert_allclose(resumed.step(first[1], now=0.0)[0].values, whole.step(first[1], now=0.0)[0].values)


def take(batch, rows):
    rows = np.asarray(list(rows))
    return observations([batch.keys[i] for i in rows], batch.times[rows], batch.values[rows])


def test_the_retraining_buffer_keeps_the_difference_so_rounds_learn_what_the_network_forecasts():
    pipeline = seasonal_pipeline()
    pipeline = dataclasses.replace(
        pipeline,
        retraining=dataclasses.replace(pipeline.retraining, enabled=True, buffer=64, holdout=8),
        training=dataclasses.replace(pipeline.training, window=16, chunk=8),
    )
    engine = Engine(pipeline, seeded_model(pipeline))
    batch, y = series(length=40)
    engine.step(batch, now=0.0)
    _, actual, _, valid = engine.buffer.read(torch.tensor([0]))
    np.testing.assert_allclose(
        actual[valid].numpy(), seasonal.difference(y.astype(np.float32).astype(np.float64), PERIOD), rtol=1e-6
    )


def test_weights_trained_without_a_season_are_refused_by_a_pipeline_with_one(tmp_path):
    plain = make_pipeline(horizon=HORIZON)
    path = save_model(tmp_path / "plain.pt", seeded_model(plain))
    with pytest.raises(ConfigError, match=r"another model than the pipeline configures \(season 0 -> 5\)"):
        load_model(path, model_spec(seasonal_pipeline()))
