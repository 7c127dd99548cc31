"""Training the warm-start encoder: new series cut from old ones, forecasts that never read ahead, today's
state without the encoder, and a loss that training lowers."""

import dataclasses

import numpy as np
import pytest
import torch

from forecaster.build import seeded_model
from forecaster.learning import tbptt
from forecaster.learning.warm_start import fit_encoder, forecasts, new_series, trainable, warm_start_loss
from forecaster.serving.engine import Engine
from forecaster.serving.warm_start import encoder_for, warm_state

from support import make_pipeline, observations, sines

HISTORY, FOLLOWING = 12, 6


@pytest.fixture(scope="module")
def pipeline():
    return make_pipeline(horizon=4)


def one_series(length: int, seed: int = 0):
    return observations(*sines(n_series=1, length=length, seed=seed))


def test_a_run_is_prepared_as_a_new_series_of_its_own_rows(pipeline):
    stream = one_series(100)
    length = HISTORY + FOLLOWING + pipeline.horizon

    runs = new_series(pipeline, stream, HISTORY, FOLLOWING, stride=10)

    assert len(runs) == len(range(0, 100 - length + 1, 10))
    (alone,) = tbptt.prepare(pipeline, stream.take(np.arange(30, 30 + length)))  # the run from row 30
    assert torch.equal(runs.inputs[:, 3], alone.inputs[: HISTORY + FOLLOWING])
    assert torch.equal(runs.targets[:, 3], alone.targets[HISTORY : HISTORY + FOLLOWING])


@pytest.mark.parametrize("later", [0, 3])
def test_no_state_or_forecast_reads_a_row_after_its_own(pipeline, later):
    """The encoder's state reads the history only; the forecast at following row k reads rows up to it."""
    length = HISTORY + FOLLOWING + pipeline.horizon
    stream = one_series(length)
    values = stream.values.copy()
    cut = HISTORY + later  # the newest row the first `later + 1` forecasts may read
    values[cut + 1 :] = 5 * values[cut + 1 :] + 7
    altered = dataclasses.replace(stream, values=values)
    model = seeded_model(pipeline)
    encoder = encoder_for(model, hidden_size=6)

    original, changed = (new_series(pipeline, s, HISTORY, FOLLOWING, stride=1) for s in (stream, altered))

    with torch.no_grad():
        history = slice(0, HISTORY)
        assert torch.equal(warm_state(model, changed.inputs[history], encoder), encoder(original.inputs[history]))
        for how in (encoder, None):
            before, after = forecasts(model, original, how), forecasts(model, changed, how)
            assert torch.equal(after[: later + 1], before[: later + 1])
            assert not torch.equal(after[later + 1 :], before[later + 1 :])  # the change did reach the later ones


def test_without_the_encoder_the_state_is_the_engines_after_stepping_the_history(pipeline):
    stream = one_series(HISTORY)
    model = seeded_model(pipeline)
    engine = Engine(pipeline, model)
    for i in range(HISTORY):  # a new series, a record a batch, as today
        engine.step(stream.take(np.array([i])), now=0.0)
    (prepared,) = tbptt.prepare(pipeline, stream)

    with torch.no_grad():
        expected = warm_state(model, prepared.inputs.unsqueeze(1))  # option off: stepped from zero

    slot = engine.store.lookup(["s0"])
    torch.testing.assert_close(engine.store.state[:, slot], expected, rtol=1e-5, atol=1e-6)


def test_without_the_encoder_the_forecasts_are_the_models_stepped_from_zero(pipeline):
    runs = new_series(pipeline, one_series(60), HISTORY, FOLLOWING, stride=5)
    model = seeded_model(pipeline)

    with torch.no_grad():
        outputs, _ = model(runs.inputs, model.initial_state(len(runs)))
        expected = model.head(outputs[HISTORY:], runs.inputs[HISTORY:])
        assert torch.equal(forecasts(model, runs), expected)


def test_training_lowers_the_warm_start_loss_and_is_seeded(pipeline):
    runs = new_series(pipeline, observations(*sines(n_series=4, length=200)), HISTORY, FOLLOWING, stride=2)
    model = seeded_model(pipeline)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    encoder, again = encoder_for(model, 8), encoder_for(model, 8)
    with torch.no_grad():
        before = warm_start_loss(model, runs, encoder).item()

    losses = fit_encoder(model, encoder, runs, steps=40, batch_size=16, learning_rate=3e-2)

    with torch.no_grad():
        after = warm_start_loss(model, runs, encoder).item()
    assert after < 0.5 * before
    assert fit_encoder(model, again, runs, steps=40, batch_size=16, learning_rate=3e-2) == losses
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # the forecaster stays frozen
    assert all(p.requires_grad for p in model.parameters())


def test_runs_with_a_flat_history_are_not_trained_on(pipeline):
    keys, times, values = sines(n_series=2, length=40)
    values = np.asarray(values)
    values[1::2][: HISTORY + 1] = 20.0  # series s1 holds one value through its history and first following row
    runs = new_series(pipeline, observations(keys, times, values), HISTORY, FOLLOWING, stride=100)

    kept = trainable(runs)

    assert len(runs) == 2 and len(kept) == 1
    assert torch.equal(kept.inputs[:, 0], runs.inputs[:, 0])
