"""Online retraining: buffered windows, champion against challenger, installing and re-synchronising."""

import dataclasses

import numpy as np
import pytest
import torch

from forecaster.build import seeded_model
from forecaster.config import Retraining
from forecaster.learning import resync, rounds, tbptt
from forecaster.serving.engine import Engine

from support import (
    make_pipeline,
    mean_reverting,
    observations,
    ordered_quantiles_model,
    random_walks,
    retraining_pipeline,
    sines,
)

T0 = 1_600_000_000.0


def stepped(pipeline, data, model=None, batch=None) -> Engine:
    """An engine that has stepped through `data` (keys, times, values), `batch` records at a time."""
    engine = Engine(pipeline, model if model is not None else seeded_model(pipeline))
    keys, times, values = data
    batch = batch or len(keys)
    for a in range(0, len(keys), batch):
        engine.step(observations(keys[a : a + batch], times[a : a + batch], values[a : a + batch]), now=0.0)
    return engine


# -- the buffers -----------------------------------------------------------------------------------


def test_the_engine_buffers_exactly_the_inputs_it_fed_the_model():
    pipeline = retraining_pipeline(buffer=8, holdout=2, steps=1, window=6)
    data = random_walks(n_series=3, length=12)
    engine = stepped(pipeline, data, batch=5)

    prepared = {s.key: s for s in tbptt.prepare(pipeline, observations(*data))}
    for key, series in prepared.items():
        slot = engine.store.slots([key])
        inputs, actual, scale, valid = engine.buffer.read(torch.as_tensor(slot))
        kept = min(8, len(series))
        assert int(valid.sum()) == kept
        torch.testing.assert_close(inputs[0, -kept:], series.inputs[-kept:], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(actual[0, -kept:], series.actual[-kept:], rtol=1e-6, atol=0)
        torch.testing.assert_close(scale[0, -kept:], series.std[-kept:], rtol=1e-6, atol=1e-6)


def test_without_retraining_nothing_is_buffered():
    engine = stepped(make_pipeline(), random_walks())
    assert engine.buffer is None and "buffer" not in engine.store.parts


def test_a_series_evicted_and_replaced_starts_with_an_empty_window():
    engine = stepped(
        retraining_pipeline(max_series=2), (["a", "b"] * 3, [T0 + 3600 * (i // 2) for i in range(6)], [1.0] * 6)
    )

    engine.step(observations(["c"], [T0], [5.0]), now=0.0)  # evicts a, the least recently seen

    slot = torch.as_tensor(engine.store.slots(["c"]))
    assert int(engine.buffer.read(slot)[3].sum()) == 1


def test_the_buffers_are_checkpointed_with_the_state():
    pipeline = retraining_pipeline()
    engine = stepped(pipeline, sines(n_series=3, length=30))
    restored = Engine(pipeline, seeded_model(pipeline))

    restored.restore(engine.snapshot())

    for key in ("s0", "s1", "s2"):
        mine = engine.buffer.read(torch.as_tensor(engine.store.slots([key])))
        theirs = restored.buffer.read(torch.as_tensor(restored.store.slots([key])))
        for a, b in zip(mine, theirs):
            assert torch.equal(a, b)


# -- windows for training -------------------------------------------------------------------------


def test_training_series_hold_no_target_inside_the_holdout():
    pipeline = retraining_pipeline(buffer=64, holdout=8)
    engine = stepped(pipeline, sines(n_series=2, length=80))
    windows = rounds.collect(engine.store, engine.buffer, pipeline.horizon, max_series=10)

    series = rounds.training_series(windows, holdout=8, window=32)

    assert len(series) == 2
    for s in series:
        assert len(s) == 64 - 8
        last_target_step = torch.nonzero(s.mask)[:, 0] + torch.nonzero(s.mask)[:, 1] + 1
        assert last_target_step.max() < 64 - 8


def test_collect_takes_the_series_with_the_most_data_first():
    pipeline = retraining_pipeline()
    keys, times, values = sines(n_series=3, length=40)
    engine = stepped(pipeline, (keys + ["late"], times + [T0], values + [1.0]))

    windows = rounds.collect(engine.store, engine.buffer, pipeline.horizon, max_series=3)

    assert windows.valid.sum(dim=1).tolist() == [40, 40, 40]


def test_too_little_data_is_reported_not_trained_on():
    pipeline = retraining_pipeline()
    engine = stepped(pipeline, sines(n_series=2, length=20))
    windows = rounds.collect(engine.store, engine.buffer, pipeline.horizon, max_series=10)

    with pytest.raises(rounds.NotEnoughData, match="no series has 48 buffered steps yet .* the longest has 20"):
        rounds.training_series(windows, holdout=16, window=32)


# -- champion and challenger -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_round():
    pipeline = retraining_pipeline()
    engine = stepped(pipeline, mean_reverting(), batch=8)
    windows = rounds.collect(engine.store, engine.buffer, pipeline.horizon, max_series=100)
    return pipeline, engine, windows, rounds.challenge(engine.model, windows, pipeline, round_=1)


def test_a_challenger_trained_on_the_buffers_beats_untrained_weights_and_is_promoted(trained_round):
    _, _, _, outcome = trained_round
    assert outcome.promoted
    assert outcome.challenger_loss < outcome.champion_loss
    assert outcome.series == 8 and np.isfinite(outcome.training_loss)


def test_the_champion_is_left_untouched_by_a_round(trained_round):
    pipeline, engine, _, outcome = trained_round
    fresh = seeded_model(pipeline)
    for mine, original in zip(engine.model.parameters(), fresh.parameters()):
        assert torch.equal(mine, original)
    assert outcome.challenger is not engine.model


def test_a_challenger_short_of_the_required_improvement_is_rejected(trained_round):
    pipeline, engine, windows, _ = trained_round
    strict = dataclasses.replace(pipeline, retraining=dataclasses.replace(pipeline.retraining, min_improvement=0.99))

    outcome = rounds.challenge(engine.model, windows, strict, round_=1)

    assert not outcome.promoted


def test_a_round_trained_on_the_relative_mse_is_judged_by_it(trained_round):
    pipeline, engine, windows, _ = trained_round
    relative = dataclasses.replace(pipeline, training=dataclasses.replace(pipeline.training, loss="relative_mse"))

    outcome = rounds.challenge(engine.model, windows, relative, round_=1)

    holdout = pipeline.retraining.holdout
    assert outcome.champion_loss == rounds.heldout_scores(engine.model, windows, holdout, relative=True).loss
    assert outcome.champion_loss != rounds.heldout_loss(engine.model, windows, holdout)


def test_the_holdout_loss_scores_only_targets_in_the_newest_steps(trained_round):
    pipeline, engine, windows, _ = trained_round
    spoiled = dataclasses.replace(windows, targets=windows.targets.clone())
    W = windows.targets.shape[1]
    spoiled.targets[:, : W - 16 - pipeline.horizon] = 1e6  # targets that all land before the holdout

    assert rounds.heldout_loss(engine.model, spoiled, 16) == rounds.heldout_loss(engine.model, windows, 16)


# -- installing new weights ------------------------------------------------------------------------


def test_install_serves_the_new_weights_under_a_new_version(trained_round):
    pipeline, _, _, outcome = trained_round
    engine = stepped(pipeline, sines(n_series=2, length=30))
    engine.install(outcome.challenger, version=7)

    forecasts, _ = engine.step(observations(["s0"], [T0 + 3600 * 30], [11.0]), now=0.0)

    assert engine.model is outcome.challenger and forecasts.model_version == 7


def test_resync_makes_the_states_those_the_new_weights_would_have_reached(trained_round):
    pipeline, _, _, outcome = trained_round
    data = sines(n_series=3, length=50)
    old = stepped(pipeline, data, batch=3)
    new = stepped(pipeline, data, model=outcome.challenger, batch=3)

    resync.install(old, outcome.challenger, version=1, steps=pipeline.retraining.buffer)  # the whole history fits

    torch.testing.assert_close(old.store.state, new.store.state, rtol=1e-5, atol=1e-5)


def test_resync_replays_only_the_newest_steps():
    pipeline = retraining_pipeline()
    engine = stepped(pipeline, sines(n_series=2, length=40))
    model, slots = seeded_model(pipeline), engine.store.active
    inputs, _, _, valid = engine.buffer.read(torch.as_tensor(slots))

    states = resync.resync(model, engine.buffer, slots, steps=10)

    expected = resync.replay(model, inputs[:, -10:], valid[:, -10:])[1]
    torch.testing.assert_close(states, expected)


def test_install_refuses_a_model_of_another_shape():
    pipeline = retraining_pipeline()
    engine = Engine(pipeline, seeded_model(pipeline))
    with pytest.raises(ValueError, match="is not the pipeline's"):
        engine.install(seeded_model(make_pipeline(hidden_size=4)), version=1)


# -- quantiles -----------------------------------------------------------------------------------


def test_quantile_forecasts_are_emitted_in_order_around_the_point_forecast():
    pipeline = make_pipeline(quantiles=(0.1, 0.5, 0.9))
    engine = Engine(pipeline, seeded_model(pipeline))
    forecasts, _ = engine.step(observations(*random_walks(n_series=3, length=4)), now=0.0)

    levels = np.stack(list(forecasts.quantiles.values()), axis=1)  # (m, 3, horizon)
    assert list(forecasts.quantiles) == [0.1, 0.5, 0.9] and levels.shape == (len(forecasts), 3, pipeline.horizon)
    assert (np.diff(levels, axis=1) >= 0).all()
    first = next(forecasts.rows())
    assert list(first.quantiles) == [0.1, 0.5, 0.9] and len(first.quantiles[0.9]) == pipeline.horizon


def test_coverage_counts_actuals_inside_the_outer_interval_issued_a_step_before():
    pipeline = make_pipeline(quantiles=(0.1, 0.9))
    engine = Engine(pipeline, seeded_model(pipeline))
    first, _ = engine.step(observations(["a", "b"], [T0, T0], [1.0, 2.0]), now=0.0)
    low, high = first.quantiles[0.1][:, 0], first.quantiles[0.9][:, 0]
    inside, outside = (low[0] + high[0]) / 2, high[1] + 1.0

    engine.step(observations(["a", "b"], [T0 + 3600] * 2, [inside, outside]), now=0.0)

    assert engine.coverage.value == 0.5 and engine.coverage.inside.count == 2


# -- calibrating the intervals ---------------------------------------------------------------------


def test_the_conformal_widening_covers_the_nominal_share_of_held_out_targets():
    scores = torch.arange(1.0, 101.0)[:, None]  # 100 held-out scores at one horizon step: 1..100
    mask = torch.ones_like(scores, dtype=torch.bool)

    widening = rounds.conformal_widening(scores, mask, coverage=0.8)

    assert widening.tolist() == [81.0]  # the ceil(101 * 0.8) = 81st smallest: 81 of 100 scores <= it
    assert rounds.conformal_widening(scores, torch.zeros_like(mask), 0.8).tolist() == [0.0]


def test_a_round_measures_the_widening_each_model_needs_and_the_engine_adopts_it():
    # how the engine serves a widening: test_widening_moves_only_the_outermost_quantiles_by_that_many_scales
    pipeline = retraining_pipeline(quantiles=(0.1, 0.5, 0.9))
    engine = stepped(pipeline, mean_reverting(), batch=8)
    windows = rounds.collect(engine.store, engine.buffer, pipeline.horizon, max_series=100)
    outcome = rounds.challenge(engine.model, windows, pipeline, round_=1)

    rounds.adopt(engine, outcome, pipeline.retraining.resync_steps)

    assert outcome.promoted and outcome.widening is outcome.challenger_widening
    assert outcome.challenger_widening.shape == (pipeline.horizon,)
    assert torch.equal(engine.widening, outcome.challenger_widening)
    restored = Engine(pipeline, seeded_model(pipeline))
    restored.restore(engine.snapshot())
    assert torch.equal(restored.widening, engine.widening)


def test_the_engine_serves_the_mean_widening_of_the_last_calibration_rounds_and_a_checkpoint_keeps_them():
    pipeline = make_pipeline(quantiles=(0.1, 0.5, 0.9))
    pipeline = dataclasses.replace(pipeline, retraining=Retraining(calibration_rounds=2))
    engine = Engine(pipeline, seeded_model(pipeline))
    for value in (1.0, 2.0, 4.0):  # one round after another
        engine.calibrate(torch.full((pipeline.horizon,), value))
    assert engine.widening.tolist() == [3.0] * pipeline.horizon  # (2 + 4) / 2: the first round has aged out

    restored = Engine(pipeline, seeded_model(pipeline))
    restored.restore(engine.snapshot())
    restored.calibrate(torch.full((pipeline.horizon,), 6.0))
    assert restored.widening.tolist() == [5.0] * pipeline.horizon  # (4 + 6) / 2

    restored.calibrate(None)  # no quantile levels to widen: as the head says, and nothing remembered
    assert restored.widening is None
    restored.calibrate(torch.full((pipeline.horizon,), 1.0))
    assert restored.widening.tolist() == [1.0] * pipeline.horizon


def test_widening_moves_only_the_outermost_quantiles_by_that_many_scales():
    pipeline = make_pipeline(quantiles=(0.1, 0.5, 0.9))
    plain, widened = (
        Engine(pipeline, ordered_quantiles_model(pipeline)),
        Engine(pipeline, ordered_quantiles_model(pipeline)),
    )
    widened.calibrate(torch.full((pipeline.horizon,), 0.5))
    data = observations(*random_walks(n_series=3, length=6))

    a, _ = plain.step(data, now=0.0)
    b, _ = widened.step(data, now=0.0)

    np.testing.assert_allclose(b.values, a.values)
    np.testing.assert_allclose(b.quantiles[0.5], a.quantiles[0.5])
    # unwidened, the interval is 2 scales wide (the heads' shifts of -1 and +1); widened, 0.5 more on each side
    width = lambda f: f.quantiles[0.9] - f.quantiles[0.1]
    assert (b.quantiles[0.1] < a.quantiles[0.1]).all() and (b.quantiles[0.9] > a.quantiles[0.9]).all()
    np.testing.assert_allclose(width(b) / width(a), 1.5, rtol=1e-4)


# -- the simple forecasts a challenger must beat, and the young rounds -------------------------------


def test_a_challenger_that_beats_the_champion_but_not_the_seasonal_naive_is_rejected():
    pipeline = retraining_pipeline()
    engine = stepped(pipeline, sines(noise=0.01), batch=8)  # daily sines: yesterday's value is nearly exact
    windows = rounds.collect(engine.store, engine.buffer, pipeline.horizon, max_series=100)

    outcome = rounds.challenge(engine.model, windows, pipeline, round_=1)

    assert outcome.challenger_loss < outcome.champion_loss
    assert outcome.expert == "seasonal_naive_24" and outcome.challenger_point_loss > outcome.expert_loss
    assert not outcome.promoted


def test_the_simple_forecasts_are_scored_on_the_held_out_targets_as_the_network_is():
    pipeline = retraining_pipeline()
    engine = stepped(pipeline, sines(noise=0.0), batch=8)
    windows = rounds.collect(engine.store, engine.buffer, pipeline.horizon, max_series=100)

    losses = rounds.simple_losses(windows, pipeline.retraining.holdout, periods=(24,))

    assert losses["seasonal_naive_24"] < 1e-9  # a noiseless daily sine repeats exactly
    assert losses["persistence"] > 0.01


def test_young_rounds_start_at_a_minimal_window_then_each_time_the_buffered_steps_double():
    pipeline = retraining_pipeline(buffer=512, holdout=48, window=256)  # training.chunk 8
    minimal = rounds.minimal_steps(pipeline)
    due = [
        rounds.young_round_due(pipeline, started, longest)
        for started, longest in [(0, minimal - 1), (0, minimal), (1, minimal), (1, 2 * minimal), (3, 512), (4, 512)]
    ]

    assert minimal == 48 + 16
    assert due == [False, True, False, True, True, False]  # after young_rounds (4): by records only


def test_a_young_round_trains_longer_on_windows_as_long_as_the_buffer_holds():
    pipeline = retraining_pipeline(buffer=96, holdout=16, window=64)
    engine = stepped(pipeline, mean_reverting(length=50), batch=8)  # 50 buffered steps: short of 64 + 16
    windows = rounds.collect(engine.store, engine.buffer, pipeline.horizon, max_series=100)

    assert rounds.training_window(pipeline, windows, round_=1) == 50 - 16
    assert rounds.training_window(pipeline, windows, round_=5) == 64
    with pytest.raises(rounds.NotEnoughData):
        rounds.trainable(windows, 16, 64)
    outcome = rounds.challenge(engine.model, windows, pipeline, round_=1)
    assert outcome.series == 8
