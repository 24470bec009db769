"""Keeping published vectors current: which users and items to publish again.

A vector on the compacted topics was computed with the model as it was when published;
the model moves on with every update. :class:`Refresher` remembers, per user and per item
(bounded, LRU), the learner update a vector was last published at, in publish order — and
since updates only grow, that order is oldest first. It hands out those published before
the current update from the front, a few per batch and more while the stream is idle, so
served vectors converge to the model's without a pass over every user per batch.

>>> r = Refresher(capacity=10)
>>> r.published("user", ["a", "b"], update=1)
>>> r.published("user", ["a"], update=3)
>>> r.seed("user", ["a", "b", "c"])     # c is known but was never published
>>> r.stale("user", update=3, n=5)       # never published first, then the oldest
['c', 'b']
>>> r.published("user", ["a", "b", "c"], update=5)
>>> r.rewound(4)                         # a roll-back: the model is at update 4 again
>>> r.stale("user", update=4, n=5), r.behind("user", 4)
(['a', 'b', 'c'], 5)
>>> r.published("user", ["a", "b", "c"], update=4)
>>> r.outdated(4)                        # the model's derived state changed at update 4
>>> r.stale("user", update=4, n=5), r.behind("user", 4)
(['a', 'b', 'c'], 1)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

__all__ = ["Refresher"]

NEVER = -1  # the update of a vector never published (or whose publishing failed)


class Refresher:
    """The update each user's and item's vector was last published at, oldest first.

    After a roll-back the learner's update count goes back: :meth:`rewound` sends the
    vectors published under the abandoned updates to the front. Past ``capacity`` ids per
    kind the oldest are dropped and counted in ``evicted``: their vectors are no longer
    tracked, so the refresher cannot tell that every published vector is current."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self.evicted = 0
        self._at: dict[str, OrderedDict[str, int]] = {"user": OrderedDict(), "item": OrderedDict()}

    def __len__(self) -> int:
        return sum(len(at) for at in self._at.values())

    def count(self, kind: str) -> int:
        return len(self._at[kind])

    def behind(self, kind: str, update: int) -> int:
        """Updates since the oldest tracked vector of ``kind`` was published (0: all are of
        ``update``; never-published ones count as older than any)."""
        oldest = next(iter(self._at[kind].values()), update)
        return max(0, update - oldest)

    @property
    def bound(self) -> int:
        """How many ids it holds at most (``capacity`` per kind)."""
        return self.capacity * len(self._at)

    def published(self, kind: str, ids: Iterable[str], update: int) -> None:
        at = self._at[kind]
        for i in ids:
            at[i] = update
            at.move_to_end(i)
        while len(at) > self.capacity:
            at.popitem(last=False)
            self.evicted += 1

    def unpublished(self, kind: str, ids: Iterable[str]) -> None:
        """These ids' newest vectors did not reach the topic: send them first."""
        at = self._at[kind]
        for i in ids:
            at[i] = NEVER
            at.move_to_end(i, last=False)

    def rewound(self, update: int) -> None:
        """The model went back to ``update``: vectors published after it are stale."""
        for at in self._at.values():
            newer = []
            for i in reversed(at):  # the newest are at the back
                if at[i] <= update:
                    break
                newer.append(i)
            for i in newer:
                at[i] = NEVER
                at.move_to_end(i, last=False)

    def outdated(self, update: int) -> None:
        """What vectors are built from changed without an update (cached encodings caught
        up with the model): those published at ``update`` count as one update old. They are
        the newest, at the back, so the order stays oldest first."""
        for at in self._at.values():
            for i in reversed(at):
                if at[i] < update:
                    break
                at[i] = update - 1

    def seed(self, kind: str, known: Iterable[str]) -> None:
        """Known ids not tracked yet (a learner restored from a checkpoint) were never
        published by this process: they go first."""
        self.unpublished(kind, [i for i in known if i not in self._at[kind]])

    def forget(self, kind: str, ids: Iterable[str]) -> None:
        for i in ids:
            self._at[kind].pop(i, None)

    def stale(self, kind: str, update: int, n: int) -> list[str]:
        """Up to ``n`` ids published before ``update``, oldest first."""
        out: list[str] = []
        for i, at in self._at[kind].items():
            if len(out) >= n or at >= update:
                break
            out.append(i)
        return out
