"""Fault injection: kill -9, a broker outage, hostile records, damaged checkpoints, bad disks.

Every scenario runs real ``lorastream run`` processes (river-mf, default drift settings)
against a real broker and ends with the same two checks: the newest checkpoint's ledger
holds every valid event exactly once (``events_lost`` 0), and no worker died in a way
nobody asked for (``worker_crashes`` 0). Exits on purpose — a disk that refuses
checkpoints (exit 4), damaged checkpoints without an operator's consent (exit 2) — are
counted as ``worker_exits_on_fault``.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Sender,
    all_committed,
    event_record,
    make_events,
    read_topic,
    send_raw,
    wait_for,
)
from kafka import KafkaProducer
from reliability.faults import (
    Run,
    Scale,
    Tally,
    create_events_topic,
    newest_manifest,
    settings_for,
)
from reliability.hostile import KINDS, hostile_record

from deploy.kafka import LocalKafka
from learners.ledger import EventLedger
from schemas.dead_letter import DeadLetter
from schemas.events import InteractionEvent
from schemas.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.reliability]


def send(settings: Settings, events: list[InteractionEvent], rate: float | None = None) -> None:
    """Send ``events`` (at ``rate`` per second) and wait until the broker acknowledged each."""
    send_raw(settings, [event_record(e) for e in events], rate)


def ledger_check(root: Path, events: list[InteractionEvent]) -> tuple[int, int]:
    """(events learned, events lost) by the newest checkpoint's ledger."""
    manifest = newest_manifest(root)
    assert manifest is not None
    final = EventLedger.from_json(manifest["ledger"])
    expected = EventLedger.expected(dict.fromkeys(e.event_id for e in events))
    lost = 0 if final == expected else max(1, expected.count - final.count)
    return final.count, lost


def newest_sequence(root: Path) -> int:
    """The newest checkpoint's sequence number (0: none yet)."""
    names = [p.name for p in (root / "checkpoints").glob("ckpt-*")]
    return max((int(n.split("-")[1]) for n in names), default=0)


def learned_in_checkpoint(root: Path) -> int:
    manifest = newest_manifest(root)
    return int(manifest["ledger"]["count"]) if manifest else 0


def unsaved(run: Run, restored: int, root: Path) -> float:
    """Events the running worker learned that its newest checkpoint does not hold."""
    return restored + run.metric("lorastream_events_learned_total") - learned_in_checkpoint(root)


def durable_offsets(root: Path) -> dict[int, int]:
    manifest = newest_manifest(root)
    return {p: o for _, p, o in manifest["offsets"]} if manifest else {}


def reached_before(settings: Settings, since: float, until: float) -> dict[int, int]:
    """Per partition, the offset after the newest event a run published a vector for."""
    reached: dict[int, int] = {}
    for r in read_topic(settings, settings.topics.user_vectors, idle_s=1.0):
        if since * 1000 <= r.timestamp <= until * 1000 and r.value is not None:
            pos = json.loads(r.value).get("last_position")
            if pos:
                p = pos["partition"]
                reached[p] = max(reached.get(p, 0), pos["offset"] + 1)
    return reached


# -- kill -9 ------------------------------------------------------------------------------


