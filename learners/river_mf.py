"""The baseline learner: River's online biased matrix factorisation.

User vectors are ``[p_u, 1]`` and item vectors ``[q_i, b_i]``: their dot
product ``<p_u, q_i> + b_i`` ranks items for a user exactly as ``BiasedMF``'s
prediction does (the global mean and user bias do not change a user's ranking).

>>> from datetime import datetime, UTC
>>> from schemas import InteractionEvent, SourcePosition
>>> learner = RiverMFLearner(RiverMFConfig(n_factors=4, seed=1))
>>> t = datetime(2026, 1, 1, tzinfo=UTC)
>>> events = [InteractionEvent(event_id=f"e{i}", user_id="u1", item_id=f"i{i % 3}",
...                            event_type="rating", value=5.0, timestamp=t) for i in range(6)]
>>> report = learner.learn_many(events, [SourcePosition(topic="t", partition=0, offset=i)
...                                      for i in range(6)])
>>> report.events, learner.ledger.count
(6, 6)
>>> batch = learner.user_vectors(["u1", "nobody"])
>>> batch.ids, batch.vectors.shape, batch.markers[0].offset
(['u1'], (1, 5), 5)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from river import optim, reco

from learners.base import CatchUp, LearnReport, Unscheduled, VectorBatch
from learners.feedback import classify
from learners.history import Interaction, UserHistory, marker_of
from learners.ledger import EventLedger
from learners.prequential import Prequential, rank_of_true
from learners.slots import SlotIndex
from learners.state_io import (
    load_arrays,
    load_json,
    rng_from_json,
    rng_to_json,
    save_arrays,
    save_json,
)
from schemas.events import EventType, InteractionEvent
from schemas.learner_config import RiverMFConfig
from schemas.vectors import SourcePosition

__all__ = ["RiverMFLearner"]


def interaction_of(event: InteractionEvent, snippet_chars: int = 160) -> Interaction:
    snippet = event.review_text[:snippet_chars] if event.review_text else None
    return Interaction(
        event.item_id, event.event_type.value, event.value, event.timestamp.timestamp(), snippet
    )


class RiverMFLearner(Unscheduled):
    """Online ``river.reco.BiasedMF`` behind the :class:`~learners.base.Learner` protocol."""

    kind = "river-mf"

    def __init__(self, config: RiverMFConfig | None = None) -> None:
        self.config = config or RiverMFConfig()
        self._model = self._new_model()
        self._history = UserHistory(self.config.max_users, self.config.history_len)
        self._items = SlotIndex(self.config.max_items)
        self._rng = np.random.default_rng(self.config.seed)
        self._ledger = EventLedger()
        self._updates = 0
        self.prequential = Prequential(window=2000)

    def _new_model(self) -> reco.BiasedMF:
        c = self.config
        return reco.BiasedMF(
            n_factors=c.n_factors,
            bias_optimizer=optim.SGD(c.learning_rate),
            latent_optimizer=optim.SGD(c.learning_rate),
            l2_bias=c.l2,
            l2_latent=c.l2,
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=c.init_sigma, seed=c.seed),
            clip_gradient=c.clip_gradient,
        )

    @property
    def version(self) -> str:
        return f"{self.kind}:u{self._updates}"

    @property
    def ledger(self) -> EventLedger:
        return self._ledger

    @property
    def history(self) -> UserHistory:
        return self._history

    def _target(self, event: InteractionEvent) -> float:
        if event.event_type is EventType.RATING and event.value is not None:
            return float(event.value)
        return self.config.implicit_targets.get(event.event_type.value, 3.0)

    @property
    def updates(self) -> int:
        return self._updates

    def set_boost(self, lr_factor: float = 1.0, replay_factor: float = 1.0) -> None:
        """Scale the SGD learning rates, at most to ``max_learning_rate`` (River MF has no
        replay). River optimizers read their rate from a scheduler: a constant one."""
        c = self.config
        rate = min(c.learning_rate * lr_factor, max(c.learning_rate, c.max_learning_rate))
        for optimizer in self._optimizers():
            optimizer.lr = optim.schedulers.Constant(rate)

    def forget_users(self, user_ids: Sequence[str]) -> list[str]:
        known = [u for u in user_ids if u in self._history or u in self._model.u_latents]
        for user in known:
            self._history.remove(user)
            self._forget_user(user)
        return known

    def learn_many(
        self, events: Sequence[InteractionEvent], positions: Sequence[SourcePosition]
    ) -> LearnReport:
        """Learn each event in order (River learns one at a time), with sampled negatives.

        Prequentially, each event's rating is predicted before it is learned (the squared
        errors are the per-event losses) and each positive event's item is ranked among
        ``eval_candidates`` sampled known items."""
        started = time.perf_counter()
        model, k = self._model, self.config.negative_samples
        hits = self._test(events)
        errors = np.empty(len(events))
        skipped = 0
        for index, (event, position) in enumerate(zip(events, positions, strict=True)):
            user, item = event.user_id, event.item_id
            target = self._target(event)
            errors[index] = (model.predict_one(user, item) - target) ** 2
            for gone in self._history.add(user, interaction_of(event), marker_of(event, position)):
                self._forget_user(gone)
            _, gone_item = self._items.add(item)
            if gone_item is not None:
                self._forget_item(gone_item)
            if not np.isfinite(target):  # one SGD step on it would make every vector NaN
                skipped += 1
                continue
            model.learn_one(user, item, target)
            teaches = classify(event).positive  # the negatives ranking learns from
            if k and teaches:
                for negative in self._items.ids_of(self._items.sample(k, self._rng)):
                    if negative != item:
                        model.learn_one(user, negative, self.config.negative_target)
        self._ledger.record(e.event_id for e in events)
        self._updates += 1
        return LearnReport(
            events=len(events),
            users=list(dict.fromkeys(e.user_id for e in events)),
            items=list(dict.fromkeys(e.item_id for e in events)),
            loss=float(errors.mean()) if len(errors) else None,
            metrics={
                **self.prequential.summary(),
                "eval_candidates": float(self.config.eval_candidates + 1),
                "learn_seconds": time.perf_counter() - started,
            },
            test_errors=1.0 - hits,
            example_losses=errors,
            skipped_update=skipped > 0,
        )

    def _test(self, events: Sequence[InteractionEvent]) -> np.ndarray:
        """Rank each positive event's item among sampled known items, before learning."""
        c = self.config.eval_candidates
        tests = [e for e in events if self._target(e) >= 4.0 and e.item_id in self._items]
        if not c or not tests or len(self._items) < 2:
            return np.zeros(0)
        rows = []
        for e in tests:
            candidates = [e.item_id, *self._items.ids_of(self._items.sample(c, self._rng))]
            scores = self.score(e.user_id, candidates)
            scores[1:][np.array(candidates[1:]) == e.item_id] = -np.inf
            rows.append(scores)
        greater, ties = rank_of_true(np.stack(rows))
        return self.prequential.record_ranks(greater, ties)

    def _forget_user(self, user_id: str) -> None:
        self._model.u_latents.pop(user_id, None)
        self._model.u_biases.pop(user_id, None)

    def _forget_item(self, item_id: str) -> None:
        self._model.i_latents.pop(item_id, None)
        self._model.i_biases.pop(item_id, None)

    def catch_up(self, budget: int) -> CatchUp:
        """Nothing is derived from the model: its vectors are the model."""
        return CatchUp()

    def user_vectors(self, user_ids: Sequence[str]) -> VectorBatch:
        known = [u for u in user_ids if u in self._history and u in self._model.u_latents]
        vectors = np.ones((len(known), self.config.n_factors + 1), dtype=np.float32)
        records = [self._history.get(u) for u in known]
        for row, user in enumerate(known):
            vectors[row, :-1] = self._model.u_latents[user]
        return VectorBatch(
            ids=known,
            vectors=vectors,
            version=self.version,
            markers=[r.marker if r else None for r in records],
            events_seen=[r.events_seen if r else 0 for r in records],
        )

    def item_vectors(self, item_ids: Sequence[str]) -> VectorBatch:
        known = [i for i in item_ids if i in self._model.i_latents]
        vectors = np.empty((len(known), self.config.n_factors + 1), dtype=np.float32)
        for row, item in enumerate(known):
            vectors[row, :-1] = self._model.i_latents[item]
            vectors[row, -1] = self._model.i_biases[item]
        return VectorBatch(ids=known, vectors=vectors, version=self.version)

    def score(self, user_id: str, item_ids: Sequence[str]) -> np.ndarray:
        """``BiasedMF``'s predictions for ``user_id`` on each item (unknown parts count 0)."""
        m, zeros = self._model, np.zeros(self.config.n_factors)
        p = m.u_latents.get(user_id)
        base = m.global_mean.get() + m.u_biases.get(user_id, 0.0)
        bias = np.fromiter(
            (m.i_biases.get(i, 0.0) for i in item_ids), dtype=np.float64, count=len(item_ids)
        )
        if p is None:
            return base + bias
        q = np.stack([m.i_latents.get(i, zeros) for i in item_ids]) if item_ids else zeros[None]
        out: np.ndarray = base + bias + q[: len(item_ids)] @ p
        return out

    def known_users(self) -> list[str]:
        return list(self._history.users())

    def known_items(self) -> list[str]:
        return self._items.ids()

    def item_texts(self, item_ids: Sequence[str]) -> dict[str, str]:
        return {}  # matrix factorisation keeps no text

    def state_sizes(self) -> dict[str, tuple[float, float]]:
        return {
            "users": (len(self._history), self.config.max_users),
            "items": (len(self._items), self.config.max_items),
        }

    # -- state ---------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        m = self._model
        users = [u for u in self._history.users() if u in m.u_latents]
        items = [i for i in self._items.ids() if i in m.i_latents]
        k = self.config.n_factors
        save_arrays(
            directory / "factors.safetensors",
            {
                "user_latents": _stack([m.u_latents[u] for u in users], k),
                "user_bias": np.array([m.u_biases[u] for u in users], dtype=np.float64),
                "item_latents": _stack([m.i_latents[i] for i in items], k),
                "item_bias": np.array([m.i_biases[i] for i in items], dtype=np.float64),
            },
        )
        init_state: Any = _initializer_rng(m).get_state(legacy=True)
        save_json(
            directory / "state.json",
            {
                "config": self.config.model_dump(mode="json"),
                "users": users,
                "items": items,
                "global_mean": [m.global_mean.n, m.global_mean._mean],
                "optimizer_iterations": [o.n_iterations for o in self._optimizers()],
                "init_rng": [init_state[0], init_state[1].tolist(), *init_state[2:]],
                "sampler_rng": rng_to_json(self._rng),
                "ledger": self._ledger.to_json(),
                "history": self._history.to_json(),
                "item_index": self._items.to_json(),
                "updates": self._updates,
                "prequential": self.prequential.to_json(),
            },
        )

    def _optimizers(self) -> list[Any]:
        m = self._model
        return [m.u_bias_optimizer, m.i_bias_optimizer, m.u_latent_optimizer, m.i_latent_optimizer]

    def load(self, directory: Path) -> None:
        state = load_json(directory / "state.json")
        arrays = load_arrays(directory / "factors.safetensors")
        self.config = RiverMFConfig.model_validate(state["config"])
        m = self._model = self._new_model()
        for row, user in enumerate(state["users"]):
            m.u_latents[user] = arrays["user_latents"][row].copy()
            m.u_biases[user] = float(arrays["user_bias"][row])
        for row, item in enumerate(state["items"]):
            m.i_latents[item] = arrays["item_latents"][row].copy()
            m.i_biases[item] = float(arrays["item_bias"][row])
        m.global_mean.n, m.global_mean._mean = state["global_mean"]
        for optimizer, n in zip(self._optimizers(), state["optimizer_iterations"], strict=True):
            optimizer.n_iterations = n
        name, keys, *rest = state["init_rng"]
        _initializer_rng(m).set_state((name, np.array(keys, dtype=np.uint32), *rest))
        self._rng = rng_from_json(state["sampler_rng"])
        self._ledger = EventLedger.from_json(state["ledger"])
        self._history = UserHistory.from_json(state["history"])
        self._items = SlotIndex.from_json(state["item_index"])
        self._updates = int(state["updates"])
        self.prequential = Prequential.from_json(state["prequential"])

    def clone(self) -> RiverMFLearner:
        """An independent copy (for evaluation side-runs)."""
        return copy.deepcopy(self)


def _initializer_rng(model: reco.BiasedMF) -> np.random.RandomState:
    """The RandomState River's Normal initializer draws new latent vectors from."""
    rng: np.random.RandomState = getattr(model.latent_initializer, "_rng")  # noqa: B009
    return rng


def _stack(rows: list[np.ndarray], k: int) -> np.ndarray:
    return np.stack(rows).astype(np.float64) if rows else np.zeros((0, k), dtype=np.float64)
