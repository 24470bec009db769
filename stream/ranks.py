"""Workers as ranks of one model: N processes in one consumer group, one LLM learner.

Each rank reads the partitions the group gives it; all learn the same global batch in
lockstep (``learners/data_parallel.py`` splits the backbone's work and sums the adapter's
gradients). Per tick, every ``batch.max_wait_s`` on every rank (:meth:`RankWorker._tick`):

1. exchange: every rank's accepted records, processed offsets and flags (checkpoint due,
   stopping) are gathered to every rank, in rank order; a rank with nothing joins with
   nothing;
2. learn: every rank applies the global batch (duplicates, deletions, learning), so the
   learner, its de-duplication window and its counts stay identical everywhere;
3. publish: each rank sends the vectors, tombstones and dead letters of its own records and
   waits for the broker's acknowledgements;
4. checkpoint, when any rank's schedule says so or any rank stops: once every rank's output
   is acknowledged and the ranks' models are found in step (a checksum each, gathered: the
   barrier), rank 0 writes the state with every partition's offsets (the highest any rank
   processed); after a second barrier
5. each rank commits the offsets of its partitions.

A learner that fails on a record fails on every rank alike (same records, same state): every
rank rolls back to the newest checkpoint (the first tick writes the fresh state as one; rank 0
restores first, as on start, since only it may move a damaged checkpoint aside),
re-reads, and applies the ticks holding the failed records in isolation, bisecting to the
poison records, which their ranks dead-letter — as a single worker does. A rank that fails
otherwise — its output refused, a kill -9, a lost peer — fails every rank at its next
collective (or after ``distributed.timeout_s``): nothing is committed past the newest
checkpoint, and the launcher (``lorastream run --world-size N``, ``torchrun``, a Kubernetes
controller) restarts the group, which resumes from it. Every
rank's processed offsets follow the whole group's after each tick, so a partition that
moves between ranks continues where the group left it.

Every rank keeps the vectors it published current, as a single worker does: each tick
republishes its stalest ones, and a tick without records anywhere is idle time for the
refresh. Building vectors does not change the model, so this needs no collective; catching
the cached item encodings up with the model does (they are state the next step reads, and
the re-encoding is split over the ranks), so every rank does it in the same idle tick with
the same budget. Whether a
version is *complete* (every vector on the topics is of it) needs every rank: each says in
the exchange whether all its published vectors are of the current version, and rank 0
announces the version on ``topics.vector_versions`` when every rank said so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch.distributed as dist
from kafka import KafkaConsumer
from pydantic import TypeAdapter

from learners.base import Learner
from learners.data_parallel import Shard
from schemas.events import StreamRecord
from schemas.settings import Settings
from stream.adapters import publish_adapter
from stream.apply import Applied, AttemptFailed
from stream.batcher import Batch
from stream.checkpoint import CheckpointError
from stream.clients import StreamSetupError
from stream.decode import Accepted, RawRecord, Rejection
from stream.durable import WorkerFailed
from stream.exits import ExitStatus, status_of
from stream.idle import REFRESH_DELIVERY_S
from stream.observers import BatchSummary
from stream.offsets import PartitionKey
from stream.publisher import DeliveryError
from stream.worker import Worker, position_of

__all__ = ["RankWorker", "Tick", "exchange", "join_group"]

T = TypeVar("T")
log = logging.getLogger(__name__)

_DOCS = TypeAdapter(list[StreamRecord])  # the events topic's own record type


def join_group(settings: Settings) -> Shard:
    """Join the process group the launcher's variables describe (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``)."""
    from datetime import timedelta

    import torch

    if settings.learner.kind != "llm" or settings.checkpoint.dir is None:
        raise StreamSetupError(
            "ranks share one LLM learner and one checkpoint directory: set learner.kind = llm"
            " and checkpoint.dir (storage every rank reads), or run a single worker"
        )
    if settings.learner.llm.user_tower == "prompt":
        raise StreamSetupError(
            "ranks publish their own users' vectors, and the prompt user tower runs the"
            " backbone for them, which the ranks run only together: set"
            " learner.llm.user_tower = compose"
        )
    backend: str = settings.distributed.backend
    if backend == "auto":
        cuda = settings.learner.llm.device != "cpu" and torch.cuda.is_available()
        backend = "nccl" if cuda else "gloo"
    if backend == "nccl":  # one GPU per rank; the host-side exchange still needs gloo
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=settings.distributed.timeout_s))
    shard = Shard.current()
    log.info("rank %d of %d (%s)", shard.rank, shard.world, backend)
    return shard


