"""The accuracy benchmark's online forecaster: the daemon's rounds in stream order, without look-ahead."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from forecaster.evaluation import network, prequential
from forecaster.serving import seasonal

from support import benchmark

accuracy = benchmark("accuracy")

LEADING = 2016  # taylor's first half: what the network is pretrained on


@pytest.fixture
def small(monkeypatch):
    """taylor with a tiny network that retrains every 24 rows, so a test sees several rounds in seconds."""
    protocol = accuracy.PROTOCOLS["taylor"]
    network = replace(
        protocol.network,
        hidden_size=8,
        steps=4,
        window=96,
        chunk=24,
        buffer=160,
        holdout=24,
        every=24,
        retrain_steps=2,
        young_steps=2,
        resync_steps=48,
    )
    monkeypatch.setitem(accuracy.PROTOCOLS, "taylor", replace(protocol, network=network))
    monkeypatch.setattr(accuracy, "_PRETRAINED", {})
    return accuracy.load_stream("taylor")


def online(variant="online"):
    return accuracy.forecaster_method("taylor", 48, variant)


def test_forecasts_up_to_an_origin_do_not_change_when_later_rows_do(small):
    t = LEADING + 100
    y = small.y.copy()
    y[t + 1 :] *= 1.5
    altered = replace(small, y=y)
    at = np.arange(LEADING - 1, LEADING + 150, 5)
    original_method, altered_method = online(), online()
    original = prequential.run(original_method, small, at, 48)
    changed = prequential.run(altered_method, altered, at, 48)
    assert original_method.rounds >= 4  # rounds after rows 2040, 2064, 2088, 2112 trained before origin t
    before = at <= t
    np.testing.assert_array_equal(original[before], changed[before])
    np.testing.assert_array_equal(
        np.array(original_method.intervals)[before], np.array(altered_method.intervals)[before]
    )
    assert not np.allclose(original[~before], changed[~before])  # the altered rows do reach later forecasts


def test_rounds_follow_the_rows_learnt_not_how_they_arrive(small):
    rows = small[: LEADING + 72]
    at_once, one_by_one = online(), online()
    at_once.learn(rows)
    for i in range(len(rows)):
        one_by_one.learn(rows[i : i + 1])
    assert at_once.rounds == one_by_one.rounds == 3
    assert at_once.promotions == one_by_one.promotions
    np.testing.assert_allclose(at_once.forecast(48), one_by_one.forecast(48), rtol=1e-5)


def test_no_resync_promotes_the_same_weights_but_keeps_the_old_states(small, monkeypatch):
    protocol = accuracy.PROTOCOLS["taylor"]  # young rounds long enough to promote: what is compared comes after
    monkeypatch.setitem(
        accuracy.PROTOCOLS, "taylor", replace(protocol, network=replace(protocol.network, young_steps=200))
    )
    rows = small[: LEADING + 72]
    synced, unsynced = online(), online("online_no_resync")
    synced.learn(rows)
    unsynced.learn(rows)
    assert synced.engine.pipeline.retraining.resync_steps == 48
    assert unsynced.engine.pipeline.retraining.resync_steps == 0
    assert synced.rounds == unsynced.rounds == 3
    assert synced.promotions == unsynced.promotions > 0
    for name, weights in synced.engine.model.state_dict().items():
        assert (weights == unsynced.engine.model.state_dict()[name]).all()
    assert not torch.equal(synced.engine.store.state, unsynced.engine.store.state)


def test_frozen_and_online_start_from_the_same_pretrained_weights(small):
    frozen, retrained = accuracy.forecaster_method("taylor", 48, "frozen_offline"), online()
    for name, weights in frozen.engine.model.state_dict().items():
        assert (weights == retrained.engine.model.state_dict()[name]).all()
    assert frozen.engine.buffer is None and retrained.engine.buffer is not None


def test_coverage80_is_filled_for_the_forecaster_and_null_for_point_forecasts(small):
    rows = accuracy.evaluate_dataset(
        accuracy.PROTOCOLS["taylor"],
        ["seasonal_naive", "forecaster"],
        replace(accuracy.QUICK, steps=4),
        log=lambda *_: None,
    )
    coverage = {(row["method"], row["horizon"]): row["coverage80"] for row in rows}
    assert all(coverage[("seasonal_naive", h)] is None for h in range(1, 49))
    assert all(0.0 <= coverage[("forecaster", h)] <= 1.0 for h in range(1, 49))


def test_lags_are_past_values_of_each_channel():
    y = np.arange(20.0).reshape(10, 2)  # two channels
    lags = network.Lags(back=(3, 1), channels=2)
    first, second = lags(y[:6]), lags(y[6:])  # what arrives later does not change what came first
    together = np.concatenate([first, second])  # (10, 2, 2)
    for t in range(3, 10):
        np.testing.assert_array_equal(together[t, :, 0], y[t - 3])
        np.testing.assert_array_equal(together[t, :, 1], y[t - 1])
    np.testing.assert_array_equal(together[0, :, 1], y[0])  # no history yet: the row's own value


def test_with_a_season_lags_are_of_the_seasonal_difference_the_network_models():
    y = (np.arange(30.0) ** 2).reshape(15, 2)
    lags = network.Lags(back=(2, 1), channels=2, season=4)
    together = np.concatenate([lags(y[:7]), lags(y[7:])])  # (15, 2, 2)
    z = seasonal.difference(y, 4)
    for t in range(2, 15):
        np.testing.assert_array_equal(together[t, :, 0], z[t - 2])
        np.testing.assert_array_equal(together[t, :, 1], z[t - 1])
    np.testing.assert_array_equal(together[0], 0.0)  # no history yet: the row's own difference, 0


def test_seasonal_lags_reach_one_period_before_each_step_ahead():
    assert accuracy.seasonal(24, (1, 2, 12, 24)) == (23, 22, 12)  # y[t + 24 - 24] is the row itself: left out


def test_a_lag_of_0_steps_is_refused():
    with pytest.raises(ValueError, match="at least 1 step"):
        network.Lags(back=(0, 3), channels=1)


def test_a_validation_protocol_sees_only_rows_before_the_test_part():
    protocol = accuracy.VALIDATION["etth2_validation"]
    stream = accuracy.load_stream("etth2_validation")
    assert len(stream) == int(0.25 * 17420)
    assert accuracy.split(protocol, len(stream))[0] == int(0.2 * 17420)
    np.testing.assert_array_equal(stream.y, accuracy.load_stream("etth2").y[: len(stream)])


def row(dataset, horizon, method, **metrics):
    return {"dataset": dataset, "horizon": horizon, "method": method, "coverage80": None, **metrics}


def test_the_report_marks_a_target_missed_where_the_forecaster_is_not_below_the_baseline():
    rows = [row("etth2", h, "persistence", mse=1.0) for h in (24, 48, 96)]
    rows += [row("etth2", h, "forecaster", mse=0.9 if h < 96 else 1.0, coverage80=0.8) for h in (24, 48, 96)]
    verdicts = {name: (met, numbers) for name, met, numbers in accuracy.targets(rows)}
    met, numbers = verdicts["etth2: MSE below persistence at 24, 48, 96"]
    assert met is False and numbers == "missed at 1 of 3: etth2 96: 1 vs 1"
    assert verdicts["80% intervals cover 75% to 85% of actuals, every forecaster row"][0] is True
    assert verdicts["taylor: mean MAPE over steps 1-48 at most 1.8%"][0] is None  # taylor was not run


def test_ablations_compare_each_variant_with_the_forecaster_on_the_summary_horizons():
    rows = [
        row("greensboro_temp", h, m, mae=mae)
        for h in (1, "1-24")
        for m, mae in (("forecaster", 2.0), ("forecaster_no_resync", 2.2), ("persistence", 4.0))
    ]
    assert accuracy.ablations(rows) == ["greensboro_temp 1-24: forecaster_no_resync mae 2.2 vs forecaster 2 (+10.0%)"]
