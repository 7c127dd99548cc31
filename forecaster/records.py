"""Observations in, forecasts out: pure decoding and encoding of Kafka payloads.

A poll batch decodes into one columnar `Observations` (numpy arrays, so the engine never
loops over records doing tensor work) plus the records it rejected, each with a reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Sequence

import numpy as np

from .config import Limits, RecordFormat
from .errors import RecordError

# Reasons a record is rejected: the `reason` label of forecaster_records_rejected_total
# and the `reason` header of its dead letter.
MALFORMED = "malformed"              # not UTF-8 JSON, or not a JSON object
MISSING_FIELD = "missing_field"      # key, timestamp, target or a covariate is absent
WRONG_TYPE = "wrong_type"            # a field has the wrong JSON type
NON_FINITE = "non_finite"            # NaN or an infinity
BAD_TIMESTAMP = "bad_timestamp"      # a timestamp that does not parse
OUT_OF_ORDER = "out_of_order"        # older than the newest observation of its series
DUPLICATE_TIMESTAMP = "duplicate_timestamp"  # same time as an observation already taken
SERIES_CAPACITY = "series_capacity"  # more new series in one batch than max_series allows
OUT_OF_RANGE = "out_of_range"        # a value larger in magnitude than limits.max_abs_value
FUTURE_TIMESTAMP = "future_timestamp"  # further ahead of the wall clock than limits.max_future_seconds


@dataclass(frozen=True)
class Observations:
    """A batch of accepted observations, column by column, in arrival order."""

    keys: tuple[str, ...]
    times: np.ndarray        # (n,) float64 epoch seconds (UTC)
    local_times: np.ndarray  # (n,) float64 epoch seconds shifted by the record's UTC offset: for calendar features
    values: np.ndarray       # (n, 1 + covariates) float64: target first, then covariates
    positions: np.ndarray    # (n,) int64: index of each record in the poll batch

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class Rejected:
    """A record that was not used, where it was in the poll batch, and why."""

    position: int
    reason: str
    detail: str


@dataclass(frozen=True)
class Forecast:
    """One multi-step forecast for one series, in the series' original units."""

    series: str
    time: float                # epoch seconds of the observation it follows
    issued_at: float           # epoch seconds when it was computed
    model_version: int
    times: Sequence[float]     # epoch seconds of each horizon step
    values: Sequence[float]
    quantiles: Mapping[float, Sequence[float]] | None = None  # level -> one value per horizon step


def decode(payloads: Sequence[bytes], fmt: RecordFormat, limits: Limits | None = None,
           now: float | None = None) -> tuple[Observations, list[Rejected]]:
    """Decode a poll batch; each bad record becomes a `Rejected`, never an exception.

    With `limits`, absurd magnitudes and timestamps far beyond `now` (epoch seconds) are
    rejected too: one record a century ahead would otherwise make every later record of
    its series look stale.
    """
    keys, times, local_times, rows, positions = [], [], [], [], []
    rejected = []
    for position, payload in enumerate(payloads):
        try:
            key, time, local_time, row = decode_one(payload, fmt)
        except RecordError as error:
            rejected.append(Rejected(position, error.reason, error.detail))
            continue
        keys.append(key)
        times.append(time)
        local_times.append(local_time)
        rows.append(row)
        positions.append(position)
    width = 1 + len(fmt.covariates)
    observations = Observations(
        keys=tuple(keys),
        times=np.asarray(times, dtype=np.float64),
        local_times=np.asarray(local_times, dtype=np.float64),
        values=np.asarray(rows, dtype=np.float64).reshape(len(rows), width),
        positions=np.asarray(positions, dtype=np.int64),
    )
    if limits is None:
        return observations, rejected
    return _within_limits(observations, rejected, limits, now)


def _within_limits(observations: Observations, rejected: list[Rejected], limits: Limits,
                   now: float | None) -> tuple[Observations, list[Rejected]]:
    too_large = np.abs(observations.values).max(axis=1, initial=0.0) > limits.max_abs_value
    too_late = (observations.times > now + limits.max_future_seconds) if now is not None else np.zeros(len(observations), bool)
    for i in np.flatnonzero(too_large):
        rejected.append(Rejected(int(observations.positions[i]), OUT_OF_RANGE,
                                 f"a value beyond +-{limits.max_abs_value:g}: {observations.values[i].tolist()}"[:200]))
    for i in np.flatnonzero(too_late & ~too_large):
        rejected.append(Rejected(int(observations.positions[i]), FUTURE_TIMESTAMP,
                                 f"{format_time(observations.times[i])} is more than {limits.max_future_seconds:g} s ahead"))
    keep = ~(too_large | too_late)
    if keep.all():
        return observations, rejected
    kept = Observations(
        keys=tuple(k for k, ok in zip(observations.keys, keep) if ok),
        times=observations.times[keep], local_times=observations.local_times[keep],
        values=observations.values[keep], positions=observations.positions[keep],
    )
    return kept, rejected


