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
