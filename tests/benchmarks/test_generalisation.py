"""The generalisation benchmark: held-out data as the wheel gives it, gaps removed honestly, scores as defined."""

import dataclasses

import numpy as np
import pytest

from forecaster.evaluation.panel import at

from support import benchmark

generalisation = benchmark("generalisation")


@pytest.fixture(scope="module")
def weather():
    return generalisation.nyc_weather()


def test_nyc_weather_is_three_airports_on_the_hourly_grid_of_2013(weather):
    assert weather.keys == ("EWR", "JFK", "LGA")
    assert np.all(np.diff(weather.times) == 3600.0)
    assert 8700 <= len(weather.times) <= 8760 + 24
    assert np.isnan(weather.truth).any()  # the source misses some hours: they stay missing


def test_the_gaps_remove_five_percent_of_the_observed_hours_from_the_input_only(weather):
    gaps = generalisation.nyc_weather(gaps=True)
    np.testing.assert_array_equal(gaps.truth, weather.truth)
    removed = ~np.isnan(weather.inputs) & np.isnan(gaps.inputs)
    assert removed.sum() == int(0.05 * (~np.isnan(weather.truth)).sum())
    np.testing.assert_array_equal(np.isnan(generalisation.nyc_weather(gaps=True).inputs), np.isnan(gaps.inputs))


def test_persistence_forecasts_the_input_at_the_origin_and_a_perfect_forecast_scores_zero(weather):
    origins = np.arange(5000, 5100, 24)
    forecasts = generalisation.baseline_forecasts(weather, origins)
    np.testing.assert_array_equal(forecasts["persistence"][:, :, 0], weather.inputs[origins])
    h = np.arange(1, weather.horizon + 1)
    perfect = at(weather.truth, origins[:, None] + h[None, :]).transpose(0, 2, 1)
    rows = generalisation.score(weather, origins, {"perfect": perfect}, {})
    assert {r["mase"] for r in rows} == {0.0}


def test_a_run_writes_one_row_per_step_and_the_mean_for_every_method(weather, monkeypatch):
    shipped = generalisation.pipeline
    brief = lambda *args: dataclasses.replace(  # rounds of a few steps: the rows are what is tested here
        (p := shipped(*args)), retraining=dataclasses.replace(p.retraining, young_steps=10, steps=10)
    )
    monkeypatch.setattr(generalisation, "pipeline", brief)
    short = dataclasses.replace(
        weather, times=weather.times[:300], truth=weather.truth[:300], inputs=weather.inputs[:300], stride=48
    )
    rows = generalisation.evaluate(short, with_statsforecast=False, quick=False, log=lambda *_: None)
    methods = {r["method"] for r in rows}
    assert {"forecaster", "network", "persistence", "seasonal_naive_24", "seasonal_level_24"} <= methods
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        assert [r["horizon"] for r in mine] == list(range(1, 25)) + ["mean"]
    assert set(rows[0]) == {"dataset", "horizon", "method", "mase", "mae", "coverage80", "series", "origins"}
    covered = [r["coverage80"] for r in rows if r["method"] in ("forecaster", "network")]
    assert all(0.0 <= c <= 1.0 for c in covered)  # the default pipeline serves 80% intervals


def test_an_interval_is_scored_by_whether_the_truth_falls_inside_it(weather):
    origins = np.arange(5000, 5100, 24)
    h = np.arange(1, weather.horizon + 1)
    truth = at(weather.truth, origins[:, None] + h[None, :]).transpose(0, 2, 1)  # (O, N, H)
    around = np.stack([truth - 1.0, truth + 1.0], axis=2)
    beside = np.stack([truth + 1.0, truth + 2.0], axis=2)

    rows = generalisation.score(
        weather, origins, {"around": truth, "beside": truth}, {"around": around, "beside": beside}
    )

    assert {r["coverage80"] for r in rows if r["method"] == "around"} == {1.0}
    assert {r["coverage80"] for r in rows if r["method"] == "beside"} == {0.0}
