"""Structured pruning: a narrower dense network made of the wide one's best units, served by the engine as is."""

import dataclasses

import numpy as np
import pytest
import torch

from forecaster.build import load_model, model_spec, save_model, seeded_model
from forecaster.learning import pretrain as pretrain_module
from forecaster.learning import prune, tbptt
from forecaster.serving.engine import Engine
from forecaster.serving.model import Forecaster, ModelSpec

from support import PretrainFolder, make_pipeline, observations, random_walks


def wide(cell="gru", residual=False, layer_norm=False, layers=3, seed=0) -> Forecaster:
    """A 3-layer network of 12 units with quantiles and a highway, every weight non-zero."""
    torch.manual_seed(seed)
    spec = ModelSpec(
        cell=cell,
        input_size=5,
        hidden_size=12,
        num_layers=layers,
        horizon=4,
        quantiles=(0.1, 0.9),
        residual=residual,
        layer_norm=layer_norm,
        highway=True,
    )
    model = Forecaster(spec).eval()
    with torch.no_grad():
        model.highway.weight.normal_()  # a new highway starts at zero; make it count
    return model


def narrower(model: Forecaster, hidden: int) -> ModelSpec:
    return dataclasses.replace(model.spec, hidden_size=hidden)


def with_units_cut(model: Forecaster, kept: list[torch.Tensor]) -> Forecaster:
    """The dense network with every column that reads a unit not kept zeroed: those units then reach nothing."""
    H = model.spec.hidden_size
    with torch.no_grad():
        for depth, cell in enumerate(model.layers):
            gone = torch.ones(H, dtype=torch.bool)
            gone[kept[depth]] = False
            reader = model.layers[depth + 1].weight_ih if depth + 1 < len(model.layers) else model.readout.weight
            cell.weight_hh[:, gone] = 0.0
            reader[:, gone] = 0.0
    return model


def forecasts(model: Forecaster, inputs: torch.Tensor) -> torch.Tensor:
    outputs, _ = model(inputs, model.initial_state(inputs.shape[1]))
    return model.head(outputs, inputs)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("residual", [False, True])
def test_a_pruned_network_forecasts_what_the_dense_one_does_with_the_pruned_units_removed(cell, residual):
    dense = wide(cell, residual)
    kept = prune.kept_units(dense, prune.magnitude_scores(dense), 5)

    small = prune.pruned(dense, narrower(dense, 5))

    inputs = torch.randn(30, 3, 5)  # (T, B, input_size)
    torch.testing.assert_close(forecasts(small, inputs), forecasts(with_units_cut(dense, kept), inputs))


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_keeping_every_unit_is_the_identity(cell, layer_norm):
    dense = wide(cell, layer_norm=layer_norm)
    same = prune.pruned(dense, dense.spec)
    assert same.spec == dense.spec
    for (name, before), (_, after) in zip(dense.state_dict().items(), same.state_dict().items(), strict=True):
        assert torch.equal(before, after), name


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_pruned_network_has_the_stated_width_and_every_weight_is_one_of_the_dense_ones(cell):
    dense = wide(cell, layer_norm=True)
    small = prune.pruned(dense, narrower(dense, 3))
    gates = dense.layers[0].gates
    assert small.spec == narrower(dense, 3) and small.state_width == dense.state_width // 4
    for layer in small.layers:
        assert layer.weight_hh.shape == (gates * 3, 3) and layer.norm_ih.weight.shape == (gates * 3,)
    assert small.layers[1].weight_ih.shape == (gates * 3, 3) and small.readout.weight.shape == (12, 3)
    dense_values = torch.cat([p.detach().flatten() for p in dense.parameters()])
    small_values = torch.cat([p.detach().flatten() for p in small.parameters()])
    assert torch.isin(small_values, dense_values).all()


def test_the_units_whose_weights_are_smallest_go_first():
    dense = wide(layers=2)
    with torch.no_grad():  # unit 7 of layer 0 and unit 2 of layer 1: every weight that touches them tiny
        dense.layers[0].weight_ih[7::12] *= 1e-3
        dense.layers[0].weight_hh[7::12] *= 1e-3
        dense.layers[0].weight_hh[:, 7] *= 1e-3
        dense.layers[1].weight_ih[:, 7] *= 1e-3
        dense.layers[1].weight_ih[2::12] *= 1e-3
        dense.layers[1].weight_hh[2::12] *= 1e-3
        dense.layers[1].weight_hh[:, 2] *= 1e-3
        dense.readout.weight[:, 2] *= 1e-3
    kept = prune.kept_units(dense, prune.magnitude_scores(dense), 11)
    assert 7 not in kept[0] and 2 not in kept[1]
    assert kept[0].tolist() == sorted(set(range(12)) - {7}) and kept[1].tolist() == sorted(set(range(12)) - {2})


def test_with_residual_connections_every_layer_keeps_the_same_units():
    dense = wide(residual=True)
    kept = prune.kept_units(dense, prune.magnitude_scores(dense), 6)
    assert all(torch.equal(k, kept[0]) for k in kept)


