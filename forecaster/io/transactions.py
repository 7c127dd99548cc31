"""Exactly-once mode (`checkpoint.exactly_once`): what a member produces for an input partition, the partition's
changelog records and its input offset are committed in one Kafka transaction per checkpoint.

Each input partition a member owns has a transactional producer of its own, with the transactional id
`<group_id>.<pipeline>.<partition>`: Kafka's first exactly-once design (EOS-v1, as in Kafka Streams before
2.6). Starting a partition's producer, as a new owner does before it restores the partition, fences any
earlier one: the previous owner's open transaction is aborted, and its next commit fails. Fencing by the
group's generation instead (EOS-v2, one producer per member) needs a broker that checks the generation of
a transaction's offsets, and the embedded broker does not.

`Transactions` is the run loop's sink in this mode: messages go into the open transaction of the partition
they follow from (`Message.origin`), and `commit` ends every open transaction with its partition's offset.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence

from forecaster.config import Kafka
from forecaster.errors import TransactionError
from forecaster.io.clients import client
from forecaster.io.messages import Delivered, Message, Sending

# Twice the longest a transaction stays open (config.MAX_TRANSACTION_S): a checkpoint commits it well before.
TRANSACTION_TIMEOUT_MS = 60_000


def read_committed(kafka: Kafka) -> Kafka:
    """`kafka` with consumers that see only committed transactions of the input (as Kafka Streams reads in this
    mode)."""
    return dataclasses.replace(kafka, consumer={**kafka.consumer, "isolation_level": "read_committed"})


class Transactions:
    """The transactional producers of the input partitions a member owns; a `Sink` of the run loop."""

    def __init__(self, kafka: Kafka, group_id: str, input_topic: str, group_metadata: Callable[[], object]):
        self.kafka, self.group_id, self.input_topic = kafka, group_id, input_topic
        self._group_metadata = group_metadata  # the consumer's, when offsets are committed
        self._producers: dict[int, object] = {}  # input partition -> its client's Transaction
        self._failed: dict[int, TransactionError] = {}  # partition -> why its transaction was aborted since the commit

    def transactional_id(self, partition: int) -> str:
        return f"{self.group_id}.{partition}"

    def own(self, partitions: Collection[int]) -> None:
        """Start the producers of partitions taken over, fencing their previous owners: call it before reading
        what those committed."""
        for partition in sorted(set(partitions) - set(self._producers)):
            self._producers[partition] = client(self.kafka).Transaction(
                self.kafka, self.transactional_id(partition), TRANSACTION_TIMEOUT_MS
            )

    def release(self, partitions: Collection[int]) -> None:
        """Close the producers of partitions given up (a transaction still open is aborted)."""
        for partition in partitions:
            self._failed.pop(partition, None)
            producer = self._producers.pop(partition, None)
            if producer is not None:
                producer.close()

    def deliver(self, messages: Sequence[Message], stop: threading.Event) -> Delivered:
        """Send each message in the open transaction of its input partition; acknowledged when committed.

        A partition whose transaction fails is aborted, sends nothing more and fails at the next `commit`: the
        other partitions' transactions go on until then, and commit. Nothing is refused here: a refusal in a
        transaction is its failure, at the commit. Nor is an offset said: a record has one once committed.
        """
        by_origin: dict[int | None, list[Message]] = defaultdict(list)
        for message in messages:
            by_origin[message.origin].append(message)
        for origin, mine in by_origin.items():
            producer = self._producers.get(origin)
            if producer is None:
                raise TransactionError(f"{len(mine)} messages of input partition {origin}, which has no transaction")
            if origin not in self._failed:
                try:
                    producer.send(mine, stop)
                except TransactionError as error:
                    self._failed[origin] = error
        return Delivered()

    def send(self, messages: Sequence[Message], stop: threading.Event) -> Sending:
        """As `deliver`: nothing is acknowledged before the commit, so nothing is left to wait for."""
        return Sending.delivered(self.deliver(messages, stop))

    def commit(self, offsets: dict[int, int]) -> bool:
        """Commit the open transaction of each partition in `offsets` with its next input offset. One that fails is
        aborted, the others are committed all the same, and then a TransactionError says which failed."""
        failed = [self._failed.pop(p) for p in offsets if p in self._failed]
        for partition, offset in offsets.items():
            producer = self._producers.get(partition)
            try:
                if producer is not None:
                    producer.commit(self.input_topic, partition, offset, self._group_metadata())
            except TransactionError as error:
                failed.append(error)
        if failed:
            raise TransactionError("; ".join(map(str, failed)))
        return True

    def close(self) -> None:
        self.release(list(self._producers))
