"""The stream worker against the real local Kafka broker: a clean run with bad records mixed in."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import pytest
from helpers import (
    WorkerThread,
    all_committed,
    announced_versions,
    committed_offsets,
    create_topic,
    end_offsets,
    event_record,
    latest_by_key,
    make_events,
    read_topic,
    send_raw,
    wait_for,
)

from learners.ledger import EventLedger
from learners.llm import LLMLearner
from learners.registry import build_learner
from learners.river_mf import RiverMFLearner
from schemas.dead_letter import HEADER_PREFIX, DeadLetter
from schemas.settings import Settings
from stream.metrics import WorkerMetrics
from stream.worker import Worker

pytestmark = pytest.mark.kafka


def invalid_records(n: int) -> list[tuple[bytes | None, bytes, str]]:
    """``n`` bad records of every kind: (key, value, expected reject code)."""
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    good = {
        "event_id": "x",
        "user_id": "user-1",
        "item_id": "item-1",
        "event_type": "click",
        "timestamp": "2026-03-01T00:00:00Z",
    }
    kinds: list[tuple[bytes, str]] = [
        (b'{"event_id": "broken', "malformed_json"),
        (b"\xff\xfe not utf-8", "not_utf8"),
        (json.dumps({**good, "event_type": "teleport"}).encode(), "unknown_event_type"),
        (json.dumps({**good, "event_type": "rating", "value": 9}).encode(), "schema_violation"),
        (json.dumps({**good, "surprise": 1}).encode(), "schema_violation"),
        (
            json.dumps({k: v for k, v in good.items() if k != "user_id"}).encode(),
            "schema_violation",
        ),
        (json.dumps({**good, "timestamp": future}).encode(), "future_timestamp"),
        (json.dumps({**good, "review_text": "x" * 70_000}).encode(), "oversize"),
        (
            b'{"event_id": "n", "user_id": "u", "item_id": "i", "event_type": "view",'
            b' "value": NaN, "timestamp": "2026-03-01T00:00:00Z"}',
            "schema_violation",
        ),
        (b"[1, 2, 3]", "schema_violation"),
    ]
    return [
        (f"bad-{i}".encode(), kinds[i % len(kinds)][0], kinds[i % len(kinds)][1]) for i in range(n)
    ]


def test_clean_run_learns_every_valid_event_once_and_dead_letters_the_rest(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        batch={"max_events": 64, "max_wait_s": 0.3}, checkpoint={"idle_s": 0.5, "every_events": 500}
    )
    create_topic(settings, settings.topics.events)
    events = make_events(2000, n_users=50)
    bad = invalid_records(100)
    # interleave: a bad record after every 20 good ones
    records: list[tuple[bytes | None, bytes | None]] = []
    for i, event in enumerate(events):
        records.append(event_record(event))
        if i % 20 == 19:
            key, value, _ = bad[i // 20]
            records.append((key, value))
    send_raw(settings, records)

    learner = RiverMFLearner(settings.learner.river_mf)
    worker = Worker(settings, learner, WorkerMetrics(process=False))
    running = WorkerThread(worker)
    try:
        ends = end_offsets(settings, settings.topics.events)
        wait_for(
            lambda: committed_offsets(settings) == ends,
            120,
            "committed offsets to reach the end offsets",
        )  # every partition has records
        # every valid event learned exactly once
        assert learner.ledger == EventLedger.expected(e.event_id for e in events)
        # every user's newest vector reflects their last event
        last_event = {e.user_id: e.event_id for e in events}
        vectors = latest_by_key(read_topic(settings, settings.topics.user_vectors))
        assert set(vectors) == set(last_event)
        assert {u: v["last_event_id"] for u, v in vectors.items()} == last_event
        # exactly the bad records as dead letters, with reasons, sources and original bytes
        letters = read_topic(settings, settings.topics.dead_letters, expect=100)
        assert len(letters) == 100
        by_key = {k: (v, code) for k, v, code in bad}
        for record in letters:
            letter = DeadLetter.model_validate_json(record.value)
            value, code = by_key[record.key]
            assert letter.code.value == code
            assert letter.original_value == value
            assert letter.reason
            assert letter.source.topic == settings.topics.events
            headers = dict(record.headers)
            assert headers[HEADER_PREFIX + "code"] == code.encode()
            assert int(headers[HEADER_PREFIX + "offset"]) == letter.source.offset
            assert base64.b64decode(json.loads(record.value)["original_value"]) == value
        assert running.thread.is_alive(), "the worker must still be running"
    finally:
        running.stop(30)
    assert not running.thread.is_alive()


def test_duplicate_event_ids_are_learned_once(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(
        batch={"max_events": 16, "max_wait_s": 0.2}, checkpoint={"idle_s": 0.3}
    )
    create_topic(settings, settings.topics.events)
    events = make_events(100, n_users=5)
    records = [event_record(e) for e in events]
    send_raw(settings, records + records[:30])  # a producer retried 30 events
    learner = RiverMFLearner()
    worker = Worker(settings, learner, WorkerMetrics(process=False))
    running = WorkerThread(worker)
    try:
        wait_for(lambda: all_committed(settings), 60, "all records committed")
        assert learner.ledger == EventLedger.expected(e.event_id for e in events)
    finally:
        running.stop(30)


def test_a_starting_worker_joins_once_and_reads_each_record_once(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """The first join waits for the group's view of the topic: a join before it rebalances
    at once, and everything read meanwhile is read again."""
    caplog.set_level(logging.INFO, logger="stream.rebalance")
    settings = make_settings(batch={"max_events": 500, "max_wait_s": 0.3})
    create_topic(settings, settings.topics.events)
    events = make_events(300, n_users=20)
    send_raw(settings, [event_record(e) for e in events])
    learner = RiverMFLearner()
    worker = Worker(settings, learner, WorkerMetrics(process=False))
    running = WorkerThread(worker)
    try:
        wait_for(lambda: all_committed(settings), 60, "the stream learned and committed")
        assignments = [r for r in caplog.records if r.getMessage().startswith("assigned ")]
        assert len(assignments) == 1, [r.getMessage() for r in assignments]
        assert worker.records_seen == len(events), "each record read once"
        assert learner.ledger == EventLedger.expected(e.event_id for e in events)
    finally:
        running.stop(30)


def test_a_caught_up_batch_closes_without_waiting_out_max_wait(
    make_settings: Callable[..., Settings],
) -> None:
    # max_wait_s is an hour: only "everything there was to read is in the batch" closes it
    settings = make_settings(
        batch={"max_events": 1000, "max_wait_s": 3600.0, "close_when_caught_up": True},
        checkpoint={"idle_s": 0.3},
    )
    create_topic(settings, settings.topics.events)
    events = make_events(40, n_users=5)
    learner = RiverMFLearner()
    worker = Worker(settings, learner, WorkerMetrics(process=False))
    running = WorkerThread(worker)
    try:
        send_raw(settings, [event_record(e) for e in events])
        wait_for(lambda: all_committed(settings), 120, "the 40 events learned and committed")
        assert learner.ledger == EventLedger.expected(e.event_id for e in events)
    finally:
        running.stop(30)


def test_a_batch_closed_early_republishes_its_share_of_stale_vectors(
    make_settings: Callable[..., Settings],
) -> None:
    """Besides its own, a full batch re-publishes ``*_refresh_per_batch`` stale vectors; a
    batch of 4 where 64 make it full, 4 of 64: re-publishing follows the events learned."""
    settings = make_settings(
        batch={"max_events": 64, "max_wait_s": 0.2},
        checkpoint={"idle_s": 0.3},
        topics={"item_refresh_per_batch": 64, "user_refresh_per_batch": 64, "refresh_when_idle": 0},
    )
    create_topic(settings, settings.topics.events)
    events = make_events(128, n_users=20, n_items=60)
    late = [e.model_copy(update={"user_id": "user-0", "item_id": "item-0"}) for e in events[:4]]
    late = [e.model_copy(update={"event_id": f"late-{k}"}) for k, e in enumerate(late)]
    worker = Worker(settings, RiverMFLearner(), WorkerMetrics(process=False))
    running = WorkerThread(worker)
    topics = (settings.topics.user_vectors, settings.topics.item_vectors)

    def batches() -> float:
        value = worker.metrics.registry.get_sample_value("lorastream_batch_size_events_count")
        return value or 0.0

    try:
        send_raw(settings, [event_record(e) for e in events])
        wait_for(lambda: all_committed(settings), 120, "the first 128 events committed")
        before, batches_before = [end_offsets(settings, t) for t in topics], batches()
        send_raw(settings, [event_record(e) for e in late])
        wait_for(lambda: all_committed(settings), 120, "the 4 late events committed")
        after, batches_after = [end_offsets(settings, t) for t in topics], batches()
    finally:
        running.stop(30)
    users, items = (sum(a.values()) - sum(b.values()) for a, b in zip(after, before, strict=True))
    n = int(batches_after - batches_before)  # one batch, unless a poll split the four
    # each batch: its own user and item, and its share of 64 stale ones (k of 4 events: k)
    assert (users, items) == (n + 4, n + 4)


@pytest.mark.parametrize("kind", ["river-mf", "llm"])
def test_a_version_is_announced_once_every_published_vector_is_of_it(
    make_settings: Callable[..., Settings], kind: str
) -> None:
    """Announced only once every vector on the topics is of the version and, for the LLM
    learner, built from item encodings of that model: caught up while idle, the catalog
    re-published (its vectors on the topic are the learner's own)."""
    from schemas.vector_wire import decode_vector

    prefix = make_settings().topics.events.removesuffix(".events")
    settings = make_settings(
        batch={"max_events": 32, "max_wait_s": 0.2},
        checkpoint={"idle_s": 0.3},
        topics={"vector_versions": f"{prefix}.vector-versions"},
        # no per-step cache refresh: every item the last steps did not train is behind
        learner={"kind": kind, "llm": {"cache_refresh_per_step": 0}},
    )
    assert settings.topics.vector_versions is not None
    create_topic(settings, settings.topics.events)
    events = make_events(200, n_users=8, n_items=40)
    learner = build_learner(settings.learner)
    worker = Worker(settings, learner, WorkerMetrics(process=False))
    running = WorkerThread(worker)
    try:
        send_raw(settings, [event_record(e) for e in events])
        wait_for(lambda: all_committed(settings), 180, "all records committed")

        wait_for(
            lambda: learner.version in announced_versions(settings),
            90,
            "the final version announced",
        )
        sample = worker.metrics.registry.get_sample_value
        assert sample("lorastream_vectors_behind_updates", {"kind": "user"}) == 0
        assert sample("lorastream_item_encodings_behind") == 0
        assert learner.catch_up(0).behind == 0
        annealed = learner.lr_annealing
        assert sample("lorastream_learning_rate_annealing") == pytest.approx(annealed)
        assert kind == "river-mf" or 0.2 < annealed < 1.0  # 200 events of a 750 half-life
        if kind == "river-mf":  # no mix to show: the gauge stays unset rather than 0
            assert sample("lorastream_score_mix", {"part": "knn"}) is None
        else:  # the mix the learner serves now, as its report gives it
            mix = cast(LLMLearner, learner).mix
            assert sample("lorastream_score_mix", {"part": "knn"}) == mix.knn
            assert sample("lorastream_score_mix", {"part": "towers"}) == mix.towers
    finally:
        running.stop(30)
    newest: dict[bytes, dict[str, Any]] = {}
    for topic in (settings.topics.user_vectors, settings.topics.item_vectors):
        for r in read_topic(settings, topic, idle_s=1.0):
            newest[r.key] = decode_vector(r.value)
    assert len(newest) == len({e.user_id for e in events} | {e.item_id for e in events})
    assert {doc["model_version"] for doc in newest.values()} == {learner.version}
    items = learner.item_vectors(learner.known_items())
    served = np.array([newest[i.encode()]["vector"] for i in items.ids])
    np.testing.assert_allclose(served, items.vectors, atol=1e-5)


@pytest.mark.parametrize(
    ("kind", "mode", "overlaps"),
    [
        ("llm", "auto", True),
        ("river-mf", "auto", False),
        ("river-mf", "on", True),
        ("llm", "off", False),
    ],
)
def test_delivery_overlaps_learning_where_it_pays(
    make_settings: Callable[..., Settings], kind: str, mode: str, overlaps: bool
) -> None:
    """auto: on for the LLM learner (its step leaves the CPU to the producer), off for
    cheap learners (benchmarks/README.md: they lose 4-12 % with it)."""
    settings = make_settings(learner={"kind": kind}, worker={"overlap_delivery": mode})
    assert Worker(settings, RiverMFLearner()).overlaps_delivery is overlaps


def test_missing_events_topic_is_a_clear_error(make_settings: Callable[..., Settings]) -> None:
    from stream.clients import MissingTopic

    settings = make_settings()
    worker = Worker(settings, RiverMFLearner(), WorkerMetrics(process=False))
    with pytest.raises(MissingTopic, match="does not exist"):
        worker.run()


class SlowLearner(RiverMFLearner):
    """River MF whose every update takes longer than the idle interval."""

    def learn_many(self, *args: object, **kwargs: object) -> object:
        time.sleep(0.6)
        return super().learn_many(*args, **kwargs)  # type: ignore[arg-type]


def test_a_slow_update_is_not_an_idle_stream(make_settings: Callable[..., Settings]) -> None:
    """Idle checkpoints wait for a quiet stream, not for a step longer than ``idle_s``."""
    settings = make_settings(
        batch={"max_events": 32, "max_wait_s": 0.2},
        checkpoint={"idle_s": 0.3, "every_events": 100_000, "every_s": 600.0},
    )
    create_topic(settings, settings.topics.events)
    events = make_events(320, n_users=20)
    send_raw(settings, [event_record(e) for e in events])  # 10 batches, all there at the start
    metrics = WorkerMetrics(process=False)
    worker = Worker(settings, SlowLearner(settings.learner.river_mf), metrics)
    running = WorkerThread(worker)
    try:
        ends = end_offsets(settings, settings.topics.events)
        wait_for(lambda: committed_offsets(settings) == ends, 120, "the idle checkpoint")
        checkpoints = metrics.registry.get_sample_value(
            "lorastream_checkpoints_total", {"result": "ok"}
        )
        # the fresh learner's first checkpoint, then one once the stream went quiet
        assert checkpoints == 2, "no checkpoint mid-stream"
    finally:
        running.stop(30)


def _pause(consumer: Any, tp: Any) -> None:
    consumer.pause(tp)  # public, though the worker never pauses


def _validation_never_allowed(consumer: Any, tp: Any) -> None:
    # the client's private state as kafka-python 3.0 left it in #3106: awaiting a
    # validation that it will not retry for an hour, so the partition is never fetched
    state = consumer._subscription.assignment[tp]
    state._awaiting_validation = True
    state.next_allowed_retry_time = time.monotonic() + 3600


@pytest.mark.parametrize(
    ("stop_fetching", "state"),
    [(_pause, "paused=True"), (_validation_never_allowed, "awaiting_validation=True")],
    ids=["paused", "awaiting-validation"],
)
def test_a_partition_the_client_stops_fetching_is_sought_again_and_read(
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
    stop_fetching: Callable[[Any, Any], None],
    state: str,
) -> None:
    """kafka-python was seen to stop fetching an assigned partition for good; here the
    client is made to. The worker names the partition with the client's state, counts it,
    seeks it where it stands, and every record is read once."""
    from kafka import TopicPartition

    settings = make_settings(consumer={"stall_s": 1.0}, batch={"max_wait_s": 0.2})
    create_topic(settings, settings.topics.events, partitions=2)
    metrics = WorkerMetrics(process=False)
    worker = Worker(settings, RiverMFLearner(), metrics)
    running = WorkerThread(worker)
    try:
        wait_for(
            lambda: len(worker.book.assigned()) == 2 and not worker.book.unplaced(),
            60,
            "both partitions assigned and placed",
        )
        assert worker._consumer is not None
        stuck = TopicPartition(settings.topics.events, 1)
        stop_fetching(worker._consumer, stuck)
        events = make_events(200, n_users=20)
        send_raw(settings, [event_record(e) for e in events])
        wait_for(lambda: all_committed(settings), 60, "every event, the stuck partition's too")
        stalls = metrics.registry.get_sample_value(
            "lorastream_partition_stalls_total",
            {"topic": settings.topics.events, "partition": "1"},
        )
        assert (stalls or 0) >= 1, "the stall is counted"
        assert not metrics.registry.get_sample_value(
            "lorastream_partition_stalls_total",
            {"topic": settings.topics.events, "partition": "0"},
        ), "a partition that reads is never called stalled"
        lines = [r.getMessage() for r in caplog.records if "returned no record" in r.getMessage()]
        assert lines, "the stall is logged"
        assert f"{settings.topics.events}[1]" in lines[0], "the partition is named"
        assert state in lines[0], "with the client's own state"
        assert "Seeking it again at" in lines[0]
    finally:
        running.stop(30)
    assert worker.records_seen == len(events), "no record read twice"
    assert worker.events_learned == len(events)


def test_an_idle_partition_is_never_called_stalled(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(consumer={"stall_s": 0.5}, batch={"max_wait_s": 0.2})
    create_topic(settings, settings.topics.events, partitions=2)
    send_raw(settings, [event_record(e) for e in make_events(40, n_users=5)])
    metrics = WorkerMetrics(process=False)
    worker = Worker(settings, RiverMFLearner(), metrics)
    running = WorkerThread(worker)
    try:
        wait_for(lambda: all_committed(settings), 60, "the events read")
        time.sleep(3.0)  # six stall periods with nothing left to read
    finally:
        running.stop(30)
    assert not [r for r in caplog.records if "returned no record" in r.getMessage()]


def test_behind_a_damaged_checkpoint_a_partition_is_placed_at_its_start_not_where_polled(
    make_settings: Callable[..., Settings],
) -> None:
    """Restored behind a damaged checkpoint, a partition the state has no position in may
    have been committed past what the state learned: even when a poll already returned its
    records from there, it begins at its earliest offset, and those records are read again."""
    from kafka import KafkaConsumer, TopicPartition

    settings = make_settings()
    create_topic(settings, settings.topics.events, partitions=1)
    send_raw(settings, [event_record(e) for e in make_events(20, n_users=4)])
    tp = TopicPartition(settings.topics.events, 0)
    consumer = KafkaConsumer(**settings.kafka.client_kwargs(), enable_auto_commit=False)
    try:
        consumer.assign([tp])
        consumer.seek(tp, 12)  # where a damaged checkpoint's commit would start it
        polled: dict[Any, list[Any]] = {}
        wait_for(lambda: bool(polled.update(consumer.poll(timeout_ms=500)) or polled), 30, "a poll")
        assert polled[tp][0].offset == 12
        worker = Worker(settings, RiverMFLearner(), WorkerMetrics(process=False))
        worker.book.assign([(tp.topic, tp.partition)])
        worker.durable.from_earliest = True
        worker._place(consumer, polled)
        assert worker.book.processed() == {(tp.topic, tp.partition): 0}
        assert tp not in polled, "the records polled from offset 12 are dropped"
        assert consumer.poll(timeout_ms=5000)[tp][0].offset == 0
    finally:
        consumer.close()
