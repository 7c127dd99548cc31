"""forecaster: a streaming time-series forecasting daemon (Kafka in, per-series recurrent state, forecasts out)."""

from importlib.metadata import PackageNotFoundError, version

# The name pip installs it by (pyproject.toml's project.name): "forecaster" on PyPI is another project.
DISTRIBUTION = "forecaster-daemon"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
