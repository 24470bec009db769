"""Nothing lost: offsets never pass durable state, poison records are isolated, restore is strict.

Each test runs a real worker (in a thread) against the real broker, with a River learner
that fails the way a learner with a bug would, and checks what the group committed, what
the learner's ledger holds and what reached the dead-letter topic.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    WorkerThread,
    all_committed,
    committed_offsets,
    create_topic,
    event_record,
    latest_by_key,
    make_events,
    read_topic,
    send_raw,
    wait_for,
)
from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

import stream.worker as worker_module
from learners.base import LearnReport, VectorBatch
from learners.ledger import EventLedger
from learners.river_mf import RiverMFLearner
from schemas.dead_letter import DeadLetter
from schemas.events import InteractionEvent
from schemas.settings import Settings
from schemas.vectors import SourcePosition
from stream.checkpoint import CheckpointStore, CheckpointWriteError
from stream.clients import make_consumer
from stream.metrics import WorkerMetrics
from stream.poison import TooManyPoisonRecords
from stream.worker import StateLost, Worker

pytestmark = pytest.mark.kafka


class FaultyLearner(RiverMFLearner):
    """River MF with a bug some records trigger: learning an event of ``bad_items`` raises
    after the events before it in the batch were learned (the state is half-updated);
    publishing a vector of ``bad_users`` raises; ``die`` raises it on the n-th update."""

    def __init__(
        self,
        bad_items: Sequence[str] = (),
        bad_users: Sequence[str] = (),
        fail_all: bool = False,
        die: tuple[int, BaseException] | None = None,
    ) -> None:
        super().__init__()
        self.bad_items, self.bad_users, self.fail_all, self.die = (
            set(bad_items),
            set(bad_users),
            fail_all,
            die,
        )
        self.calls = 0

    def learn_many(
        self, events: Sequence[InteractionEvent], positions: Sequence[SourcePosition]
    ) -> LearnReport:
        self.calls += 1
        if self.die is not None and self.calls >= self.die[0]:
            raise self.die[1]
        if self.fail_all:
            raise ValueError("the learner is broken")
        for k, event in enumerate(events):
            if event.item_id in self.bad_items:
                super().learn_many(events[:k], positions[:k])
                raise ValueError(f"cannot learn item {event.item_id}")
        return super().learn_many(events, positions)

    def user_vectors(self, user_ids: Sequence[str]) -> VectorBatch:
        if self.bad_users & set(user_ids):
            raise ValueError("cannot build this user's vector")
        return super().user_vectors(user_ids)


def start(settings: Settings, learner: RiverMFLearner) -> tuple[WorkerThread, WorkerMetrics]:
    metrics = WorkerMetrics(process=False)
    return WorkerThread(Worker(settings, learner, metrics)), metrics


def letters(settings: Settings, expect: int | None = None) -> list[DeadLetter]:
    records = read_topic(settings, settings.topics.dead_letters, idle_s=2.0, expect=expect)
    return [DeadLetter.model_validate_json(r.value) for r in records]


def checkpoint_offsets(settings: Settings) -> dict[int, int]:
    assert settings.checkpoint.dir is not None
    latest = CheckpointStore(settings.checkpoint.dir).latest()
    assert latest is not None
    return {p: o for (_, p), o in latest.offsets.items()}


def poisoned(events: list[InteractionEvent], at: list[int], **change: str) -> list[Any]:
    return [e.model_copy(update=change) if i in at else e for i, e in enumerate(events)]


def test_a_poison_record_is_dead_lettered_and_everything_else_learned_once(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(batch={"max_events": 64, "max_wait_s": 0.3})
    create_topic(settings, settings.topics.events)
    events = poisoned(make_events(600, n_users=30), at=[150, 420], item_id="item-poison")
    send_raw(settings, [event_record(e) for e in events])
    learner = FaultyLearner(bad_items=["item-poison"])
    worker, metrics = start(settings, learner)
    try:
        wait_for(lambda: all_committed(settings), 120, "every record committed")
        good = [e.event_id for e in events if e.item_id != "item-poison"]
        assert learner.ledger == EventLedger.expected(good), "the rest learned exactly once"
        dead = letters(settings, expect=2)
        assert sorted(d.code.value for d in dead) == ["learner_rejected"] * 2
        bad_ids = {e.event_id for e in events if e.item_id == "item-poison"}
        assert {json.loads(d.original_value or b"{}")["event_id"] for d in dead} == bad_ids
        assert "cannot learn item item-poison" in dead[0].reason
        assert metrics.registry.get_sample_value("lorastream_rewinds_total") == 2
        assert worker.thread.is_alive()
        assert worker.error is None
    finally:
        worker.stop()


def test_a_record_whose_vector_cannot_be_published_is_dead_lettered(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(batch={"max_events": 64, "max_wait_s": 0.3})
    create_topic(settings, settings.topics.events)
    events = poisoned(make_events(300, n_users=20), at=[77], user_id="user-unpublishable")
    send_raw(settings, [event_record(e) for e in events])
    learner = FaultyLearner(bad_users=["user-unpublishable"])
    worker, _ = start(settings, learner)
    try:
        wait_for(lambda: all_committed(settings), 120, "every record committed")
        (dead,) = letters(settings, expect=1)
        assert dead.code.value == "publish_failed"
        assert dead.source.offset == next(
            r.offset
            for r in read_topic(settings, settings.topics.events, expect=300)
            if json.loads(r.value)["user_id"] == "user-unpublishable"
        )
        expected = [e.event_id for e in events if e.user_id != "user-unpublishable"]
        assert learner.ledger == EventLedger.expected(expected)
    finally:
        worker.stop()


def test_a_learner_that_fails_every_record_stops_the_worker_uncommitted(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(batch={"max_events": 32, "max_wait_s": 0.3})
    create_topic(settings, settings.topics.events)
    send_raw(settings, [event_record(e) for e in make_events(200, n_users=10)])
    worker, _ = start(settings, FaultyLearner(fail_all=True))
    error = worker.wait_failed()
    assert isinstance(error, TooManyPoisonRecords)
    assert set(committed_offsets(settings).values()) <= {0}, "no event's offset is committed"
    assert letters(settings) == [], "a broken learner is no reason to dead-letter good records"


def test_a_crash_before_the_first_checkpoint_commits_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    """The worker dies from an error that is no record's fault (here: out of memory) after
    learning a few batches that no checkpoint covers: closing the consumer must not commit
    them (kafka-python's close() calls on_partitions_revoked). The only durable state is the
    fresh one, at offset 0 (a rebalance after the first assignment may commit that)."""
    settings = make_settings(
        batch={"max_events": 50, "max_wait_s": 0.3},
        checkpoint={"every_events": 100_000, "every_s": 600.0, "idle_s": 600.0},
    )
    create_topic(settings, settings.topics.events)
    send_raw(settings, [event_record(e) for e in make_events(1000, n_users=20)])
    learner = FaultyLearner(die=(6, MemoryError("simulated")))
    worker, _ = start(settings, learner)
    assert isinstance(worker.wait_failed(), MemoryError)
    assert learner.ledger.count >= 250, "several batches were learned and published"
    committed = committed_offsets(settings)
    assert set(committed.values()) <= {0}, f"committed past durable state: {committed}"


def test_a_checkpoint_disk_that_fails_stops_the_worker_with_durable_offsets_only(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        batch={"max_events": 50, "max_wait_s": 0.3},
        checkpoint={"every_events": 200, "every_s": 600.0, "idle_s": 600.0},
    )
    create_topic(settings, settings.topics.events, partitions=1)
    send_raw(settings, [event_record(e) for e in make_events(400, n_users=20)])
    worker, metrics = start(settings, RiverMFLearner())
    # all 400 in a checkpoint: no other is due (idle_s 600) while the disk is swapped below
    wait_for(lambda: sum(committed_offsets(settings).values()) == 400, 60, "the checkpoints")
    durable = checkpoint_offsets(settings)
    root = Path(str(settings.checkpoint.dir))
    shutil.move(root, tmp_path / "moved")
    root.write_text("")  # a file where the directory was: every write is refused
    send_raw(settings, [event_record(e) for e in make_events(400, n_users=20, seed=1)])
    error = worker.wait_failed()
    assert isinstance(error, CheckpointWriteError)
    assert str(root) in str(error)
    assert committed_offsets(settings) == durable
    assert metrics.registry.get_sample_value("lorastream_checkpoints_total", {"result": "error"})


def refuse_commits_of(
    monkeypatch: pytest.MonkeyPatch, offsets: dict[int, int], times: int = 1
) -> list[dict[int, int]]:
    """The first ``times`` commits of exactly ``offsets`` (partition → offset) raise what the
    client raises once its own retries of a moving coordinator ran out; returns the
    refusals."""
    real_commit = KafkaConsumer.commit
    refused: list[dict[int, int]] = []

    def commit_refusing_the_first(self: KafkaConsumer, wanted: Any, **kwargs: Any) -> Any:
        asked = {tp.partition: om.offset for tp, om in wanted.items()}
        if len(refused) < times and asked == offsets:
            refused.append(asked)
            raise KafkaTimeoutError("the coordinator did not answer")
        return real_commit(self, wanted, **kwargs)

    monkeypatch.setattr(KafkaConsumer, "commit", commit_refusing_the_first)
    return refused


def commit_async_refused(self: KafkaConsumer, offsets: Any, **kwargs: Any) -> Future:
    """``commit_async`` as a coordinator that is away answers it."""
    return Future().failure(KafkaTimeoutError("the coordinator did not answer"))


def stop_once_refused(
    settings: Settings, events: list[InteractionEvent], refused: list[dict[int, int]]
) -> None:
    """One partition of ``events`` learned by a worker stopped as soon as a commit of them
    was refused."""
    create_topic(settings, settings.topics.events, partitions=1)
    send_raw(settings, [event_record(e) for e in events])
    worker, _ = start(settings, RiverMFLearner())
    try:
        wait_for(lambda: bool(refused), 60, "the commit of the last checkpoint refused")
    finally:
        worker.stop(timeout=60.0)


def test_a_failed_commit_is_tried_again_while_the_stream_is_idle(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker refuses the commit of the last checkpoint (its coordinator moving, as under
    load); with nothing more to read no checkpoint is due again, yet its offsets are committed."""
    events = make_events(100, n_users=10)
    refused = refuse_commits_of(monkeypatch, {0: len(events)})
    settings = make_settings(
        batch={"max_events": 500, "max_wait_s": 0.3}, checkpoint={"idle_s": 0.3}
    )
    create_topic(settings, settings.topics.events, partitions=1)
    send_raw(settings, [event_record(e) for e in events])
    learner = RiverMFLearner()
    worker, metrics = start(settings, learner)
    try:
        wait_for(lambda: all_committed(settings), 60, "the refused offsets committed")
        assert refused, "the commit of every offset was refused once"
        assert learner.ledger == EventLedger.expected(e.event_id for e in events)
        refusals = metrics.registry.get_sample_value(
            "lorastream_offset_commits_total", {"result": "error"}
        )
        assert (refusals or 0.0) >= 1.0, "the refusal is counted"
    finally:
        worker.stop()


def test_a_stop_commits_what_a_refused_commit_left_behind_whatever_the_backoff(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit of the last checkpoint is refused and the worker is stopped at once: nothing
    is unsaved, so no checkpoint is due, and the backoff (a minute here) has not run out; the
    stop still commits (the commit on revocation, refused too, cannot cover it)."""
    events = make_events(100, n_users=10)
    refused = refuse_commits_of(monkeypatch, {0: len(events)})
    monkeypatch.setattr(KafkaConsumer, "commit_async", commit_async_refused)
    monkeypatch.setattr(worker_module, "COMMIT_RETRY_S", 60.0)
    settings = make_settings(
        batch={"max_events": 500, "max_wait_s": 0.3}, checkpoint={"idle_s": 0.3}
    )
    stop_once_refused(settings, events, refused)
    assert committed_offsets(settings) == {0: len(events)}


def test_without_checkpoints_a_stop_commits_what_a_refused_commit_left_behind(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same without a checkpoint directory, where processed offsets are the durable
    ones: the stop commits them at once, not after the backoff."""
    events = make_events(100, n_users=10)
    refused = refuse_commits_of(monkeypatch, {0: len(events)})
    monkeypatch.setattr(KafkaConsumer, "commit_async", commit_async_refused)
    monkeypatch.setattr(worker_module, "COMMIT_RETRY_S", 60.0)
    settings = make_settings(batch={"max_events": 500, "max_wait_s": 0.3}, checkpoint={"dir": None})
    stop_once_refused(settings, events, refused)
    assert committed_offsets(settings) == {0: len(events)}


def test_a_stops_checkpoint_commit_waits_no_longer_than_the_stop_allows(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop learns the open batch, checkpoints and commits: that commit is bounded well
    inside the shutdown watchdog, or a coordinator away would end the process with exit 3."""
    events = make_events(100, n_users=10)
    real_commit = KafkaConsumer.commit
    bounds: dict[int, int | None] = {}  # offset committed → the commit's timeout

    def commit_recorded(self: KafkaConsumer, wanted: Any, **kwargs: Any) -> Any:
        for om in wanted.values():
            bounds[om.offset] = kwargs.get("timeout_ms")
        return real_commit(self, wanted, **kwargs)

    monkeypatch.setattr(KafkaConsumer, "commit", commit_recorded)
    settings = make_settings(batch={"max_events": 500, "max_wait_s": 120.0})
    create_topic(settings, settings.topics.events, partitions=1)
    send_raw(settings, [event_record(e) for e in events])
    worker, metrics = start(settings, RiverMFLearner())
    try:
        wait_for(
            lambda: (
                (metrics.registry.get_sample_value("lorastream_records_consumed_total") or 0)
                >= len(events)
            ),
            60,
            "every record read into the open batch",
        )
    finally:
        worker.stop()
    assert committed_offsets(settings) == {0: len(events)}
    assert bounds[len(events)] == worker_module.COMMIT_RETRY_TIMEOUT_MS


def test_a_revocation_commit_the_coordinator_never_answers_does_not_hold_the_stop(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every commit of the last checkpoint is refused, the stop's too; ``close()`` revokes
    the partitions and the listener commits once more, to a coordinator that never answers.
    The listener gives up after its bound, so the stop ends before its watchdog (10 s here,
    so that waiting out the client's 30 s request timeout would set it off)."""
    events = make_events(100, n_users=10)
    refused = refuse_commits_of(monkeypatch, {0: len(events)}, times=10**6)
    asked: list[Any] = []

    def commit_async_unanswered(self: KafkaConsumer, offsets: Any, **kwargs: Any) -> Future:
        asked.append(offsets)
        return Future()  # never resolved

    exits: list[str] = []
    monkeypatch.setattr(KafkaConsumer, "commit_async", commit_async_unanswered)
    monkeypatch.setattr(worker_module, "_hard_exit", lambda: exits.append("watchdog"))
    settings = make_settings(
        batch={"max_events": 500, "max_wait_s": 0.3},
        checkpoint={"idle_s": 0.3},
        worker={"shutdown_timeout_s": 10.0},  # under the client's own 30 s
    )
    stop_once_refused(settings, events, refused)
    assert asked, "close() revoked the partitions and the listener committed"
    assert exits == []
    assert checkpoint_offsets(settings) == {0: len(events)}, "nothing is lost"


class Joined(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.assignments = 0

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.assignments += 1


def join_and_leave(settings: Settings) -> None:
    """A second, dynamic member joins the worker's group until it is given its (empty)
    share, then leaves: two rebalances, each revoking the worker's partitions (the eager
    protocol) and giving them back (a static member sorts first in the range assignor)."""
    member = make_consumer(settings, group_instance_id=None, client_id="tests-joiner")
    joined = Joined()
    member.subscribe([settings.topics.events], listener=joined)
    try:
        wait_for(lambda: bool(member.poll(100)) or joined.assignments > 0, 60, "the join")
    finally:
        member.close(autocommit=False)


def test_a_partition_given_back_commits_what_its_revocation_commit_did_not(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit of the last checkpoint is refused; then a rebalance revokes the partition
    and the listener's commit "succeeds" without committing, as kafka-python's does while the
    coordinator is unknown (its future is the coordinator lookup's). The partition comes
    back: the worker commits its durable offsets, because that success claimed nothing."""
    events = make_events(100, n_users=10)
    refused: list[dict[int, int]] = []
    revoked: list[Any] = []
    real_commit = KafkaConsumer.commit

    def commit_refused_until_revoked(self: KafkaConsumer, wanted: Any, **kwargs: Any) -> Any:
        if not revoked:
            refused.append({tp.partition: om.offset for tp, om in wanted.items()})
            raise KafkaTimeoutError("the coordinator did not answer")
        return real_commit(self, wanted, **kwargs)

    def commit_async_lookup_only(self: KafkaConsumer, offsets: Any, **kwargs: Any) -> Future:
        revoked.append(offsets)
        return Future().success(None)

    monkeypatch.setattr(KafkaConsumer, "commit", commit_refused_until_revoked)
    monkeypatch.setattr(KafkaConsumer, "commit_async", commit_async_lookup_only)
    settings = make_settings(
        batch={"max_events": 500, "max_wait_s": 0.3}, checkpoint={"idle_s": 0.3}
    )
    create_topic(settings, settings.topics.events, partitions=1)
    send_raw(settings, [event_record(e) for e in events])
    worker, _ = start(settings, RiverMFLearner())
    try:
        wait_for(lambda: {0: len(events)} in refused, 60, "the last checkpoint's commit refused")
        join_and_leave(settings)
        wait_for(lambda: bool(revoked), 60, "the partition revoked with its offsets to commit")
        wait_for(lambda: all_committed(settings), 60, "the durable offsets committed")
    finally:
        worker.stop()


def learn_on_an_added_partition(settings: Settings, events: list[InteractionEvent]) -> set[Path]:
    """The checkpoints so far; then a second partition is added to the events topic and
    ``events`` are sent and committed by the running worker (the client's metadata is at
    most 30 s old), so only newer checkpoints read that partition."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewPartitions

    older = set(Path(str(settings.checkpoint.dir)).glob("ckpt-*"))
    admin = KafkaAdminClient(**settings.kafka.client_kwargs())
    try:
        admin.create_partitions({settings.topics.events: NewPartitions(total_count=2)})
    finally:
        admin.close()
    send_raw(settings, [event_record(e) for e in events])
    wait_for(
        lambda: 1 in committed_offsets(settings) and all_committed(settings),
        120,
        "the new partition's events committed",
    )
    return older


def damage_every_checkpoint_but(older: set[Path], root: Path) -> None:
    for newer in set(root.glob("ckpt-*")) - older:
        (newer / "manifest.json").write_text("{}")


def test_a_roll_back_past_damaged_checkpoints_reads_what_only_they_covered_again(
    make_settings: Callable[..., Settings],
) -> None:
    """A partition added to the topic is placed and learned; every checkpoint since is
    damaged on disk, then a batch fails. The roll-back lands on a checkpoint that never read
    the new partition: the worker reads it again from where this state began it, so every
    valid event is learned exactly once."""
    settings = make_settings(
        batch={"max_events": 50, "max_wait_s": 0.3}, checkpoint={"idle_s": 0.3, "keep": 20}
    )
    create_topic(settings, settings.topics.events, partitions=1)
    first, second = make_events(100, n_users=10), make_events(100, n_users=10, seed=3)
    poison = make_events(1, n_users=1, seed=5)[0].model_copy(update={"item_id": "item-poison"})
    send_raw(settings, [event_record(e) for e in first])
    learner = FaultyLearner(bad_items=["item-poison"])
    worker, metrics = start(settings, learner)
    root = Path(str(settings.checkpoint.dir))
    try:
        wait_for(lambda: all_committed(settings), 60, "the first events committed")
        older = learn_on_an_added_partition(settings, second)
        damage_every_checkpoint_but(older, root)
        send_raw(settings, [event_record(poison)])
        wait_for(lambda: bool(letters(settings)), 60, "the poison record dead-lettered")
        wait_for(lambda: all_committed(settings), 60, "everything committed again")
        good = [e.event_id for e in [*first, *second]]
        assert learner.ledger == EventLedger.expected(good), "every valid event learned once"
        assert metrics.registry.get_sample_value("lorastream_checkpoints_quarantined_total")
    finally:
        worker.stop()


def test_a_restart_behind_damaged_checkpoints_reads_what_only_they_covered_again(
    make_settings: Callable[..., Settings],
) -> None:
    """As the roll-back above, on a restart: the newest checkpoints, the only ones that read
    a partition added to the topic, are damaged while the worker is down, and more records
    arrive. The restored state never read that partition, whose committed offset the
    damaged ones moved on: it is read from its start, not from that offset."""
    settings = make_settings(
        batch={"max_events": 50, "max_wait_s": 0.3}, checkpoint={"idle_s": 0.3, "keep": 20}
    )
    create_topic(settings, settings.topics.events, partitions=1)
    first, second = make_events(100, n_users=10), make_events(100, n_users=10, seed=3)
    third = make_events(100, n_users=10, seed=4)
    send_raw(settings, [event_record(e) for e in first])
    worker, _ = start(settings, RiverMFLearner())
    root = Path(str(settings.checkpoint.dir))
    try:
        wait_for(lambda: all_committed(settings), 60, "the first events committed")
        older = learn_on_an_added_partition(settings, second)
    finally:
        worker.stop()
    damage_every_checkpoint_but(older, root)
    send_raw(settings, [event_record(e) for e in third])  # past the committed offsets
    learner = RiverMFLearner()
    worker, metrics = start(settings, learner)
    try:
        wait_for(lambda: all_committed(settings), 60, "everything committed again")
        good = [e.event_id for e in [*first, *second, *third]]
        assert learner.ledger == EventLedger.expected(good), "every event learned once"
        assert metrics.registry.get_sample_value("lorastream_checkpoints_quarantined_total")
    finally:
        worker.stop()


def test_a_worker_whose_checkpoints_are_all_damaged_refuses_to_start_unless_allowed(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(batch={"max_events": 50, "max_wait_s": 0.3})
    create_topic(settings, settings.topics.events)
    events = make_events(300, n_users=10)
    send_raw(settings, [event_record(e) for e in events])
    worker, _ = start(settings, RiverMFLearner())
    wait_for(lambda: all_committed(settings), 60, "the stream committed")
    worker.stop()
    root = Path(str(settings.checkpoint.dir))
    for manifest in root.glob("ckpt-*/manifest.json"):
        manifest.write_text("{}")

    refused, _ = start(settings, RiverMFLearner())
    error = refused.wait_failed()
    assert isinstance(error, StateLost)
    assert "--allow-fresh-start" in str(error)
    assert len(list(root.glob("quarantine-ckpt-*"))) >= 1, "damaged checkpoints are kept aside"
    # started again, by a group with no committed offsets: what was moved aside still counts
    elsewhere = make_settings(
        batch={"max_events": 50, "max_wait_s": 0.3},
        checkpoint={"dir": str(root)},
        consumer={"group_id": settings.consumer.group_id + "-other"},
    )
    refused, _ = start(elsewhere, RiverMFLearner())
    assert isinstance(refused.wait_failed(), StateLost)

    allowed = make_settings(
        batch={"max_events": 50, "max_wait_s": 0.3}, checkpoint={"allow_fresh_start": True}
    )
    learner = RiverMFLearner()
    worker, _ = start(allowed, learner)
    try:
        send_raw(settings, [event_record(e) for e in make_events(20, n_users=5, seed=3)])
        wait_for(lambda: all_committed(settings), 60, "the new events learned")
        assert learner.ledger.count == 20, "a fresh learner, from the committed offsets on"
    finally:
        worker.stop()


def test_a_deleted_user_is_forgotten_and_tombstoned(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(batch={"max_events": 64, "max_wait_s": 0.3})
    create_topic(settings, settings.topics.events)
    events = make_events(400, n_users=10)
    gone = "user-3"
    deletion = json.dumps(
        {
            "event_id": "delete-user-3",
            "user_id": gone,
            "event_type": "delete_user",
            "timestamp": "2026-03-02T00:00:00Z",
        }
    ).encode()
    send_raw(settings, [event_record(e) for e in events] + [(gone.encode(), deletion)])
    worker, metrics = start(settings, RiverMFLearner())
    try:
        wait_for(lambda: all_committed(settings), 60, "the deletion committed")
        vectors = read_topic(settings, settings.topics.user_vectors)
        mine = [r for r in vectors if r.key == gone.encode()]
        assert mine[-1].value is None, "the newest record of the user is a tombstone"
        assert gone not in latest_by_key([r for r in vectors if r.value is not None]) or (
            mine[-1].value is None
        )
        assert metrics.registry.get_sample_value("lorastream_users_deleted_total") == 1
    finally:
        worker.stop()
    newest = CheckpointStore(Path(str(settings.checkpoint.dir))).latest()
    assert newest is not None
    state = (newest.learner_dir / "state.json").read_text()
    assert f'"{gone}"' not in state, "no trace of the user in the next checkpoint"
    assert '"user-4"' in state


def test_pseudonymised_user_ids_never_leave_the_worker(
    make_settings: Callable[..., Settings],
) -> None:
    from stream.privacy import Pseudonymizer

    settings = make_settings(
        batch={"max_events": 64, "max_wait_s": 0.3}, privacy={"pseudonymize_key": "k3y"}
    )
    create_topic(settings, settings.topics.events)
    events = make_events(200, n_users=8)
    send_raw(settings, [event_record(e) for e in events])
    worker, _ = start(settings, RiverMFLearner())
    try:
        wait_for(lambda: all_committed(settings), 60, "the stream committed")
    finally:
        worker.stop()
    keys = {r.key.decode() for r in read_topic(settings, settings.topics.user_vectors)}
    pseudonym = Pseudonymizer("k3y")
    assert keys == {pseudonym(e.user_id) for e in events}
    newest = CheckpointStore(Path(str(settings.checkpoint.dir))).latest()
    assert newest is not None
    assert "user-" not in (newest.learner_dir / "state.json").read_text()
