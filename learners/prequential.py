"""Prequential (test-then-train) ranking metrics over a rolling window.

Each test scores the true item against candidates *before* the model learns the
event. Ties are broken fairly: a model that scores everything equal gets the
hit rate of a random ranking, not a perfect one.

>>> ev = Prequential(window=100)
>>> ev.record_ranks(np.array([0.0, 3.0, 50.0]), np.array([0.0, 0.0, 0.0]))  # hits
array([1., 1., 0.])
>>> s = ev.summary()
>>> round(s["hr_at_10"], 3), round(s["mrr"], 3)
(0.667, 0.423)
>>> _ = ev.record_ranks(np.array([0.0]), np.array([99.0]))  # 100 tied candidates
>>> round(ev.summary()["hr_at_10"], 3)
0.525
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

__all__ = ["Prequential", "ndcg_at", "rank_of_true", "reciprocal_rank"]


def rank_of_true(
    scores: np.ndarray, true_index: int | np.ndarray = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``scores`` [n, C]: how many candidates score strictly higher than the true
    one, and how many tie with it (excluding itself)."""
    scores = np.atleast_2d(scores)
    rows = np.arange(scores.shape[0])
    true = scores[rows, true_index][:, None]
    greater = (scores > true).sum(1).astype(np.float64)
    ties = (scores == true).sum(1).astype(np.float64) - 1.0
    return greater, ties


def ndcg_at(k: int, greater: np.ndarray, ties: np.ndarray) -> np.ndarray:
    """NDCG@k of one relevant item with ``greater`` candidates above it and ``ties`` tied
    with it, expected over a random order of the ties (as hit@k is): the discount averaged
    over every place the tie lets it take.

    >>> ndcg_at(10, np.array([0.0, 3.0, 0.0]), np.array([0.0, 10.0, 30.0])).round(3)
    array([1.   , 0.219, 0.147])
    """
    cum = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])  # [k + 1]
    g = np.minimum(np.asarray(greater, dtype=np.int64), k)
    last = np.minimum(g + np.asarray(ties, dtype=np.int64) + 1, k)
    return (cum[last] - cum[g]) / (np.asarray(ties, dtype=np.float64) + 1.0)  # type: ignore[no-any-return]


def reciprocal_rank(greater: np.ndarray, ties: np.ndarray) -> np.ndarray:
    """1 / rank of one relevant item with ``greater`` candidates above it and ``ties`` tied
    with it, expected over a random order of the ties: the mean of 1/r over the ranks
    ``greater + 1 … greater + ties + 1``, a difference of harmonic numbers.

    >>> reciprocal_rank(np.array([0.0, 3.0, 0.0]), np.array([0.0, 0.0, 1.0])).round(3)
    array([1.  , 0.25, 0.75])
    """
    from scipy.special import digamma

    g, t = np.asarray(greater, dtype=np.float64), np.asarray(ties, dtype=np.float64)
    # H(n) = digamma(n + 1) + Euler's gamma, so H(g + t + 1) - H(g) needs no sum over t
    return (digamma(g + t + 2.0) - digamma(g + 1.0)) / (t + 1.0)  # type: ignore[no-any-return]


class Prequential:
    """Rolling HR@k, NDCG@k, MRR (and AUC of positives against impressions)."""

    def __init__(self, window: int = 2000, k: int = 10) -> None:
        self.k = k
        self._hits: deque[float] = deque(maxlen=window)
        self._ndcg: deque[float] = deque(maxlen=window)
        self._rr: deque[float] = deque(maxlen=window)
        self._pos: deque[float] = deque(maxlen=window)
        self._neg: deque[float] = deque(maxlen=window)
        self.tests = 0
        self.hits_total = 0.0

    def record_ranks(self, greater: np.ndarray, ties: np.ndarray) -> np.ndarray:
        """Record tests given candidates scoring above / tied with the truth; returns hit@k."""
        # P(true lands in the top k) when ties are ordered at random
        hit = np.clip((self.k - greater) / (ties + 1.0), 0.0, 1.0)
        ndcg = ndcg_at(self.k, greater, ties)
        self._hits.extend(hit.tolist())
        self._ndcg.extend(ndcg.tolist())
        self._rr.extend(reciprocal_rank(greater, ties).tolist())
        self.tests += len(hit)
        self.hits_total += float(hit.sum())
        return hit

    def record_auc(self, positives: np.ndarray, negatives: np.ndarray) -> None:
        """Scores of positive interactions and of shown-but-not-chosen items."""
        self._pos.extend(np.asarray(positives, dtype=np.float64).tolist())
        self._neg.extend(np.asarray(negatives, dtype=np.float64).tolist())

    def auc(self) -> float:
        if not self._pos or not self._neg:
            return float("nan")
        from scipy.stats import rankdata

        pos, neg = np.fromiter(self._pos, float), np.fromiter(self._neg, float)
        ranks = rankdata(np.concatenate([pos, neg]))  # ties get their average rank
        n_pos, n_neg = len(pos), len(neg)
        return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))

    def to_json(self) -> dict[str, Any]:
        return {
            "window": self._hits.maxlen,
            "k": self.k,
            "hits": list(self._hits),
            "ndcg": list(self._ndcg),
            "rr": list(self._rr),
            "pos": list(self._pos),
            "neg": list(self._neg),
            "tests": self.tests,
            "hits_total": self.hits_total,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Prequential:
        ev = cls(window=int(data["window"]), k=int(data["k"]))
        for name in ("hits", "ndcg", "rr", "pos", "neg"):
            getattr(ev, "_" + name).extend(data[name])
        ev.tests, ev.hits_total = int(data["tests"]), float(data["hits_total"])
        return ev

    def summary(self) -> dict[str, float]:
        def mean(values: deque[float]) -> float:
            return float(np.mean(values)) if values else float("nan")

        return {
            "hr_at_10": mean(self._hits),
            "ndcg_at_10": mean(self._ndcg),
            "mrr": mean(self._rr),
            "auc": self.auc(),
            "tests": float(self.tests),
        }