@dataclass
class Tick:
    """What every rank brought to one step."""

    accepted: list[Accepted]  # every rank's records, in rank order
    own: set[PartitionKey]  # the partitions this rank's records came from
    offsets: dict[PartitionKey, int] = field(default_factory=dict)  # highest processed
    before: dict[PartitionKey, int] = field(default_factory=dict)  # the same, before the step
    placed: dict[PartitionKey, int] = field(default_factory=dict)  # where the state began each
    checkpoint: bool = False  # some rank's schedule is due, or some rank stops
    stopping: bool = False
    current: str | None = None  # the version every rank's published vectors are of, if one

    def owns(self, record: RawRecord) -> bool:
        return (record.topic, record.partition) in self.own

    def mine(self, accepted: Accepted) -> bool:
        return self.owns(accepted.record)


def exchange(
    shard: Shard,
    accepted: Sequence[Accepted],
    processed: dict[PartitionKey, int],
    due: bool,
    stopping: bool,
    current: str | None = None,
    before: dict[PartitionKey, int] | None = None,
    placed: dict[PartitionKey, int] | None = None,
) -> Tick:
    """Gather every rank's records, processed offsets, placements and flags (two
    collectives)."""
    head = {
        "where": [[a.record.topic, a.record.partition, a.record.offset] for a in accepted],
        "stamps": [a.record.timestamp_ms for a in accepted],
        "offsets": [[t, p, o] for (t, p), o in processed.items()],
        "due": due,
        "stopping": stopping,
        "current": current,
        "before": [[t, p, o] for (t, p), o in (before or {}).items()],
        "placed": [[t, p, o] for (t, p), o in (placed or {}).items()],
    }
    payload = json.dumps(head).encode() + b"\n" + _DOCS.dump_json([a.event for a in accepted])
    tick = Tick([], {(a.record.topic, a.record.partition) for a in accepted})
    currents = set()
    for rank, part in enumerate(shard.gather_bytes(payload)):
        line, docs = part.split(b"\n", 1)
        theirs = json.loads(line)
        if rank == shard.rank:  # this rank's own records keep their bytes (for dead letters)
            tick.accepted += accepted
        else:
            # accepted by its rank already: not judged again by this host's clock
            events = _DOCS.validate_json(docs, context={"accepted": True})
            tick.accepted += [
                Accepted(RawRecord(topic, partition, offset, stamp, None, None), event)
                for (topic, partition, offset), stamp, event in zip(
                    theirs["where"], theirs["stamps"], events, strict=True
                )
            ]
        for topic, partition, offset in theirs["offsets"]:
            key = (topic, partition)
            tick.offsets[key] = max(tick.offsets.get(key, 0), offset)
        for topic, partition, offset in theirs["before"]:
            key = (topic, partition)
            tick.before[key] = max(tick.before.get(key, 0), offset)
        for topic, partition, offset in theirs["placed"]:
            key = (topic, partition)
            tick.placed[key] = min(tick.placed.get(key, offset), offset)
        tick.checkpoint |= theirs["due"] or theirs["stopping"]
        tick.stopping |= theirs["stopping"]
        currents.add(theirs["current"])
    if len(currents) == 1:
        tick.current = currents.pop()
    return tick


