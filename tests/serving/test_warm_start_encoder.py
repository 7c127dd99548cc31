"""The warm-start encoder writes the forecaster's state, of its shape, from a history window alone."""

import pytest
import torch

from forecaster.build import seeded_model
from forecaster.serving.warm_start import EncoderSpec, WarmStartEncoder, encoder_for, warm_state

from support import make_pipeline


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_the_encoded_state_has_the_models_state_shape(cell):
    model = seeded_model(make_pipeline(cell=cell))
    encoder = encoder_for(model, hidden_size=5)
    window = torch.randn(7, 3, model.spec.input_size)

    state = encoder(window)

    assert state.shape == model.initial_state(3).shape  # (num_layers, batch, state_width)
    out, _ = model.step(window[-1], state)  # the model steps on from it
    assert out.shape == (3, model.spec.hidden_size)


def test_each_series_is_encoded_from_its_own_window_alone():
    model = seeded_model(make_pipeline())
    encoder = encoder_for(model, hidden_size=5)
    window = torch.randn(6, 4, model.spec.input_size)
    changed = window.clone()
    changed[:, 1] += 1.0  # another series' rows

    with torch.no_grad():
        assert torch.equal(encoder(changed)[:, 0], encoder(window)[:, 0])
        assert not torch.equal(encoder(changed)[:, 1], encoder(window)[:, 1])


def test_without_an_encoder_the_state_is_the_model_stepped_from_zero():
    model = seeded_model(make_pipeline())
    window = torch.randn(6, 2, model.spec.input_size)

    with torch.no_grad():
        _, expected = model(window, model.initial_state(2))
        assert torch.equal(warm_state(model, window), expected)


def test_encoder_for_is_seeded_and_leaves_the_global_random_state_alone():
    model = seeded_model(make_pipeline())
    before = torch.random.get_rng_state()

    first, second = encoder_for(model, 5, seed=3), encoder_for(model, 5, seed=3)

    assert torch.equal(torch.random.get_rng_state(), before)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_a_window_of_the_wrong_shape_is_refused_with_the_shape_expected():
    encoder = WarmStartEncoder(EncoderSpec(input_size=5, hidden_size=4, num_layers=2, state_width=8))

    with pytest.raises(ValueError, match=r"window must have shape \(steps >= 1, batch, 5\), got \(3, 2, 4\)"):
        encoder(torch.zeros(3, 2, 4))
    with pytest.raises(ValueError, match="hidden_size must be a positive integer, got 0"):
        EncoderSpec(input_size=5, hidden_size=0, num_layers=2, state_width=8)
