"""The LLM learner: a LoRA adapter over a frozen Hugging Face model, a popularity prior and
item co-occurrence, mixed into one score, updated from every mini-batch.

Per :meth:`LLMLearner.learn_many`:

1. the batch's items are registered; new ones are tokenized and encoded without
   gradients, so even an item seen for the first time can be ranked (through its text);
2. every positive event is *tested* first (prequential, ``learners/tester.py``): its true
   item is ranked against the catalog by the state as it was before the batch, under every
   candidate mix, which is how the mix is chosen (``learners/scoring.py``);
3. one optimisation step of the towers (``learners/objective.py``), with replayed examples
   against forgetting; a non-finite loss or gradient skips it and changes nothing;
4. then the counts: popularity per half-life, co-occurrence of each new positive with the
   user's earlier ones, the users' histories; and a few stale cached item vectors are
   re-encoded.

The parts and the vectors that carry them are described in ``learners/scoring.py``: a
plain dot product of a published user vector (dense + sparse) with an item vector ranks
exactly as the learner does.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from learners import llm_state
from learners.backbone import Backbone, load_backbone
from learners.base import CatchUp, LearnerInfo, LearnReport, VectorBatch
from learners.cooccurrence import Cooccurrence
from learners.data_parallel import Shard
from learners.feedback import Feedback, HistoryKind, classify
from learners.history import Consumed, Interaction, UserHistory, marker_of
from learners.item_tower import ItemTower
from learners.ledger import EventLedger
from learners.objective import BatchExamples, Objective, StepOutput
from learners.replay import Example, ReplayBuffer
from learners.scorer import Scorer
from learners.scoring import Mix, MixSelector
from learners.tester import Tester, TestOutcome, positives_to_test
from learners.towers import Heads
from learners.user_tower import UserTower
from schemas.events import EventType, InteractionEvent
from schemas.learner_config import LLMConfig
from schemas.vectors import SourcePosition

__all__ = ["LLMLearner"]

log = logging.getLogger(__name__)


@dataclass
class _Counts:
    """Count updates of a batch, applied after its step (the step must not see them)."""

    slots: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    pairs: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (item, earlier)


class LLMLearner:
    """LoRA over a frozen backbone, two towers, a popularity prior and co-occurrence."""

    kind = "llm"

    def __init__(self, config: LLMConfig | None = None, shard: Shard | None = None) -> None:
        self.config = c = config or LLMConfig()
        torch.manual_seed(c.seed)
        self.backbone: Backbone = load_backbone(c)
        # one model over ranks: each rank calls learn_many with the same global batch
        self.shard = self.backbone.shard = shard  # (learners/data_parallel.py)
        self.device = self.backbone.device
        self.heads = Heads(self.backbone.hidden_size, c).to(self.device)
        self.dim = self.heads.dim
        self.items = ItemTower(c, self.backbone, self.heads)
        self.users = UserTower(c, self.backbone, self.heads, self.items)
        self.history = UserHistory(c.max_users, c.history_len, c.consumed_len)
        self.cooccurrence = Cooccurrence(c.max_items, c.cooccurrence_max_pairs)
        self.scorer = Scorer(c, self.heads, self.items, self.users, self.cooccurrence, self.history)
        self.selector = MixSelector(c.mix_knn, c.mix_window, c.mix_towers)
        self.rng = np.random.default_rng(c.seed)
        self.tester = Tester(c, self.scorer, self.selector, self.history, self.rng)
        self.objective = Objective(c, self.heads, self.items, self.users, self.scorer, self.rng)
        self.replay = ReplayBuffer(c.replay, seed=c.seed)
        self._ledger = EventLedger()
        self._updates = 0
        self.skipped_updates = 0
        self._lr_factor, self._replay_factor = 1.0, 1.0
        self._batch_share = 1.0  # of lr_batch_events, in the step being taken
        self.adapter = [p for p in self.backbone.model.parameters() if p.requires_grad]
        self.dense_optimizer = torch.optim.AdamW(
            [
                {"params": self.adapter + self.heads.slow_parameters(), "lr": c.lr, "base": c.lr},
                {
                    "params": self.heads.fast_parameters(),
                    "lr": c.embedding_lr,
                    "base": c.embedding_lr,
                    "weight_decay": 0.0,
                },
            ],
            lr=c.lr,
            weight_decay=c.weight_decay,
            fused=self.device.type == "cuda",  # one kernel for all tensors, not one per tensor
        )
        self.sparse_optimizer = torch.optim.SparseAdam(
            self.heads.sparse_parameters(), lr=c.embedding_lr
        )
        if shard is not None:
            shard.watch([*self.adapter, *self.heads.parameters()])
        self.anchor: list[torch.Tensor] | None = None  # proximal term's reference

    # -- protocol ------------------------------------------------------------------------

    @property
    def version(self) -> str:
        return f"{self.kind}:{self.config.model}:a{self._updates}"

    @property
    def info(self) -> LearnerInfo:
        return LearnerInfo(model=self.config.model, device=str(self.device))

    @property
    def ledger(self) -> EventLedger:
        return self._ledger

    @property
    def updates(self) -> int:
        return self._updates

    @property
    def mix(self) -> Mix:
        """The weights of the score's parts the learner ranks (and publishes) with now."""
        return self.selector.current

    def state_sizes(self) -> dict[str, tuple[float, float]]:
        c = self.config
        sizes: dict[str, tuple[float, float]] = {
            "users": (len(self.history), c.max_users),
            "items": (len(self.items.catalog), c.max_items),
            "replay_examples": (len(self.replay), c.replay.capacity),
            "replay_bytes": (self.replay.bytes, c.replay.max_bytes),
            "cooccurrence_pairs": (self.cooccurrence.pairs, c.cooccurrence_max_pairs),
        }
        if c.consumed_len:  # none kept, none bounded
            sizes["consumed_items"] = (self.history.consumed_items, self.history.capacity)
        return sizes

    def set_boost(self, lr_factor: float = 1.0, replay_factor: float = 1.0) -> None:
        """Scale the learning rates and the replay mix until called again (drift policy)."""
        self._lr_factor, self._replay_factor = lr_factor, replay_factor
        self._set_rates()

    def _set_rates(self, events: int | None = None) -> None:
        """The optimisers' rates now: the adapter's group annealed by events learned, every
        group scaled by the drift policy's boost and by the step's share of a full batch.
        Adam moves each parameter by about its rate per step whatever the batch holds, so
        eight steps of 8 events at whole rates would move it about eight times as far as one
        step of 64; scaled, how the stream is cut into batches below ``lr_batch_events``
        leaves what is learned about the same (docs/design.md)."""
        c = self.config
        if events is not None:
            self._batch_share = min(1.0, events / c.lr_batch_events) if c.lr_batch_events else 1.0
        scale = self._lr_factor * self._batch_share
        slow, fast = self.dense_optimizer.param_groups
        slow["lr"] = slow["base"] * self.lr_annealing * scale
        fast["lr"] = fast["base"] * scale
        for group in self.sparse_optimizer.param_groups:
            group["lr"] = c.embedding_lr * scale

    @property
    def lr_annealing(self) -> float:
        """The adapter's rate as a fraction of ``lr``: from 1 towards ``lr_floor``, halving
        the distance every ``lr_half_life`` events learned. The adapter shapes the pretrained
        geometry to the catalog early; trained on at the full rate it overwrites what the
        geometry knew, and a change of users' interests then finds it worse than untrained
        (docs/design.md)."""
        c = self.config
        if not c.lr_half_life:
            return 1.0
        return c.lr_floor + (1.0 - c.lr_floor) * math.pow(0.5, self.scorer.t / c.lr_half_life)

    def learn_many(
        self, events: Sequence[InteractionEvent], positions: Sequence[SourcePosition]
    ) -> LearnReport:
        started = time.perf_counter()
        for slot in self.items.register(events, self._updates):
            self.cooccurrence.forget(slot)  # an evicted item's slot went to a new one
        feedback = [self._feedback(e) for e in events]
        tests = positives_to_test(
            events, [f.positive for f in feedback], self.config.exclude_consumed
        )
        outcome = self.tester.run(
            [events[k] for k in tests],
            [e for e in events if e.event_type is EventType.IMPRESSION],
        )
        batch, counts = self._walk(events, feedback, positions)
        replayed = self._replayed(len(batch.examples))
        self._set_rates(len(events))
        step = self._step(batch, replayed)
        self._apply_counts(counts, len(events))
        if self.config.replay.enabled:
            self.replay.add_many(e for e in batch.examples if e.weight > 0)
        if not step.skipped:  # encodings change only with an update (or in catch_up)
            self._updates += 1
            self.items.refresh(self._updates, self._refresh_budget(len(events)))
        self._ledger.record(e.event_id for e in events)
        if self.config.proximal_weight and self._updates % self.config.proximal_every == 0:
            self.anchor = [p.detach().clone() for p in self.adapter]
        return LearnReport(
            events=len(events),
            users=list(dict.fromkeys(e.user_id for e in events)),
            items=list(dict.fromkeys(e.item_id for e in events)),
            loss=step.loss,
            skipped_update=step.skipped,
            metrics=self._metrics(outcome, len(replayed), time.perf_counter() - started),
            test_errors=1.0 - outcome.hits,
            example_losses=step.example_losses,
        )

    def _metrics(self, outcome: TestOutcome, replayed: int, seconds: float) -> dict[str, float]:
        c = self.config.replay
        metrics = {
            **self.tester.summary(),
            "replayed": float(replayed),
            "learn_seconds": seconds,
            "replay_fill": len(self.replay) / c.capacity,
            "replay_ratio": c.ratio * self._replay_factor if c.enabled else 0.0,
            "mix_knn": self.mix.knn,
            "mix_towers": self.mix.towers,
        }
        ages = self.items.catalog.ages(self._updates)  # what item vectors are built from
        if len(ages):
            p50, p99 = np.percentile(ages, [50, 99])
            metrics["item_encoding_age_p50"], metrics["item_encoding_age_p99"] = p50, p99
            metrics["item_encodings_behind"] = float(np.count_nonzero(ages))
        if outcome.candidates:
            metrics["eval_candidates"] = float(outcome.candidates)
            metrics["eval_full_catalog"] = float(outcome.full_catalog)
        if self.device.type == "cuda":
            metrics["gpu_memory_allocated_bytes"] = float(torch.cuda.memory_allocated(self.device))
            metrics["gpu_memory_reserved_bytes"] = float(torch.cuda.memory_reserved(self.device))
        return metrics

    # -- events → examples and counts ----------------------------------------------------

    def _feedback(self, event: InteractionEvent) -> Feedback:
        c = self.config
        return classify(event, c.positive_rating, c.negative_rating, c.event_weights)

    def _walk(
        self,
        events: Sequence[InteractionEvent],
        feedback: Sequence[Feedback],
        positions: Sequence[SourcePosition],
    ) -> tuple[BatchExamples, _Counts]:
        """Events in order → examples with the history each user had then; histories move on."""
        batch, counts = BatchExamples(), _Counts()
        t0 = self.scorer.t
        slots = self.items.slots([e.item_id for e in events])  # registered: every one has a slot
        handles = self.items.handles(slots).tolist()
        for k, (event, fb, position) in enumerate(zip(events, feedback, positions, strict=True)):
            user, item = event.user_id, event.item_id
            rating = event.value if event.event_type is EventType.RATING else None
            example = Example(
                user, item, fb.weight, self.users.snapshot(self.history, user), t0 + k, rating
            )
            if fb.kind is HistoryKind.IMPRESSION:
                batch.impressions.append(example)
            elif fb.positive or rating is not None:
                batch.examples.append(example)
            if fb.negative:
                batch.hard_negatives.setdefault(user, []).append(item)
            if event.review_text and rating:
                batch.reviews.append((event.review_text, float(rating)))
            slot = int(slots[k])
            if fb.positive and slot >= 0:
                counts.pairs.append((slot, self.items.resolve(self.history.positives(user))))
                counts.slots.append(slot)
                counts.weights.append(min(fb.weight, 1.0))
            impression = fb.kind is HistoryKind.IMPRESSION
            interaction = (
                None
                if impression
                else Interaction(item, fb.kind.value, event.value, event.timestamp.timestamp())
            )
            consumed = None if impression or slot < 0 else Consumed.of(handles[k], fb.positive)
            self.history.add(user, interaction, marker_of(event, position), consumed)
        return batch, counts

    def _apply_counts(self, counts: _Counts, events: int) -> None:
        if counts.slots:
            self.items.catalog.add_counts(
                np.asarray(counts.slots), np.asarray(counts.weights), self.scorer.t + events
            )
        for slot, earlier in counts.pairs:
            self.cooccurrence.add(slot, earlier)
        self.scorer.t += events

    # -- one optimisation step -------------------------------------------------------------

    def _refresh_budget(self, events: int) -> int:
        """Stale cached items a step over ``events`` re-encodes with the adapter it left:
        ``cache_refresh_per_step``, or fewer for a small batch (light load, closed early),
        which would otherwise pay a full batch's re-encoding."""
        c = self.config
        per_event = math.ceil(round(c.cache_refresh_per_event * events, 6))
        return min(c.cache_refresh_per_step, per_event)

    def _replayed(self, n_new: int) -> list[Example]:
        c = self.config.replay
        if not c.enabled or n_new == 0:
            return []
        return self.replay.sample(round(c.ratio * self._replay_factor * n_new))

    def _step(self, batch: BatchExamples, replayed: list[Example]) -> StepOutput:
        index = self.items.catalog.index
        examples = [e for e in batch.examples + replayed if e.item_id in index]
        if not examples:
            return StepOutput()
        self.heads.train()
        loss, columns, rows = self.objective.loss(examples, batch, self.anchor, self.adapter)
        # the per-example losses reported are the new examples' (replayed ones follow them)
        rows = rows[: sum(1 for e in batch.examples if e.weight > 0 and e.item_id in index)]
        if loss is None:
            return StepOutput(None, False, rows)
        dense = self.adapter + self.heads.dense_parameters()
        self.dense_optimizer.zero_grad(set_to_none=True)
        self.sparse_optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if finite:
            loss.backward()  # type: ignore[no-untyped-call]
            if self.shard is not None:  # each rank holds its own rows' share
                self.shard.all_reduce_grads(self.adapter, self.heads.dense_parameters())
            finite = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in dense)
        if not finite:
            self.skipped_updates += 1
            self.dense_optimizer.zero_grad(set_to_none=True)
            self.sparse_optimizer.zero_grad(set_to_none=True)
            log.warning(
                "skipped an update: non-finite loss or gradient (loss=%s)", float(loss.detach())
            )
            return StepOutput(float(loss.detach()), True, rows)
        torch.nn.utils.clip_grad_norm_(dense, self.config.grad_clip)
        self.dense_optimizer.step()
        self.sparse_optimizer.step()  # type: ignore[no-untyped-call]
        self.dense_optimizer.zero_grad(set_to_none=True)
        self.sparse_optimizer.zero_grad(set_to_none=True)
        self.items.keep(columns.grad_slots, columns.pooled, self._updates)  # made before it
        return StepOutput(float(loss.detach()), False, rows)

    # -- serving -------------------------------------------------------------------------

    def catch_up(self, budget: int) -> CatchUp:
        """Re-encode up to ``budget`` of the stalest cached item encodings with the current
        adapter: item vectors, and the users composed from them, are then built from one
        model. A step re-encodes only its budget (``_refresh_budget``); this is for idle time."""
        redone = self.items.refresh(self._updates, budget) if budget > 0 else 0
        return CatchUp(redone, self.items.behind(self._updates))

    def user_vectors(self, user_ids: Sequence[str]) -> VectorBatch:
        """``(1 − w)/spread_t(u) · [t · u / temperature, 1]`` plus the sparse top kNN items
        (``w · knn``), ``(w, t)`` the current mix (``learners/scoring.py``)."""
        known = [u for u in user_ids if u in self.history]
        w, t = self.mix.knn, self.mix.towers
        reps = self.scorer.user_reps(known)
        scale = (1.0 - w) / self.scorer.spread(reps, [t])[t]
        towers = t * reps.float().cpu().numpy() / self.config.temperature
        vectors = np.concatenate([towers, np.ones((len(known), 1))], axis=1) * scale[:, None]
        records = [self.history.get(u) for u in known]
        n = self.config.publish_consumed
        return VectorBatch(
            ids=known,
            vectors=vectors.astype(np.float32),
            version=self.version,
            markers=[r.marker if r else None for r in records],
            events_seen=[r.events_seen if r else 0 for r in records],
            sparse=self._user_sparse(known, w),
            consumed=[self.consumed(u)[:n] for u in known],
        )

    def _user_sparse(
        self, user_ids: Sequence[str], weight: float
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each user's published kNN items (keys) and ``weight · knn``; none at weight 0."""
        if weight <= 0:
            none = (self.items.key[:0], np.zeros(0, np.float32))
            return [none] * len(user_ids)
        return [
            (self.items.key[slots], (weight * knn).astype(np.float32))
            for slots, knn in self.scorer.knn_sparse(user_ids)
        ]

    def item_vectors(self, item_ids: Sequence[str]) -> VectorBatch:
        """``[i, prior(i)]`` plus the sparse one-hot of the item's own key."""
        slots = self.items.slots(item_ids)
        known = [i for i, s in zip(item_ids, slots, strict=True) if s >= 0]
        slots = slots[slots >= 0]
        with torch.no_grad():
            self.heads.eval()
            reps = self.items.reps(slots).float().cpu().numpy()
            prior = self.scorer.prior(slots).float().cpu().numpy()
        return VectorBatch(
            ids=known,
            vectors=np.concatenate([reps, prior[:, None]], axis=1).astype(np.float32),
            version=self.version,
            sparse=[(self.items.key[s : s + 1], np.ones(1, np.float32)) for s in slots.tolist()],
        )

    def score_matrix(
        self, user_ids: Sequence[str], item_ids: Sequence[str], part: str = "full"
    ) -> np.ndarray:
        """[U, C] scores as the learner ranks (``part``: full, or one of
        :data:`~learners.scoring.PARTS`); items it does not know score -inf."""
        slots = self.items.slots(item_ids)
        out = np.full((len(user_ids), len(item_ids)), -np.inf)
        ok = slots >= 0
        if ok.any() and user_ids:
            parts = self.scorer.parts(list(user_ids), slots[ok], [self.mix.towers])
            out[:, ok] = parts.mixed(self.mix, part)
        return out

    def predict_ratings(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
        """The rating head's prediction per (user, item) pair (items unknown: the mean)."""
        return llm_state.predict_ratings(self, user_ids, item_ids)

    def observe_items(self, events: Sequence[InteractionEvent]) -> None:
        """Learn nothing, but know these events' items (text encoded, rankable)."""
        for slot in self.items.register(events, self._updates):
            self.cooccurrence.forget(slot)

    def consumed(self, user_id: str) -> list[str]:
        """The items the user consumed, newest first (what recommendations exclude)."""
        slots = self.items.resolve(self.history.consumed(user_id).handles)
        return self.items.catalog.index.ids_of(slots[::-1])

    def known_users(self) -> list[str]:
        return list(self.history.users())

    def known_items(self) -> list[str]:
        return self.items.catalog.index.ids()

    def item_texts(self, item_ids: Sequence[str]) -> dict[str, str]:
        catalog = self.items.catalog
        out = {}
        for item_id in item_ids:
            slot = catalog.index.get(item_id)
            if slot is not None and catalog.texts[slot]:
                out[item_id] = catalog.texts[slot] or ""
        return out

    def forget_users(self, user_ids: Sequence[str]) -> list[str]:
        """History, consumed items, replayed examples, and the user's rows of the hashed user
        tables (and their optimiser moments) — shared by any user hashed to the same row, who
        lose what that row had learned: erasure wins over their small loss. Co-occurrence
        keeps only item pairs, no user."""
        return llm_state.forget_users(self, user_ids)

    # -- state ---------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Adapter (PEFT format), heads, optimisers, catalog, co-occurrence, users, replay,
        counters. Saving changes nothing in the learner."""
        llm_state.save(self, directory)

    def load(self, directory: Path) -> None:
        r = llm_state.load(self, directory)
        self.history = self.scorer.history = self.tester.history = r.history
        self.rng = self.tester.rng = self.objective.rng = r.rng
        self.replay, self._ledger, self.anchor = r.replay, r.ledger, r.anchor
        self._updates, self.skipped_updates = r.updates, r.skipped_updates
