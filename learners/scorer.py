"""The terms of the LLM learner's score for given users and items (``learners/scoring.py``
says how they mix): the towers' cosine, the popularity prior, and item-kNN
scaled to [0, 1] per user and kept for the user's top ``knn_publish`` items only —
exactly what the user's published sparse vector holds, so the learner never ranks with
more than it serves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from learners.cooccurrence import Cooccurrence
from learners.history import UserHistory
from learners.item_tower import ItemTower
from learners.scoring import Parts
from learners.towers import Heads
from learners.user_tower import UserTower
from schemas.learner_config import LLMConfig

__all__ = ["Scorer"]

KNN_ROWS = 64  # users per sparse product: bounds the dense [users, catalog] block


class Scorer:
    """Parts of the score from the towers, the catalog, co-occurrence and user state."""

    def __init__(
        self,
        config: LLMConfig,
        heads: Heads,
        items: ItemTower,
        users: UserTower,
        cooccurrence: Cooccurrence,
        history: UserHistory,
    ) -> None:
        self.config, self.heads, self.items, self.users = config, heads, items, users
        self.cooccurrence, self.history = cooccurrence, history
        self.t = 0.0  # events learned: the clock of popularity decay

    def recent(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The user's recent positive slots, newest first, and their weights."""
        c = self.config
        handles = self.history.positives(user_id, c.knn_recent)[::-1]
        slots = self.items.catalog.index.resolve(handles)
        weights = c.knn_decay ** np.arange(len(slots), dtype=np.float64)
        known = slots >= 0
        return slots[known], weights[known]

    def knn_rows(self, user_ids: Sequence[str]) -> np.ndarray:
        """[U, slots] each user's kNN for every slot, scaled to [0, 1], top ``knn_publish``
        kept, in one sparse product."""
        knn = self.cooccurrence.knn_many([self.recent(u) for u in user_ids])
        top = knn.max(axis=1, initial=0.0)  # [U]
        K = self.config.knn_publish
        crowded = np.flatnonzero(np.count_nonzero(knn, axis=1) > K)
        if len(crowded):
            size = knn.shape[1]
            cut = np.partition(knn[crowded], size - K, axis=1)[:, size - K]  # [R]
            knn[crowded] = np.where(knn[crowded] >= cut[:, None], knn[crowded], 0.0)
        scale = np.divide(1.0, top, out=np.zeros_like(top), where=top > 0)
        return knn * scale[:, None]  # type: ignore[no-any-return]

    def knn_sparse(self, user_ids: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per user, the slots :meth:`knn_rows` keeps and their kNN, ``KNN_ROWS`` users per
        sparse product."""
        out = []
        for start in range(0, len(user_ids), KNN_ROWS):
            for row in self.knn_rows(user_ids[start : start + KNN_ROWS]):  # [slots]
                slots = np.flatnonzero(row)
                out.append((slots, row[slots]))
        return out

    def prior(self, slots: np.ndarray) -> torch.Tensor:
        """[C] the popularity prior of ``slots`` now."""
        counts = self.items.catalog.counts(slots, self.t)  # [H, C]
        log_counts = torch.as_tensor(np.log1p(counts), dtype=torch.float32, device=self.device)
        return self.heads.item_bias_of(torch.as_tensor(slots, device=self.device), log_counts)

    @property
    def device(self) -> torch.device:
        return self.items.device

    def model(self, users: torch.Tensor, slots: np.ndarray) -> torch.Tensor:
        """[U, C] the trained model's logits: cos / temperature + prior."""
        cos = users @ self.items.reps(slots).T
        return cos / self.config.temperature + self.prior(slots)[None, :]

    def spread(self, users: torch.Tensor, towers: Sequence[float]) -> dict[float, np.ndarray]:
        """For each towers weight t: [U] the range of each user's ``t · cos / temperature +
        prior`` over the whole catalog."""
        live = self.items.catalog.live_slots()
        if len(live) < 2 or len(users) == 0:
            return {t: np.ones(len(users)) for t in towers}
        out = {}
        with torch.no_grad():
            cos = users @ self.items.reps(live).T / self.config.temperature  # [U, C]
            prior = self.prior(live)[None, :]
            for t in towers:
                logits = t * cos + prior
                spread = (logits.max(1).values - logits.min(1).values).float().cpu().numpy()
                out[t] = np.maximum(spread, 1e-6)
        return out

    def user_reps(self, user_ids: Sequence[str]) -> torch.Tensor:
        """[U, d] the users' tower vectors as they stand now."""
        histories = [self.users.snapshot(self.history, u) for u in user_ids]
        with torch.no_grad():
            self.heads.eval()
            return self.users.reps(user_ids, histories)

    def parts(
        self, user_ids: Sequence[str], slots: np.ndarray, weights: Sequence[float] = (1.0,)
    ) -> Parts:
        """The terms for users as they stand now and item ``slots`` (with the spread for
        each towers weight in ``weights``)."""
        knn = np.zeros((len(user_ids), len(slots)))
        known = [row for row, user in enumerate(user_ids) if user in self.history]
        for start in range(0, len(known), KNN_ROWS):
            rows = known[start : start + KNN_ROWS]
            all_slots = self.knn_rows([user_ids[r] for r in rows])  # [R, allocated slots]
            inside = np.flatnonzero(slots < all_slots.shape[1])
            knn[np.ix_(np.asarray(rows), inside)] = all_slots[:, slots[inside]]
        u = self.user_reps(user_ids)
        with torch.no_grad():
            towers = (u @ self.items.reps(slots).T / self.config.temperature).float()
            prior = self.prior(slots).float()
        return Parts(
            towers=towers.cpu().numpy(),
            prior=prior.cpu().numpy(),
            knn=knn,
            spread=self.spread(u, weights),
        )
