"""The River baseline learner: it learns, stays bounded, and its state round-trips exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import make_events

from learners.ledger import EventLedger
from learners.river_mf import RiverMFLearner
from schemas.learner_config import RiverMFConfig
from schemas.vectors import SourcePosition


def positions(n: int, start: int = 0) -> list[SourcePosition]:
    return [SourcePosition(topic="t", partition=0, offset=start + i) for i in range(n)]


def test_save_load_gives_the_same_vectors_and_the_same_next_update(tmp_path: Path) -> None:
    events = make_events(600, n_users=20, n_items=30)
    a = RiverMFLearner(RiverMFConfig(n_factors=8, seed=3))
    a.learn_many(events[:400], positions(400))
    a.save(tmp_path)
    b = RiverMFLearner(RiverMFConfig(n_factors=8, seed=99))  # config comes from the state
    b.load(tmp_path)
    users = [f"user-{i}" for i in range(20)]
    np.testing.assert_array_equal(a.user_vectors(users).vectors, b.user_vectors(users).vectors)
    a.learn_many(events[400:], positions(200, 400))
    b.learn_many(events[400:], positions(200, 400))
    np.testing.assert_array_equal(a.user_vectors(users).vectors, b.user_vectors(users).vectors)
    items = [f"item-{i}" for i in range(30)]
    np.testing.assert_array_equal(a.item_vectors(items).vectors, b.item_vectors(items).vectors)
    assert a.ledger == b.ledger == EventLedger.expected(e.event_id for e in events)


def test_user_and_item_state_stay_bounded() -> None:
    learner = RiverMFLearner(RiverMFConfig(max_users=10, max_items=15))
    learner.learn_many(make_events(500, n_users=50, n_items=60), positions(500))
    sizes = learner.state_sizes()
    assert sizes["users"] == (10, 10)
    assert sizes["items"] == (15, 15)
    assert len(learner._model.u_latents) <= 10
    assert len(learner._model.i_latents) <= 15


def test_markers_record_each_users_newest_event() -> None:
    events = make_events(100, n_users=7)
    learner = RiverMFLearner()
    learner.learn_many(events, positions(100))
    batch = learner.user_vectors([f"user-{i}" for i in range(7)])
    last = {e.user_id: (e.event_id, i) for i, e in enumerate(events)}
    for user, marker in zip(batch.ids, batch.markers, strict=True):
        assert marker is not None
        assert (marker.event_id, marker.offset) == last[user]


def test_it_learns_who_likes_what() -> None:
    """Two user groups with disjoint tastes: each ranks its own items higher."""
    from datetime import UTC, datetime

    from schemas.events import InteractionEvent

    rng = np.random.default_rng(0)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    events = []
    for k in range(3000):
        group = k % 2
        user = f"g{group}-u{rng.integers(10)}"
        item = f"g{group}-i{rng.integers(10)}"
        events.append(
            InteractionEvent(
                event_id=str(k), user_id=user, item_id=item, event_type="purchase", timestamp=t
            )
        )
    learner = RiverMFLearner(RiverMFConfig(n_factors=8, seed=0))
    learner.learn_many(events, positions(len(events)))
    own = learner.score("g0-u1", [f"g0-i{i}" for i in range(10)]).mean()
    other = learner.score("g0-u1", [f"g1-i{i}" for i in range(10)]).mean()
    assert own > other + 0.5


def test_a_boosted_learner_keeps_learning_at_the_scaled_rate() -> None:
    """The drift policy's boost must leave River's optimizers working (their rate is a
    scheduler, not a float) and stable (capped where SGD would diverge)."""
    learner = RiverMFLearner(RiverMFConfig(learning_rate=0.05, max_learning_rate=0.075))
    events = make_events(3000, n_users=50, n_items=100)
    learner.learn_many(events[:100], positions(100))
    learner.set_boost(lr_factor=3.0)
    for k in range(100, 2900, 100):
        report = learner.learn_many(events[k : k + 100], positions(100, k))
    rates = {round(o.learning_rate, 6) for o in learner._optimizers()}
    assert rates == {0.075}
    assert report.loss is not None
    assert report.loss < 25.0, "still a sane squared error on the 1-5 scale"
    learner.set_boost()
    learner.learn_many(events[2900:], positions(100, 2900))
    assert {round(o.learning_rate, 6) for o in learner._optimizers()} == {0.05}
    assert learner.ledger.count == 3000


def test_forgetting_a_user_drops_their_factors_and_history() -> None:
    learner = RiverMFLearner()
    learner.learn_many(make_events(200, n_users=5, n_items=10), positions(200))
    assert learner.forget_users(["user-2", "nobody"]) == ["user-2"]
    assert learner.user_vectors(["user-2"]).ids == []
    assert "user-2" not in learner.history
