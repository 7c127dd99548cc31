"""Observations in, forecasts out: pure decoding and encoding of Kafka payloads.

A poll batch decodes into one columnar `Observations` (numpy arrays, so the engine never
loops over records doing tensor work) plus the records it rejected, each with a reason.

A message holds one record (a JSON object) or, as a *batch message*, several: a JSON list
of objects. Positions number the records of a poll batch in order, each element of a batch
message counting as one; `origins` maps a position back to its message and element.
Forecasts encode a whole step at once (`encode_many`), so what is shared by many records,
such as the text of a horizon's timestamps, is written once.

A target or covariate that is JSON null is a missing value, not a bad record: it decodes to
NaN, and the engine steps over it (engine.py). A NaN or infinite number is still rejected.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _encode_ascii
from typing import Protocol

import numpy as np
import orjson

from forecaster.config import Limits, RecordFormat
from forecaster.errors import RecordError
from forecaster.serving.cadence import Cadence, step_seconds, to_local

# Reasons a record is rejected: the `reason` label of forecaster_records_rejected_total
# and the `reason` header of its dead letter.
MALFORMED = "malformed"  # not UTF-8 JSON, or not a JSON object
MISSING_FIELD = "missing_field"  # key, timestamp, target or a covariate is absent
WRONG_TYPE = "wrong_type"  # a field has the wrong JSON type
NON_FINITE = "non_finite"  # NaN or an infinity
BAD_TIMESTAMP = "bad_timestamp"  # a timestamp that does not parse
OUT_OF_ORDER = "out_of_order"  # older than the newest observation of its series
NO_VALUE_YET = "no_value_yet"  # a null target, and its series has no value before it
DUPLICATE_TIMESTAMP = "duplicate_timestamp"  # same time as an observation already taken
SERIES_CAPACITY = "series_capacity"  # more new series in one batch than max_series allows
OUT_OF_RANGE = "out_of_range"  # a value larger in magnitude than limits.max_abs_value
FUTURE_TIMESTAMP = "future_timestamp"  # further ahead of the wall clock than limits allow (`future_bound`)
KEY_TOO_LONG = "key_too_long"  # a series key longer in UTF-8 than limits.max_key_bytes


@dataclass(frozen=True)
class Observations:
    """A batch of accepted observations, column by column, in arrival order."""

    keys: tuple[str, ...]
    times: np.ndarray  # (n,) float64 epoch seconds (UTC)
    # (n,) float64 epoch seconds shifted by the record's UTC offset (by the cadence's zone's, once `localised`): the
    # local wall-clock time that calendar cadences and features read
    local_times: np.ndarray
    values: np.ndarray  # (n, 1 + covariates) float64: target first, then covariates; NaN where null (missing)
    positions: np.ndarray  # (n,) int64: index of each record in the poll batch (see `origins`)
    # (n,) int64: the input partition each record came from (None: all from one); what the engine
    # learns across series it learns per partition, in the partition's order (combination.py)
    partitions: np.ndarray | None = None
    # (n,) int64: the input offset of each record's message (None: not from Kafka); with the changelog a series
    # skips records at or below the offset its state reflects (app.py)
    offsets: np.ndarray | None = None
    # (n,) bool: the record's Kafka message key is not its series key (never for a batch message's records: a batch
    # message holds many series); None: not checked. The series key wins either way (docs/records.md)
    mismatched: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def pieces(self, n: int) -> list[Observations]:
        """The observations in runs of at most `n`, in order: itself when it holds no more."""
        if len(self) <= n:
            return [self]
        return [self._slice(slice(start, start + n)) for start in range(0, len(self), n)]

    def split(self, n: int) -> tuple[Observations, Observations]:
        """The first `n` observations, and the rest."""
        return self._slice(slice(None, n)), self._slice(slice(n, None))

    def take(self, rows: np.ndarray) -> Observations:
        """The observations at `rows`: indices, or a boolean mask."""
        index = np.flatnonzero(rows) if rows.dtype == bool else rows
        return self._select(index, take_keys(self.keys, index))

    def _slice(self, part: slice) -> Observations:
        return self._select(part, self.keys[part])

    def _select(self, rows, keys: tuple[str, ...]) -> Observations:
        columns = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "keys"}
        return Observations(keys=keys, **{name: None if c is None else c[rows] for name, c in columns.items()})


def localised(observations: Observations, cadence: Cadence) -> Observations:
    """The observations with their local times read in the cadence's time zone (themselves where it has none)."""
    if cadence.zone is None:
        return observations
    return dataclasses.replace(observations, local_times=to_local(observations.times, 0.0, cadence))


