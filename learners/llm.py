"""The LLM learner: a LoRA adapter over a frozen Hugging Face model, updated from every
mini-batch, with replay against forgetting.

Per :meth:`LLMLearner.learn_many`:

1. new items are registered, tokenized (in one batch) and encoded without gradients, so
   even an item seen for the first time can be ranked (cold start through its text);
2. every positive event is *tested* first (prequential): its true item is ranked among
   sampled candidates with the parameters as they were before the batch;
3. one optimisation step: a sampled softmax over in-batch items (same-user positives
   masked, logQ-corrected), catalog negatives from the vector cache and the user's explicit
   negatives, weighted by event type, plus replayed examples, a rating head and an optional
   proximal term; a non-finite loss or gradient skips the step and leaves every parameter
   as it was;
4. vectors of the items the step touched go back to the cache, and a few stale ones are
   re-encoded.

Scores are ``cos(user, item) / temperature + bias(item)`` with the item bias a learned
weight on log(1 + time-decayed count) plus a learned per-item term. Vectors fold the bias
in as one extra coordinate — users ``[u, 1]``, items ``[i, temperature * bias]`` — so a
plain dot product ranks exactly as the model does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file, save_file

from learners.backbone import Backbone, load_adapter_weights, load_backbone, save_adapter
from learners.base import LearnReport, VectorBatch
from learners.catalog import ItemCatalog
from learners.history import Interaction, UserHistory
from learners.ledger import EventLedger
from learners.prequential import Prequential, rank_of_true
from learners.replay import Example, ReplayBuffer
from learners.river_mf import marker_of
from learners.state_io import load_json, rng_from_json, rng_to_json, save_json
from learners.towers import HISTORY_TYPES, Heads, bucket_of
from schemas.events import EventType, InteractionEvent
from schemas.learner_config import LLMConfig
from schemas.vectors import SourcePosition

__all__ = ["LLMLearner"]

log = logging.getLogger(__name__)
TYPE_CODE = {name: code for code, name in enumerate(HISTORY_TYPES)}


@dataclass
class _Batch:
    """What one learn_many call extracts from its events, in order."""

    examples: list[Example] = field(default_factory=list)  # positives (and rated items)
    hard_negatives: dict[str, list[str]] = field(default_factory=dict)  # user -> items
    impressions: list[Example] = field(default_factory=list)  # shown, not chosen
    reviews: list[tuple[str, float]] = field(default_factory=list)  # (text, rating)
    positive_slots: list[int] = field(default_factory=list)  # for popularity counts
    positive_weights: list[float] = field(default_factory=list)


class LLMLearner:
    """LoRA over a frozen backbone, two towers in one space, replay against forgetting."""

    kind = "llm"

    def __init__(self, config: LLMConfig | None = None) -> None:
        self.config = c = config or LLMConfig()
        torch.manual_seed(c.seed)
        self.backbone: Backbone = load_backbone(c)
        self.device = self.backbone.device
        hidden = self.backbone.hidden_size
        self.heads = Heads(hidden, c, c.max_items).to(self.device)
        self.dim = self.heads.dim
        self.catalog = ItemCatalog(c.max_items, hidden, c.popularity_half_life, self.device)
        self._item_bucket = np.zeros(c.max_items, dtype=np.int64)
        self.history = UserHistory(c.max_users, c.history_len)
        self.replay = ReplayBuffer(c.replay, seed=c.seed)
        self.prequential = Prequential(c.eval_window)
        self._ledger = EventLedger()
        self._rng = np.random.default_rng(c.seed)
        self._t = 0.0  # events learned: the clock of popularity decay and replay recency
        self._updates = 0
        self.skipped_updates = 0
        self._lr_factor, self._replay_factor = 1.0, 1.0
        self._lora = [p for p in self.backbone.model.parameters() if p.requires_grad]
        self._dense = torch.optim.AdamW(
            [
                {"params": self._lora + self.heads.slow_parameters(), "lr": c.lr, "base": c.lr},
                {
                    "params": self.heads.fast_parameters(),
                    "lr": c.embedding_lr,
                    "base": c.embedding_lr,
                    "weight_decay": 0.0,
                },
            ],
            lr=c.lr,
            weight_decay=c.weight_decay,
        )
        self._sparse = torch.optim.SparseAdam(self.heads.sparse_parameters(), lr=c.embedding_lr)
        self._anchor: list[torch.Tensor] | None = None

    # -- protocol ------------------------------------------------------------------------

    @property
    def version(self) -> str:
        return f"{self.kind}:{self.config.model}:a{self._updates}"

    @property
    def model_name(self) -> str:
        return self.config.model

    @property
    def ledger(self) -> EventLedger:
        return self._ledger

    @property
    def updates(self) -> int:
        return self._updates

    def state_sizes(self) -> dict[str, tuple[float, float]]:
        c = self.config
        return {
            "users": (len(self.history), c.max_users),
            "items": (len(self.catalog), c.max_items),
            "replay_examples": (len(self.replay), c.replay.capacity),
            "replay_bytes": (self.replay.bytes, c.replay.max_bytes),
        }

    def set_boost(self, lr_factor: float = 1.0, replay_factor: float = 1.0) -> None:
        """Temporarily learn faster (drift policy): scale the learning rates and replay."""
        self._lr_factor, self._replay_factor = lr_factor, replay_factor
        for group in self._dense.param_groups:
            group["lr"] = group["base"] * lr_factor
        for group in self._sparse.param_groups:
            group["lr"] = self.config.embedding_lr * lr_factor

    def learn_many(
        self, events: Sequence[InteractionEvent], positions: Sequence[SourcePosition]
    ) -> LearnReport:
        started = time.perf_counter()
        self._register_items(events)
        batch = self._walk(events, positions)
        hits = self._test(batch)
        if batch.positive_slots:  # counted after the test: a test never sees its own event
            self.catalog.add_counts(
                np.asarray(batch.positive_slots),
                np.asarray(batch.positive_weights),
                self._t + len(events),
            )
        replayed = self._replayed(len(batch.examples))
        loss, skipped, losses = self._step(batch, replayed)
        if self.config.replay.enabled:
            self.replay.add_many(e for e in batch.examples if e.weight > 0)
        self._refresh_cache()
        self._ledger.record(e.event_id for e in events)
        self._t += len(events)
        self._updates += 0 if skipped else 1
        metrics = {
            **self.prequential.summary(),
            "tested": float(len(hits)),
            "replayed": float(len(replayed)),
            "learn_seconds": time.perf_counter() - started,
            "replay_fill": len(self.replay) / self.config.replay.capacity,
            "replay_ratio": self.config.replay.ratio * self._replay_factor
            if self.config.replay.enabled
            else 0.0,
            **self._gpu_memory(),
        }
        return LearnReport(
            events=len(events),
            users=list(dict.fromkeys(e.user_id for e in events)),
            items=list(dict.fromkeys(e.item_id for e in events)),
            loss=loss,
            skipped_update=skipped,
            metrics=metrics,
            test_errors=1.0 - hits,
            example_losses=losses,
        )

    def _gpu_memory(self) -> dict[str, float]:
        if self.device.type != "cuda":
            return {}
        return {
            "gpu_memory_allocated_bytes": float(torch.cuda.memory_allocated(self.device)),
            "gpu_memory_reserved_bytes": float(torch.cuda.memory_reserved(self.device)),
        }

    # -- items ---------------------------------------------------------------------------

    def _register_items(self, events: Sequence[InteractionEvent]) -> None:
        """Add/touch the batch's items; tokenize and encode new or changed ones."""
        ids = list(dict.fromkeys(e.item_id for e in events))
        texts = {e.item_id: e.item_text for e in events if e.item is not None}
        known = {
            i: self.catalog.texts[s] for i in ids if (s := self.catalog.index.get(i)) is not None
        }
        text_of = [texts.get(i) or known.get(i) or i for i in ids]
        slots, changed, _ = self.catalog.upsert(ids, text_of)
        for slot, item_id in zip(slots.tolist(), ids, strict=True):
            self._item_bucket[slot] = bucket_of(item_id, self.config.id_buckets)
        if changed:
            with torch.no_grad():
                self.heads.item_bias.weight[changed] = 0.0
            self._encode_into_cache(np.asarray(changed))

    def _encode_into_cache(self, slots: np.ndarray, chunk: int = 256) -> None:
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
                cat.version[part] = self._updates

    def _refresh_cache(self) -> None:
        stale = self.catalog.stale(self._updates, self.config.cache_refresh_per_step)
        if len(stale):
            self._encode_into_cache(stale)

    def _slots(self, item_ids: Sequence[str]) -> np.ndarray:
        return self.catalog.index.slots_of(item_ids)

    def _item_reps(self, slots: np.ndarray, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """[n] slots → [n, d] item vectors (from the cache unless ``pooled`` is given)."""
        index = torch.as_tensor(slots, device=self.device)
        if pooled is None:
            pooled = self.catalog.vectors[index]
        buckets = torch.as_tensor(self._item_bucket[slots], device=self.device)
        return self.heads.item_vectors(pooled, buckets)

    def _biases(self, slots: np.ndarray, t: float) -> torch.Tensor:
        counts = self.catalog.counts(slots, t)
        log_counts = torch.as_tensor(np.log1p(counts), dtype=torch.float32, device=self.device)
        return self.heads.item_bias_of(torch.as_tensor(slots, device=self.device), log_counts)

    # -- events → examples -----------------------------------------------------------------

    def _classify(self, event: InteractionEvent) -> tuple[str, float]:
        """(history type, positive weight); weight 0 = not a positive."""
        c, kind, value = self.config, event.event_type, event.value
        if kind is EventType.RATING and value is not None:
            if value >= c.positive_rating:
                return "rating_high", 1.0 + (value - c.positive_rating)
            return ("rating_low" if value <= c.negative_rating else "rating_mid"), 0.0
        return kind.value, c.event_weights.get(kind.value, 0.0)

    def _snapshot(self, user_id: str) -> tuple[tuple[str, int], ...]:
        record = self.history.get(user_id)
        if record is None:
            return ()
        return tuple((x.item_id, TYPE_CODE.get(x.event_type, 0)) for x in reversed(record.recent))

    def _walk(
        self, events: Sequence[InteractionEvent], positions: Sequence[SourcePosition]
    ) -> _Batch:
        """Events in order → examples with the history each user had at that moment."""
        batch = _Batch()
        for k, (event, position) in enumerate(zip(events, positions, strict=True)):
            t = self._t + k
            kind, weight = self._classify(event)
            user, item = event.user_id, event.item_id
            example = Example(
                user,
                item,
                weight,
                self._snapshot(user),
                t,
                event.value if event.event_type is EventType.RATING else None,
            )
            if kind == "impression":
                batch.impressions.append(example)
            elif weight > 0 or example.rating is not None:
                batch.examples.append(example)
            if kind in ("skip", "dislike", "rating_low"):
                batch.hard_negatives.setdefault(user, []).append(item)
            if event.review_text and event.event_type is EventType.RATING and event.value:
                batch.reviews.append((event.review_text, float(event.value)))
            interaction = (
                None
                if kind == "impression"
                else Interaction(item, kind, event.value, event.timestamp.timestamp())
            )
            self.history.add(user, interaction, marker_of(event, position))
            slot = self.catalog.index.get(item)
            if weight > 0 and slot is not None:
                batch.positive_slots.append(slot)
                batch.positive_weights.append(min(weight, 1.0))
        return batch

    # -- users ---------------------------------------------------------------------------

    def _history_tensors(
        self, histories: Sequence[tuple[tuple[str, int], ...]]
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Histories → [E, L] slots (0 for padding) and [E, L] type codes."""
        L = self.config.history_len
        slots = np.zeros((len(histories), L), dtype=np.int64)
        codes = np.zeros((len(histories), L), dtype=np.int64)
        for row, history in enumerate(histories):
            for col, (item_id, code) in enumerate(history[:L]):
                slot = self.catalog.index.get(item_id)
                if slot is not None:
                    slots[row, col], codes[row, col] = slot, code
        return slots, torch.as_tensor(codes, device=self.device)

    def _user_reps(self, examples: Sequence[Example]) -> torch.Tensor:
        """[E] examples → [E, d] user vectors from the history each had."""
        buckets = torch.as_tensor(
            [bucket_of(e.user_id, self.config.id_buckets) for e in examples], device=self.device
        )
        if self.config.user_tower == "prompt":
            prompts = [self._prompt(e.history) for e in examples]
            tokens = self.backbone.tokenize(prompts, self.config.max_user_tokens)
            return self.heads.prompt_users(self.backbone.encode(tokens), buckets)
        slots, codes = self._history_tensors([e.history for e in examples])
        E, L = slots.shape
        reps = self._item_reps(slots.reshape(-1)).reshape(E, L, self.dim)  # [E, L, d]
        reps = reps * (codes > 0).unsqueeze(-1)
        return self.heads.compose_users(reps, codes, buckets)

    def _prompt(self, history: tuple[tuple[str, int], ...]) -> str:
        """The text the backbone reads for a user in prompt mode (newest first)."""
        parts = []
        for item_id, code in history:
            slot = self.catalog.index.get(item_id)
            text = (self.catalog.texts[slot] if slot is not None else None) or item_id
            parts.append(f"{HISTORY_TYPES[code].replace('_', ' ')}: {text}")
        return "Recent activity, newest first. " + "; ".join(parts) if parts else "New user."

    # -- prequential test ------------------------------------------------------------------

    def _scores(self, users: torch.Tensor, slots: np.ndarray, t: float) -> torch.Tensor:
        """[E, d] users and [E, C] candidate slots → [E, C] model scores."""
        E, C = slots.shape
        flat = slots.reshape(-1)
        items = self._item_reps(flat).reshape(E, C, self.dim)
        bias = self._biases(flat, t).reshape(E, C)
        return torch.einsum("ed,ecd->ec", users, items) / self.config.temperature + bias

    def _test(self, batch: _Batch) -> np.ndarray:
        """Rank each new positive's item before learning it; returns hit@10 per test."""
        tests = [e for e in batch.examples if e.weight > 0]
        if not tests or len(self.catalog) < 2:
            return np.zeros(0)
        with torch.no_grad():
            users = self._user_reps(tests)
            true = self._slots([e.item_id for e in tests])
            C = self.config.eval_candidates
            live = self.catalog.live_slots()
            if C == 0 or len(live) <= C:
                others = np.broadcast_to(live, (len(tests), len(live)))
            else:
                others = live[self._rng.integers(0, len(live), size=(len(tests), C))]
            candidates = np.concatenate([true[:, None], others], axis=1)
            scores = self._scores(users, candidates, self._t).cpu().numpy()
            # the true item may also be drawn as a candidate: do not count it against itself
            duplicate = candidates[:, 1:] == true[:, None]
            scores[:, 1:][duplicate] = -np.inf
            greater, ties = rank_of_true(scores)
            hits = self.prequential.record_ranks(greater, ties)
            if batch.impressions:
                shown = self._user_reps(batch.impressions)
                slots = self._slots([e.item_id for e in batch.impressions])[:, None]
                negative = self._scores(shown, slots, self._t)[:, 0].cpu().numpy()
                self.prequential.record_auc(scores[:, 0], negative)
        return hits

    # -- one optimisation step -------------------------------------------------------------

    def _replayed(self, n_new: int) -> list[Example]:
        c = self.config.replay
        if not c.enabled or n_new == 0:
            return []
        return self.replay.sample(round(c.ratio * self._replay_factor * n_new))

    def _step(
        self, batch: _Batch, replayed: list[Example]
    ) -> tuple[float | None, bool, np.ndarray]:
        """One update; returns (loss, skipped, per-example ranking losses)."""
        examples = [e for e in batch.examples + replayed if e.item_id in self.catalog.index]
        if not examples:
            return None, False, np.zeros(0)
        self.heads.train()
        loss, grad_slots, pooled, rows = self._loss(examples, batch)
        # the per-example losses reported are the new examples' (replayed ones follow them)
        known = self.catalog.index
        rows = rows[: sum(1 for e in batch.examples if e.weight > 0 and e.item_id in known)]
        if loss is None:
            return None, False, rows
        if not torch.isfinite(loss):
            return (*self._skip(float(loss.detach())), rows)
        self._dense.zero_grad(set_to_none=True)
        self._sparse.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if not all(
            p.grad is None or bool(torch.isfinite(p.grad).all())
            for p in self._lora + self.heads.dense_parameters()
        ):
            return (*self._skip(float(loss.detach())), rows)
        torch.nn.utils.clip_grad_norm_(
            self._lora + self.heads.dense_parameters(), self.config.grad_clip
        )
        self._dense.step()
        self._sparse.step()  # type: ignore[no-untyped-call]
        self._dense.zero_grad(set_to_none=True)
        self._sparse.zero_grad(set_to_none=True)
        if len(grad_slots):  # these were just encoded: keep them (stale by this one step)
            self.catalog.vectors[torch.as_tensor(grad_slots, device=self.device)] = pooled.detach()
            self.catalog.version[grad_slots] = self._updates
        return float(loss.detach()), False, rows

    def _skip(self, loss: float) -> tuple[float, bool]:
        self.skipped_updates += 1
        self._dense.zero_grad(set_to_none=True)
        self._sparse.zero_grad(set_to_none=True)
        log.warning("skipped an update: non-finite loss or gradient (loss=%s)", loss)
        return loss, True

    def _loss(
        self, examples: list[Example], batch: _Batch
    ) -> tuple[torch.Tensor | None, np.ndarray, torch.Tensor, np.ndarray]:
        c = self.config
        positives = [e for e in examples if e.weight > 0]
        columns, grad_slots, pooled = self._columns(positives, batch)
        loss = torch.zeros((), device=self.device)
        rows = np.zeros(0)
        if positives:
            ranking, row_losses = self._ranking_loss(positives, columns, batch)
            loss = loss + ranking
            rows = row_losses.detach().float().cpu().numpy()
        if c.rating_head:
            loss = loss + self._rating_loss([e for e in examples if e.rating is not None])
            loss = loss + self._review_loss(batch.reviews)
        if c.proximal_weight > 0 and self._anchor is not None:
            drift = sum(((p - a) ** 2).sum() for p, a in zip(self._lora, self._anchor, strict=True))
            loss = loss + c.proximal_weight * drift
        if not loss.requires_grad:
            return None, grad_slots, pooled, rows
        return loss, grad_slots, pooled, rows

    def _columns(
        self, positives: list[Example], batch: _Batch
    ) -> tuple[tuple[np.ndarray, torch.Tensor], np.ndarray, torch.Tensor]:
        """In-batch item columns (some encoded with gradients), then sampled catalog ones.

        Returns (column slots [N], column vectors [N, d]), the slots encoded with
        gradients, and their pooled encodings."""
        negatives = [i for items in batch.hard_negatives.values() for i in items]
        in_batch = list(dict.fromkeys([e.item_id for e in positives] + negatives))
        slots = self._slots(in_batch)
        slots = slots[slots >= 0]
        # the newest items first: they matter most and their cache entries are stalest
        grad_slots = slots[: self.config.max_grad_items]
        tokens = [self.catalog.tokens[int(s)] or [] for s in grad_slots]
        pooled = (
            self.backbone.encode(tokens)
            if len(grad_slots)
            else torch.zeros((0, self.backbone.hidden_size), device=self.device)
        )
        rest = slots[len(grad_slots) :]
        reps = [self._item_reps(grad_slots, pooled)] if len(grad_slots) else []
        if len(rest):
            reps.append(self._item_reps(rest))
        S = self.config.sampled_negatives
        sampled = self.catalog.index.sample(S, self._rng) if S else np.empty(0, np.int64)
        if len(sampled):
            reps.append(self._item_reps(sampled))
        all_slots = np.concatenate([grad_slots, rest, sampled])
        return (all_slots, torch.cat(reps)), grad_slots, pooled

    def _ranking_loss(
        self, positives: list[Example], columns: tuple[np.ndarray, torch.Tensor], batch: _Batch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The weighted mean sampled-softmax loss, and each row's [E] cross-entropy."""
        c = self.config
        col_slots, col_reps = columns
        E, N = len(positives), len(col_slots)
        n_sampled = min(c.sampled_negatives, N) if c.sampled_negatives else 0
        users = self._user_reps(positives)  # [E, d]
        bias = self._biases(col_slots, self._t)  # [N]
        logits = users @ col_reps.T / c.temperature + bias  # [E, N]
        target_slots = self._slots([e.item_id for e in positives])
        target = torch.as_tensor(
            [int(np.flatnonzero(col_slots[: N - n_sampled] == s)[0]) for s in target_slots],
            device=self.device,
        )
        if c.logq_correction:
            logits = logits - self._log_q(col_slots, N - n_sampled, target_slots, E)
        logits = logits.masked_fill(
            self._mask(positives, col_slots, target_slots, batch), float("-inf")
        )
        weights = torch.as_tensor([e.weight for e in positives], device=self.device)
        ce = F.cross_entropy(logits, target, reduction="none")  # [E]
        return (ce * weights).sum() / weights.sum(), ce

    def _log_q(
        self, col_slots: np.ndarray, n_in_batch: int, targets: np.ndarray, E: int
    ) -> torch.Tensor:
        """log of how often each column is expected among the negatives (logQ correction)."""
        live = max(1, len(self.catalog))
        n_sampled = len(col_slots) - n_in_batch
        in_batch = np.array([(targets == s).sum() for s in col_slots], dtype=np.float64)
        q = (in_batch + n_sampled / live) / (E + n_sampled)
        return torch.as_tensor(
            np.log(np.maximum(q, 1e-12)), dtype=torch.float32, device=self.device
        )

    def _mask(
        self,
        positives: list[Example],
        col_slots: np.ndarray,
        target_slots: np.ndarray,
        batch: _Batch,
    ) -> torch.Tensor:
        """[E, N] True where a column must not count as a negative for that row: the same
        user's other positives, and sampled copies of the row's own item."""
        by_user: dict[str, set[int]] = {}
        for e, s in zip(positives, target_slots, strict=True):
            by_user.setdefault(e.user_id, set()).add(int(s))
        mask = np.zeros((len(positives), len(col_slots)), dtype=bool)
        first = {int(s): k for k, s in reversed(list(enumerate(col_slots)))}
        for row, (e, s) in enumerate(zip(positives, target_slots, strict=True)):
            own = by_user[e.user_id]
            mask[row] = np.isin(col_slots, list(own))
            mask[row, first[int(s)]] = False  # the target column itself
        return torch.as_tensor(mask, device=self.device)

    def _rating_loss(self, rated: list[Example]) -> torch.Tensor:
        if not rated:
            return torch.zeros((), device=self.device)
        users = self._user_reps(rated)
        slots = self._slots([e.item_id for e in rated])
        items = self._item_reps(slots)
        bias = self._biases(slots, self._t)
        buckets = torch.as_tensor(
            [bucket_of(e.user_id, self.config.id_buckets) for e in rated], device=self.device
        )
        predicted = self.heads.rating((users * items).sum(-1), bias, buckets)
        target = torch.as_tensor([e.rating for e in rated], dtype=torch.float32, device=self.device)
        return F.mse_loss(predicted, target) * 0.1

    def _review_loss(self, reviews: list[tuple[str, float]]) -> torch.Tensor:
        """What users write predicts how satisfied they are: trains the adapter on it."""
        if not reviews:
            return torch.zeros((), device=self.device)
        tokens = self.backbone.tokenize([text for text, _ in reviews], self.config.max_item_tokens)
        sentiment = self.heads.review(self.backbone.encode(tokens)).squeeze(-1)
        target = torch.as_tensor([r for _, r in reviews], dtype=torch.float32, device=self.device)
        return F.mse_loss(self.heads.rating_mean.detach() + sentiment, target) * 0.1

    # -- serving -------------------------------------------------------------------------

    def user_vectors(self, user_ids: Sequence[str]) -> VectorBatch:
        known = [u for u in user_ids if u in self.history]
        records = [self.history.get(u) for u in known]
        with torch.no_grad():
            self.heads.eval()
            examples = [Example(u, "", 0.0, self._snapshot(u), self._t) for u in known]
            reps = (
                self._user_reps(examples)
                if examples
                else torch.zeros((0, self.dim), device=self.device)
            )
        vectors = torch.cat([reps, torch.ones((len(known), 1), device=self.device)], dim=1)
        return VectorBatch(
            ids=known,
            vectors=vectors.float().cpu().numpy(),
            version=self.version,
            markers=[r.marker if r else None for r in records],
            events_seen=[r.events_seen if r else 0 for r in records],
        )

    def item_vectors(self, item_ids: Sequence[str]) -> VectorBatch:
        slots = self._slots(item_ids)
        known = [i for i, s in zip(item_ids, slots, strict=True) if s >= 0]
        slots = slots[slots >= 0]
        with torch.no_grad():
            self.heads.eval()
            reps = self._item_reps(slots)
            bias = self._biases(slots, self._t) * self.config.temperature
        vectors = torch.cat([reps, bias[:, None]], dim=1)
        return VectorBatch(ids=known, vectors=vectors.float().cpu().numpy(), version=self.version)

    def observe_history(self, events: Sequence[InteractionEvent]) -> None:
        """Update users' histories and item counts from events without learning from them."""
        self._register_items(events)
        positions = [SourcePosition(topic="-", partition=0, offset=0)] * len(events)
        batch = self._walk(events, positions)
        if batch.positive_slots:
            self.catalog.add_counts(
                np.asarray(batch.positive_slots),
                np.asarray(batch.positive_weights),
                self._t + len(events),
            )
        self._t += len(events)

    def adopt_features(self, other: LLMLearner) -> None:
        """Take another learner's user histories, item counts and clock (not its weights)."""
        for item_id in other.catalog.index.ids():
            slot, mine = other.catalog.index.get(item_id), self.catalog.index.get(item_id)
            if slot is not None and mine is not None:
                self.catalog._count[mine] = other.catalog._count[slot]
                self.catalog._count_t[mine] = other.catalog._count_t[slot]
        self.history, self._t = other.history, other._t

    def observe_items(self, events: Sequence[InteractionEvent]) -> None:
        """Learn nothing, but know these events' items (text encoded, rankable)."""
        self._register_items(events)

    def score_matrix(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
        """[U, C] model scores; items the learner does not know score -inf."""
        slots = self._slots(item_ids)
        out = np.full((len(user_ids), len(item_ids)), -np.inf)
        ok = slots >= 0
        if ok.any() and user_ids:
            with torch.no_grad():
                self.heads.eval()
                users = self._user_reps(
                    [Example(u, "", 0.0, self._snapshot(u), self._t) for u in user_ids]
                )  # [U, d]
                items = self._item_reps(slots[ok])  # [C, d]
                bias = self._biases(slots[ok], self._t)  # [C]
                scores = users @ items.T / self.config.temperature + bias
                out[:, ok] = scores.cpu().numpy()
        return out

    def score(self, user_id: str, item_ids: Sequence[str]) -> np.ndarray:
        """Model scores of ``item_ids`` for ``user_id`` (unknown items: -inf)."""
        row: np.ndarray = self.score_matrix([user_id], item_ids)[0]
        return row

    def predict_ratings(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
        """The rating head's prediction per (user, item) pair (items unknown: the mean)."""
        slots = self._slots(item_ids)
        out = np.full(len(user_ids), float(self.heads.rating_mean.detach()))
        ok = np.flatnonzero(slots >= 0).tolist()
        if ok:
            with torch.no_grad():
                self.heads.eval()
                users = self._user_reps(
                    [
                        Example(user_ids[k], "", 0.0, self._snapshot(user_ids[k]), self._t)
                        for k in ok
                    ]
                )
                items = self._item_reps(slots[ok])
                bias = self._biases(slots[ok], self._t)
                buckets = torch.as_tensor(
                    [bucket_of(user_ids[k], self.config.id_buckets) for k in ok], device=self.device
                )
                out[ok] = self.heads.rating((users * items).sum(-1), bias, buckets).cpu().numpy()
        clipped: np.ndarray = np.clip(out, 1.0, 5.0)
        return clipped

    def known_items(self) -> list[str]:
        return self.catalog.index.ids()

    def forget_users(self, user_ids: Sequence[str]) -> list[str]:
        """History, replayed examples, and the user's rows of the hashed user tables (and
        their optimiser moments) — shared by any user hashed to the same row, who lose
        what that row had learned: erasure wins over their small loss."""
        replayed = self.replay.users()
        known = [u for u in user_ids if u in self.history or u in replayed]
        for user in known:
            self.history.remove(user)
            self.replay.remove_user(user)
        rows = torch.as_tensor(
            [bucket_of(u, self.config.id_buckets) for u in user_ids], device=self.device
        )
        with torch.no_grad():
            for table in (self.heads.user_ids.weight, self.heads.user_rating_bias.weight):
                table[rows] = 0.0
                for moment in self._sparse.state.get(table, {}).values():
                    if isinstance(moment, torch.Tensor) and moment.dim() > 0:
                        moment[rows] = 0.0
        return known

    def item_texts(self, item_ids: Sequence[str]) -> dict[str, str]:
        out = {}
        for item_id in item_ids:
            slot = self.catalog.index.get(item_id)
            if slot is not None and self.catalog.texts[slot]:
                out[item_id] = self.catalog.texts[slot] or ""
        return out

    # -- state ---------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Adapter (PEFT format), heads, optimisers, catalog, users, replay, counters."""
        save_adapter(self.backbone, directory / "adapter")
        (directory / "adapter" / "learner_config.json").write_text(
            self.config.model_dump_json(indent=1)
        )
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()},
            str(directory / "heads.safetensors"),
        )
        tensors, meta = _optimizer_state(self._dense, "dense")
        tensors2, meta2 = _optimizer_state(self._sparse, "sparse")
        save_file({**tensors, **tensors2}, str(directory / "optimizers.safetensors"))
        arrays, catalog_meta = self.catalog.state()
        save_file(
            {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in arrays.items()}
            | {"item_bucket": torch.as_tensor(self._item_bucket)},
            str(directory / "catalog.safetensors"),
        )
        save_json(
            directory / "state.json",
            {
                "config": self.config.model_dump(mode="json"),
                "optimizers": {"dense": meta, "sparse": meta2},
                "catalog": catalog_meta,
                "history": self.history.to_json(),
                "replay": self.replay.to_json(),
                "ledger": self._ledger.to_json(),
                "prequential": self.prequential.to_json(),
                "rng": rng_to_json(self._rng),
                "t": self._t,
                "updates": self._updates,
                "skipped": self.skipped_updates,
            },
        )
        self._anchor = [p.detach().clone() for p in self._lora]

    def load(self, directory: Path) -> None:
        state = load_json(directory / "state.json")
        saved = LLMConfig.model_validate(state["config"])
        if saved.model_dump() != self.config.model_dump():
            raise ValueError(
                f"the checkpoint in {directory} was made with different learner settings"
                f" (model {saved.model!r}); start with the same learner.llm settings or use"
                " another checkpoint directory"
            )
        load_adapter_weights(self.backbone, directory / "adapter")
        heads = load_file(str(directory / "heads.safetensors"), device=str(self.device))
        self.heads.load_state_dict(heads)
        tensors = load_file(str(directory / "optimizers.safetensors"), device=str(self.device))
        _load_optimizer_state(self._dense, "dense", tensors, state["optimizers"]["dense"])
        _load_optimizer_state(self._sparse, "sparse", tensors, state["optimizers"]["sparse"])
        arrays = {
            k: v.cpu().numpy() for k, v in load_file(str(directory / "catalog.safetensors")).items()
        }
        self._item_bucket[:] = arrays.pop("item_bucket")
        self.catalog.load(arrays, state["catalog"])
        self.history = UserHistory.from_json(state["history"])
        self.replay = ReplayBuffer.from_json(self.config.replay, state["replay"])
        self._ledger = EventLedger.from_json(state["ledger"])
        self.prequential = Prequential.from_json(state["prequential"])
        self._rng = rng_from_json(state["rng"])
        self._t, self._updates = float(state["t"]), int(state["updates"])
        self.skipped_updates = int(state["skipped"])
        self._anchor = [p.detach().clone() for p in self._lora]


def _optimizer_state(
    optimizer: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state as tensors (safetensors) and JSON (no pickle)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    groups = [dict(g.items()) for g in sd["param_groups"]]
    return tensors, {"groups": groups, "scalars": scalars}


def _load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    prefix: str,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["groups"]})
