"""Per-series ring buffers of recent steps, and training targets that never look ahead."""

import torch

from forecaster.serving.buffer import WindowBuffer, targets


def fill(buffer, slot, values):
    for v in values:
        buffer.write(torch.tensor([slot]), torch.full((1, 2), float(v)), torch.tensor([float(v)]), torch.tensor([1.0]))


def test_a_window_holds_the_newest_steps_oldest_first():
    buffer = WindowBuffer(capacity=2, window=4, input_size=2)
    fill(buffer, 0, range(1, 7))  # 6 steps into a window of 4
    inputs, actual, scale, valid = buffer.read(torch.tensor([0]))
    assert actual[0].tolist() == [3.0, 4.0, 5.0, 6.0] and valid.all()
    assert inputs[0, :, 0].tolist() == [3.0, 4.0, 5.0, 6.0]


def test_a_short_series_has_its_valid_steps_at_the_end():
    buffer = WindowBuffer(capacity=2, window=4, input_size=2)
    fill(buffer, 1, [7, 8])
    _, actual, _, valid = buffer.read(torch.tensor([1]))
    assert valid[0].tolist() == [False, False, True, True] and actual[0, 2:].tolist() == [7.0, 8.0]


def test_series_do_not_share_buffers_and_reset_empties_one():
    buffer = WindowBuffer(capacity=2, window=3, input_size=2)
    fill(buffer, 0, [1, 2, 3])
    fill(buffer, 1, [10])
    buffer.reset(torch.tensor([0]))
    assert not buffer.read(torch.tensor([0]))[3].any()
    assert buffer.read(torch.tensor([1]))[1][0, -1] == 10.0


def test_targets_exist_only_for_steps_whose_future_has_arrived():
    actual = torch.tensor([[1.0, 2.0, 4.0, 7.0]], dtype=torch.float64)
    scale = torch.tensor([[1.0, 2.0, 1.0, 1.0]])
    valid = torch.tensor([[False, True, True, True]])
    result, mask = targets(actual, scale, valid, horizon=2)
    assert mask[0].tolist() == [[False, False], [True, True], [True, False], [False, False]]
    assert result[0, 1].tolist() == [1.0, 2.5]  # (4 - 2) / 2, (7 - 2) / 2
    assert result[0, 2, 0] == 3.0  # (7 - 4) / 1


def test_growth_keeps_what_was_written():
    buffer = WindowBuffer(capacity=1, window=3, input_size=2)
    fill(buffer, 0, [1, 2])
    buffer.grow(4)
    assert buffer.read(torch.tensor([0]))[1][0, 1:].tolist() == [1.0, 2.0]


def test_a_snapshot_holds_each_series_window_series_first_and_restores_it_elsewhere():
    buffer = WindowBuffer(capacity=3, window=4, input_size=2)
    fill(buffer, 0, [1, 2])
    fill(buffer, 2, [5, 6, 7, 8, 9])
    snapshot = buffer.snapshot([2, 0])
    assert snapshot["inputs"].shape == (2, 4, 2) and snapshot["actual"].shape == snapshot["scale"].shape == (2, 4)
    assert snapshot["written"].tolist() == [5, 2]  # as checkpoints have always held them: a row per series
    other = WindowBuffer(capacity=2, window=4, input_size=2)
    other.restore([1, 0], snapshot)
    for restored, original in zip(other.read(torch.tensor([1, 0])), buffer.read(torch.tensor([2, 0]))):
        assert torch.equal(restored, original)
