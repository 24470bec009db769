"""The item tower: item text through the backbone (LoRA) and the item head, with a cache.

Items are registered from the events that mention them; their text is tokenized once
and encoded without gradients into the catalog's cache, so every known item — even one
seen for the first time — can be ranked at once (cold start through its text). A step
re-encodes the items it trains with gradients; a few stale cache entries are refreshed
after every update, oldest adapter version first.

Shapes: ``h`` the backbone's hidden size, ``d`` the vector size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from learners.backbone import Backbone
from learners.catalog import ItemCatalog
from learners.towers import Heads, bucket_of
from schemas.events import InteractionEvent
from schemas.learner_config import LLMConfig
from schemas.vectors import item_key

__all__ = ["ItemTower"]


class ItemTower:
    """The catalog, its encoded cache, and item vectors from it."""

    def __init__(self, config: LLMConfig, backbone: Backbone, heads: Heads) -> None:
        self.config, self.backbone, self.heads = config, backbone, heads
        self.device = backbone.device
        self.catalog = ItemCatalog(
            config.max_items, backbone.hidden_size, config.popularity_half_lives, self.device
        )
        self.bucket = np.zeros(config.max_items, dtype=np.int64)  # id-embedding row per slot
        self.key = np.zeros(config.max_items, dtype=np.int64)  # item_key per slot, hashed once

    def register(self, events: Sequence[InteractionEvent], version: int) -> list[int]:
        """Add or touch the events' items; encode new or changed texts. Returns the slots
        of items evicted to make room (their other per-item state must go too)."""
        cat = self.catalog
        ids = list(dict.fromkeys(e.item_id for e in events))
        texts = {e.item_id: e.item_text for e in events if e.item is not None}
        known = {i: cat.texts[s] for i in ids if (s := cat.index.get(i)) is not None}
        text_of = [texts.get(i) or known.get(i) or i for i in ids]
        slots, changed, evicted = cat.upsert(ids, text_of)
        for slot, item_id in zip(slots.tolist(), ids, strict=True):
            self.bucket[slot] = bucket_of(item_id, self.config.id_buckets)
            self.key[slot] = item_key(item_id)
        if changed:
            with torch.no_grad():  # a new or renamed item starts without a learned bias
                self.heads.item_bias.weight[changed] = 0.0
            self.encode(np.asarray(changed), version)
        return [slot for _, slot in evicted]

    def rekey(self) -> None:
        """Recompute the per-slot item keys from the catalog (after loading a checkpoint)."""
        index = self.catalog.index
        ids = index.ids()
        self.key[index.slots_of(ids)] = [item_key(i) for i in ids]

    def encode(self, slots: np.ndarray, version: int, chunk: int = 256) -> None:
        """Tokenize what is missing (one batch), encode without gradients, store."""
        cat = self.catalog
        missing = [int(s) for s in slots if cat.tokens[int(s)] is None]
        if missing:
            tokens = self.backbone.tokenize(
                [cat.texts[s] or "" for s in missing], self.config.max_item_tokens
            )
            for s, ids in zip(missing, tokens, strict=True):
                cat.tokens[s] = ids
        with torch.no_grad():
            for start in range(0, len(slots), chunk):
                part = slots[start : start + chunk]
                pooled = self.backbone.encode([cat.tokens[int(s)] or [] for s in part])
                cat.vectors[torch.as_tensor(part, device=self.device)] = pooled
                cat.version[part] = version

    def refresh(self, version: int, limit: int) -> int:
        """Re-encode up to ``limit`` of the stalest cached items with the adapter of
        ``version``; returns how many."""
        stale = self.catalog.stale(version, limit)
        if len(stale):
            self.encode(stale, version)
        return len(stale)

    def behind(self, version: int) -> int:
        """Cached items encoded before ``version`` (or never)."""
        return int(np.count_nonzero(self.catalog.ages(version)))

    def encode_with_grad(self, slots: np.ndarray) -> torch.Tensor:
        """[n, h] pooled encodings of ``slots``, with gradients into the adapter."""
        if len(slots) == 0:
            return torch.zeros((0, self.backbone.hidden_size), device=self.device)
        return self.backbone.encode([self.catalog.tokens[int(s)] or [] for s in slots])

    def keep(self, slots: np.ndarray, pooled: torch.Tensor, version: int) -> None:
        """Store encodings made during a step, by the adapter of ``version`` (before the
        step: one update behind once it is taken)."""
        if len(slots):
            self.catalog.vectors[torch.as_tensor(slots, device=self.device)] = pooled.detach()
            self.catalog.version[slots] = version

    def slots(self, item_ids: Sequence[str]) -> np.ndarray:
        return self.catalog.index.slots_of(item_ids)

    def handles(self, slots: np.ndarray) -> np.ndarray:
        """Handles of live slots, for state that outlives an item's place in the catalog."""
        return self.catalog.index.handles(slots)

    def resolve(self, handles: np.ndarray) -> np.ndarray:
        """Slots of handles whose item is still in the catalog, those of evicted ones dropped."""
        slots = self.catalog.index.resolve(handles)
        return slots[slots >= 0]

    def reps(self, slots: np.ndarray, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """[n] slots → [n, d] unit item vectors (from the cache unless ``pooled`` is given)."""
        index = torch.as_tensor(slots, device=self.device)
        if pooled is None:
            pooled = self.catalog.vectors[index]
        buckets = torch.as_tensor(self.bucket[slots], device=self.device)
        return self.heads.item_vectors(pooled, buckets)
