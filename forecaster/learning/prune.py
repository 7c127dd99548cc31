"""Structured pruning: a network with its least useful hidden units removed, a smaller dense one.

The engine's fused step (serving/fused_step.py) runs dense products, which spend the same time on
a zero weight as on any other; so a weight zeroed here and there (unstructured pruning) buys no
speed, and only removing whole units does: every layer's projections shrink from gates*H rows to
gates*H' and the recurrent product from H to H' columns. `pruned` keeps the `hidden_size` best
units of each layer by one of two scores and returns a new `Forecaster` of that width whose
every weight is one of the old network's; pretrain.py then fine-tunes it.

Removing unit j of layer l takes its rows out of each gate of layer l (and of that layer's
norms) and its column out of layer l's recurrent weights and of what reads layer l's output
(layer l+1's input weights, or the head). Without layer norm the result forecasts exactly what
the old network does once those columns are zeroed (the units removed then reach nothing); with
layer norm the kept units are normalised over fewer of them, which fine-tuning absorbs. With
residual connections a unit's output is added to the same unit of the next layer, so every
layer keeps the same units.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from forecaster.learning.tbptt import Series, equal_lengths
from forecaster.serving.model import Forecaster, ModelSpec, changed_fields, changes

SCORES = ("magnitude", "activation")
# What pruning may change: the width, and dropout, which has no weights.
PRUNABLE = ("hidden_size", "dropout")


def _unit_rows(gates: int, hidden: int, units: Tensor) -> Tensor:
    """The rows of `units` in a (gates*hidden, ...) matrix: unit j's row in every gate, gate by gate."""
    return (torch.arange(gates)[:, None] * hidden + units[None, :]).flatten()


def _readers(model: Forecaster) -> list[Tensor]:
    """Per layer, the weights that read its output: the next layer's input weights, or the head's (out, H)."""
    return [cell.weight_ih for cell in model.layers[1:]] + [model.readout.weight]


@torch.no_grad()
def magnitude_scores(model: Forecaster) -> list[Tensor]:
    """Per layer (H,): the L2 norm of every weight that touches each unit, the rows that make it (every gate,
    input and recurrent) and the columns that read it (recurrent, and the next layer's or the head's)."""
    H, scores = model.spec.hidden_size, []
    for cell, reader in zip(model.layers, _readers(model)):
        made = cell.weight_ih.square().sum(1) + cell.weight_hh.square().sum(1)  # (gates*H,)
        scores.append((made.view(cell.gates, H).sum(0) + _read_norms(cell, reader).square()).sqrt())
    return scores


def _read_norms(cell, reader: Tensor) -> Tensor:
    """(H,): the L2 norm of the columns that read each unit of `cell`: its own recurrent ones and `reader`'s."""
    return (cell.weight_hh.square().sum(0) + reader.square().sum(0)).sqrt()


@torch.no_grad()
def activation_scores(model: Forecaster, series: Sequence[Series]) -> list[Tensor]:
    """Per layer (H,): each unit's mean absolute output over the series' steps times the L2 norm of the weights
    that read it: the size of what it actually passes on, on this data. Series of equal length go together."""
    model.eval()
    H, device = model.spec.hidden_size, model.readout.weight.device
    total = torch.zeros(model.spec.num_layers, H, device=device)
    steps = 0
    for _, inputs in equal_lengths(series):
        state = model.initial_state(inputs.shape[1], device=device)
        for x in inputs.to(device):
            _, state = model.step(x, state)
            total += state[..., :H].abs().sum(1)  # (layers, H): every layer's h, the first H of its state
        steps += inputs.shape[0] * inputs.shape[1]
    reads = [_read_norms(cell, reader) for cell, reader in zip(model.layers, _readers(model))]
    return [total[depth] / max(steps, 1) * reads[depth] for depth in range(model.spec.num_layers)]


def kept_units(model: Forecaster, scores: Sequence[Tensor], count: int) -> list[Tensor]:
    """Per layer, the indices of its `count` best units in increasing order; one set for all layers with
    residual connections (scored by the sum over layers), since each layer adds to the same units."""
    if model.spec.residual:
        best = torch.stack(list(scores)).sum(0).topk(count).indices.sort().values
        return [best] * len(scores)
    return [s.topk(count).indices.sort().values for s in scores]


@torch.no_grad()
def select(model: Forecaster, kept: Sequence[Tensor], spec: ModelSpec | None = None) -> Forecaster:
    """A network of `spec` (default: `model`'s at the width of `kept`) holding only the `kept` units of each layer."""
    if model.attention is not None:  # its query and key dimensions are no hidden units to keep or drop
        raise ValueError("pruning keeps hidden units of the recurrent layers: an attention network cannot be pruned")
    spec = spec or dataclasses.replace(model.spec, hidden_size=len(kept[0]))
    H, state = model.spec.hidden_size, {}
    for depth, (cell, units) in enumerate(zip(model.layers, kept)):
        rows = _unit_rows(cell.gates, H, units)
        for name, value in cell.state_dict().items():
            if name == "weight_ih":
                value = value[rows] if depth == 0 else value[rows][:, kept[depth - 1]]
            elif name == "weight_hh":
                value = value[rows][:, units]
            elif name.startswith("norm_c."):  # the LSTM's norm of c: one entry per unit
                value = value[units]
            else:  # biases and the projections' norms: one entry per gate row
                value = value[rows]
            state[f"layers.{depth}.{name}"] = value
    state["readout.weight"] = model.readout.weight[:, kept[-1]]
    state["readout.bias"] = model.readout.bias
    if model.highway is not None:
        state["highway.weight"] = model.highway.weight
    smaller = Forecaster(spec).to(model.readout.weight.device)
    smaller.load_state_dict(state)
    return smaller


def pruned(model: Forecaster, spec: ModelSpec, by: str = "magnitude", series: Sequence[Series] = ()) -> Forecaster:
    """`model` cut down to `spec`, which may only be narrower (and drop out differently): each layer keeps its
    spec.hidden_size best units by `by` ("magnitude", or "activation" measured on `series`)."""
    if by not in SCORES:
        raise ValueError(f"by must be one of {', '.join(SCORES)}, got {by!r}")
    if set(changed_fields(model.spec, spec)) - set(PRUNABLE):
        raise ValueError(f"pruning removes hidden units and nothing else, got {changes(model.spec, spec)}")
    if spec.hidden_size > model.spec.hidden_size:
        raise ValueError(
            f"hidden_size must be at most the pruned network's {model.spec.hidden_size}, got {spec.hidden_size}"
        )
    if by == "activation" and not series:
        raise ValueError("pruning by activation needs series to measure the units' outputs on")
    scores = magnitude_scores(model) if by == "magnitude" else activation_scores(model, series)
    return select(model, kept_units(model, scores, spec.hidden_size), spec)
