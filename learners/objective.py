"""The LLM learner's training objective: one loss per mini-batch, and the step that
applies it (or skips it when it is not finite).

Ranking: a sampled softmax over item columns — the batch's positives and explicit
negatives (some encoded with gradients into the adapter, the rest from the cache), then
``sampled_negatives`` catalog items — with logQ correction and the same user's other
positives masked. A column's logit for an example is the trained model's (``learners/scoring.py``)::

    cos(user, item) / temperature + prior(item)

the towers, with the popularity prior as an offset (learned with them only where
``popularity_prior = "learned"``). Plus, weighted by the config, a
rating head (MSE on the 1-5 scale) and a review head (what a review says predicts the
rating it comes with).

Shapes: ``E`` examples, ``N`` columns, ``d`` the vector size, ``h`` the hidden size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from learners.item_tower import ItemTower
from learners.replay import Example
from learners.scorer import Scorer
from learners.towers import Heads, bucket_of
from learners.user_tower import UserTower
from schemas.learner_config import LLMConfig

__all__ = ["BatchExamples", "Objective", "StepOutput", "not_negatives"]

log = logging.getLogger(__name__)


@dataclass
class BatchExamples:
    """What one batch's events give the objective, in order."""

    examples: list[Example] = field(default_factory=list)  # positives and rated items
    hard_negatives: dict[str, list[str]] = field(default_factory=dict)  # user -> items
    impressions: list[Example] = field(default_factory=list)  # shown, not chosen
    reviews: list[tuple[str, float]] = field(default_factory=list)  # (text, rating)


@dataclass
class StepOutput:
    """What one update did."""

    loss: float | None = None
    skipped: bool = False  # a non-finite loss or gradient left every parameter unchanged
    example_losses: np.ndarray = field(default_factory=lambda: np.zeros(0))  # new positives


@dataclass
class _Columns:
    slots: np.ndarray  # [N] item slots: in-batch ones first, then sampled ones
    reps: torch.Tensor  # [N, d]
    in_batch: int
    grad_slots: np.ndarray  # encoded with gradients this step
    pooled: torch.Tensor  # [len(grad_slots), h]


