"""The recurrent forecaster: hand-written GRU / LSTM / RNN cells, stacked, with a direct multi-step head.

Pure tensor math: no logging, files or clocks. The state of every layer travels as one tensor
(num_layers, batch, state_width) so a store can keep it in one slot per series; for the LSTM the
last dim holds [h | c]. With attention over the last K top outputs (`RecentAttention`), those
outputs travel in the same tensor, in columns after every layer's cell state. `forward` over a
window is `step` in a loop, so the streaming path and the training path are the same code.

With layer_norm=False, residual=False and dropout=0 the network equals torch's nn.GRU / nn.LSTM /
nn.RNN given the same weights (same gate order, equations and initialisation).
"""

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

CELLS = ("gru", "lstm", "rnn")
NONLINEARITIES = ("tanh", "relu")


@dataclass(frozen=True)
class ModelSpec:
    """Everything that fixes the network's shape; checked once here, so the model can trust it."""

    cell: str  # "gru" | "lstm" | "rnn"
    input_size: int
    hidden_size: int
    num_layers: int
    horizon: int  # number of direct multi-step outputs of the head
    dropout: float = 0.0  # on every layer's output except the last, as nn.GRU
    layer_norm: bool = False
    residual: bool = False  # for layer l >= 1: out_l = cell_l(in_l) + in_l
    nonlinearity: str = "tanh"  # rnn only: "tanh" | "relu"
    quantiles: tuple[float, ...] = ()  # levels the head forecasts besides the point forecast
    highway: bool = False  # a linear map from each step's inputs added to the head (LSTNet's autoregressive part)
    season: int = (
        0  # the network models y[t] - y[t - season] (seasonal.py); 0: y itself. Not a shape, but what the weights mean
    )
    attention: int = 0  # K: the output attends over the top layer's last K outputs (RecentAttention); 0: off

    def __post_init__(self):
        """Reject a bad spec where it is made, with a message that states the constraint."""
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))  # a list from a checkpoint
        if any(not 0 < q < 1 for q in self.quantiles) or list(self.quantiles) != sorted(set(self.quantiles)):
            raise ValueError(f"quantiles must be distinct levels in (0, 1), increasing, got {list(self.quantiles)}")
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        for name in ("input_size", "hidden_size", "num_layers", "horizon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        d = self.dropout
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {d!r}")
        for name in ("season", "attention"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.season and self.season < self.horizon:
            raise ValueError(f"season must be at least the horizon ({self.horizon}), got {self.season}")
        for name in ("layer_norm", "residual", "highway"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {', '.join(NONLINEARITIES)}, got {self.nonlinearity!r}")
        if self.nonlinearity != "tanh" and self.cell != "rnn":
            raise ValueError(
                f"nonlinearity applies only to cell 'rnn', got {self.nonlinearity!r} for cell {self.cell!r}"
            )

    @property
    def outputs(self) -> int:
        """Width of the head: the point forecast's horizon, then each quantile's."""
        return self.horizon * (1 + len(self.quantiles))


# The fields a spec may change while the network's body (every recurrent layer) stays as it is:
# dropout has no weights, and the horizon sizes the head alone (see `resized`).
HEAD_ONLY = ("horizon", "dropout")


def changed_fields(old: ModelSpec, new: ModelSpec) -> list[str]:
    """The names of the fields in which `new` differs from `old`, in the spec's order."""
    return [f.name for f in dataclasses.fields(ModelSpec) if getattr(old, f.name) != getattr(new, f.name)]


def changes(old: ModelSpec, new: ModelSpec) -> str:
    """How `new` differs from `old`, in words ("horizon 13 -> 26, hidden_size 32 -> 64"): what a reader
    needs, where both specs in full would hide it."""
    return ", ".join(
        f"{name} {_spoken(getattr(old, name))} -> {_spoken(getattr(new, name))}" for name in changed_fields(old, new)
    )


def _spoken(value) -> str:
    if isinstance(value, tuple):
        return "/".join(f"{v:g}" for v in value) or "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


class _Cell(nn.Module):
    """What every cell shares: the fused projections W_ih x and W_hh h, optionally layer-normalised."""

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, layer_norm: bool):
        super().__init__()
        G = self.gates * hidden_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G, hidden_size))
        # under layer norm a bias before normalisation cancels out, so the LayerNorms carry the biases
        self.register_parameter("bias_ih", None if layer_norm else nn.Parameter(torch.empty(G)))
        self.register_parameter("bias_hh", None if layer_norm else nn.Parameter(torch.empty(G)))
        self.norm_ih = nn.LayerNorm(G) if layer_norm else None
        self.norm_hh = nn.LayerNorm(G) if layer_norm else None
        self.reset_parameters()

    def reset_parameters(self):
        """uniform(-1/sqrt(H), 1/sqrt(H)) as torch's recurrent layers; LayerNorms keep gain 1, bias 0."""
        bound = 1 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            if p is not None:
                nn.init.uniform_(p, -bound, bound)

    def project(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All gates of the input in one matmul and all gates of the hidden in another."""
        gi = F.linear(x, self.weight_ih, self.bias_ih)  # (B, gates*H)
        gh = F.linear(h, self.weight_hh, self.bias_hh)  # (B, gates*H)
        if self.norm_ih is not None:  # Ba et al. 2016: normalise each projection on its own
            gi, gh = self.norm_ih(gi), self.norm_hh(gh)
        return gi, gh


class GRUCell(_Cell):
    """nn.GRU's cell, gates (r, z, n): the reset gate scales the hidden's candidate after its bias."""

    gates = 3

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in), (B, H) -> output h (B, H), new state (B, H)."""
        gi, gh = self.project(x, s)
        i_r, i_z, i_n = gi.chunk(3, -1)  # (B, H) each
        h_r, h_z, h_n = gh.chunk(3, -1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = n + z * (s - n)  # = (1 - z) * n + z * s, written as ATen does
        return h, h


class LSTMCell(_Cell):
    """nn.LSTM's cell, gates (i, f, g, o); the state is [h | c] so it fits one tensor slot."""

    gates = 4

    def __init__(self, input_size: int, hidden_size: int, layer_norm: bool):
        super().__init__(input_size, hidden_size, layer_norm)
        self.norm_c = nn.LayerNorm(hidden_size) if layer_norm else None

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in), (B, 2H) -> output h (B, H), new state [h | c] (B, 2H)."""
        h, c = s.split(self.hidden_size, -1)  # (B, H) each
        gi, gh = self.project(x, h)
        i, f, g, o = (gi + gh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        c_out = c if self.norm_c is None else self.norm_c(c)  # the carried c stays unnormalised
        h = torch.sigmoid(o) * torch.tanh(c_out)
        return h, torch.cat([h, c], -1)


class RNNCell(_Cell):
    """nn.RNN's cell: h = act(W_ih x + b_ih + W_hh h + b_hh)."""

    def __init__(self, input_size: int, hidden_size: int, layer_norm: bool, nonlinearity: str = "tanh"):
        super().__init__(input_size, hidden_size, layer_norm)
        self.nonlinearity = nonlinearity

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, in), (B, H) -> output h (B, H), new state (B, H)."""
        gi, gh = self.project(x, s)
        h = torch.tanh(gi + gh) if self.nonlinearity == "tanh" else torch.relu(gi + gh)
        return h, h


class RecentAttention(nn.Module):
    """One head of attention from the newest top output over the last K (itself included), as a residual.

    out = h + W_o sum_j softmax_j(q(h) . W_k m_j / sqrt(H)) m_j, over the ring m (B, K, H), newest last.
    The values are the outputs themselves: a value map and the output map, both linear, would
    multiply into one, so `out` is both. It starts at zero, so a new attention leaves the network
    as it was until training moves it. The query meets the keys as m_j . (W_k^T q): the same
    scores with one (H, H) product a step instead of K. A key bias would add the same q . b to
    every score, which the softmax ignores, so the key map has none.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size, bias=False)
        self.out = nn.Linear(hidden_size, hidden_size)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, ring: torch.Tensor) -> torch.Tensor:
        """The ring of top outputs (B, K, H), newest last -> the newest plus what it attends to (B, H)."""
        h = ring[:, -1]  # (B, H)
        probe = self.query(h) @ self.key.weight  # (B, H): W_k^T q, so that m_j . probe = q . W_k m_j
        scores = (ring @ probe[:, :, None]).squeeze(-1) / math.sqrt(h.shape[-1])  # (B, K)
        mixed = (scores.softmax(-1)[:, None, :] @ ring).squeeze(1)  # (B, H)
        return h + self.out(mixed)


