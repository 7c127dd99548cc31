"""Fixtures shared by every test package."""

import pytest
import torch

from forecaster.io.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker():
    """One embedded tansu broker for the whole session: it starts in well under
    a second, but sharing it keeps the kafka tests from each paying for it.
    Tests that share it should use topic and group names of their own."""
    with EmbeddedBroker() as started:
        yield started


# The CPU always; CUDA too when present, so the same tests cover the GPU path there.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def kept_memory(monkeypatch):
    """The commands that set glibc's allocator up for the whole process (process.keep_freed_memory) only record
    that they did here: the suite's process keeps the C library's defaults. tests/test_process.py checks the
    setting itself, in processes of its own."""
    calls = []
    monkeypatch.setattr("forecaster.process.keep_freed_memory", lambda: calls.append(True) or True)
    return calls
