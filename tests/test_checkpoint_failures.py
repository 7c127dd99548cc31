"""A checkpoint that cannot be written (a full disk, a read-only folder) is counted and logged, never fatal: the loop
serves on, the committed offsets and the last good checkpoint stay where they were, and a restart resumes there."""

import errno
import logging
import os

import pytest
from test_app import hours, worker

from forecaster.io import checkpoint
from forecaster.io.checkpoint import load_latest_checkpoint

FAILURES = "forecaster_checkpoint_failures_total"


def failing_writes(monkeypatch, code: int):
    """Every checkpoint write fails with `code` from here on, as the file system would answer it."""

    def refuse(path, data):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(checkpoint, "write_atomically", refuse)


@pytest.mark.parametrize(
    "code, reason", [(errno.ENOSPC, "disk_full"), (errno.EROFS, "not_writable"), (errno.EIO, "io_error")]
)
def test_a_failed_checkpoint_is_counted_and_the_last_good_one_stays_with_its_offsets(
    tmp_path, monkeypatch, caplog, code, reason
):
    w, source, sink, registry = worker([hours("a", 0, 2), hours("a", 2, 4), hours("a", 4, 6)], None, tmp_path, 2)
    w.run_once()
    assert source.committed == [{0: 2}]
    failing_writes(monkeypatch, code)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="forecaster.app"):
        w.run_once()
        w.run_once()
    assert registry.get_sample_value(FAILURES, {"pipeline": "test", "reason": reason}) == 2
    assert source.committed == [{0: 2}], "offsets committed past the last durable checkpoint"
    assert load_latest_checkpoint(tmp_path)[0]["offsets"] == {0: 2}
    assert len(sink.messages) == 6 and w.error is None  # every record still forecast
    [logged] = [r for r in caplog.records if r.levelno >= logging.ERROR]  # once per run of failures, not per attempt
    assert f"cannot write a checkpoint in {tmp_path}" in logged.getMessage()
    assert os.strerror(code) in logged.getMessage()


def test_checkpoints_resume_once_the_folder_is_writable_again(tmp_path, monkeypatch, caplog):
    w, source, _, registry = worker([hours("a", 0, 2), hours("a", 2, 4)], None, tmp_path, 2)
    with monkeypatch.context() as patched:
        failing_writes(patched, errno.ENOSPC)
        w.run_once()
    with caplog.at_level(logging.INFO, logger="forecaster.app"):
        w.run_once()
    assert source.committed == [{0: 4}] and load_latest_checkpoint(tmp_path)[0]["offsets"] == {0: 4}
    assert "checkpoints written again after 1 failure" in caplog.text
    assert registry.get_sample_value("forecaster_checkpoints_total", {"pipeline": "test"}) == 1


def test_a_state_path_that_is_not_a_folder_fails_the_checkpoint_not_the_loop(tmp_path):
    state = tmp_path / "state"
    state.write_text("")  # a real error from the file system, whoever runs the test (root ignores permissions)
    w, source, _, registry = worker([hours("a", 0, 2)], None, state, 2)
    assert w.run_once() == 2
    assert source.committed == [] and w.error is None
    assert registry.get_sample_value(FAILURES, {"pipeline": "test", "reason": "io_error"}) == 1


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root ignores folder permissions; the same failure (EROFS) is tested as not_writable above",
)
def test_a_read_only_folder_is_counted_as_not_writable(tmp_path):
    tmp_path.chmod(0o500)
    try:
        w, _, _, registry = worker([hours("a", 0, 2)], None, tmp_path, 2)
        w.run_once()
    finally:
        tmp_path.chmod(0o700)
    assert registry.get_sample_value(FAILURES, {"pipeline": "test", "reason": "not_writable"}) == 1


def test_a_failed_final_checkpoint_on_stop_leaves_the_offsets_uncommitted(tmp_path, monkeypatch):
    w, source, _, _ = worker([hours("a", 0, 2)], None, tmp_path, 1000)
    w.run_once()
    failing_writes(monkeypatch, errno.ENOSPC)
    w.stop.set()
    w.run()
    assert source.committed == [] and w.error is None


def test_failures_are_exported_at_zero_from_the_start(tmp_path):
    _, _, _, registry = worker([], None, tmp_path)
    for reason in ("disk_full", "not_writable", "io_error"):
        assert registry.get_sample_value(FAILURES, {"pipeline": "test", "reason": reason}) == 0
