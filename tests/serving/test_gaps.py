"""Missing observations: the network steps over them with its own forecasts, and nothing is scored or
learnt against a step that was not observed."""

import numpy as np
import pytest
import torch

from forecaster.build import seeded_model
from forecaster.config import Calendar
from forecaster.serving import buffer as buffers
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


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_the_same_gappy_stream_gives_the_same_forecasts_however_it_is_batched(batch):
    pipeline = make_pipeline(horizon=HORIZON, fill_gaps=True, combination=True)
    rng = np.random.default_rng(3)
    keys, times, values = [], [], []
    for t in range(120):
        for s in range(3):
            if rng.random() < 0.85:
                keys.append(f"s{s}")
                times.append(T0 + HOUR * t)
                values.append(100.0 * (s + 1) + 5 * np.sin(t / 4) + rng.standard_normal())
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
