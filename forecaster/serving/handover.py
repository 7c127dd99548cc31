"""What an input partition takes with it from one member to another: its series and its own record. No Kafka here.

A partition's changelog holds one record per series (changelog.py), and one record of the
partition itself, keyed `PARTITION_KEY`: the next input offset its state reflects, the model
version it ran, and what the pipeline learns per partition (the combination's learner). A
member that is given the partition restores from these; one that loses it drops them.

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


@dataclass(frozen=True)
class Restored:
    """What a partition's changelog gave back."""

    series: int
    offset: int | None  # the next input offset its state reflects; None: no record of the partition yet
    versions: frozenset[int]  # the model versions its series' states were computed under


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


def partition_record(engine: Engine, partition: int, offset: int) -> bytes:
    """The partition's own record: its next input offset, the model version, and its combination learner."""
    combination = engine.combination
    learner = None
    if combination is not None and partition in combination.learners:
        learner = combination.learners[partition].snapshot()
    buffer = io.BytesIO()
    torch.save({"offset": offset, "version": engine.model_version, "learner": learner}, buffer)
    return buffer.getvalue()


def restore(engine: Engine, partition: int, records: list[tuple[bytes | None, bytes | None]]) -> Restored:
    """Hold the partition's series as its changelog `records` (key, value), in log order, left them."""
    newest: dict[bytes, bytes] = {}
    own = None
    for key, value in records:
        if key is None or value is None:  # a tombstone: nothing of ours writes one
            continue
        if key == PARTITION_KEY:
            state = torch.load(io.BytesIO(value), weights_only=True)
            if own is None or state["offset"] >= own["offset"]:
                own = state
        elif key not in newest or changelog.reflected_offset(value) >= changelog.reflected_offset(newest[key]):
            newest[key] = value
    keys = [key.decode() for key in newest]
    the_layout = layout(engine)
    series = changelog.decode(keys, list(newest.values()), the_layout)
    if series:
        offsets = np.array([s.offset for s in series], np.int64)
        engine.store.admit_series(keys, changelog.assemble(series, the_layout), partition, offsets)
    if own is not None and own["learner"] is not None and engine.combination is not None:
        engine.combination.learner(partition).restore(own["learner"])
    return Restored(len(series), None if own is None else int(own["offset"]), frozenset(s.version for s in series))


def drop(engine: Engine, partitions) -> int:
    """Forget the series of `partitions` and what was learnt per partition; returns how many series went."""
    slots = engine.store.owned(partitions)
    engine.store.drop(slots)
    if engine.combination is not None:
        for partition in partitions:
            engine.combination.learners.pop(partition, None)
    return len(slots)