def take_keys(keys: tuple[str, ...], rows: np.ndarray) -> tuple[str, ...]:
    """keys[rows] for a tuple; the tuple itself when rows are all of it, in order."""
    if len(rows) == len(keys) and (len(rows) == 0 or (rows[0] == 0 and np.all(np.diff(rows) == 1))):
        return keys
    if len(rows) < 2:
        return tuple(keys[i] for i in rows.tolist())
    return operator.itemgetter(*rows.tolist())(keys)  # one C-level pass


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
    time: float  # epoch seconds of the observation it follows
    issued_at: float  # epoch seconds when it was computed
    model_version: int
    times: Sequence[float]  # epoch seconds of each horizon step
    values: Sequence[float]
    quantiles: Mapping[float, Sequence[float]] | None = None  # level -> one value per horizon step


def decode(
    payloads: Sequence[bytes],
    fmt: RecordFormat,
    limits: Limits | None = None,
    now: float | None = None,
    partitions: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    cadence: str | None = None,
) -> tuple[Observations, list[Rejected]]:
    """Decode a poll batch; each bad record becomes a `Rejected`, never an exception.

    A batch message (a JSON list of objects) gives one record per element, and each bad
    element is rejected on its own. With `limits`, absurd magnitudes, overlong keys and timestamps far
    beyond `now` (epoch seconds) are rejected too: one record a century ahead would
    otherwise make every later record of its series look stale; with the pipeline's `cadence`,
    far means a few steps of it (`future_bound`). With `partitions` and `offsets` (one
    per message), each record carries its message's input partition and offset.
    """
    observations, rejected, _ = decode_slice(payloads, None, fmt, limits, now, partitions, offsets, cadence)
    return observations, rejected


def decode_slice(
    payloads: Sequence[bytes],
    most: int | None,
    fmt: RecordFormat,
    limits: Limits | None,
    now: float | None,
    partitions: Sequence[int] | None = None,
    offsets: Sequence[int] | None = None,
    cadence: str | None = None,
    message_keys: Sequence[bytes | None] | None = None,
) -> tuple[Observations, list[Rejected], int]:
    """`decode` the leading messages of `payloads` that hold at most `most` records together (at least one
    message, however many elements it holds; None: all), and say how many messages that was: a poll batch of
    large batch messages is decoded a slice at a time, never all at once. With `message_keys` (each message's
    Kafka key), each record says whether its message's key is not its series key (`Observations.mismatched`)."""
    keys, times, local_times, rows, positions, messages = [], [], [], [], [], []
    rejected = []
    parsed_times: dict = {}  # a poll batch repeats its timestamps: each distinct one is parsed once
    longest = None if limits is None else limits.max_key_bytes
    message = -1
    for position, (message, document) in enumerate(_documents(payloads, most)):
        try:
            key, time, local_time, row = _fields(document, fmt, parsed_times, longest)
        except RecordError as error:
            rejected.append(Rejected(position, error.reason, error.detail))
            continue
        keys.append(key)
        times.append(time)
        local_times.append(local_time)
        rows.append(row)
        positions.append(position)
        messages.append(message)
    width = 1 + len(fmt.covariates)
    observations = Observations(
        keys=tuple(keys),
        times=np.asarray(times, dtype=np.float64),
        local_times=np.asarray(local_times, dtype=np.float64),
        values=np.asarray(rows, dtype=np.float64).reshape(len(rows), width),
        positions=np.asarray(positions, dtype=np.int64),
        partitions=None if partitions is None else np.asarray(partitions, dtype=np.int64)[messages],
        offsets=None if offsets is None else np.asarray(offsets, dtype=np.int64)[messages],
        mismatched=None if message_keys is None else _mismatched(keys, messages, payloads, message_keys),
    )
    if limits is not None:
        observations, rejected = _within_limits(observations, rejected, limits, now, cadence)
    return observations, rejected, message + 1


