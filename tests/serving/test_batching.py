"""What the engine serves and learns does not depend on how the stream was cut into batches: a year of
history loaded in two polls is served as the same year fed a few records at a time."""

import dataclasses
from datetime import datetime

import numpy as np
import pytest

from forecaster.build import seeded_model
from forecaster.config import Intervals
from forecaster.io import datasets
from forecaster.serving.engine import Engine

from support import make_pipeline, observations


def hours(columns=("drybulb_c",), length=600):
    """Greensboro's first `length` hours, each column a series of its own, in arrival order: every
    series' record of an hour, then the next hour's."""
    records = datasets.load("greensboro").records[:length]
    keys, times, values = [], [], []
    for record in records:
        time = datetime.fromisoformat(record["time"]).timestamp()
        for column in columns:
            keys.append(column), times.append(time), values.append(record[column])
    return keys, times, values


def serving_pipeline():
    """The daemon's serving path as shipped: the combination, gap filling, quantiles and quantile tracking."""
    pipeline = make_pipeline(horizon=24, combination=True, fill_gaps=True, quantiles=(0.1, 0.5, 0.9))
    return dataclasses.replace(pipeline, intervals=Intervals(tracking_rate=0.02))


def serve(stream, size):
    """Step the stream in batches of `size` records; the forecasts, the quantiles and the engine."""
    keys, times, values = stream
    pipeline = serving_pipeline()
    engine = Engine(pipeline, seeded_model(pipeline))
    points, quantiles = [], []
    for a in range(0, len(keys), size):
        forecasts, rejected = engine.step(
            observations(keys[a : a + size], times[a : a + size], values[a : a + size]), 0.0
        )
        assert not rejected
        points.append(forecasts.values)
        quantiles.append(np.stack([forecasts.quantiles[q] for q in (0.1, 0.5, 0.9)], axis=1))
    return np.concatenate(points), np.concatenate(quantiles), engine


@pytest.mark.parametrize("size", [1, 7])
def test_one_series_is_served_the_same_in_one_batch_as_in_small_ones(size):
    stream = hours()
    whole, whole_quantiles, one = serve(stream, len(stream[0]))

    cut, cut_quantiles, many = serve(stream, size)

    np.testing.assert_allclose(cut, whole, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(cut_quantiles, whole_quantiles, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(many.tracked, one.tracked, atol=1e-9)
    assert one.tracked.any()  # tracking moved the intervals as it went, in the one batch too
    assert many.coverage.value == pytest.approx(one.coverage.value)


def test_series_reporting_together_are_served_the_same_however_many_hours_a_batch_holds():
    stream = hours(columns=("drybulb_c", "dewpoint_c", "rel_humidity_pct"), length=300)
    whole, whole_quantiles, _ = serve(stream, len(stream[0]))

    cut, cut_quantiles, _ = serve(stream, 3 * 5)  # five hours of the three series a batch

    np.testing.assert_allclose(cut, whole, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(cut_quantiles, whole_quantiles, rtol=1e-5, atol=1e-4)
