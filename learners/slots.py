"""A bounded id → slot index with LRU eviction and uniform sampling of live ids.

Learners keep per-item rows (vectors, counts) in arrays indexed by slot; when
the index is full, the least recently used id gives up its slot. A *handle*
names a slot as it is held now (the slot and how many ids it has let go):
state kept beside the index, such as the items a user consumed, stores handles,
and a handle whose slot went to another id since resolves to -1 instead of to
that id.

>>> import numpy as np
>>> idx = SlotIndex(capacity=2)
>>> idx.add("a"), idx.add("b"), idx.add("a")
((0, None), (1, None), (0, None))
>>> idx.add("c")  # "b" is least recently used
(1, 'b')
>>> sorted(set(idx.ids_of(idx.sample(10, np.random.default_rng(0)))))
['a', 'c']
>>> a = idx.handles(np.array([0])); idx.resolve(a).tolist()
[0]
>>> idx.remove("a"), idx.add("d"), idx.resolve(a).tolist()  # slot 0 now holds "d"
(0, (0, None), [-1])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["SlotIndex"]

_SLOT_BITS = 32  # a handle is generation << 32 | slot, generation mod 2**30 (63 bits in all)
_GENERATIONS = 1 << 30


class SlotIndex:
    """Maps up to ``capacity`` ids to slots ``0..capacity-1``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._slot: OrderedDict[str, int] = OrderedDict()  # LRU order: oldest first
        self._ids: list[str | None] = []
        self._free: list[int] = []
        self._generation = np.zeros(0, dtype=np.int64)  # per slot: ids it has let go, mod 2**30

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._slot

    def ids(self) -> list[str]:
        return list(self._slot)

    def get(self, item_id: str) -> int | None:
        return self._slot.get(item_id)

    def slots_of(self, ids: Iterable[str]) -> np.ndarray:
        """Slots of known ids (-1 for unknown ones), without touching their recency."""
        return np.fromiter((self._slot.get(i, -1) for i in ids), dtype=np.int64)

    def ids_of(self, slots: Iterable[int]) -> list[str]:
        return [self._ids[int(s)] or "" for s in slots]

    def add(self, item_id: str) -> tuple[int, str | None]:
        """Touch ``item_id``; returns its slot and the id evicted to make room, if any."""
        slot = self._slot.get(item_id)
        if slot is not None:
            self._slot.move_to_end(item_id)
            return slot, None
        evicted = None
        if self._free:
            slot = self._free.pop()
        elif len(self._ids) < self.capacity:
            slot = len(self._ids)
            self._ids.append(None)
            if slot == len(self._generation):
                self._generation = np.concatenate(
                    [self._generation, np.zeros(max(64, slot), dtype=np.int64)]
                )
        else:
            evicted, slot = self._slot.popitem(last=False)
            self._let_go(slot)
        self._ids[slot] = item_id
        self._slot[item_id] = slot
        return slot, evicted

    def remove(self, item_id: str) -> int | None:
        slot = self._slot.pop(item_id, None)
        if slot is not None:
            self._ids[slot] = None
            self._free.append(slot)
            self._let_go(slot)
        return slot

    def _let_go(self, slot: int) -> None:
        """``slot``'s id is gone: handles taken before no longer resolve."""
        self._generation[slot] = (self._generation[slot] + 1) % _GENERATIONS

    def handles(self, slots: np.ndarray) -> np.ndarray:
        """Handles of ``slots``: int64 values that resolve to these slots for as long as each
        keeps its id; -1 (never resolves) for a slot that holds no id."""
        slots = np.asarray(slots, dtype=np.int64)
        held = np.fromiter(
            (0 <= s < len(self._ids) and self._ids[s] is not None for s in slots.tolist()),
            dtype=bool,
            count=len(slots),
        )
        handles = np.full(len(slots), -1, dtype=np.int64)
        handles[held] = (self._generation[slots[held]] << _SLOT_BITS) | slots[held]
        return handles

    def resolve(self, handles: np.ndarray) -> np.ndarray:
        """Slots of ``handles`` whose slot still holds the id it held when taken; -1 for the
        others."""
        handles = np.asarray(handles, dtype=np.int64)
        slots = handles & ((1 << _SLOT_BITS) - 1)
        held = slots < len(self._ids)
        held[held] = self._generation[slots[held]] == handles[held] >> _SLOT_BITS
        return np.where(held, slots, -1)

    def live_slots(self) -> np.ndarray:
        return np.fromiter(self._slot.values(), dtype=np.int64, count=len(self._slot))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` slots drawn uniformly (with replacement) from the live ids."""
        live = self.live_slots()
        if len(live) == 0:
            return np.empty(0, dtype=np.int64)
        return live[rng.integers(0, len(live), size=n)]

    def to_json(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "lru": [[k, v] for k, v in self._slot.items()],
            "size": len(self._ids),
            "generation": self._generation[: len(self._ids)].tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SlotIndex:
        index = cls(int(data["capacity"]))
        index._ids = [None] * int(data["size"])
        for item_id, slot in data["lru"]:
            index._slot[item_id] = int(slot)
            index._ids[int(slot)] = item_id
        index._free = [s for s, i in enumerate(index._ids) if i is None][::-1]
        index._generation = np.zeros(max(64, len(index._ids)), dtype=np.int64)
        generation = data.get("generation", [])  # absent from checkpoints before handles
        index._generation[: len(generation)] = generation
        return index

    def touch_many(self, ids: Sequence[str]) -> tuple[np.ndarray, list[tuple[str, int]]]:
        """Add/touch several ids; returns their slots and every (id, slot) evicted on the
        way (each such slot now belongs to one of ``ids``)."""
        slots = np.empty(len(ids), dtype=np.int64)
        evicted: list[tuple[str, int]] = []
        for k, item_id in enumerate(ids):
            slot, gone = self.add(item_id)
            slots[k] = slot
            if gone is not None:
                evicted.append((gone, slot))
        return slots, evicted
