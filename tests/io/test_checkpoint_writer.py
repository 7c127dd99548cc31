"""Checkpoints written off the run loop: the same file as a write in the loop, the previous one in force until
the new one is durable, and a failure reported rather than lost."""

import errno
import os
import signal

import pytest
import torch

from forecaster.io.checkpoint import load_latest_checkpoint, read_checkpoint, save_checkpoint
from forecaster.io.checkpoint_writer import CheckpointWriter


def payload(n: int) -> dict:
    return {
        "offsets": {0: n},
        "written_at": 1.5,
        "engine": {"keys": [f"s{i}" for i in range(n)], "wide": torch.arange(3.0 * n).reshape(n, 3)},
    }


class DiesWhenPickled:
    """Kills the process that pickles it: a writer killed half way through a checkpoint."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)


class FullDisk:
    """Fails to be written as a full disk fails a write."""

    def __reduce__(self):
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("fork", [True, False], ids=["forked child", "thread"])
def test_a_background_write_makes_the_same_file_as_a_write_in_the_loop(tmp_path, fork):
    in_loop = save_checkpoint(tmp_path / "loop", payload(1000))
    writer = CheckpointWriter(fork=fork)
    writer.start(tmp_path / "background", lambda: payload(1000), keep=3, tag={0: 1000})
    written = writer.finished(wait=True)
    assert written.path.name == in_loop.name and written.tag == {0: 1000} and not writer.writing
    assert written.path.read_bytes() == in_loop.read_bytes()


def test_the_writer_sees_the_state_as_it_was_when_the_write_started(tmp_path):
    state = torch.zeros(4)
    writer = CheckpointWriter(fork=True)
    writer.start(tmp_path, lambda: {"state": state}, keep=3)
    state += 1  # the loop steps on while the child writes
    assert torch.equal(read_checkpoint(writer.finished(wait=True).path)["state"], torch.zeros(4))


def test_a_writer_killed_half_way_leaves_the_last_good_checkpoint_in_force(tmp_path):
    good = save_checkpoint(tmp_path, payload(3))
    writer = CheckpointWriter(fork=True)
    writer.start(tmp_path, lambda: {**payload(5), "poison": DiesWhenPickled()}, keep=3)
    with pytest.raises(RuntimeError, match="the writer died \\(killed by signal 9\\)"):
        writer.finished(wait=True)
    assert load_latest_checkpoint(tmp_path)[1] == good and any(tmp_path.glob(".checkpoint-*.tmp"))
    writer.start(tmp_path, lambda: payload(7), keep=3)  # the next write clears what the torn one left
    assert writer.finished(wait=True).path.name == "checkpoint-000000000002.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name, "checkpoint-000000000002.pt"]


@pytest.mark.parametrize("fork", [True, False], ids=["forked child", "thread"])
def test_a_failed_write_is_raised_with_its_errno_and_keeps_nothing(tmp_path, fork):
    good = save_checkpoint(tmp_path, payload(3))
    writer = CheckpointWriter(fork=fork)
    writer.start(tmp_path, lambda: {**payload(5), "disk": FullDisk()}, keep=3)
    with pytest.raises(OSError, match="No space left on device") as raised:
        writer.finished(wait=True)
    assert raised.value.errno == errno.ENOSPC and not writer.writing
    assert sorted(tmp_path.iterdir()) == [good]


def test_one_write_at_a_time(tmp_path):
    writer = CheckpointWriter(fork=True)
    writer.start(tmp_path, lambda: payload(3), keep=3)
    with pytest.raises(RuntimeError, match="in flight already"):
        writer.start(tmp_path, lambda: payload(4), keep=3)
    writer.finished(wait=True)
    assert writer.finished(wait=True) is None  # collected once


def test_the_writer_keeps_the_newest_checkpoints(tmp_path):
    writer = CheckpointWriter(fork=True)
    for n in range(4):
        writer.start(tmp_path, lambda n=n: payload(n + 1), keep=2)
        writer.finished(wait=True)
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["checkpoint-000000000003.pt", "checkpoint-000000000004.pt"]


def test_a_sigterm_to_the_process_group_does_not_stop_the_write_in_flight(tmp_path):
    gate, opened = os.pipe()
    writer = CheckpointWriter(fork=True)
    writer.start(tmp_path, lambda: (os.read(gate, 1), payload(3))[1], keep=3)
    os.kill(writer._pid, signal.SIGTERM)  # as systemd stops the unit: every process of it gets one
    os.kill(writer._pid, signal.SIGINT)
    os.write(opened, b"x")
    assert read_checkpoint(writer.finished(wait=True).path)["offsets"] == {0: 3}
