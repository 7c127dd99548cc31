"""Knowledge distillation: a small served network learns from a larger one's forecasts as well as the targets.

A teacher (say 2 layers of 128) forecasts better than a network the engine can step as fast as
a student (1 layer of 32), but its outputs carry more than the targets do: a smoothed view of
where each series is going, and quantiles for every step, where the targets are one noisy draw
and end where the data ends. `taught` runs the teacher once over every series and attaches its
head outputs; `tbptt.fit` then mixes `tbptt.imitation_loss` on them with the usual loss
(training.teacher_weight). Pure: no files; pretrain.py loads the teacher and writes the student.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from forecaster.learning.tbptt import Series, equal_lengths
from forecaster.serving.model import Forecaster, ModelSpec, changes

# What a teacher must share with its student: the same inputs, and outputs that mean the same
# (steps ahead, quantile levels, and whether they are of the seasonal difference). Cell, depth,
# width, layer norm, residuals, highway and dropout may all differ.
SHARED = ("input_size", "horizon", "quantiles", "season")


def check_teacher(teacher: ModelSpec, student: ModelSpec) -> None:
    """A teacher whose outputs the student cannot imitate is refused, naming what differs."""
    differing = {name: getattr(student, name) for name in SHARED if getattr(teacher, name) != getattr(student, name)}
    if differing:
        raise ValueError(
            f"expected a teacher with the student's {', '.join(SHARED)}, got "
            f"{changes(teacher, dataclasses.replace(teacher, **differing))} (teacher -> student)"
        )


@torch.no_grad()
def taught(teacher: Forecaster, series: Sequence[Series], device: str | torch.device = "cpu") -> list[Series]:
    """Each series with the teacher's head outputs at every step attached (`Series.soft`, (T, outputs)).

    The teacher steps each series from a zero state from its start, as the engine would serve it,
    so each output is its forecast from everything before that step and nothing after; series of
    equal length go through together.
    """
    teacher.to(device).eval()
    soft: dict[int, torch.Tensor] = {}
    for members, inputs in equal_lengths(series):
        inputs = inputs.to(device)
        outputs, _ = teacher(inputs, teacher.initial_state(len(members), device=device))
        heads = teacher.head(outputs, inputs).float().cpu()  # (T, n, outputs)
        soft.update({i: heads[:, j].contiguous() for j, i in enumerate(members)})
    return [dataclasses.replace(s, soft=soft[i]) for i, s in enumerate(series)]