def _mismatched(
    keys: Sequence[str], messages: Sequence[int], payloads: Sequence[bytes | None], message_keys: Sequence[bytes | None]
) -> np.ndarray:
    """Per record, whether it came in a message of its own whose Kafka key is not its series key (a null key too:
    the producer's partitioner then scatters the series' records over partitions)."""
    alone = [not _opens_a_list(payload) for payload in payloads]  # once per message, not per element
    return np.array(
        [alone[m] and message_keys[m] != key.encode() for key, m in zip(keys, messages)], dtype=bool
    ).reshape(len(keys))


@dataclass(frozen=True)
class Origin:
    """Where a record of a poll batch came from."""

    message: int  # index of its message in the poll batch
    element: int | None  # its index in a batch message (a JSON list); None: the message is the record


def origins(payloads: Sequence[bytes | None]) -> list[Origin]:
    """Each record position of `decode(payloads)` -> its message and element.

    Only messages that open with "[" can be batch messages, so only those are parsed again.
    """
    found = []
    for message, payload in enumerate(payloads):
        documents, batch = _split(payload) if _opens_a_list(payload) else ((None,), False)
        found += [Origin(message, element if batch else None) for element in range(len(documents))]
    return found


def element_payload(payload: bytes, element: int) -> bytes:
    """The JSON text of one element of a batch message, for its dead letter."""
    return json.dumps(json.loads(payload)[element], separators=(",", ":")).encode()


def _documents(payloads: Sequence[bytes | None], most: int | None = None) -> Iterator[tuple[int, object]]:
    """Every record of a poll batch as parsed JSON (a RecordError where a message is not JSON), with its message;
    with `most`, only those of the leading messages holding at most `most` records (at least the first message).

    Every message holds at least one record (an empty list is one malformed record)."""
    taken = 0
    for message, payload in enumerate(payloads):
        documents = _split(payload)[0]
        taken += len(documents)
        if message and most is not None and taken > most:
            return
        for document in documents:
            yield message, document


