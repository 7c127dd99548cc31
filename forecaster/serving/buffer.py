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

_PLANES = ("inputs", "actual", "scale")  # (W, slots, ...): a plane per step


class WindowBuffer:
    """Ring buffers of shape (window, slots, ...) on the state's device; a `state.Part` of the store.

    Step-major: a step writes one position of each of its series, and series stepped together mostly stand at
    the same position, so their writes land side by side in one plane. Series-major, each series' write was a
    page of its own: at a million series a step wrote into a million pages, most of its cost that grew faster
    than the series. Windows are read (for a round, a re-sync) far less often than written.
    """

    def __init__(self, capacity: int, window: int, input_size: int, device: torch.device | str = "cpu"):
        if window < 2:
            raise ValueError(f"window must be at least 2 steps, got {window}")
        self.window, self.input_size, self.device = window, input_size, torch.device(device)
        self.allocate(capacity)

    def allocate(self, capacity: int) -> None:
        """Empty buffers for `capacity` slots."""
        self.inputs = torch.zeros(self.window, capacity, self.input_size, device=self.device)  # (W, slots, I)
        self.actual = torch.zeros(self.window, capacity, device=self.device, dtype=torch.float64)  # (W, slots)
        self.scale = torch.ones(self.window, capacity, device=self.device)  # (W, slots)
        self.written = torch.zeros(capacity, device=self.device, dtype=torch.int64)  # steps ever written

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.inputs, self.actual, self.scale, self.written))

    def write(self, slots: Tensor, inputs: Tensor, actual: Tensor, scale: Tensor) -> None:
        """Append one step for each of `slots` (distinct): inputs (n, I), actual (n,), scale (n,)."""
        position = self.written[slots] % self.window
        self.inputs[position, slots] = inputs
        self.actual[position, slots] = actual.to(torch.float64)
        self.scale[position, slots] = scale
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
        return self.inputs[order, rows], self.actual[order, rows], self.scale[order, rows], valid

    def grow(self, capacity: int) -> None:
        old = self.written.shape[0]
        previous = (self.inputs, self.actual, self.scale, self.written)
        self.allocate(capacity)
        for mine, theirs in zip((self.inputs, self.actual, self.scale), previous):
            mine[:, :old] = theirs
        self.written[:old] = previous[-1]

    def reset(self, slots) -> None:
        """Forget what `slots` held: a new series starts with an empty window."""
        self.written[torch.as_tensor(slots, device=self.device)] = 0

    def snapshot(self, slots) -> dict:
        """Each field of `slots`, series first ((n, W, ...), as checkpoints have always held them)."""
        slots = torch.as_tensor(slots, device=self.device)
        planes = {name: getattr(self, name)[:, slots].transpose(0, 1).contiguous().cpu() for name in _PLANES}
        return {**planes, "written": self.written[slots].cpu()}

    def restore(self, slots, snapshot: dict) -> None:
        slots = torch.as_tensor(slots, device=self.device)
        for name in _PLANES:
            getattr(self, name)[:, slots] = snapshot[name].to(self.device).transpose(0, 1)
        self.written[slots] = snapshot["written"].to(self.device)


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
