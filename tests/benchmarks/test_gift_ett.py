"""GIFT-Eval's ETT windows and metrics (benchmarks/gift_ett.py): the windows, the metrics, the naive rows."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from forecaster.io.datasets import data_dir

from support import benchmark

accuracy = benchmark("accuracy")
gift = benchmark("gift_ett")

HAS_ETTM = all((data_dir() / "ett" / f"ETTm{n}.csv").is_file() for n in (1, 2))


def quiet(*_):
    pass


@pytest.mark.parametrize("horizon, count", [(48, 20), (480, 4), (720, 3)])
def test_the_test_part_is_the_last_min_20_ceil_a_tenth_of_the_rows_over_h_windows(horizon, count):
    starts = gift.window_starts(17420, horizon)
    assert len(starts) == gift.window_count(17420, horizon) == count
    assert starts[-1] + horizon == 17420
    assert np.all(np.diff(starts) == horizon)


def test_the_seasonal_error_is_the_daily_naive_mae_of_the_whole_past_and_lag_1_when_too_short():
    past = np.arange(30.0)[:, None] ** 2  # y[t] - y[t - 24] = 48 t - 576 for t = 24..29
    assert gift.seasonal_error(past)[0] == pytest.approx(np.mean([48 * t - 576 for t in range(24, 30)]))
    assert gift.seasonal_error(past[:24])[0] == pytest.approx(np.mean(np.diff(past[:24, 0])))


def test_mase_scales_each_window_and_channel_by_its_own_past_and_crps_is_the_weighted_quantile_loss():
    y = np.stack([np.arange(50.0), 2.0 * np.arange(50.0)], axis=1)  # seasonal errors 24 and 48
    starts = np.array([40, 45])
    quantiles = np.stack([np.broadcast_to(y[s : s + 5], (9, 5, 2)) + 1.0 for s in starts])  # every level 1 too high
    mase, crps = gift.score(y, starts, quantiles)
    assert mase == pytest.approx((1 / 24 + 1 / 48) / 2)
    actual = np.stack([y[s : s + 5] for s in starts])
    # every quantile above its actual by 1: each element's loss 2 (1 - level)
    expected = np.mean(2 * (1 - np.array(gift.LEVELS)) * actual.size / np.abs(actual).sum())
    assert crps == pytest.approx(expected)


def test_the_statsforecast_quantiles_centre_on_the_point_forecast_and_increase():
    past = np.sin(np.arange(200) * 2 * np.pi / 24) + 0.01 * np.arange(200)
    naive = gift.statsforecast_quantiles("naive", past, 48)
    seasonal = gift.statsforecast_quantiles("seasonal_naive", past, 48)
    np.testing.assert_allclose(naive[gift.MEDIAN], past[-1], rtol=1e-6)
    np.testing.assert_allclose(seasonal[gift.MEDIAN], np.tile(past[-24:], 2), rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(naive, axis=0) > 0) and np.all(np.diff(seasonal, axis=0) > 0)


def test_hourly_sums_add_the_four_quarter_hours_from_each_whole_hour():
    times = 1_467_331_200.0 + 900.0 * np.arange(8)  # 2016-07-01 00:00 UTC on
    values = np.arange(16.0).reshape(8, 2)
    hours, sums = gift.hourly_sums(times, values)
    np.testing.assert_array_equal(hours, times[::4])
    np.testing.assert_array_equal(sums, [[0 + 2 + 4 + 6, 1 + 3 + 5 + 7], [8 + 10 + 12 + 14, 9 + 11 + 13 + 15]])
    with pytest.raises(ValueError, match="whole hour"):
        gift.hourly_sums(times[1:5], values[1:5])


@pytest.mark.skipif(not HAS_ETTM, reason="GIFT-Eval's ett/H are ETTm hourly sums: add data/ett/ETTm1.csv, ETTm2.csv")
def test_on_ettm_hourly_sums_the_naive_rows_reproduce_the_published_ones_within_1_percent():
    assert gift.main(["--check"]) == 0


# What ETTh's values at the hour give (they are not GIFT-Eval's hourly sums): MASE / CRPS.
ON_ETTH = {
    ("ett1/H/short", "seasonal_naive"): (1.0012, 0.2539),
    ("ett1/H/short", "naive"): (1.7429, 0.4327),
    ("ett2/H/short", "seasonal_naive"): (0.9353, 0.0951),
    ("ett2/H/short", "naive"): (1.0833, 0.1378),
}


@pytest.mark.skipif(HAS_ETTM, reason="the ETTm files are there: the test above reproduces the published rows")
def test_on_etth_values_the_naive_rows_miss_the_published_ones_and_the_check_says_so():
    rows = [r for d in gift.DATASETS for r in gift.evaluate(d, "short", list(gift.REPRODUCES), False, None, quiet)]
    found = {(r["config"], r["method"]): (round(r["mase"], 4), round(r["crps"], 4)) for r in rows}
    assert found == ON_ETTH
    missed = gift.gaps(rows)
    assert len(missed) == 7 and all("values at the hour" in line for line in missed)  # ett2 naive MASE: -0.4%


@pytest.fixture
def tiny(monkeypatch):
    """The ETT network made tiny, retraining every 24 rows, on ETTh2's first 300 rows: seconds on one thread."""
    protocol = accuracy.PROTOCOLS["etth1"]
    small = dict(hidden_size=8, steps=4, window=96, chunk=24, buffer=160, holdout=24, every=24)
    network = replace(protocol.network, retrain_steps=2, young_steps=2, resync_steps=48, **small)
    monkeypatch.setitem(accuracy.PROTOCOLS, "etth1", replace(protocol, network=network))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script: tiny matrices on a busy machine are ten times slower on two
    stream, _ = gift.load("ett2")
    yield stream[:300]
    torch.set_num_threads(threads)


def test_the_forecaster_serves_all_nine_levels_and_no_window_sees_a_row_after_its_start(tiny):
    starts = gift.window_starts(len(tiny), 24)  # 2 windows of 24: rows 252 and 276
    quantiles, (rounds, _) = gift.forecaster_quantiles("ett2", tiny, starts, 24, None)
    assert quantiles.shape == (2, 9, 24, 7) and rounds >= 5 and np.all(np.isfinite(quantiles))
    y = tiny.y.copy()
    y[starts[0] :] *= 1.5  # the first window is forecast before these rows, the second after some of them
    altered, _ = gift.forecaster_quantiles("ett2", replace(tiny, y=y), starts, 24, None)
    np.testing.assert_array_equal(altered[0], quantiles[0])
    assert not np.allclose(altered[1], quantiles[1])
