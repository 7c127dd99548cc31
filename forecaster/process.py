"""The process itself: what an operator sees of it (the versions it runs and, on CUDA, the GPU memory torch holds),
and how it keeps the memory it frees.

The process's memory, CPU and open files come from prometheus_client's collectors (metrics.py); this module adds
what those cannot know.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import platform

import torch

from forecaster import __version__
from forecaster.metrics import Metrics


def build_labels(device: torch.device, client: str) -> dict[str, str]:
    """The labels of `forecaster_build_info`: what to name in a bug report, and what changed across a deploy."""
    return {
        "version": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "kafka_client": client,
        "kafka_client_version": _installed(client),
    }


def gpu_memory(device: torch.device, cuda=torch.cuda) -> dict[str, float]:
    """Bytes torch holds on `device` now and at most so far, by kind; nothing off CUDA. `cuda` is torch.cuda, or a
    fake in tests."""
    if device.type != "cuda":
        return {}
    return {
        "allocated": float(cuda.memory_allocated(device)),
        "max_allocated": float(cuda.max_memory_allocated(device)),
    }


def export(metrics: Metrics, device: torch.device, client: str, cuda=torch.cuda) -> None:
    """Set the build info, and on CUDA have each scrape read the GPU's memory."""
    metrics.build.info(build_labels(device, client))
    for kind in gpu_memory(device, cuda):
        metrics.gpu_memory.labels(str(device), kind).set_function(lambda kind=kind: gpu_memory(device, cuda)[kind])


# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
NEVER = -1  # glibc reads a trim threshold as size_t: -1 is the largest, a free top no heap reaches


def keep_freed_memory(libc: ctypes.CDLL | None = None) -> bool:
    """Have glibc's malloc keep what the process frees for its next allocations (the `keep_freed_memory` setting);
    False where the C library is not glibc (musl, macOS), which then keeps its own ways.

    By default glibc maps each large block (over 32 MB at most) from the kernel on its own and unmaps it when it is
    freed, and trims the arenas that threads other than the first allocate from. A step's arrays at a million
    series are such blocks (a horizon of 24 floats a series: 96 MB), so every step faulted in fresh pages, each
    zeroed by the kernel first and, for numpy's transparent huge pages, compacted for: at a million series of the
    benchmark network that kernel time exceeded the step's arithmetic (benchmarks/throughput.py).

    Here no block is mapped on its own, the heap is never trimmed, and every thread allocates from the first's
    arena (small blocks still come from each thread's own cache, without a lock), so a step reuses the pages the
    step before freed. Call it before starting threads: an arena a thread already has stays its own. The process
    then holds on to the most memory it ever used, which a daemon sized for its series needs in every busy step.
    """
    if libc is None:
        if platform.libc_ver()[0] != "glibc":
            return False
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    settings = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NEVER), (M_ARENA_MAX, 1))
    return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)  # 1: done


def _installed(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:  # not installed: `check` would have said so
        return "not installed"
