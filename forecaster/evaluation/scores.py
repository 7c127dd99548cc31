"""Forecast accuracy: point metrics, interval coverage and the Diebold-Mariano test. Pure numpy.

Every metric takes `actual` and `forecast` of one shape and averages over all of their
elements, so one call scores a whole (origins, horizon, channels) block. Percentages
(`mape`, `smape`) are in percent; `coverage` is a fraction.
"""

from __future__ import annotations

import math

import numpy as np

try:  # the exact small-sample distribution when scipy is there (the `bench` extra)
    from scipy import stats as _stats
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    _stats = None


def _pair(actual, forecast) -> tuple[np.ndarray, np.ndarray]:
    """Both as float arrays of one shape, or a ValueError saying which shapes arrived."""
    actual, forecast = np.asarray(actual, dtype=np.float64), np.asarray(forecast, dtype=np.float64)
    if actual.shape != forecast.shape:
        raise ValueError(f"actual and forecast must have the same shape, got {actual.shape} and {forecast.shape}")
    if actual.size == 0:
        raise ValueError("actual and forecast must not be empty")
    return actual, forecast


def mse(actual, forecast) -> float:
    """Mean squared error."""
    actual, forecast = _pair(actual, forecast)
    return float(np.mean(np.square(actual - forecast)))


def mae(actual, forecast) -> float:
    """Mean absolute error."""
    actual, forecast = _pair(actual, forecast)
    return float(np.mean(np.abs(actual - forecast)))


def mape(actual, forecast) -> float:
    """Mean absolute percentage error, in percent: 100 * mean(|a - f| / |a|).

    Undefined when an actual is zero, so that raises: use `smape` or `mase` for series that cross zero.
    """
    actual, forecast = _pair(actual, forecast)
    if np.any(actual == 0):
        raise ValueError("mape: actual values must be non-zero (the percentage error of a zero is undefined)")
    return float(100.0 * np.mean(np.abs(actual - forecast) / np.abs(actual)))


def smape(actual, forecast) -> float:
    """Symmetric MAPE, in percent, between 0 and 200: 100 * mean(2|a - f| / (|a| + |f|)).

    A pair that is zero on both sides is a perfect forecast and counts 0.
    """
    actual, forecast = _pair(actual, forecast)
    denominator = np.abs(actual) + np.abs(forecast)
    ratio = np.divide(
        2.0 * np.abs(actual - forecast), denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    return float(100.0 * np.mean(ratio))


def naive_scale(train, period: int = 1) -> np.ndarray | float:
    """The in-sample MAE of the (seasonal) naive forecast on `train`: mean |y[t] - y[t - period]|.

    `train` is (T,) or (T, channels); the scale is per channel, along axis 0.
    """
    train = np.asarray(train, dtype=np.float64)
    if period < 1:
        raise ValueError(f"period must be a positive integer, got {period}")
    if len(train) <= period:
        raise ValueError(f"train must be longer than period ({period}), got {len(train)} values")
    scale = np.mean(np.abs(train[period:] - train[:-period]), axis=0)
    if np.any(scale == 0):
        raise ValueError("train is constant at the naive lag: the naive in-sample MAE is zero, MASE is undefined")
    return scale if scale.ndim else float(scale)


def mase(actual, forecast, train, period: int = 1) -> float:
    """Mean absolute scaled error (Hyndman and Koehler, 2006): errors divided by `naive_scale(train, period)`.

    `train` is the in-sample part, (T,) or (T, channels); with channels, the last axis of
    `actual` and `forecast` is the channel and each is scaled by its own naive MAE.
    """
    actual, forecast = _pair(actual, forecast)
    return float(np.mean(np.abs(actual - forecast) / naive_scale(train, period)))


def weighted_quantile_loss(actual, quantiles, levels) -> float:
    """The CRPS as GIFT-Eval and gluonts approximate it (`mean_weighted_sum_quantile_loss`).

    For each level q, the pinball loss 2 |(a - f_q)(1{a <= f_q} - q)| summed over every
    element and divided by the sum of |a|; then the mean over the levels. `quantiles` has
    the levels on its first axis: (levels, *actual.shape).
    """
    actual = np.asarray(actual, dtype=np.float64)
    quantiles = np.asarray(quantiles, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    if quantiles.shape != (len(levels), *actual.shape):
        expected = (len(levels), *actual.shape)
        raise ValueError(f"quantiles must be (levels, *actual.shape) = {expected}, got {quantiles.shape}")
    below = (actual <= quantiles).astype(np.float64)
    level = levels.reshape(-1, *([1] * actual.ndim))
    losses = 2.0 * np.abs((actual - quantiles) * (below - level))
    return float(np.mean(losses.reshape(len(levels), -1).sum(axis=1) / np.abs(actual).sum()))


def coverage(actual, lower, upper) -> float:
    """Fraction of actuals inside the closed interval [lower, upper]."""
    actual, lower = _pair(actual, lower)
    _, upper = _pair(actual, upper)
    if np.any(lower > upper):
        raise ValueError("lower must not exceed upper")
    return float(np.mean((actual >= lower) & (actual <= upper)))


def diebold_mariano(errors_a, errors_b, horizon: int = 1, power: int = 2) -> tuple[float, float]:
    """Test equal accuracy of two forecasts from their errors on the same targets; returns (statistic, p-value).

    The loss differential d_t = |e_a,t|^power - |e_b,t|^power; its mean's variance uses the
    autocovariances up to lag horizon - 1, since h-step errors overlap (Diebold and Mariano,
    1995), and the statistic gets the small-sample correction of Harvey, Leybourne and
    Newbold (1997), compared with Student's t on T - 1 degrees of freedom (a standard normal
    without scipy). Two-sided. A positive statistic says forecast a has the larger loss.
    As R's forecast::dm.test, a non-positive variance estimate falls back to horizon 1.
    """
    a, b = _pair(errors_a, errors_b)
    if a.ndim != 1:
        raise ValueError(f"errors must be one-dimensional series, got shape {a.shape}")
    if horizon < 1:
        raise ValueError(f"horizon must be a positive integer, got {horizon}")
    d = np.abs(a) ** power - np.abs(b) ** power
    n = len(d)
    if n < 2:
        raise ValueError(f"need at least 2 errors, got {n}")
    variance = _long_run_variance(d, horizon)
    if variance <= 0 and horizon > 1:
        horizon, variance = 1, _long_run_variance(d, 1)
    if variance <= 0:
        raise ValueError("the loss differential is constant: the Diebold-Mariano statistic is undefined")
    statistic = d.mean() / math.sqrt(variance / n)
    statistic *= math.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)
    return float(statistic), _two_sided_p(statistic, n - 1)


def _long_run_variance(d: np.ndarray, horizon: int) -> float:
    """gamma_0 + 2 * sum of gamma_k for k < horizon, autocovariances with divisor T."""
    centred = d - d.mean()
    n = len(d)
    gammas = [float(np.dot(centred[k:], centred[: n - k])) / n for k in range(min(horizon, n))]
    return gammas[0] + 2.0 * sum(gammas[1:])


def _two_sided_p(statistic: float, dof: int) -> float:
    """P(|T| >= |statistic|) for Student's t with `dof` degrees of freedom, or the normal without scipy."""
    if _stats is not None:
        return float(2.0 * _stats.t.sf(abs(statistic), dof))
    return math.erfc(abs(statistic) / math.sqrt(2.0))
