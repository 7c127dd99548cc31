"""`forecaster inspect` rebuilds a series' latest forecast from what the checkpoint holds."""

import dataclasses

import numpy as np
import pytest
import torch

from forecaster.build import seeded_model
from forecaster.config import Retraining, Training
from forecaster.serving.engine import Engine
from forecaster.tools.inspection import series_view

from support import make_pipeline, observations, random_walks


def engine_after_walks(pipeline) -> tuple[Engine, dict]:
    """An engine stepped through random walks with a trained-looking highway; the latest forecast of each series."""
    model = seeded_model(pipeline)
    if model.highway is not None:
        with torch.no_grad():
            model.highway.weight.normal_(0, 0.1)  # not the zeros it starts from
    engine = Engine(pipeline, model)
    forecasts, _ = engine.step(observations(*random_walks(n_series=3, length=10)), now=0.0)
    latest = {key: values for key, values in zip(forecasts.keys, forecasts.values)}  # the newest per key wins
    return engine, latest


@pytest.mark.parametrize(
    "highway, season",
    [(False, None), (True, None), (False, 4), (True, 6)],
    ids=["plain", "highway", "season", "highway-season"],
)
def test_the_view_gives_the_forecast_the_engine_emitted(highway, season):
    pipeline = make_pipeline(highway=highway, season=season)
    pipeline = dataclasses.replace(
        pipeline,
        training=Training(window=8, chunk=4),
        retraining=Retraining(enabled=True, buffer=16, holdout=4, resync_steps=16),
    )
    engine, latest = engine_after_walks(pipeline)

    view = series_view(engine, "s1")

    np.testing.assert_allclose(view.forecast_values, latest["s1"], rtol=1e-5)


def test_a_highway_without_buffered_inputs_gives_no_forecast_rather_than_a_wrong_one():
    engine, _ = engine_after_walks(make_pipeline(highway=True))  # retraining off: nothing is buffered

    view = series_view(engine, "s1")

    assert view.forecast_values == [] and len(view.forecast_times) == engine.pipeline.horizon
