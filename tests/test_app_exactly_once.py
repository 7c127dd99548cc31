"""The run loop in exactly-once mode, without Kafka: a partition taken over is fenced before its changelog is read,
forecasts and changelog records go into the partition's transaction, which commits the offsets instead of the
consumer, and a partition given up commits its transaction, or is handed over without it if that fails."""

import dataclasses
import threading
import types

import pytest
from prometheus_client import CollectorRegistry
from test_app import FakeSource, record

from forecaster.app import Checkpoints, PipelineWorker
from forecaster.build import seeded_model
from forecaster.config import Kafka, Output
from forecaster.io import transactions
from forecaster.io.clients import ChangelogTopic
from forecaster.io.messages import Rebalance
from forecaster.io.transactions import Transactions
from forecaster.metrics import Metrics
from forecaster.serving import handover
from forecaster.serving.engine import Engine

from support import FakeTransaction, make_pipeline

EVENTS: list[str] = []
MIDNIGHT_MS = 1_704_067_200_000  # record(..., hour=0): 2024-01-01T00:00Z
HOUR_MS = 3_600_000


class Changelog(ChangelogTopic):
    """The changelog topic, written through the transactions; empty when read."""

    def read(self, partition):
        EVENTS.append(f"read {partition}")
        return []

    def keep(self, partition, records):
        EVENTS.append(f"keep {partition}")


class Logged(FakeTransaction):
    def __init__(self, kafka, transactional_id, timeout_ms):
        super().__init__(kafka, transactional_id, timeout_ms)
        EVENTS.append(f"start {transactional_id}")


@pytest.fixture
def exactly_once(monkeypatch, tmp_path):
    """A worker in exactly-once mode that owns input partition 0 after its first batch, and its transactions."""
    EVENTS.clear()
    monkeypatch.setattr(transactions, "client", lambda kafka: types.SimpleNamespace(Transaction=Logged))
    pipeline = make_pipeline(spill="none")
    settings = dataclasses.replace(pipeline.checkpoint, every_records=2, changelog=True, exactly_once=True)
    pipeline = dataclasses.replace(pipeline, checkpoint=settings)
    source = FakeSource([[record("a", h, float(h), offset=h) for h in (0, 1)], [record("a", 2, 2.0, offset=2)]])
    source.rebalances = lambda: [Rebalance("assigned", frozenset({0}))] if not EVENTS else []
    source.resume = lambda positions: None
    members = Transactions(Kafka(), "g.p", "in", lambda: "g.p")
    w = PipelineWorker(
        pipeline,
        Engine(pipeline, seeded_model(pipeline)),
        source,
        members,
        Metrics(CollectorRegistry()),
        threading.Event(),
        Checkpoints(tmp_path, pipeline),
        changelog=Changelog(Kafka(), "g.p.changelog", sink=members),
        transactions=members,
    )
    return w, source, members


def test_a_partition_taken_over_is_fenced_before_its_changelog_is_read(exactly_once):
    w, _, _ = exactly_once
    w.run_once()
    assert EVENTS[:2] == ["start g.p.0", "read 0"]


def test_a_checkpoint_commits_forecasts_and_changelog_with_the_offsets_in_the_partitions_transaction(exactly_once):
    w, source, members = exactly_once
    w.run_once()  # two records: a checkpoint falls due
    assert source.committed == []  # not by the consumer
    [(sent, topic, partition, offset, group)] = members._producers[0].committed
    assert (topic, partition, offset, group) == ("in", 0, 2, "g.p")
    assert [m.topic for m in sent] == ["out", "out", "g.p.changelog", "g.p.changelog"]
    assert {m.origin for m in sent} == {0}
    assert [m.key for m in sent][2:] == [b"a", handover.PARTITION_KEY]


def test_a_partition_given_up_commits_its_transaction_and_closes_its_producer(exactly_once):
    w, _, members = exactly_once
    w.run_once()
    producer = members._producers[0]
    w.run_once()  # one record more, in an open transaction
    w._revoked(frozenset({0}))
    assert [offset for *_, offset, _ in producer.committed] == [2, 3] and producer.closed
    assert len(w.engine.store) == 0 and w.owned == set()


def test_a_partition_whose_transaction_fails_is_handed_over_without_it(exactly_once, caplog):
    w, _, members = exactly_once
    w.run_once()
    producer = members._producers[0]
    producer.fenced = True
    w.run_once()
    w._revoked(frozenset({0}))
    assert [offset for *_, offset, _ in producer.committed] == [2] and producer.closed
    assert len(w.engine.store) == 0 and w.owned == set()
    assert "handing over without the last transaction: transaction g.p.0: fenced" in caplog.text


def test_in_exactly_once_mode_each_long_record_goes_into_its_series_partitions_transaction(exactly_once):
    w, _, members = exactly_once
    w.pipeline = dataclasses.replace(w.pipeline, output=Output(format="long"))
    w.run_once()  # two records of series "a", from input partition 0: a checkpoint commits them
    [(sent, *_)] = members._producers[0].committed
    forecasts = [m for m in sent if m.topic == "out"]
    assert len(forecasts) == 2 * w.pipeline.horizon
    assert {(m.key, m.origin) for m in forecasts} == {(b"a", 0)}
    assert [m.timestamp_ms for m in forecasts] == [MIDNIGHT_MS] * 4 + [MIDNIGHT_MS + HOUR_MS] * 4


@pytest.mark.parametrize("fenced", [False, True])
def test_a_partition_given_up_is_copied_locally_only_once_its_last_transaction_committed(exactly_once, fenced):
    w, _, members = exactly_once
    w.run_once()
    members._producers[0].fenced = fenced
    w.run_once()
    w._revoked(frozenset({0}))
    assert ("keep 0" in EVENTS) is not fenced  # an aborted transaction's state must not come back from a copy
