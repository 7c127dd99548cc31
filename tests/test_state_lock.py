"""One process per pipeline's state folder: a second daemon (or `reset`) on it stops with exit code 2, naming the
folder and the pid of the process that holds it."""

import contextlib
import errno
import logging
import os
import pathlib
import signal
import subprocess
import sys

import pytest
from test_cli_check import config_dir  # noqa: F401 - the fixture: a config of two seeded pipelines

from forecaster.cli import EXIT_CONFIG, main
from forecaster.errors import StateInUse
from forecaster.io.checkpoint import LOCK_NAME, lock_folder

HOLD = """
import sys
from forecaster.io.checkpoint import lock_folder
lock_folder(sys.argv[1])
print("held", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def held_by_another_process(folder):
    """`folder` locked by a child process until the block ends; yields its pid."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"held\n"
        yield child.pid
    finally:
        child.stdin.close()
        child.wait(60)


def test_a_folder_another_process_holds_is_refused_naming_it_and_that_process(tmp_path):
    folder = tmp_path / "weather"
    with held_by_another_process(folder) as pid:
        with pytest.raises(StateInUse) as refused:
            lock_folder(folder)
    assert str(refused.value).startswith(f"{folder} is in use by another forecaster process (pid {pid})")
    held = lock_folder(folder)  # the holder is gone, and its lock with it
    assert held is not None and (folder / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    os.close(held)


def test_the_lock_outlives_no_process_killed_with_sigkill(tmp_path):
    folder = tmp_path / "weather"
    with held_by_another_process(folder) as pid:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        held = lock_folder(folder)
    assert held is not None
    os.close(held)


def test_a_folder_where_no_lock_can_be_made_is_logged_and_left_unlocked(tmp_path, caplog):
    state = tmp_path / "state"
    state.write_text("")  # not a folder: as a read-only one, nothing can be created there (root included)
    with caplog.at_level(logging.ERROR, logger="forecaster.io.checkpoint"):
        assert lock_folder(state / "weather") is None
    assert f"cannot lock {state / 'weather'}" in caplog.text


def test_a_folder_turned_read_only_is_still_locked_by_the_lock_file_made_before(tmp_path, monkeypatch):
    folder = tmp_path / "weather"
    os.close(lock_folder(folder))  # an earlier run made the lock file

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(pathlib.Path, "touch", read_only)  # root ignores permissions: the file system refuses
    monkeypatch.setattr(pathlib.Path, "write_text", read_only)
    held = lock_folder(folder)
    assert held is not None
    with pytest.raises(StateInUse):
        lock_folder(folder)
    os.close(held)


@pytest.fixture
def no_signal_handlers(monkeypatch):
    """`forecaster run` installs SIGTERM and SIGINT handlers: not in the test process."""
    monkeypatch.setattr(signal, "signal", lambda *args: None)


def test_a_second_daemon_on_the_same_state_exits_2_before_it_contacts_kafka(config_dir, capsys, no_signal_handlers):  # noqa: F811
    folder = config_dir / "state" / "solar"
    with held_by_another_process(folder) as pid:
        code = main(["run", "-c", str(config_dir / "config.yaml"), "--shutdown-timeout", "1"])
    assert code == EXIT_CONFIG
    assert f"forecaster: {folder} is in use by another forecaster process (pid {pid})" in capsys.readouterr().err


def test_reset_refuses_a_folder_a_daemon_holds(config_dir, capsys):  # noqa: F811
    folder = config_dir / "state" / "weather"
    with held_by_another_process(folder) as pid:
        assert main(["reset", "-c", str(config_dir / "config.yaml"), "--pipeline", "weather"]) == EXIT_CONFIG
    assert f"(pid {pid})" in capsys.readouterr().err
    assert folder.is_dir()
