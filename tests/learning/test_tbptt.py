"""Offline training: the inputs it prepares are the engine's, its BPTT is truncated, it is seeded."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from forecaster import config
from forecaster.build import load_model, model_spec, save_model, seeded_model
from forecaster.config import Combination, Gaps
from forecaster.errors import ConfigError
from forecaster.io import datasets
from forecaster.learning import pretrain, tbptt
from forecaster.serving import records
from forecaster.serving.engine import Engine
from forecaster.serving.fused_step import FusedStep
from forecaster.serving.model import Forecaster, ModelSpec
from forecaster.serving.records import Observations

CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"


@pytest.fixture(scope="module")
def loaded():
    return config.load(CONFIG, require_weights=False)


@pytest.fixture(scope="module")
def pipeline(loaded):
    """power_load with a small network and short windows, so every test here is quick; the network alone,
    without the combination, stepped record by record, since these tests compare the engine with the
    network's offline arithmetic."""
    real = loaded.pipeline("power_load")
    model = dataclasses.replace(real.model, hidden_size=16, dropout=0.0)
    training = dataclasses.replace(real.training, window=96, chunk=24, batch_size=8, steps=40, warmup_steps=5)
    return dataclasses.replace(
        real, model=model, horizon=6, training=training, combination=Combination(enabled=False), gaps=Gaps(fill=False)
    )


def taylor(pipeline, count=None, keys=None) -> Observations:
    """The first `count` records of the taylor dataset, through JSON as the daemon gets them."""
    chosen = datasets.load("taylor").records[:count]
    if keys is not None:  # spread the rows over several series keys
        chosen = [{**r, "region": keys[i % len(keys)]} for i, r in enumerate(chosen)]
    observations, rejected = records.decode([json.dumps(r).encode() for r in chosen], pipeline.record)
    assert rejected == []
    return observations


def take(observations: Observations, rows) -> Observations:
    """The observations at `rows`, as a poll batch of their own."""
    rows = np.asarray(rows)
    return Observations(
        keys=tuple(observations.keys[i] for i in rows),
        times=observations.times[rows],
        local_times=observations.local_times[rows],
        values=observations.values[rows],
        positions=np.arange(len(rows)),
    )


def offline_forecasts(model, series: tbptt.Series) -> torch.Tensor:
    """y[t] + std_t * head(forward(inputs)): what the engine's forecasts must be, (T, horizon) float64."""
    with torch.no_grad():
        outputs, _ = model(series.inputs.unsqueeze(1), model.initial_state(1))
        # the point forecast
        deltas = series.std[:, None] * model.head(outputs, series.inputs.unsqueeze(1))[:, 0, : model.spec.horizon]
    return series.actual[:, None] + deltas.double()


# -- prepare ---------------------------------------------------------------------------------


def test_prepare_gives_the_inputs_the_engine_feeds_the_model(pipeline):
    observations = taylor(pipeline, 300)
    model = seeded_model(pipeline)
    (series,) = tbptt.prepare(pipeline, observations)
    expected = offline_forecasts(model, series)

    one_by_one = Engine(pipeline, model)
    stepped = np.concatenate([one_by_one.step(take(observations, [i]), now=0.0)[0].values for i in range(300)])
    batched = Engine(pipeline, model).step(observations, now=0.0)[0].values

    for forecasts in (torch.as_tensor(stepped), torch.as_tensor(batched)):
        torch.testing.assert_close(forecasts, expected, rtol=1e-5, atol=0)
        # the deltas too, so a small error in the inputs cannot hide behind the level
        torch.testing.assert_close(
            forecasts - series.actual[:, None], expected - series.actual[:, None], rtol=1e-6, atol=1e-3
        )


def test_prepare_gives_the_engine_inputs_bit_for_bit(pipeline, monkeypatch):
    observations = taylor(pipeline, 300)
    model = seeded_model(pipeline)
    fed = []
    step = FusedStep.step_  # the engine's hot path into the model
    monkeypatch.setattr(
        FusedStep, "step_", lambda self, x, state, out=None: (fed.append(x.clone()), step(self, x, state, out))[1]
    )

    Engine(pipeline, model).step(observations, now=0.0)
    (series,) = tbptt.prepare(pipeline, observations)

    assert torch.equal(torch.cat(fed), series.inputs)


