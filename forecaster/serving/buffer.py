"""Per-series ring buffers of the most recent steps, for retraining on fresh data.

Each series' slot keeps its last `window` steps: the model inputs the engine computed
(scaled target, covariates, calendar features), the raw target and the scale used. Training
targets are derived when windows are read, from targets that have already arrived, so a
window never looks ahead: the target of step t at horizon h exists only once step t + h is
in the buffer.
"""

from __future__ import annotations

import torch
from torch import Tensor

_FIELDS = ("inputs", "actual", "scale", "written")


class WindowBuffer:
    """Ring buffers of shape (slots, window, ...) on the state's device; a `state.Part` of the store."""

    def __init__(self, capacity: int, window: int, input_size: int, device: torch.device | str = "cpu"):
        if window < 2:
            raise ValueError(f"window must be at least 2 steps, got {window}")
        self.window, self.input_size, self.device = window, input_size, torch.device(device)
        self.allocate(capacity)

    def allocate(self, capacity: int) -> None:
        """Empty buffers for `capacity` slots."""
        self.inputs = torch.zeros(capacity, self.window, self.input_size, device=self.device)  # (slots, W, I)
        self.actual = torch.zeros(capacity, self.window, device=self.device, dtype=torch.float64)  # (slots, W)
        self.scale = torch.ones(capacity, self.window, device=self.device)  # (slots, W)
        self.written = torch.zeros(capacity, device=self.device, dtype=torch.int64)  # steps ever written

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.inputs, self.actual, self.scale, self.written))

    def write(self, slots: Tensor, inputs: Tensor, actual: Tensor, scale: Tensor) -> None:
        """Append one step for each of `slots` (distinct): inputs (n, I), actual (n,), scale (n,)."""
        position = self.written[slots] % self.window
        self.inputs[slots, position] = inputs
        self.actual[slots, position] = actual.to(torch.float64)
        self.scale[slots, position] = scale
        self.written[slots] += 1

    def read(self, slots: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Oldest-first windows of `slots`: inputs (n, W, I), actual (n, W), scale (n, W), valid (n, W) bool.

        A series with fewer than `window` steps has its valid steps at the end.
        """
        written = self.written[slots]  # (n,)
        steps = torch.arange(self.window, device=self.device)
        order = (written[:, None] + steps[None, :]) % self.window  # oldest first
        rows = slots[:, None]
        valid = steps[None, :] >= (self.window - written.clamp(max=self.window))[:, None]
        return self.inputs[rows, order], self.actual[rows, order], self.scale[rows, order], valid

    def grow(self, capacity: int) -> None:
        old = self.inputs.shape[0]
        previous = (self.inputs, self.actual, self.scale, self.written)
        self.allocate(capacity)
        for mine, theirs in zip((self.inputs, self.actual, self.scale, self.written), previous):
            mine[:old] = theirs

    def reset(self, slots) -> None:
        """Forget what `slots` held: a new series starts with an empty window."""
        self.written[torch.as_tensor(slots, device=self.device)] = 0

    def snapshot(self, slots) -> dict:
        slots = torch.as_tensor(slots, device=self.device)
        return {name: getattr(self, name)[slots].cpu() for name in _FIELDS}

    def restore(self, slots, snapshot: dict) -> None:
        slots = torch.as_tensor(slots, device=self.device)
        for name in _FIELDS:
            getattr(self, name)[slots] = snapshot[name].to(self.device)


def targets(
    actual: Tensor, scale: Tensor, valid: Tensor, horizon: int, bound: float = float("inf")
) -> tuple[Tensor, Tensor]:
    """Training targets from buffered windows: (y[t+h] - y[t]) / scale[t], and where they exist.

    Shapes (n, W) in, (n, W, horizon) out. A target exists only if both steps are valid and
    observed (a step that filled a gap holds NaN, gaps.py): nothing past the newest step in
    the buffer is ever used, and nothing is learnt against the network's own forecast.
    Targets are clipped to +-`bound`: one absurd value written to the input topic must not
    outweigh every other target of a round (`target_bound`).
    """
    observed = valid & ~torch.isnan(actual)
    n, window = actual.shape
    result = torch.zeros(n, window, horizon, device=actual.device)
    mask = torch.zeros(n, window, horizon, device=actual.device, dtype=torch.bool)
    for h in range(1, min(horizon, window - 1) + 1):
        mask[:, :-h, h - 1] = observed[:, :-h] & observed[:, h:]
        move = ((actual[:, h:] - actual[:, :-h]) / scale[:, :-h]).float()
        result[:, :-h, h - 1] = torch.where(mask[:, :-h, h - 1], move, 0.0)
    return result.clamp_(-bound, bound), mask


def target_bound(clip: float) -> float:
    """The largest training target the network's inputs can justify: a move between two scaled values that the
    engine clips to +-`clip` (scaling.clip) spans at most 2 * clip scales."""
    return 2.0 * clip