class RankWorker(Worker):
    """A :class:`~stream.worker.Worker` that learns in lockstep with the other ranks."""

    announces_alone = False  # a version is complete only when it is on every rank

    @property
    def full_batch(self) -> int:
        """Every rank's full batch: the global batch each rank learns."""
        return self.settings.batch.max_events * self.shard.world

    def __init__(self, settings: Settings, learner: Learner, shard: Shard, **kwargs: Any) -> None:
        super().__init__(settings, learner, **kwargs)
        self.shard = shard

    def _restore(self, admin: Any) -> None:
        self._restore_rank_0_first(lambda: self.durable.start(admin))

    def _roll_back(self, failure: AttemptFailed) -> dict[PartitionKey, int]:
        return self._restore_rank_0_first(lambda: self.durable.roll_back(failure, failure.cause))

    def _restore_rank_0_first(self, restore: Callable[[], T]) -> T:
        """``restore`` on rank 0, then on the others: rank 0 alone may move a damaged
        checkpoint aside (two ranks renaming one directory would race), and the others then
        find only what it left. All must hold the same checkpoint and the same model, and
        every rank reads partitions from the start where any rank must (each sees what rank
        0 moved aside; this holds the ranks to one answer should they not). Should rank 0
        fail to restore, every rank stops with its reason, not a lost connection, and as
        a refusal where rank 0's is one (a checkpoint that does not fit, state lost: a
        restart cannot cure it)."""
        failed: Exception | None = None
        if self.shard.rank == 0:
            try:
                out = restore()
            except Exception as exc:
                failed = exc
        told: list[str | bool | None] = [None, False]
        if failed is not None:  # the others end as rank 0 does: a refusal, or a failure
            told = [f"{type(failed).__name__}: {failed}", status_of(failed) is ExitStatus.SETUP]
        try:
            reason, refusal = json.loads(self.shard.gather_bytes(json.dumps(told).encode())[0])
        except Exception as lost:  # the group is gone: rank 0's own reason still says why
            if failed is not None:
                raise failed from lost
            raise
        if failed is not None:
            raise failed
        if reason is not None:
            said = f"rank 0 could not restore the group's state: {reason}"
            raise CheckpointError(said) if refusal else WorkerFailed(said)
        if self.shard.rank != 0:
            out = restore()
        mine = json.dumps([self.durable.restored, self.durable.from_earliest]).encode()
        states = [json.loads(p) for p in self.shard.gather_bytes(mine)]
        if len({restored for restored, _ in states}) != 1:
            raise WorkerFailed(
                f"the ranks restored different checkpoints ({[r for r, _ in states]}): is"
                f" {self.settings.checkpoint.dir} one directory every rank sees alike?"
            )
        if not self.shard.in_step():
            raise WorkerFailed(
                "the ranks restored the same checkpoint into different models: every rank"
                " must run the same learner settings and model files"
            )
        self.durable.from_earliest = any(earliest for _, earliest in states)
        return out

    def _consume(self, consumer: KafkaConsumer) -> None:
        """Poll until the tick, then step with every rank; until some rank stops."""
        wait = self.settings.batch.max_wait_s
        next_tick = time.monotonic() + wait
        while True:
            left = next_tick - time.monotonic()
            full = len(self._batcher) >= self._batcher.max_events  # (room is never 0)
            if not full and not self._stop.is_set() and left > 0:
                if self._read(consumer, int(1000 * left)):
                    self.schedule.busy()
                else:
                    self.schedule.idle(time.monotonic())
            elif left > 0 and not self._stop.is_set():
                time.sleep(min(left, 0.2))  # full: wait for the others' tick
            if self._stop.is_set():  # the last step, bounded like a single worker's drain
                with self._watchdog():
                    self._tick(self._batcher.take(), consumer)
                return
            if time.monotonic() >= next_tick:
                stopping = self._tick(self._batcher.take(), consumer)
                self._update_lag(consumer)
                next_tick = time.monotonic() + wait
                if stopping:
                    return
            self._heartbeat(consumer)

    def _drain(self, consumer: KafkaConsumer) -> None:
        """The stopping tick already checkpointed and committed."""

    def _tick(self, batch: Batch, consumer: KafkaConsumer) -> bool:
        """One step with every rank; returns whether the group stops."""
        started = time.perf_counter()
        self.schedule.add(len(batch.items))
        before = self.book.processed()
        processed = {**before, **batch.next_offsets()}
        due, current = self.durable.due(), self.apply.current_version()
        with self.stages.time("exchange"):
            tick = exchange(
                self.shard,
                batch.accepted(),
                processed,
                due,
                self._stop.is_set(),
                current,
                before,
                self.book.placed(),
            )
        self.book.adopt_placed(tick.placed)  # before a roll-back in this tick may need them
        if tick.stopping:  # another rank's stop is this one's too: its commits are bounded alike
            self.request_stop()
        if not self.durable.has_checkpoint:  # the fresh state: what a failed step goes back to
            self._checkpoint(consumer, tick.before)
        isolated = bool(self._suspects) and any(
            position_of(a.record) in self._suspects for a in tick.accepted
        )
        try:
            applied, poison = self._apply(tick, isolated)
            rejected = batch.rejections() + [
                r for r in applied.rejected + poison if tick.owns(r.record)
            ]
            for rejection in rejected:
                self.error_policy.on_rejected(rejection, self.publisher)
            with self.stages.time("deliver"):
                retries = self.publisher.deliver(self.settings.worker.delivery_timeout_s)
        except AttemptFailed as failure:  # the learner's, on every rank alike (see _apply)
            self.metrics.batch_failures.labels(failure.stage).inc()
            self.publisher.abandon()
            self._rewind(tick.accepted, failure, consumer)
            return tick.stopping
        except DeliveryError as exc:
            raise WorkerFailed(
                f"rank {self.shard.rank}: a step failed ({exc}); the group stops without"
                " committing and resumes from the newest checkpoint"
            ) from exc
        acked_at = time.time()
        # every rank's state now holds every rank's records: a partition that moves here
        # later continues where the group is, not where this rank last read it
        self.book.processed_batch(tick.offsets)
        if self._suspects:
            self._suspects -= {position_of(a.record) for a in tick.accepted}
        own = [a for a in applied.learned if tick.mine(a)]
        self.events_learned += len(own)
        mine = dataclasses.replace(applied, learned=own)
        self._report_state()
        seconds = time.perf_counter() - started
        summary = BatchSummary.of(batch, mine, rejected, retries, acked_at, seconds)
        everyone = BatchSummary.of(batch, applied, rejected, retries, acked_at, seconds)
        for observer in self.observers:
            # the drift policy changes the learning rate: every rank decides it from the same
            # (global) inputs, or the ranks' models would part; the rest report this rank
            observer(everyone if observer is self.drift else summary)
        if tick.checkpoint or isolated:  # a later roll-back must not go back before isolation
            self._checkpoint(consumer, tick.offsets)
        else:  # a commit refused before (a rebalance, the coordinator away): durable, so again
            self._retry_commit(consumer)
        self._keep_vectors_current(tick)
        return tick.stopping

    def _apply(self, tick: Tick, isolated: bool) -> tuple[Applied, list[Rejection]]:
        """Apply the global batch, or, when it holds records a step failed on before
        (``isolated``), apply it in isolation (``stream/poison.py``). Every rank learns the
        same records from the same state, so a learner that fails on a record fails on every
        rank at the same point, and every rank rolls back and bisects alike. Output failures
        are this rank's own: they fail the group instead (a bisection on one rank alone would
        part the ranks' collectives)."""

        def attempt(part: Sequence[Accepted]) -> Applied:
            try:
                return self.apply(part, own=tick.mine)
            except AttemptFailed as failure:
                if failure.stage == "learn":
                    raise
                raise WorkerFailed(
                    f"rank {self.shard.rank}: publishing its output failed ({failure}); the"
                    " group stops without committing and resumes from the newest checkpoint"
                ) from failure

        if not isolated:
            return attempt(tick.accepted), []
        return self._isolate(tick.accepted, attempt)

    def _keep_vectors_current(self, tick: Tick) -> None:
        """A tick without records anywhere left the model as it was: rank 0 announces the
        version every rank found complete before it, every rank catches its cached item
        encodings up with the model (alike: they are the state the next step reads, and the
        re-encoding is split over the ranks), and every rank refreshes while idle. A failed
        catch-up ends the group (a single worker defers it): one rank's encodings would then
        differ from the others', and the next step would part the ranks' models."""
        if tick.accepted or tick.stopping:
            return
        per_tick = self.settings.worker.catch_up_when_idle * self.settings.batch.max_wait_s
        if per_tick > 0:
            with self.stages.time("catch_up"):
                done = self.apply.catch_up(max(1, int(per_tick)))
            self.metrics.item_encodings_behind.set(done.behind)
        fresh = tick.current is not None and tick.current != self.apply.announced
        if fresh and self.shard.rank == 0:  # every known id is some rank's published vector
            learner, topics = self.learner, self.settings.topics
            items = len(learner.known_items()) if topics.produce_item_vectors else 0
            timeout_s = min(REFRESH_DELIVERY_S, self.settings.worker.delivery_timeout_s)
            self.apply.announce(str(tick.current), len(learner.known_users()), items, timeout_s)
        self.idle_work.refresh()

    def _checkpoint(self, consumer: KafkaConsumer, offsets: dict[PartitionKey, int]) -> None:
        """Steps 4-5 with every rank: rank 0 writes, then each commits its partitions."""
        with self.stages.time("exchange"):
            # also the barrier after every rank's acknowledgements
            if not self.shard.in_step():
                raise WorkerFailed(
                    "the ranks' models parted (different parameters at a checkpoint); the group"
                    " resumes from the newest checkpoint. Give every rank the same thread count"
                    " (OMP_NUM_THREADS) and the same kind of device"
                )
        checkpoint = None
        if self.shard.rank == 0:
            checkpoint = self.durable.save(offsets)
        with self.stages.time("exchange"):
            dist.barrier()  # the checkpoint is on disk
        if checkpoint is None:
            self.durable.saved_elsewhere(offsets)
        self._commit(consumer)
        if checkpoint is not None and self.settings.topics.adapters is not None:
            with self.stages.time("deliver"):
                publish_adapter(self.publisher, checkpoint, self.learner.version)
