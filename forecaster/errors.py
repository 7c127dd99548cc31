"""The error tree: every error forecaster raises on purpose is a ForecasterError."""


class ForecasterError(Exception):
    """Root of forecaster's own errors; anything else escaping is a bug."""


class ConfigError(ForecasterError):
    """A configuration file is wrong: the message names the file, the YAML path and what was expected."""


class RecordError(ForecasterError):
    """An input record cannot be used. `reason` is a short label for metrics and dead letters."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DeliveryError(ForecasterError):
    """Output was not acknowledged by Kafka when the daemon stopped: the inputs behind it stay uncommitted."""


class Undeliverable(ForecasterError):
    """Kafka refused output for good (too large, a topic refused or unknown): the pipeline stops rather than retry
    forever, its inputs stay uncommitted, and the daemon exits non-zero."""


class NotEnoughData(ForecasterError):
    """No buffered series is long enough yet for one training window plus the holdout."""


class RoundFailed(ForecasterError):
    """A retraining round ended without a challenger worth judging: over its time budget, or diverged (a loss or
    weights not finite)."""


class Cancelled(ForecasterError):
    """The daemon is stopping: a retraining round in progress gives up at its next optimisation step."""


class DataFileError(ForecasterError):
    """A data file given to a command (`--file`) cannot be read: the message names the file, the line or row, what
    was expected and what was found."""


class TransactionError(ForecasterError):
    """An exactly-once transaction was aborted (or fenced by a newer owner of its partition): nothing of it counts,
    and the member stops, so that a restart restores the partition's committed state."""


class StateInUse(ForecasterError):
    """Another process holds a pipeline's state folder: two writers would corrupt each other's checkpoints."""
