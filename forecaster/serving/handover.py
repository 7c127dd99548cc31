"""What an input partition takes with it from one member to another: its series and its own record. No Kafka here.

A partition's changelog holds one record per series (changelog.py), and one record of the
partition itself, keyed `PARTITION_KEY`: the next input offset its state reflects, the model
version it ran, the input offsets at which it switched versions (its newest `SWITCHES_KEPT`),
and what the pipeline learns per partition (the combination's learner). A member that is given
the partition restores from these; one that loses it drops them.

Restoring keeps, for each series, the record whose state reflects the highest input offset,
wherever it stands in the log: every record holds a state computed from the series' records up
to its offset, so a later write by a member that lost the partition long ago (a stale owner)
cannot take a series back in time, and neither can a record of a transaction that was aborted
but is still read (a broker that does not hide them).
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from forecaster.serving import changelog
from forecaster.serving.engine import Engine

PARTITION_KEY = b"\x00partition"
# A partition's newest version switches kept in its record, (version, input offset) each: enough to replay
# any stretch the model topic still holds the versions of, at a few bytes a promotion.
SWITCHES_KEPT = 256


@dataclass(frozen=True)
class Restored:
    """What a partition's changelog gave back."""

    series: int
    offset: int | None  # the next input offset its state reflects; None: no record of the partition yet
    versions: dict[str, int]  # series -> the model version its state was computed under
    version: int | None = None  # the model version the partition ran last; None: no record of it yet
    switches: tuple[tuple[int, int], ...] = ()  # (version, input offset from which it served it), oldest first


def layout(engine: Engine) -> changelog.Layout:
    """The layout of the engine's series records: it follows from the pipeline and its model alone."""
    return changelog.layout_of(engine.store.snapshot_series(np.zeros(0, np.int64)))


def series_records(engine: Engine, partitions, touched_only: bool = True) -> tuple[dict, np.ndarray]:
    """partition -> [(key, value)] of the series of `partitions` (only those touched since they were last taken,
    with `touched_only`), and their slots, to mark untouched once the records are durable."""
    store = engine.store
    slots = store.owned(partitions)
    if touched_only:
        slots = slots[store.touched[slots]]
    if not len(slots):
        return {}, slots
    keys = list(store.keys_of(slots))
    values = changelog.encode(
        store.snapshot_series(slots), keys, store.reflected[slots], engine.model_version, layout(engine)
    )
    records = defaultdict(list)
    for partition, key, value in zip(store.partition[slots].tolist(), keys, values):
        records[partition].append((key.encode(), value))
    return dict(records), slots


def partition_record(engine: Engine, partition: int, offset: int, switches=()) -> bytes:
    """The partition's own record: its next input offset, the model version, its newest `switches` (version,
    offset) and its combination learner."""
    combination = engine.combination
    learner = None
    if combination is not None and partition in combination.learners:
        learner = combination.learners[partition].snapshot()
    buffer = io.BytesIO()
    kept = [list(switch) for switch in switches][-SWITCHES_KEPT:]
    torch.save({"offset": offset, "version": engine.model_version, "switches": kept, "learner": learner}, buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class Newest:
    """What a partition's changelog holds once each key's newest record is picked, in one pass over the log."""

    series: dict[bytes, bytes]  # series key -> the record whose state reflects the highest input offset
    own: dict | None  # the partition's own record of the highest offset; None: none written yet
    version: int  # the newest model version any record ran (-1 for none)


def newest(records: list[tuple[bytes | None, bytes | None]]) -> Newest:
    """Each key's newest record of a partition's changelog `records` (key, value), in log order."""
    series: dict[bytes, bytes] = {}
    reflected: dict[bytes, int] = {}  # each key's winning record's offset: every header is read once
    own, version = None, -1
    for key, value in records:
        if key is None or value is None:  # a tombstone: nothing of ours writes one
            continue
        if key == PARTITION_KEY:
            state = torch.load(io.BytesIO(value), weights_only=True)
            version = max(version, int(state["version"]))
            if own is None or state["offset"] >= own["offset"]:
                own = state
            continue
        offset, ran = changelog.header(value)
        version = max(version, ran)
        if key not in series or offset >= reflected[key]:
            series[key], reflected[key] = value, offset
    return Newest(series, own, version)


def newest_version(records: list[tuple[bytes | None, bytes | None]]) -> int:
    """The newest model version a partition's changelog `records` ran (-1 for none): the member that takes it
    over serves that version at least, before it restores them."""
    return newest(records).version


def restore(engine: Engine, partition: int, records: list[tuple[bytes | None, bytes | None]] | Newest) -> Restored:
    """Hold the partition's series as its changelog `records` (key, value), in log order, left them (or as
    `newest` picked them)."""
    found = records if isinstance(records, Newest) else newest(records)
    keys = [key.decode() for key in found.series]
    series = changelog.decode(keys, list(found.series.values()), layout(engine))
    if keys:
        engine.store.admit_series(keys, series.snapshot, partition, series.offsets)
    own = found.own
    if own is not None and own["learner"] is not None and engine.combination is not None:
        engine.combination.learner(partition).restore(own["learner"])
    versions = dict(zip(keys, series.versions.tolist()))
    if own is None:
        return Restored(len(keys), None, versions)
    switches = tuple((int(v), int(o)) for v, o in own.get("switches", ()))
    return Restored(len(keys), int(own["offset"]), versions, int(own["version"]), switches)


def drop(engine: Engine, partitions) -> int:
    """Forget the series of `partitions` and what was learnt per partition; returns how many series went."""
    slots = engine.store.owned(partitions)
    engine.store.drop(slots)
    if engine.combination is not None:
        for partition in partitions:
            engine.combination.learners.pop(partition, None)
    return len(slots)