def _split(payload: bytes | None) -> tuple[Sequence[object], bool]:
    """A message's records and whether it is a batch message: (its JSON document,) or a batch's elements.

    A JSON list counts as a batch message when it holds at least one object: a list of
    anything else is one malformed record, as it always was.
    """
    try:
        document = _loads(payload)
    except (TypeError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return (RecordError(MALFORMED, f"not a JSON document ({error})"),), False
    except RecursionError:
        return (RecordError(MALFORMED, "not a JSON document (nested too deeply)"),), False
    if isinstance(document, list) and _opens_a_list(payload) and any(isinstance(e, dict) for e in document):
        return document, True
    return (document,), False


def _loads(payload: bytes | None) -> object:
    """The JSON document of a payload, as `json.loads` reads it: by orjson, several times faster, and by json.loads
    where orjson refuses the text (NaN or Infinity literals, UTF-16, a lone surrogate), so that what json.loads
    accepts is accepted, and what it refuses is refused with its own words. Integers orjson reads as floats
    (beyond 64 bits) json.loads reads as floats too, so a record decodes alike whichever reads its message."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload, parse_int=_int_as_orjson)


def _int_as_orjson(text: str) -> int | float:
    """An integer as orjson reads it: exact from -2**63 to 2**64 - 1, a float beyond."""
    value = int(text)
    return value if -(2**63) <= value < 2**64 else float(text)


def _opens_a_list(payload: bytes | None) -> bool:
    """Whether UTF-8 JSON text starts with "[": what every batch message does (cheap, without parsing)."""
    return isinstance(payload, (bytes, bytearray, memoryview)) and bytes(payload).lstrip(b" \t\n\r")[:1] == b"["


def future_bound(limits: Limits, cadence: str | None) -> float:
    """How far ahead of the wall clock, in seconds, a timestamp may lie: limits.max_future_seconds, and with a
    `cadence` no more than limits.max_future_steps of its steps.

    An accepted timestamp ahead of the clock becomes its series' newest time, and every real
    record after it is out_of_order until the clock catches up: a week's bound froze a series
    for up to a week; a few steps' bound costs it a few steps at most.
    """
    if cadence is None:
        return limits.max_future_seconds
    return min(limits.max_future_seconds, limits.max_future_steps * step_seconds(cadence))


def _within_limits(
    observations: Observations, rejected: list[Rejected], limits: Limits, now: float | None, cadence: str | None
) -> tuple[Observations, list[Rejected]]:
    too_large = np.fmax.reduce(np.abs(observations.values), axis=1, initial=0.0) > limits.max_abs_value  # NaN: none
    ahead = future_bound(limits, cadence)
    too_late = (observations.times > now + ahead) if now is not None else np.zeros(len(observations), bool)
    for i in np.flatnonzero(too_large):
        rejected.append(
            Rejected(
                int(observations.positions[i]),
                OUT_OF_RANGE,
                f"a value beyond +-{limits.max_abs_value:g}: {observations.values[i].tolist()}"[:200],
            )
        )
    for i in np.flatnonzero(too_late & ~too_large):
        rejected.append(
            Rejected(
                int(observations.positions[i]),
                FUTURE_TIMESTAMP,
                f"{format_time(observations.times[i])} is more than {ahead:g} s ahead of the clock",
            )
        )
    keep = ~(too_large | too_late)
    if keep.all():
        return observations, rejected
    return observations.take(keep), rejected


def _fields(
    record: object, fmt: RecordFormat, parsed_times: dict, longest: int | None = None
) -> tuple[str, float, float, list[float]]:
    """A parsed record -> (series key, epoch seconds, local epoch seconds, [target, *covariates]); a key longer
    than `longest` bytes is rejected."""
    if isinstance(record, RecordError):
        raise record
    if not isinstance(record, dict):
        raise RecordError(MALFORMED, f"expected a JSON object, got {type(record).__name__}")
    key = field(record, fmt.key)
    if isinstance(key, bool) or not isinstance(key, (str, int)) or key == "":
        raise RecordError(WRONG_TYPE, f"{fmt.key}: expected a non-empty string or integer series key, got {key!r}")
    _check_key(key, fmt.key, longest)
    stamp = field(record, fmt.timestamp)
    cache_key = (type(stamp), stamp) if isinstance(stamp, (str, int, float)) else None
    time, local_time = parsed_times.get(cache_key) or _parse_time_once(stamp, fmt.timestamp, parsed_times, cache_key)
    row = [_number(record, name) for name in (fmt.target, *fmt.covariates)]
    return str(key), time, local_time, row


def _parse_time_once(value, name: str, parsed_times: dict, cache_key) -> tuple[float, float]:
    parsed = parse_time(value, name)
    if cache_key is not None:
        parsed_times[cache_key] = parsed
    return parsed


def _check_key(key: str | int, name: str, longest: int | None) -> None:
    """JSON may escape a lone surrogate ("\\ud800"); such a key has no UTF-8 bytes to be a Kafka key with. A key
    longer than `longest` bytes is refused: each series held keeps its key, so a flood of huge keys would grow
    memory."""
    try:
        size = len(str(key).encode())
    except UnicodeEncodeError:
        raise RecordError(MALFORMED, f"{name}: not valid Unicode text (a lone surrogate): {key!r}"[:200]) from None
    if longest is not None and size > longest:
        raise RecordError(KEY_TOO_LONG, f"{name}: {size} bytes, more than {longest}: {str(key)[:60]!r}...")


def field(record: dict, name: str):
    """The record's field `name`; a name with dots that is not itself a field is a path into nested objects:
    "payload.temp" is record["payload"]["temp"]."""
    if name in record:
        return record[name]
    if "." not in name:
        raise RecordError(MISSING_FIELD, f"{name}: missing")
    return _path(record, name)


def _path(record: dict, name: str):
    """The field at the dotted path `name`, each step into a JSON object."""
    value: object = record
    walked = []
    for part in name.split("."):
        if not isinstance(value, dict):
            raise RecordError(WRONG_TYPE, f"{'.'.join(walked)}: expected a JSON object, got {value!r}"[:200])
        if part not in value:
            raise RecordError(MISSING_FIELD, f"{name}: missing")
        value = value[part]
        walked.append(part)
    return value


def _number(record: dict, name: str) -> float:
    """The field's number; NaN where it is null, a missing value."""
    value = field(record, name)
    if value is None:
        return math.nan
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
        moment = moment.replace(tzinfo=UTC)
    epoch = moment.timestamp()
    _check_representable(epoch, name, value)
    return epoch, epoch + moment.utcoffset().total_seconds()


def _check_representable(epoch: float, name: str, value) -> None:
    """A time that `format_time` cannot write (outside the years 1..9999) is rejected here, not crashed on later."""
    try:
        datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, ValueError, OSError):
        raise RecordError(BAD_TIMESTAMP, f"{name}: outside the years 1 to 9999: {value!r}"[:200]) from None


