"""Checks every learner must pass, in the spirit of River's ``check_estimator``.

Each check builds learners with ``make`` (a fresh learner per call, always configured the
same way), feeds them a small deterministic stream and asserts one property of the
:class:`~learners.base.Learner` protocol that the stream worker relies on. Running every
check over every learner kind is one loop; a new learner is covered by registering it.

>>> from learners.river_mf import RiverMFLearner
>>> from schemas.learner_config import RiverMFConfig
>>> for check in yield_checks():
...     check(lambda: RiverMFLearner(RiverMFConfig(n_factors=4)))
>>> [c.__name__ for c in yield_checks()][:2]
['check_ledger_counts_every_event_once', 'check_vectors_are_finite_and_versioned']
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from learners.base import Learner, LearnReport
from learners.ledger import EventLedger
from schemas.events import EventType, InteractionEvent, ItemText
from schemas.vectors import SourcePosition

__all__ = ["Check", "small_stream", "yield_checks"]

Check = Callable[[Callable[[], Learner]], None]
_TOPIC = "checks.events"


def small_stream(
    n: int = 96, users: int = 6, items: int = 12, seed: int = 0
) -> list[InteractionEvent]:
    """A deterministic stream of every event kind: ``user-u`` prefers the items near
    ``item-2u``; some events carry item text, some are ratings."""
    rng = np.random.default_rng(seed)
    kinds = [EventType.CLICK, EventType.VIEW, EventType.PURCHASE, EventType.IMPRESSION]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for k in range(n):
        u = int(rng.integers(users))
        i = int((u * 2 + rng.integers(4)) % items)
        kind = EventType.RATING if k % 5 == 0 else kinds[k % len(kinds)]
        out.append(
            InteractionEvent(
                event_id=f"check-{seed}-{k}",
                user_id=f"user-{u}",
                item_id=f"item-{i}",
                event_type=kind,
                value=float(1 + (u + i) % 5) if kind is EventType.RATING else None,
                timestamp=start + timedelta(seconds=k),
                item=ItemText(title=f"item {i}", categories=[f"genre {i % 3}"])
                if k % 3 == 0
                else None,
            )
        )
    return out


def _learn(learner: Learner, events: list[InteractionEvent], offset: int) -> LearnReport:
    positions = [
        SourcePosition(topic=_TOPIC, partition=0, offset=offset + k) for k in range(len(events))
    ]
    return learner.learn_many(events, positions)


def _learn_all(learner: Learner, events: list[InteractionEvent], batch: int = 32) -> None:
    for start in range(0, len(events), batch):
        _learn(learner, events[start : start + batch], start)


def check_ledger_counts_every_event_once(make: Callable[[], Learner]) -> None:
    """The ledger reflects exactly the events learned: the worker's no-loss proof."""
    learner, events = make(), small_stream()
    _learn_all(learner, events)
    assert learner.ledger == EventLedger.expected(e.event_id for e in events), "ledger"


def check_vectors_are_finite_and_versioned(make: Callable[[], Learner]) -> None:
    """Every known user and item has one finite float32 vector of one width, stamped with
    the learner's version; unknown ids are left out."""
    learner, events = make(), small_stream()
    _learn_all(learner, events)
    users = learner.known_users()
    assert sorted(users) == sorted({e.user_id for e in events})
    for batch in (
        learner.user_vectors([*users, "never-seen"]),
        learner.item_vectors([*learner.known_items(), "never-seen"]),
    ):
        assert "never-seen" not in batch.ids
        assert batch.vectors.dtype == np.float32
        assert batch.vectors.shape[0] == len(batch.ids)
        assert np.isfinite(batch.vectors).all(), "non-finite vector"
        assert batch.version == learner.version


