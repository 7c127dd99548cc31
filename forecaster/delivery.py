"""What a pipeline does with output Kafka refuses for good: the policy, so a refusal never stalls it silently.

The sinks retry what may succeed later (an outage, a leader moving) and return what cannot
(a non-retriable produce error). Each refused message is counted in
`forecaster_delivery_failures_total{pipeline,reason}`, and each reason is logged once per pipeline.
Then:
- a dead letter too large for the cluster is sent again cut to its first `TRUNCATED_BYTES` of key
  and value, with the header `forecaster.truncated` giving the original sizes: the record it copies
  is bad anyway, and its source offset (`forecaster.source`) finds the whole of it;
- anything else refused (a forecast too large, a topic the cluster refuses or does not know, a
  truncated dead letter still refused) raises Undeliverable: the pipeline stops with its inputs
  uncommitted and the daemon exits non-zero, so a supervisor restarts it and an operator is told,
  rather than the loop retrying forever behind a healthy /healthz.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from forecaster.config import Pipeline
from forecaster.errors import Undeliverable
from forecaster.io.messages import Message, Refused, Sending, Sink
from forecaster.metrics import Metrics
from forecaster.words import counted

log = logging.getLogger(__name__)

TRUNCATED_BYTES = 1024


class Delivery:
    """A pipeline's sink with the policy above applied to what Kafka refuses."""

    def __init__(self, pipeline: Pipeline, sink: Sink, metrics: Metrics):
        self.pipeline, self.sink, self.metrics = pipeline, sink, metrics
        self._said: set[str] = set()  # the reasons logged already
        for reason in ("message_too_large", "not_authorized", "unknown_topic", "refused"):
            metrics.delivery_failures.labels(pipeline.name, reason)  # exported at zero, so increase() sees the first

    def deliver(self, messages: Sequence[Message], stop: threading.Event) -> float:
        """Deliver `messages`; truncate oversize dead letters; raise Undeliverable for any other refusal. Returns the
        seconds spent waiting for Kafka's acknowledgements (the rest went to handing messages to the client)."""
        return self.settle(self.send(messages, stop), stop)

    def send(self, messages: Sequence[Message], stop: threading.Event) -> Sending:
        """The first half of `deliver`: hand `messages` to the client."""
        return self.sink.send(messages, stop)

    def settle(self, sending: Sending, stop: threading.Event) -> float:
        """The second half of `deliver`: wait for Kafka's acknowledgements of what `send` handed over, with the policy
        above for what it refused; the seconds spent waiting."""
        delivered = sending.wait(stop)
        refused, waited = self._count(delivered.refused), delivered.waiting_s
        oversize = [r for r in refused if self._truncatable(r)]
        final = [r for r in refused if not self._truncatable(r)]
        if oversize:
            self._say(oversize[0], f"dead letters are cut to their first {TRUNCATED_BYTES} bytes from now on")
            again = self.sink.deliver([truncated(r.message) for r in oversize], stop)
            final += self._count(again.refused)
            waited += again.waiting_s
        if final:
            raise Undeliverable(self._stopping(final))
        return waited

    def _truncatable(self, refused: Refused) -> bool:
        return refused.reason == "message_too_large" and refused.message.topic == self.pipeline.dead_letter_topic

    def _count(self, refused: list[Refused]) -> list[Refused]:
        for r in refused:
            self.metrics.delivery_failures.labels(self.pipeline.name, r.reason).inc()
        return refused

    def _say(self, refused: Refused, what: str) -> None:
        """Log a reason once per pipeline: the counter says how often it happens since."""
        if refused.reason not in self._said:
            self._said.add(refused.reason)
            log.warning(
                "pipeline %s: Kafka refused a record for %s (%s: %s); %s",
                self.pipeline.name,
                refused.message.topic,
                refused.reason,
                refused.detail,
                what,
            )

    def _stopping(self, refused: list[Refused]) -> str:
        """The error that stops the pipeline: which topic refused how many records, why, and what to do."""
        first = refused[0]
        return (
            f"Kafka refused {counted(len(refused), 'record')} for {first.message.topic} for good ({first.reason}: "
            f"{first.detail}); the pipeline stops with those inputs uncommitted. {_ADVICE[first.reason]}"
        )


_ADVICE = {
    "message_too_large": "Raise the topic's max.message.bytes (and the producer's max_request_size), or lower "
    "batching.forecasts_per_message.",
    "not_authorized": "Grant this client's principal Write on the topic (kafka ACLs), then restart.",
    "unknown_topic": "Create the topic (`forecaster topics -c CONFIG`), then restart.",
    "refused": "See the broker's log for the error, then restart.",
}


def truncated(message: Message) -> Message:
    """A dead letter cut to fit: the first TRUNCATED_BYTES of its key and value, its original sizes in a header."""
    key, value = message.key, message.value
    sizes = f"key {len(key or b'')} bytes, value {len(value)} bytes".encode()
    return Message(
        message.topic,
        key if key is None else key[:TRUNCATED_BYTES],
        value[:TRUNCATED_BYTES],
        message.headers + (("forecaster.truncated", sizes),),
        message.partition,
    )
