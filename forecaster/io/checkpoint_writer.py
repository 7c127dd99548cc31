"""Checkpoints written off the run loop: the loop pauses for a snapshot, not for pickling and fsync.

On a CPU engine under Linux (or any system with fork) the snapshot is a forked child process:
the kernel shares the parent's memory copy-on-write, so the child sees every series' state
exactly as it stood between two batches while the loop steps on. The child builds the payload,
streams it to disk (io/checkpoint.py) and exits; the loop's pause is the fork itself, which
copies page tables, not state. Elsewhere (a CUDA engine: device memory is not shared with a
child) the payload is copied in the loop and written by a thread.

At most one write is in flight. The caller learns that a write is durable from `finished`,
and only then may it commit the offsets the snapshot reflects: a crash at any moment before
leaves the previous checkpoint, and the offsets it holds, in force.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from forecaster.io.checkpoint import next_checkpoint, prune, write_checkpoint

_PR_SET_PDEATHSIG = 1
FORK = hasattr(os, "fork")  # POSIX: a copy-on-write child can write the checkpoint


@dataclass(frozen=True)
class Written:
    """A checkpoint now durable: where, how long from snapshot to rename, and what the caller tagged it with."""

    path: Path
    seconds: float
    tag: object


class CheckpointWriter:
    """One checkpoint write at a time, in a forked child (`fork`) or a thread."""

    def __init__(self, fork: bool = FORK):
        self.fork = fork
        self._path: Path | None = None
        self._keep, self._tag, self._started = 0, None, 0.0
        self._pid, self._errors = 0, -1  # the child, and the pipe it reports a failure on
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def writing(self) -> bool:
        """A write is in flight (started, not yet collected by `finished`)."""
        return self._path is not None

    def start(self, folder: Path, payload: Callable[[], dict], keep: int, tag: object = None) -> None:
        """Write `payload()`, as it is now, as the next checkpoint in `folder`, keeping the newest `keep`."""
        if self.writing:
            raise RuntimeError("a checkpoint write is in flight already")
        path, started = next_checkpoint(folder), time.perf_counter()
        prune(path.parent, keep)  # no write is in flight: a temporary file left is one a crash tore
        if self.fork:
            self._fork(path, payload)
        else:
            self._thread = threading.Thread(target=self._write, args=(path, payload()), name="checkpoint-writer")
            self._thread.start()
        self._path, self._keep, self._tag, self._started = path, keep, tag, started

    def finished(self, wait: bool = False) -> Written | None:
        """The write in flight once it is durable (with `wait`, once it is), else None; an OSError or
        RuntimeError saying why, if it failed (the folder then holds what it held before)."""
        if not self.writing or not (self._child_done(wait) if self.fork else self._thread_done(wait)):
            return None
        path, failure = self._path, self._failure
        self._path, self._thread, self._failure = None, None, None
        if failure is not None:
            raise failure
        prune(path.parent, self._keep)
        return Written(path, time.perf_counter() - self._started, self._tag)

    # -- a thread ---------------------------------------------------------------------------------

    def _write(self, path: Path, payload: dict) -> None:
        try:
            write_checkpoint(path, payload)
        except BaseException as error:  # noqa: BLE001 - handed to the loop by `finished`
            self._failure = error

    def _thread_done(self, wait: bool) -> bool:
        if wait:
            self._thread.join()
        return not self._thread.is_alive()

    # -- a forked child ---------------------------------------------------------------------------

    def _fork(self, path: Path, payload: Callable[[], dict]) -> None:
        errors, report = os.pipe()
        parent = os.getpid()
        # SIGTERM or Ctrl-C reach the whole process group: the parent stops and waits for this write, which the
        # child, born with them blocked, finishes
        unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            pid = os.fork()
        except OSError:  # no memory for the page tables, too many processes
            os.close(errors)
            os.close(report)
            raise
        finally:
            if os.getpid() == parent:
                signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        if pid == 0:  # the child: never returns
            os.close(errors)
            _child(path, payload, report, parent)
        os.close(report)
        self._pid, self._errors = pid, errors

    def _child_done(self, wait: bool) -> bool:
        pid, status = os.waitpid(self._pid, 0 if wait else os.WNOHANG)
        if pid == 0:
            return False
        with os.fdopen(self._errors, "rb") as errors:
            said = errors.read().decode(errors="replace")
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            self._failure = _failure(said, code, self._path)
        self._pid = 0
        return True


def _child(path: Path, payload: Callable[[], dict], report: int, parent: int) -> None:
    """Write the checkpoint and exit without running the parent's clean-up (its threads, clients and atexit
    handlers belong to the parent); a failure is reported on `report` as 'errno message'."""
    code = 1
    try:
        _die_with(parent)
        torch.set_num_threads(1)  # the parent's thread pool did not come along: stay off it
        write_checkpoint(path, payload())
        code = 0
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises it
        number = error.errno if isinstance(error, OSError) and error.errno else 0
        os.write(report, f"{number} {type(error).__name__}: {error}".encode()[:4000])
    finally:
        os._exit(code)


def _die_with(parent: int) -> None:
    """Linux: a parent killed (kill -9) takes the child along, so no orphan writes behind a restarted daemon."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request took hold
            os._exit(1)


def _failure(said: str, code: int, path: Path) -> BaseException:
    """The exception a failed child reported (an OSError keeps its errno: a full disk stays ENOSPC)."""
    number, _, message = said.partition(" ")
    if number.isdigit() and int(number):
        return OSError(int(number), f"writing {path.name}: {message}")
    if not said:
        killed = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return RuntimeError(f"writing {path.name}: the writer died ({killed})")
    return RuntimeError(f"writing {path.name}: {message}")