def check_markers_name_each_users_newest_event(make: Callable[[], Learner]) -> None:
    """A user vector's marker is the user's newest event and where it was read, which the
    worker uses to say what a published vector reflects."""
    learner, events = make(), small_stream()
    _learn_all(learner, events)
    newest = {e.user_id: (k, e) for k, e in enumerate(events)}
    batch = learner.user_vectors(sorted(newest))
    for user, marker in zip(batch.ids, batch.markers, strict=True):
        k, event = newest[user]
        assert marker is not None, user
        assert marker.event_id == event.event_id, user
        assert (marker.topic, marker.partition, marker.offset) == (_TOPIC, 0, k), user


def check_state_stays_within_its_bounds(make: Callable[[], Learner]) -> None:
    """Every bounded state reports a positive capacity and stays within it."""
    learner = make()
    _learn_all(learner, small_stream())
    sizes = learner.state_sizes()
    assert sizes, "a learner reports its bounded state"
    for name, (entries, capacity) in sizes.items():
        assert capacity > 0, name
        assert 0 <= entries <= capacity, (name, entries, capacity)


def check_save_then_load_gives_the_same_next_update(make: Callable[[], Learner]) -> None:
    """A learner restored from a checkpoint is indistinguishable from the one saved: the
    same vectors and learning-rate schedule now and after the next batch (which brings a
    new user and item)."""
    events = small_stream(128)
    later = [*events[96:], _newcomer(events[-1])]
    saved, restored = make(), make()
    _learn_all(saved, events[:96])
    with tempfile.TemporaryDirectory() as tmp:
        saved.save(Path(tmp))
        restored.load(Path(tmp))
    _same_vectors(saved, restored)
    assert 0.0 < saved.lr_annealing <= 1.0
    assert restored.lr_annealing == saved.lr_annealing, "the schedule restarted on restore"
    for learner in (saved, restored):
        _learn(learner, later, 96)
    _same_vectors(saved, restored)
    assert saved.ledger == restored.ledger
    assert saved.updates == restored.updates


def _newcomer(last: InteractionEvent) -> InteractionEvent:
    return last.model_copy(
        update={
            "event_id": "check-new",
            "user_id": "u-new",
            "item_id": "i-new",
            "event_type": EventType.CLICK,
            "value": None,
            "timestamp": last.timestamp + timedelta(seconds=1),
        }
    )


def _same_vectors(a: Learner, b: Learner) -> None:
    assert a.version == b.version
    for kind, ids in (("user", a.known_users()), ("item", a.known_items())):
        va = a.user_vectors(ids) if kind == "user" else a.item_vectors(ids)
        vb = b.user_vectors(ids) if kind == "user" else b.item_vectors(ids)
        assert va.ids == vb.ids, kind
        np.testing.assert_allclose(va.vectors, vb.vectors, atol=1e-5, err_msg=kind)


def check_forgetting_a_user_drops_their_state(make: Callable[[], Learner]) -> None:
    """``forget_users`` (a deletion request) removes the user and only them."""
    learner, events = make(), small_stream()
    _learn_all(learner, events)
    assert learner.forget_users(["user-0", "nobody"]) == ["user-0"]
    assert "user-0" not in learner.known_users()
    assert learner.user_vectors(["user-0"]).ids == []
    assert len(learner.user_vectors(["user-1"]).ids) == 1
    assert learner.forget_users(["user-0"]) == []


def check_reports_one_test_per_tested_event(make: Callable[[], Learner]) -> None:
    """``learn_many`` reports what it did: every event counted, its users and items, and
    prequential test errors in [0, 1]."""
    learner, events = make(), small_stream()
    _learn(learner, events[:48], 0)
    report = _learn(learner, events[48:], 48)
    assert report.events == 48
    assert set(report.users) == {e.user_id for e in events[48:]}
    assert set(report.items) == {e.item_id for e in events[48:]}
    assert len(report.test_errors) > 0, "the second batch's positives are tested"
    assert ((report.test_errors >= 0) & (report.test_errors <= 1)).all()


