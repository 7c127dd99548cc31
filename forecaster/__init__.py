"""forecaster: a streaming time-series forecasting daemon (Kafka in, per-series recurrent state, forecasts out)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("forecaster")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