def test_prepare_groups_interleaved_series_by_key_in_time_order(pipeline):
    observations = taylor(pipeline, 252, keys=["north", "south", "south", "west"])
    shuffled = take(observations, np.random.default_rng(0).permutation(len(observations)))
    model = seeded_model(pipeline)
    batched = Engine(pipeline, model).step(shuffled, now=0.0)[0]  # the engine sorts each series by time itself

    prepared = tbptt.prepare(pipeline, shuffled)

    assert sorted(s.key for s in prepared) == ["north", "south", "west"]
    assert {s.key: len(s) for s in prepared} == {"north": 63, "south": 126, "west": 63}
    for series in prepared:
        rows = [i for i, key in enumerate(batched.keys) if key == series.key]
        order = np.argsort(batched.times[rows])
        engine_values = torch.as_tensor(batched.values[rows][order])
        torch.testing.assert_close(engine_values, offline_forecasts(model, series), rtol=1e-5, atol=0)


def test_prepare_keeps_the_first_of_repeated_timestamps(pipeline):
    observations = taylor(pipeline, 5)
    repeated = take(observations, [0, 1, 1, 2, 3, 4])
    values = repeated.values.copy()
    values[2] = -1.0  # the repeat, which the engine would refuse
    repeated = dataclasses.replace(repeated, values=values)

    (series,) = tbptt.prepare(pipeline, repeated)

    assert series.actual.tolist() == observations.values[:, 0].tolist()


def test_a_prepared_series_has_a_row_of_inputs_targets_and_mask_per_step(pipeline):
    (series,) = tbptt.prepare(pipeline, taylor(pipeline, 100))

    assert series.inputs.shape == (100, pipeline.input_size) and series.inputs.dtype == torch.float32
    assert series.targets.shape == series.mask.shape == (100, pipeline.horizon)
    assert series.targets.dtype == torch.float32 and series.mask.dtype == torch.bool
    assert series.actual.shape == series.std.shape == (100,)
    assert (series.std > 0).all()


def test_targets_are_future_changes_in_units_of_the_current_std(pipeline):
    (series,) = tbptt.prepare(pipeline, taylor(pipeline, 100))
    y, std = series.actual, series.std.double()

    for h in range(1, pipeline.horizon + 1):
        expected = (y[h:] - y[:-h]) / std[:-h]
        torch.testing.assert_close(series.targets[:-h, h - 1].double(), expected, rtol=1e-6, atol=1e-6)


def test_no_target_beyond_the_series_end_is_used(pipeline):
    (series,) = tbptt.prepare(pipeline, taylor(pipeline, 100))
    T, H = series.mask.shape
    t, h = torch.arange(T)[:, None], torch.arange(1, H + 1)[None, :]

    assert torch.equal(series.mask, t + h < T)
    assert (series.targets[~series.mask] == 0).all()


def test_head_of_a_series_equals_preparing_only_its_first_steps(pipeline):
    observations = taylor(pipeline, 100)
    (whole,) = tbptt.prepare(pipeline, observations)
    (first,) = tbptt.prepare(pipeline, take(observations, range(60)))

    cut = tbptt.head(whole, 60)

    for name in ("inputs", "targets", "mask", "actual", "std"):
        assert torch.equal(getattr(cut, name), getattr(first, name)), name


# -- truncated backpropagation through time ----------------------------------------------------


def small_model(cell="gru", seed=0, **spec) -> Forecaster:
    torch.manual_seed(seed)
    return Forecaster(
        ModelSpec(**{"cell": cell, "input_size": 3, "hidden_size": 8, "num_layers": 2, "horizon": 4, **spec})
    )


EVERY_KIND = [
    dict(cell="gru"),
    dict(cell="lstm"),
    dict(cell="rnn"),
    dict(cell="rnn", nonlinearity="relu"),
    dict(cell="gru", layer_norm=True, residual=True, dropout=0.2, num_layers=3),
    dict(cell="lstm", layer_norm=True, residual=True, dropout=0.2, num_layers=3),
    dict(cell="rnn", layer_norm=True, residual=True, num_layers=3, quantiles=(0.1, 0.9)),
]


