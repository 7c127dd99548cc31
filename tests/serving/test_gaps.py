"""Missing observations: the network steps over them with its own forecasts, and nothing is scored or
learnt against a step that was not observed."""

import numpy as np
import pytest
import torch

from forecaster.build import seeded_model
from forecaster.config import Calendar
from forecaster.serving import buffer as buffers
from forecaster.serving import records
from forecaster.serving.engine import Engine
from forecaster.serving.gaps import missing_steps

from support import make_pipeline, observations, retraining_pipeline

HOUR = 3600.0
T0 = 1_700_000_000.0 - (1_700_000_000.0 % 86_400)  # a midnight (a Tuesday)
HORIZON = 4


def series(length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return 50 + 10 * np.sin(2 * np.pi * t / 24) + rng.standard_normal(length)


def with_gaps(length: int, missing: float, longest: int, seed: int = 1) -> np.ndarray:
    """Indices of the observed steps of 0..length-1: runs of up to `longest` missing steps, the first and last kept."""
    rng = np.random.default_rng(seed)
    kept, t = [0], 1
    while t < length - 1:
        if rng.random() < missing:
            t += int(rng.integers(1, longest + 1))
        if t < length - 1:
            kept.append(t)
        t += 1
    return np.array(kept + [length - 1])


def stepped_one_by_one(engine: Engine, steps: np.ndarray, values: np.ndarray, key: str = "a"):
    """Step each observation as its own batch; the forecasts (n, horizon)."""
    out = []
    for t, y in zip(steps.tolist(), values.tolist()):
        forecasts, rejected = engine.step(observations([key], [T0 + HOUR * t], [y]), now=0.0)
        assert not rejected
        out.append(forecasts.values[0])
    return np.array(out)


def test_missing_steps_counts_the_whole_steps_between_a_record_and_its_predecessor():
    times = T0 + HOUR * np.array([1.0, 3.0, 7.4, 7.6, 9.0])
    previous = T0 + HOUR * np.array([0.0, 1.0, 3.0, 3.0, -np.inf])

    assert missing_steps(times, times, previous, "1h").tolist() == [0, 1, 3, 4, 0]


def test_business_days_count_only_business_days():
    friday, monday, wednesday = T0 + 3 * 86_400, T0 + 6 * 86_400, T0 + 8 * 86_400
    times, previous = np.array([monday, wednesday]), np.array([friday, friday])

    assert missing_steps(times, times, previous, "1b").tolist() == [0, 2]


def test_a_series_with_gaps_is_forecast_as_the_same_series_with_its_gaps_filled_by_its_own_forecasts():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=True)
    y = series(200)
    kept = with_gaps(200, missing=0.15, longest=HORIZON)
    gappy = Engine(pipeline, seeded_model(pipeline))
    forecasts = stepped_one_by_one(gappy, kept, y[kept])

    filled = y.copy()  # every missing step at the forecast issued from the last observation before it
    for i, (t, following) in enumerate(zip(kept[:-1], kept[1:])):
        filled[t + 1 : following] = forecasts[i, : following - t - 1]
    dense = Engine(pipeline, seeded_model(pipeline))
    dense_forecasts = stepped_one_by_one(dense, np.arange(200), filled[:200])

    assert len(kept) < 180  # the stream did miss steps
    np.testing.assert_allclose(forecasts, dense_forecasts[kept], rtol=1e-5, atol=1e-4)


def test_without_filling_the_state_steps_straight_over_a_gap():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=False, calendar=Calendar())  # no features of the time
    y = series(60)
    kept = with_gaps(60, missing=0.2, longest=3)
    by_time = Engine(pipeline, seeded_model(pipeline))
    by_record = Engine(pipeline, seeded_model(pipeline))

    gappy = stepped_one_by_one(by_time, kept, y[kept])
    contiguous = stepped_one_by_one(by_record, np.arange(len(kept)), y[kept])

    assert "last_forecasts" not in by_time.store.parts
    np.testing.assert_array_equal(gappy, contiguous)


