"""Online skill: rolling MAE of the model's and the naive one-step forecasts."""

import math

import numpy as np
import pytest

from forecaster.serving.skill import RollingMean, Skill


def test_an_empty_rolling_mean_is_nan():
    rolling = RollingMean(3)
    assert math.isnan(rolling.value) and rolling.count == 0


def test_a_rolling_mean_keeps_exactly_the_last_window_values():
    rolling = RollingMean(3)
    rolling.extend([1.0, 2.0])
    assert (rolling.value, rolling.count) == (1.5, 2)
    rolling.extend([3.0, 4.0])
    assert (rolling.value, rolling.count) == (3.0, 3)
    rolling.extend([5.0])
    assert rolling.value == 4.0


def test_one_extend_longer_than_the_window_keeps_its_newest_values():
    rolling = RollingMean(3)
    rolling.extend([100.0])
    rolling.extend([1.0, 2.0, 3.0, 20.0, 30.0, 40.0])
    assert (rolling.value, rolling.count) == (30.0, 3)


def test_extending_with_nothing_changes_nothing():
    rolling = RollingMean(4)
    rolling.extend([2.0, 4.0])
    rolling.extend(np.array([]))
    assert (rolling.value, rolling.count) == (3.0, 2)


@pytest.mark.parametrize("seed", range(5))
def test_any_split_of_the_values_gives_the_mean_of_the_last_window(seed):
    rng = np.random.default_rng(seed)
    window = int(rng.integers(1, 10))
    values = rng.normal(size=50)
    rolling = RollingMean(window)
    cuts = np.sort(rng.integers(0, len(values), size=8))
    for part in np.split(values, cuts):
        rolling.extend(part)
    assert rolling.value == pytest.approx(values[-window:].mean(), rel=1e-12)
    assert rolling.count == window


def test_a_window_must_hold_at_least_one_value():
    with pytest.raises(ValueError, match="window must be at least 1, got 0"):
        RollingMean(0)


def test_skill_scores_absolute_errors_of_model_and_naive():
    skill = Skill(window=10)
    skill.add(np.array([10.0, 20.0]), np.array([11.0, 17.0]), np.array([8.0, 20.0]))
    assert skill.model.value == 2.0  # |10-11|, |20-17|
    assert skill.naive.value == 1.0  # |10-8|, |20-20|


def test_skill_ignores_pairs_where_either_forecast_is_missing():
    skill = Skill(window=10)
    actual = np.array([10.0, 20.0, 30.0, 40.0])
    model = np.array([np.nan, 21.0, 33.0, 40.0])  # a series' first observation has no forecast yet
    naive = np.array([np.nan, 18.0, np.nan, 44.0])
    skill.add(actual, model, naive)
    assert (skill.model.count, skill.naive.count) == (2, 2)  # only the 2nd and 4th pairs are scored
    assert skill.model.value == 0.5  # |20-21|, |40-40|
    assert skill.naive.value == 3.0  # |20-18|, |40-44|


def test_skill_with_only_unscored_pairs_stays_nan():
    skill = Skill(window=10)
    skill.add(np.array([1.0]), np.array([np.nan]), np.array([1.0]))
    assert math.isnan(skill.model.value) and math.isnan(skill.naive.value)


def test_skill_rolls_over_its_window():
    skill = Skill(window=2)
    for error in (5.0, 1.0, 3.0):
        skill.add(np.array([0.0]), np.array([error]), np.array([0.0]))
    assert skill.model.value == 2.0 and skill.naive.value == 0.0