def decode_one(payload: bytes | None, fmt: RecordFormat) -> tuple[str, float, float, list[float]]:
    """One JSON record -> (series key, epoch seconds, local epoch seconds, [target, *covariates])."""
    try:
        record = json.loads(payload)
    except (TypeError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RecordError(MALFORMED, f"not a JSON document ({error})") from None
    except RecursionError:
        raise RecordError(MALFORMED, "not a JSON document (nested too deeply)") from None
    if not isinstance(record, dict):
        raise RecordError(MALFORMED, f"expected a JSON object, got {type(record).__name__}")
    key = _field(record, fmt.key)
    if isinstance(key, bool) or not isinstance(key, (str, int)) or key == "":
        raise RecordError(WRONG_TYPE, f"{fmt.key}: expected a non-empty string or integer series key, got {key!r}")
    _check_unicode(key, fmt.key)
    time, local_time = parse_time(_field(record, fmt.timestamp), fmt.timestamp)
    row = [_number(record, name) for name in (fmt.target, *fmt.covariates)]
    return str(key), time, local_time, row


def _check_unicode(key: str | int, name: str) -> None:
    """JSON may escape a lone surrogate ("\\ud800"); such a key has no UTF-8 bytes to be a Kafka key with."""
    try:
        str(key).encode()
    except UnicodeEncodeError:
        raise RecordError(MALFORMED, f"{name}: not valid Unicode text (a lone surrogate): {key!r}"[:200]) from None


def _field(record: dict, name: str):
    if name not in record:
        raise RecordError(MISSING_FIELD, f"{name}: missing")
    return record[name]


def _number(record: dict, name: str) -> float:
    value = _field(record, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(WRONG_TYPE, f"{name}: expected a number, got {value!r}"[:200])
    number = _float(value)
    if not math.isfinite(number):
        raise RecordError(NON_FINITE, f"{name}: expected a finite number, got {number}")
    return number


def _float(value: int | float) -> float:
    """float(value), with JSON integers too large for a float taken as infinite rather than raising."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def parse_time(value, name: str) -> tuple[float, float]:
    """ISO-8601 text (a missing offset means UTC) or epoch seconds -> (epoch, epoch + UTC offset)."""
    if isinstance(value, bool):
        raise RecordError(WRONG_TYPE, f"{name}: expected an ISO-8601 time or epoch seconds, got {value!r}")
    if isinstance(value, (int, float)):
        epoch = _float(value)
        if not math.isfinite(epoch):
            raise RecordError(NON_FINITE, f"{name}: expected a finite time, got {epoch}")
        _check_representable(epoch, name, value)
        return epoch, epoch
    if not isinstance(value, str):
        raise RecordError(WRONG_TYPE, f"{name}: expected an ISO-8601 time or epoch seconds, got {value!r}"[:200])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise RecordError(BAD_TIMESTAMP, f"{name}: not an ISO-8601 time: {value!r}"[:200]) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    epoch = moment.timestamp()
    _check_representable(epoch, name, value)
    return epoch, epoch + moment.utcoffset().total_seconds()


def _check_representable(epoch: float, name: str, value) -> None:
    """A time that `format_time` cannot write (outside the years 1..9999) is rejected here, not crashed on later."""
    try:
        datetime.fromtimestamp(epoch, timezone.utc)
    except (OverflowError, ValueError, OSError):
        raise RecordError(BAD_TIMESTAMP, f"{name}: outside the years 1 to 9999: {value!r}"[:200]) from None


def format_time(epoch: float) -> str:
    """Epoch seconds as ISO-8601 UTC text, as forecasts carry them."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def encode(forecast: Forecast, pipeline: str, target: str) -> bytes:
    """The forecast record, documented in the README: JSON, keyed by series."""
    return json.dumps(
        {
            "series": forecast.series,
            "pipeline": pipeline,
            "target": target,
            "time": format_time(forecast.time),
            "issued_at": format_time(forecast.issued_at),
            "model_version": forecast.model_version,
            "horizon": len(forecast.values),
            "times": [format_time(t) for t in forecast.times],
            "values": [float(v) for v in forecast.values],
            **_quantiles(forecast.quantiles),
        },
        separators=(",", ":"),
    ).encode()


def _quantiles(quantiles: Mapping[float, Sequence[float]] | None) -> dict:
    """{"quantiles": {"0.1": [...], ...}} when the model forecasts quantiles, else nothing."""
    if not quantiles:
        return {}
    return {"quantiles": {f"{level:g}": [float(v) for v in values] for level, values in quantiles.items()}}
