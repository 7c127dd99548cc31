"""How many CPU threads torch may use for a computation, by its size.

torch's intra-op pool helps a computation over many rows and hurts a small one: each of a small
step's many little operations hands its work to the pool's threads and waits for them, and on a
busy 2-core machine a second thread must wait for a core that the broker, the Kafka client's
thread or the trainer may hold. Measured here: an engine step of 25 records took 32 ms on two
threads and 1.8 ms on one, which made the tail of the daemon's latency; a year's backtest of the
shipped weather pipeline, whose retraining trains on 32 windows at a time, took 294 s of wall
time (239 s of CPU, a quarter of it the kernel's) on two threads and 85 s on one, with the same
figures out. Large steps (a catch-up, a benchmark's 10,000 series) gain from every thread.

With torch's OpenMP pool the count is the calling thread's own (and the default of threads it
starts later), so a round's thread can train on one while the run loop steps on two.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

# A computation over fewer rows than this (series in a step, windows in a training batch) runs on one thread.
PARALLEL_ROWS = 4096


def for_rows(rows: int, most: int) -> int:
    """The threads a computation over `rows` rows takes: `most` for a large one, one for a small one."""
    return most if rows >= PARALLEL_ROWS else 1


def sized(rows: int, device: torch.device, most: int | None = None) -> contextlib.AbstractContextManager:
    """`cpu_threads` for a computation over `rows` rows: one thread for a small one, `most` (default: the calling
    thread's count now) for a large one."""
    return cpu_threads(for_rows(rows, torch.get_num_threads() if most is None else most), device)


@contextlib.contextmanager
def cpu_threads(threads: int, device: torch.device) -> Iterator[None]:
    """torch's CPU threads set to `threads` inside (nothing changes off the CPU). On leaving, the count goes back
    to the larger of the two, so that two loops stepping at once on one thread can never leave it lowered."""
    before = torch.get_num_threads()
    if device.type != "cpu" or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(max(threads, before))