def series_of(inputs: torch.Tensor) -> tbptt.Series:
    """A training series with these inputs (T, input_size); its targets do not matter here."""
    T = len(inputs)
    zeros = torch.zeros(T, 4)
    return tbptt.Series("s", inputs, zeros, zeros.bool(), torch.zeros(T, dtype=torch.float64), torch.ones(T))


def test_by_activation_a_unit_whose_output_never_moves_goes_first():
    dense = wide(layers=1)
    with torch.no_grad():  # GRU unit 4 with its update gate shut (z = 1: h' = h) keeps the h of 0 it starts with
        rows = torch.arange(3) * 12 + 4
        for weights in (dense.layers[0].weight_ih, dense.layers[0].weight_hh):
            weights[rows] = 0.0
        dense.layers[0].bias_ih[12 + 4] = 50.0
    series = [series_of(torch.randn(40, 5)) for _ in range(2)] + [series_of(torch.randn(25, 5))]

    scores = prune.activation_scores(dense, series)

    assert scores[0][4] == 0 and (scores[0][torch.arange(12) != 4] > 0).all()
    assert prune.kept_units(dense, scores, 11)[0].tolist() == sorted(set(range(12)) - {4})


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(hidden_size=16), "at most the pruned network's 12, got 16"),
        (dict(cell="lstm"), "removes hidden units and nothing else, got cell gru -> lstm"),
        (dict(num_layers=2), "got num_layers 3 -> 2"),
    ],
)
def test_anything_but_a_narrower_network_is_refused(change, message):
    dense = wide()
    with pytest.raises(ValueError, match=message):
        prune.pruned(dense, dataclasses.replace(dense.spec, **change))


def test_a_pruned_network_loads_into_the_engine_and_serves_the_dense_forecasts_without_its_pruned_units(tmp_path):
    wide_pipeline = make_pipeline(horizon=3, hidden_size=16, quantiles=(0.1, 0.9))
    dense = seeded_model(wide_pipeline)
    narrow_pipeline = make_pipeline(horizon=3, hidden_size=6, quantiles=(0.1, 0.9))
    save_model(tmp_path / "pruned.pt", prune.pruned(dense, model_spec(narrow_pipeline)))
    kept = prune.kept_units(dense, prune.magnitude_scores(dense), 6)

    model, _ = load_model(tmp_path / "pruned.pt", expected=model_spec(narrow_pipeline))  # as the daemon loads it
    small, reference = Engine(narrow_pipeline, model), Engine(wide_pipeline, with_units_cut(dense, kept))
    keys, times, rows = random_walks(n_series=4, length=6)
    got, _ = small.step(observations(keys, times, rows), now=times[-1])
    expected, _ = reference.step(observations(keys, times, rows), now=times[-1])
    assert model.spec.hidden_size == 6 and got.values.shape == (len(keys), 3)
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-4, atol=1e-5)
    for level in (0.1, 0.9):
        np.testing.assert_allclose(got.quantiles[level], expected.quantiles[level], rtol=1e-4, atol=1e-5)


# -- `forecaster pretrain --prune` ---------------------------------------------------------------------

TRAINING_YAML = "training:\n  window: 48\n  chunk: 24\n  batch_size: 4\n  steps: 3\n"


@pytest.fixture
def folder(tmp_path):
    """A pipeline serving a 2 x 8 GRU, and a 2 x 16 one of the same kind to prune to it (wide.pt)."""
    folder = PretrainFolder(tmp_path, TRAINING_YAML)
    save_model(tmp_path / "wide.pt", seeded_model(folder.pipeline(hidden_size=16)))
    return folder


def test_pretrain_prune_writes_the_pipelines_model_started_from_the_wide_ones_best_units(folder, monkeypatch):
    monkeypatch.setattr(pretrain_module, "fit", lambda *args, **kwargs: [0.0])  # no fine-tuning: the start is saved
    wide = folder.folder / "wide.pt"
    assert folder.pretrain("--prune", str(wide)) == 0

    model, metadata = load_model(folder.folder / "w.pt", expected=model_spec(folder.pipeline()))
    expected = prune.pruned(load_model(wide)[0], model_spec(folder.pipeline()))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values()))
    assert metadata["pruned_from"] == str(wide) and metadata["pruned_by"] == "magnitude"


def test_pretrain_prune_by_activation_fine_tunes_the_pruned_network(folder):
    assert folder.pretrain("--prune", str(folder.folder / "wide.pt"), "--prune-by", "activation") == 0
    _, metadata = load_model(folder.folder / "w.pt", expected=model_spec(folder.pipeline()))
    assert metadata["pruned_by"] == "activation" and metadata["steps"] == 3


def test_pretrain_prune_refuses_a_network_of_another_kind_naming_the_difference(folder, capsys):
    save_model(folder.folder / "lstm.pt", seeded_model(folder.pipeline(hidden_size=16, cell="lstm")))
    assert folder.pretrain("--prune", str(folder.folder / "lstm.pt")) == 2
    err = capsys.readouterr().err
    assert "cannot prune to pipeline weather's model" in err and "cell lstm -> gru" in err


def test_pretrain_prune_and_init_together_are_refused(folder, capsys):
    wide = str(folder.folder / "wide.pt")
    assert folder.pretrain("--prune", wide, "--init", wide) == 2
    assert "expected one of --init and --prune" in capsys.readouterr().err
