"""The engine's batched step: contracts that hold for every cell type."""

import numpy as np
import pytest
import torch

from forecaster.build import seeded_model
from forecaster.serving import records
from forecaster.serving.engine import Engine, plan

from support import make_pipeline, observations, random_walks

CELLS = ["gru", "lstm", "rnn"]


def engine(device="cpu", **kwargs) -> Engine:
    pipeline = make_pipeline(**kwargs)
    return Engine(pipeline, seeded_model(pipeline), device)


@pytest.mark.parametrize("cell", CELLS)
def test_a_forecast_per_record_with_horizon_length_finite_values_in_input_order(cell, device):
    keys, times, rows = random_walks()
    forecasts, rejected = engine(device, cell=cell).step(observations(keys, times, rows), now=0.0)
    assert rejected == []
    assert list(forecasts.keys) == keys
    assert list(forecasts.positions) == list(range(len(keys)))
    assert forecasts.values.shape == (len(keys), 4) and forecasts.horizon_times.shape == (len(keys), 4)
    assert np.all(np.isfinite(forecasts.values))


@pytest.mark.parametrize("cell", CELLS)
def test_forecasts_are_in_the_series_original_units(cell, device):
    """Series of levels 1 to 10,000 share one model; each forecast stays near its own level."""
    keys, times, rows = random_walks(n_series=5)
    forecasts, _ = engine(device, cell=cell).step(observations(keys, times, rows), now=0.0)
    for key, value in zip(forecasts.keys, forecasts.values):
        level = 10.0 ** int(key[1:])
        assert np.all(np.abs(value - level) < level)


@pytest.mark.parametrize("cell", CELLS)
def test_stepping_in_waves_equals_stepping_one_record_at_a_time(cell, device):
    keys, times, rows = random_walks(covariates=2)
    batched = engine(device, cell=cell, covariates=("a", "b")).step(observations(keys, times, rows), now=0.0)[0]
    single = engine(device, cell=cell, covariates=("a", "b"))
    one_by_one = np.concatenate(
        [single.step(observations([k], [t], [r]), now=0.0)[0].values for k, t, r in zip(keys, times, rows)]
    )
    np.testing.assert_allclose(batched.values, one_by_one, rtol=1e-5, atol=1e-6 * np.abs(one_by_one).max())


@pytest.mark.parametrize("cell", CELLS)
def test_the_step_does_not_mutate_its_input(cell, device):
    keys, times, rows = random_walks()
    batch = observations(keys, times, rows)
    copies = [batch.times.copy(), batch.values.copy(), batch.positions.copy()]
    engine(device, cell=cell).step(batch, now=0.0)
    for before, after in zip(copies, [batch.times, batch.values, batch.positions]):
        np.testing.assert_array_equal(before, after)


def test_a_seed_gives_the_same_forecasts_every_time(device):
    keys, times, rows = random_walks()
    first = engine(device).step(observations(keys, times, rows), now=0.0)[0].values
    second = engine(device).step(observations(keys, times, rows), now=0.0)[0].values
    np.testing.assert_array_equal(first, second)


def test_latest_per_series_emits_one_forecast_per_series_at_its_newest_time():
    keys = ["a", "b", "a", "a", "b"]
    times = [1.0, 1.0, 3.0, 2.0, 2.0]
    forecasts, _ = engine(emit="latest_per_series").step(observations(keys, times, [1, 2, 3, 4, 5]), now=0.0)
    assert sorted(zip(forecasts.keys, forecasts.times)) == [("a", 3.0), ("b", 2.0)]


def test_horizon_timestamps_follow_the_cadence():
    forecasts, _ = engine(cadence="30m", horizon=3).step(observations(["a"], [1000.0], [1.0]), now=0.0)
    np.testing.assert_array_equal(forecasts.horizon_times[0], [2800.0, 4600.0, 6400.0])


