"""Logging setup: lines for people (`text`) or one JSON object per line for log pipelines (`json`).

Either way a line carries the time, level, logger and message, plus any fields passed as
`log.info("...", extra={"pipeline": "stock"})`. Fields whose names look like secrets
(`sasl_plain_password`, `ssl_password`, tokens, keys) are masked at any depth, so logging
a Kafka settings mapping never prints a credential.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from forecaster.schema import MASK, is_secret  # one rule for what counts as a secret, in config errors and logs

FORMATS = ("text", "json")
# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
# kafka-python logs every connection attempt and rebalance step at INFO, and warns from its event loop of every
# failed reconnect: an event per poll, not per notable event. The daemon says an outage once, in its own words.
_CHATTY = ("kafka",)


def setup(level: str, fmt: str = "text", stream: IO[str] | None = None, kafka_level: str = "ERROR") -> logging.Handler:
    """Route every logger to one stderr handler in the chosen format; returns that handler.

    Replaces handlers installed before (calling it twice does not double the lines).
    kafka-python's loggers (`kafka`, `kafka.conn`, ...) log at `kafka_level` whatever `level`
    says: ERROR keeps its event-loop chatter out unless someone debugging a connection asks.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(kafka_level)
    return handler


def redact(value: Any) -> Any:
    """`value` as plain JSON-ready data, with every secret-looking key's value replaced by MASK."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): MASK if is_secret(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # strict JSON has no NaN or infinity
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller attached with `extra=`, secrets masked."""
    return {k: MASK if is_secret(k) else redact(v) for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO-8601), level, logger, message, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in extra_fields(record).items() if k not in entry)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...` for a terminal or the journal."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = extra_fields(record)
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        pairs = " ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in fields.items())
        return f"{head} {pairs}{newline}{rest}"
