"""The publisher against the real local Kafka broker: one batch's output is confirmed while
the next batch's is in flight, and the next batch's records stay tracked until confirmed."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from helpers import create_topic, read_topic

from schemas.settings import Settings
from stream.clients import make_producer
from stream.publisher import Publisher

pytestmark = pytest.mark.kafka


def test_delivering_one_epoch_keeps_the_next_tracked_until_it_is_delivered(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    users = settings.topics.user_vectors
    create_topic(settings, users)
    producer = make_producer(settings)
    publisher = Publisher(producer, settings.topics, "t")
    try:
        publisher.tombstones(["warm-up"])  # the producer learns the topic's leader first
        publisher.deliver(30)
        sent = time.time()
        publisher.tombstones(["a", "b"])
        first = publisher.close_epoch()
        publisher.tombstones(["f"])
        second = publisher.close_epoch()

        publisher.deliver(30, through=first)
        confirmed = time.time()
        # "f" may be acknowledged already, but only its own deliver() settles it (a refused
        # record is re-sent there): settling it here could drop a failure unseen
        assert publisher.pending == 1
        assert publisher.all_acknowledged(first)
        assert sent < publisher.acked_at(first) <= confirmed

        publisher.deliver(30, through=second)
        assert publisher.pending == 0
        records = read_topic(settings, users, expect=4)
        assert {r.key for r in records} == {b"warm-up", b"a", b"b", b"f"}
    finally:
        producer.close(5)