def _make_cell(spec: ModelSpec, input_size: int) -> _Cell:
    """One layer of the kind the spec names."""
    if spec.cell == "gru":
        return GRUCell(input_size, spec.hidden_size, spec.layer_norm)
    if spec.cell == "lstm":
        return LSTMCell(input_size, spec.hidden_size, spec.layer_norm)
    return RNNCell(input_size, spec.hidden_size, spec.layer_norm, spec.nonlinearity)


class Forecaster(nn.Module):
    """Stacked recurrent cells and a linear head that reads all `horizon` steps off the top hidden.

    With `spec.attention` K, the top output also attends over the last K top outputs. Those
    are part of the series' state: K * H numbers spread over the layers' rows, after each
    layer's cell state (`ring_width` columns each), so the state stays one (layers, batch,
    width) tensor that the store, spill and checkpoints keep as they keep any other.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.cell_width = 2 * spec.hidden_size if spec.cell == "lstm" else spec.hidden_size
        self.ring_width = -(-spec.attention * spec.hidden_size // spec.num_layers)  # ceil(K * H / layers)
        self.state_width = self.cell_width + self.ring_width
        sizes = [spec.input_size] + [spec.hidden_size] * (spec.num_layers - 1)
        self.layers = nn.ModuleList(_make_cell(spec, n) for n in sizes)
        self.drop = nn.Dropout(spec.dropout)
        self.readout = nn.Linear(spec.hidden_size, spec.outputs)  # named apart from the head() verb
        # zeros: a new highway leaves the network's forecast as it was until training moves it
        self.highway = nn.Linear(spec.input_size, spec.outputs, bias=False) if spec.highway else None
        if self.highway is not None:
            nn.init.zeros_(self.highway.weight)
        self.attention = RecentAttention(spec.hidden_size) if spec.attention else None

    def initial_state(self, batch: int, device=None, dtype=None) -> torch.Tensor:
        """Zeros (num_layers, batch, state_width), on the model's device and dtype unless told."""
        w = self.readout.weight
        shape = (self.spec.num_layers, batch, self.state_width)
        return torch.zeros(shape, device=device or w.device, dtype=dtype or w.dtype)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step through every layer: the streaming path, and the body of forward."""
        expected = (self.spec.num_layers, x.shape[0], self.state_width)
        if tuple(state.shape) != expected:
            got = tuple(state.shape)
            raise ValueError(f"state must have shape {expected} for x {tuple(x.shape)}, got {got}")
        last = self.spec.num_layers - 1
        new = []
        for depth, cell in enumerate(self.layers):
            h, s = cell(x, state[depth, :, : self.cell_width])  # (B, H), (B, cell_width)
            x = x + h if self.spec.residual and depth > 0 else h
            x = self.drop(x) if depth < last else x
            new.append(s)
        if self.attention is None:
            return x, torch.stack(new)  # (B, H), (L, B, state_width)
        ring = self.pushed(state, x)
        return self.attention(ring), torch.cat([torch.stack(new), self.ring_columns(ring)], -1)

    def pushed(self, state: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        """The ring `state` keeps with this step's top output `top` (B, H) in and the oldest out: (B, K, H)."""
        return torch.cat([self.ring(state)[:, 1:], top[:, None]], 1)

    def ring(self, state: torch.Tensor) -> torch.Tensor:
        """The last K top outputs that `state` (L, B, state_width) keeps -> (B, K, H), newest last."""
        K, H = self.spec.attention, self.spec.hidden_size
        columns = state[..., self.cell_width :].transpose(0, 1).reshape(state.shape[1], -1)  # (B, L * ring_width)
        return columns[:, : K * H].unflatten(1, (K, H))

    def ring_columns(self, ring: torch.Tensor) -> torch.Tensor:
        """`ring` (B, K, H) laid out as the state keeps it: (L, B, ring_width), zeros after its K * H numbers."""
        flat = F.pad(ring.flatten(1), (0, self.spec.num_layers * self.ring_width - ring[0].numel()))
        return flat.unflatten(1, (self.spec.num_layers, self.ring_width)).transpose(0, 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A window (T, B, input_size) -> top outputs (T, B, H) and the state after its last step."""
        outs = []
        for x_t in x:  # (B, input_size)
            out, state = self.step(x_t, state)
            outs.append(out)
        if not outs:  # an empty window leaves the state as it was
            return x.new_zeros(0, x.shape[1], self.spec.hidden_size), state
        return torch.stack(outs), state

    def head(self, out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Top outputs (..., H) and the inputs (..., input_size) of the same steps -> (..., outputs).

        A direct multi-step forecast, no predictions fed back. The first `horizon` outputs are
        the point forecast; with quantiles, each level's `horizon` outputs follow (see
        `split_head`). With a highway, a linear map of the step's own inputs is added: the
        linear autoregression on the newest value and covariates that a recurrent network
        learns only approximately through its squashing gates (Lai et al. 2018, LSTNet).
        """
        forecast = self.readout(out)
        return forecast if self.highway is None else forecast + self.highway(inputs)


def split_head(out: torch.Tensor, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., horizon * (1 + Q)) -> point (..., horizon) and quantiles (..., Q, horizon), views."""
    point, rest = out[..., :horizon], out[..., horizon:]
    return point, rest.unflatten(-1, (rest.shape[-1] // horizon, horizon))


def resized(model: Forecaster, spec: ModelSpec) -> Forecaster:
    """`model`'s network under `spec`, which differs from its own in `HEAD_ONLY` fields alone.

    The body's weights carry over as they are, and so does each head row of a step both
    horizons share; a step beyond the old horizon starts as a copy of the old last step's
    (its forecast flat from there, point and quantiles alike, until retraining learns it).
    """
    if set(changed_fields(model.spec, spec)) - set(HEAD_ONLY):
        raise ValueError(
            f"only {' and '.join(HEAD_ONLY)} can change under the same body, not {changes(model.spec, spec)}"
        )
    old = model.spec.horizon
    steps = torch.arange(spec.horizon).clamp(max=old - 1)
    rows = (torch.arange(1 + len(spec.quantiles))[:, None] * old + steps[None, :]).flatten()  # point, then each level
    state = {
        name: value[rows] if name.startswith(("readout.", "highway.")) else value
        for name, value in model.state_dict().items()
    }
    new = Forecaster(spec)
    new.load_state_dict(state)
    return new