class Objective:
    """Builds the loss of a batch and takes the optimisation step."""

    def __init__(
        self,
        config: LLMConfig,
        heads: Heads,
        items: ItemTower,
        users: UserTower,
        scorer: Scorer,
        rng: np.random.Generator,
    ) -> None:
        self.config, self.heads, self.items, self.users = config, heads, items, users
        self.scorer, self.rng = scorer, rng
        self.device = items.device

    def loss(
        self,
        examples: list[Example],
        batch: BatchExamples,
        anchor: list[torch.Tensor] | None,
        adapter: list[torch.nn.Parameter],
    ) -> tuple[torch.Tensor | None, _Columns, np.ndarray]:
        """The batch's loss (None when nothing in it trains), its columns, and each new
        positive's ranking loss."""
        c = self.config
        positives = [e for e in examples if e.weight > 0]
        columns = self._columns(positives, batch)
        loss = torch.zeros((), device=self.device)
        rows = np.zeros(0)
        if positives:
            ranking, per_row = self._ranking(positives, columns, batch)
            loss = loss + ranking
            rows = per_row.detach().float().cpu().numpy()
        if c.rating_head:
            loss = loss + c.rating_loss_weight * self._rating([e for e in examples if e.rating])
            loss = loss + c.review_loss_weight * self._review(batch.reviews)
        if c.proximal_weight > 0 and anchor is not None:
            loss = loss + c.proximal_weight * sum(
                ((p - a) ** 2).sum() for p, a in zip(adapter, anchor, strict=True)
            )
        return (loss if loss.requires_grad else None), columns, rows

    def _columns(self, positives: list[Example], batch: BatchExamples) -> _Columns:
        """In-batch item columns (the first ``max_grad_items`` encoded with gradients),
        then sampled catalog ones."""
        negatives = [i for items in batch.hard_negatives.values() for i in items]
        slots = self.items.slots(list(dict.fromkeys([e.item_id for e in positives] + negatives)))
        slots = slots[slots >= 0]
        grad_slots = slots[: self.config.max_grad_items]  # the newest items matter most
        pooled = self.items.encode_with_grad(grad_slots)
        reps = [self.items.reps(grad_slots, pooled)] if len(grad_slots) else []
        rest = slots[len(grad_slots) :]
        if len(rest):
            reps.append(self.items.reps(rest))
        S = self.config.sampled_negatives
        sampled = self.items.catalog.index.sample(S, self.rng) if S else np.empty(0, np.int64)
        if len(sampled):
            reps.append(self.items.reps(sampled))
        all_slots = np.concatenate([slots, sampled])
        stacked = torch.cat(reps) if reps else torch.zeros((0, self.heads.dim), device=self.device)
        return _Columns(all_slots, stacked, len(slots), grad_slots, pooled)

    def _ranking(
        self, positives: list[Example], columns: _Columns, batch: BatchExamples
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The weighted mean sampled-softmax loss, and each row's [E] cross-entropy."""
        c = self.config
        users = self.users.reps([e.user_id for e in positives], [e.history for e in positives])
        logits = users @ columns.reps.T / c.temperature + self.scorer.prior(columns.slots)  # [E, N]
        target_slots = self.items.slots([e.item_id for e in positives])
        same = target_slots[:, None] == columns.slots[None, :]  # [E, N] columns of the row's item
        # the row's target: its item's first column, an in-batch one (every positive's is)
        target = torch.as_tensor(same[:, : columns.in_batch].argmax(1), device=self.device)
        if c.logq_correction:
            logits = logits - self._log_q(columns, same)
        mask = not_negatives([e.user_id for e in positives], same)
        logits = logits.masked_fill(torch.as_tensor(mask, device=self.device), -1e9)
        weights = torch.as_tensor([e.weight for e in positives], device=self.device)
        ce = F.cross_entropy(logits, target, reduction="none")  # [E]
        return (ce * weights).sum() / weights.sum(), ce

    def _log_q(self, columns: _Columns, same: np.ndarray) -> torch.Tensor:
        """log of how often each column is expected among the negatives (logQ correction);
        ``same`` [E, N]: where a column holds a row's item."""
        E = len(same)
        live = max(1, len(self.items.catalog))
        n_sampled = len(columns.slots) - columns.in_batch
        in_batch = same.sum(0, dtype=np.float64)  # [N] rows whose item each column holds
        q = (in_batch + n_sampled / live) / (E + n_sampled)
        return torch.as_tensor(
            np.log(np.maximum(q, 1e-12)), dtype=torch.float32, device=self.device
        )

    def _rating(self, rated: list[Example]) -> torch.Tensor:
        if not rated:
            return torch.zeros((), device=self.device)
        users = self.users.reps([e.user_id for e in rated], [e.history for e in rated])
        slots = self.items.slots([e.item_id for e in rated])
        affinity = (users * self.items.reps(slots)).sum(-1)
        prior = self.scorer.prior(slots)
        buckets = torch.as_tensor(
            [bucket_of(e.user_id, self.config.id_buckets) for e in rated], device=self.device
        )
        predicted = self.heads.rating(affinity, prior, buckets)
        target = torch.as_tensor([e.rating for e in rated], dtype=torch.float32, device=self.device)
        return F.mse_loss(predicted, target)

    def _review(self, reviews: list[tuple[str, float]]) -> torch.Tensor:
        """What users write predicts how satisfied they are: trains the adapter on it."""
        if not reviews:
            return torch.zeros((), device=self.device)
        backbone = self.items.backbone
        tokens = backbone.tokenize([text for text, _ in reviews], self.config.max_item_tokens)
        sentiment = self.heads.review(backbone.encode(tokens)).squeeze(-1)
        target = torch.as_tensor([r for _, r in reviews], dtype=torch.float32, device=self.device)
        return F.mse_loss(self.heads.rating_mean.detach() + sentiment, target)


def not_negatives(user_ids: Sequence[str], same: np.ndarray) -> np.ndarray:
    """[E, N] True where a column must not count as a negative for row ``e``: every column
    holding a positive of row ``e``'s user in this batch (``same`` [E, N]: where a column
    holds a row's item, sampled copies included), but the row's own target column (its
    item's first).

    >>> same = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=bool)
    >>> not_negatives(["a", "a", "b"], same).astype(int).tolist()
    [[0, 1, 0, 1], [1, 0, 0, 1], [0, 0, 0, 0]]
    """
    codes: dict[str, int] = {}
    user = np.array([codes.setdefault(u, len(codes)) for u in user_ids], dtype=np.int64)  # [E]
    rows_of = np.zeros((len(codes), len(user_ids)), dtype=np.float32)  # [U, E]
    rows_of[user, np.arange(len(user_ids))] = 1.0
    mask = (rows_of @ same.astype(np.float32) > 0)[user]  # [E, N] any of the user's items
    mask[np.arange(len(user_ids)), same.argmax(1)] = False
    return mask
