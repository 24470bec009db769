"""A bounded window of recently learned event ids, so producer retries are learned once.

Ids are kept as 64-bit hashes (the same hash as the learners' ledger), in
arrival order; past ``capacity`` the oldest are forgotten.

>>> w = RecentEvents(capacity=2)
>>> w.fresh(["a", "b", "a"])
[True, True, False]
>>> w.remember(["a", "b"]); w.fresh(["a", "c"])
[False, True]
>>> w.remember(["c"]); w.fresh(["a"])   # "a" fell out of the window
[True]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from learners.ledger import event_hash

__all__ = ["RecentEvents"]


class RecentEvents:
    """The last ``capacity`` event ids learned."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def fresh(self, event_ids: Sequence[str]) -> list[bool]:
        """Per id: not learned yet and not repeated earlier in ``event_ids``."""
        if self.capacity == 0:
            return [True] * len(event_ids)
        batch: set[int] = set()
        out = []
        for event_id in event_ids:
            h = event_hash(event_id)
            out.append(h not in self._seen and h not in batch)
            batch.add(h)
        return out

    def remember(self, event_ids: Sequence[str]) -> None:
        if self.capacity == 0:
            return
        for event_id in event_ids:
            h = event_hash(event_id)
            self._seen[h] = None
            self._seen.move_to_end(h)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def to_array(self) -> np.ndarray:
        return np.fromiter(self._seen, dtype=np.uint64, count=len(self._seen))

    def load_array(self, hashes: np.ndarray) -> None:
        """Replace the window with saved hashes (oldest first), in place."""
        self._seen = OrderedDict.fromkeys(
            int(h) for h in (hashes[-self.capacity :] if self.capacity else [])
        )

    @classmethod
    def from_array(cls, capacity: int, hashes: np.ndarray) -> RecentEvents:
        window = cls(capacity)
        window.load_array(hashes)
        return window
