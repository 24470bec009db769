"""Bounded per-user state: each user's recent interactions and newest-event marker.

An LRU by user count: touching a user makes it the most recent; past
``max_users`` the least recently active user is forgotten (its id is returned
so the learner can drop its other per-user state too).

>>> from datetime import datetime, UTC
>>> h = UserHistory(max_users=2, max_len=3)
>>> t = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
>>> for i, user in enumerate(["a", "b", "a", "c"]):
...     evicted = h.add(user, Interaction(f"item{i}", "click", None, t + i),
...                     EventMarker(f"e{i}", t + i))
>>> evicted, sorted(h.users()), [x.item_id for x in h.recent("a")]
(['b'], ['a', 'c'], ['item2', 'item0'])
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EventMarker", "Interaction", "UserHistory", "UserRecord"]


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


@dataclass(slots=True)
class UserRecord:
    marker: EventMarker
    events_seen: int = 0
    recent: deque[Interaction] = field(default_factory=deque)


class UserHistory:
    """Recent interactions (newest first) and markers, for at most ``max_users`` users."""

    def __init__(self, max_users: int = 100_000, max_len: int = 20) -> None:
        self.max_users = max_users
        self.max_len = max_len
        self._users: OrderedDict[str, UserRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._users)

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

    def add(self, user_id: str, interaction: Interaction | None, marker: EventMarker) -> list[str]:
        """Record one event of ``user_id``; returns the users evicted to stay bounded.

        ``interaction`` is None for events that update the marker but are not
        remembered as history (the learner decides which are)."""
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
        evicted = []
        while len(self._users) > self.max_users:
            old, _ = self._users.popitem(last=False)
            evicted.append(old)
        return evicted

    def remove(self, user_id: str) -> bool:
        """Forget ``user_id`` entirely; True when it was known."""
        return self._users.pop(user_id, None) is not None

    def to_json(self) -> dict[str, Any]:
        """Columnar JSON, in LRU order (least recent first)."""
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
        return {"max_users": self.max_users, "max_len": self.max_len, "users": users}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserHistory:
        history = cls(max_users=int(data["max_users"]), max_len=int(data["max_len"]))
        for user_id, seen, marker, recent in data["users"]:
            history._users[user_id] = UserRecord(
                marker=EventMarker(*marker),
                events_seen=int(seen),
                recent=deque((Interaction(*x) for x in recent), maxlen=history.max_len),
            )
        return history
