"""The ``Learner`` protocol: all the stream worker knows about a learner.

A learner learns mini-batches of validated events, returns vectors for the
users (and items) it knows, and saves/loads its whole state to a directory,
in files of its choosing but never pickles. The worker owns *when* state is
saved and couples it with the offsets it reflects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from learners.history import EventMarker
from learners.ledger import EventLedger
from schemas.events import InteractionEvent
from schemas.vectors import SourcePosition

__all__ = [
    "CatchUp",
    "IncompatibleState",
    "LearnReport",
    "Learner",
    "LearnerInfo",
    "Unscheduled",
    "VectorBatch",
]


@dataclass(frozen=True)
class VectorBatch:
    """Vectors for a list of ids: ``vectors[i]`` belongs to ``ids[i]``.

    ``markers[i]`` is the newest event reflected (users; None for items or
    for users the learner no longer remembers). ``sparse[i]`` (item keys, values), where
    given, adds its dot product to the dense one; ``consumed[i]`` lists a user's consumed
    items, newest first.
    """

    ids: list[str]
    vectors: np.ndarray  # [n, dim] float32
    version: str
    markers: list[EventMarker | None] = field(default_factory=list)
    events_seen: list[int] = field(default_factory=list)
    sparse: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    consumed: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class LearnReport:
    """What one ``learn_many`` call did; the worker turns it into metrics and logs."""

    events: int = 0
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    loss: float | None = None
    skipped_update: bool = False  # a non-finite loss left the parameters unchanged
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (batch index, reason)
    metrics: dict[str, float] = field(default_factory=dict)  # rolling prequential metrics etc.
    test_errors: np.ndarray = field(default_factory=lambda: np.zeros(0))  # 1 - hit@10 per test
    example_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per example


@dataclass(frozen=True)
class CatchUp:
    """What one ``catch_up`` call did: entries of derived state recomputed from the current
    model, and how many are still older than it."""

    redone: int = 0
    behind: int = 0


@dataclass(frozen=True)
class LearnerInfo:
    """What a learner is, for the worker's build-info metric: the model it learns (a
    backbone's name, or the learner's kind where it has none) and the device it runs on."""

    model: str
    device: str = "cpu"


class Unscheduled:
    """The protocol's descriptive part for a learner without a learning-rate schedule or a
    backbone: every update at the configured rate, the model named by the learner's kind."""

    kind: str

    @property
    def lr_annealing(self) -> float:
        return 1.0

    @property
    def info(self) -> LearnerInfo:
        return LearnerInfo(model=self.kind)


class IncompatibleState(ValueError):
    """Saved state this learner cannot resume: intact, but made with settings that shape the
    state differently. A configuration mistake, not damage."""


@runtime_checkable
class Learner(Protocol):
    """What stream/ needs from a learner."""

    kind: str

    @property
    def version(self) -> str:
        """Model and adapter version stamped on every vector produced."""
        ...

    @property
    def ledger(self) -> EventLedger:
        """Count and fingerprint of the events this state reflects."""
        ...

    @property
    def updates(self) -> int:
        """Updates applied so far (the adapter version)."""
        ...

    @property
    def lr_annealing(self) -> float:
        """The factor a learning-rate schedule puts on the next update, in (0, 1]; 1 for
        a learner without one. Part of the state: a restored learner has the saved one."""
        ...

    @property
    def info(self) -> LearnerInfo:
        """The model and device, for the build-info metric."""
        ...

    def set_boost(self, lr_factor: float = 1.0, replay_factor: float = 1.0) -> None:
        """Scale learning rate (and replay mix, where there is one) until called again."""
        ...

    def learn_many(
        self, events: Sequence[InteractionEvent], positions: Sequence[SourcePosition]
    ) -> LearnReport:
        """Learn a mini-batch (prequentially: evaluate each event before learning it)."""
        ...

    def catch_up(self, budget: int) -> CatchUp:
        """Recompute up to ``budget`` entries of state derived from the model (cached item
        encodings), stalest first, changing no parameter; ``budget = 0`` only counts what is
        behind. Once nothing is, every vector it builds is of :attr:`version` alone."""
        ...

    def user_vectors(self, user_ids: Sequence[str]) -> VectorBatch:
        """Current vectors of the given users (those it knows)."""
        ...

    def item_vectors(self, item_ids: Sequence[str]) -> VectorBatch:
        """Current vectors of the given items (those it knows)."""
        ...

    def known_items(self) -> list[str]:
        """Ids of every item the learner holds state for."""
        ...

    def known_users(self) -> list[str]:
        """Ids of every user the learner holds state for."""
        ...

    def forget_users(self, user_ids: Sequence[str]) -> list[str]:
        """Drop every state kept about these users (history, replay, per-user parameters);
        returns the ids it knew. Learned shared parameters stay."""
        ...

    def item_texts(self, item_ids: Sequence[str]) -> dict[str, str]:
        """The text the learner knows for these items (may be empty)."""
        ...

    def state_sizes(self) -> dict[str, tuple[float, float]]:
        """``{state: (entries, capacity)}`` of every bounded state it holds."""
        ...

    def save(self, directory: Path) -> None:
        """Write the whole state into ``directory`` (which exists and is empty)."""
        ...

    def load(self, directory: Path) -> None:
        """Replace the state with the one saved in ``directory``."""
        ...
