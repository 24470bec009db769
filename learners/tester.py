"""Prequential tests of the LLM learner: every new positive is ranked before it is learned.

The true item is ranked against the whole catalog while it holds at most
``eval_full_catalog`` items (else against ``eval_candidates`` sampled ones), with the
user's consumed items excluded as recommendations exclude them — and then a positive on an
item the user already consumed (a review of a movie rated before) is no test: it could
never be recommended, and ranked against unconsumed items only it would reward whatever
scores the user's own past highest (kNN, by an item's likeness to itself) — nor is one on
an item the user took earlier in the same batch (:func:`positives_to_test`). Consumed items
are the user's last ``consumed_len``, what recommendations exclude; the benchmark's
protocol, which keeps every interaction, excludes a few more for its heaviest users. Every
candidate mix of :class:`~learners.scoring.MixSelector` is scored on the same tests (that
is how the learner chooses its mix); the current mix's outcome feeds the rolling metrics,
also decomposed into the popularity prior alone and the personal part alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from learners.history import UserHistory
from learners.prequential import Prequential, rank_of_true
from learners.scorer import Scorer
from learners.scoring import MixSelector
from schemas.events import EventType, InteractionEvent
from schemas.learner_config import LLMConfig

__all__ = ["TestOutcome", "Tester", "positives_to_test"]


def positives_to_test(
    events: Sequence[InteractionEvent], positive: Sequence[bool], exclude_consumed: bool
) -> list[int]:
    """Where in a batch its positives to test are; with ``exclude_consumed``, not one on an
    item its user took (any event but an impression) earlier in the batch, which the user's
    consumed items, updated only after the tests, do not hold yet. The benchmark's
    protocol applies the same rule.

    >>> from datetime import UTC, datetime
    >>> def ev(n, kind, item):
    ...     return InteractionEvent(event_id=f"e{n}", user_id="u", item_id=item,
    ...                             event_type=kind, timestamp=datetime(2026, 1, 1, tzinfo=UTC))
    >>> batch = [ev(0, "click", "a"), ev(1, "purchase", "a"), ev(2, "impression", "b"),
    ...          ev(3, "click", "b")]
    >>> positives_to_test(batch, [True, True, False, True], exclude_consumed=True)
    [0, 3]
    >>> positives_to_test(batch, [True, True, False, True], exclude_consumed=False)
    [0, 1, 3]
    """
    tests, taken = [], set()
    for k, (event, chosen) in enumerate(zip(events, positive, strict=True)):
        pair = (event.user_id, event.item_id)
        if chosen and not (exclude_consumed and pair in taken):
            tests.append(k)
        if event.event_type is not EventType.IMPRESSION:
            taken.add(pair)
    return tests


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

    __test__ = False  # a prequential tester, not a pytest test class
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
        mine = {u: self._consumed(u) for u in dict.fromkeys(e.user_id for e in tests)}
        consumed = [mine[e.user_id] for e in tests]
        repeat = np.array([t in c for t, c in zip(true, consumed, strict=True)], dtype=bool)
        keep = (true >= 0) & ~repeat
        tests, true = [e for e, k in zip(tests, keep, strict=True) if k], true[keep]
        consumed = [c for c, k in zip(consumed, keep, strict=True) if k]
        if not tests or len(catalog) < 2:
            return TestOutcome(np.zeros(0), 0, False)
        candidates, full = self._candidates(true)
        users = list(dict.fromkeys(e.user_id for e in tests))
        parts = self.scorer.parts(users, candidates, self.selector.towers_weights)
        row = np.array([users.index(e.user_id) for e in tests])
        column = np.searchsorted(candidates, true)
        excluded = self._excluded(consumed, candidates)
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

    def _consumed(self, user_id: str) -> np.ndarray:
        """The slots a test of this user leaves out (none unless ``exclude_consumed``)."""
        if not self.config.exclude_consumed:
            return np.zeros(0, np.int64)
        return self.scorer.items.resolve(self.history.consumed(user_id).handles)

    @staticmethod
    def _excluded(consumed: Sequence[np.ndarray], candidates: np.ndarray) -> Excluded:
        """The (test, candidate column) pairs whose candidate the test's user consumed."""
        rows, columns = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for t, slots in enumerate(consumed):
            cols = np.searchsorted(candidates, slots)
            found = cols < len(candidates)
            found[found] = candidates[cols[found]] == slots[found]
            rows.append(np.full(int(found.sum()), t))
            columns.append(cols[found])
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