@pytest.mark.parametrize("fill", [True, False])
@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_the_same_stream_with_gaps_and_null_readings_gives_the_same_forecasts_however_it_is_batched(batch, fill):
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=fill, combination=True, quantiles=(0.1, 0.5, 0.9))
    rng = np.random.default_rng(3)
    keys, times, values = [], [], []
    for t in range(120):
        for s in range(3):
            if rng.random() < 0.85:
                value = 100.0 * (s + 1) + 5 * np.sin(t / 4) + rng.standard_normal()
                keys.append(f"s{s}")
                times.append(T0 + HOUR * t)
                values.append(np.nan if t > 0 and rng.random() < 0.1 else value)
    reference = Engine(pipeline, seeded_model(pipeline))
    one_by_one = np.concatenate(
        [reference.step(observations([k], [t], [v]), now=0.0)[0].values for k, t, v in zip(keys, times, values)]
    )
    engine = Engine(pipeline, seeded_model(pipeline))
    batched = []
    for a in range(0, len(keys), batch):
        b = a + batch
        batched.append(engine.step(observations(keys[a:b], times[a:b], values[a:b]), now=0.0)[0].values)

    np.testing.assert_allclose(np.concatenate(batched), one_by_one, rtol=1e-5, atol=1e-4)


def test_filled_steps_are_never_forecast_and_forecast_times_follow_the_observation():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=True)
    engine = Engine(pipeline, seeded_model(pipeline))
    times = T0 + HOUR * np.array([0.0, 1.0, 5.0, 20.0])  # 3 missing, then 14 missing (only HORIZON filled)

    forecasts, rejected = engine.step(observations(["a"] * 4, times, [1.0, 2.0, 3.0, 4.0]), now=0.0)

    assert not rejected and len(forecasts) == 4
    np.testing.assert_array_equal(forecasts.times, times)
    np.testing.assert_array_equal(forecasts.horizon_times, times[:, None] + HOUR * np.arange(1, HORIZON + 1))
    assert np.isfinite(forecasts.values).all()


def test_the_one_step_skill_scores_only_consecutive_observations():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=True)
    engine = Engine(pipeline, seeded_model(pipeline))
    steps = np.array([0, 1, 2, 5, 6, 9, 10, 11])  # consecutive pairs: 0-1, 1-2, 5-6, 9-10, 10-11

    stepped_one_by_one(engine, steps, series(12)[steps])

    assert engine.skill.model.count == 5


def test_buffered_targets_are_aligned_by_time_and_never_cross_a_gap():
    pipeline = retraining_pipeline(buffer=16, holdout=2, steps=1, window=6, fill_gaps=True)
    engine = Engine(pipeline, seeded_model(pipeline))
    steps = np.array([0, 1, 2, 5, 6, 7])  # steps 3 and 4 missing
    y = 10.0 + steps.astype(float) ** 2
    stepped_one_by_one(engine, steps, y)

    inputs, actual, scale, valid = engine.buffer.read(torch.as_tensor(engine.store.slots(["a"])))
    targets, mask = buffers.targets(actual, scale, valid, pipeline.horizon)
    actual, scale, targets, mask = actual[0, -8:], scale[0, -8:], targets[0, -8:], mask[0, -8:]

    assert torch.isnan(actual[3:5]).all() and not torch.isnan(actual[[0, 1, 2, 5, 6, 7]]).any()  # by time
    assert not mask[3:5].any()  # nothing is learnt from a filled step
    assert mask[2].tolist() == [False, False, True, True]  # from step 2: steps 3 and 4 missing, 5 and 6 observed
    torch.testing.assert_close(targets[2, 2], ((y[3] - y[2]) / scale[2]).float())  # step 5 is 3 steps ahead
    assert not mask[:, :][torch.isnan(actual[:, None].expand(-1, pipeline.horizon))].any()


def test_a_checkpoint_keeps_the_forecast_a_gap_is_filled_with():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=True)
    first = Engine(pipeline, seeded_model(pipeline))
    stepped_one_by_one(first, np.arange(10), series(10))
    second = Engine(pipeline, seeded_model(pipeline))
    second.restore(first.snapshot())

    after_gap = observations(["a"], [T0 + HOUR * 13], [50.0])
    np.testing.assert_array_equal(first.step(after_gap, now=0.0)[0].values, second.step(after_gap, now=0.0)[0].values)


def test_intervals_are_scored_against_the_observation_at_their_own_step():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=True, quantiles=(0.1, 0.5, 0.9))
    engine = Engine(pipeline, seeded_model(pipeline))
    steps = np.array([0, 1, 2, 5, 6, 9, 10, 11])  # five one-step intervals meet their actual

    stepped_one_by_one(engine, steps, series(12)[steps])

    assert engine.coverage.inside.count == 5