def test_kill_9_three_times_loses_nothing(
    broker: LocalKafka, scale: Scale, tally: Tally, tmp_path: Path
) -> None:
    """Kills before assignment, right after a checkpoint, and between two checkpoints."""
    settings = settings_for(broker, tmp_path, scale)
    create_events_topic(settings)
    events = make_events(scale.kill_events, n_users=300, n_items=500)
    rate = 2000.0 if scale.full else 500.0  # the kills land while events still arrive
    producing = Sender(settings, [event_record(e) for e in events], rate=rate)
    crashes, reapplied, resume, bound = 0, [], 0.0, scale.every_events + scale.batch

    # 1: before the worker has its partitions
    run = Run(settings, tmp_path, "run1")
    wait_for(lambda: "from a fresh learner" in run.log, 60, "the fresh learner", 0.005)
    run.kill()
    assert "assigned [" not in run.log, "the first kill must come before assignment"

    # 2: right after a checkpoint; 3: between two
    for name, right_after in (("run2", True), ("run3", False)):
        # what the run restores: it can only add checkpoints (a fresh run writes its state
        # as the first one at its first batch, which may come before the test reads the log)
        restored, before, since = (
            learned_in_checkpoint(tmp_path),
            newest_sequence(tmp_path),
            time.time(),
        )
        run = Run(settings, tmp_path, name)
        resume += run.seconds_to_assignment()
        run.process.wait_for(
            lambda b=before: producing.check() and newest_sequence(tmp_path) > b,
            180,
            f"{name}: a checkpoint",
            0.01,
        )
        if not right_after:  # a third to two thirds of the way to the next checkpoint
            target = random.Random(3).uniform(0.33, 0.67) * scale.every_events
            run.process.wait_for(
                lambda r=run, n=restored, t=target: (
                    producing.check() and unsaved(r, n, tmp_path) >= t
                ),
                180,
                f"{name}: work since the checkpoint",
                0.01,
            )
        killed_at = run.kill()
        crashes += run.crashed(run.process.proc.returncode, {-9})
        durable = durable_offsets(tmp_path)
        reached = reached_before(settings, since, killed_at)
        reapplied.append(sum(max(0, o - durable.get(p, 0)) for p, o in reached.items()))

    producing.finish(300)
    run = Run(settings, tmp_path, "final")
    resume += run.seconds_to_assignment()
    run.process.wait_for(lambda: all_committed(settings), 600, "the restarted worker to catch up")
    code = run.stop()
    crashes += run.crashed(code, {0})
    learned, lost = ledger_check(tmp_path, events)
    tally.add(
        "kill -9 x3",
        kills=3,
        events_sent=len(events),
        events_learned=learned,
        events_lost=lost,
        events_reapplied=sum(reapplied),
        worker_crashes=crashes,
        seconds_to_resume=resume,
    )
    assert lost == 0
    assert crashes == 0
    assert all(r <= bound for r in reapplied), (reapplied, bound)
    assert reapplied[1] > 0, "the third kill came between checkpoints: some work is redone"
    assert reapplied[0] <= 2 * scale.batch, "killed right after a checkpoint: little to redo"


# -- broker outage ---------------------------------------------------------------------------


def test_a_broker_outage_fails_readiness_and_loses_nothing(
    broker: LocalKafka, scale: Scale, tally: Tally, tmp_path: Path
) -> None:
    settings = settings_for(broker, tmp_path, scale)
    create_events_topic(settings)
    events = make_events(scale.outage_events, n_users=100, n_items=300, seed=5)
    half = len(events) // 2
    run = Run(settings, tmp_path, "run")
    run.seconds_to_assignment()
    send(settings, events[:half])
    wait_for(lambda: all_committed(settings), 120, "the first half committed")
    assert run.status("/readyz") == 200

    broker.halt()
    wait_for(lambda: run.status("/readyz") == 503, 90, "readiness to fail without a broker")
    assert run.status("/healthz") == 200, "the worker itself is alive"
    assert run.metric("lorastream_broker_connected") == 0.0
    broker.start()
    wait_for(lambda: run.status("/readyz") == 200, 120, "readiness once the broker is back")
    send(settings, events[half:])
    wait_for(lambda: all_committed(settings), 180, "the second half committed")
    assert "lost contact with the Kafka group coordinator" in run.log
    code = run.stop()
    learned, lost = ledger_check(tmp_path, events)
    crashes = int(run.crashed(code, {0}))
    tally.add(
        "broker stop/start",
        broker_restarts=1,
        events_sent=len(events),
        events_learned=learned,
        events_lost=lost,
        worker_crashes=crashes,
    )
    assert lost == 0
    assert crashes == 0


# -- hostile records -------------------------------------------------------------------------


