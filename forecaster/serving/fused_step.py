"""The engine's hot path: `Forecaster.step` then `head`, for inference, laid out for speed.

`Forecaster.step` is the reference: readable, differentiable, shared with training. Serving only
runs it forward, on waves of up to millions of rows, and there four things cost more than the
arithmetic needs (each measured by benchmarks/engine_ablation.py):
  * matmuls: MKL's sgemm, behind addmm, runs at half the speed of oneDNN's fp32 kernels on an
    AMD EPYC with AVX-512, so large products go to oneDNN (weights prepacked once), small ones
    and any machine without oneDNN to addmm;
  * tanh: on the CPU it costs about ten sigmoids, so each is taken as tanh(a) = 2 sigmoid(2a) - 1,
    with the factor 2 folded into the weights (or layer-norm affine) that make `a`;
  * temporaries: the gates are worked in place, the new state is written over the old one,
    and the few scratch tensors left are kept from wave to wave;
  * memory traffic: rows go through in blocks of `block_rows`, so a block's gates stay in cache
    from its matmul to its new state instead of streaming a million rows through memory per op.
`FusedStep` copies the weights it needs and copies them again whenever a parameter of the model
changes in place (a load_state_dict, a restore), so it never serves stale weights. Dropout is
not applied: this is the eval-mode step. Attention over recent outputs (model.attention) runs
the model's own module after the fused cells. It equals `Forecaster.step` then `head` to float
rounding (tests/serving/test_fused_step.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from forecaster.serving.model import Forecaster

# Rows per block on the CPU: a block's gates (2 x 256 floats a row for an LSTM of 64: 4 MiB) stay in cache.
BLOCK_ROWS = 2048
# Multiply-adds from which a product goes to oneDNN: below, its per-call cost loses to addmm (measured
# in Engine.step: 64 -> 192 breaks even between 200 and 400 rows).
ONEDNN_MIN_MACS = 1 << 22


@dataclass(frozen=True)
class _Norm:
    """A LayerNorm's affine parameters, with its tanh rows doubled."""

    weight: Tensor
    bias: Tensor
    eps: float

    def __call__(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class _Linear:
    """x @ weight.T + bias. On the CPU through oneDNN's fp32 kernels when torch has them: on this
    class of machine (AMD EPYC, AVX-512) MKL's sgemm, behind addmm, runs at half their speed.
    Small products, where oneDNN's ~12 us a call outweighs that, and everywhere oneDNN is absent
    or refuses the weight, take addmm: the same numbers, within float rounding."""

    def __init__(self, weight: Tensor, bias: Tensor | None, onednn: bool = True):
        self.weight_t = weight.t().contiguous()  # (in, out) for addmm
        self.bias = bias
        self.packed = _onednn_weight(weight, bias) if onednn else None
        self.macs_per_row = weight.numel()

    def __call__(self, x: Tensor) -> Tensor:
        if self.packed is not None and x.shape[0] * self.macs_per_row >= ONEDNN_MIN_MACS:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return torch.mm(x, self.weight_t) if self.bias is None else torch.addmm(self.bias, x, self.weight_t)


def _onednn_weight(weight: Tensor, bias: Tensor | None) -> Tensor | None:
    """`weight` prepacked for oneDNN, or None where oneDNN is absent, not for this device, or wrong."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return None
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        probe = torch.linspace(-1, 1, 3 * weight.shape[1]).reshape(3, -1)
        got = torch.ops.mkldnn._linear_pointwise(probe, packed, bias, "none", [], "")
        expected = F.linear(probe, weight, bias)
    except (AttributeError, RuntimeError, NotImplementedError):
        return None
    return packed if torch.allclose(got, expected, rtol=1e-5, atol=1e-6) else None


@dataclass(frozen=True)
class _Layer:
    """One cell: its two projections and norms, the rows that feed a tanh doubled."""

    ih: _Linear  # W_ih x + b_ih, (rows, gates*H)
    hh: _Linear  # W_hh h + b_hh
    norm_ih: _Norm | None
    norm_hh: _Norm | None
    norm_c: _Norm | None  # LSTM with layer norm: the norm of c before its tanh


def _doubled(cell: str, nonlinearity: str, hidden: int, gates: int, device, dtype) -> Tensor:
    """Per gate row: 2 where the row's pre-activation goes into a tanh, else 1."""
    factor = torch.ones(gates * hidden, device=device, dtype=dtype)
    if cell == "gru":
        factor[2 * hidden :] = 2  # the candidate n
    elif cell == "lstm":
        factor[2 * hidden : 3 * hidden] = 2  # the cell input g
    elif nonlinearity == "tanh":
        factor[:] = 2
    return factor


def _norm(norm, factor) -> _Norm | None:
    """A LayerNorm's affine scaled row by row by `factor`, or None without one."""
    if norm is None:
        return None
    return _Norm((norm.weight.detach() * factor).contiguous(), (norm.bias.detach() * factor).contiguous(), norm.eps)


def _layers(model: Forecaster, onednn: bool) -> list[_Layer]:
    """The model's weights in the layout `FusedStep` computes with (copies; the model is untouched)."""
    spec, layers = model.spec, []
    for cell in model.layers:
        k = _doubled(
            spec.cell, spec.nonlinearity, spec.hidden_size, cell.gates, cell.weight_ih.device, cell.weight_ih.dtype
        )
        w_ih, w_hh = cell.weight_ih.detach(), cell.weight_hh.detach()
        if cell.norm_ih is None:  # the projections make the pre-activations: they carry the 2
            ih = _Linear(w_ih * k[:, None], cell.bias_ih.detach() * k, onednn)
            hh = _Linear(w_hh * k[:, None], cell.bias_hh.detach() * k, onednn)
        else:  # the projections are normalised first: the norms' affine carries the 2
            ih, hh = _Linear(w_ih, None, onednn), _Linear(w_hh, None, onednn)
        layers.append(
            _Layer(
                ih,
                hh,
                norm_ih=_norm(cell.norm_ih, k),
                norm_hh=_norm(cell.norm_hh, k),
                norm_c=_norm(getattr(cell, "norm_c", None), 2.0),
            )
        )
    return layers


def _tanh_from_doubled_(a: Tensor) -> Tensor:
    """tanh(x) in place, given a = 2x: 2 sigmoid(2x) - 1."""
    return a.sigmoid_().mul_(2.0).sub_(1.0)


class FusedStep:
    """`model.step` then `model.head`, in place on the state, for inference on large batches.

    `onednn=False` keeps every product on addmm (for comparison; oneDNN is used only where present).
    """

    def __init__(self, model: Forecaster, block_rows: int = BLOCK_ROWS, onednn: bool = True):
        self.model = model
        self.spec = model.spec
        self.block_rows = block_rows
        self.onednn = onednn
        self._parameters = list(model.parameters())
        self._weights_seen: tuple = ()
        self._buffers: dict[str, Tensor] = {}

    @torch.no_grad()
    def step_(self, x: Tensor, state: Tensor, out: Tensor | None = None) -> Tensor:
        """Step `state` (layers, n, width) in place with inputs x (n, input); returns the head (n, outputs)."""
        self._refresh()
        n = x.shape[0]
        if out is None:
            out = x.new_empty(n, self.spec.outputs)
        block = self.block_rows if x.device.type == "cpu" else max(n, 1)  # a GPU takes every row at once
        for a in range(0, n, block):
            b = min(n, a + block)
            rows = state[:, a:b]  # (layers, rows, width): a view, updated in place
            if self.model.attention is None:
                top = self._block(x[a:b], rows)
            else:
                top = self._attend_(self._block(x[a:b], rows[..., : self.model.cell_width]), rows)
            out[a:b] = self._head(top)
            if self._highway is not None:
                out[a:b] += self._highway(x[a:b])
        return out

    # -- one block of rows ------------------------------------------------------------------

    def _block(self, x: Tensor, state: Tensor) -> Tensor:
        """Every layer for one block of rows; returns the top output (rows, hidden)."""
        H, residual = self.spec.hidden_size, self.spec.residual
        for depth, layer in enumerate(self._layers):
            s = state[depth]  # (rows, width): a view, updated in place
            h = self._cell(layer, x, s)  # (rows, H), also a view of s
            if residual and depth > 0:
                x = torch.add(x, h, out=self._buffer("residual", (x.shape[0], H), x))
            else:
                x = h
        return x

    def _attend_(self, top: Tensor, rows: Tensor) -> Tensor:
        """Shift `top` (rows, H) into the ring of top outputs that `rows` (layers, rows, width) keeps, in place;
        returns the model's attention over the new ring (rows, H). The model's own module, as `Forecaster.step`
        runs it: a product of (rows, K, H) whose cost the benchmark measures."""
        model = self.model
        ring = model.pushed(rows, top)  # (rows, K, H), newest last
        rows[..., model.cell_width :] = model.ring_columns(ring)
        return model.attention(ring)

    def _cell(self, layer: _Layer, x: Tensor, s: Tensor) -> Tensor:
        """One layer's cell: the new state is written over `s` (rows, width); returns its output h."""
        cell, H = self.spec.cell, self.spec.hidden_size
        h = s[:, :H]
        gi, gh = self._project(layer, x, h)
        if cell == "gru":
            r, z = gi[:, : 2 * H].add_(gh[:, : 2 * H]).sigmoid_().chunk(2, 1)
            n = _tanh_from_doubled_(gi[:, 2 * H :].addcmul_(r, gh[:, 2 * H :]))
            return torch.lerp(n, s, z, out=s)  # h' = n + z (h - n), written over h
        if cell == "lstm":
            i, f, g, o = gi.add_(gh).sigmoid_().chunk(4, 1)
            g = g.mul_(2.0).sub_(1.0)  # the g rows were doubled: 2 sigmoid(2a) - 1 = tanh(a)
            c = s[:, H:].mul_(f).addcmul_(i, g)  # c' = f c + i g, written over c
            if layer.norm_c is None:
                t = torch.mul(c, 2.0, out=self._buffer("c", c.shape, c))
            else:
                t = layer.norm_c(c)
            return torch.mul(o, _tanh_from_doubled_(t), out=h)  # h' = o tanh(c'), written over h
        a = gi.add_(gh)
        a = _tanh_from_doubled_(a) if self.spec.nonlinearity == "tanh" else a.relu_()
        return h.copy_(a)

    @staticmethod
    def _project(layer: _Layer, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """W_ih x + b_ih and W_hh h + b_hh, each layer-normalised when configured: fresh (rows, gates*H)."""
        gi, gh = layer.ih(x), layer.hh(h)
        if layer.norm_ih is None:
            return gi, gh
        return layer.norm_ih(gi), layer.norm_hh(gh)

    # -- weights and buffers ------------------------------------------------------------------

    def _refresh(self) -> None:
        """Re-read the weights when a parameter of the model changed in place (a load_state_dict) or moved."""
        seen = tuple((p.data_ptr(), p._version) for p in self._parameters)
        if seen != self._weights_seen:
            self._layers = _layers(self.model, self.onednn)
            self._head = _Linear(self.model.readout.weight.detach(), self.model.readout.bias.detach(), self.onednn)
            highway = self.model.highway
            self._highway = None if highway is None else _Linear(highway.weight.detach(), None, self.onednn)
            self._weights_seen = seen
            self._buffers.clear()

    def _buffer(self, name: str, shape: tuple[int, int], like: Tensor) -> Tensor:
        """A (rows, cols) scratch tensor kept between calls; grows when a larger one is asked for."""
        rows, cols = shape
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape[0] < rows or buffer.shape[1] != cols or buffer.device != like.device:
            buffer = self._buffers[name] = torch.empty(max(rows, 1), cols, device=like.device, dtype=like.dtype)
        return buffer[:rows]