def format_time(epoch: float) -> str:
    """Epoch seconds as ISO-8601 UTC text, as forecasts carry them."""
    return format_times(np.array([epoch], dtype=np.float64))[0]


def format_times(epochs: np.ndarray) -> list[str]:
    """Epoch seconds as ISO-8601 UTC text, all at once: what `datetime.isoformat` writes for each.

    Microseconds are rounded half to even, as `datetime.fromtimestamp` rounds them, and
    written only when not zero: "2024-03-10T12:30:00+00:00", "...T12:30:01.500000+00:00".
    """
    fraction, whole = np.modf(np.asarray(epochs, dtype=np.float64))
    micros = whole.astype(np.int64) * 1_000_000 + np.round(fraction * 1e6).astype(np.int64)
    moments = micros.astype("datetime64[us]")
    whole_second = micros % 1_000_000 == 0
    text = np.datetime_as_string(moments, unit="s")
    if not whole_second.all():
        text = np.where(whole_second, text, np.datetime_as_string(moments, unit="us"))
    return [t + "+00:00" for t in text.tolist()]


class ForecastColumns(Protocol):
    """Forecasts column by column (engine.Forecasts is one): what `encode_many` writes."""

    keys: Sequence[str]
    times: np.ndarray  # (m,) epoch seconds
    horizon_times: np.ndarray  # (m, horizon) epoch seconds
    values: np.ndarray  # (m, horizon)
    issued_at: float
    model_version: int
    quantiles: Mapping[float, np.ndarray] | None  # level -> (m, horizon)


@dataclass(frozen=True)
class _OneForecast:
    """A `Forecast` as columns of one row."""

    keys: Sequence[str]
    times: np.ndarray
    horizon_times: np.ndarray
    values: np.ndarray
    issued_at: float
    model_version: int
    quantiles: Mapping[float, np.ndarray] | None

    @classmethod
    def of(cls, f: Forecast) -> _OneForecast:
        row = lambda v: np.asarray(v, dtype=np.float64).reshape(1, -1)  # noqa: E731
        quantiles = {level: row(v) for level, v in f.quantiles.items()} if f.quantiles else None
        return cls(
            (f.series,),
            np.array([f.time], dtype=np.float64),
            row(f.times),
            row(f.values),
            f.issued_at,
            f.model_version,
            quantiles,
        )


def encode(forecast: Forecast, pipeline: str, target: str) -> bytes:
    """The forecast record, documented in docs/records.md: JSON, keyed by series."""
    return encode_many(_OneForecast.of(forecast), pipeline, target)[0]


