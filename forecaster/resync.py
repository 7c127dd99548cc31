"""Replaying buffered windows through a model: the states new weights would have reached.

After a promotion the serving states were computed under the old weights. `resync`
recomputes them under the new ones from each series' newest buffered steps, batched.
Pure tensor math; `online.py` uses `replay` to score models on held-out steps too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .buffer import WindowBuffer
from .fast import FastStep
from .model import Forecaster

# Series replayed at once when re-synchronising: bounds the memory of a replay over a million series.
_RESYNC_ROWS = 16384


@torch.no_grad()
def replay(model: Forecaster, inputs: Tensor, valid: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Step n series through their windows (n, W, input_size) at once: heads (n, W, outputs) and final state.

    A series' state stays as it was (zero, by default) through its invalid leading steps.
    """
    model.eval()
    state = model.initial_state(inputs.shape[0], device=inputs.device) if state is None else state
    heads = []
    for t in range(inputs.shape[1]):
        out, stepped = model.step(inputs[:, t], state)
        state = torch.where(valid[None, :, t, None], stepped, state)
        heads.append(model.head(out))
    return torch.stack(heads, dim=1), state


@torch.no_grad()
def resync(model: Forecaster, buffer: WindowBuffer, slots: np.ndarray, steps: int) -> Tensor:
    """States (layers, n, width) of `slots` recomputed under `model` from their newest `steps` buffered steps.

    Each series starts from a zero state, as it did when it was new; a series with fewer
    buffered steps replays all it has. This is `replay`'s final state, stepped with the
    engine's fused inference step (fast.py), as a promotion pauses the forecasts meanwhile.
    """
    fast = FastStep(model)
    states = []
    for a in range(0, len(slots), _RESYNC_ROWS):
        piece = torch.as_tensor(slots[a:a + _RESYNC_ROWS], device=buffer.device)
        inputs, _, _, valid = buffer.read(piece)
        inputs, valid = inputs[:, -steps:], valid[:, -steps:]
        first = valid.shape[1] - valid.sum(dim=1)  # each row's oldest valid step: valid steps come last
        state = model.initial_state(len(piece), device=buffer.device)
        for t in range(inputs.shape[1]):
            rows = torch.nonzero(first <= t).flatten()
            if len(rows) == len(piece):
                fast.step_(inputs[:, t], state)
            elif len(rows):
                stepped = state[:, rows]
                fast.step_(inputs[rows, t], stepped)
                state[:, rows] = stepped
        states.append(state)
    if not states:
        return model.initial_state(0, device=buffer.device)
    return torch.cat(states, dim=1)
