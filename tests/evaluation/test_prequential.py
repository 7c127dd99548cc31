"""The prequential loop: a method learns only what has arrived, and forecasts line up with their targets."""

import numpy as np
import pytest

from forecaster.evaluation import prequential
from forecaster.evaluation.prequential import Stream


def make_stream(length=30, channels=2, covariates=1):
    t = np.arange(length, dtype=np.float64)
    y = np.stack([t * 10**c for c in range(channels)], axis=1)  # row i of channel c is i * 10^c
    x = np.ones((length, covariates))
    return Stream(
        3600.0 * t, 3600.0 * t, y, x, tuple(f"c{c}" for c in range(channels)), tuple(f"x{k}" for k in range(covariates))
    )


class Spy:
    """Remembers every row it is given and how many it had at each forecast; forecasts its newest row."""

    name = "spy"

    def __init__(self):
        self.times, self.rows_at_forecast = [], []
        self.last = None

    def learn(self, rows):
        self.times.extend(rows.times.tolist())
        if len(rows):
            self.last = rows.y[-1].copy()

    def forecast(self, horizon):
        self.rows_at_forecast.append(len(self.times))
        return np.repeat(self.last[None, :], horizon, axis=0)


def test_a_method_has_learnt_exactly_the_rows_up_to_each_origin():
    stream = make_stream()
    at = prequential.origins(4, 25, stride=3)
    spy = Spy()
    prequential.run(spy, stream, at, horizon=4)
    assert spy.rows_at_forecast == (at + 1).tolist()  # rows 0..t, nothing after t
    assert spy.times == stream.times[: at[-1] + 1].tolist()  # each row once, in order


def test_forecasts_come_back_in_origin_order():
    stream = make_stream()
    at = np.array([5, 9])
    forecasts = prequential.run(Spy(), stream, at, horizon=3)
    assert forecasts.shape == (2, 3, 2)
    np.testing.assert_array_equal(forecasts[:, 0, 0], [5.0, 9.0])  # the spy repeats row t
    np.testing.assert_array_equal(forecasts[:, 2, 1], [50.0, 90.0])


def test_targets_are_the_rows_after_each_origin_and_nan_past_the_end():
    stream = make_stream(length=10)
    actual = prequential.targets(stream, np.array([2, 8]), horizon=3)
    np.testing.assert_array_equal(actual[0, :, 0], [3.0, 4.0, 5.0])
    np.testing.assert_array_equal(actual[1, :, 1], [90.0, np.nan, np.nan])


def test_a_method_cannot_alter_the_stream():
    class Vandal(Spy):
        def learn(self, rows):
            rows.y[:] = 0.0

    with pytest.raises(ValueError, match="read-only"):
        prequential.run(Vandal(), make_stream(), np.array([3]), horizon=2)


def test_a_forecast_of_the_wrong_shape_names_the_method():
    class Flat(Spy):
        def forecast(self, horizon):
            return np.zeros(horizon)

    with pytest.raises(ValueError, match=r"spy.forecast\(2\) must return shape \(2, 2\), got \(2,\)"):
        prequential.run(Flat(), make_stream(), np.array([3]), horizon=2)


def test_origins_must_increase_within_the_stream():
    with pytest.raises(ValueError, match="origins must increase strictly"):
        prequential.run(Spy(), make_stream(length=10), np.array([3, 3]), horizon=1)
    with pytest.raises(ValueError, match="origins must increase strictly"):
        prequential.run(Spy(), make_stream(length=10), np.array([3, 10]), horizon=1)


def test_origins_take_every_stride_th_row():
    np.testing.assert_array_equal(prequential.origins(5, 12, stride=3), [5, 8, 11])
    with pytest.raises(ValueError, match="stride must be a positive integer, got 0"):
        prequential.origins(5, 12, stride=0)


def test_a_slice_keeps_channel_and_covariate_names():
    stream = make_stream()
    part = stream[3:7]
    assert len(part) == 4 and part.channels == ("c0", "c1") and part.covariates == ("x0",)
    np.testing.assert_array_equal(part.y[:, 0], [3.0, 4.0, 5.0, 6.0])


def test_a_stream_checks_its_shapes():
    with pytest.raises(ValueError, match=r"y must be \(T, 2\)"):
        Stream(np.zeros(3), np.zeros(3), np.zeros((3, 1)), np.zeros((3, 0)), ("a", "b"))
