"""Attention over each series' recent top outputs (model.attention): one code path, causal, carried in the state."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from forecaster import config
from forecaster.build import seeded_model
from forecaster.errors import ConfigError
from forecaster.learning import prune
from forecaster.serving.engine import Engine
from forecaster.serving.fused_step import FusedStep
from forecaster.serving.model import CELLS, Forecaster, ModelSpec
from forecaster.tools.inspection import top_output

from support import make_pipeline, observations, pipeline_yaml, random_walks


def make(cell="gru", attention=4, seed=0, **kw) -> Forecaster:
    """A seeded eval-mode model (input 3, hidden 8, 2 layers, horizon 4); with attention, an output map that is not
    zero, so the attention changes what the model says."""
    torch.manual_seed(seed)
    args = dict(cell=cell, input_size=3, hidden_size=8, num_layers=2, horizon=4, residual=True)
    model = Forecaster(ModelSpec(**{**args, **kw, "attention": attention}))
    if model.attention is not None:
        with torch.no_grad():
            nn.init.normal_(model.attention.out.weight, std=0.5)
            nn.init.normal_(model.attention.out.bias, std=0.5)
    return model.eval()


def window(model, T=10, B=5, seed=1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs (T, B, input) and a random starting state, its ring of past outputs included."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, model.spec.input_size, generator=g)
    return x, torch.randn(model.spec.num_layers, B, model.state_width, generator=g)


def forecasts_stepped(model, x, state) -> tuple[torch.Tensor, torch.Tensor]:
    """The head of every step, one step at a time as the engine steps a series, and the final state."""
    heads = []
    for x_t in x:
        out, state = model.step(x_t, state)
        heads.append(model.head(out, x_t))
    return torch.stack(heads), state


def test_without_attention_the_network_is_todays_weights_and_state():
    spec = dict(cell="lstm", input_size=3, hidden_size=8, num_layers=2, horizon=4)
    model = Forecaster(ModelSpec(**spec))
    assert ModelSpec(**spec).attention == 0
    assert model.attention is None and model.state_width == model.cell_width == 16
    assert not any(name.startswith("attention.") for name in model.state_dict())


@pytest.mark.parametrize("cell", CELLS)
def test_a_new_attention_leaves_every_forecast_bit_for_bit_as_it_was(cell):
    base = make(cell, attention=0)
    torch.manual_seed(0)
    attending = Forecaster(ModelSpec(**{**base.spec.__dict__, "attention": 3})).eval()  # its output map at zero
    attending.load_state_dict(base.state_dict(), strict=False)
    x, state = window(base)
    ring = torch.zeros(base.spec.num_layers, state.shape[1], attending.ring_width)
    with torch.no_grad():
        expected, _ = forecasts_stepped(base, x, state)
        got, _ = forecasts_stepped(attending, x, torch.cat([state, ring], -1))
    assert torch.equal(got, expected)


@pytest.mark.parametrize("cell", CELLS)
def test_forward_over_a_window_equals_step_in_a_loop(cell):
    model = make(cell)
    x, state = window(model)
    with torch.no_grad():
        outputs, final = model(x, state)
        stepped, stepped_final = forecasts_stepped(model, x, state)
    assert torch.equal(model.head(outputs, x), stepped)
    assert torch.equal(final, stepped_final)


def test_the_state_keeps_the_last_k_top_outputs_newest_last():
    model = make(attention=3, num_layers=3, residual=False)  # 3 * 8 numbers over 3 layers: 8 columns each
    x, state = window(model, T=5)
    tops = []
    with torch.no_grad():
        for x_t in x:
            _, state = model.step(x_t, state)
            tops.append(state[-1, :, : model.spec.hidden_size])  # without residuals the top output is the top h
    assert model.ring_width == 8
    assert torch.equal(model.ring(state), torch.stack(tops[-3:], 1))


@pytest.mark.parametrize("cell", CELLS)
def test_a_forecast_does_not_change_when_later_inputs_do(cell):
    model = make(cell, attention=6)
    x, state = window(model, T=12)
    later = x.clone()
    later[7:] = torch.randn(5, *x.shape[1:]) * 10
    with torch.no_grad():
        before = model.head(model(x, state)[0], x)
        after = model.head(model(later, state)[0], later)
    assert torch.equal(after[:7], before[:7])
    assert not torch.equal(after[7:], before[7:])


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_the_fused_step_equals_the_models_step_then_head(cell, layer_norm):
    model = make(cell, layer_norm=layer_norm)
    x, state = window(model, B=37)
    fused = FusedStep(model, block_rows=16)  # three blocks, the last one short
    fused_state = state.clone()
    with torch.no_grad():
        for x_t in x:
            out, state = model.step(x_t, state)
            expected = model.head(out, x_t)
            torch.testing.assert_close(fused.step_(x_t, fused_state), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused_state, state, atol=1e-5, rtol=1e-5)  # an LSTM's c grows


def test_inspection_rebuilds_the_attended_output_from_the_state():
    model = make()
    x, state = window(model, T=1)
    with torch.no_grad():
        out, state = model.step(x[0], state)
        torch.testing.assert_close(top_output(model, state), out, atol=1e-6, rtol=0)


def test_training_reaches_the_attention_through_the_same_step():
    model = make().train()
    x, state = window(model)
    model.head(model(x, state)[0], x).square().mean().backward()
    for name, parameter in model.attention.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_an_engine_checkpoint_round_trips_the_ring_exactly():
    pipeline = make_pipeline(attention=5)
    engine = Engine(pipeline, seeded_model(pipeline))
    with torch.no_grad():
        nn.init.normal_(engine.model.attention.out.weight)
    keys, times, values = random_walks(n_series=4, length=10)
    cut = times.index(1_600_000_000 + 3600.0 * 8)  # the first 8 hours before the checkpoint, 2 after
    engine.step(observations(keys[:cut], times[:cut], values[:cut]), now=0.0)
    assert engine.store.state[..., engine.model.cell_width :].abs().sum() > 0  # the ring holds outputs

    restored = Engine(pipeline, seeded_model(pipeline))
    restored.restore(engine.snapshot())
    series = ["s0", "s1", "s2", "s3"]
    held, again = (torch.as_tensor(e.store.slots(series)) for e in (engine, restored))
    assert torch.equal(restored.store.state[:, again], engine.store.state[:, held])
    later = observations(keys[cut:], times[cut:], values[cut:])
    expected, _ = engine.step(later, now=0.0)
    got, _ = restored.step(later, now=0.0)
    assert np.array_equal(got.values, expected.values)


def test_pruning_refuses_a_network_with_attention():
    model = make()
    with pytest.raises(ValueError, match="attention"):
        prune.select(model, [torch.arange(4)] * 2)


@pytest.mark.parametrize("value", [-1, 2.5, True])
def test_a_bad_k_is_refused_naming_the_field(value):
    with pytest.raises(ValueError, match=f"attention must be a non-negative integer, got {value!r}"):
        ModelSpec(cell="gru", input_size=3, hidden_size=8, num_layers=2, horizon=4, attention=value)


def test_a_negative_attention_in_a_pipeline_file_is_a_config_error_naming_it(tmp_path):
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "weather.yaml").write_text(pipeline_yaml("weather", "  attention: -4\n"))  # under model:
    (tmp_path / "config.yaml").write_text("pipelines:\n  - pipelines/weather.yaml\n")
    with pytest.raises(ConfigError, match=r"weather.yaml: model.attention: expected an integer >= 0, got -4"):
        config.load(tmp_path / "config.yaml", require_weights=False)
