"""The replay buffer: bounded, stratified by user, recency-weighted, restorable."""

from __future__ import annotations

import json

import numpy as np

from learners.replay import Example, ReplayBuffer
from schemas.learner_config import ReplayConfig


def example(user: str, t: float, item: str = "i") -> Example:
    return Example(user, item, 1.0, (("h1", 3), ("h2", 5)), t)


def test_count_and_bytes_limits_hold() -> None:
    buf = ReplayBuffer(ReplayConfig(capacity=50, max_bytes=9_000, per_user_cap=1000))
    for t in range(1000):
        buf.add(example(f"u{t % 7}", t))
        assert len(buf) <= 50
        assert buf.bytes <= 9_000
    assert buf.bytes == sum(e.nbytes() for e in buf.sample(10_000))


def test_no_user_holds_more_than_its_cap() -> None:
    buf = ReplayBuffer(ReplayConfig(capacity=100, per_user_cap=5))
    for t in range(500):
        buf.add(example("heavy" if t % 10 else f"light{t}", t))
    assert buf.users()["heavy"] == 5
    assert len(buf) == 5 + 50


def test_recent_examples_are_favoured() -> None:
    buf = ReplayBuffer(
        ReplayConfig(capacity=200, per_user_cap=10_000, recency_half_life=500), seed=3
    )
    for t in range(5000):
        buf.add(example("u", float(t)))
    ages = np.array([5000 - e.t for e in buf.sample(1000)])
    assert np.median(ages) < 1000  # a uniform reservoir would keep a median age of ~2500
    assert (ages > 2500).mean() < 0.1


def test_round_trips_through_json() -> None:
    buf = ReplayBuffer(ReplayConfig(capacity=30), seed=1)
    for t in range(100):
        buf.add(example(f"u{t % 3}", t, item=f"i{t}"))
    data = json.loads(json.dumps(buf.to_json()))
    copy = ReplayBuffer.from_json(buf.config, data)
    assert sorted(e.item_id for e in copy.sample(100)) == sorted(e.item_id for e in buf.sample(100))
    assert copy.bytes == buf.bytes
    buf.add(example("u9", 100.0))
    copy.add(example("u9", 100.0))
    assert sorted(e.item_id for e in copy.sample(100)) == sorted(e.item_id for e in buf.sample(100))
