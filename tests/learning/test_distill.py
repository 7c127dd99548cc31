"""Distillation: a student learns a teacher's forecasts and quantiles as well as the targets."""

import dataclasses

import pytest
import torch

from forecaster.build import load_model, model_spec, save_model, seeded_model
from forecaster.config import Training
from forecaster.learning import distill, tbptt
from forecaster.serving.model import Forecaster, ModelSpec

from support import PretrainFolder

HORIZON, LEVELS = 3, (0.1, 0.9)


def network(hidden=8, layers=1, cell="gru", input_size=4, seed=0) -> Forecaster:
    torch.manual_seed(seed)
    spec = ModelSpec(
        cell=cell, input_size=input_size, hidden_size=hidden, num_layers=layers, horizon=HORIZON, quantiles=LEVELS
    )
    return Forecaster(spec)


def series(length=60, count=3, seed=0) -> list[tbptt.Series]:
    """Random series with inputs of width 4 and targets for 3 steps ahead, the last ones masked."""
    generator = torch.Generator().manual_seed(seed)
    made = []
    for i in range(count):
        n = length + 10 * (i == count - 1)  # one series longer than the others
        inputs = torch.randn(n, 4, generator=generator)
        targets = torch.randn(n, HORIZON, generator=generator)
        mask = torch.ones(n, HORIZON, dtype=torch.bool)
        mask[-HORIZON:] = False
        made.append(
            tbptt.Series(f"s{i}", inputs, targets * mask, mask, torch.zeros(n, dtype=torch.float64), torch.ones(n))
        )
    return made


TRAINING = Training(window=20, chunk=5, batch_size=4, steps=3, warmup_steps=1)


def test_taught_series_carry_the_teachers_forecast_of_every_step_from_its_start():
    teacher, plain = network(hidden=16, layers=2, seed=1), series()

    taught = distill.taught(teacher, plain)

    for before, after in zip(plain, taught, strict=True):
        inputs = before.inputs.unsqueeze(1)  # (T, 1, input_size)
        outputs, _ = teacher(inputs, teacher.initial_state(1))
        torch.testing.assert_close(after.soft, teacher.head(outputs, inputs)[:, 0])
        assert after.soft.shape == (len(before), HORIZON * (1 + len(LEVELS)))
        assert torch.equal(after.targets, before.targets) and torch.equal(after.inputs, before.inputs)


def test_the_head_of_a_taught_series_keeps_the_teachers_outputs_of_its_steps():
    taught = distill.taught(network(seed=1), series())[0]
    assert torch.equal(tbptt.head(taught, 20).soft, taught.soft[:20])


def test_the_imitation_loss_is_zero_on_the_teachers_own_outputs_and_counts_every_step_and_level():
    soft = torch.randn(7, 2, HORIZON * 3)
    assert tbptt.imitation_loss(soft, soft, HORIZON) == 0
    off = soft.clone()
    off[..., HORIZON:] += 1.0  # every quantile one unit off; the point forecast exact
    assert tbptt.imitation_loss(off, soft, HORIZON).item() == pytest.approx(1.0)


def test_the_mix_is_the_targets_loss_at_weight_0_and_the_imitation_loss_at_weight_1():
    forecasts, targets, soft = torch.randn(5, 2, 9), torch.randn(5, 2, 3), torch.randn(5, 2, 9)
    mask = torch.rand(5, 2, 3) > 0.3
    on_targets = tbptt.forecast_loss(forecasts, targets, mask, LEVELS)
    on_teacher = tbptt.imitation_loss(forecasts, soft, HORIZON)
    for weight, expected in ((0.0, on_targets), (1.0, on_teacher), (0.25, 0.75 * on_targets + 0.25 * on_teacher)):
        training = dataclasses.replace(TRAINING, teacher_weight=weight)
        torch.testing.assert_close(tbptt.window_loss(forecasts, targets, mask, soft, LEVELS, training), expected)
    assert tbptt.window_loss(forecasts, targets, mask, None, LEVELS, TRAINING) == on_targets  # no teacher


