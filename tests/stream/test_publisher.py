"""The publisher: one batch's output is confirmed while the next batch's is in flight (against
the real local Kafka broker), and what it sends again when the broker refused a record."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from helpers import create_topic, read_topic
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from learners.base import VectorBatch
from schemas.settings import Settings
from schemas.vector_wire import VectorEncoding, read_vector
from schemas.vectors import UserVector
from stream.clients import make_producer
from stream.publisher import Publisher, user_vector_values


@pytest.mark.kafka
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


class Producer:
    """Stands in for kafka-python's producer where the broker's answer must be chosen: every
    send completes at once, refused when it is the n-th send for an n in ``refuse`` — or,
    with ``hold``, when the test answers its future."""

    def __init__(self, refuse: set[int], hold: bool = False) -> None:
        self.refuse, self.hold = refuse, hold
        self.sent: list[bytes | None] = []
        self.futures: list[Future] = []

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: Any) -> Future:
        self.sent.append(value)
        future = Future()
        self.futures.append(future)
        if self.hold:
            return future
        if len(self.sent) - 1 in self.refuse:
            return future.failure(KafkaTimeoutError("expired in the accumulator"))
        return future.success(None)

    def flush(self, timeout: float | None = None) -> None:
        pass


@pytest.mark.parametrize("through", ["each batch", "everything"])
def test_a_refused_record_is_not_sent_again_over_a_newer_one_of_its_key(
    make_settings: Callable[..., Settings], through: str
) -> None:
    """Batch n's vector of a user is refused after batch n+1 sent a newer one of that user:
    sending n's again would make the older vector the newest on the compacted topic. A dead
    letter refused is sent again whatever came after it (every one counts)."""
    from learners.base import VectorBatch
    from schemas.dead_letter import RejectCode
    from stream.decode import RawRecord, Rejection

    settings = make_settings()
    letter = Rejection(RawRecord("t", 0, 7, 0, b"u", b"x"), RejectCode.MALFORMED_JSON, "bad")
    producer = Producer(refuse={0, 1})  # batch n's vector and its dead letter
    publisher = Publisher(producer, settings.topics, "t")  # type: ignore[arg-type]
    publisher.user_vectors(VectorBatch(["u"], np.ones((1, 4), np.float32), "v1"))
    publisher.dead_letter(letter)
    first = publisher.close_epoch()
    publisher.user_vectors(VectorBatch(["u"], np.zeros((1, 4), np.float32), "v2"))
    publisher.dead_letter(letter)
    second = publisher.close_epoch()
    if through == "each batch":
        publisher.deliver(5, through=first)
        publisher.deliver(5, through=second)
    else:
        publisher.deliver(5)
    assert publisher.pending == 0
    assert len(producer.sent) == 5  # v1, letter, v2, letter, and the first letter again
    assert producer.sent[4] == producer.sent[1]
    assert producer.sent.count(producer.sent[0]) == 1  # v1: never sent over v2


def test_a_batch_counts_as_settled_once_every_record_of_it_has_an_answer(
    make_settings: Callable[..., Settings],
) -> None:
    producer = Producer(refuse=set(), hold=True)
    publisher = Publisher(producer, make_settings().topics, "t")  # type: ignore[arg-type]
    publisher.tombstones(["a", "b"])
    first = publisher.close_epoch()
    publisher.tombstones(["c"])
    second = publisher.close_epoch()
    producer.futures[0].success(None)
    assert not publisher.all_acknowledged(first)
    producer.futures[1].failure(KafkaTimeoutError("expired"))
    assert publisher.all_acknowledged(first)  # answered: deliver() re-sends the refused one
    assert not publisher.all_acknowledged(second)


def _batch(vectors: list[list[float]], sparse: list[float]) -> VectorBatch:
    return VectorBatch(
        ids=["u"],
        vectors=np.array(vectors),
        version="v1",
        sparse=[(np.array([7]), np.array(sparse))],
    )


def test_json_vectors_read_back_as_the_learners_float32_bit_for_bit() -> None:
    rows = np.random.default_rng(0).standard_normal((3, 385)).astype(np.float32) / 20
    batch = VectorBatch(ids=["a", "b", "c"], vectors=rows, version="v1")
    for k, value in enumerate(user_vector_values(batch, "2026-01-01T00:00:00+00:00")):
        doc = json.loads(value)  # any JSON reader
        UserVector.model_validate(doc)
        assert np.array_equal(np.array(doc["vector"], dtype=np.float32), rows[k])


def test_non_finite_vectors_are_refused_and_finite_ones_past_float16_saturate() -> None:
    ts = "2026-01-01T00:00:00+00:00"
    for vectors, sparse in (([[np.inf, 0.0]], [1.0]), ([[1.0, 0.0]], [np.nan])):
        with pytest.raises(ValueError, match="non-finite"):
            user_vector_values(_batch(vectors, sparse), ts)
    (frame,) = user_vector_values(_batch([[7e4, -1e39]], [1e6]), ts, VectorEncoding.F16)
    wire = read_vector(frame)
    assert wire.vector.tolist() == [65504.0, -65504.0]
    assert wire.values.tolist() == [65504.0]
    (value,) = user_vector_values(_batch([[1e39, 0.5]], [1.0]), ts)  # past float32 too
    assert json.loads(value)["vector"][0] == pytest.approx(float(np.finfo(np.float32).max))
