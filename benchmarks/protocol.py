"""The prequential protocol every quality contender is judged by, and the figures it yields.

All contenders see the same events in the same order, in mini-batches. Before a batch is
learned, each positive event in it is a test: every contender ranks the *whole catalog known
so far* for the test's user — every item seen before the batch and every item of the batch
itself, which the contenders observed — and the true item's rank gives HR@10 and NDCG@10,
both expected over a random order of ties (a constant scorer gets chance). The batch's new
items are all candidates, not only those that are tests: were they not, an item first seen
in this batch would be a candidate only if it were a test's truth, and a contender favouring
new items would be told the answer. Most of them are still some test's truth, so a contender
ranks an item it has learned nothing about last (``baselines.UNLEARNED``); lorastream ranks
a new item by its text under the lowest popularity prior (no counts yet). Items the user
already interacted with are excluded where ``exclude_seen`` (MovieLens: people rarely rate a
movie twice), as recommendations exclude them — and there a positive on such an item (a tag
on a movie rated before, in an earlier batch or earlier in the same one) is no test: it
could never be recommended, and ranked against unseen items only it is found by whoever
scores the user's own past items highly. Each test's top 10 also counts towards the
contender's exposure: catalog coverage@10 and the Gini coefficient of how often items are
shown.
Rating events test rating predictions (MAE/RMSE) of contenders that make them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from benchmarks.baselines import is_positive
from benchmarks.harness import Row
from learners.prequential import ndcg_at, rank_of_true
from learners.tester import positives_to_test
from schemas.events import EventType, InteractionEvent

__all__ = ["Contender", "Outcomes", "StreamRun", "evaluate", "gini", "rows_for"]

log = logging.getLogger(__name__)
COLD = 5  # users/items with fewer past events than this are "cold"
LAST = float(np.finfo(np.float64).min)  # a score the contender could not give
K = 10


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


@dataclass
class Outcomes:
    """Per-test outcomes of one contender."""

    at: list[int] = field(default_factory=list)  # event index
    hit: list[float] = field(default_factory=list)
    ndcg: list[float] = field(default_factory=list)
    user: list[str] = field(default_factory=list)
    cold_user: list[bool] = field(default_factory=list)
    cold_item: list[bool] = field(default_factory=list)
    rating_error: list[float] = field(default_factory=list)
    exposure: Counter[str] = field(default_factory=Counter)  # item -> times in a top 10


@dataclass
class StreamRun:
    name: str
    events: list[InteractionEvent]
    exclude_seen: bool
    change_at: int | None = None
    changed_users: set[str] = field(default_factory=set)


@dataclass
class _Seen:
    """What the protocol itself knows before each batch (not any contender's state)."""

    catalog: dict[str, None] = field(default_factory=dict)
    user_items: dict[str, set[str]] = field(default_factory=dict)
    user_count: Counter[str] = field(default_factory=Counter)
    item_count: Counter[str] = field(default_factory=Counter)

    def interacted(self, event: InteractionEvent) -> bool:
        """Whether the event's user interacted with its item before its batch."""
        return event.item_id in self.user_items.get(event.user_id, ())

    def learn(self, events: Sequence[InteractionEvent]) -> None:
        for e in events:
            self.catalog.setdefault(e.item_id)
            if e.event_type is not EventType.IMPRESSION:  # shown is not consumed
                self.user_items.setdefault(e.user_id, set()).add(e.item_id)
            self.user_count[e.user_id] += 1
            self.item_count[e.item_id] += 1


def evaluate(
    run: StreamRun, contenders: Sequence[Contender], batch: int = 64, progress_every: int = 2000
) -> dict[str, Outcomes]:
    """Test-then-train every contender on ``run.events``; returns their test outcomes."""
    results = {c.name: Outcomes() for c in contenders}
    seen = _Seen()
    started = time.perf_counter()
    for start in range(0, len(run.events), batch):
        chunk = run.events[start : start + batch]
        tests = _tests_of(run, chunk, start, seen)
        for c in contenders:
            c.observe(chunk)
        if tests:
            _test(run, contenders, results, tests, chunk, seen)
        _test_ratings(contenders, results, chunk)
        for c in contenders:
            c.learn(chunk)
        seen.learn(chunk)
        done = start + len(chunk)
        if progress_every and done // progress_every != start // progress_every:
            summary = ", ".join(
                f"{n}: {np.mean(t.hit[-500:]):.3f}" for n, t in results.items() if t.hit
            )
            log.info(
                "%s %d/%d events (%.0fs) HR@10 last 500 tests: %s",
                run.name,
                done,
                len(run.events),
                time.perf_counter() - started,
                summary,
            )
    return results


def _tests_of(
    run: StreamRun, chunk: Sequence[InteractionEvent], start: int, seen: _Seen
) -> list[tuple[int, InteractionEvent]]:
    """The batch's positives with their stream index; where seen items are excluded, not
    those on an item the user took before — before the batch or earlier within it (the
    learner's own rule, :func:`learners.tester.positives_to_test`)."""
    fresh = positives_to_test(chunk, [is_positive(e) for e in chunk], run.exclude_seen)
    return [
        (start + k, chunk[k]) for k in fresh if not (run.exclude_seen and seen.interacted(chunk[k]))
    ]


def _test(
    run: StreamRun,
    contenders: Sequence[Contender],
    results: dict[str, Outcomes],
    tests: list[tuple[int, InteractionEvent]],
    chunk: Sequence[InteractionEvent],
    seen: _Seen,
) -> None:
    candidates = list(dict.fromkeys([*seen.catalog, *(e.item_id for e in chunk)]))
    column = {item: k for k, item in enumerate(candidates)}
    users = list(dict.fromkeys(e.user_id for _, e in tests))
    row = {u: k for k, u in enumerate(users)}
    excluded = {
        u: np.fromiter((column[i] for i in seen.user_items.get(u, ())), np.int64) for u in users
    }
    names = np.asarray(candidates, dtype=object)
    for c in contenders:
        scores = np.asarray(c.scores(users, candidates), dtype=np.float64)
        out = results[c.name]
        for at, event in tests:
            # NaN and UNLEARNED alike: below every score, tied among themselves, above only
            # the items left out (-inf)
            s = np.nan_to_num(scores[row[event.user_id]], nan=LAST, neginf=LAST)
            true = column[event.item_id]
            if run.exclude_seen:  # the truth is never among them: it is no test then
                s = s.copy()
                s[excluded[event.user_id]] = -np.inf
            _record_one(out, s, true, names)
            out.at.append(at)
            out.user.append(event.user_id)
            out.cold_user.append(seen.user_count[event.user_id] < COLD)
            out.cold_item.append(seen.item_count[event.item_id] < COLD)


def _record_one(out: Outcomes, s: np.ndarray, true: int, names: np.ndarray) -> None:
    greater, ties = rank_of_true(s[None, :], true)
    out.hit.append(float(np.clip((K - greater[0]) / (ties[0] + 1.0), 0.0, 1.0)))
    out.ndcg.append(float(ndcg_at(K, greater, ties)[0]))
    scored = s > LAST  # neither left out nor unscored: what a top 10 can show
    if scored.sum() > K:
        top = np.argpartition(-np.where(scored, s, -np.inf), K)[:K]
        out.exposure.update(names[top].tolist())


def _test_ratings(
    contenders: Sequence[Contender], results: dict[str, Outcomes], chunk: Sequence[InteractionEvent]
) -> None:
    rated = [e for e in chunk if e.event_type.value == "rating" and e.value is not None]
    if not rated:
        return
    truth = np.array([e.value for e in rated])
    for c in contenders:
        predicted = c.ratings([e.user_id for e in rated], [e.item_id for e in rated])
        if predicted is not None:
            results[c.name].rating_error.extend((predicted - truth).tolist())


def gini(counts: Sequence[float]) -> float:
    """Gini coefficient of exposure over items (0: every item shown equally; 1: one item
    takes every slot).

    >>> gini([5, 5, 5, 5]), round(gini([0, 0, 0, 12]), 2)
    (0.0, 0.75)
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * total))


def _mean(values: Sequence[float] | np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def difference_se(a: np.ndarray, b: np.ndarray) -> float:
    """Standard error of ``mean(a) − mean(b)`` for two independent samples of hits (a hit
    is fractional where ties share a slot), so a bar on a difference can be read against
    its noise.

    >>> round(difference_se(np.array([1, 0] * 50), np.array([1, 0, 0, 0] * 25)), 4)
    0.0661
    """
    if not len(a) or not len(b):
        return float("nan")
    return float(np.sqrt(np.var(a) / len(a) + np.var(b) / len(b)))


def rows_for(
    run: StreamRun, results: dict[str, Outcomes], contenders: Sequence[Contender]
) -> list[Row]:
    catalog = {e.item_id for e in run.events}
    rows: list[Row] = []
    for c in contenders:
        rows += _rows_of(run, c.name, results[c.name], c.learn_seconds, len(catalog))
    return rows


def _rows_of(run: StreamRun, name: str, t: Outcomes, seconds: float, catalog: int) -> list[Row]:
    hit, at = np.asarray(t.hit), np.asarray(t.at)
    last = at >= 0.75 * len(run.events)
    exposure = [t.exposure.get(i, 0) for i in {e.item_id for e in run.events}]
    rows = [
        Row(name, run.name, "hr_at_10", _mean(hit), ""),
        Row(name, run.name, "ndcg_at_10", _mean(t.ndcg), ""),
        Row(name, run.name, "hr_at_10_last_quarter", _mean(hit[last]), ""),
        Row(name, run.name, "ndcg_at_10_last_quarter", _mean(np.asarray(t.ndcg)[last]), ""),
        Row(name, run.name, "hr_at_10_cold_users", _mean(hit[np.asarray(t.cold_user, bool)]), ""),
        Row(name, run.name, "hr_at_10_cold_items", _mean(hit[np.asarray(t.cold_item, bool)]), ""),
        Row(name, run.name, "coverage_at_10", len(t.exposure) / max(catalog, 1), "fraction"),
        Row(name, run.name, "exposure_gini", gini(exposure), ""),
        Row(name, run.name, "tests", float(len(hit)), "count"),
    ]
    if seconds > 0:  # parts read off another contender's state learn nothing of their own
        rows.append(Row(name, run.name, "events_per_s", len(run.events) / seconds, "events/s"))
    if t.rating_error:
        err = np.asarray(t.rating_error)
        rows += [
            Row(name, run.name, "mae", float(np.abs(err).mean()), "stars"),
            Row(name, run.name, "rmse", float(np.sqrt((err**2).mean())), "stars"),
        ]
    if run.change_at is not None and len(hit):
        rows += _change_rows(run, name, t, hit, at)
    return rows


def _change_rows(
    run: StreamRun, name: str, t: Outcomes, hit: np.ndarray, at: np.ndarray
) -> list[Row]:
    """Forgetting (unchanged users' HR@10 in the window before the change minus the window
    after, with its standard error) and recovery (changed users) around the change point."""
    assert run.change_at is not None
    cp, window = run.change_at, max(500, len(run.events) // 10)
    changed = np.array([u in run.changed_users for u in t.user])
    before = (at >= cp - window) & (at < cp)
    after = (at >= cp) & (at < cp + window)
    drop = _mean(hit[before & ~changed]) - _mean(hit[after & ~changed])
    drop_se = difference_se(hit[before & ~changed], hit[after & ~changed])
    baseline = _mean(hit[before & changed])
    recovery = float(len(run.events) - cp)  # censored: never recovered within the stream
    mine = np.flatnonzero(changed & (at >= cp))
    for k in range(len(mine)):
        recent = mine[max(0, k - 49) : k + 1]
        if len(recent) >= 25 and hit[recent].mean() >= 0.9 * baseline:
            recovery = float(at[mine[k]] - cp)
            break
    return [
        Row(name, run.name, "forgetting_hr_at_10_drop", drop, ""),
        Row(name, run.name, "forgetting_hr_at_10_drop_se", drop_se, ""),
        Row(name, run.name, "recovery_events", recovery, "events"),
    ]
