"""The online combination: experts by time, ML-Poly weights from matured targets only, and its checkpoint."""

import dataclasses

import numpy as np
import pytest

from forecaster.build import seeded_model
from forecaster.serving.aggregation import OnlineLinear
from forecaster.serving.cadence import seasons, step_numbers
from forecaster.serving.combination import Combination, History, MLPoly, Pending, expert_names
from forecaster.serving.engine import Engine

from support import make_pipeline, observations

HOUR = 3600.0
T0 = 1_700_000_000.0 - (1_700_000_000.0 % 86_400)  # a midnight


def daily(n_series: int, length: int, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """(length, n_series) hourly values: daily sines of different phases and levels, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)[:, None]
    level = rng.uniform(10, 1000, n_series)[None, :]
    phase = rng.uniform(0, 24, n_series)[None, :]
    return level * (1 + 0.2 * np.sin(2 * np.pi * (t + phase) / 24) + noise * rng.standard_normal((length, n_series)))


def run(combination: Combination, values: np.ndarray, network=None, experts: dict | None = None) -> list[np.ndarray]:
    """Step every row of `values` (length, n) through `combination`, one wave per time step; the combined
    forecasts, and into `experts` (name -> list) each expert's."""
    length, n = values.shape
    combination.history.allocate(n), combination.pending.allocate(n)
    slots, served = np.arange(n), []
    for t in range(length):
        y, steps = values[t], np.full(n, t)
        guess = np.repeat(y[:, None], combination.horizon, 1) if network is None else network(t, y)
        combination.learner(0).remaining()  # as the engine does: an epoch that is complete is learnt from first
        served.append(combination.step(0, slots, steps, y, guess)[0])
        combination.learner(0).count(n)
        if experts is not None:
            for name, forecasts in zip(
                combination.names, combination.expert_forecasts(0, slots, steps, y, guess).transpose(1, 0, 2)
            ):
                experts.setdefault(name, []).append(forecasts)
    return served


def scaled_losses(combination: Combination, values: np.ndarray, served, experts, step: int, start: int):
    """Mean squared error at `step` after `start`, in units of each series' mean absolute change, per method."""
    scale = np.abs(np.diff(values, axis=0)).mean(axis=0)
    losses = {}
    for name, forecasts in [("combined", served), *experts.items()]:
        errors = [(forecasts[t - step][:, step - 1] - values[t]) / scale for t in range(start, len(values))]
        losses[name] = float(np.mean(np.square(errors)))
    return losses


def test_the_seasons_are_the_day_and_the_week_in_whole_steps():
    assert seasons("1h") == (24, 168)
    assert seasons("30m") == (48, 336)
    assert seasons("1d") == (7,)
    assert seasons("1b") == (5,)
    assert seasons("7m") == (1440,)  # a day is not a whole number of 7-minute steps; a week is
    assert seasons("1m") == (1440,)  # a week of minutes is longer than MAX_SEASON
    assert seasons("13m") == ()  # neither is


def test_step_numbers_round_to_the_cadence_grid():
    times = np.array([0.0, 3600.0, 3700.0, 5300.0])
    assert step_numbers(times, times, "1h").tolist() == [0, 1, 1, 1]


def test_history_finds_values_by_step_and_reads_a_gap_as_missing():
    history = History(length=6)
    history.allocate(1)
    for step, value in [(0, 10.0), (1, 11.0), (4, 14.0)]:  # steps 2 and 3 missing
        history.write(np.array([0]), np.array([step]), np.array([value]))
    found = history.lookup(np.array([0]), np.array([[0, 1, 2, 3, 4, 5]]))[0]
    np.testing.assert_array_equal(found, [10.0, 11.0, np.nan, np.nan, 14.0, np.nan])
    assert history.scale[0] == pytest.approx(1.0)  # only the change from step 0 to 1 counts, not the gap's


def test_before_any_target_matures_every_expert_weighs_alike():
    weights = MLPoly(horizon=3, experts=4, discount=0.999).weights()
    np.testing.assert_allclose(weights, 0.25)


def test_the_weights_move_to_the_expert_that_is_right():
    combination = Combination("1h", horizon=6)
    values = daily(20, 600)
    rng = np.random.default_rng(1)
    served = run(combination, values, network=lambda t, y: y[:, None] + 50 * rng.standard_normal((len(y), 6)))
    weights = combination.learner(0).weights.weights()
    names = combination.names
    right = [names.index(name) for name in ("seasonal_naive_24", "seasonal_drift_24", "linear")]
    assert weights[:, names.index("network")].max() < 0.05  # a network that is noise loses its weight
    assert (weights[:, right].sum(axis=1) > 0.5).all()  # a daily sine: last day's value, drifting or not
    assert len(served) == 600


def test_the_combination_is_no_worse_than_its_best_expert_within_the_rules_slack():
    combination = Combination("1h", horizon=4)
    values = daily(30, 1500, noise=0.02)
    rng = np.random.default_rng(2)
    experts = {}
    served = run(combination, values, lambda t, y: y[:, None] + 5 * rng.standard_normal((len(y), 4)), experts)
    for step in (1, 4):
        losses = scaled_losses(combination, values, served, experts, step, start=200)
        best = min(v for k, v in losses.items() if k != "combined")
        assert losses["combined"] <= 1.05 * best, (step, losses)


def test_no_look_ahead_a_different_future_leaves_every_earlier_forecast_and_weight_unchanged():
    values = daily(5, 400)
    changed = values.copy()
    changed[300:] *= 3.0
    first, second = Combination("1h", horizon=6), Combination("1h", horizon=6)
    a = run(first, values[:300])
    b = run(second, changed)
    for t in range(300):
        np.testing.assert_array_equal(a[t], b[t])
    assert not np.array_equal(first.learner(0).weights.weights(), second.learner(0).weights.weights())
    truncated = Combination("1h", horizon=6)
    run(truncated, changed[:300])
    np.testing.assert_array_equal(truncated.learner(0).weights.weights(), first.learner(0).weights.weights())


def test_an_engine_with_the_combination_restores_from_its_checkpoint_exactly():
    pipeline = make_pipeline(horizon=6, combination=True)
    values = daily(4, 200)
    keys = [f"s{i}" for i in range(4)]

    def batch(rows):
        return observations(
            [k for _ in rows for k in keys],
            [T0 + HOUR * t for t in rows for _ in keys],
            [values[t, i] for t in rows for i in range(4)],
        )

    whole = Engine(pipeline, seeded_model(pipeline))
    whole.step(batch(range(0, 150)), now=0.0)
    snapshot = whole.snapshot()
    restored = Engine(pipeline, seeded_model(pipeline))
    restored.restore(snapshot)
    after_whole, _ = whole.step(batch(range(150, 200)), now=0.0)
    after_restored, _ = restored.step(batch(range(150, 200)), now=0.0)
    np.testing.assert_array_equal(after_whole.values, after_restored.values)
    np.testing.assert_array_equal(
        whole.combination.learner(0).weights.weights(), restored.combination.learner(0).weights.weights()
    )


def test_before_any_target_matures_the_quantiles_sit_around_the_combined_point_at_half_the_networks_spread():
    plain = make_pipeline(horizon=3, quantiles=(0.1, 0.5, 0.9))
    combined = dataclasses.replace(plain, combination=dataclasses.replace(plain.combination, enabled=True))
    model = seeded_model(plain)
    data = observations(["a", "a", "b"], [T0, T0 + HOUR, T0], [10.0, 12.0, 50.0])
    network, _ = Engine(plain, model).step(data, now=0.0)
    served, _ = Engine(combined, model).step(data, now=0.0)

    assert not np.allclose(served.values, network.values)
    for level in (0.1, 0.9):  # uniform weights over the network's offset and the empirical one, still 0
        spread = network.quantiles[level] - network.values
        np.testing.assert_allclose(served.quantiles[level] - served.values, spread / 2, rtol=1e-4, atol=1e-5)


def test_the_served_intervals_learn_to_cover_their_nominal_share_whatever_the_network_says():
    combination = Combination("1h", horizon=6, levels=(0.1, 0.5, 0.9))
    values = daily(n_series=20, length=1500, noise=0.1)
    length, n = values.shape
    combination.history.allocate(n), combination.pending.allocate(n)
    slots, inside = np.arange(n), []
    issued = []
    for t in range(length):
        y = values[t]
        network = np.repeat(y[:, None], 6, 1)
        too_narrow = network[:, None, :] + np.array([-1e-3, 0.0, 1e-3])[None, :, None]  # an untrained head
        combination.learner(0).remaining()
        _, quantiles = combination.step(0, slots, np.full(n, t), y, network, too_narrow)
        combination.learner(0).count(n)
        if len(issued) >= 3:  # the 80% interval issued three steps ago for this step
            lower, upper = issued[-3][:, 0, 2], issued[-3][:, 2, 2]
            inside.append((lower <= y) & (y <= upper))
        issued.append(quantiles)

    coverage = np.mean(inside[-500:])
    assert 0.75 <= coverage <= 0.85
    weights = combination.learner(0).quantiles.served  # (levels, horizon, [network, empirical])
    assert (weights[[0, 2], :, 1] > 0.9).all()  # the outer levels rely on the errors, not the head


def test_a_gap_is_scored_against_the_observation_at_the_forecast_steps_own_time():
    combination = Combination("1h", horizon=3, scored_series=1)
    combination.history.allocate(1), combination.pending.allocate(1)
    slot = np.array([0])
    for step, value in [(0, 1.0), (1, 2.0), (2, 3.0)]:
        combination.step(0, slot, np.array([step]), np.array([value]), np.array([[value] * 3]))
    learner = combination.learner(0)
    before = learner.scored.copy()
    combination.step(0, slot, np.array([5]), np.array([6.0]), np.array([[6.0] * 3]))  # steps 3 and 4 missing
    assert (learner.scored - before).tolist() == [0, 0, 1]  # only the issue at step 2, 3 steps ahead, was scored


def test_the_experts_are_named_in_order():
    assert expert_names((24, 168)) == (
        "network",
        "persistence",
        "seasonal_naive_24",
        "seasonal_naive_168",
        "seasonal_level_24",
        "seasonal_level_168",
        "seasonal_drift_24",
        "seasonal_drift_168",
        "linear",
    )


def test_the_drift_learns_how_far_each_season_runs_above_the_last():
    history = History(length=10, periods=(4,))
    history.allocate(1)
    slot = np.array([0])
    for step in range(40):  # a season of 4 steps, each season 3 above the last
        history.write(slot, np.array([step]), np.array([float(step % 4) + 3.0 * (step // 4)]))
    assert history.drift[0, 0] == pytest.approx(3.0, rel=0.01)  # from 0, nine half-lives ago


def test_a_missing_value_or_one_a_gap_hides_leaves_the_drift_where_it_is():
    history = History(length=10, periods=(4,))
    history.allocate(1)
    slot = np.array([0])
    for step in range(8):
        history.write(slot, np.array([step]), np.array([float(step // 4)]))  # the second season 1 above the first
    drift = history.drift[0, 0]
    history.write(slot, np.array([8]), np.array([np.nan]))  # missing
    history.write(slot, np.array([20]), np.array([100.0]))  # its value a season back, step 16, was never seen
    assert history.drift[0, 0] == drift > 0


def test_the_seasonal_drift_expert_moves_last_seasons_value_by_the_drift_per_season_back():
    combination = Combination("1h", horizon=30)
    values = np.arange(24 * 9, dtype=float)[:, None] % 24 + 10.0 * (np.arange(24 * 9)[:, None] // 24)  # +10 a day
    experts = {}
    run(combination, values, experts=experts)
    last = len(values) - 1
    then = values[last + np.arange(1, 31) - 24 * np.ceil(np.arange(1, 31) / 24).astype(int), 0]
    days_back = np.ceil(np.arange(1, 31) / 24)
    drift = combination.history.drift[0, combination.periods.index(24)]
    assert drift == pytest.approx(10.0, rel=0.05)
    np.testing.assert_allclose(experts["seasonal_drift_24"][last][0], then + days_back * drift)


def test_pending_forecasts_of_a_checkpoint_with_other_experts_are_dropped_not_misread():
    before = Pending(slots=4, depth=3, experts=7, horizon=3, features=7)  # a day and a week, before the drift
    before.allocate(2)
    before.issued[:] = 2
    now = Pending(slots=4, depth=3, experts=9, horizon=3, features=9)
    now.allocate(2)
    now.restore(np.array([0, 1]), before.snapshot(np.array([0, 1])))
    assert (now.issued == 0).all()


def test_a_checkpoint_from_before_the_drift_restores_the_rest_with_the_drift_at_zero():
    history = History(length=30, periods=(24,))
    history.allocate(2)
    for step in range(28):
        history.write(np.array([0, 1]), np.array([step, step]), np.array([step, 2.0 * step]))
    old = {name: kept for name, kept in history.snapshot(np.array([0, 1])).items() if name != "drift"}
    restored = History(length=30, periods=(24,))
    restored.allocate(2)
    restored.restore(np.array([0, 1]), old)
    np.testing.assert_array_equal(restored.values, history.values)
    assert (restored.drift == 0.0).all() and (history.drift > 0).all()


def hourly_batch(values: np.ndarray, rows, partitions=None):
    """Observations of every series of `values` (length, n) at the given rows, row after row."""
    n = values.shape[1]
    data = observations(
        [f"s{i}" for _ in rows for i in range(n)],
        [T0 + HOUR * t for t in rows for _ in range(n)],
        [values[t, i] for t in rows for i in range(n)],
    )
    if partitions is None:
        return data
    return dataclasses.replace(data, partitions=np.array([partitions[i] for _ in rows for i in range(n)]))


def test_the_forecasts_do_not_depend_on_how_the_stream_was_cut_into_batches():
    pipeline = make_pipeline(horizon=6, combination=True)
    model = seeded_model(pipeline)
    values = daily(5, 120)
    whole, _ = Engine(pipeline, model).step(hourly_batch(values, range(120)), now=0.0)
    engine, pieces = Engine(pipeline, model), []
    for start in range(0, 120, 7):
        pieces.append(engine.step(hourly_batch(values, range(start, min(120, start + 7))), now=0.0)[0].values)
    # equal up to the rounding of sums taken in another order
    np.testing.assert_allclose(np.concatenate(pieces), whole.values, rtol=1e-12, atol=0)


def test_each_input_partition_learns_its_own_weights():
    pipeline = make_pipeline(horizon=4, combination=True)
    engine = Engine(pipeline, seeded_model(pipeline))
    values = daily(4, 200)
    values[:, 2:] = 500 + np.cumsum(np.random.default_rng(3).standard_normal((200, 2)), axis=0)  # random walks
    engine.step(hourly_batch(values, range(200), partitions=[0, 0, 1, 1]), now=0.0)
    sines, walks = (engine.combination.learner(p).weights.weights() for p in (0, 1))
    names = engine.combination.names
    assert sorted(engine.combination.learners) == [0, 1]
    assert walks[0, names.index("persistence")] > sines[0, names.index("persistence")]


def test_the_linear_expert_is_the_last_value_until_fitted_on_ten_targets_a_feature():
    linear = OnlineLinear(horizon=1, features=2, discount=1.0)
    x = np.array([[[1.0, 2.0]]])
    gram, moment = np.array([[[5.0, 1.0], [1.0, 5.0]]]), np.array([[3.0, 4.0]])

    linear.update(gram, moment, samples=np.array([19]))
    before = linear.predict(x)
    linear.update(0 * gram, 0 * moment, samples=np.array([1]))  # the 20th target: 10 for each of 2 features

    assert before.tolist() == [[0.0]] and linear.predict(x)[0, 0] != 0.0


def test_a_wild_morning_ramp_does_not_throw_the_forecast_below_zero():
    """Taylor's first hours: a quiet night, then the morning ramp. Fitted on a handful of targets, the linear
    expert once extrapolated it to far below zero, and the uniform early weights served half of that."""
    night = [22262, 21756, 22247, 22759, 22549, 22313, 22128, 21860, 21751, 21336, 21363, 22176]
    values = np.array(night + [24649, 27466, 31020, 33500, 35000], float)[:, None]
    combination = Combination("30m", horizon=6)

    served = run(combination, values)

    assert min(f.min() for f in served) > 0.5 * values.min()
