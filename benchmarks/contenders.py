"""The learners in the quality benchmark: lorastream (and views of its score's parts),
River MF, and batch retraining. The simple recommenders are in ``benchmarks/baselines.py``,
the sequential one in ``benchmarks/sasrec.py``; all follow
:class:`benchmarks.protocol.Contender`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.baselines import UNLEARNED
from learners.river_mf import RiverMFLearner
from schemas.events import InteractionEvent
from schemas.learner_config import LLMConfig, RiverMFConfig
from schemas.vectors import SourcePosition

if TYPE_CHECKING:
    import torch

    from learners.llm import LLMLearner

__all__ = ["BatchRetrained", "LoRAStream", "Part", "RiverMF"]


def _positions(events: Sequence[InteractionEvent], start: int) -> list[SourcePosition]:
    return [
        SourcePosition(topic="bench", partition=0, offset=start + k) for k in range(len(events))
    ]


class _Timed:
    """Counts the seconds spent learning."""

    learn_seconds = 0.0

    def _timed_learn(self, events: Sequence[InteractionEvent]) -> None:
        raise NotImplementedError

    def learn(self, events: Sequence[InteractionEvent]) -> None:
        t0 = time.perf_counter()
        self._timed_learn(events)
        self.learn_seconds += time.perf_counter() - t0


class RiverMF(_Timed):
    """River ``BiasedMF`` (the baseline learner), scored in bulk."""

    def __init__(self, config: RiverMFConfig | None = None) -> None:
        self.name = "river BiasedMF"
        self.learner = RiverMFLearner(config or RiverMFConfig())
        self._seen = 0

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        pass

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        m, k = self.learner._model, self.learner.config.n_factors
        q = np.zeros((len(items), k))
        b = np.full(len(items), UNLEARNED)
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

    def _timed_learn(self, events: Sequence[InteractionEvent]) -> None:
        self.learner.learn_many(events, _positions(events, self._seen))
        self._seen += len(events)


class LoRAStream(_Timed):
    """lorastream's LLM learner, updated from every batch."""

    def __init__(self, config: LLMConfig, name: str = "lorastream") -> None:
        from learners.llm import LLMLearner

        self.name = name
        self.config = config
        self.learner = LLMLearner(config)
        self._seen = 0

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        self.learner.observe_items(events)

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        return self.learner.score_matrix(users, items)

    def ratings(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray | None:
        return self.learner.predict_ratings(users, items)

    def _timed_learn(self, events: Sequence[InteractionEvent]) -> None:
        self.learner.learn_many(events, _positions(events, self._seen))
        self._seen += len(events)


class Part:
    """One part of a lorastream contender's score, as its current mix weighs it (prior,
    personal, knn, dense): the decomposition that shows what each part contributes. It
    learns nothing itself — the contender it views does."""

    def __init__(self, of: LoRAStream, part: str) -> None:
        self.of, self.part = of, part
        self.name = f"{of.name} [{part} only]"
        self.learn_seconds = 0.0

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        pass

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        return self.of.learner.score_matrix(users, items, part=self.part)

    def ratings(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray | None:
        return None

    def learn(self, events: Sequence[InteractionEvent]) -> None:
        pass


class BatchRetrained(_Timed):
    """The common practice lorastream replaces: the same model, its weights retrained from
    scratch every ``every`` events on the last ``window`` events (one pass, time order), and
    frozen in between. Its counts — popularity, co-occurrence, user histories — move on
    with every batch, as a feature store would; only the trained weights wait for the next
    retrain. A due retrain runs when the next batch arrives."""

    def __init__(self, config: LLMConfig, every: int, window: int, batch: int = 64) -> None:
        from learners.llm import LLMLearner

        self.name = f"batch retrain every {every} (last {window})"
        self.config, self.every, self.window, self.batch = config, every, window, batch
        self._recent: list[InteractionEvent] = []
        self._since = 0
        self._due = False
        self.live = LLMLearner(config)
        self.live.set_boost(lr_factor=0.0)  # frozen between retrains
        self._seen = 0

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        if self._due:
            t0 = time.perf_counter()
            self._due = False
            self._retrain()
            self.learn_seconds += time.perf_counter() - t0
        self.live.observe_items(events)

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        return self.live.score_matrix(users, items)

    def ratings(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray | None:
        return self.live.predict_ratings(users, items)

    def _timed_learn(self, events: Sequence[InteractionEvent]) -> None:
        self.live.learn_many(events, _positions(events, self._seen))
        self._seen += len(events)
        self._recent = (self._recent + list(events))[-self.window :]
        self._since += len(events)
        if self._since >= self.every:
            self._since, self._due = 0, True

    def _heads_by_item(self, fresh: LLMLearner) -> dict[str, torch.Tensor]:
        """The fresh learner's heads, its per-item biases moved from its catalog slots to
        the same items' slots in the live learner (every item it learned the live one has)."""
        import torch

        state = fresh.heads.state_dict()
        key = "item_bias.weight"
        theirs = fresh.items.catalog.index
        slots = theirs.live_slots()
        mine = self.live.items.catalog.index.slots_of(theirs.ids_of(slots))
        bias = torch.zeros_like(state[key])
        bias[torch.as_tensor(mine[mine >= 0])] = state[key][torch.as_tensor(slots[mine >= 0])]
        return {**state, key: bias}

    def _retrain(self) -> None:
        from learners.llm import LLMLearner

        no_replay = self.config.replay.model_copy(update={"enabled": False})
        fresh = LLMLearner(self.config.model_copy(update={"replay": no_replay}))
        for start in range(0, len(self._recent), self.batch):
            chunk = self._recent[start : start + self.batch]
            fresh.learn_many(chunk, _positions(chunk, start))
        for mine, theirs in zip(self.live.adapter, fresh.adapter, strict=True):
            mine.data.copy_(theirs.data)
        self.live.heads.load_state_dict(self._heads_by_item(fresh))
        catalog = self.live.items.catalog
        catalog.version[:] = -1  # every cached item vector is stale now: re-encode gradually
        self.live.catch_up(self.config.cache_refresh_per_step)  # the rest as steps go on
