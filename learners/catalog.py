"""The item catalog: every item the learner knows, in bounded, slot-indexed arrays.

Per slot: the item's text and its token ids (tokenized once, in batches), the
cached text-tower vector and the adapter version that produced it, and the
item's popularity counted with several half-lives (a trend sees the short ones
rise first). Past ``capacity`` items the least recently seen one gives up its slot.

>>> cat = ItemCatalog(capacity=4, dim=2, half_lives=(10.0, 1e9))
>>> slots, new, evicted = cat.upsert(["a", "b", "a"], ["A", "B", "A"])
>>> slots.tolist(), sorted(new), evicted
([0, 1, 0], [0, 1], [])
>>> cat.add_counts(np.array([0, 0, 1]), np.ones(3), t=0.0)
>>> cat.counts(np.array([0, 1]), t=10.0).round(3).tolist()  # one short half-life later
[[1.0, 0.5], [2.0, 1.0]]
>>> cat.popularity(np.array([0, 1]), t=10.0).round(3).tolist()  # scaled by the largest
[[1.0, 0.5], [1.0, 0.5]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from learners.slots import SlotIndex

__all__ = ["ItemCatalog"]


class ItemCatalog:
    """Up to ``capacity`` items with text, tokens, cached ``dim``-vectors and decayed counts."""

    def __init__(
        self,
        capacity: int,
        dim: int,
        half_lives: tuple[float, ...],
        device: torch.device | None = None,
    ) -> None:
        self.capacity, self.dim = capacity, dim
        self.half_lives = np.asarray(half_lives, dtype=np.float64)[:, None]  # [H, 1]
        self.index = SlotIndex(capacity)
        self.device = device or torch.device("cpu")
        self._size = 0
        self.texts: list[str | None] = []
        self.tokens: list[list[int] | None] = []
        self.vectors = torch.zeros((0, dim), device=self.device)  # [slots, dim], normalised
        self.version = np.zeros(0, dtype=np.int64)  # adapter version of each vector; -1: none
        self._count = np.zeros((len(half_lives), 0))  # [H, slots] decayed at time _count_t
        self._count_t = np.zeros(0, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.index)

    def _grow(self, slots: int) -> None:
        if slots <= self._size:
            return
        size = min(self.capacity, max(slots, 2 * self._size, 64))
        extra = size - self._size
        self.texts += [None] * extra
        self.tokens += [None] * extra
        self.vectors = torch.cat([self.vectors, torch.zeros((extra, self.dim), device=self.device)])
        self.version = np.concatenate([self.version, np.full(extra, -1, dtype=np.int64)])
        self._count = np.concatenate([self._count, np.zeros((len(self.half_lives), extra))], 1)
        self._count_t = np.concatenate([self._count_t, np.zeros(extra)])
        self._size = size

    def upsert(
        self, item_ids: Sequence[str], texts: Sequence[str]
    ) -> tuple[np.ndarray, list[int], list[tuple[str, int]]]:
        """Register/touch items; returns their slots, the slots whose text is new or changed
        (to tokenize and encode), and the (id, slot) evicted to make room — each such slot
        now holds a new item."""
        if len(set(item_ids)) > self.capacity:
            raise ValueError("more distinct items in one batch than the catalog holds")
        new_ids = {i for i in item_ids if i not in self.index}
        slots, evicted = self.index.touch_many(item_ids)
        self._grow(int(slots.max()) + 1 if len(slots) else 0)
        changed: dict[int, None] = {}
        for slot, item_id, text in zip(slots.tolist(), item_ids, texts, strict=True):
            if item_id in new_ids and slot not in changed:  # a (re)assigned slot starts afresh
                self._count[:, slot] = 0.0
                self._count_t[slot] = 0.0
                self.texts[slot] = None
            if self.texts[slot] != text:
                self.texts[slot] = text
                self.tokens[slot] = None
                self.version[slot] = -1
                changed[slot] = None
        return slots, list(changed), evicted

    def live_slots(self) -> np.ndarray:
        return self.index.live_slots()

    def add_counts(self, slots: np.ndarray, weights: np.ndarray, t: float) -> None:
        """Add ``weights`` to the decayed counts of ``slots`` at time ``t`` (in events)."""
        unique = np.unique(slots)
        self._count[:, unique] = self.counts(unique, t)
        self._count_t[unique] = t
        for row in self._count:  # one per half-life
            np.add.at(row, slots, weights)

    def counts(self, slots: np.ndarray, t: float) -> np.ndarray:
        """[H, n] decayed counts of ``slots`` at time ``t``, per half-life."""
        age = np.maximum(0.0, t - self._count_t[slots])
        return np.asarray(self._count[:, slots] * np.exp2(-age[None, :] / self.half_lives))

    def popularity(self, slots: np.ndarray, t: float) -> np.ndarray:
        """[H, n] counts divided by the largest count in the catalog, per half-life: each
        row in [0, 1], unchanged by decay alone (every count decays alike)."""
        top = self.counts(self.live_slots(), t).max(axis=1, keepdims=True, initial=0.0)
        return np.asarray(self.counts(slots, t) / np.where(top > 0, top, 1.0))

    def ages(self, current_version: int) -> np.ndarray:
        """[live] how many updates old each live item's cached vector is (one never
        encoded counts as older than any)."""
        versions = self.version[self.live_slots()]
        return np.where(versions < 0, current_version + 1, current_version - versions)

    def stale(self, current_version: int, limit: int) -> np.ndarray:
        """Up to ``limit`` live slots whose vector is missing or oldest."""
        live = self.live_slots()
        if limit <= 0 or len(live) == 0:
            return np.empty(0, dtype=np.int64)
        versions = self.version[live]
        live = np.asarray(live[versions < current_version])
        if len(live) == 0:
            return live
        order = np.argsort(self.version[live], kind="stable")
        return np.asarray(live[order[:limit]])

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        n = self._size
        arrays = {
            "vectors": self.vectors[:n].float().cpu().numpy(),
            "version": self.version[:n],
            "count": self._count[:, :n],
            "count_t": self._count_t[:n],
        }
        meta = {"index": self.index.to_json(), "texts": self.texts[:n], "tokens": self.tokens[:n]}
        return arrays, meta

    def load(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.index = SlotIndex.from_json(meta["index"])
        n = len(meta["texts"])
        self._size = 0
        self.texts, self.tokens = [], []
        self.vectors = torch.zeros((0, self.dim), device=self.device)
        self.version = np.zeros(0, dtype=np.int64)
        self._count, self._count_t = np.zeros((len(self.half_lives), 0)), np.zeros(0)
        self._grow(n)
        self.texts[:n] = meta["texts"]
        self.tokens[:n] = meta["tokens"]
        self.vectors[:n] = torch.as_tensor(arrays["vectors"], device=self.device)
        self.version[:n] = arrays["version"]
        self._count[:, :n] = arrays["count"]
        self._count_t[:n] = arrays["count_t"]