def test_every_hostile_record_is_dead_lettered_with_its_reason(
    broker: LocalKafka, scale: Scale, tally: Tally, tmp_path: Path
) -> None:
    settings = settings_for(broker, tmp_path, scale, batch={"max_bytes": 16 * 2**20})
    create_events_topic(settings)
    valid = make_events(scale.valid_with_hostile, n_users=200, n_items=400, seed=7)
    seeds = make_events(scale.hostile, n_users=200, n_items=400, seed=8)
    rng = random.Random(11)
    duplicates = rng.sample(valid, k=len(valid) // 20)
    plan: list[tuple[str, Any]] = [("valid", e) for e in valid + duplicates]
    plan += [("hostile", (KINDS[i % len(KINDS)], e, i)) for i, e in enumerate(seeds)]
    rng.shuffle(plan)
    expected_code: dict[tuple[int, int], str] = {}
    p = KafkaProducer(
        **settings.kafka.client_kwargs(), acks="all", linger_ms=20, max_request_size=2**21
    )
    try:
        futures = []
        for what, item in plan:
            if what == "valid":
                record = (item.user_id.encode(), item.model_dump_json().encode(), [])
            else:
                record = hostile_record(*item)
            future = p.send(
                settings.topics.events, key=record[0], value=record[1], headers=record[2]
            )
            futures.append((future, item[0].code if what == "hostile" else None))
        p.flush()
        for future, code in futures:
            meta = future.get(60)
            if code is not None:
                expected_code[(meta.partition, meta.offset)] = code
    finally:
        p.close()

    run = Run(settings, tmp_path, "run")
    wait_for(lambda: all_committed(settings), 900, "every record processed")
    duplicate_count = run.metric("lorastream_events_duplicate_total")
    code = run.stop()
    letters = read_topic(settings, settings.topics.dead_letters, expect=len(expected_code))
    got = {}
    for record in letters:
        letter = DeadLetter.model_validate_json(record.value)
        assert letter.reason
        got[(letter.source.partition, letter.source.offset)] = letter.code.value
    learned, lost = ledger_check(tmp_path, valid)
    crashes = int(run.crashed(code, {0}))
    tally.add(
        "hostile records",
        hostile_records=len(expected_code),
        events_sent=len(valid),
        events_learned=learned,
        events_lost=lost,
        worker_crashes=crashes,
    )
    tally.notes.append(
        f"hostile records: {len(KINDS)} kinds, {len(expected_code)} records;"
        f" {len(duplicates)} duplicate sends dropped by event id"
    )
    mismatched = {k: (v, got.get(k)) for k, v in expected_code.items() if got.get(k) != v}
    assert not mismatched, list(mismatched.items())[:10]
    assert len(got) == len(expected_code), "nothing valid was dead-lettered"
    assert duplicate_count == len(duplicates)
    assert lost == 0
    assert crashes == 0


# -- damaged checkpoints ---------------------------------------------------------------------


def damage(path: Path, how: str) -> None:
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if how == "files-missing":
        manifest.pop("files")
    elif how == "offsets-edited":
        manifest["offsets"] = [[t, p, o + 100] for t, p, o in manifest["offsets"]]
    else:
        manifest = {}
    manifest_path.write_text(json.dumps(manifest))


def test_damaged_checkpoints_are_quarantined_and_never_cost_an_event(
    broker: LocalKafka, scale: Scale, tally: Tally, tmp_path: Path
) -> None:
    # checkpoints only when idle or stopping: damage then sends the worker back to the
    # fresh state's first checkpoint, the hardest case
    settings = settings_for(broker, tmp_path, scale, checkpoint={"keep": 3, "every_events": 10**6})
    create_events_topic(settings)
    rounds = [make_events(1500, n_users=100, n_items=300, seed=20 + k) for k in range(4)]
    sent: list[InteractionEvent] = []
    crashes, resume = 0, 0.0

    def one_round(k: int) -> None:
        nonlocal crashes, resume
        send(settings, rounds[k])
        sent.extend(rounds[k])
        run = Run(settings, tmp_path, f"round{k}")
        resume += run.seconds_to_assignment()
        wait_for(lambda: all_committed(settings), 180, "the round committed")
        crashes += run.crashed(run.stop(), {0})

    def newest() -> Path:
        return sorted((tmp_path / "checkpoints").glob("ckpt-*"))[-1]

    one_round(0)
    damage(newest(), "files-missing")  # valid JSON, no file list
    one_round(1)  # falls back to the previous checkpoint and re-learns from its offsets
    damage(newest(), "offsets-edited")  # 100 added by hand: the digest no longer matches
    one_round(2)
    # every checkpoint damaged: the worker refuses, names the flag, keeps them aside
    intact = newest()
    shutil.copytree(intact, tmp_path / "backup")
    damaged = 2  # the two above
    for path in (tmp_path / "checkpoints").glob("ckpt-*"):
        damage(path, "empty")
        damaged += 1
    refused = Run(settings, tmp_path, "refused")
    code = refused.process.proc.wait(120)
    assert code == 2, refused.log
    assert "--allow-fresh-start" in refused.log
    crashes += refused.crashed(code, {2})
    # the operator puts an intact checkpoint back, as the message says
    shutil.copytree(tmp_path / "backup", tmp_path / "checkpoints" / intact.name)
    one_round(3)
    quarantined = list((tmp_path / "checkpoints").glob("quarantine-*"))
    learned, lost = ledger_check(tmp_path, sent)
    tally.add(
        "damaged checkpoints",
        events_sent=len(sent),
        events_learned=learned,
        events_lost=lost,
        worker_crashes=crashes,
        worker_exits_on_fault=1,
        seconds_to_resume=resume,
    )
    assert len(quarantined) == damaged, "every damaged checkpoint is kept for a person to see"
    assert lost == 0
    assert crashes == 0


# -- read-only and full disks ------------------------------------------------------------------


def mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_a_disk_that_refuses_checkpoints_stops_the_worker_and_loses_nothing(
    broker: LocalKafka, scale: Scale, tally: Tally, tmp_path: Path, fault: str
) -> None:
    disk = tmp_path / "checkpoints"
    mount_tmpfs(disk, "64m")
    try:
        settings = settings_for(broker, tmp_path, scale, checkpoint={"keep": 1})
        create_events_topic(settings)
        first = make_events(1500, n_users=100, n_items=300, seed=30)
        second = make_events(1500, n_users=100, n_items=300, seed=31)
        send(settings, first)
        run = Run(settings, tmp_path, "run")
        wait_for(lambda: all_committed(settings), 180, "the first round committed")
        durable = durable_offsets(tmp_path)
        if fault == "read-only":
            remount(disk, "ro")
        else:
            filler = disk / "filler"
            subprocess.run(
                ["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=64"],
                capture_output=True,
                check=False,
            )
        send(settings, second)
        code = run.process.proc.wait(180)
        assert code == 4, run.log
        assert f"cannot write a checkpoint under {disk}" in run.log
        assert durable_offsets(tmp_path) == durable
        from helpers import committed_offsets

        assert committed_offsets(settings) == durable, "nothing past the checkpoint committed"
        # the operator frees the disk; the worker resumes and catches up
        if fault == "read-only":
            remount(disk, "rw")
        else:
            filler.unlink()
        run2 = Run(settings, tmp_path, "after")
        resume = run2.seconds_to_assignment()
        wait_for(lambda: all_committed(settings), 180, "the second round committed")
        crashes = int(run2.crashed(run2.stop(), {0})) + run.crashed(code, {4})
        learned, lost = ledger_check(tmp_path, first + second)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    tally.add(
        f"{fault} disk",
        events_sent=len(first) + len(second),
        events_learned=learned,
        events_lost=lost,
        worker_crashes=crashes,
        worker_exits_on_fault=1,
        seconds_to_resume=resume,
    )
    assert lost == 0
    assert crashes == 0


# -- a late delivery ---------------------------------------------------------------------------


def test_a_delivery_waiting_for_a_stopped_broker_keeps_reporting_and_then_fails(
    broker: LocalKafka, scale: Scale, tmp_path: Path
) -> None:
    """While acknowledgements are late the publisher calls back every WAIT_SLICE_S (the
    worker updates readiness there), and at its deadline it raises, sending nothing twice."""
    from stream.clients import close_producer, ensure_output_topics, make_admin, make_producer
    from stream.publisher import WAIT_SLICE_S, DeliveryError, Publisher

    settings = settings_for(broker, tmp_path, scale)
    admin = make_admin(settings)
    try:
        ensure_output_topics(admin, settings)
    finally:
        admin.close()
    waits: list[float] = []
    producer = make_producer(settings)
    publisher = Publisher(producer, settings.topics, "t", lambda: waits.append(1))
    publisher.tombstones(["warm-up"])  # the producer learns the topic's leaders first
    publisher.deliver(30)
    broker.halt()
    try:
        publisher.tombstones(["u-1", "u-2"])
        with pytest.raises(DeliveryError, match="not acknowledged within 5s"):
            publisher.deliver(5.0)
        assert len(waits) >= int(5.0 / WAIT_SLICE_S)
    finally:
        # the broker still down: closing drops what is undelivered instead of raising, and
        # stops the client's sender thread
        close_producer(producer, 1.0)
        sender_alive = producer._sender.is_alive()
        broker.start()
    assert not sender_alive
