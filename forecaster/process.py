"""What an operator sees of the process itself: the versions it runs and, on CUDA, the GPU memory torch holds.

The process's memory, CPU and open files come from prometheus_client's collectors (metrics.py); this module adds
what those cannot know.
"""

from __future__ import annotations

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


def _installed(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:  # not installed: `check` would have said so
        return "not installed"
