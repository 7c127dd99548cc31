"""The engine's fast inference step equals the reference model, and leaves the engine's forecasts unchanged."""

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn as nn

from forecaster.build import seeded_model
from forecaster.config import Calendar
from forecaster.serving import engine as engine_module
from forecaster.serving import fused_step, scaling
from forecaster.serving.cadence import calendar_features
from forecaster.serving.engine import Engine
from forecaster.serving.fused_step import FusedStep
from forecaster.serving.model import Forecaster, ModelSpec

from support import make_pipeline, observations, torch_reference

VARIANTS = [("gru", "tanh"), ("lstm", "tanh"), ("rnn", "tanh"), ("rnn", "relu")]
IDS = [f"{c}-{n}" for c, n in VARIANTS]
FLAGS = list(itertools.product([False, True], repeat=2))  # (layer_norm, residual)


@pytest.fixture(params=["onednn", "addmm"])
def matmul(request, monkeypatch):
    """Every test runs on both matmul paths: oneDNN where torch has it, and the plain addmm fallback."""
    if request.param == "addmm":
        monkeypatch.setattr(fused_step, "_onednn_weight", lambda weight, bias: None)
    else:
        monkeypatch.setattr(fused_step, "ONEDNN_MIN_MACS", 0)  # even the tests' small products
    return request.param


def make(cell="gru", nonlinearity="tanh", layer_norm=False, residual=False, num_layers=2, seed=0, device="cpu"):
    """A seeded model with non-trivial layer-norm affines, so a norm mishandled cannot hide behind gain 1, bias 0."""
    torch.manual_seed(seed)
    model = Forecaster(
        ModelSpec(
            cell=cell,
            input_size=3,
            hidden_size=8,
            num_layers=num_layers,
            horizon=4,
            nonlinearity=nonlinearity,
            layer_norm=layer_norm,
            residual=residual,
        )
    )
    with torch.no_grad():
        for norm in model.modules():
            if isinstance(norm, nn.LayerNorm):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)
    return model.to(device).eval()


