"""Checkpoints: the learner's state together with the offsets it reflects, written atomically.

Layout under the checkpoint directory::

    ckpt-000000000007/
        manifest.json          # offsets, ledger, sha256 of every other file, and a digest
        stream.safetensors     # the worker's own state (recently learned event ids)
        learner/...            # whatever the learner saves (safetensors, JSON, PEFT adapter)
    quarantine-ckpt-000000000006-20261125T101500/   # damaged: moved aside, never deleted

A checkpoint is built in ``.tmp-ckpt-*``; every file and directory is fsynced,
then the directory is renamed into place and its parent fsynced, so a crash
leaves either the complete new checkpoint or none. The manifest is a validated
model whose ``digest`` (sha256 of its other fields) covers the offsets and the
ledger too: a hand-edited offset is damage like a flipped bit. On restore the
newest checkpoint that verifies wins; damaged ones are moved to
``quarantine-*`` for a person to look at. The newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from learners.base import IncompatibleState, Learner
from learners.state_io import load_arrays, save_arrays
from stream.offsets import PartitionKey

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointSchedule",
    "CheckpointStore",
    "CheckpointWriteError",
    "Manifest",
    "Restored",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
_PREFIX = "ckpt-"
_TMP_PREFIX = ".tmp-ckpt-"
_QUARANTINE_PREFIX = "quarantine-"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (damaged, or written by another kind of learner)."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint cannot be written (read-only or full disk, permissions)."""


class Manifest(BaseModel):
    """What a checkpoint holds; ``digest`` is the sha256 of every other field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[2]
    sequence: int
    created_at: AwareDatetime
    learner_kind: str
    learner_version: str
    ledger: dict[str, Any]
    offsets: list[tuple[str, int, int]]  # (topic, partition, next offset)
    files: dict[str, str]  # relative path -> sha256
    worker: str | None = None
    group_id: str | None = None
    events_topic: str | None = None
    # the state reads every partition it has no offset for from its earliest offset: it was
    # restored behind damaged checkpoints, whose offsets it never learned up to
    from_earliest: bool = False
    digest: str

    def offset_map(self) -> dict[PartitionKey, int]:
        return {(t, p): o for t, p, o in self.offsets}

    @staticmethod
    def digest_of(fields: Mapping[str, Any]) -> str:
        body = {k: v for k, v in fields.items() if k != "digest"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A complete, verified checkpoint on disk."""

    path: Path
    manifest: Manifest

    @property
    def sequence(self) -> int:
        return self.manifest.sequence

    @property
    def offsets(self) -> dict[PartitionKey, int]:
        return self.manifest.offset_map()

    @property
    def learner_dir(self) -> Path:
        return self.path / "learner"

    def stream_arrays(self) -> dict[str, np.ndarray]:
        return load_arrays(self.path / "stream.safetensors")


@dataclass(frozen=True)
class Restored:
    """What :meth:`CheckpointStore.restore` found: the checkpoint loaded (None: none intact),
    the damaged ones it moved aside, and whether the state loaded is behind damaged ones —
    a damaged checkpoint, moved aside now or earlier, is newer than the one loaded, or the
    one loaded was saved by a state that was (``Manifest.from_earliest``). Offsets only the
    damaged ones covered (and committed) are unknown to such a state, and stay unknown in
    every checkpoint it writes until it has read the partition: a worker restarted after
    moving one aside is as far behind it as the worker that moved it, and so is one
    restarted from a checkpoint written before it placed every partition. With none loaded
    it is False: a fresh learner, where allowed, starts at the group's offsets."""

    checkpoint: Checkpoint | None
    quarantined: list[Path] = field(default_factory=list)
    behind_damaged: bool = False


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


def _is_io_error(exc: BaseException) -> bool:
    """An OSError, or a library's wrapper of one (safetensors raises its own error type
    with the OS error in its message)."""
    return isinstance(exc, OSError) or "os error" in str(exc).lower()


def _write_error(root: Path, exc: BaseException) -> CheckpointWriteError:
    what = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    where = exc.filename if isinstance(exc, OSError) and exc.filename else root
    return CheckpointWriteError(
        f"cannot write a checkpoint under {root}: {what} ({where}). Nothing past the last"
        " checkpoint was committed. Free space, make the directory writable, or point"
        " checkpoint.dir (--checkpoint-dir) elsewhere."
    )


