"""Interval bookkeeping and quantile tracking: each step scored against what was issued for it, and the
offsets that bring each step's coverage to the nominal share."""

import dataclasses

import numpy as np
import pytest

from forecaster.build import seeded_model
from forecaster.config import Intervals
from forecaster.serving.engine import Engine
from forecaster.serving.intervals import IntervalHistory, sort_levels, track

from support import make_pipeline, observations, ordered_quantiles_model

T0 = 1_600_000_000.0


def issue(history, slot, record, depth=3):
    """Record `record` of `slot` (its actual equal to its number) issues, for each step h, the interval
    [10 * record + h - 0.5, 10 * record + h + 0.5]: an actual of 10 * i + h lies inside only the one issued for it."""
    h = np.arange(1, depth + 1)
    bounds = np.stack([10.0 * record + h - 0.5, 10.0 * record + h + 0.5])[None]  # (1, 2, depth)
    return history.score_and_keep(np.array([slot]), np.array([0]), np.array([float(record)]), bounds)


def issued_four(depth=3):
    history = IntervalHistory(depth)
    history.allocate(1)
    for record in range(4):
        issue(history, 0, record, depth)
    return history


@pytest.mark.parametrize("step", [1, 2, 3])
def test_each_step_is_scored_against_the_interval_issued_that_many_records_before(step):
    history = issued_four()
    actual = 10.0 * (4 - step) + step  # what record 4 - step forecast for `step` steps ahead, and no other

    scored = history.score_and_keep(np.array([0]), np.array([0]), np.array([actual]), np.full((1, 2, 3), np.nan))

    assert scored[0].tolist() == [1.0 if h == step else 0.0 for h in (1, 2, 3)]


def test_a_series_first_records_have_nothing_to_score():
    history = IntervalHistory(depth=3)
    history.allocate(1)
    scores = [issue(history, 0, record)[0] for record in range(3)]
    assert np.isnan(scores[0]).all()
    assert not np.isnan(scores[1][0]) and np.isnan(scores[1][1:]).all()
    assert not np.isnan(scores[2][:2]).any() and np.isnan(scores[2][2])


def test_rows_of_one_series_in_one_batch_score_as_if_they_came_one_batch_each():
    rng = np.random.default_rng(0)
    counts = [9, 2, 1, 5]  # rows of series 0..3 in each batch: more than the depth, and fewer
    slots = np.repeat(np.arange(4), counts)  # (series, time) order
    waves = np.concatenate([np.arange(c) for c in counts])  # each row's rank within its series
    together, one_by_one = IntervalHistory(depth=4), IntervalHistory(depth=4)
    together.allocate(4), one_by_one.allocate(4)
    for _ in range(3):  # later batches read what earlier ones kept
        actual = rng.standard_normal(len(slots))
        bounds = np.sort(rng.standard_normal((len(slots), 2, 4)), axis=1)

        batched = together.score_and_keep(slots, waves, actual, bounds)
        separate = [
            one_by_one.score_and_keep(slots[[i]], np.array([0]), actual[[i]], bounds[[i]])[0]
            for i in np.argsort(waves, kind="stable")
        ]  # wave by wave: one row per series at a time

        np.testing.assert_array_equal(batched[np.argsort(waves, kind="stable")], np.array(separate))
    assert not np.isnan(batched[slots == 0]).any()  # 18 records before: every step of each row had an interval
    assert np.isnan(batched[slots == 2]).tolist() == [[False, False, True, True]]  # its third record: steps 1-2 only


def test_a_new_series_in_a_reused_slot_is_not_scored_against_the_old_ones_intervals():
    history = IntervalHistory(depth=2)
    history.allocate(1)
    issue(history, 0, 0, depth=2)
    history.reset(np.array([0]))
    assert np.isnan(issue(history, 0, 1, depth=2)).all()


def test_a_snapshot_restores_the_intervals_and_one_of_another_depth_is_forgotten():
    history = IntervalHistory(depth=2)
    history.allocate(1)
    for record in range(3):
        issue(history, 0, record, depth=2)
    restored, deeper = IntervalHistory(depth=2), IntervalHistory(depth=3)
    restored.allocate(1), deeper.allocate(1)

    restored.restore(np.array([0]), history.snapshot(np.array([0])))
    deeper.restore(np.array([0]), history.snapshot(np.array([0])))

    np.testing.assert_array_equal(issue(restored, 0, 3, depth=2), issue(history, 0, 3, depth=2))
    assert np.isnan(issue(deeper, 0, 3)).all()