def inputs(model, T=8, B=23, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(T, B, model.spec.input_size, generator=g)
    state = torch.randn(model.spec.num_layers, B, model.state_width, generator=g)
    return x.to(device), state.to(device)


@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_equals_torch_recurrent_layer_then_the_head(cell, nonlinearity, matmul, device):
    """The reference is torch's layer on the CPU, on every device: cuDNN's recurrent layers may use
    TF32 (seen on an H100: 3e-4 off float32), which would make them a poor yardstick for float32.
    On CUDA the two devices sum in different orders, hence the looser tolerance there."""
    model = make(cell, nonlinearity, device=device)
    ref = torch_reference(copy.deepcopy(model).cpu())
    x, state = inputs(model, device=device)
    H = model.spec.hidden_size
    on_cpu = state.cpu()
    ref_state = (on_cpu[..., :H].contiguous(), on_cpu[..., H:].contiguous()) if cell == "lstm" else on_cpu
    step = FusedStep(model, block_rows=7)  # 23 rows: blocks of 7, 7, 7 and 2
    fast_state = state.clone()
    with torch.no_grad():
        ref_out, ref_new = ref(x.cpu(), ref_state)
        fast_out = torch.stack([step.step_(x_t, fast_state) for x_t in x])
        expected = model.head(ref_out.to(device), x)
    if cell == "lstm":
        ref_new = torch.cat(ref_new, -1)  # (h, c) -> [h | c]
    atol = 1e-6 if device == "cpu" else 1e-5
    torch.testing.assert_close(fast_out, expected, atol=atol, rtol=0)
    torch.testing.assert_close(fast_state, ref_new.to(device), atol=atol, rtol=0)


@pytest.mark.parametrize("layer_norm,residual", FLAGS)
@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_is_as_close_to_exact_as_model_step_with_every_option(cell, nonlinearity, layer_norm, residual, matmul, device):
    """Against the model in float64: the fast step errs no more than the float32 reference itself.
    (Layer norm amplifies float32 rounding: three LSTM layers drift ~1e-5 from exact, either way.)"""
    model = make(cell, nonlinearity, layer_norm, residual, num_layers=3, device=device)
    exact = copy.deepcopy(model).double()
    x, state = inputs(model, device=device)
    step = FusedStep(model, block_rows=7)
    fast_state, exact_state = state.clone(), state.double()
    reference_error = fast_error = 0.0
    with torch.no_grad():
        for x_t in x:
            out, state = model.step(x_t, state)
            fast_out = step.step_(x_t, fast_state)
            exact_out, exact_state = exact.step(x_t.double(), exact_state)
            truth = torch.cat([exact.head(exact_out, x_t.double()).flatten(), exact_state.flatten()])
            reference_error = max(
                reference_error, _error(torch.cat([model.head(out, x_t).flatten(), state.flatten()]), truth)
            )
            fast_error = max(fast_error, _error(torch.cat([fast_out.flatten(), fast_state.flatten()]), truth))
    assert fast_error <= 2 * reference_error + 1e-6, (fast_error, reference_error)


def _error(values, truth) -> float:
    return (values.double() - truth).abs().max().item()


@pytest.mark.parametrize("cell,nonlinearity", VARIANTS, ids=IDS)
def test_steps_the_state_in_place_and_leaves_the_inputs_alone(cell, nonlinearity, matmul):
    model = make(cell, nonlinearity, residual=True)
    x, state = inputs(model, T=1)
    x0, before = x.clone(), state.clone()
    out = torch.full((23, 4), float("nan"))
    returned = FusedStep(model).step_(x[0], state, out=out)
    assert returned is out and torch.isfinite(out).all()
    assert torch.equal(x, x0)
    with torch.no_grad():
        _, expected = model.step(x0[0], before)
    torch.testing.assert_close(state, expected, atol=1e-6, rtol=0)


def test_a_single_row_equals_its_row_in_a_batch(matmul):
    model = make("lstm", residual=True)
    x, state = inputs(model, T=1)
    step = FusedStep(model)
    batch_state, row_state = state.clone(), state[:, 5:6].clone()
    batched = step.step_(x[0], batch_state)
    single = step.step_(x[0, 5:6], row_state)
    torch.testing.assert_close(single, batched[5:6], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(row_state, batch_state[:, 5:6], atol=1e-6, rtol=1e-6)


def test_a_highway_reads_the_inputs_of_the_step_it_forecasts_from(matmul):
    model = Forecaster(ModelSpec(cell="gru", input_size=3, hidden_size=8, num_layers=2, horizon=4, highway=True)).eval()
    with torch.no_grad():
        model.highway.weight.normal_()  # trained, not the zeros it starts from
    x, state = inputs(model)
    fast_state = state.clone()
    step = FusedStep(model, block_rows=7)
    with torch.no_grad():
        for x_t in x:
            out, state = model.step(x_t, state)
            torch.testing.assert_close(step.step_(x_t, fast_state), model.head(out, x_t), atol=1e-5, rtol=0)


def test_follows_the_model_when_its_weights_change(matmul):
    model, other = make("gru", seed=0), make("gru", seed=1)
    x, state = inputs(model, T=1)
    step = FusedStep(model)
    step.step_(x[0], state.clone())  # builds its copy of the weights
    model.load_state_dict(other.state_dict())  # in place, as a checkpoint restore does
    with torch.no_grad():
        out, _ = other.step(x[0], state)
        expected = other.head(out, x[0])
    torch.testing.assert_close(step.step_(x[0], state.clone()), expected, atol=1e-6, rtol=0)


def test_the_fallback_gives_the_same_numbers_as_onednn(monkeypatch):
    monkeypatch.setattr(fused_step, "ONEDNN_MIN_MACS", 0)
    model = make("gru", layer_norm=True, residual=True)
    x, state = inputs(model)
    with_onednn = FusedStep(model).step_(x[0], state.clone())
    monkeypatch.setattr(fused_step, "_onednn_weight", lambda weight, bias: None)
    fallback = FusedStep(model).step_(x[0], state.clone())
    torch.testing.assert_close(with_onednn, fallback, atol=1e-6, rtol=0)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
def test_cpu_products_go_to_onednn_when_torch_has_it():
    """Else the `onednn` runs of the tests above would quietly test addmm twice."""
    model = make("lstm")
    x, state = inputs(model, T=1)
    step = FusedStep(model)
    step.step_(x[0], state)
    assert all(layer.ih.packed is not None and layer.hh.packed is not None for layer in step._layers)


# -- the engine's forecasts -----------------------------------------------------------------------


def reference_forecasts(pipeline, model, batches) -> list[np.ndarray]:
    """The engine's contract written the plain way: each record on its own, series by series, in time
    order, through `scaling` and `model.step`; forecast = y + std * head. No waves, no fast path."""
    alpha, clip = scaling.decay(pipeline.scaling.halflife), pipeline.scaling.clip
    features = 1 + len(pipeline.record.covariates)
    states, moments, results = {}, {}, []
    with torch.no_grad():
        for batch in batches:
            forecasts = np.empty((len(batch), pipeline.horizon))
            for i in sorted(range(len(batch)), key=lambda i: batch.times[i]):
                key = batch.keys[i]
                x = torch.tensor(batch.values[i : i + 1], dtype=torch.float32)
                m = scaling.update(moments.get(key, scaling.Moments.zeros(1, features)), x, alpha)
                cal = torch.tensor(
                    calendar_features(batch.local_times[i : i + 1], pipeline.calendar), dtype=torch.float32
                )
                step_inputs = torch.cat([scaling.scale(m, x, clip), cal], 1)
                out, states[key] = model.step(step_inputs, states.get(key, model.initial_state(1)))
                moments[key] = m
                deltas = scaling.std(m)[:, :1] * model.head(out, step_inputs)
                forecasts[i] = batch.values[i, 0] + deltas.double().numpy()[0]
            results.append(forecasts)
    return results


def series_batches(n_series=40, batches=4, seed=0):
    """Poll batches where some series appear several times (several waves) and some not at all."""
    rng = np.random.default_rng(seed)
    clock, out = {}, []
    for _ in range(batches):
        keys = [f"s{k}" for k in rng.integers(0, n_series, size=3 * n_series // 2)]
        times = []
        for key in keys:
            clock[key] = clock.get(key, 1_600_000_000.0) + 1800.0
            times.append(clock[key])
        levels = np.array([10.0 ** (int(k[1:]) % 4) for k in keys])
        values = np.c_[levels * (1 + 0.1 * rng.standard_normal(len(keys))), rng.standard_normal((len(keys), 2))]
        out.append(observations(keys, times, values))
    return out


@pytest.mark.parametrize("layer_norm,residual", FLAGS)
@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_engine_forecasts_equal_the_plain_reference(cell, layer_norm, residual, matmul, monkeypatch):
    monkeypatch.setattr(engine_module, "_ROWS_PER_STEP", 7)  # waves of up to 60 rows, cut into pieces
    pipeline = make_pipeline(
        cell=cell,
        covariates=("a", "b"),
        layer_norm=layer_norm,
        residual=residual,
        calendar=Calendar(hour_of_day=True, day_of_week=True),
    )
    batches = series_batches()
    engine = Engine(pipeline, seeded_model(pipeline))
    got = [engine.step(batch, now=0.0)[0].values for batch in batches]
    expected = reference_forecasts(pipeline, seeded_model(pipeline), batches)
    for batch, g, e in zip(batches, got, expected):
        level = batch.values[:, :1]
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=0)
        np.testing.assert_allclose(g - level, e - level, rtol=0, atol=1e-5 * np.abs(level).max())
