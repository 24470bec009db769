"""Crash and shutdown behaviour of the real worker process (``lorastream run``) on real Kafka."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Sender,
    WorkerProcess,
    all_committed,
    committed_offsets,
    create_topic,
    event_record,
    latest_by_key,
    make_events,
    read_topic,
    send_raw,
    write_config,
)

from learners.ledger import EventLedger
from schemas.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def newest_manifest(checkpoints: Path) -> dict[str, Any] | None:
    found = sorted(checkpoints.glob("ckpt-*"))
    for path in reversed(found):
        try:
            return json.loads((path / "manifest.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            continue
    return None


def learned_in_checkpoint(checkpoints: Path) -> int:
    manifest = newest_manifest(checkpoints)
    return int(manifest["ledger"]["count"]) if manifest else 0


def test_sigterm_finishes_the_batch_commits_and_exits_zero(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        batch={"max_events": 50, "max_wait_s": 0.3},
        checkpoint={"every_events": 1000, "idle_s": 1.0},
    )
    create_topic(settings, settings.topics.events)
    events = make_events(2000, n_users=50)
    config = write_config(tmp_path / "worker.toml", settings)
    checkpoints = Path(str(settings.checkpoint.dir))
    worker = WorkerProcess(config, tmp_path / "run1.log")
    # produce only once the worker owns the partition, so that the stop lands mid-stream
    # however long the worker took to start
    worker.wait_for(lambda: "assigned" in worker.tail(), 60, "the worker to be assigned")
    producer = Sender(settings, [event_record(e) for e in events], rate=200)
    worker.wait_for(
        lambda: producer.check() and learned_in_checkpoint(checkpoints) > 0,
        60,
        "the worker to start learning",
    )
    time.sleep(1.0)
    code = worker.stop(signal.SIGTERM)  # raises when it has not stopped by SHUTDOWN_BOUND_S
    assert code == 0, worker.tail()
    manifest = newest_manifest(checkpoints)
    assert manifest is not None
    stopped_at = {p: o for _, p, o in manifest["offsets"]}
    assert 0 < manifest["ledger"]["count"] < len(events), "the stop must come mid-stream"
    assert {p: committed_offsets(settings).get(p, 0) for p in stopped_at} == stopped_at

    producer.finish(30)
    worker = WorkerProcess(config, tmp_path / "run2.log")
    try:
        worker.wait_for(lambda: all_committed(settings), 120, "the restarted worker to catch up")
    finally:
        assert worker.stop() == 0, worker.tail()
    final = newest_manifest(checkpoints)
    assert final is not None
    expected = EventLedger.expected(e.event_id for e in events)
    assert EventLedger.from_json(final["ledger"]) == expected, "no event lost, none twice"


# (learner, events, rate/s, checkpoint every, kill after this many checkpointed events)
KILL_CASES = [("river-mf", 3000, 400.0, 400, 1000), ("llm", 900, 60.0, 150, 300)]


@pytest.mark.parametrize(
    ("learner", "n_events", "rate", "every", "kill_after"),
    KILL_CASES,
    ids=[c[0] for c in KILL_CASES],
)
def test_kill_9_then_restart_loses_no_event(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    learner: str,
    n_events: int,
    rate: float,
    every: int,
    kill_after: int,
) -> None:
    settings = make_settings(
        batch={"max_events": 50, "max_wait_s": 0.3},
        checkpoint={"every_events": every, "every_s": 600.0, "idle_s": 1.0},
        learner={"kind": learner},
    )
    create_topic(settings, settings.topics.events)
    events = make_events(n_events, n_users=50)
    config = write_config(tmp_path / "worker.toml", settings)
    checkpoints = Path(str(settings.checkpoint.dir))
    producer = Sender(settings, [event_record(e) for e in events], rate=rate)

    worker = WorkerProcess(config, tmp_path / "run1.log")
    worker.wait_for(
        lambda: producer.check() and learned_in_checkpoint(checkpoints) >= kill_after,
        300,
        "a few checkpoints",
    )
    time.sleep(0.37)  # land between checkpoints
    worker.proc.kill()
    worker.proc.wait(10)
    killed_at = time.time()
    restored = newest_manifest(checkpoints)
    assert restored is not None
    assert restored["ledger"]["count"] < len(events), "the kill must come mid-stream"

    producer.finish(60)
    worker = WorkerProcess(config, tmp_path / "run2.log")
    try:
        worker.wait_for(lambda: all_committed(settings), 240, "the restarted worker to catch up")
    finally:
        assert worker.stop() == 0, worker.tail()
    assert f"resuming from checkpoint ckpt-{restored['sequence']:012d}" in worker.tail()

    # the restored state plus the re-applied events cover every event exactly once
    final = newest_manifest(checkpoints)
    assert final is not None
    expected = EventLedger.expected(e.event_id for e in events)
    assert EventLedger.from_json(final["ledger"]) == expected

    # every user's final vector reflects their last event
    records = read_topic(settings, settings.topics.user_vectors)
    last_event = {e.user_id: e.event_id for e in events}
    vectors = latest_by_key(records)
    assert {u: v["last_event_id"] for u, v in vectors.items()} == last_event

    # how many events the first run had learned (and published) after its last checkpoint
    restored_at = {p: o for _, p, o in restored["offsets"]}
    reached: dict[int, int] = {}
    for r in records:
        if r.timestamp / 1000 <= killed_at:
            pos = json.loads(r.value)["last_position"]
            reached[pos["partition"]] = max(reached.get(pos["partition"], 0), pos["offset"] + 1)
    reapplied = sum(max(0, o - restored_at.get(p, 0)) for p, o in reached.items())
    print(
        f"\n{learner}: kill -9 after {restored['ledger']['count']} checkpointed events;"
        f" {reapplied} events learned after that checkpoint were re-applied on restart"
    )
    # a checkpoint is due every `every` events and taken after the batch that crosses it
    assert reapplied <= every + settings.batch.max_events


def test_a_partition_added_after_a_restart_is_read(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A restarted static member rejoins as a follower, which kafka-python does not let
    watch the topic's metadata: the worker itself must notice the new partition."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewPartitions

    settings = make_settings(batch={"max_events": 50, "max_wait_s": 0.3})
    create_topic(settings, settings.topics.events, partitions=1)
    send_raw(settings, [event_record(e) for e in make_events(100, n_users=10)])
    config = write_config(tmp_path / "w.toml", settings)
    first = WorkerProcess(config, tmp_path / "first.log")
    first.wait_for(lambda: all_committed(settings), 120, "the first events committed")
    first.proc.kill()
    first.proc.wait(30)
    worker = WorkerProcess(config, tmp_path / "restarted.log")
    worker.wait_for(lambda: "assigned ['" in worker.log.read_text(), 120, "the assignment")
    admin = KafkaAdminClient(**settings.kafka.client_kwargs())
    try:
        admin.create_partitions({settings.topics.events: NewPartitions(total_count=2)})
    finally:
        admin.close()
    send_raw(settings, [event_record(e) for e in make_events(200, n_users=10, seed=3)])
    worker.wait_for(
        lambda: 1 in committed_offsets(settings) and all_committed(settings),
        120,  # the client's metadata is at most 30 s old
        "the new partition's events committed",
    )
    assert worker.stop() == 0, worker.tail()
