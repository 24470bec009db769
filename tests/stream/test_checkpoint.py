"""Atomic checkpoints: complete or absent, verified on restore, damaged ones quarantined."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import make_events

from learners.base import IncompatibleState
from learners.river_mf import RiverMFLearner
from schemas.vectors import SourcePosition
from stream.checkpoint import CheckpointError, CheckpointStore, CheckpointWriteError


def learner_with(n: int) -> RiverMFLearner:
    learner = RiverMFLearner()
    events = make_events(n, n_users=5)
    learner.learn_many(events, [SourcePosition(topic="t", partition=0, offset=i) for i in range(n)])
    return learner


def save(store: CheckpointStore, learner: RiverMFLearner, offset: int) -> None:
    store.save(learner, {("t", 0): offset}, {"recent_event_hashes": np.zeros(0, np.uint64)}, {})


def names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_restore_returns_the_newest_state_and_its_offsets(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    for n in (10, 20, 30):
        save(store, learner_with(n), n)
    assert names(tmp_path) == ["ckpt-000000000002", "ckpt-000000000003"]
    fresh = RiverMFLearner()
    restored = store.restore(fresh)
    assert restored.checkpoint is not None
    assert restored.checkpoint.offsets == {("t", 0): 30}
    assert restored.quarantined == []
    assert fresh.ledger.count == 30


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(path: Path, **changes: object) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda p: flip_last_byte(p / "learner" / "factors.safetensors"),
            "does not match its checksum",
        ),
        (lambda p: edit_manifest(p, offsets=[["t", 0, 120]]), "does not match its digest"),
        (lambda p: edit_manifest(p, ledger={"count": 99, "fingerprint": "0"}), "its digest"),
        (
            lambda p: (p / "manifest.json").write_text(
                json.dumps(
                    {
                        k: v
                        for k, v in json.loads((p / "manifest.json").read_text()).items()
                        if k != "files"
                    }
                )
            ),
            "incomplete",
        ),
        (lambda p: (p / "manifest.json").write_text("[]"), "not a JSON object"),
        (lambda p: (p / "manifest.json").unlink(), "manifest unreadable"),
    ],
    ids=["flipped-bit", "offsets-edited", "ledger-edited", "no-files", "not-object", "gone"],
)
def test_a_damaged_newest_checkpoint_is_quarantined_and_the_previous_restored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object, message: str
) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    save(store, learner_with(10), 10)
    save(store, learner_with(20), 20)
    damage(tmp_path / "ckpt-000000000002")  # type: ignore[operator]
    fresh = RiverMFLearner()
    with caplog.at_level(logging.WARNING):
        restored = store.restore(fresh)
    assert restored.checkpoint is not None
    assert restored.checkpoint.offsets == {("t", 0): 10}
    assert fresh.ledger.count == 10
    assert message in caplog.text
    assert [q.name.startswith("quarantine-ckpt-000000000002-") for q in restored.quarantined] == [
        True
    ]
    assert "ckpt-000000000002" not in names(tmp_path)


def test_a_restore_behind_a_damaged_checkpoint_says_so_until_a_newer_one_is_written(
    tmp_path: Path,
) -> None:
    """A worker that moved a damaged checkpoint aside and died before writing a newer one
    restores behind it again: the offsets only the damaged one covered are still unknown."""
    store = CheckpointStore(tmp_path, keep=3)
    save(store, learner_with(10), 10)
    save(store, learner_with(20), 20)
    newest = tmp_path / "ckpt-000000000002"
    shutil.copytree(newest, tmp_path.parent / "backup")
    (newest / "manifest.json").write_text("{")
    first = store.restore(RiverMFLearner())
    assert len(first.quarantined) == 1
    assert first.behind_damaged
    restart = CheckpointStore(tmp_path, keep=3).restore(RiverMFLearner())
    assert restart.quarantined == [], "moved aside before"
    assert restart.behind_damaged
    shutil.copytree(tmp_path.parent / "backup", newest)  # an operator puts it back
    assert not store.restore(RiverMFLearner()).behind_damaged
    save(store, learner_with(30), 30)
    assert not store.restore(RiverMFLearner()).behind_damaged


def test_quarantined_checkpoints_are_never_pruned(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=1)
    save(store, learner_with(10), 10)
    edit_manifest(tmp_path / "ckpt-000000000001", sequence=7)
    restored = store.restore(RiverMFLearner())
    assert restored.checkpoint is None, "the only checkpoint is damaged"
    for n in (20, 30, 40):
        save(store, learner_with(n), n)
    assert len(store.quarantined()) == 1
    assert [p for p in names(tmp_path) if p.startswith("ckpt-")] == ["ckpt-000000000004"]


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


def test_a_checkpoint_of_another_learner_kind_is_refused_not_quarantined(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    save(store, learner_with(10), 10)

    class Other(RiverMFLearner):
        kind = "other"

    with pytest.raises(CheckpointError, match="written by the 'river-mf' learner"):
        store.restore(Other())
    assert store.quarantined() == []


def test_a_checkpoint_of_other_learner_settings_is_refused_not_quarantined(
    tmp_path: Path,
) -> None:
    store = CheckpointStore(tmp_path)
    save(store, learner_with(10), 10)

    class Resized(RiverMFLearner):
        def load(self, directory: Path) -> None:
            raise IncompatibleState("made with different learner settings: n_factors=10 (now 8)")

    with pytest.raises(CheckpointError, match="different learner settings: n_factors"):
        store.restore(Resized())
    assert store.quarantined() == []


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
    assert store.restore(RiverMFLearner(), events_topic="clicks").checkpoint is not None


def test_a_disk_that_refuses_writes_is_a_clear_error(tmp_path: Path) -> None:
    """A file where the checkpoint directory should be: the OS refuses every write, as on a
    read-only or full disk, whoever the user is (root ignores permission bits)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(CheckpointWriteError, match=r"cannot write a checkpoint under .*not-a-dir"):
        CheckpointStore(blocker / "checkpoints")
    store = CheckpointStore(tmp_path / "ok")
    (tmp_path / "ok").rmdir()
    (tmp_path / "ok").write_text("")  # the directory vanished and a file took its place
    with pytest.raises(CheckpointWriteError, match=r"point checkpoint\.dir"):
        save(store, learner_with(5), 5)
