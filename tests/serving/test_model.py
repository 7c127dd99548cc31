"""The recurrent network, specified over every cell kind."""

import dataclasses
import itertools
import re

import pytest
import torch
import torch.nn as nn

from forecaster.serving.model import CELLS, Forecaster, ModelSpec, changes, resized, split_head

from support import torch_reference

# every (cell, nonlinearity) the model offers
VARIANTS = [(cell, "tanh") for cell in CELLS] + [("rnn", "relu")]
IDS = [f"{c}-{n}" for c, n in VARIANTS]
FLAGS = list(itertools.product([False, True], repeat=2))  # (layer_norm, residual)


def make(cell="gru", nonlinearity="tanh", seed=0, **kw):
    """A small seeded model: input 3, hidden 8, 2 layers, horizon 4 unless told otherwise."""
    args = dict(cell=cell, input_size=3, hidden_size=8, num_layers=2, horizon=4, nonlinearity=nonlinearity)
    torch.manual_seed(seed)
    return Forecaster(ModelSpec(**{**args, **kw}))


def window(model, T=6, B=3, seed=1):
    """A random input window and a random (non-zero) starting state for `model`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, model.spec.input_size, generator=g)
    state = torch.randn(model.spec.num_layers, B, model.state_width, generator=g)
    return x, state


def step_through(model, x, state):
    """Feed a window one time step at a time, as the streaming engine does."""
    outs = []
    for x_t in x:
        out, state = model.step(x_t, state)
        outs.append(out)
    return torch.stack(outs), state


@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_equals_torch_recurrent_layer_with_copied_weights(cell, nonlinearity):
    model = make(cell, nonlinearity)
    ref = torch_reference(model)
    x, state = window(model, T=20, B=4)
    H = model.spec.hidden_size
    ref_state = (state[..., :H].contiguous(), state[..., H:].contiguous()) if cell == "lstm" else state
    with torch.no_grad():
        out, new_state = model(x, state)
        ref_out, ref_new = ref(x, ref_state)
    if cell == "lstm":
        ref_new = torch.cat(ref_new, -1)  # (h, c) -> [h | c]
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=0)
    torch.testing.assert_close(new_state, ref_new, atol=1e-6, rtol=0)


@pytest.mark.parametrize("layer_norm,residual", FLAGS)
@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_stepping_one_step_at_a_time_equals_forward_on_the_window(cell, nonlinearity, layer_norm, residual):
    model = make(cell, nonlinearity, layer_norm=layer_norm, residual=residual)
    x, state = window(model)
    with torch.no_grad():
        out, new_state = model(x, state)
        step_out, step_state = step_through(model, x, state)
    torch.testing.assert_close(step_out, out, atol=1e-6, rtol=0)
    torch.testing.assert_close(step_state, new_state, atol=1e-6, rtol=0)


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_batch_rows_are_independent(cell, nonlinearity, layer_norm):
    model = make(cell, nonlinearity, layer_norm=layer_norm, residual=True)
    x, state = window(model, B=5)
    with torch.no_grad():
        out, new_state = step_through(model, x, state)
        for b in range(5):
            out_b, state_b = step_through(model, x[:, b : b + 1], state[:, b : b + 1])
            # a one-row matmul may take another BLAS kernel (which one depends on the CPU and its
            # core count: 1.5e-6 apart on a 16-core machine): equal to float rounding, not bitwise
            torch.testing.assert_close(out_b, out[:, b : b + 1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(state_b, new_state[:, b : b + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_state_output_and_head_shapes_for_every_cell(cell, nonlinearity):
    model = make(cell, nonlinearity, num_layers=3)
    T, B, H, L = 7, 5, 8, 3
    assert model.state_width == (2 * H if cell == "lstm" else H)
    state = model.initial_state(B)
    assert state.shape == (L, B, model.state_width)
    assert state.dtype == torch.float32 and not state.any()
    x = torch.randn(T, B, 3)
    out, new_state = model(x, state)
    assert out.shape == (T, B, H)
    assert new_state.shape == (L, B, model.state_width)
    step_out, step_state = model.step(x[0], state)
    assert step_out.shape == (B, H) and step_state.shape == (L, B, model.state_width)
    assert model.head(out, x).shape == (T, B, 4)
    assert model.head(step_out, x[0]).shape == (B, 4)


def test_initial_state_follows_requested_dtype():
    model = make()
    assert model.initial_state(2, dtype=torch.float64).dtype == torch.float64


def test_a_state_of_the_wrong_width_is_refused():
    model = make("lstm")
    with pytest.raises(ValueError, match=re.escape("state must have shape (2, 3, 16) for x (3, 3), got (2, 3, 8)")):
        model.step(torch.zeros(3, 3), torch.zeros(2, 3, 8))


@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_inputs_and_state_are_not_mutated(cell, nonlinearity):
    model = make(cell, nonlinearity, layer_norm=True, residual=True)
    x, state = window(model)
    x0, state0 = x.clone(), state.clone()
    versions = (x._version, state._version)
    out, new_state = model(x, state)
    model.step(x[0], state)
    model.head(out, x).sum().backward()
    assert torch.equal(x, x0) and torch.equal(state, state0)
    assert (x._version, state._version) == versions


@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_gradients_reach_every_parameter_and_are_finite(cell, nonlinearity):
    model = make(cell, nonlinearity, layer_norm=True, residual=True, highway=True)
    x, state = window(model, T=30, B=4)
    out, _ = model(x, state)
    model.head(out, x).pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_a_fixed_seed_gives_identical_parameters(cell, nonlinearity):
    a, b = make(cell, nonlinearity, seed=7).state_dict(), make(cell, nonlinearity, seed=7).state_dict()
    c = make(cell, nonlinearity, seed=8).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_initialisation_is_uniform_within_one_over_sqrt_hidden(cell, nonlinearity):
    model = make(cell, nonlinearity, hidden_size=16)
    for cell_ in model.layers:
        for p in (cell_.weight_ih, cell_.weight_hh, cell_.bias_ih, cell_.bias_hh):
            assert p.abs().max() <= 0.25 and p.abs().max() > 0.2  # 1/sqrt(16)


def test_golden_gru_head_output():
    torch.manual_seed(0)
    model = Forecaster(ModelSpec(cell="gru", input_size=3, hidden_size=8, num_layers=2, horizon=4))
    x = torch.linspace(-1, 1, 5 * 2 * 3).reshape(5, 2, 3)  # (T, B, input)
    with torch.no_grad():
        out, _ = model(x, model.initial_state(2))
        y = model.head(out, x)
    assert y.shape == (5, 2, 4)
    assert y.sum().item() == pytest.approx(-0.9705024, abs=1e-5)  # computed once, from this code


def test_a_highway_adds_a_linear_map_of_the_steps_own_inputs_to_the_head():
    model = make("gru", highway=True)
    plain = make("gru")  # same seed: the same recurrent weights and readout
    x, state = window(model)
    out, _ = model(x, state)
    with torch.no_grad():
        model.highway.weight.copy_(torch.randn_like(model.highway.weight))

    expected = plain.head(out, x) + x @ model.highway.weight.T
    torch.testing.assert_close(model.head(out, x), expected)
    assert model.highway.bias is None


def test_a_new_highway_starts_at_zero_so_it_leaves_the_forecast_as_it_was():
    model, plain = make("lstm", highway=True), make("lstm")
    x, state = window(model)
    out, _ = model(x, state)
    torch.testing.assert_close(model.head(out, x), plain.head(out, x), rtol=0, atol=0)


def test_residual_adds_each_upper_layers_input_to_its_output():
    model = make("gru", num_layers=3, residual=True)
    x, state = window(model, T=1)
    with torch.no_grad():
        out, _ = model.step(x[0], state)
        h0, _ = model.layers[0](x[0], state[0])  # layer 0 has no residual: widths differ
        h1, _ = model.layers[1](h0, state[1])
        h2, _ = model.layers[2](h0 + h1, state[2])
    torch.testing.assert_close(out, h0 + h1 + h2, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_layer_norm_makes_each_projection_scale_free(cell, nonlinearity):
    model = make(cell, nonlinearity, layer_norm=True)
    for norm in model.modules():
        if isinstance(norm, nn.LayerNorm):
            norm.eps = 1e-12  # the epsilon is the only thing that sees scale; take it out of the way
    x, state = window(model)
    with torch.no_grad():
        out, new_state = model(x, state)
        for cell_ in model.layers:
            cell_.weight_ih.mul_(10)
            cell_.weight_hh.mul_(10)
        scaled_out, scaled_state = model(x, state)
    torch.testing.assert_close(scaled_out, out, atol=1e-4, rtol=0)
    torch.testing.assert_close(scaled_state, new_state, atol=1e-4, rtol=0)


def test_lstm_layer_norm_normalises_c_for_the_output_but_carries_it_raw():
    model = make("lstm", num_layers=1, layer_norm=True)
    cell = model.layers[0]
    with torch.no_grad():  # a non-trivial affine, so a skipped norm cannot hide behind gain 1, bias 0
        for norm in (cell.norm_ih, cell.norm_hh, cell.norm_c):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    x, state = window(model, T=1)
    with torch.no_grad():
        _, new_state = model.step(x[0], state)
        h0, c0 = state[0].split(8, -1)
        i, f, g, o = (cell.norm_ih(x[0] @ cell.weight_ih.T) + cell.norm_hh(h0 @ cell.weight_hh.T)).chunk(4, -1)
        c = f.sigmoid() * c0 + i.sigmoid() * g.tanh()
        h = o.sigmoid() * torch.tanh(cell.norm_c(c))
    torch.testing.assert_close(new_state[0], torch.cat([h, c], -1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_dropout_is_active_in_train_and_off_in_eval(cell, nonlinearity):
    model = make(cell, nonlinearity, dropout=0.5)
    plain = make(cell, nonlinearity, dropout=0.0)
    plain.load_state_dict(model.state_dict())
    x, state = window(model)
    with torch.no_grad():
        model.train()
        first, _ = model(x, state)
        second, _ = model(x, state)
        model.eval()
        evaluated, _ = model(x, state)
        again, _ = model(x, state)
        expected, _ = plain(x, state)
    assert not torch.equal(first, second)
    assert torch.equal(evaluated, again)
    torch.testing.assert_close(evaluated, expected, atol=0, rtol=0)


@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_dropout_spares_the_last_layers_output(cell, nonlinearity):
    model = make(cell, nonlinearity, num_layers=1, dropout=0.5)
    x, state = window(model)
    with torch.no_grad():
        trained, _ = model.train()(x, state)
        evaluated, _ = model.eval()(x, state)
    assert torch.equal(trained, evaluated)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"cell": "foo"}, "cell must be one of gru, lstm, rnn, got 'foo'"),
        ({"hidden_size": 0}, "hidden_size must be a positive integer, got 0"),
        ({"input_size": -3}, "input_size must be a positive integer, got -3"),
        ({"num_layers": 1.5}, "num_layers must be a positive integer, got 1.5"),
        ({"horizon": True}, "horizon must be a positive integer, got True"),
        ({"dropout": 1.0}, "dropout must be a number in [0, 1), got 1.0"),
        ({"dropout": -0.1}, "dropout must be a number in [0, 1), got -0.1"),
        ({"layer_norm": "yes"}, "layer_norm must be a bool, got 'yes'"),
        ({"cell": "rnn", "nonlinearity": "gelu"}, "nonlinearity must be one of tanh, relu, got 'gelu'"),
        ({"cell": "gru", "nonlinearity": "relu"}, "nonlinearity applies only to cell 'rnn', got 'relu' for cell 'gru'"),
        ({"quantiles": (0.9, 0.1)}, "quantiles must be distinct levels in (0, 1), increasing, got [0.9, 0.1]"),
        ({"quantiles": (0.5, 1.0)}, "quantiles must be distinct levels in (0, 1), increasing, got [0.5, 1.0]"),
    ],
)
def test_spec_states_the_violated_constraint(change, message):
    args = {"cell": "gru", "input_size": 3, "hidden_size": 8, "num_layers": 2, "horizon": 4, **change}
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelSpec(**args)


def test_spec_is_frozen():
    spec = ModelSpec(cell="gru", input_size=3, hidden_size=8, num_layers=2, horizon=4)
    with pytest.raises(AttributeError):
        spec.hidden_size = 16


@pytest.mark.parametrize("cell", CELLS)
def test_a_quantile_head_gives_the_point_forecast_then_each_level(cell):
    model = make(cell, quantiles=[0.1, 0.5, 0.9])  # a list, as a checkpoint's spec may hold it
    x, state = window(model)
    outputs, _ = model(x, state)

    point, quantiles = split_head(model.head(outputs, x), model.spec.horizon)

    assert model.spec.quantiles == (0.1, 0.5, 0.9)
    assert point.shape == (6, 3, 4) and quantiles.shape == (6, 3, 3, 4)
    torch.testing.assert_close(quantiles[:, :, 1], model.head(outputs, x)[..., 8:12])


def test_changes_name_only_the_fields_that_differ_old_to_new():
    old = ModelSpec(cell="gru", input_size=3, hidden_size=8, num_layers=2, horizon=13, quantiles=(0.1, 0.9))
    new = dataclasses.replace(old, horizon=26, layer_norm=True, quantiles=())

    assert changes(old, new) == "horizon 13 -> 26, layer_norm false -> true, quantiles 0.1/0.9 -> none"
    assert changes(old, old) == ""


@pytest.mark.parametrize("horizon", [2, 4, 7])
@pytest.mark.parametrize("cell", CELLS)
def test_a_resized_head_forecasts_the_shared_steps_as_before_and_later_ones_as_the_old_last(cell, horizon):
    model = make(cell, quantiles=[0.1, 0.9], highway=True)
    with torch.no_grad():
        model.highway.weight.normal_()  # a trained highway, not the zeros it starts with
    x, state = window(model)
    outputs, after = model(x, state)
    before = split_head(model.head(outputs, x), 4)

    new = resized(model, dataclasses.replace(model.spec, horizon=horizon, dropout=0.2))
    new_outputs, new_after = new.eval()(x, state)
    point, quantiles = split_head(new.head(new_outputs, x), horizon)

    torch.testing.assert_close(new_after, after)  # the body is the same network
    shared = min(horizon, 4)
    torch.testing.assert_close(point[..., :shared], before[0][..., :shared])
    torch.testing.assert_close(quantiles[..., :shared], before[1][..., :shared])
    torch.testing.assert_close(point[..., shared:], before[0][..., 3:4].expand_as(point[..., shared:]))
    torch.testing.assert_close(quantiles[..., shared:], before[1][..., 3:4].expand_as(quantiles[..., shared:]))


def test_resizing_refuses_a_change_of_the_body():
    model = make("gru")
    with pytest.raises(ValueError, match="not hidden_size 8 -> 16"):
        resized(model, dataclasses.replace(model.spec, hidden_size=16))
