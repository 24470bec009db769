"""Prequential tests of the LLM learner: every new positive is ranked before it is learned.

The true item is ranked against the whole catalog while it holds at most
``eval_full_catalog`` items (else against ``eval_candidates`` sampled ones), with the
user's consumed items excluded as recommendations exclude them. Every candidate mix of
:class:`~learners.scoring.MixSelector` is scored on the same tests (that is how the
learner chooses its mix); the current mix's outcome feeds the rolling metrics, also
decomposed into the popularity prior alone and the personal part alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from learners.history import UserHistory
from learners.prequential import Prequential, rank_of_true
from learners.scorer import Scorer
from learners.scoring import MixSelector
from schemas.events import InteractionEvent
from schemas.learner_config import LLMConfig

__all__ = ["TestOutcome", "Tester"]


@dataclass
class TestOutcome:
    """Hit@10 of each test under the current mix, and what the tests were ranked against."""

    hits: np.ndarray  # [T]
    candidates: int  # items each test's truth was ranked among ("all" when == catalog)
    full_catalog: bool


@dataclass
class Excluded:
    """Candidates removed from tests' rankings: ``columns[k]`` of test ``tests[k]``."""

    tests: np.ndarray
    columns: np.ndarray


class Tester:
    """Runs the tests, keeps the rolling metrics (overall and per part), feeds the selector."""

    PARTS = ("prior", "personal")

    def __init__(
        self,
        config: LLMConfig,
        scorer: Scorer,
        selector: MixSelector,
        history: UserHistory,
        rng: np.random.Generator,
    ) -> None:
        self.config, self.scorer, self.selector, self.history = config, scorer, selector, history
        self.rng = rng
        self.overall = Prequential(config.eval_window)
        self.parts = {name: Prequential(config.eval_window) for name in self.PARTS}

    def run(
        self, tests: Sequence[InteractionEvent], impressions: Sequence[InteractionEvent]
    ) -> TestOutcome:
        """Rank each test's true item (the state must not have learned the tests yet)."""
        items = self.scorer.items
        catalog = items.catalog
        true = items.slots([e.item_id for e in tests])
        keep = true >= 0
        tests, true = [e for e, k in zip(tests, keep, strict=True) if k], true[keep]
        if not tests or len(catalog) < 2:
            return TestOutcome(np.zeros(0), 0, False)
        candidates, full = self._candidates(true)
        users = list(dict.fromkeys(e.user_id for e in tests))
        parts = self.scorer.parts(users, candidates, self.selector.towers_weights)
        row = np.array([users.index(e.user_id) for e in tests])
        column = np.searchsorted(candidates, true)
        excluded = self._excluded(tests, candidates, column)
        hits = np.stack(
            [self._hits(parts.mixed(m), row, column, excluded) for m in self.selector.mixes], 1
        )  # [T, M]
        mix = self.selector.current
        greater, ties = self._ranks(parts.mixed(mix), row, column, excluded)
        current = self.overall.record_ranks(greater, ties)
        for name in self.PARTS:
            self.parts[name].record_ranks(
                *self._ranks(parts.mixed(mix, name), row, column, excluded)
            )
        self.selector.record(hits)
        self._auc(impressions, parts.mixed(mix)[row, column])
        return TestOutcome(current, len(candidates), full)

    def _candidates(self, true: np.ndarray) -> tuple[np.ndarray, bool]:
        """Sorted candidate slots: the whole catalog, or sampled ones plus the truths."""
        catalog = self.scorer.items.catalog
        c = self.config
        if c.eval_candidates == 0 or len(catalog) <= c.eval_full_catalog:
            return np.sort(catalog.live_slots()), True
        sampled = catalog.index.sample(c.eval_candidates, self.rng)
        return np.unique(np.concatenate([sampled, true])), False

    def _excluded(
        self, tests: Sequence[InteractionEvent], candidates: np.ndarray, column: np.ndarray
    ) -> Excluded:
        """The (test, candidate column) pairs its user consumed (its own truth excepted)."""
        nothing = Excluded(np.zeros(0, np.int64), np.zeros(0, np.int64))
        if not self.config.exclude_consumed:
            return nothing
        rows, columns = [], []
        for t, (e, true_column) in enumerate(zip(tests, column, strict=True)):
            slots = self.scorer.items.resolve(self.history.consumed(e.user_id).handles)
            cols = np.searchsorted(candidates, slots)
            found = cols < len(candidates)
            found[found] = candidates[cols[found]] == slots[found]
            cols = cols[found]
            cols = cols[cols != true_column]
            rows.append(np.full(len(cols), t))
            columns.append(cols)
        if not rows:
            return nothing
        return Excluded(np.concatenate(rows), np.concatenate(columns))

    @staticmethod
    def _ranks(
        scores: np.ndarray, row: np.ndarray, column: np.ndarray, excluded: Excluded
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per test: candidates scoring above, and tied with, its true item."""
        per_test = scores[row]  # [T, C], a copy
        per_test[excluded.tests, excluded.columns] = -np.inf
        return rank_of_true(per_test, column)

    def _hits(
        self, scores: np.ndarray, row: np.ndarray, column: np.ndarray, excluded: Excluded
    ) -> np.ndarray:
        greater, ties = self._ranks(scores, row, column, excluded)
        return np.clip((10 - greater) / (ties + 1.0), 0.0, 1.0)

    def _auc(self, impressions: Sequence[InteractionEvent], positives: np.ndarray) -> None:
        """Chosen items against shown-but-not-chosen ones (where the stream has both)."""
        if not impressions:
            return
        slots = self.scorer.items.slots([e.item_id for e in impressions])
        known = slots >= 0
        users = [e.user_id for e, k in zip(impressions, known, strict=True) if k]
        if not users:
            return
        mix = self.selector.current
        parts = self.scorer.parts(list(dict.fromkeys(users)), np.unique(slots[known]), [mix.towers])
        scores = parts.mixed(mix)
        cols = np.searchsorted(np.unique(slots[known]), slots[known])
        rows = [list(dict.fromkeys(users)).index(u) for u in users]
        self.overall.record_auc(positives, scores[rows, cols])

    def summary(self) -> dict[str, float]:
        out = self.overall.summary()
        for name, ev in self.parts.items():
            s = ev.summary()
            out[f"hr_at_10_{name}"] = s["hr_at_10"]
            out[f"ndcg_at_10_{name}"] = s["ndcg_at_10"]
        return out
