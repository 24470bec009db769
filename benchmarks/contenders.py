"""The contenders of the quality benchmark, behind one small interface.

Each contender learns mini-batches of events and, before learning a batch,
scores candidate items for users and (where it can) predicts ratings.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from learners.river_mf import RiverMFLearner
from schemas.events import InteractionEvent
from schemas.learner_config import LLMConfig, RiverMFConfig
from schemas.vectors import SourcePosition

__all__ = ["BatchRetrained", "Contender", "LoRAStream", "Popularity", "RiverMF"]


def _positions(events: Sequence[InteractionEvent], start: int) -> list[SourcePosition]:
    return [
        SourcePosition(topic="bench", partition=0, offset=start + k) for k in range(len(events))
    ]


class Contender(Protocol):
    name: str
    learn_seconds: float

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        """See the batch's items (not its interactions) before being tested on it."""

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        """[U, C] scores; higher ranks first."""
        ...

    def ratings(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray | None:
        """Predicted rating per (user, item) pair, or None when it cannot."""
        ...

    def learn(self, events: Sequence[InteractionEvent]) -> None: ...


class Popularity:
    """Most popular among the last ``window`` positive events."""

    def __init__(self, window: int = 2000, positive: float = 3.5) -> None:
        self.name = f"most-popular (last {window})"
        self.window, self.positive = window, positive
        self._recent: deque[str] = deque(maxlen=window)
        self._counts: Counter[str] = Counter()
        self.learn_seconds = 0.0

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        pass

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        row = np.fromiter(
            (self._counts.get(i, 0) for i in items), dtype=np.float64, count=len(items)
        )
        return np.broadcast_to(row, (len(users), len(items)))

    def ratings(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray | None:
        return None

    def learn(self, events: Sequence[InteractionEvent]) -> None:
        t0 = time.perf_counter()
        for e in events:
            if is_positive(e, self.positive):
                if len(self._recent) == self.window:
                    old = self._recent[0]
                    self._counts[old] -= 1
                    if not self._counts[old]:
                        del self._counts[old]
                self._recent.append(e.item_id)
                self._counts[e.item_id] += 1
        self.learn_seconds += time.perf_counter() - t0


def is_positive(event: InteractionEvent, threshold: float = 3.5) -> bool:
    """The protocol's positive feedback: a rating at or above ``threshold``, or an implicit
    positive (view, click, cart, purchase, review)."""
    kind = event.event_type.value
    if kind == "rating":
        return (event.value or 0.0) >= threshold
    return kind in ("view", "click", "add_to_cart", "purchase", "review")


class RiverMF:
    """River ``BiasedMF`` (the baseline learner), scored in bulk."""

    def __init__(self, config: RiverMFConfig | None = None) -> None:
        self.name = "river BiasedMF"
        self.learner = RiverMFLearner(config or RiverMFConfig())
        self.learn_seconds = 0.0
        self._seen = 0

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        pass

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        m, k = self.learner._model, self.learner.config.n_factors
        q = np.zeros((len(items), k))
        b = np.zeros(len(items))
        for col, item in enumerate(items):
            if item in m.i_latents:
                q[col] = m.i_latents[item]
                b[col] = m.i_biases[item]
        p = np.zeros((len(users), k))
        for row, user in enumerate(users):
            if user in m.u_latents:
                p[row] = m.u_latents[user]
        return np.asarray(p @ q.T + b)

    def ratings(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray | None:
        m = self.learner._model
        out = np.empty(len(users))
        for k, (u, i) in enumerate(zip(users, items, strict=True)):
            p, q = m.u_latents.get(u), m.i_latents.get(i)
            dot = float(p @ q) if p is not None and q is not None else 0.0
            out[k] = m.global_mean.get() + m.u_biases.get(u, 0.0) + m.i_biases.get(i, 0.0) + dot
        return np.clip(out, 1.0, 5.0)

    def learn(self, events: Sequence[InteractionEvent]) -> None:
        t0 = time.perf_counter()
        self.learner.learn_many(events, _positions(events, self._seen))
        self._seen += len(events)
        self.learn_seconds += time.perf_counter() - t0


class LoRAStream:
    """lorastream's LLM learner, updated from every batch."""

    def __init__(self, config: LLMConfig, name: str = "lorastream") -> None:
        from learners.llm import LLMLearner

        self.name = name
        self.config = config
        self.learner = LLMLearner(config)
        self.learn_seconds = 0.0
        self._seen = 0

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        self.learner.observe_items(events)

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        return self.learner.score_matrix(users, items)

    def ratings(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray | None:
        return self.learner.predict_ratings(users, items)

    def learn(self, events: Sequence[InteractionEvent]) -> None:
        t0 = time.perf_counter()
        self.learner.learn_many(events, _positions(events, self._seen))
        self._seen += len(events)
        self.learn_seconds += time.perf_counter() - t0


class BatchRetrained:
    """The common practice lorastream replaces: the same LLM + LoRA model, retrained from
    scratch every ``every`` events on everything seen so far (``epochs`` passes in time
    order), frozen in between. Between retrains user histories and item counts still
    update, as a feature store would; the weights do not. A due retrain runs when the
    next batch arrives, so none is wasted after the stream's last event."""

    def __init__(
        self, config: LLMConfig, every: int, epochs: int = 1, batch: int = 64, seed: int = 0
    ) -> None:
        self.name = f"batch retrain every {every}"
        self.config, self.every, self.epochs, self.batch = config, every, epochs, batch
        self._rng = np.random.default_rng(seed)
        self._all: list[InteractionEvent] = []
        self._since = 0
        self._due = False
        self.learn_seconds = 0.0
        self._live = LoRAStream(config)

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        if self._due:
            t0 = time.perf_counter()
            self._due = False
            self._retrain()
            self.learn_seconds += time.perf_counter() - t0
        self._live.observe(events)

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        return self._live.scores(users, items)

    def ratings(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray | None:
        return self._live.ratings(users, items)

    def learn(self, events: Sequence[InteractionEvent]) -> None:
        t0 = time.perf_counter()
        self._all.extend(events)
        self._since += len(events)
        self._live.learner.observe_history(events)  # features move on; weights do not
        if self._since >= self.every:
            self._since = 0
            self._due = True
        self.learn_seconds += time.perf_counter() - t0

    def _retrain(self) -> None:
        no_replay = self.config.replay.model_copy(update={"enabled": False})
        fresh = LoRAStream(self.config.model_copy(update={"replay": no_replay}))
        for _ in range(self.epochs):
            for start in range(0, len(self._all), self.batch):
                fresh.learn(self._all[start : start + self.batch])
        fresh.learner.adopt_features(self._live.learner)
        self._live = fresh
