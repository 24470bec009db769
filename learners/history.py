"""Bounded per-user state: each user's recent interactions, the items they consumed, and
their newest-event marker.

An LRU by user count: touching a user makes it the most recent; past
``max_users`` the least recently active user is forgotten (its id is returned
so the learner can drop its other per-user state too). Per user, the last
``max_len`` interactions (what the user tower reads) and the last
``consumed_len`` items consumed, each flagged positive or not (what recommendations
exclude, and what co-occurrence pairs a new positive with). Consumed items are
int64 handles the learner takes from its catalog (``learners/slots.py``), packed
with their flag in one array per user: 8 bytes an item, where a string and a
tuple cost about 120 — a thousand items for each of 100 000 users is 1 GB, not 12.

>>> from datetime import datetime, UTC
>>> h = UserHistory(max_users=2, max_len=3)
>>> t = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
>>> for i, user in enumerate(["a", "b", "a", "c"]):
...     evicted = h.add(user, Interaction(f"item{i}", "click", None, t + i),
...                     EventMarker(f"e{i}", t + i))
>>> evicted, sorted(h.users()), [x.item_id for x in h.recent("a")]
(['b'], ['a', 'c'], ['item2', 'item0'])
>>> h = UserHistory(max_users=2, max_len=3, consumed_len=2)
>>> for handle in [7, 8, 9]:
...     _ = h.add("a", None, EventMarker("e", t), Consumed.of(handle, positive=handle != 8))
>>> h.consumed("a").handles.tolist(), h.positives("a").tolist()
([8, 9], [9])
>>> h.consumed_items  # held in memory: the oldest go once 16 past the bound
3
"""

from __future__ import annotations

from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from schemas.events import InteractionEvent
    from schemas.vectors import SourcePosition

__all__ = ["Consumed", "EventMarker", "Interaction", "UserHistory", "UserRecord", "marker_of"]


@dataclass(frozen=True, slots=True)
class Interaction:
    """One past interaction as the learners remember it."""

    item_id: str
    event_type: str
    value: float | None
    timestamp: float  # seconds since the epoch
    snippet: str | None = None  # the start of the review text, if any


@dataclass(frozen=True, slots=True)
class EventMarker:
    """The newest event reflected in a user's state, and where it came from."""

    event_id: str
    timestamp: float
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


def marker_of(event: InteractionEvent, position: SourcePosition | None) -> EventMarker:
    """The marker recording ``event`` (and where it came from) as a user's newest event."""
    if position is None:
        return EventMarker(event.event_id, event.timestamp.timestamp())
    return EventMarker(
        event.event_id,
        event.timestamp.timestamp(),
        position.topic,
        position.partition,
        position.offset,
    )


@dataclass(frozen=True, slots=True)
class Consumed:
    """Items a user consumed, oldest first: catalog handles and whether each was positive."""

    handles: np.ndarray  # [n] int64
    positive: np.ndarray  # [n] bool

    @staticmethod
    def of(handle: int, positive: bool) -> Consumed:
        return Consumed(np.array([handle], np.int64), np.array([positive]))


@dataclass(slots=True)
class UserRecord:
    marker: EventMarker
    events_seen: int = 0
    recent: deque[Interaction] = field(default_factory=deque)
    consumed: array[int] = field(default_factory=lambda: array("q"))  # handle << 1 | positive


