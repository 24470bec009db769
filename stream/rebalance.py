"""The worker's rebalance listener: cheap bookkeeping on kafka-python's I/O thread."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition

from stream.offsets import OffsetBook, PartitionKey

__all__ = ["Rebalance", "commit_map"]

log = logging.getLogger(__name__)


class Owner(Protocol):
    """What the listener needs from the worker."""

    book: OffsetBook

    def show_assignment(self) -> None: ...


def _key(tp: TopicPartition) -> PartitionKey:
    return (tp.topic, tp.partition)


class Rebalance(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on kafka-python's I/O thread while the work thread waits inside ``poll()``.

    Nothing slow happens here. On revocation the partitions' pending records are
    released (their next owner reads them again from the committed offset) and
    their *durable* offsets — covered by a checkpoint — are committed; never the
    processed ones, and nothing once the worker has failed. That commit waits at
    most ``commit_timeout_ms``: the client's own bound is its 30 s request timeout,
    which would hold the group's rebalance, and a closing consumer (``close()``
    revokes too) past the stop's watchdog. It is never recorded as done: while the
    coordinator is unknown kafka-python's future for it is the coordinator lookup's,
    which succeeds before the commit is even sent, so a partition given back commits
    its durable offsets again (a repeat the broker takes as is). On assignment each
    partition is positioned where this worker's learner state continues: its
    processed offset, else the group's committed offset.
    """

    def __init__(self, worker: Owner, consumer: KafkaConsumer, commit_timeout_ms: int) -> None:
        self._worker, self._consumer = worker, consumer
        self._commit_timeout_ms = commit_timeout_ms
        if self._timer() is None:
            log.warning(
                "this kafka-python has no _manager.wait_for: a commit on revocation waits "
                "out the client's request timeout, which can outlast the stop's watchdog "
                "(kafka-python 3.0 has it)"
            )

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        offsets = self._worker.book.release({_key(tp) for tp in revoked}, commit=True)
        self._worker.show_assignment()
        if offsets:
            try:
                await self._bounded(self._consumer.commit_async(commit_map(offsets)))
            except Exception as exc:  # the next owner re-reads; nothing is lost
                log.warning("commit on revocation failed (%s); the next owner re-reads", exc)

    async def _bounded(self, future: Any) -> Any:
        """``future`` awaited for at most the commit timeout, with the client's own timer
        (kafka-python 3.0's manager, private: read defensively, unbounded without it)."""
        wait_for = self._timer()
        if wait_for is None:
            return await future
        return await wait_for(future, self._commit_timeout_ms)

    def _timer(self) -> Any:
        return getattr(getattr(self._consumer, "_manager", None), "wait_for", None)

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._worker.book.release({_key(tp) for tp in lost}, commit=False)
        self._worker.show_assignment()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for (topic, partition), offset in self._worker.book.assign(map(_key, assigned)).items():
            self._consumer.seek(TopicPartition(topic, partition), offset)
        self._worker.show_assignment()
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


def commit_map(offsets: Mapping[PartitionKey, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
