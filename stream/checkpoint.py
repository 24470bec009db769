"""Checkpoints: the learner's state together with the offsets it reflects, written atomically.

Layout under the checkpoint directory::

    ckpt-000000000007/
        manifest.json          # offsets, ledger, sha256 of every other file (written last)
        stream.safetensors     # the worker's own state (recently learned event ids)
        learner/...            # whatever the learner saves (safetensors, JSON, PEFT adapter)

A checkpoint is built in ``.tmp-ckpt-*``; every file and directory is fsynced,
then the directory is renamed into place and its parent fsynced, so a crash
leaves either the complete new checkpoint or none. On restore the newest
checkpoint whose files match their checksums wins; a damaged one is skipped
with a warning. The newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from learners.base import Learner
from learners.state_io import load_arrays, save_arrays
from stream.batcher import PartitionKey

__all__ = ["Checkpoint", "CheckpointError", "CheckpointStore"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_PREFIX = "ckpt-"
_TMP_PREFIX = ".tmp-ckpt-"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (damaged, or written by another kind of learner)."""


@dataclass(frozen=True)
class Checkpoint:
    """A complete, verified checkpoint on disk."""

    path: Path
    sequence: int
    offsets: dict[PartitionKey, int]
    manifest: dict[str, Any]

    @property
    def learner_dir(self) -> Path:
        return self.path / "learner"

    def stream_arrays(self) -> dict[str, np.ndarray]:
        return load_arrays(self.path / "stream.safetensors")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(root: Path) -> None:
    """fsync every file, then every directory bottom-up."""
    dirs = []
    for dirpath, _, filenames in os.walk(root):
        dirs.append(dirpath)
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for d in reversed(dirs):
        _fsync_dir(Path(d))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _offsets_to_json(offsets: Mapping[PartitionKey, int]) -> list[list[Any]]:
    return [[t, p, o] for (t, p), o in sorted(offsets.items())]


class CheckpointStore:
    """Writes and finds checkpoints under ``root``."""

    def __init__(self, root: Path, keep: int = 3) -> None:
        self.root = root
        self.keep = keep
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(_TMP_PREFIX + "*"):  # left by a crash mid-write
            shutil.rmtree(stale, ignore_errors=True)

    def _sequences(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.root.glob(_PREFIX + "*"):
            try:
                found.append((int(path.name[len(_PREFIX) :]), path))
            except ValueError:
                continue
        return sorted(found)

    def save(
        self,
        learner: Learner,
        offsets: Mapping[PartitionKey, int],
        stream_arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any],
    ) -> Checkpoint:
        """Write a new checkpoint atomically; returns it once durable."""
        existing = self._sequences()
        sequence = existing[-1][0] + 1 if existing else 1
        tmp = self.root / f"{_TMP_PREFIX}{sequence:012d}-{os.getpid()}"
        final = self.root / f"{_PREFIX}{sequence:012d}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "learner").mkdir(parents=True)
        try:
            learner.save(tmp / "learner")
            save_arrays(tmp / "stream.safetensors", dict(stream_arrays))
            files = {
                str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()
            }
            manifest = {
                "format_version": FORMAT_VERSION,
                "sequence": sequence,
                "created_at": datetime.now(UTC).isoformat(),
                "learner_kind": learner.kind,
                "learner_version": learner.version,
                "ledger": learner.ledger.to_json(),
                "offsets": _offsets_to_json(offsets),
                "files": files,
                **meta,
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
            _fsync_tree(tmp)
            os.rename(tmp, final)
            _fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._prune()
        return Checkpoint(final, sequence, dict(offsets), manifest)

    def _prune(self) -> None:
        for _, path in self._sequences()[: -self.keep]:
            shutil.rmtree(path, ignore_errors=True)

    def verify(self, path: Path) -> Checkpoint:
        """Read and check one checkpoint; raises :class:`CheckpointError` when damaged."""
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: manifest unreadable ({exc})") from exc
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: unknown format {manifest.get('format_version')}")
        for name, digest in manifest["files"].items():
            file = path / name
            if not file.is_file():
                raise CheckpointError(f"{path}: {name} is missing")
            if _sha256(file) != digest:
                raise CheckpointError(f"{path}: {name} does not match its checksum")
        offsets = {(t, int(p)): int(o) for t, p, o in manifest["offsets"]}
        return Checkpoint(path, int(manifest["sequence"]), offsets, manifest)

    def latest(self) -> Checkpoint | None:
        """The newest intact checkpoint (damaged newer ones are skipped with a warning)."""
        for _, path in reversed(self._sequences()):
            try:
                return self.verify(path)
            except CheckpointError as exc:
                log.warning("skipping damaged checkpoint: %s; trying the previous one", exc)
        return None

    def restore(self, learner: Learner, events_topic: str | None = None) -> Checkpoint | None:
        """Load the newest intact checkpoint into ``learner``; None when there is none.

        A checkpoint made while consuming another events topic is refused: its state and
        offsets belong to that stream."""
        started = time.perf_counter()
        checkpoint = self.latest()
        if checkpoint is None:
            return None
        made_for = checkpoint.manifest.get("events_topic")
        if events_topic is not None and made_for is not None and made_for != events_topic:
            raise CheckpointError(
                f"the checkpoint in {checkpoint.path} was made consuming {made_for!r}, but this"
                f" worker consumes {events_topic!r}: use another checkpoint directory"
                " (checkpoint.dir), or the topic the checkpoint belongs to"
            )
        kind = checkpoint.manifest.get("learner_kind")
        if kind != learner.kind:
            raise CheckpointError(
                f"the checkpoint in {checkpoint.path} was written by the {kind!r} learner but"
                f" this worker runs {learner.kind!r}: use another checkpoint directory"
                " (checkpoint.dir) or the matching learner (learner.kind)"
            )
        learner.load(checkpoint.learner_dir)
        log.info(
            "restored checkpoint %s (%d events learned) in %.2fs",
            checkpoint.path.name,
            learner.ledger.count,
            time.perf_counter() - started,
        )
        return checkpoint