@pytest.mark.parametrize("kind", EVERY_KIND, ids=lambda k: "-".join(f"{v}" for v in k.values()))
def test_under_tbptt_gradients_reach_every_parameter_and_stay_finite(kind):
    model = small_model(**kind).train()
    inputs, targets = torch.randn(16, 4, 3), torch.randn(16, 4, 4)
    mask = torch.ones_like(targets, dtype=torch.bool)

    for k, (forecasts, _) in enumerate(tbptt.chunks(model, inputs, model.initial_state(4), chunk=4, backprop=8)):
        model.zero_grad()
        rows = slice(4 * k, 4 * k + 4)
        tbptt.forecast_loss(forecasts, targets[rows], mask[rows], model.spec.quantiles).backward()
        for name, parameter in model.named_parameters():
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert any(p.grad.abs().sum() > 0 for p in model.layers[0].parameters())


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_gradients_stop_at_chunk_boundaries(cell):
    model = small_model(cell)
    inputs = torch.randn(12, 2, 3, requires_grad=True)
    state = model.initial_state(2)

    forecasts = [f for f, _ in tbptt.chunks(model, inputs, state, chunk=4)]
    forecasts[1].square().sum().backward()

    assert (inputs.grad[:4] == 0).all()  # chunk 1: cut off
    assert (inputs.grad[4:8] != 0).any()  # chunk 2: its own inputs
    assert (inputs.grad[8:] == 0).all()  # chunk 3: in the future


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_without_truncation_the_same_loss_reaches_earlier_inputs(cell):
    model = small_model(cell)
    inputs = torch.randn(12, 2, 3, requires_grad=True)

    outputs, _ = model(inputs, model.initial_state(2))
    model.head(outputs[4:8], inputs[4:8]).square().sum().backward()

    assert (inputs.grad[:4] != 0).any()


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_truncation_leaves_forward_values_unchanged(cell):
    model = small_model(cell)
    inputs = torch.randn(12, 2, 3)
    state = torch.randn(2, 2, model.state_width)

    pieces = list(tbptt.chunks(model, inputs, state, chunk=5))  # chunks of 5, 5 and 2
    outputs, final = model(inputs, state)

    assert [len(f) for f, _ in pieces] == [5, 5, 2]
    torch.testing.assert_close(torch.cat([f for f, _ in pieces]), model.head(outputs, inputs), rtol=0, atol=0)
    torch.testing.assert_close(pieces[-1][1], final, rtol=0, atol=0)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_backprop_k2_carries_gradients_exactly_k2_steps_back(cell):
    model = small_model(cell)
    inputs = torch.randn(16, 2, 3, requires_grad=True)

    forecasts = [f for f, _ in tbptt.chunks(model, inputs, model.initial_state(2), chunk=4, backprop=8)]
    forecasts[2].square().sum().backward()  # chunk 3 (steps 8..11) reaches back to step 4

    assert (inputs.grad[:4] == 0).all()
    assert (inputs.grad[4:8] != 0).any() and (inputs.grad[8:12] != 0).any()
    assert (inputs.grad[12:] == 0).all()


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_backprop_k2_leaves_forward_values_those_of_one_pass(cell):
    model = small_model(cell)
    inputs, state = torch.randn(14, 2, 3), torch.randn(2, 2, model.state_width)

    pieces = list(tbptt.chunks(model, inputs, state, chunk=4, backprop=12))
    outputs, final = model(inputs, state)

    torch.testing.assert_close(torch.cat([f for f, _ in pieces]), model.head(outputs, inputs), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pieces[-1][1], final, rtol=1e-6, atol=1e-6)


def test_backprop_must_be_a_multiple_of_the_chunk():
    model = small_model()
    with pytest.raises(ValueError, match="backprop .6. must be a multiple of chunk .4."):
        next(tbptt.chunks(model, torch.randn(8, 1, 3), model.initial_state(1), chunk=4, backprop=6))


# -- losses ----------------------------------------------------------------------------------


