"""Offset lookups of stream/clients.py against the real local Kafka broker."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from helpers import create_topic, send_raw
from kafka import OffsetAndMetadata, TopicPartition

from schemas.settings import Settings
from stream.clients import await_partitions, make_consumer, start_offset, subscribe, unread
from stream.stall import CallWatch

pytestmark = pytest.mark.kafka


def test_a_partition_starts_at_the_committed_offset_else_where_the_policy_says(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    create_topic(settings, settings.topics.events, partitions=1)
    send_raw(settings, [(None, b"x")] * 5)
    tp = TopicPartition(settings.topics.events, 0)
    latest = make_settings(consumer={"auto_offset_reset": "latest"})
    consumers = [make_consumer(settings), make_consumer(latest)]
    try:
        for c in consumers:
            c.assign([tp])
        earliest_policy, latest_policy = consumers
        assert start_offset(earliest_policy, tp, earliest=False, timeout_ms=10_000) == 0
        assert start_offset(latest_policy, tp, earliest=False, timeout_ms=10_000) == 5
        earliest_policy.commit({tp: OffsetAndMetadata(3, "", -1)})
        assert start_offset(latest_policy, tp, earliest=False, timeout_ms=10_000) == 3
        assert start_offset(latest_policy, tp, earliest=True, timeout_ms=10_000) == 0, (
            "a state restored from behind a damaged checkpoint reads from the earliest"
        )
    finally:
        for c in consumers:
            c.close()


def test_unread_records_are_seen_even_by_a_client_that_stopped_fetching(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    create_topic(settings, settings.topics.events, partitions=1)
    tp = TopicPartition(settings.topics.events, 0)
    consumer = make_consumer(settings)
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        assert unread(consumer, [tp], timeout_ms=10_000) == set(), "an empty partition"
        consumer.pause(tp)  # the client's cached high watermark no longer moves
        send_raw(settings, [(None, b"x")] * 2)
        assert unread(consumer, [tp], timeout_ms=10_000) == {tp}
    finally:
        consumer.close()


class Recording(CallWatch):
    """A call watch that lists the calls it watched."""

    def __init__(self) -> None:
        super().__init__(lambda: None)
        self.calls: list[str] = []

    @contextmanager
    def call(self, what: str) -> Iterator[None]:
        self.calls.append(what)
        with super().call(what):
            yield


def test_waiting_for_a_topics_partitions_runs_each_lookup_under_the_call_watch(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    create_topic(settings, settings.topics.events, partitions=3)
    consumer = make_consumer(settings)
    watch = Recording()
    try:
        assert await_partitions(consumer, settings.topics.events, watch=watch) == 3
    finally:
        consumer.close()
    assert watch.calls, "the lookup ran under the watch"
    assert set(watch.calls) == {"partition lookup"}


def test_a_stop_ends_the_wait_for_a_topic_that_does_not_exist(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    stopped = threading.Event()
    stopped.set()
    consumer = make_consumer(settings)
    watch = Recording()
    try:
        missing = settings.topics.events + "-never-created"
        assert await_partitions(consumer, missing, watch=watch, stop=stopped) == 0
    finally:
        consumer.close()
    assert watch.calls == ["partition lookup"], "the stop ends the wait after one lookup"


def test_a_stop_ends_the_wait_for_the_coordinators_view_of_the_topic(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings()
    stopped = threading.Event()
    stopped.set()
    consumer = make_consumer(settings)
    try:
        snapshot = getattr(consumer._coordinator, "_metadata_snapshot", None)
        assert isinstance(snapshot, dict), "the client keeps the snapshot subscribe waits for"
        missing = settings.topics.events + "-never-created"
        with caplog.at_level(logging.INFO, logger="stream.clients"):
            assert not subscribe(consumer, missing, None, stop=stopped)
    finally:
        consumer.close()
    assert "joining anyway" not in caplog.text, "the stop ended the wait, not its timeout"