def test_records_of_a_series_are_stepped_in_time_order_whatever_their_arrival_order():
    in_order = engine().step(observations(["a", "a", "a"], [1.0, 2.0, 3.0], [1.0, 2.0, 4.0]), now=0.0)[0]
    shuffled = engine().step(observations(["a", "a", "a"], [3.0, 1.0, 2.0], [4.0, 1.0, 2.0]), now=0.0)[0]
    np.testing.assert_allclose(in_order.values[2], shuffled.values[0], rtol=1e-6)


def test_stale_and_duplicate_timestamps_are_refused_without_touching_any_state():
    e = engine()
    e.step(observations(["a", "b"], [10.0, 10.0], [1.0, 5.0]), now=0.0)
    state_before = e.store.state.clone()
    forecasts, rejected = e.step(
        observations(["a", "a", "b", "b"], [9.0, 10.0, 12.0, 12.0], [1.0, 1.0, 5.0, 6.0]), now=0.0
    )
    assert sorted((r.position, r.reason) for r in rejected) == [
        (0, records.OUT_OF_ORDER),
        (1, records.DUPLICATE_TIMESTAMP),
        (3, records.DUPLICATE_TIMESTAMP),
    ]
    assert list(forecasts.keys) == ["b"]
    a = e.store.slots(["a"])[0]
    np.testing.assert_array_equal(e.store.state[:, a].numpy(), state_before[:, a].numpy())


def test_a_series_state_is_independent_of_other_series_in_the_batch():
    alone = engine().step(observations(["a", "a"], [1.0, 2.0], [3.0, 4.0]), now=0.0)[0].values
    keys, times, rows = random_walks(n_series=4)
    crowded = engine().step(
        observations(["a", "a"] + keys, [1.0, 2.0] + times, [3.0, 4.0] + [r[0] for r in rows]), now=0.0
    )[0]
    np.testing.assert_allclose(crowded.values[:2], alone, rtol=1e-5)


def test_too_many_new_series_in_one_batch_are_refused_with_a_reason():
    forecasts, rejected = engine(max_series=2).step(
        observations(["a", "b", "c"], [1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), now=0.0
    )
    assert [(r.position, r.reason) for r in rejected] == [(2, records.SERIES_CAPACITY)]
    assert len(forecasts) == 2


def test_one_step_skill_scores_each_forecast_against_the_next_actual():
    e = engine()
    forecasts, _ = e.step(observations(["a", "a"], [1.0, 2.0], [10.0, 13.0]), now=0.0)
    e.step(observations(["a"], [3.0], [11.0]), now=0.0)
    assert e.skill.naive.count == 2  # the series' first record has nothing to be scored against
    assert e.skill.naive.value == pytest.approx((3.0 + 2.0) / 2)
    expected = (abs(13.0 - forecasts.values[0, 0]) + abs(11.0 - forecasts.values[1, 0])) / 2
    assert e.skill.model.value == pytest.approx(expected)


def test_plan_puts_the_kth_record_of_every_series_in_wave_k():
    slots = np.array([0, 1, 0, 2, 0, 1])
    times = np.array([1.0, 1.0, 2.0, 1.0, 3.0, 2.0])
    the_plan = plan(slots, times, np.full(3, -np.inf))
    assert list(the_plan.order) == [0, 2, 4, 1, 5, 3]
    assert list(the_plan.waves) == [0, 1, 2, 0, 1, 0]
    assert list(the_plan.first) == [True, False, False, True, False, True]
    assert list(the_plan.last) == [False, False, True, False, True, True]
    assert the_plan.rejected == []


def test_a_small_step_runs_on_one_cpu_thread_and_leaves_the_count_as_it_was(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stepper = engine()
        seen, run_waves = [], stepper._run_waves

        def counted(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return run_waves(*args, **kwargs)

        monkeypatch.setattr(stepper, "_run_waves", counted)
        keys, times, rows = random_walks()
        stepper.step(observations(keys, times, rows), now=0.0)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
