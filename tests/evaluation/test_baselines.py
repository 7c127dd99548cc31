"""Baselines: hand-checked naive forecasts, ETS against statsmodels, SNARIMAX against River, one contract for all."""

import warnings

import numpy as np
import pytest

from forecaster.evaluation import baselines, prequential
from forecaster.evaluation.prequential import Stream


def make_stream(y):
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    t = 3600.0 * np.arange(len(y))
    return Stream(t, t, y, np.zeros((len(y), 0)), tuple(f"c{c}" for c in range(y.shape[1])))


def seasonal_series(length=400, period=24, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(length)[:, None]
    return (
        10
        + 3 * np.sin(2 * np.pi * t / period + np.arange(channels))
        + np.cumsum(rng.normal(0, 0.2, (length, channels)), axis=0)
    )


def test_persistence_repeats_the_newest_row():
    method = baselines.Persistence()
    method.learn(make_stream([[1, 10], [2, 20], [3, 30]]))
    np.testing.assert_array_equal(method.forecast(2), [[3, 30], [3, 30]])


def test_seasonal_naive_takes_the_value_one_period_before_each_step():
    method = baselines.SeasonalNaive(period=3)
    method.learn(make_stream([1, 2, 3, 4, 5]))  # the last period: 3, 4, 5
    np.testing.assert_array_equal(method.forecast(7)[:, 0], [3, 4, 5, 3, 4, 5, 3])


def test_seasonal_level_moves_last_seasons_values_by_how_far_this_season_runs_above_the_last():
    method = baselines.SeasonalLevel(period=3)
    method.learn(make_stream([1, 2]))
    method.learn(make_stream([3, 4, 9]))  # y[t] = 9, y[t - 3] = 2: this season runs 7 above the last
    np.testing.assert_array_equal(method.forecast(3)[:, 0], [3 + 7, 4 + 7, 9 + 7])


@pytest.mark.parametrize(
    "baseline, needs",
    [(baselines.SeasonalNaive, "at least period"), (baselines.SeasonalLevel, "at least period \\+ 1")],
    ids=["seasonal_naive", "seasonal_level"],
)
def test_seasonal_baselines_refuse_to_forecast_without_the_history_they_need(baseline, needs):
    method = baseline(period=3)
    method.learn(make_stream([1, 2]))
    with pytest.raises(ValueError, match=needs):
        method.forecast(1)


def test_learning_in_pieces_equals_learning_at_once():
    y = seasonal_series(length=60, period=5)
    whole, pieces = baselines.SeasonalNaive(5), baselines.SeasonalNaive(5)
    whole.learn(make_stream(y))
    for a, b in [(0, 2), (2, 3), (3, 60)]:
        pieces.learn(make_stream(y[a:b]))
    np.testing.assert_array_equal(whole.forecast(8), pieces.forecast(8))


def _statsmodels_fit(y, period, **fixed):
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ExponentialSmoothing(
            y,
            trend="add",
            damped_trend=True,
            seasonal="add" if period else None,
            seasonal_periods=period,
            initialization_method=fixed.pop("init", "heuristic"),
            **fixed.pop("initial", {}),
        )
        return model.fit(**fixed)


def _as_statsmodels(period, horizon):
    """The steps where statsmodels' forecast follows the textbook formula.

    statsmodels (0.14, 0.15) forecasts step h = k * period with the seasonal state one
    period older than the newest, s_{n-m} instead of s_n; ETS uses s_n, as
    y_{n+h} = l_n + (phi + ... + phi^h) b_n + s_{n+h-m(k+1)} says (Hyndman and Athanasopoulos, 8.3).
    """
    steps = np.arange(1, horizon + 1)
    return steps % period != 0 if period else np.ones(horizon, bool)


@pytest.mark.parametrize("period", [24, None])
def test_ets_forecasts_as_statsmodels_right_after_a_refit(period):
    y = seasonal_series(length=200, channels=1)
    method = baselines.ETS(period=period, window=200, refit_every=1000)
    method.learn(make_stream(y))
    fit = _statsmodels_fit(y[:, 0], period)
    mine, theirs, same = method.forecast(30)[:, 0], fit.forecast(30), _as_statsmodels(period, 30)
    np.testing.assert_allclose(mine[same], theirs[same], rtol=1e-9, atol=1e-9)
    if period:
        phi, level, trend = fit.params["damping_trend"], fit.level[-1], fit.trend[-1]
        textbook = level + sum(phi**k for k in range(1, 25)) * trend + fit.season[-1]
        assert mine[23] == pytest.approx(textbook, rel=1e-9)


def test_ets_between_refits_equals_statsmodels_filtering_the_new_rows_with_the_same_parameters():
    y = seasonal_series(length=260, channels=1)[:, 0]
    method = baselines.ETS(period=24, window=200, refit_every=1000)
    method.learn(make_stream(y[:200]))
    method.forecast(1)  # fits on rows 0..199
    method.learn(make_stream(y[200:]))  # 60 rows through the recursions, no refit
    assert method.refits == 1
    fit = _statsmodels_fit(y[:200], 24)
    p = fit.params
    refiltered = _statsmodels_fit(
        y,
        24,
        init="known",
        initial=dict(
            initial_level=p["initial_level"], initial_trend=p["initial_trend"], initial_seasonal=p["initial_seasons"]
        ),
        smoothing_level=p["smoothing_level"],
        smoothing_trend=p["smoothing_trend"],
        smoothing_seasonal=p["smoothing_seasonal"],
        damping_trend=p["damping_trend"],
        optimized=False,
    )
    same = _as_statsmodels(24, 48)
    np.testing.assert_allclose(method.forecast(48)[same, 0], refiltered.forecast(48)[same], rtol=1e-8, atol=1e-8)


def test_ets_refits_on_its_schedule():
    y = seasonal_series(length=300, channels=1)
    method = baselines.ETS(period=24, window=100, refit_every=50)
    at = prequential.origins(99, 290, stride=10)
    prequential.run(method, make_stream(y), at, horizon=4)
    assert method.refits == 4  # at rows 99, 149, 199 and 249: every 50 rows learnt


def test_ets_needs_two_periods_in_its_window():
    with pytest.raises(ValueError, match="at least two periods"):
        baselines.ETS(period=24, window=40, refit_every=10)


def test_snarimax_forecasts_each_channel_as_river_does_on_that_channel_alone():
    y = seasonal_series(length=120, period=12, channels=2)
    both = baselines.Snarimax(p=2, d=1, q=1, m=12, sp=1)
    both.learn(make_stream(y))
    for c in range(2):
        alone = baselines.Snarimax(p=2, d=1, q=1, m=12, sp=1)
        alone.learn(make_stream(y[:, c]))
        np.testing.assert_allclose(both.forecast(6)[:, c], alone.forecast(6)[:, 0])


def _every_baseline():
    yield baselines.Persistence()
    yield baselines.SeasonalNaive(period=24)
    yield baselines.SeasonalLevel(period=24)
    yield baselines.ETS(period=24, window=96, refit_every=24)
    yield baselines.Snarimax(p=2, d=1, q=1, m=24, sp=1)


@pytest.mark.parametrize("method", list(_every_baseline()), ids=lambda m: m.name)
def test_contract_forecast_length_equals_horizon_and_inputs_stay_untouched(method):
    y = seasonal_series(length=150, channels=3)
    stream = make_stream(y)
    forecasts = prequential.run(method, stream, prequential.origins(100, 140, stride=8), horizon=7)
    assert forecasts.shape == (6, 7, 3)
    assert np.all(np.isfinite(forecasts))
    np.testing.assert_array_equal(stream.y, y)
