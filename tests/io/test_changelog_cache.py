"""Where a local changelog copy ends, without Kafka: past the member's own records only where the sink said their
offsets, and where the member's read ended when it cannot (exactly-once mode's transactions)."""

import threading
import types

import pytest

from forecaster.config import Kafka
from forecaster.io import clients
from forecaster.io.checkpoint import load_changelog_cache
from forecaster.io.messages import Delivered, Polled

END = 5  # the log the member reads: offsets 0 to 4


class Sink:
    """Acknowledges each record at the next offsets after the log's end, or (`says_offsets` False) says none, as
    a transaction does before its commit."""

    def __init__(self, says_offsets):
        self.says_offsets = says_offsets

    def deliver(self, messages, stop):
        return Delivered(written=[(0, END + i) for i in range(len(messages))] if self.says_offsets else [])

    def close(self):
        pass


@pytest.fixture
def log(monkeypatch):
    """A changelog partition of END records, each key's own."""
    records = [Polled(0, offset, b"s%d" % offset, b"v") for offset in range(END)]

    def read_tail(kafka, topic, partition, start, committed=False):
        return [r for r in records if r.offset >= start], 0, END

    monkeypatch.setattr(clients, "client", lambda kafka: types.SimpleNamespace(read_tail=read_tail))


@pytest.mark.parametrize(("says_offsets", "position"), [(True, END + 2), (False, END)])
def test_a_copy_goes_past_the_members_records_only_if_the_sink_said_where_they_were_written(
    log, tmp_path, says_offsets, position
):
    changelog = clients.ChangelogTopic(Kafka(), "c", sink=Sink(says_offsets), cache=tmp_path)
    changelog.read(0)
    changelog.write({0: [(b"s0", b"w"), (b"s9", b"w")]}, threading.Event())
    changelog.keep(0, [(b"s0", b"w"), (b"s9", b"w")])

    assert load_changelog_cache(tmp_path / "c.0.cache") == (position, [(b"s0", b"w"), (b"s9", b"w")])
