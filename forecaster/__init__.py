"""forecaster: a streaming time-series forecasting daemon (Kafka in, per-series recurrent state, forecasts out).

The public API is small: `Pipeline` (forecaster/api.py: a pipeline's engine stepped from Python, without
Kafka), `load` (a config.yaml) and the error tree. `Pipeline` and `load` are imported on first use, so that
`import forecaster` stays light (no torch) for the command line's help and for tools that only read configs.
"""

import os
from importlib.metadata import PackageNotFoundError, version

from forecaster.errors import ConfigError, DataFileError, ForecasterError, RecordError

# torch's large tensors on transparent huge pages: the fork that snapshots a checkpoint (io/checkpoint_writer.py)
# then copies one page-table entry per 2 MiB of state, not one per 4 KiB: the run loop pauses about 20 ms at 100k
# series instead of 130 ms (benchmarks/checkpoint.py). torch reads it at its first allocation, so it is set before
# torch is imported; an operator's own setting wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# The name pip installs it by (pyproject.toml's project.name): "forecaster" on PyPI is another project.
DISTRIBUTION = "forecaster-daemon"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["Pipeline", "load", "ForecasterError", "ConfigError", "RecordError", "DataFileError", "__version__"]


def __getattr__(name: str):
    if name == "Pipeline":
        from forecaster.api import Pipeline

        return Pipeline
    if name == "load":
        from forecaster.config import load

        return load
    raise AttributeError(f"module 'forecaster' has no attribute {name!r}")