def check_tests_each_event_before_learning_it(make: Callable[[], Learner]) -> None:
    """Prequential: a batch's positive events are ranked by the state as it was before the
    batch, so their test errors are the same whether the batch then teaches (learning
    rates as set) or not (learning rates scaled to 0)."""
    items = 12
    events = small_stream(128, items=items)
    # clicks on known items the user has not consumed (a positive on a consumed one is no
    # test where recommendations leave consumed items out): user u's items are 2u … 2u+3,
    # half the catalog away lie another user's
    clicks = [
        e.model_copy(
            update={
                "event_type": EventType.CLICK,
                "value": None,
                "item_id": f"item-{(int(e.item_id.split('-')[1]) + items // 2) % items}",
                "item": None,
            }
        )
        for e in events
    ]
    learning, frozen = make(), make()
    for learner in (learning, frozen):
        _learn_all(learner, events[:96])
    frozen.set_boost(lr_factor=0.0)
    errors = [_learn(x, clicks[96:], 96).test_errors for x in (learning, frozen)]
    assert len(errors[0]) > 0, "known users' clicks on known items are tested"
    np.testing.assert_array_equal(errors[0], errors[1])


def check_a_non_finite_value_never_reaches_the_state(make: Callable[[], Learner]) -> None:
    """A non-finite rating (validation stops these; a learner must not rely on it) skips
    the update it would poison, says so, and leaves every vector finite."""
    learner, events = make(), small_stream()
    _learn_all(learner, events)
    poisoned = events[-1].model_copy(
        update={
            "event_id": "check-inf",
            "event_type": EventType.RATING,
            "value": float("inf"),
            "timestamp": events[-1].timestamp + timedelta(seconds=1),
        }
    )
    report = _learn(learner, [poisoned, *small_stream(8, seed=1)], len(events))
    assert report.skipped_update, "the skipped update is reported"
    assert learner.ledger.count == len(events) + 9, "the batch's events still count as read"
    for batch in (
        learner.user_vectors(learner.known_users()),
        learner.item_vectors(learner.known_items()),
    ):
        assert np.isfinite(batch.vectors).all(), "a non-finite value reached the vectors"


def check_catching_up_changes_only_derived_state(make: Callable[[], Learner]) -> None:
    """``catch_up`` keeps to its budget, reports what is behind without changing anything
    at budget 0, and once nothing is behind leaves version, ledger and vectors as they are."""
    learner, events = make(), small_stream()
    _learn_all(learner, events)
    version, ledger = learner.version, learner.ledger.to_json()
    before = learner.item_vectors(learner.known_items())
    assert learner.catch_up(0).redone == 0
    after = learner.item_vectors(before.ids)
    np.testing.assert_array_equal(after.vectors, before.vectors, "budget 0 only counts")
    assert learner.catch_up(1).redone <= 1
    done = learner.catch_up(10**9)
    assert done.behind == 0, "an unlimited budget catches up on everything"
    assert learner.version == version
    assert learner.ledger.to_json() == ledger
    users = learner.user_vectors(learner.known_users())
    items = learner.item_vectors(learner.known_items())
    assert learner.catch_up(10**9).redone == 0, "nothing is behind twice"
    np.testing.assert_array_equal(learner.user_vectors(users.ids).vectors, users.vectors)
    np.testing.assert_array_equal(learner.item_vectors(items.ids).vectors, items.vectors)


def yield_checks() -> Iterator[Check]:
    """Every conformance check, in the order they are cheapest to fail."""
    yield check_ledger_counts_every_event_once
    yield check_vectors_are_finite_and_versioned
    yield check_markers_name_each_users_newest_event
    yield check_state_stays_within_its_bounds
    yield check_reports_one_test_per_tested_event
    yield check_tests_each_event_before_learning_it
    yield check_a_non_finite_value_never_reaches_the_state
    yield check_forgetting_a_user_drops_their_state
    yield check_catching_up_changes_only_derived_state
    yield check_save_then_load_gives_the_same_next_update
