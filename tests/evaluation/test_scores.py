"""Accuracy metrics and the Diebold-Mariano test, against values worked out by hand."""

import math

import numpy as np
import pytest

from forecaster.evaluation import scores

ACTUAL = [2.0, 4.0, -1.0, 5.0]
FORECAST = [1.0, 4.0, 1.0, 2.0]  # errors 1, 0, -2, 3


def test_mse_and_mae_average_squared_and_absolute_errors():
    assert scores.mse(ACTUAL, FORECAST) == pytest.approx((1 + 0 + 4 + 9) / 4)
    assert scores.mae(ACTUAL, FORECAST) == pytest.approx((1 + 0 + 2 + 3) / 4)


def test_metrics_average_over_every_element_of_a_block():
    actual = np.zeros((3, 2, 2))
    forecast = np.zeros((3, 2, 2))
    forecast[0, 0, 0] = 6.0
    assert scores.mae(actual, forecast) == pytest.approx(6 / 12)
    assert scores.mse(actual, forecast) == pytest.approx(36 / 12)


def test_mape_is_in_percent():
    # |2-1|/2, |4-4|/4, |-1-1|/1, |5-2|/5 = 0.5, 0, 2, 0.6
    assert scores.mape(ACTUAL, FORECAST) == pytest.approx(100 * (0.5 + 0 + 2 + 0.6) / 4)


def test_mape_refuses_a_zero_actual():
    with pytest.raises(ValueError, match="non-zero"):
        scores.mape([0.0, 1.0], [1.0, 1.0])


def test_smape_is_symmetric_and_bounded():
    # 2|a-f|/(|a|+|f|): 2/3, 0, 4/2, 6/7
    expected = 100 * (2 / 3 + 0 + 2 + 6 / 7) / 4
    assert scores.smape(ACTUAL, FORECAST) == pytest.approx(expected)
    assert scores.smape(FORECAST, ACTUAL) == pytest.approx(expected)
    assert scores.smape([1.0], [-1.0]) == pytest.approx(200.0)


def test_smape_counts_zero_against_zero_as_perfect():
    assert scores.smape([0.0, 1.0], [0.0, 3.0]) == pytest.approx(100 * (0 + 1.0) / 2)


def test_mase_scales_by_the_in_sample_naive_mae():
    train = [1.0, 3.0, 2.0, 6.0]  # one-step changes 2, 1, 4: naive MAE 7/3
    assert scores.mase(ACTUAL, FORECAST, train) == pytest.approx((6 / 4) / (7 / 3))


def test_mase_divides_by_the_in_sample_mae_of_the_seasonal_naive():
    train = [1.0, 3.0, 2.0, 6.0, 4.0]  # lag-2 changes 1, 3, 2: seasonal naive MAE 2
    assert scores.mase(ACTUAL, FORECAST, train, period=2) == pytest.approx((6 / 4) / 2)


def test_mase_scales_each_channel_by_its_own_naive_mae():
    train = np.array([[0.0, 0.0], [1.0, 10.0], [0.0, 0.0]])  # naive MAE 1 and 10
    actual = np.zeros((2, 2))
    forecast = np.array([[1.0, 10.0], [3.0, 30.0]])  # every scaled error: 1, 1, 3, 3
    assert scores.mase(actual, forecast, train) == pytest.approx(2.0)


def test_mase_refuses_a_constant_training_part():
    with pytest.raises(ValueError, match="MASE is undefined"):
        scores.mase([1.0], [2.0], [5.0, 5.0, 5.0])


def test_weighted_quantile_loss_sums_each_levels_pinball_loss_over_the_sum_of_actuals_then_averages():
    actual = np.array([2.0, -4.0])
    quantiles = np.array([[1.0, -4.0], [3.0, -2.0]])  # levels 0.1 and 0.9
    # level 0.1: 2|(2-1)(0-0.1)| + 0 = 0.2; level 0.9: 2|(2-3)(1-0.9)| + 2|(-4+2)(1-0.9)| = 0.2 + 0.4
    expected = (0.2 / 6 + 0.6 / 6) / 2
    assert scores.weighted_quantile_loss(actual, quantiles, [0.1, 0.9]) == pytest.approx(expected)


def test_weighted_quantile_loss_of_the_median_alone_is_the_mae_over_the_mean_absolute_actual():
    assert scores.weighted_quantile_loss(ACTUAL, [FORECAST], [0.5]) == pytest.approx(6 / 12)


def test_weighted_quantile_loss_wants_the_levels_on_the_first_axis():
    with pytest.raises(ValueError, match="levels"):
        scores.weighted_quantile_loss(ACTUAL, FORECAST, [0.5])


