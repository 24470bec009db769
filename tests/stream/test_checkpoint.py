"""Atomic checkpoints: complete or absent, verified on restore, damaged ones skipped."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from helpers import make_events

from learners.river_mf import RiverMFLearner
from schemas.vectors import SourcePosition
from stream.checkpoint import CheckpointError, CheckpointStore


def learner_with(n: int) -> RiverMFLearner:
    learner = RiverMFLearner()
    events = make_events(n, n_users=5)
    learner.learn_many(events, [SourcePosition(topic="t", partition=0, offset=i) for i in range(n)])
    return learner


def save(store: CheckpointStore, learner: RiverMFLearner, offset: int) -> None:
    store.save(learner, {("t", 0): offset}, {"recent_event_hashes": np.zeros(0, np.uint64)}, {})


def test_restore_returns_the_newest_state_and_its_offsets(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    for n in (10, 20, 30):
        save(store, learner_with(n), n)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000000000002", "ckpt-000000000003"]
    fresh = RiverMFLearner()
    checkpoint = store.restore(fresh)
    assert checkpoint is not None
    assert checkpoint.offsets == {("t", 0): 30}
    assert fresh.ledger.count == 30


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    save(store, learner_with(10), 10)
    save(store, learner_with(20), 20)
    damaged = tmp_path / "ckpt-000000000002" / "learner" / "factors.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    fresh = RiverMFLearner()
    with caplog.at_level(logging.WARNING):
        checkpoint = store.restore(fresh)
    assert checkpoint is not None
    assert checkpoint.offsets == {("t", 0): 10}
    assert "does not match its checksum" in caplog.text


def test_leftovers_of_an_interrupted_write_are_ignored_and_removed(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    save(store, learner_with(10), 10)
    partial = tmp_path / ".tmp-ckpt-000000000002-123"
    (partial / "learner").mkdir(parents=True)
    (partial / "learner" / "state.json").write_text("{")
    store = CheckpointStore(tmp_path)
    assert not partial.exists()
    latest = store.latest()
    assert latest is not None
    assert latest.sequence == 1


def test_a_checkpoint_of_another_learner_kind_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    save(store, learner_with(10), 10)

    class Other(RiverMFLearner):
        kind = "other"

    with pytest.raises(CheckpointError, match="written by the 'river-mf' learner"):
        store.restore(Other())


def test_no_pickle_anywhere(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    save(store, learner_with(50), 50)
    suffixes = {p.suffix for p in tmp_path.rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".safetensors"}


def test_a_checkpoint_of_another_events_topic_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save(
        learner_with(10),
        {("clicks", 0): 10},
        {"recent_event_hashes": np.zeros(0, np.uint64)},
        {"events_topic": "clicks"},
    )
    with pytest.raises(CheckpointError, match="made consuming 'clicks'"):
        store.restore(RiverMFLearner(), events_topic="purchases")
    assert store.restore(RiverMFLearner(), events_topic="clicks") is not None
