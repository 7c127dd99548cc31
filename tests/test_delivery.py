"""What Kafka refuses for good never stalls a pipeline: an oversize dead letter is truncated, anything else stops it."""

import logging
import threading

import pytest
from prometheus_client import CollectorRegistry
from test_app import record, worker

from forecaster import app
from forecaster.delivery import TRUNCATED_BYTES, Delivery
from forecaster.errors import Undeliverable
from forecaster.io.messages import Delivered, Message, Polled, Refused
from forecaster.metrics import Metrics

from support import DeliversAtOnce, make_pipeline


class RefusingSink(DeliversAtOnce):
    """Acknowledges what `allows` lets through and refuses the rest for `reason`, as a client's sink returns it."""

    def __init__(self, reason, allows):
        self.reason, self.allows, self.delivered, self.calls = reason, allows, [], 0

    def deliver(self, messages, stop):
        self.calls += 1
        self.delivered += [m for m in messages if self.allows(m)]
        return Delivered([Refused(m, self.reason, "refused by the test") for m in messages if not self.allows(m)])

    def close(self):
        pass


def failures(registry, reason):
    return registry.get_sample_value("forecaster_delivery_failures_total", {"pipeline": "test", "reason": reason})


def garbage(offset, size=5000):
    return Polled(0, offset, b"k" * size, b"\xff" * size)


def test_an_oversize_dead_letter_is_truncated_with_a_header_saying_so_and_the_loop_goes_on(caplog):
    caplog.set_level(logging.WARNING, logger="forecaster")
    w, source, _, registry = worker([[garbage(0), record("a", 0, 1.0, offset=1)], [garbage(2)]])
    sink = RefusingSink("message_too_large", lambda m: len(m.value) <= TRUNCATED_BYTES)
    w.delivery.sink = sink
    assert w.run_once() == 2 and w.run_once() == 1
    dead = [m for m in sink.delivered if m.topic == "dead"]
    assert [(len(m.key), m.value) for m in dead] == [(TRUNCATED_BYTES, b"\xff" * TRUNCATED_BYTES)] * 2
    headers = dict(dead[0].headers)
    assert headers["forecaster.truncated"] == b"key 5000 bytes, value 5000 bytes"
    assert headers["forecaster.reason"] == b"malformed" and headers["forecaster.source"] == b"in/0/0"
    assert [m.key for m in sink.delivered if m.topic == "out"] == [b"a"]
    assert source.committed[-1] == {0: 3}  # both batches done with
    assert failures(registry, "message_too_large") == 2
    said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(said) == 1 and "dead letters are cut to their first 1024 bytes" in said[0]


@pytest.mark.parametrize("reason", ["not_authorized", "unknown_topic", "message_too_large"])
def test_refused_forecasts_stop_the_pipeline_with_its_inputs_uncommitted(reason, caplog):
    w, source, _, registry = worker([[record("a", 0, 1.0)]])
    w.delivery.sink = RefusingSink(reason, lambda m: m.topic != "out")
    w.run()
    assert isinstance(w.error, Undeliverable) and not w.healthy()
    assert source.committed == []  # read again after the restart the exit calls for
    assert failures(registry, reason) == 1
    stopped = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(stopped) == 1 and stopped[0].exc_info is None
    assert f"Kafka refused 1 record for out for good ({reason}" in stopped[0].getMessage()


def test_a_dead_letter_refused_by_its_topic_stops_the_pipeline_too():
    w, source, _, registry = worker([[garbage(0, size=10)]])
    w.delivery.sink = RefusingSink("not_authorized", lambda m: m.topic != "dead")
    with pytest.raises(Undeliverable, match="Grant this client's principal Write"):
        w.run_once()
    assert source.committed == [] and failures(registry, "not_authorized") == 1


def test_a_truncated_dead_letter_still_refused_stops_the_pipeline():
    sink = RefusingSink("message_too_large", lambda m: False)
    registry = CollectorRegistry()
    delivery = Delivery(make_pipeline(), sink, Metrics(registry))
    with pytest.raises(Undeliverable, match="max.message.bytes"):
        delivery.deliver([Message("dead", None, b"x" * 5000)], stop=None)
    assert sink.calls == 2 and failures(registry, "message_too_large") == 2


def test_every_reason_is_exported_at_zero_from_the_start():
    registry = CollectorRegistry()
    Delivery(make_pipeline(), RefusingSink("refused", bool), Metrics(registry))
    for reason in ("message_too_large", "not_authorized", "unknown_topic", "refused"):
        assert failures(registry, reason) == 0


def test_a_delivery_with_nothing_refused_sends_once():
    sink = RefusingSink("refused", lambda m: True)
    Delivery(make_pipeline(), sink, Metrics(CollectorRegistry())).deliver([Message("out", b"a", b"1")], stop=None)
    assert sink.calls == 1 and len(sink.delivered) == 1


class BlockingSink(DeliversAtOnce):
    """Holds a delivery until released, as a sink retrying an outage does."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def deliver(self, messages, stop):
        self.entered.set()
        self.release.wait()
        return Delivered()


def test_a_loop_holding_one_batch_too_long_is_not_alive_and_is_again_once_it_completes(monkeypatch):
    monkeypatch.setattr(app, "STUCK_AFTER_S", 0.0)  # any batch in hand counts as stuck
    w, _, _, _ = worker([[record("a", 0, 1.0)]])
    sink = w.delivery.sink = BlockingSink()
    assert w.live()  # between batches
    loop = threading.Thread(target=w.run_once)
    loop.start()
    sink.entered.wait()
    assert not w.live()
    sink.release.set()
    loop.join()
    assert w.live()


def test_a_failed_pipeline_is_not_alive():
    w, _, _, _ = worker([[record("a", 0, 1.0)]])
    w.delivery.sink = RefusingSink("not_authorized", lambda m: False)
    w.run()
    assert not w.live()
