"""Bounded per-user state: each user's recent interactions, the items they consumed, and
their newest-event marker.

An LRU by user count: touching a user makes it the most recent; past
``max_users`` the least recently active user is forgotten (its id is returned
so the learner can drop its other per-user state too). Per user, the last
``max_len`` interactions (what the user tower reads) and the last
``consumed_len`` items consumed, each flagged positive or not (what recommendations
exclude, and what co-occurrence pairs a new positive with).

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.events import InteractionEvent
    from schemas.vectors import SourcePosition

__all__ = ["EventMarker", "Interaction", "UserHistory", "UserRecord", "marker_of"]


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


@dataclass(slots=True)
class UserRecord:
    marker: EventMarker
    events_seen: int = 0
    recent: deque[Interaction] = field(default_factory=deque)
    consumed: deque[tuple[str, bool]] = field(default_factory=deque)  # (item, positive)


class UserHistory:
    """Recent interactions (newest first) and markers, for at most ``max_users`` users."""

    def __init__(self, max_users: int = 100_000, max_len: int = 20, consumed_len: int = 0) -> None:
        self.max_users = max_users
        self.max_len = max_len
        self.consumed_len = consumed_len
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

    def consumed(self, user_id: str) -> list[tuple[str, bool]]:
        """(item, positive) the user consumed, oldest first."""
        record = self._users.get(user_id)
        return list(record.consumed) if record is not None else []

    def positives(self, user_id: str, k: int | None = None) -> list[str]:
        """The user's last ``k`` positive items (all remembered by default), oldest first."""
        record = self._users.get(user_id)
        items = [i for i, positive in record.consumed if positive] if record else []
        return items if k is None else items[-k:]

    def add(
        self,
        user_id: str,
        interaction: Interaction | None,
        marker: EventMarker,
        consumed: tuple[str, bool] | None = None,
    ) -> list[str]:
        """Record one event of ``user_id``; returns the users evicted to stay bounded.

        ``interaction`` is None for events that update the marker but are not
        remembered as history, ``consumed`` None for events that consume nothing
        (the learner decides which are)."""
        record = self._users.get(user_id)
        if record is None:
            record = UserRecord(
                marker=marker,
                recent=deque(maxlen=self.max_len),
                consumed=deque(maxlen=self.consumed_len),
            )
            self._users[user_id] = record
        else:
            self._users.move_to_end(user_id)
            record.marker = marker
        record.events_seen += 1
        if interaction is not None:
            record.recent.append(interaction)
        if consumed is not None and self.consumed_len:
            record.consumed.append(consumed)
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
                    [[i, int(p)] for i, p in r.consumed],
                ]
            )
        return {
            "max_users": self.max_users,
            "max_len": self.max_len,
            "consumed_len": self.consumed_len,
            "users": users,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserHistory:
        history = cls(
            max_users=int(data["max_users"]),
            max_len=int(data["max_len"]),
            consumed_len=int(data.get("consumed_len", 0)),
        )
        for user_id, seen, marker, recent, *rest in data["users"]:
            consumed = rest[0] if rest else []
            history._users[user_id] = UserRecord(
                marker=EventMarker(*marker),
                events_seen=int(seen),
                recent=deque((Interaction(*x) for x in recent), maxlen=history.max_len),
                consumed=deque(((i, bool(p)) for i, p in consumed), maxlen=history.consumed_len),
            )
        return history
