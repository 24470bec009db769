"""The worker's state on disk: how many roll-backs it allows, whoever wrote the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learners.base import Learner
from learners.checks import small_stream
from learners.llm import LLMLearner
from learners.river_mf import RiverMFLearner
from schemas.learner_config import LLMConfig
from schemas.settings import Settings
from schemas.vectors import SourcePosition
from stream.apply import AttemptFailed
from stream.dedupe import RecentEvents
from stream.durable import DurableState, WorkerFailed
from stream.metrics import WorkerMetrics
from stream.offsets import OffsetBook
from stream.stages import StageClock


def durable_state(tmp_path: Path, max_rewinds: int, learner: Learner | None = None) -> DurableState:
    settings = Settings.load(
        environ={}, checkpoint={"dir": str(tmp_path)}, worker={"max_rewinds": max_rewinds}
    )
    metrics = WorkerMetrics(process=False)
    return DurableState(
        settings,
        learner if learner is not None else RiverMFLearner(),
        RecentEvents(100),
        OffsetBook(checkpoints=True),
        metrics,
        StageClock(metrics.stage_seconds),
    )


def test_a_checkpoint_another_rank_wrote_resets_the_roll_back_count(tmp_path: Path) -> None:
    durable = durable_state(tmp_path, max_rewinds=1)
    failure = AttemptFailed("learn", ValueError("a poison record"))
    durable.save({("t", 0): 0})
    assert durable.roll_back(failure, None) == {("t", 0): 0}
    with pytest.raises(WorkerFailed, match=r"raise worker\.max_rewinds"):
        durable.roll_back(failure, None)  # a second failure with no checkpoint between

    durable.save({("t", 0): 3})
    assert durable.roll_back(failure, None) == {("t", 0): 3}
    assert durable.store is not None
    arrays = {"recent_event_hashes": durable.recent.to_array()}
    durable.store.save(durable.learner, {("t", 0): 5}, arrays, {})  # rank 0, for the group
    durable.saved_elsewhere({("t", 0): 5})
    assert durable.roll_back(failure, None) == {("t", 0): 5}


def test_a_restart_behind_a_checkpoint_moved_aside_earlier_still_reads_from_the_start(
    tmp_path: Path,
) -> None:
    """A worker moved the newest checkpoint aside and died before writing another: the next
    start restores the same older one, with nothing left to move, and is as far behind."""
    durable = durable_state(tmp_path, max_rewinds=1)
    durable.save({("t", 0): 3})
    durable.save({("t", 0): 5})
    (tmp_path / "ckpt-000000000002" / "manifest.json").write_text("{")
    for _ in range(2):
        again = durable_state(tmp_path, max_rewinds=1)
        again.start(admin=None)  # a checkpoint is restored: the group is not asked
        assert again.restored == 1
        assert again.from_earliest


def test_a_checkpoint_written_behind_damaged_ones_keeps_reading_from_the_start(
    tmp_path: Path,
) -> None:
    """Restored behind a damaged checkpoint, the state writes a checkpoint before it has
    placed every partition (a start-offset lookup timed out) and dies: the restart restores
    that newer checkpoint, which nothing damaged is newer than, and must still read the
    partitions it has no offset for from their start — their committed offsets are the
    damaged checkpoint's."""
    durable = durable_state(tmp_path, max_rewinds=1)
    durable.save({("t", 0): 3})
    durable.save({("t", 0): 5, ("t", 1): 7})
    (tmp_path / "ckpt-000000000002" / "manifest.json").write_text("{")
    behind = durable_state(tmp_path, max_rewinds=1)
    behind.start(admin=None)
    assert behind.from_earliest
    behind.save({("t", 0): 6})  # partition 1 not placed yet
    marked = json.loads((tmp_path / "ckpt-000000000003" / "manifest.json").read_text())
    assert marked["from_earliest"] is True
    plain = json.loads((tmp_path / "ckpt-000000000001" / "manifest.json").read_text())
    assert "from_earliest" not in plain  # readable by a release without the field
    restarted = durable_state(tmp_path, max_rewinds=1)
    restarted.start(admin=None)
    assert restarted.restored == 3
    assert restarted.from_earliest

    fresh = durable_state(tmp_path / "elsewhere", max_rewinds=1)
    fresh.save({("t", 0): 1})
    again = durable_state(tmp_path / "elsewhere", max_rewinds=1)
    again.start(admin=None)
    assert not again.from_earliest


def test_a_restored_learners_version_and_rate_are_on_the_gauges_before_its_next_batch(
    tmp_path: Path,
) -> None:
    """Between a restart (or a roll-back) and the next batch an operator sees the
    checkpoint's updates and annealed rate, not a fresh learner's 0 and full rate."""
    config = LLMConfig(lr_floor=0.25, lr_half_life=64)
    events = small_stream(128, 8, 40, 0)
    at = [SourcePosition(topic="t", partition=0, offset=k) for k in range(128)]
    first = durable_state(tmp_path, 1, LLMLearner(config))
    first.learner.learn_many(events[:64], at[:64])
    first.save({("t", 0): 64})

    resumed = durable_state(tmp_path, 1, LLMLearner(config))
    metrics = resumed.metrics.registry

    def gauges() -> tuple[float | None, float | None]:
        return (
            metrics.get_sample_value("lorastream_adapter_version"),
            metrics.get_sample_value("lorastream_learning_rate_annealing"),
        )

    resumed.start(admin=None)
    after_one_update = (1.0, pytest.approx(0.25 + 0.75 * 0.5))
    assert gauges() == after_one_update
    resumed.learner.learn_many(events[64:], at[64:])
    resumed.metrics.show_learner(resumed.learner)  # as each batch's metrics do
    assert gauges() == (2.0, pytest.approx(0.25 + 0.75 * 0.25))
    resumed.roll_back(AttemptFailed("learn", ValueError("a poison record")), None)
    assert gauges() == after_one_update
