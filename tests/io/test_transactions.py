"""Exactly-once mode's routing, without Kafka: each input partition's messages go into its own transaction, and a
partition whose transaction fails fails at the commit, after the others have committed."""

import threading
import types

import pytest

from forecaster.config import Kafka
from forecaster.errors import TransactionError
from forecaster.io import transactions
from forecaster.io.messages import Message
from forecaster.io.transactions import Transactions

from support import FakeTransaction


@pytest.fixture
def members(monkeypatch):
    """Transactions of group "g.stock" on input "in", over fake producers."""
    monkeypatch.setattr(transactions, "client", lambda kafka: types.SimpleNamespace(Transaction=FakeTransaction))
    return Transactions(Kafka(), "g.stock", "in", lambda: "metadata of g.stock")


def message(origin: int, value: bytes = b"v") -> Message:
    return Message("out", b"k", value, origin=origin)


def test_each_partition_taken_over_gets_a_producer_named_by_group_pipeline_and_partition(members):
    members.own({2, 0})
    assert [p.id for p in members._producers.values()] == ["g.stock.0", "g.stock.2"]
    assert {p.timeout_ms for p in members._producers.values()} == {transactions.TRANSACTION_TIMEOUT_MS}


def test_messages_go_into_the_transaction_of_their_input_partition_and_commit_with_its_offset(members):
    members.own({0, 2})
    members.deliver([message(0, b"a"), message(2, b"b"), message(0, b"c")], threading.Event())
    assert members.commit({0: 5, 2: 9})
    first, third = members._producers[0].committed, members._producers[2].committed
    assert [[m.value for m in sent] for sent, *_ in first] == [[b"a", b"c"]]
    assert [rest for _, *rest in first] == [["in", 0, 5, "metadata of g.stock"]]
    assert [([m.value for m in sent], offset) for sent, _, _, offset, _ in third] == [([b"b"], 9)]


def test_a_failed_partition_sends_nothing_more_and_fails_at_the_commit_after_the_others_commit(members):
    members.own({0, 1})
    members._producers[0].fenced = True
    members.deliver([message(0), message(1)], threading.Event())  # no error yet: partition 1 goes on
    with pytest.raises(TransactionError, match="g.stock.0: fenced"):
        members.commit({0: 3, 1: 4})
    assert [offset for _, _, _, offset, _ in members._producers[1].committed] == [4]
    assert members._producers[0].committed == []


def test_a_message_of_a_partition_without_a_transaction_is_refused(members):
    members.own({0})
    with pytest.raises(TransactionError, match="input partition 1, which has no transaction"):
        members.deliver([message(1)], threading.Event())


def test_a_partition_given_up_closes_its_producer_and_one_taken_again_starts_a_new_one(members):
    members.own({0})
    first = members._producers[0]
    members.release({0})
    members.own({0})
    assert first.closed and members._producers[0] is not first
