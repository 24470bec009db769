"""How the LLM learner scores: its trained model and item co-occurrence, mixed by a weight
chosen online.

The trained model's logit for user ``u`` and item ``i`` is::

    model(u, i) = cos(u, i) / temperature + prior(i)
    prior(i)    = mean_h log(1 + count_h(i))

— the towers (LoRA over the backbone, ``learners/towers.py``), trained by the objective,
and a trend-aware popularity prior (counts with several half-lives), fixed so that the
towers learn what it misses (``popularity_prior = "learned"`` weighs the half-lives and
adds a per-item bias, trained with the towers). The served
score mixes it with item-kNN over the user's recent positives
(``learners/cooccurrence.py``)::

    score(u, i) = (1 − w) · model_t(u, i) / spread_t(u) + w · knn(u, i) / max_j knn(u, j)
    model_t(u, i) = t · cos(u, i) / temperature + prior(i)

``t`` weighs the towers within the model (``t = 0``: the prior alone, for streams where
the towers do not beat it). ``spread_t(u)`` is the range of ``model_t(u, ·)`` over the
catalog: per-user factors (and constants) change no user's ranking, and they put both
parts on one scale so that ``w`` means the same for every user. Each term is a dot
product — users ``(1−w)/spread_t(u) · [t·u/temperature, 1]`` plus a sparse vector of
their top kNN items, items ``[i, prior(i)]`` plus a sparse one-hot of themselves — so the
published vectors rank exactly as the learner does. :class:`MixSelector` keeps, for every
candidate ``(w, t)``, its hit@10 on the learner's own prequential tests over a sliding
window, and the learner uses the best: model selection by prequential validation, online,
so each stream gets the balance that works on it now.

>>> sel = MixSelector(weights=(0.0, 0.5, 0.9), window=4)
>>> sel.current
Mix(knn=0.5, towers=1.0)
>>> sel.record(np.array([[0.0, 0.0, 1.0]] * 4))   # per test: hit@10 of each candidate
>>> sel.current
Mix(knn=0.9, towers=1.0)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PARTS", "Mix", "MixSelector", "Parts"]

#: Parts a score can be decomposed into (besides "full").
PARTS = ("prior", "personal", "knn", "towers")


@dataclass(frozen=True)
class Mix:
    """The weight of kNN in the score (the trained model has the rest), and the weight of
    the towers' cosine within the trained model (0: its popularity prior alone)."""

    knn: float
    towers: float = 1.0


@dataclass
class Parts:
    """The score's terms for U users and C items, before mixing."""

    towers: np.ndarray  # [U, C] cos / temperature
    prior: np.ndarray  # [C] the popularity prior
    knn: np.ndarray  # [U, C] kNN, each row scaled to [0, 1]
    spread: dict[float, np.ndarray]  # towers weight -> [U] range of the model over the catalog

    def mixed(self, mix: Mix, part: str = "full") -> np.ndarray:
        """[U, C] the score under ``mix``, or one part of it as the mix weighs it (the parts
        sum to the score)."""
        scale = (1.0 - mix.knn) / self.spread[mix.towers][:, None]
        towers = scale * mix.towers * self.towers if part in ("full", "personal", "towers") else 0.0
        prior = scale * self.prior[None, :] if part in ("full", "prior") else 0.0
        knn = mix.knn * self.knn if part in ("full", "personal", "knn") else 0.0
        out = np.zeros_like(self.towers) + towers + prior + knn
        return out


class MixSelector:
    """Candidate mixes and their recent prequential hit rates; :attr:`current` is the best."""

    def __init__(
        self,
        weights: tuple[float, ...],
        window: int,
        towers: tuple[float, ...] = (1.0,),
        default: Mix = Mix(0.5),
    ) -> None:
        self.mixes = [Mix(float(w), float(t)) for t in towers for w in weights]
        self._hits: deque[np.ndarray] = deque(maxlen=window)
        self._sum = np.zeros(len(self.mixes))
        distance = [abs(m.knn - default.knn) + abs(m.towers - default.towers) for m in self.mixes]
        self._index = int(np.argmin(distance))

    @property
    def towers_weights(self) -> list[float]:
        return sorted({m.towers for m in self.mixes})

    @property
    def current(self) -> Mix:
        return self.mixes[self._index]

    def record(self, hits: np.ndarray) -> None:
        """``hits[t, m]``: hit@10 of mix ``m`` on test ``t``; the best mix becomes current
        (ties keep the current one)."""
        for row in np.atleast_2d(hits):
            if len(self._hits) == self._hits.maxlen:
                self._sum -= self._hits[0]
            self._hits.append(row)
            self._sum += row
        best = int(np.argmax(self._sum))
        if self._sum[best] > self._sum[self._index]:
            self._index = best

    def to_json(self) -> dict[str, Any]:
        return {"hits": [row.tolist() for row in self._hits], "index": self._index}

    def load_json(self, data: dict[str, Any]) -> None:
        self._hits.clear()
        self._sum = np.zeros(len(self.mixes))
        for row in data["hits"]:
            if len(row) == len(self.mixes):
                self._hits.append(np.asarray(row))
                self._sum += self._hits[-1]
        self._index = min(int(data["index"]), len(self.mixes) - 1)