def encode_many(forecasts: ForecastColumns, pipeline: str, target: str, layout: str = "nested") -> list[bytes]:
    """Every forecast record of a step in the output `layout` (docs/records.md): nested, one record per forecast,
    as `json.dumps` writes the documented object (compact separators; `_number_lists` says how numbers are
    written); long, `horizon` records per forecast, one per step, in order; wide, one flat record per forecast.
    The text of each distinct timestamp, and of each distinct row of horizon timestamps, is written once for
    the whole step: series observed at the same time share it."""
    if len(forecasts.keys) == 0:
        return []
    if layout != "nested":
        return _encode_flat(forecasts, pipeline, target, layout == "wide")
    m, horizon = forecasts.values.shape
    head = f',"pipeline":{json.dumps(pipeline)},"target":{json.dumps(target)},"time":"'.encode()
    tail = (
        f'","issued_at":"{format_time(forecasts.issued_at)}",'
        f'"model_version":{int(forecasts.model_version)},"horizon":{horizon},"times":['
    ).encode()
    times = _shared_texts(format_times(forecasts.times))
    horizon_times = _horizon_texts(forecasts.horizon_times)
    values = _number_lists(forecasts.values)
    quantiles = _quantile_texts(forecasts.quantiles, m)
    return [
        b'{"series":%s%s%s%s%s],"values":[%s]%s}' % (_json_key(key), head, time, tail, steps, row, extra)
        for key, time, steps, row, extra in zip(forecasts.keys, times, horizon_times, values, quantiles)
    ]


def _json_key(key: str) -> bytes:
    """A series key as `json.dumps` writes it (ASCII, escaped), by the C function json.dumps itself calls."""
    return _encode_ascii(key).encode()


def _shared_texts(texts: list[str]) -> list[bytes]:
    """`texts` as UTF-8, each distinct one encoded once (a step's records mostly share their time)."""
    encoded: dict[str, bytes] = {}
    return [encoded.get(t) or encoded.setdefault(t, t.encode()) for t in texts]


def records_per_forecast(layout: str, horizon: int) -> int:
    """How many records `encode_many` writes per forecast in `layout`."""
    return horizon if layout == "long" else 1


def quantile_field(level: float) -> str:
    """The flat field of a quantile level: its percentile, a name every SQL table takes (0.1 -> p10, 0.025 -> p2_5)."""
    return "p" + f"{level * 100:g}".replace(".", "_")


def _encode_flat(forecasts: ForecastColumns, pipeline: str, target: str, wide: bool) -> list[bytes]:
    """The long records (one per step: step, target_time, value, a field per quantile) or the wide ones (one per
    forecast: time_k, value_k, ... for each step k), each opening with the nested record's scalar fields."""
    m, horizon = forecasts.values.shape
    head = f',"pipeline":{json.dumps(pipeline)},"target":{json.dumps(target)},"time":"'
    tail = f'","issued_at":"{format_time(forecasts.issued_at)}","model_version":{int(forecasts.model_version)}'
    quantiles = dict(forecasts.quantiles or {})
    columns = [_time_cells(forecasts.horizon_times), _number_cells(forecasts.values)]
    columns += [_number_cells(values) for values in quantiles.values()]
    names = ["target_time", "value", *map(quantile_field, quantiles)]
    opening = [
        f'{{"series":{json.dumps(key)}{head}{time}{tail}'
        for key, time in zip(forecasts.keys, format_times(forecasts.times))
    ]
    if wide:
        named = [[f',"{name}_{k}":' for name in ["time", *names[1:]]] for k in range(1, horizon + 1)]
        return [
            (
                opening[i]
                + f',"horizon":{horizon}'
                + "".join(_step(named[k], columns, i, k) for k in range(horizon))
                + "}"
            ).encode()
            for i in range(m)
        ]
    named = [f',"{name}":' for name in names]
    return [
        f'{opening[i]},"step":{k + 1}{_step(named, columns, i, k)}}}'.encode() for i in range(m) for k in range(horizon)
    ]


def _step(names: Sequence[str], columns: Sequence[list[list[str]]], row: int, step: int) -> str:
    """The fields of one step of one forecast: each name followed by its column's text there."""
    return "".join(name + column[row][step] for name, column in zip(names, columns))