class CheckpointStore:
    """Writes, verifies, restores and quarantines checkpoints under ``root``."""

    def __init__(self, root: Path, keep: int = 3) -> None:
        self.root = root
        self.keep = keep
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._probe()
        except OSError as exc:
            raise _write_error(root, exc) from exc
        for stale in root.glob(_TMP_PREFIX + "*"):  # left by a crash mid-write
            shutil.rmtree(stale, ignore_errors=True)

    def _probe(self) -> None:
        """Write, fsync and remove a small file: a read-only or full disk shows at start."""
        probe = self.root / f".probe-{os.getpid()}"
        with probe.open("wb") as f:
            f.write(b"lorastream")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()

    def _sequences(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.root.glob(_PREFIX + "*"):
            try:
                found.append((int(path.name[len(_PREFIX) :]), path))
            except ValueError:
                continue
        return sorted(found)

    def _next_sequence(self) -> int:
        """After every checkpoint ever written here, quarantined ones included."""
        used = [n for n, _ in self._sequences()] + self._quarantined_sequences()
        return max(used, default=0) + 1

    def _quarantined_sequences(self) -> list[int]:
        found = []
        for path in self.quarantined():
            digits = path.name[len(_QUARANTINE_PREFIX + _PREFIX) :].split("-", 1)[0]
            if digits.isdecimal() and digits.isascii():
                found.append(int(digits))
        return found

    def quarantined(self) -> list[Path]:
        return sorted(self.root.glob(_QUARANTINE_PREFIX + "*"))

    def save(
        self,
        learner: Learner,
        offsets: Mapping[PartitionKey, int],
        stream_arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, str | bool | None],
    ) -> Checkpoint:
        """Write a new checkpoint atomically; returns it once durable.
        Raises :class:`CheckpointWriteError` when the disk refuses."""
        sequence = self._next_sequence()
        tmp = self.root / f"{_TMP_PREFIX}{sequence:012d}-{os.getpid()}"
        final = self.root / f"{_PREFIX}{sequence:012d}"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "learner").mkdir(parents=True)
            learner.save(tmp / "learner")
            save_arrays(tmp / "stream.safetensors", dict(stream_arrays))
            fields: dict[str, Any] = {
                "format_version": FORMAT_VERSION,
                "sequence": sequence,
                "created_at": datetime.now(UTC).isoformat(),
                "learner_kind": learner.kind,
                "learner_version": learner.version,
                "ledger": learner.ledger.to_json(),
                "offsets": [[t, p, o] for (t, p), o in sorted(offsets.items())],
                "files": {
                    str(p.relative_to(tmp)): _sha256(p)
                    for p in sorted(tmp.rglob("*"))
                    if p.is_file()
                },
                **meta,
            }
            fields["digest"] = Manifest.digest_of(fields)
            manifest = Manifest.model_validate(fields)
            (tmp / "manifest.json").write_text(json.dumps(fields, indent=1, sort_keys=True))
            _fsync_tree(tmp)
            os.rename(tmp, final)
            _fsync_dir(self.root)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if _is_io_error(exc):
                raise _write_error(self.root, exc) from exc
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._prune()
        return Checkpoint(final, manifest)

    def _prune(self) -> None:
        for _, path in self._sequences()[: -self.keep]:
            shutil.rmtree(path, ignore_errors=True)

    def verify(self, path: Path) -> Checkpoint:
        """Read and check one checkpoint; raises :class:`CheckpointError` when damaged."""
        try:
            fields = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: manifest unreadable ({exc})") from exc
        if not isinstance(fields, dict):
            raise CheckpointError(f"{path}: the manifest is not a JSON object")
        if fields.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: format {fields.get('format_version')!r}, this lorastream reads"
                f" {FORMAT_VERSION}"
            )
        try:
            manifest = Manifest.model_validate(fields)
        except ValidationError as exc:
            raise CheckpointError(
                f"{path}: the manifest is incomplete or malformed: {exc}"
            ) from exc
        if Manifest.digest_of(fields) != manifest.digest:
            raise CheckpointError(
                f"{path}: the manifest does not match its digest (offsets, ledger or file list"
                " were changed after it was written)"
            )
        for name, digest in manifest.files.items():
            file = path / name
            if not file.is_file():
                raise CheckpointError(f"{path}: {name} is missing")
            if _sha256(file) != digest:
                raise CheckpointError(f"{path}: {name} does not match its checksum")
        return Checkpoint(path, manifest)

    def latest(self) -> Checkpoint | None:
        """The newest intact checkpoint (read-only: damaged ones are skipped, not moved)."""
        for _, path in reversed(self._sequences()):
            try:
                return self.verify(path)
            except CheckpointError as exc:
                log.warning("skipping damaged checkpoint: %s", exc)
        return None

    def quarantine(self, path: Path, reason: str) -> Path:
        """Move a damaged checkpoint aside (never deleted: a person decides)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        target = self.root / f"{_QUARANTINE_PREFIX}{path.name}-{stamp}"
        try:
            os.rename(path, target)
        except OSError as exc:
            raise _write_error(self.root, exc) from exc
        log.error("damaged checkpoint moved to %s: %s", target, reason)
        return target

    def restore(self, learner: Learner, events_topic: str | None = None) -> Restored:
        """Load the newest intact checkpoint into ``learner``, quarantining damaged newer ones.

        A checkpoint made while consuming another events topic, by another kind of learner,
        or with learner settings that shape its state differently, is refused
        (:class:`CheckpointError`): that is a configuration mistake, not damage."""
        started = time.perf_counter()
        quarantined: list[Path] = []
        for _, path in reversed(self._sequences()):
            try:
                checkpoint = self.verify(path)
            except CheckpointError as exc:
                quarantined.append(self.quarantine(path, str(exc)))
                continue
            self._check_fits(checkpoint, learner, events_topic)
            try:
                learner.load(checkpoint.learner_dir)
            except IncompatibleState as exc:
                raise CheckpointError(str(exc)) from exc
            log.info(
                "restored checkpoint %s (%d events learned) in %.2fs",
                checkpoint.path.name,
                learner.ledger.count,
                time.perf_counter() - started,
            )
            newer_damaged = any(n > checkpoint.sequence for n in self._quarantined_sequences())
            behind = newer_damaged or checkpoint.manifest.from_earliest
            return Restored(checkpoint, quarantined, behind)
        return Restored(None, quarantined)  # a fresh learner starts where the group is

    @staticmethod
    def _check_fits(checkpoint: Checkpoint, learner: Learner, events_topic: str | None) -> None:
        m = checkpoint.manifest
        if (
            events_topic is not None
            and m.events_topic is not None
            and m.events_topic != events_topic
        ):
            raise CheckpointError(
                f"the checkpoint in {checkpoint.path} was made consuming {m.events_topic!r}, but"
                f" this worker consumes {events_topic!r}: use another checkpoint directory"
                " (checkpoint.dir), or the topic the checkpoint belongs to"
            )
        if m.learner_kind != learner.kind:
            raise CheckpointError(
                f"the checkpoint in {checkpoint.path} was written by the {m.learner_kind!r}"
                f" learner but this worker runs {learner.kind!r}: use another checkpoint"
                " directory (checkpoint.dir) or the matching learner (learner.kind)"
            )


class CheckpointSchedule:
    """When the next checkpoint is due: every ``every_events`` records, every ``every_s``
    seconds, or once the stream has been idle ``idle_s`` — idle measured from the first
    empty poll, so a long learner step is not a quiet stream.

    >>> s = CheckpointSchedule(every_events=100, every_s=60.0, idle_s=2.0, now=0.0)
    >>> s.add(40); s.due(1.0)
    False
    >>> s.idle(1.0); s.due(2.5), s.due(3.5)
    (False, True)
    >>> s.saved(3.5); s.due(3.5, force=True)   # nothing new since: nothing to write
    False
    """

    def __init__(
        self, every_events: int, every_s: float, idle_s: float, now: float | None = None
    ) -> None:
        self.every_events, self.every_s, self.idle_s = every_events, every_s, idle_s
        self.unsaved = 0  # records processed since the last checkpoint
        self._last = time.monotonic() if now is None else now
        self._idle_since: float | None = None

    def add(self, records: int) -> None:
        self.unsaved += records

    def busy(self) -> None:
        self._idle_since = None

    def idle(self, now: float) -> None:
        if self._idle_since is None:
            self._idle_since = now

    def idle_for(self, now: float) -> float:
        """Seconds since the first of the empty polls that followed the last record (0 while
        records come)."""
        return 0.0 if self._idle_since is None else now - self._idle_since

    def due(self, now: float, force: bool = False) -> bool:
        if self.unsaved == 0:
            return False
        return (
            force
            or self.unsaved >= self.every_events
            or now - self._last >= self.every_s
            or (self._idle_since is not None and now - self._idle_since >= self.idle_s)
        )

    def saved(self, now: float) -> None:
        self.unsaved, self._last = 0, now

    def rewound(self) -> None:
        """The state went back to the newest checkpoint: nothing is unsaved."""
        self.unsaved = 0