def test_the_pinball_loss_is_least_at_the_quantile_of_the_targets():
    targets = torch.randn(4000, 1)
    mask = torch.ones_like(targets, dtype=torch.bool)
    candidates = torch.linspace(-2, 2, 401)
    losses = [tbptt.pinball(torch.full((4000, 1, 1), c.item()), targets, mask, [0.9]) for c in candidates]
    best = candidates[int(torch.stack(losses).argmin())]
    assert abs(best - targets.quantile(0.9)) < 0.02


def test_the_forecast_loss_adds_the_pinball_loss_of_each_quantile_to_the_point_mse():
    targets, mask = torch.randn(5, 3), torch.ones(5, 3, dtype=torch.bool)
    point, low, high = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    head = torch.cat([point, low, high], dim=-1)  # (5, horizon * (1 + 2))

    expected = tbptt.masked_mse(point, targets, mask) + tbptt.pinball(
        torch.stack([low, high], 1), targets, mask, [0.1, 0.9]
    )
    torch.testing.assert_close(tbptt.forecast_loss(head, targets, mask, (0.1, 0.9)), expected)
    torch.testing.assert_close(tbptt.forecast_loss(point, targets, mask), tbptt.masked_mse(point, targets, mask))


def test_the_relative_mse_scores_each_horizon_against_the_last_value_forecast():
    """The last-value forecast (a zero move) scores 1 at every horizon, however far the long
    horizons move; halving every error scores a quarter of that."""
    targets = torch.randn(50, 2, 3) * torch.tensor([0.1, 1.0, 10.0])  # the longer the horizon, the larger the move
    mask = torch.ones_like(targets, dtype=torch.bool)
    mask[0, 0, 2] = False

    assert tbptt.masked_mse(torch.zeros_like(targets), targets, mask, relative=True).item() == pytest.approx(1.0)
    assert tbptt.masked_mse(targets / 2, targets, mask, relative=True).item() == pytest.approx(0.25)
    assert tbptt.masked_mse(torch.zeros_like(targets), targets, mask).item() > 30  # plain MSE: the long horizon's


def test_a_horizon_that_does_not_move_is_not_divided_by_zero():
    targets, mask = torch.zeros(10, 2), torch.ones(10, 2, dtype=torch.bool)
    loss = tbptt.masked_mse(torch.full((10, 2), 0.01), targets, mask, relative=True)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(1.0)  # 0.01 ** 2 over the floor of 1e-4


# -- fit -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def series(pipeline):
    return tbptt.prepare(pipeline, taylor(pipeline, 1500))


def test_fit_is_deterministic_for_a_seed(pipeline, series):
    def trained(seed):
        model = seeded_model(pipeline)
        training = dataclasses.replace(pipeline.training, steps=6, seed=seed)
        losses = tbptt.fit(model, series, training)
        return losses, torch.cat([p.detach().flatten() for p in model.parameters()])

    first, again, other = trained(1), trained(1), trained(2)

    assert first[0] == again[0] and torch.equal(first[1], again[1])
    assert first[0] != other[0] and not torch.equal(first[1], other[1])


def test_fit_uses_dropout_from_its_seed_and_leaves_the_global_random_state_alone(pipeline, series):
    dropped = dataclasses.replace(pipeline, model=dataclasses.replace(pipeline.model, dropout=0.3))
    training = dataclasses.replace(pipeline.training, steps=3)
    before = torch.random.get_rng_state()

    runs = []
    for _ in range(2):
        model = seeded_model(dropped)
        tbptt.fit(model, series, training)
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))

    assert torch.equal(runs[0], runs[1])
    assert torch.equal(torch.random.get_rng_state(), before)


def loss_over(model, series: tbptt.Series, burn_in: int) -> float:
    """The training loss of one stateful pass over the whole series, after a burn-in."""
    with torch.no_grad():
        outputs, _ = model(series.inputs.unsqueeze(1), model.initial_state(1))
        forecasts = model.head(outputs, series.inputs.unsqueeze(1))[burn_in:, 0]
    return tbptt.forecast_loss(forecasts, series.targets[burn_in:], series.mask[burn_in:], model.spec.quantiles).item()


def test_fit_lowers_the_loss_on_a_real_series(pipeline, series):
    model = seeded_model(pipeline)
    before = loss_over(model, series[0], burn_in=pipeline.training.chunk)

    losses = tbptt.fit(model, series, pipeline.training)

    after = loss_over(model, series[0], burn_in=pipeline.training.chunk)
    assert len(losses) == pipeline.training.steps
    assert after < 0.5 * before
    assert not model.training  # left in eval mode, as the engine needs it


