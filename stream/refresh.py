"""Keeping published vectors current: which users and items to publish again.

A vector on the compacted topics was computed with the model as it was when published;
the model moves on with every update. :class:`Refresher` remembers, per user and per item
(bounded, LRU), the learner update a vector was published at, and hands out those that
are older than the current update — oldest first, a few per batch and more while the
stream is idle — so served vectors converge to the model's.

>>> r = Refresher(capacity=10)
>>> r.published("user", ["a", "b"], update=1)
>>> r.published("user", ["a"], update=3)
>>> r.stale("user", ["a", "b", "c"], update=3, n=5)   # c never published, b from update 1
['c', 'b']
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

__all__ = ["Refresher"]


class Refresher:
    """The update each user's and item's vector was last published at."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self._at: dict[str, OrderedDict[str, int]] = {"user": OrderedDict(), "item": OrderedDict()}

    def published(self, kind: str, ids: Iterable[str], update: int) -> None:
        at = self._at[kind]
        for i in ids:
            at[i] = update
            at.move_to_end(i)
        while len(at) > self.capacity:
            at.popitem(last=False)

    def forget(self, kind: str, ids: Iterable[str]) -> None:
        for i in ids:
            self._at[kind].pop(i, None)

    def stale(self, kind: str, known: Sequence[str], update: int, n: int) -> list[str]:
        """Up to ``n`` of ``known`` published before ``update`` (never published first,
        then the oldest)."""
        if n <= 0:
            return []
        at = self._at[kind]
        behind = [(at.get(i, -1), k) for k, i in enumerate(known) if at.get(i, -1) < update]
        behind.sort()
        return [known[k] for _, k in behind[:n]]

    def lag(self, kind: str, update: int) -> list[int]:
        """How many updates behind each published vector is."""
        return [update - u for u in self._at[kind].values()]