def test_coverage_counts_the_interval_ends_as_inside():
    actual = [1.0, 2.0, 3.0, 4.0]
    assert scores.coverage(actual, [1.0, 0.0, 3.5, 0.0], [1.0, 1.5, 4.0, 4.0]) == pytest.approx(2 / 4)


def test_coverage_refuses_crossed_bounds():
    with pytest.raises(ValueError, match="lower must not exceed upper"):
        scores.coverage([1.0], [2.0], [0.0])


def test_shapes_must_match():
    with pytest.raises(ValueError, match=r"same shape, got \(2,\) and \(3,\)"):
        scores.mae([1.0, 2.0], [1.0, 2.0, 3.0])


# Loss differential for squared errors of A = [1, -2, 3, 0, 2] and B = [1, 1, -1, 1, 1]:
# d = [0, 3, 8, -1, 3], mean 2.6, centred [-2.6, 0.4, 5.4, -3.6, 0.4];
# gamma_0 = 49.2 / 5 = 9.84, gamma_1 = -19.76 / 5 = -3.952, gamma_2 = -13.32 / 5 = -2.664.
A = [1.0, -2.0, 3.0, 0.0, 2.0]
B = [1.0, 1.0, -1.0, 1.0, 1.0]


def _t4_two_sided(t):
    """Student's t with 4 degrees of freedom in closed form: p = 1 - u (3 - u^2) / 2, u = t / sqrt(t^2 + 4)."""
    u = abs(t) / math.sqrt(t * t + 4)
    return 1 - u * (3 - u * u) / 2


def test_diebold_mariano_one_step_is_the_hln_corrected_statistic_with_a_t_p_value():
    # DM = 2.6 / sqrt(9.84 / 5); HLN factor sqrt((5 + 1 - 2) / 5)
    expected = 2.6 / math.sqrt(9.84 / 5) * math.sqrt(4 / 5)
    statistic, p = scores.diebold_mariano(A, B)
    assert statistic == pytest.approx(expected, rel=1e-9)
    assert p == pytest.approx(_t4_two_sided(expected), rel=1e-6)


def test_diebold_mariano_uses_autocovariances_up_to_horizon_minus_one():
    # variance 9.84 - 2 * 3.952 = 1.936; HLN factor sqrt((5 + 1 - 4 + 2 / 5) / 5)
    expected = 2.6 / math.sqrt(1.936 / 5) * math.sqrt(2.4 / 5)
    statistic, p = scores.diebold_mariano(A, B, horizon=2)
    assert statistic == pytest.approx(expected, rel=1e-9)
    assert p == pytest.approx(_t4_two_sided(expected), rel=1e-6)


def test_diebold_mariano_falls_back_to_one_step_when_the_variance_is_not_positive():
    # horizon 3: 1.936 - 2 * 2.664 < 0, so the one-step variance and correction are used
    assert scores.diebold_mariano(A, B, horizon=3) == pytest.approx(scores.diebold_mariano(A, B))


def test_diebold_mariano_with_power_1_compares_absolute_errors():
    # d = [0, 1, 2, -1, 1], mean 0.6, centred [-0.6, 0.4, 1.4, -1.6, 0.4]: gamma_0 = 5.2 / 5
    expected = 0.6 / math.sqrt(1.04 / 5) * math.sqrt(4 / 5)
    statistic, _ = scores.diebold_mariano(A, B, power=1)
    assert statistic == pytest.approx(expected, rel=1e-9)


def test_diebold_mariano_is_antisymmetric():
    statistic, p = scores.diebold_mariano(A, B)
    swapped, p_swapped = scores.diebold_mariano(B, A)
    assert swapped == pytest.approx(-statistic)
    assert p_swapped == pytest.approx(p)


def test_diebold_mariano_without_scipy_uses_the_normal(monkeypatch):
    monkeypatch.setattr(scores, "_stats", None)
    statistic, p = scores.diebold_mariano(A, B)
    assert p == pytest.approx(math.erfc(statistic / math.sqrt(2)))


def test_diebold_mariano_refuses_identical_losses():
    with pytest.raises(ValueError, match="loss differential is constant"):
        scores.diebold_mariano(A, [-x for x in A])


def test_diebold_mariano_rejects_a_real_difference_and_not_noise():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((2, 2000))
    _, p_equal = scores.diebold_mariano(noise[0], noise[1])
    _, p_worse = scores.diebold_mariano(2 * noise[0], noise[1])
    assert p_equal > 0.05
    assert p_worse < 1e-6