def _time_cells(horizon_times: np.ndarray) -> list[list[str]]:
    """Per row, the quoted text of each horizon time; each distinct instant formatted once."""
    instants, index = np.unique(horizon_times, return_inverse=True)
    quoted = [f'"{t}"' for t in format_times(instants)]
    return [[quoted[j] for j in row] for row in index.reshape(horizon_times.shape).tolist()]


def _number_cells(values: np.ndarray) -> list[list[str]]:
    """Per row, the JSON text of each number: null where it is not finite (`_number_lists`)."""
    return [row.decode().split(",") for row in _number_lists(values)]


def nulled(document):
    """A JSON-able document with every NaN and infinite float replaced by None, for `json.dumps(allow_nan=False)`:
    what forecaster writes is JSON that any parser takes, never a bare NaN or Infinity."""
    if isinstance(document, float):
        return document if math.isfinite(document) else None
    if isinstance(document, dict):
        return {key: nulled(value) for key, value in document.items()}
    if isinstance(document, (list, tuple)):
        return [nulled(value) for value in document]
    return document


def pack(
    keys: Sequence[str], encoded: Sequence[bytes], per_message: int, buckets: int, stamps: Sequence[int] | None = None
) -> list[tuple[bytes, bytes, int | None]]:
    """Encoded forecasts packed into (key, JSON list, timestamp) batch messages of at most `per_message` each.

    Series are grouped into `buckets` by a stable hash of their key, and a message's key is its
    bucket's number: every forecast of a series goes into messages with the same key, so into
    one partition, in order. Within a bucket the forecasts keep their order. With `stamps` (one per
    forecast), a message's timestamp is the newest of its forecasts' (else None).
    """
    groups: dict[int, list[int]] = {}
    for row, key in enumerate(keys):
        groups.setdefault(zlib.crc32(key.encode()) % buckets, []).append(row)
    packed = []
    for bucket, rows in sorted(groups.items()):
        for i in range(0, len(rows), per_message):
            part = rows[i : i + per_message]
            stamp = None if stamps is None else max(stamps[row] for row in part)
            packed.append((str(bucket).encode(), b"[" + b",".join([encoded[row] for row in part]) + b"]", stamp))
    return packed


def _horizon_texts(horizon_times: np.ndarray) -> list[bytes]:
    """Per row, the inside of its JSON list of times; each distinct instant and each distinct row formatted once."""
    instants, index = np.unique(horizon_times, return_inverse=True)
    quoted = [f'"{t}"'.encode() for t in format_times(instants)]
    index = index.reshape(horizon_times.shape)
    rows: dict[bytes, bytes] = {}
    texts = []
    for i, key in enumerate(map(bytes, horizon_times)):
        text = rows.get(key)
        if text is None:
            text = rows[key] = b",".join([quoted[j] for j in index[i].tolist()])
        texts.append(text)
    return texts


def _number_lists(values: np.ndarray) -> list[bytes]:
    """Per row, the inside of its JSON list of numbers, NaN and the infinities as null: a bare NaN is not JSON, and
    most consumers outside Python refuse the whole record over it.

    orjson writes the whole array at once, each float64 as the shortest text that reads back as the same
    float64, as json.dumps does (only the form of some exponents differs: 1e-05 is written 0.00001, 2.5e-07
    2.5e-7); float.__repr__ number by number took most of the daemon's time per record."""
    rows = np.ascontiguousarray(values, dtype=np.float64)
    if rows.size == 0:
        return [b""] * len(rows)
    return orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY)[2:-2].split(b"],[")


def _quantile_texts(quantiles: Mapping[float, np.ndarray] | None, m: int) -> list[bytes]:
    """Per row, ',"quantiles":{"0.1":[...],...}' when the model forecasts quantiles, else ''."""
    if not quantiles:
        return [b""] * m
    levels = [(json.dumps(f"{level:g}").encode(), _number_lists(values)) for level, values in quantiles.items()]
    return [
        b',"quantiles":{' + b",".join([b"%s:[%s]" % (name, rows[i]) for name, rows in levels]) + b"}" for i in range(m)
    ]