def test_tracking_moves_each_step_by_its_share_of_misses_less_the_nominal_share():
    # step 1: no misses; step 2: 2 of 5; step 3: nothing scored
    inside = np.array(
        [[1.0, 0.0, np.nan], [1.0, 0.0, np.nan], [1.0, 1.0, np.nan], [1.0, 1.0, np.nan], [1.0, 1.0, np.nan]]
    )

    offset = track(np.array([0.5, 0.5, 0.5]), inside, coverage=0.8, rate=0.1)

    np.testing.assert_allclose(offset, [0.5 - 0.1 * 0.2, 0.5 + 0.1 * 0.2, 0.5])


def tracking_pipeline(rate):
    pipeline = make_pipeline(quantiles=(0.1, 0.5, 0.9))
    return dataclasses.replace(pipeline, intervals=Intervals(tracking_rate=rate))


def one_step_coverage(rate, spread, length=600):
    """Coverage of the one-step intervals, `spread` scales either side of the point forecast (plus what
    tracking adds), on a noisy series, over the last third of it."""
    pipeline = tracking_pipeline(rate)
    engine = Engine(pipeline, ordered_quantiles_model(pipeline, spread))
    rng = np.random.default_rng(0)
    inside, lower, upper = [], None, None
    for t in range(length):
        y = 100.0 + rng.standard_normal()
        if lower is not None and t >= 2 * length // 3:
            inside.append(lower <= y <= upper)
        forecasts, _ = engine.step(observations(["s"], [T0 + 3600.0 * t], [y]), now=0.0)
        lower, upper = forecasts.quantiles[0.1][0, 0], forecasts.quantiles[0.9][0, 0]
    return np.mean(inside), engine


@pytest.mark.parametrize("spread", [0.1, 5.0])
def test_tracking_brings_intervals_too_narrow_or_too_wide_to_the_nominal_coverage(spread):
    untracked, _ = one_step_coverage(0.0, spread)
    tracked, engine = one_step_coverage(0.05, spread)

    assert abs(untracked - 0.8) > 0.15  # the heads' spread says nothing of the series' noise
    assert abs(tracked - 0.8) < 0.06
    assert (engine.tracked > 0).all() if spread < 1 else (engine.tracked < 0).all()


def test_an_offset_tracked_in_past_the_inner_levels_narrows_the_interval_and_tracking_brings_it_back():
    """A round's widening can shrink under offsets that had made up for it, leaving them further in than the
    heads' spread: the interval must then be narrow and miss, not inside out, wide and covering everything,
    which would pull the offsets further in without end."""
    pipeline = tracking_pipeline(0.05)
    engine = Engine(pipeline, ordered_quantiles_model(pipeline, 1.0))
    engine.tracked[:] = -3.0  # 3 scales in: 2 past the median
    rng = np.random.default_rng(0)
    widths = []
    for t in range(300):
        y = 100.0 + rng.standard_normal()
        forecasts, _ = engine.step(observations(["s"], [T0 + 3600.0 * t], [y]), now=0.0)
        widths.append(forecasts.quantiles[0.9][0] - forecasts.quantiles[0.1][0])

    assert np.min(widths) >= 0.0  # never inside out
    assert np.all(widths[1] <= 1e-9)  # at first the interval is the median's point: it misses
    assert (engine.tracked > -1.0).all()  # and tracking moves the offsets back out


def test_a_checkpoint_keeps_the_tracked_offsets():
    _, engine = one_step_coverage(0.05, 1.0, length=30)
    restored = Engine(engine.pipeline, seeded_model(engine.pipeline))

    restored.restore(engine.snapshot())

    np.testing.assert_array_equal(restored.tracked, engine.tracked)
    a, _ = engine.step(observations(["s"], [T0 + 3600.0 * 30], [100.0]), now=0.0)
    b, _ = restored.step(observations(["s"], [T0 + 3600.0 * 30], [100.0]), now=0.0)
    np.testing.assert_allclose(b.quantiles[0.9], a.quantiles[0.9], rtol=1e-6)


@pytest.mark.parametrize("levels", [1, 2, 3, 5, 9])
def test_quantiles_are_sorted_along_their_levels_as_np_sort_does(levels):
    rng = np.random.default_rng(levels)
    crossing = rng.normal(size=(40, levels, 6))
    with_nan = crossing.copy()
    with_nan[7, 0, 3] = np.nan
    seldom_crossing = np.sort(crossing, axis=1)  # as a trained head's: two rows cross, one at a single step
    seldom_crossing[[3, 30]] = crossing[[3, 30]]
    seldom_crossing[11, :, 2] = seldom_crossing[11, ::-1, 2]
    seldom_with_nan = seldom_crossing.copy()
    seldom_with_nan[20, -1, 0] = np.nan
    for quantiles in (crossing, with_nan, seldom_crossing, seldom_crossing.astype(np.float32), seldom_with_nan):
        expected = np.sort(quantiles, axis=1)
        np.testing.assert_array_equal(sort_levels(quantiles.copy()), expected)