# --- null readings: records whose target is null ---------------------------------------------------------------

NULL_STEPS = np.array([5, 9, 10, 20, 21, 22, 23, 24, 25])  # a run longer than the horizon, from step 20
SHORT_NULLS = np.array([5, 9, 10, 20, 21, 22, 23])  # runs no longer than the horizon: a gap fills every step of them


def with_nulls(y: np.ndarray, steps: np.ndarray = NULL_STEPS) -> np.ndarray:
    readings = y.copy()
    readings[steps] = np.nan
    return readings


def test_a_null_reading_is_stepped_over_with_the_networks_own_forecast_and_forecast_from_it():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=True)
    y = series(40)
    with_null = Engine(pipeline, seeded_model(pipeline))
    forecasts = stepped_one_by_one(with_null, np.arange(40), with_nulls(y))

    filled = y.copy()  # each null at the forecast issued from the last observation; past the horizon, its last
    for t in NULL_STEPS.tolist():
        last = max(s for s in range(t) if s not in NULL_STEPS)
        filled[t] = forecasts[last, min(t - last, HORIZON) - 1]
    dense = Engine(pipeline, seeded_model(pipeline))

    np.testing.assert_allclose(forecasts, stepped_one_by_one(dense, np.arange(40), filled), rtol=1e-5, atol=1e-4)


def test_a_null_reading_moves_the_state_as_a_missing_step_does():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=True)
    y = series(30)
    observed = np.setdiff1d(np.arange(30), SHORT_NULLS)
    with_null, with_gap = Engine(pipeline, seeded_model(pipeline)), Engine(pipeline, seeded_model(pipeline))

    forecasts = stepped_one_by_one(with_null, np.arange(30), with_nulls(y, SHORT_NULLS))
    gap_forecasts = stepped_one_by_one(with_gap, observed, y[observed])

    np.testing.assert_allclose(forecasts[observed], gap_forecasts, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(with_null.store.state, with_gap.store.state)
    assert with_null.store.newest_times()[0] == with_gap.store.newest_times()[0] == T0 + HOUR * 29


def test_without_gap_filling_a_null_reading_is_stepped_with_its_series_last_value():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=False)
    with_null, repeated = Engine(pipeline, seeded_model(pipeline)), Engine(pipeline, seeded_model(pipeline))

    forecasts = stepped_one_by_one(with_null, np.arange(5), np.array([1.0, 2.0, np.nan, np.nan, 5.0]))
    expected = stepped_one_by_one(repeated, np.arange(5), np.array([1.0, 2.0, 2.0, 2.0, 5.0]))

    np.testing.assert_allclose(forecasts, expected, rtol=1e-6)


def test_nothing_is_learnt_from_a_null_reading_and_what_it_issued_is_never_scored():
    pipeline = retraining_pipeline(buffer=16, holdout=2, steps=1, window=6, fill_gaps=True, quantiles=(0.1, 0.5, 0.9))
    engine = Engine(pipeline, seeded_model(pipeline))
    y = series(8)
    stepped_one_by_one(engine, np.arange(8), with_nulls(y, np.array([3, 4])))

    _, actual, scale, valid = engine.buffer.read(torch.as_tensor(engine.store.slots(["a"])))
    _, mask = buffers.targets(actual, scale, valid, pipeline.horizon)
    assert torch.isnan(actual[0, -5:-3]).all() and not torch.isnan(actual[0, -8:-5]).any()
    assert not mask[0, -5:-3].any()  # no target at a null reading
    # one-step pairs of observations: 0-1, 1-2, 5-6, 6-7; neither a null reading nor the step after it
    assert engine.skill.model.count == 4 and engine.coverage.inside.count == 4


