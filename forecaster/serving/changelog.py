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
from functools import cached_property

import numpy as np

MAGIC = b"FCS1"
_HEADER = struct.Struct("<4sqqI")
_HEADS = np.dtype([("magic", "S4"), ("offset", "<i8"), ("version", "<i8"), ("layout", "<u4")])  # _HEADER's
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

    @cached_property
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
class Decoded:
    """What a batch of records holds, one row per record: one snapshot for `StateStore.admit_series`, and each
    series' input offset and model version."""

    snapshot: dict
    offsets: np.ndarray  # (n,) int64: the input offset each series' state reflects
    versions: np.ndarray  # (n,) int64: the model version each series' state was computed under


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
    series' state reflects).

    Like `decode`, by blocks: the series that hold the same optional groups are one (series, bytes) array, built
    field by field, and each series' record is one of its rows."""
    n = len(keys)
    heads = np.zeros(n, _HEADS)
    heads["magic"], heads["offset"], heads["version"], heads["layout"] = MAGIC, offsets, version, layout.id
    columns = []  # per group: (held mask or None, index of each row among the held, arrays)
    for group in layout.groups:
        source = _at(snapshot, group.prefix) if group.prefix else snapshot
        held = np.asarray(source[OPTIONAL], bool) if group.optional else None
        index = None if held is None else np.cumsum(held) - 1
        arrays = [np.ascontiguousarray(np.asarray(source[f.path[-1]]), dtype=f.dtype) for f in group.fields]
        columns.append((held, index, arrays))
    holds = np.stack([held for held, _, _ in columns if held is not None] + [np.ones(n, bool)], axis=1)
    values: list[bytes] = [b""] * n
    patterns, which = np.unique(holds, axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        rows = np.flatnonzero(which.reshape(-1) == p)
        pieces, optional = [heads[rows].view(np.uint8).reshape(len(rows), -1)], iter(pattern)
        for held, index, arrays in columns:
            at = rows
            if held is not None:
                present = bool(next(optional))
                pieces.append(np.full((len(rows), 1), int(present), np.uint8))
                if not present:
                    continue
                at = index[rows]
            pieces += [a[at].view(np.uint8).reshape(len(rows), -1) for a in arrays]
        for row, value in zip(rows.tolist(), np.concatenate(pieces, axis=1)):
            values[row] = value.tobytes()
    return values


def decode(keys: list[str], values: list[bytes], layout: Layout) -> Decoded:
    """The series of record values written under `layout`, rows in the order given; a ValueError for one written
    otherwise.

    Column by column, not record by record: records of one length that hold the same optional groups have the
    same byte layout, so each such block is one (records, bytes) array that every field is a slice of.
    """
    heads = np.array([_HEADER.unpack_from(v) for v in values], _HEADS) if values else np.zeros(0, _HEADS)
    wrong = np.flatnonzero((heads["magic"] != MAGIC) | (heads["layout"] != layout.id))
    if len(wrong):
        i = int(wrong[0])
        raise ValueError(
            f"series {keys[i]!r}: a changelog record of another format or layout ({heads['layout'][i]:#x})"
        )
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    columns: dict = {}  # path -> [(rows, arrays)]
    held: dict = {}  # optional group prefix -> (n,) bool
    for length in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == length)
        block = np.frombuffer(b"".join(values[i] for i in rows.tolist()), np.uint8).reshape(len(rows), length)
        _walk(block, rows, _HEADER.size, layout.groups, columns, held, len(values))
    return Decoded(_gathered(layout, columns, held, len(values)), heads["offset"], heads["version"])


def _walk(block: np.ndarray, rows: np.ndarray, at: int, groups, columns: dict, held: dict, n: int) -> None:
    """Slice every field of `groups` out of `block` (records of one byte layout so far, `rows` among all), from
    byte `at`; an optional group splits the block by its presence byte."""
    for g, group in enumerate(groups):
        if group.optional:
            present = block[:, at] == 1
            mask = held.setdefault(group.prefix, np.zeros(n, bool))
            mask[rows[present]] = True
            if not present.all():
                rest = groups[g + 1 :]
                _walk(block[~present], rows[~present], at + 1, rest, columns, held, n)
                block, rows = block[present], rows[present]
                if not len(rows):  # none holds it: the rest of this layout was never written
                    return
            at += 1
        for f in group.fields:
            raw = np.ascontiguousarray(block[:, at : at + f.nbytes])
            columns.setdefault(f.path, []).append((rows, raw.view(f.dtype).reshape(len(rows), *f.shape)))
            at += f.nbytes


def _gathered(layout: Layout, columns: dict, held: dict, n: int) -> dict:
    """The sliced columns as one snapshot, rows in record order (an optional group's: its holders' rows only)."""
    snapshot: dict = {"parts": {}}
    for group in layout.groups:
        target = snapshot
        for name in group.prefix:
            target = target.setdefault(name, {})
        holders = held.get(group.prefix, np.zeros(n, bool)) if group.optional else np.ones(n, bool)
        if group.optional:
            target[OPTIONAL] = holders
        index = np.cumsum(holders) - 1  # a holder's row among the holders
        for f in group.fields:
            array = np.zeros((int(holders.sum()), *f.shape), f.dtype)
            for rows, values in columns.get(f.path, ()):
                array[index[rows]] = values
            target[f.path[-1]] = array
    return snapshot


def header(value: bytes) -> tuple[int, int]:
    """The input offset a record's state reflects and the model version it was computed under, from its header."""
    _, offset, version, _ = _HEADER.unpack_from(value)
    return offset, version


def reflected_offset(value: bytes) -> int:
    """The input offset a record's state reflects, from its header alone."""
    return _HEADER.unpack_from(value)[1]


def _at(snapshot: dict, path: tuple[str, ...]) -> dict:
    for name in path:
        snapshot = snapshot[name]
    return snapshot