class UserHistory:
    """Recent interactions (newest first) and markers, for at most ``max_users`` users."""

    def __init__(self, max_users: int = 100_000, max_len: int = 20, consumed_len: int = 0) -> None:
        self.max_users = max_users
        self.max_len = max_len
        self.consumed_len = consumed_len
        # a user's array trims its oldest items once this many past the bound: amortised
        self._slack = max(16, consumed_len // 4)
        self._users: OrderedDict[str, UserRecord] = OrderedDict()
        self.consumed_items = 0  # held in all users' arrays (slack included): the memory bound

    def __len__(self) -> int:
        return len(self._users)

    @property
    def capacity(self) -> int:
        """The most consumed items all users' arrays can hold."""
        return self.max_users * (self.consumed_len + self._slack) if self.consumed_len else 0

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._users

    def users(self) -> Iterator[str]:
        return iter(self._users)

    def get(self, user_id: str) -> UserRecord | None:
        return self._users.get(user_id)

    def recent(self, user_id: str) -> list[Interaction]:
        """The user's remembered interactions, newest first."""
        record = self._users.get(user_id)
        return list(reversed(record.recent)) if record is not None else []

    def consumed(self, user_id: str) -> Consumed:
        """The last ``consumed_len`` items the user consumed, oldest first."""
        codes = self._codes(user_id)
        return Consumed(codes >> 1, (codes & 1).astype(bool))

    def positives(self, user_id: str, k: int | None = None) -> np.ndarray:
        """Handles of the user's last ``k`` positive items (all remembered by default),
        oldest first."""
        codes = self._codes(user_id)
        handles: np.ndarray = codes[(codes & 1).astype(bool)] >> 1
        return handles if k is None else handles[len(handles) - min(k, len(handles)) :]

    def _codes(self, user_id: str) -> np.ndarray:
        record = self._users.get(user_id)
        if record is None or not record.consumed:
            return np.zeros(0, dtype=np.int64)
        return self._kept(record).copy()

    def _kept(self, record: UserRecord) -> np.ndarray:
        """A view of the user's last ``consumed_len`` codes (the slack beyond is not read)."""
        held = np.frombuffer(record.consumed, dtype=np.int64)
        return held[max(0, len(held) - self.consumed_len) :]

    def add(
        self,
        user_id: str,
        interaction: Interaction | None,
        marker: EventMarker,
        consumed: Consumed | None = None,
    ) -> list[str]:
        """Record one event of ``user_id``; returns the users evicted to stay bounded.

        ``interaction`` is None for events that update the marker but are not
        remembered as history, ``consumed`` None for events that consume nothing
        (the learner decides which are)."""
        record = self._users.get(user_id)
        if record is None:
            record = UserRecord(marker=marker, recent=deque(maxlen=self.max_len))
            self._users[user_id] = record
        else:
            self._users.move_to_end(user_id)
            record.marker = marker
        record.events_seen += 1
        if interaction is not None:
            record.recent.append(interaction)
        if consumed is not None:
            self._append(record, consumed.handles << 1 | consumed.positive)
        evicted = []
        while len(self._users) > self.max_users:
            old, gone = self._users.popitem(last=False)
            self.consumed_items -= len(gone.consumed)
            evicted.append(old)
        return evicted

    def _append(self, record: UserRecord, codes: np.ndarray) -> None:
        if not self.consumed_len:
            return
        held = record.consumed
        before = len(held)
        held.frombytes(np.ascontiguousarray(codes, dtype=np.int64).tobytes())
        if len(held) > self.consumed_len + self._slack:
            del held[: len(held) - self.consumed_len]
        self.consumed_items += len(held) - before

    def remove(self, user_id: str) -> bool:
        """Forget ``user_id`` entirely; True when it was known."""
        record = self._users.pop(user_id, None)
        if record is not None:
            self.consumed_items -= len(record.consumed)
        return record is not None

    def to_json(self) -> dict[str, Any]:
        """Columnar JSON, in LRU order (least recent first); consumed items are arrays
        (:meth:`consumed_arrays`)."""
        users = []
        for user_id, r in self._users.items():
            m = r.marker
            users.append(
                [
                    user_id,
                    r.events_seen,
                    [m.event_id, m.timestamp, m.topic, m.partition, m.offset],
                    [[x.item_id, x.event_type, x.value, x.timestamp, x.snippet] for x in r.recent],
                ]
            )
        return {
            "max_users": self.max_users,
            "max_len": self.max_len,
            "consumed_len": self.consumed_len,
            "users": users,
        }

    def consumed_arrays(self) -> dict[str, np.ndarray]:
        """Every user's consumed items, in :meth:`to_json`'s user order: ``codes`` end to
        end and ``lengths`` per user."""
        records = list(self._users.values())
        held = [self._kept(r) for r in records]
        return {
            "codes": np.concatenate([np.zeros(0, np.int64), *held]),
            "lengths": np.array([len(h) for h in held], dtype=np.int64),
        }

    @classmethod
    def from_json(
        cls,
        data: dict[str, Any],
        consumed: dict[str, np.ndarray] | None = None,
        handles_of: Callable[[list[str]], np.ndarray] | None = None,
    ) -> UserHistory:
        """The history :meth:`to_json` and :meth:`consumed_arrays` saved. A user row that
        lists its consumed items by id (checkpoints from before handles) takes their
        handles from ``handles_of`` (-1: an item no longer known, dropped)."""
        history = cls(
            max_users=int(data["max_users"]),
            max_len=int(data["max_len"]),
            consumed_len=int(data.get("consumed_len", 0)),
        )
        lengths = consumed["lengths"].tolist() if consumed else [0] * len(data["users"])
        if len(lengths) != len(data["users"]):
            raise ValueError(
                f"the consumed items list {len(lengths)} users where the history lists"
                f" {len(data['users'])}: the checkpoint is damaged"
            )
        ends = np.cumsum([0, *lengths])
        for k, (user_id, seen, marker, recent, *by_id) in enumerate(data["users"]):
            record = UserRecord(
                marker=EventMarker(*marker),
                events_seen=int(seen),
                recent=deque((Interaction(*x) for x in recent), maxlen=history.max_len),
            )
            history._users[user_id] = record
            if consumed:
                history._append(record, consumed["codes"][ends[k] : ends[k + 1]])
            elif by_id and by_id[0] and handles_of is not None:
                handles = handles_of([i for i, _ in by_id[0]])
                positive = np.array([bool(p) for _, p in by_id[0]])
                kept = handles >= 0
                history._append(record, handles[kept] << 1 | positive[kept])
        return history