def test_the_combination_keeps_a_null_reading_as_missing_and_learns_nothing_from_it():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=True, combination=True)
    with_null, with_gap = Engine(pipeline, seeded_model(pipeline)), Engine(pipeline, seeded_model(pipeline))
    y = series(30)
    observed = np.setdiff1d(np.arange(30), SHORT_NULLS)

    forecasts = stepped_one_by_one(with_null, np.arange(30), with_nulls(y, SHORT_NULLS))
    stepped_one_by_one(with_gap, observed, y[observed])

    history, gap_history = with_null.combination.history, with_gap.combination.history
    assert np.isfinite(forecasts).all()
    assert np.isnan(history.lookup(np.array([0]), (history.newest[0] - 29 + SHORT_NULLS)[None, :])).all()
    np.testing.assert_array_equal(history.values, gap_history.values)  # the same values kept, none at a null
    np.testing.assert_array_equal(history.level, gap_history.level)
    np.testing.assert_array_equal(history.scale, gap_history.scale)
    pending, gap_pending = with_null.combination.pending, with_gap.combination.pending
    np.testing.assert_array_equal(pending.step, gap_pending.step)  # what a null reading issued is not kept
    learner = with_null.combination.learner(0)  # nothing scored against a null: no NaN in what was learnt
    assert np.isfinite(learner.weights.regret).all() and np.isfinite(learner.linear.moment).all()


def test_a_null_covariate_enters_at_its_series_running_mean():
    pipeline = make_pipeline(horizon=HORIZON, covariates=("x",))
    with_null, with_mean = Engine(pipeline, seeded_model(pipeline)), Engine(pipeline, seeded_model(pipeline))
    history = observations(["a"] * 5, T0 + HOUR * np.arange(5), [[v, 3.0 * v] for v in range(5)])
    for engine in (with_null, with_mean):
        engine.step(history, now=0.0)
    mean = float(with_mean.store.moments.mean[0, 1])

    null_forecast, _ = with_null.step(observations(["a"], [T0 + HOUR * 5], [[5.0, np.nan]]), now=0.0)
    mean_forecast, _ = with_mean.step(observations(["a"], [T0 + HOUR * 5], [[5.0, mean]]), now=0.0)

    np.testing.assert_array_equal(null_forecast.values, mean_forecast.values)
    torch.testing.assert_close(with_null.store.state, with_mean.store.state, rtol=0, atol=0)


def test_a_null_reading_of_a_series_with_no_value_yet_is_refused_with_a_reason():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=True)
    engine = Engine(pipeline, seeded_model(pipeline))
    batch = observations(["new", "new", "b", "b"], T0 + HOUR * np.array([0, 1, 0, 1]), [np.nan, 1.0, 2.0, np.nan])

    forecasts, rejected = engine.step(batch, now=0.0)

    assert [(r.position, r.reason) for r in rejected] == [(0, records.NO_VALUE_YET)]
    assert forecasts.positions.tolist() == [1, 2, 3] and np.isfinite(forecasts.values).all()


def test_another_series_is_untouched_by_a_null_reading():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=True)
    both, alone = Engine(pipeline, seeded_model(pipeline)), Engine(pipeline, seeded_model(pipeline))
    stepped_one_by_one(both, np.arange(3), np.arange(3.0), key="a")
    for engine in (both, alone):
        stepped_one_by_one(engine, np.arange(3), 10 + np.arange(3.0), key="b")

    together, _ = both.step(observations(["a", "b"], [T0 + 3 * HOUR] * 2, [np.nan, 13.0]), now=0.0)
    by_itself, _ = alone.step(observations(["b"], [T0 + 3 * HOUR], [13.0]), now=0.0)

    np.testing.assert_array_equal(together.values[1], by_itself.values[0])
    b, b_alone = both.store.slots(["b"]), alone.store.slots(["b"])
    torch.testing.assert_close(both.store.state[:, b], alone.store.state[:, b_alone], rtol=0, atol=0)


def test_with_latest_per_series_a_null_reading_newest_in_the_batch_is_forecast():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=True, emit="latest_per_series")
    engine = Engine(pipeline, seeded_model(pipeline))

    forecasts, _ = engine.step(observations(["a", "a"], [T0, T0 + HOUR], [1.0, np.nan]), now=0.0)

    assert forecasts.times.tolist() == [T0 + HOUR] and np.isfinite(forecasts.values).all()


def test_a_checkpoint_taken_after_a_null_reading_resumes_exactly():
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=True, combination=True)
    first = Engine(pipeline, seeded_model(pipeline))
    stepped_one_by_one(first, np.arange(10), with_nulls(series(10), np.array([8, 9])))
    second = Engine(pipeline, seeded_model(pipeline))
    second.restore(first.snapshot())

    after = observations(["a", "a"], [T0 + HOUR * 10, T0 + HOUR * 11], [np.nan, 50.0])
    np.testing.assert_array_equal(first.step(after, now=0.0)[0].values, second.step(after, now=0.0)[0].values)