def fitted(taught: list[tbptt.Series], weight: float) -> dict:
    student = network(seed=3)
    tbptt.fit(student, taught, dataclasses.replace(TRAINING, teacher_weight=weight))
    return student.state_dict()


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_fitting_learns_from_the_teachers_outputs_and_at_weight_1_from_nothing_else():
    taught = distill.taught(network(hidden=16, layers=2, seed=1), series())
    other_targets = [dataclasses.replace(s, targets=-s.targets) for s in taught]
    other_teacher = distill.taught(network(hidden=16, layers=2, seed=2), series())

    only_teacher = fitted(taught, 1.0)
    assert same(only_teacher, fitted(other_targets, 1.0))  # the targets do not count
    assert not same(only_teacher, fitted(other_teacher, 1.0))  # the teacher's outputs do

    only_targets = fitted(taught, 0.0)
    assert same(only_targets, fitted(other_teacher, 0.0)) and not same(only_targets, fitted(other_targets, 0.0))
    assert not same(fitted(taught, 0.5), only_targets)


def test_a_student_fitted_on_a_teacher_moves_towards_it():
    taught = distill.taught(network(hidden=16, layers=2, seed=1), series())
    student = network(seed=3)

    def distance() -> float:  # the student's own outputs against the teacher's, over every step
        own = distill.taught(student, taught)
        return sum(tbptt.imitation_loss(mine.soft, theirs.soft, HORIZON).item() for mine, theirs in zip(own, taught))

    before = distance()
    tbptt.fit(student, taught, dataclasses.replace(TRAINING, teacher_weight=1.0, steps=24, learning_rate=1e-2))
    assert distance() < 0.5 * before


def test_a_teacher_of_any_size_and_cell_may_teach_but_only_with_the_students_inputs_and_outputs():
    student = network().spec
    distill.check_teacher(network(hidden=32, layers=3, cell="lstm").spec, student)  # accepted
    with pytest.raises(ValueError, match=r"got input_size 6 -> 4 \(teacher -> student\)"):
        distill.check_teacher(network(input_size=6).spec, student)
    with pytest.raises(ValueError, match=r"got horizon 5 -> 3, quantiles none -> 0.1/0.9"):
        distill.check_teacher(dataclasses.replace(student, horizon=5, quantiles=()), student)


# -- `forecaster pretrain --teacher` -------------------------------------------------------------------

TRAINING_YAML = "training:\n  window: 48\n  chunk: 24\n  batch_size: 4\n  steps: 3\n  teacher_weight: 0.7\n"


@pytest.fixture
def folder(tmp_path):
    """A pipeline serving a 2 x 8 GRU, and a 2 x 32 LSTM teacher for it (teacher.pt)."""
    folder = PretrainFolder(tmp_path, TRAINING_YAML)
    save_model(tmp_path / "teacher.pt", seeded_model(folder.pipeline(hidden_size=32, cell="lstm")))
    return folder


def test_pretrain_teacher_writes_the_pipelines_model_and_names_its_teacher(folder):
    teacher = folder.folder / "teacher.pt"
    assert folder.pretrain("--teacher", str(teacher)) == 0
    student, metadata = load_model(folder.folder / "w.pt", expected=model_spec(folder.pipeline()))
    assert student.spec.hidden_size == 8 and student.spec.cell == "gru"
    assert metadata["teacher"] == str(teacher) and metadata["teacher_weight"] == 0.7


def test_pretrain_refuses_a_teacher_that_reads_other_inputs(folder, capsys):
    wide = folder.pipeline(hidden_size=32)
    with_covariate = dataclasses.replace(wide, record=dataclasses.replace(wide.record, covariates=("humidity",)))
    other = folder.folder / "other.pt"
    save_model(other, seeded_model(with_covariate))
    assert folder.pretrain("--teacher", str(other)) == 2
    err = capsys.readouterr().err
    assert f"{other}: cannot teach pipeline weather's model" in err
    assert f"input_size {with_covariate.input_size} -> {folder.pipeline().input_size}" in err


def test_pretrain_refuses_a_teacher_file_that_is_not_there(folder, capsys):
    assert folder.pretrain("--teacher", str(folder.folder / "missing.pt")) == 2
    assert "--teacher: expected an existing weights file" in capsys.readouterr().err
