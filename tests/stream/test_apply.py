"""Applying a batch: the stale vectors re-published beside the batch's own follow the records
learned, on a single worker and on a rank that read none of them (against the real broker)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers import create_topic, make_events

from learners.river_mf import RiverMFLearner
from schemas.events import InteractionEvent
from schemas.settings import Settings
from stream.apply import Applier
from stream.clients import make_producer
from stream.decode import Accepted, RawRecord
from stream.dedupe import RecentEvents
from stream.metrics import WorkerMetrics
from stream.publisher import Publisher
from stream.stages import StageClock

pytestmark = pytest.mark.kafka

FULL = 64  # records of a full batch


def accepted(events: list[InteractionEvent]) -> list[Accepted]:
    return [
        Accepted(RawRecord("events", 0, k, 0, None, e.model_dump_json().encode()), e)
        for k, e in enumerate(events)
    ]


@pytest.mark.parametrize("own", [None, "none"])
def test_a_batch_re_publishes_its_share_of_the_stale_vectors(
    make_settings: Callable[..., Settings], own: str | None
) -> None:
    """Users: 20 published under an older update. A full batch re-publishes 64 stale ones
    (all 19 others here), a batch of 8 its share, 8; a rank that read none of the 8 records
    (``own`` excludes them all) still re-publishes 8 of its own stale ones — its vectors age
    with the model it learns in lockstep, whoever read the records."""
    settings = make_settings(topics={"user_refresh_per_batch": FULL, "produce_item_vectors": False})
    create_topic(settings, settings.topics.user_vectors)
    producer = make_producer(settings)
    learner = RiverMFLearner()
    applier = Applier(
        learner,
        Publisher(producer, settings.topics, "t"),
        RecentEvents(10_000),
        settings.topics,
        StageClock(WorkerMetrics(process=False).stage_seconds),
        full_batch=FULL,
    )
    try:
        first = applier(accepted(make_events(64, n_users=20, seed=1)))
        assert first.vectors == {"user": 20}  # every user is the batch's own
        late = accepted(make_events(8, n_users=1, seed=2))  # one user, "user-0"
        mine = None if own is None else (lambda a: False)
        second = applier(late, own=mine)
        own_users = 0 if own else 1
        assert second.vectors == {"user": own_users + 8}
        applier.publisher.deliver(30)
    finally:
        producer.close(5)
