"""Series state as changelog records: one record per series, bytes in and out, no Kafka here.

With the changelog (checkpoint.changelog) each series' whole state lives in a compacted topic,
keyed by the series, in the partition of its input partition: the recurrent state, scaling
moments and newest values (`StateStore.snapshot_series`'s "wide" and "exact" rows) and every
part the pipeline keeps per series (buffer, season, damping, intervals, combination history,
forecasts kept for gaps). A record's value is a fixed header, then each field's row in the
order of the pipeline's layout:

    b"FCS1", input offset the state reflects (int64), model version (int64), layout id (uint32),
    then per field group: its rows' raw bytes; a group kept for some series only (the
    combination's pending forecasts, for the scored series) starts with one byte, 1 if present.

The layout (field names, dtypes and row shapes) follows from the pipeline and its model, so
every member of a group reads what another wrote; its id, a CRC-32 of its description,
refuses a record written under another layout rather than misreading it.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"FCS1"
_HEADER = struct.Struct("<4sqqI")
OPTIONAL = "held"  # a part snapshot with this boolean field (n,) holds its other fields for those rows only


@dataclass(frozen=True)
class Field:
    path: tuple[str, ...]  # e.g. ("parts", "buffer", "inputs")
    dtype: str  # numpy dtype string, e.g. "<f4"
    shape: tuple[int, ...]  # one row's shape

    @property
    def nbytes(self) -> int:
        return int(np.dtype(self.dtype).itemsize * np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Group:
    """Fields stored together; an optional group is present for some rows only (its snapshot's `held` mask)."""

    prefix: tuple[str, ...]
    fields: tuple[Field, ...]
    optional: bool


@dataclass(frozen=True)
class Layout:
    groups: tuple[Group, ...]

    @property
    def id(self) -> int:
        return zlib.crc32(self.describe().encode())

    def describe(self) -> str:
        return json.dumps(
            [
                [list(g.prefix), g.optional, [[list(f.path), f.dtype, list(f.shape)] for f in g.fields]]
                for g in self.groups
            ]
        )


@dataclass(frozen=True)
class Series:
    """What one decoded record holds: the series' state, the input offset it reflects and the model it ran."""

    key: str
    offset: int
    version: int
    rows: dict  # path -> one row (np.ndarray), absent for an optional group the series did not hold


def layout_of(snapshot: dict) -> Layout:
    """The layout of a `StateStore.snapshot_series` result: every array's dtype and row shape, in a fixed order."""
    groups = [Group((), tuple(_fields((), {k: v for k, v in snapshot.items() if k != "parts"})), False)]
    for name, part in sorted(snapshot["parts"].items()):
        optional = OPTIONAL in part
        fields = {k: v for k, v in part.items() if k != OPTIONAL}
        groups.append(Group(("parts", name), tuple(_fields(("parts", name), fields)), optional))
    return Layout(tuple(groups))


def _fields(prefix: tuple[str, ...], arrays: dict) -> list[Field]:
    return [
        Field((*prefix, name), np.asarray(arrays[name]).dtype.str, tuple(np.asarray(arrays[name]).shape[1:]))
        for name in sorted(arrays)
    ]


def encode(snapshot: dict, keys: list[str], offsets: np.ndarray, version: int, layout: Layout) -> list[bytes]:
    """One record value per series of `snapshot` (rows in `keys` order; `offsets` (n,) the input offset each
    series' state reflects)."""
    columns = []  # per group: (optional, held mask or None, index of each row among the held, arrays)
    for group in layout.groups:
        source = _at(snapshot, group.prefix) if group.prefix else snapshot
        held = np.asarray(source[OPTIONAL], bool) if group.optional else None
        index = None if held is None else np.cumsum(held) - 1
        arrays = [np.ascontiguousarray(np.asarray(source[f.path[-1]]), dtype=f.dtype) for f in group.fields]
        columns.append((held, index, arrays))
    values = []
    for i in range(len(keys)):
        pieces = [_HEADER.pack(MAGIC, int(offsets[i]), version, layout.id)]
        for held, index, arrays in columns:
            if held is not None:
                pieces.append(b"\x01" if held[i] else b"\x00")
                if not held[i]:
                    continue
                row = int(index[i])
            else:
                row = i
            pieces += [a[row].tobytes() for a in arrays]
        values.append(b"".join(pieces))
    return values


def decode(keys: list[str], values: list[bytes], layout: Layout) -> list[Series]:
    """The series of record values written under `layout`; a ValueError for one written otherwise."""
    found = []
    for key, value in zip(keys, values):
        magic, offset, version, layout_id = _HEADER.unpack_from(value)
        if magic != MAGIC or layout_id != layout.id:
            raise ValueError(f"series {key!r}: a changelog record of another format or layout ({layout_id:#x})")
        at, rows = _HEADER.size, {}
        for group in layout.groups:
            if group.optional:
                present, at = value[at] == 1, at + 1
                if not present:
                    continue
            for f in group.fields:
                rows[f.path] = np.frombuffer(value, f.dtype, int(np.prod(f.shape, dtype=np.int64)), at).reshape(f.shape)
                at += f.nbytes
        found.append(Series(key, offset, version, rows))
    return found


def reflected_offset(value: bytes) -> int:
    """The input offset a record's state reflects, from its header alone."""
    return _HEADER.unpack_from(value)[1]


def version_of(value: bytes) -> int:
    """The model version a record's state was computed under, from its header alone."""
    return _HEADER.unpack_from(value)[2]


def assemble(series: list[Series], layout: Layout) -> dict:
    """Decoded series back as one snapshot for `StateStore.admit_series`, rows in the order given."""
    snapshot: dict = {"parts": {}}
    for group in layout.groups:
        target = snapshot
        for name in group.prefix:
            target = target.setdefault(name, {})
        members = [s for s in series if not group.optional or group.fields[0].path in s.rows]
        if group.optional:
            target[OPTIONAL] = np.array([group.fields[0].path in s.rows for s in series], bool)
        for f in group.fields:
            rows = [s.rows[f.path] for s in members]
            target[f.path[-1]] = np.stack(rows) if rows else np.zeros((0, *f.shape), f.dtype)
    return snapshot


def _at(snapshot: dict, path: tuple[str, ...]) -> dict:
    for name in path:
        snapshot = snapshot[name]
    return snapshot