def test_fit_reports_progress_every_step(pipeline, series):
    seen = []
    training = dataclasses.replace(pipeline.training, steps=5)

    losses = tbptt.fit(seeded_model(pipeline), series, training, progress=lambda step, loss: seen.append((step, loss)))

    assert seen == list(enumerate(losses, start=1))


def test_fit_trains_a_small_batch_on_one_cpu_thread_and_leaves_the_count_as_it_was(pipeline, series):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []
        training = dataclasses.replace(pipeline.training, steps=2)

        tbptt.fit(seeded_model(pipeline), series, training, progress=lambda *_: seen.append(torch.get_num_threads()))

        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_a_window_longer_than_every_series_is_refused(pipeline, series):
    training = dataclasses.replace(pipeline.training, window=5000, steps=1)

    with pytest.raises(ValueError, match=r"training.window \(5000\) must not exceed the longest series \(1500 steps\)"):
        tbptt.fit(seeded_model(pipeline), series, training)


def test_a_window_of_a_single_chunk_is_refused_as_it_would_learn_nothing(pipeline, series):
    with pytest.raises(ValueError, match=r"chunk: expected fewer steps than training.window \(24\), got 24"):
        tbptt.fit(seeded_model(pipeline), series, dataclasses.replace(pipeline.training, window=24, chunk=24, steps=1))


def test_windows_are_drawn_from_every_start_of_every_series(pipeline, series):
    short = tbptt.head(series[0], 100)
    training = dataclasses.replace(pipeline.training, window=100, batch_size=64)

    inputs, targets, mask = tbptt.sample_windows([short], training, torch.Generator().manual_seed(0))

    assert inputs.shape == (100, 64, pipeline.input_size)
    assert targets.shape == mask.shape == (100, 64, pipeline.horizon)
    assert torch.equal(inputs[:, 0], short.inputs)  # only one start fits, so every window is that one
    assert torch.equal(mask[:, -1], short.mask)


# -- learning-rate schedule -------------------------------------------------------------------


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_a_tenth(pipeline, series):
    training = dataclasses.replace(pipeline.training, steps=30, warmup_steps=5, learning_rate=0.01)
    used = []
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: used.append(optimizer.param_groups[0]["lr"])
    )
    try:
        tbptt.fit(seeded_model(pipeline), series, training)
    finally:
        hook.remove()

    assert used == pytest.approx([tbptt.learning_rate(training, i) for i in range(30)], rel=1e-12)
    assert used[:5] == pytest.approx([0.002, 0.004, 0.006, 0.008, 0.010])
    middle = 5 + (30 - 5 - 1) // 2
    assert used[middle] == pytest.approx(0.0055)  # half-way down the cosine
    assert all(a >= b for a, b in zip(used[5:], used[6:]))
    assert used[-1] == pytest.approx(0.001)


# -- evaluate ---------------------------------------------------------------------------------


def test_a_model_forecasting_no_change_scores_as_the_naive_forecast(pipeline, series):
    model = seeded_model(pipeline)
    with torch.no_grad():
        model.readout.weight.zero_()
        model.readout.bias.zero_()

    scores = tbptt.evaluate(model, series)

    assert scores["steps"] == 1499
    y = series[0].actual
    assert scores["naive_mae"] == pytest.approx((y[1:] - y[:-1]).abs().mean().item())
    assert scores["model_mae"] == pytest.approx(scores["naive_mae"])
    assert scores["last_value_mae"] == scores["naive_mae"]  # without a season the naive forecast is the last value


