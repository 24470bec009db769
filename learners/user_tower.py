"""The user tower: a user's recent history → a unit vector in the items' space.

``compose`` (the default) attends over the vectors of the items in the history (weights
from event kind, recency and content) and applies a learned transform; ``prompt`` has the
backbone read a text listing the history. A history is a tuple of (item id, kind code),
newest first; code 0 is padding.

Shapes: ``E`` users (examples), ``L`` history length, ``d`` the vector size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from learners.backbone import Backbone
from learners.feedback import HISTORY_KINDS
from learners.history import UserHistory
from learners.item_tower import ItemTower
from learners.towers import Heads, bucket_of
from schemas.learner_config import LLMConfig

__all__ = ["History", "UserTower"]

History = tuple[tuple[str, int], ...]  # (item id, kind code), newest first
_CODE = {kind.value: kind.code for kind in HISTORY_KINDS}


class UserTower:
    """User vectors from histories, composed or read from a prompt."""

    def __init__(
        self, config: LLMConfig, backbone: Backbone, heads: Heads, items: ItemTower
    ) -> None:
        self.config, self.backbone, self.heads, self.items = config, backbone, heads, items
        self.device = backbone.device

    @staticmethod
    def snapshot(history: UserHistory, user_id: str) -> History:
        """The user's history as the tower reads it, newest first."""
        record = history.get(user_id)
        if record is None:
            return ()
        return tuple((x.item_id, _CODE.get(x.event_type, 0)) for x in reversed(record.recent))

    def reps(self, user_ids: Sequence[str], histories: Sequence[History]) -> torch.Tensor:
        """[E] users with the history each had → [E, d] unit user vectors."""
        buckets = torch.as_tensor(
            [bucket_of(u, self.config.id_buckets) for u in user_ids],
            dtype=torch.long,
            device=self.device,
        )
        if self.config.user_tower == "prompt":
            tokens = self.backbone.tokenize(
                [self._prompt(h) for h in histories], self.config.max_user_tokens
            )
            return self.heads.prompt_users(self.backbone.encode(tokens), buckets)
        slots, codes = self._tensors(histories)
        E, L = slots.shape
        reps = self.items.reps(slots.reshape(-1)).reshape(E, L, self.heads.dim)  # [E, L, d]
        reps = reps * (codes > 0).unsqueeze(-1)
        return self.heads.compose_users(reps, codes, buckets)

    def _tensors(self, histories: Sequence[History]) -> tuple[np.ndarray, torch.Tensor]:
        """Histories → [E, L] slots (0 for padding) and [E, L] kind codes."""
        L = self.config.history_len
        lengths = np.array([min(len(h), L) for h in histories], dtype=np.int64)  # [E]
        entries = [entry for h in histories for entry in h[:L]]
        found = self.items.catalog.index.slots_of([item_id for item_id, _ in entries])
        kinds = np.fromiter((code for _, code in entries), dtype=np.int64, count=len(entries))
        known = found >= 0  # an item evicted since is padding
        rows = np.repeat(np.arange(len(histories)), lengths)
        cols = np.arange(len(entries)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        slots = np.zeros((len(histories), L), dtype=np.int64)
        codes = np.zeros((len(histories), L), dtype=np.int64)
        slots[rows[known], cols[known]] = found[known]
        codes[rows[known], cols[known]] = kinds[known]
        return slots, torch.as_tensor(codes, device=self.device)

    def _prompt(self, history: History) -> str:
        """The text the backbone reads for a user in prompt mode (newest first)."""
        catalog = self.items.catalog
        parts = []
        for item_id, code in history:
            slot = catalog.index.get(item_id)
            text = (catalog.texts[slot] if slot is not None else None) or item_id
            kind = HISTORY_KINDS[code - 1].value if code else "pad"
            parts.append(f"{kind.replace('_', ' ')}: {text}")
        return "Recent activity, newest first. " + "; ".join(parts) if parts else "New user."