def test_with_a_season_evaluate_scores_the_seasonal_naive_and_the_last_value_apart(pipeline):
    seasonal = dataclasses.replace(pipeline, model=dataclasses.replace(pipeline.model, season=48))
    series = tbptt.prepare(seasonal, taylor(seasonal, 1500))
    model = seeded_model(seasonal)
    with torch.no_grad():
        model.readout.weight.zero_()
        model.readout.bias.zero_()

    scores = tbptt.evaluate(model, series)

    y = np.array([r["demand_mw"] for r in datasets.load("taylor").records[:1500]], dtype=np.float32).astype(float)
    t = np.arange(48, 1499)  # from a season on, y[t - 48] is a real value
    last_season_at_todays_level = y[t + 1 - 48] + y[t] - y[t - 48]
    assert scores["last_value_mae"] == pytest.approx(np.abs(y[1:] - y[:-1]).mean())
    assert scores["naive_mae"] == pytest.approx(
        (np.abs(y[1:49] - y[:48]).sum() + np.abs(y[t + 1] - last_season_at_todays_level).sum()) / 1499
    )
    assert scores["model_mae"] == pytest.approx(scores["naive_mae"])
    assert scores["naive_mae"] < 0.5 * scores["last_value_mae"]  # demand repeats daily: the two are far apart


def test_evaluate_scores_the_engines_one_step_forecasts_after_the_warm_up(pipeline, series):
    model = seeded_model(pipeline)
    forecasts = offline_forecasts(model, series[0])[:, 0]
    y = series[0].actual

    scores = tbptt.evaluate(model, series, warmup_fraction=0.5)

    assert scores["steps"] == 749  # forecasts from steps 750..1498
    assert scores["model_mae"] == pytest.approx((y[751:] - forecasts[750:-1]).abs().mean().item())
    assert scores["naive_mae"] == pytest.approx((y[751:] - y[750:-1]).abs().mean().item())


# -- pretrain ---------------------------------------------------------------------------------


def test_pretrain_writes_weights_the_pipeline_can_load(loaded, tmp_path):
    pipeline = loaded.pipeline("power_load")
    out = tmp_path / "power_load.pt"

    result = pretrain.pretrain(loaded, pipeline, out=out, steps=5)

    model, metadata = load_model(out, expected=model_spec(pipeline))
    assert result["path"] == str(out) and result["seconds"] > 0
    assert metadata == {
        k: result[k]
        for k in ("dataset", "steps", "final_loss", "model_mae", "naive_mae", "last_value_mae", "trained_at")
    }
    assert metadata["dataset"] == "taylor" and metadata["steps"] == 5
    assert all(math.isfinite(metadata[k]) for k in ("final_loss", "model_mae", "naive_mae", "last_value_mae"))
    assert not torch.equal(model.readout.weight, seeded_model(pipeline).readout.weight)


def test_pretrain_init_starts_from_the_weights_given_and_says_so(loaded, tmp_path, monkeypatch):
    pipeline = loaded.pipeline("power_load")
    exported = seeded_model(dataclasses.replace(pipeline, model=dataclasses.replace(pipeline.model, seed=7)))
    save_model(tmp_path / "exported.pt", exported)
    started_from = []
    fit = pretrain.fit
    monkeypatch.setattr(
        pretrain,
        "fit",
        lambda model, *a, **k: (started_from.append(model.readout.weight.clone()), fit(model, *a, **k))[1],
    )

    result = pretrain.pretrain(loaded, pipeline, out=tmp_path / "w.pt", steps=1, init=tmp_path / "exported.pt")

    assert torch.equal(started_from[0], exported.readout.weight)
    assert (
        result["init"] == str(tmp_path / "exported.pt") and load_model(tmp_path / "w.pt")[1]["init"] == result["init"]
    )


def test_pretrain_needs_a_dataset(loaded, tmp_path):
    pipeline = loaded.pipeline("power_load")
    unnamed = dataclasses.replace(pipeline, training=dataclasses.replace(pipeline.training, dataset=None))

    with pytest.raises(ConfigError, match=r"pipelines/power_load.yaml: training.dataset: expected a dataset"):
        pretrain.pretrain(loaded, unnamed, out=tmp_path / "w.pt", steps=1)


def test_pretrain_refuses_a_dataset_that_does_not_fit_the_record_format(loaded, tmp_path):
    with pytest.raises(ConfigError, match=r"dataset msft: 7983 of 7983 records do not fit pipeline power_load"):
        pretrain.pretrain(loaded, loaded.pipeline("power_load"), dataset="msft", out=tmp_path / "w.pt", steps=1)
    assert not (tmp_path / "w.pt").exists()
