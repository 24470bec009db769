"""The quality benchmark's protocol: every contender is scored before it learns, by the
same fair ranking, and the result file has the published shape."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from benchmarks import harness
from benchmarks.baselines import (
    EASE,
    UNLEARNED,
    Blend,
    CategoryAffinity,
    Counts,
    DecayedPopularity,
    ItemKNN,
    is_positive,
)
from benchmarks.contenders import RiverMF
from benchmarks.protocol import StreamRun, evaluate, gini, rows_for
from benchmarks.quality import synthetic_run
from benchmarks.sasrec import SASRec
from schemas.events import InteractionEvent


class Oracle:
    """Knows the stream: gives each test's true item the top score (an upper bound)."""

    name = "oracle"
    learn_seconds = 0.0

    def __init__(self) -> None:
        self._next: dict[str, set[str]] = {}

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        self._next = {}
        for e in events:
            if is_positive(e):
                self._next.setdefault(e.user_id, set()).add(e.item_id)

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        return np.array([[float(i in self._next.get(u, ())) for i in items] for u in users])

    def ratings(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray | None:
        return None

    def learn(self, events: Sequence[InteractionEvent]) -> None:
        pass


class Constant:
    """Scores every item the same: fair tie-breaking must give it chance level."""

    name = "constant"
    learn_seconds = 0.0

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        pass

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        return np.zeros((len(users), len(items)))

    def ratings(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray | None:
        return None

    def learn(self, events: Sequence[InteractionEvent]) -> None:
        pass


class Unlearned(Constant):
    """Has learned nothing: every item ranks last, so all tie (chance among candidates)."""

    name = "unlearned"

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        return np.full((len(users), len(items)), UNLEARNED)


class Newest:
    """Scores the items it first observed in the current batch above all others."""

    name = "newest"
    learn_seconds = 0.0

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._new: set[str] = set()

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        self._new = {e.item_id for e in events} - self._known
        self._known |= self._new

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        return np.array([[float(i in self._new) for i in items] for u in users])

    def ratings(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray | None:
        return None

    def learn(self, events: Sequence[InteractionEvent]) -> None:
        pass


@pytest.fixture(scope="module")
def run() -> StreamRun:
    return synthetic_run(1200)


def test_an_oracle_hits_nearly_always_and_a_constant_scores_chance(run: StreamRun) -> None:
    oracle, constant = Oracle(), Constant()
    results = evaluate(run, [oracle, constant], batch=64, progress_every=0)
    # the oracle ties only among a user's several positives in the same batch
    assert np.mean(results["oracle"].hit) > 0.95
    hits = np.asarray(results["constant"].hit)
    assert 0 < hits.mean() < 0.1  # 10 / catalog size, far from a hit
    assert len(results["oracle"].hit) == sum(is_positive(e) for e in run.events)


def test_every_item_of_the_batch_is_a_candidate_so_new_items_do_not_give_tests_away() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def event(user: str, item: str, kind: str) -> InteractionEvent:
        return InteractionEvent(
            event_id=f"{user}-{item}-{kind}",
            user_id=user,
            item_id=item,
            event_type=kind,
            timestamp=t,
        )

    first = [event("a", f"old-{k}", "click") for k in range(32)]
    # one new item clicked (the test), 30 new items only shown
    second = [event("b", "new-x", "click")] + [
        event("b", f"new-{k}", "impression") for k in range(30)
    ]
    run = StreamRun("hand", first + second + [event("b", "old-0", "impression")], False)
    results = evaluate(run, [Newest(), Constant()], batch=32, progress_every=0)
    newest = dict(zip(results["newest"].at, results["newest"].hit, strict=True))
    # new-x ties with the 30 items shown beside it: 10 of 31 places, not a sure hit
    assert newest[32] == pytest.approx(10 / 31)
    # and a constant ranks it among all 63 items known by then
    constant = dict(zip(results["constant"].at, results["constant"].hit, strict=True))
    assert constant[32] == pytest.approx(10 / 63)
    # NDCG too is expected over the ties' order: the top 10 places' discounts, 1 in 63 each
    ndcg = dict(zip(results["constant"].at, results["constant"].ndcg, strict=True))
    assert ndcg[32] == pytest.approx(sum(1 / np.log2(p + 2) for p in range(10)) / 63)


def test_where_seen_items_are_excluded_a_positive_on_one_is_no_test() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)

    def event(user: str, item: str, kind: str, value: float | None = None) -> InteractionEvent:
        return InteractionEvent(
            event_id=f"{user}-{item}-{kind}",
            user_id=user,
            item_id=item,
            event_type=kind,
            value=value,
            review_text="a tag" if kind == "review" else None,
            timestamp=t,
        )

    rated = [event("a", f"m-{k}", "rating", 4.0) for k in range(20)]
    # a tag on a movie rated before, a rating of a movie not seen before and its tag
    later = [
        event("a", "m-3", "review"),
        event("a", "m-new", "rating", 5.0),
        event("a", "m-new", "review"),
    ]
    for exclude_seen, tested, hit in (
        (True, [*range(20), 21], 1.0),
        (False, [*range(23)], 10 / 21),
    ):
        run = StreamRun("hand", rated + later, exclude_seen)
        results = evaluate(run, [Constant(), Unlearned()], batch=20, progress_every=0)
        for name in ("constant", "unlearned"):
            assert results[name].at == tested
            # m-new among the 20 movies rated before, or alone once they are left out
            assert results[name].hit[-1] == pytest.approx(hit), name


def test_popularity_and_river_are_scored_and_reported_with_change_metrics(
    run: StreamRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = Counts(half_lives=[500.0])
    contenders = [DecayedPopularity(counts, 500.0), RiverMF()]
    results = evaluate(run, contenders, batch=64, progress_every=0)
    rows = rows_for(run, results, contenders)
    metrics = {(r.contender, r.metric) for r in rows}
    for c in contenders:
        for metric in (
            "hr_at_10",
            "ndcg_at_10",
            "coverage_at_10",
            "exposure_gini",
            "forgetting_hr_at_10_drop",
            "forgetting_hr_at_10_drop_se",
            "recovery_events",
        ):
            assert (c.name, metric) in metrics
    assert ("river BiasedMF", "mae") in metrics  # the synthetic stream carries ratings
    popularity = next(
        r.value for r in rows if r.contender.startswith("most-popular") and r.metric == "hr_at_10"
    )
    assert popularity > 0.05  # well above chance on a stream with popular items

    monkeypatch.setattr(harness, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(harness, "README", tmp_path / "README.md")
    path = harness.write_results("quality-test", {"events": 1200}, rows)
    doc = json.loads(path.read_text())
    assert {"suite", "generated_at", "machine", "params", "results"} <= set(doc)
    assert doc["machine"]["cores"] >= 1
    assert set(doc["results"][0]) == {"contender", "stream", "metric", "value", "unit"}
    readme = (tmp_path / "README.md").read_text()
    assert "### `quality-test`" in readme
    assert "| river BiasedMF | synthetic |" in readme


def test_gini_is_zero_for_equal_exposure_and_near_one_when_one_item_takes_all() -> None:
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert gini([0, 0, 0, 100]) == pytest.approx(0.75)  # (n - 1) / n, its maximum for n = 4
    assert 0.0 < gini([1, 2, 3, 4]) < 0.75


def _stream(pairs: list[tuple[str, str]], kind: str = "click") -> list[InteractionEvent]:
    from datetime import UTC, datetime, timedelta

    t = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        InteractionEvent(
            event_id=f"e{k}",
            user_id=u,
            item_id=i,
            event_type=kind,  # type: ignore[arg-type]
            timestamp=t + timedelta(seconds=k),
        )
        for k, (u, i) in enumerate(pairs)
    ]


def test_decayed_popularity_prefers_the_recent_favourite_and_no_decay_the_all_time_one() -> None:
    # x was popular long ago (6 clicks), y recently (3 clicks)
    events = _stream([(f"u{k}", "x") for k in range(6)] + [(f"v{k}", "y") for k in range(3)])
    counts = Counts(half_lives=[1.0, float("inf")])
    short, forever = DecayedPopularity(counts, 1.0), DecayedPopularity(counts, float("inf"))
    for c in (short, forever):
        c.learn(events)
    assert short.scores(["w"], ["x", "y"]).argmax() == 1
    assert forever.scores(["w"], ["x", "y"]).argmax() == 0
    assert forever.scores(["w"], ["x", "y", "new"])[0].tolist() == [6.0, 3.0, UNLEARNED]


def test_item_knn_and_ease_recommend_what_co_occurs_with_the_users_items() -> None:
    # a and b both liked x and y; c liked x only and z is popular with everyone else
    pairs = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "x")]
    pairs += [(f"p{k}", "z") for k in range(4)] + [("p0", "w"), ("p1", "w")]
    counts = Counts(half_lives=[float("inf")])
    knn, ease = ItemKNN(counts, history=5), EASE(counts, lam=1.0, every=1)
    blend = Blend(counts, float("inf"), weight=0.9, history=5)
    for c in (knn, ease, blend):
        c.learn(_stream(pairs))
    items = ["y", "z", "w"]
    for c in (knn, ease, blend):
        assert items[int(c.scores(["c"], items).argmax())] == "y", c.name
    # a user with no history gets popularity from the blend, nothing from item-kNN
    assert knn.scores(["new"], items).tolist() == [[0.0, 0.0, 0.0]]
    assert items[int(blend.scores(["new"], items).argmax())] == "z"


def test_an_item_a_contender_has_not_learned_ranks_below_every_item_it_has() -> None:
    """A batch's new items are candidates because someone takes them in that batch: scored
    0 above learned items scored below 0, they would be handed the tests' answers."""
    pairs = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "z"), ("c", "y"), ("c", "z")]
    first = [*_stream(pairs), _stream([("a", "shown")], kind="impression")[0]]
    then = _stream([("d", "late"), ("d", "shown")])
    ease = EASE(Counts(half_lives=[float("inf")]), lam=1.0, every=100)
    river, sasrec = RiverMF(), SASRec(Counts(half_lives=[float("inf")]))
    for batch in (first, then):  # EASE refits on the first batch only
        for c in (ease, river, sasrec):
            c.learn(batch)
    items = ["x", "y", "z", "shown", "late", "new"]
    for c, unlearned in (
        (ease, {"shown", "late", "new"}),  # "shown" had no positive at the fit
        (river, {"new"}),
        (sasrec, {"new"}),
    ):
        scores = c.scores(["a", "d", "stranger"], items)  # a user with no history too
        for k, item in enumerate(items):
            assert (scores[:, k] == UNLEARNED).all() == (item in unlearned), (c.name, item)


def test_category_affinity_ranks_by_popularity_within_the_users_categories() -> None:
    """A user's categories lift their items above more popular ones elsewhere; an item of
    two categories counts each by half; an item without categories counts as any."""
    from schemas.events import ItemText

    text = {"sax": ["jazz"], "trio": ["jazz"], "tent": ["camping"], "map": ["camping", "jazz"]}
    pairs = [("a", "sax")] + [(f"p{k}", "tent") for k in range(3)] + [("p0", "trio")]
    pairs += [("p1", "map"), ("p2", "plain")]
    events = [
        e.model_copy(update={"item": ItemText(title=e.item_id, categories=text.get(e.item_id, []))})
        for e in _stream(pairs)
    ]
    counts = Counts(half_lives=[float("inf")])
    affinity = CategoryAffinity(counts, float("inf"), smoothing=0.5)
    affinity.learn(events)
    items = ["trio", "tent", "map", "plain"]
    # a: jazz (1 + 0.5) / (1 + 2 · 0.5) = 0.75, camping 0.25; popularity 1, 3, 1, 1
    assert affinity.scores(["a"], items).round(3).tolist() == [[0.75, 0.75, 0.5, 0.5]]
    # no history: popularity alone, halved by the two categories' equal shares
    assert affinity.scores(["new"], items).round(3).tolist() == [[0.5, 1.5, 0.5, 0.5]]
    # "plain" gets its categories when its text first carries some
    later = _stream([("p3", "plain")])[0]
    affinity.learn(
        [later.model_copy(update={"item": ItemText(title="plain", categories=["jazz"])})]
    )
    assert affinity.scores(["a"], ["plain"]).round(3).tolist() == [[1.5]]  # 0.75 · 2


def test_a_stream_counted_twice_in_one_batch_is_counted_once() -> None:
    counts = Counts(half_lives=[float("inf")])
    a, b = DecayedPopularity(counts, float("inf")), ItemKNN(counts)
    events = _stream([("a", "x"), ("b", "x")])
    a.learn(events)
    b.learn(events)  # the second contender finds the counts current
    assert a.scores(["u"], ["x"]).tolist() == [[2.0]]


def test_served_figures_count_a_user_hit_recall_and_ndcg_from_their_future_items() -> None:
    from benchmarks.served import _figures

    ranked = {"a": ["x", "y", "z"], "b": ["p", "q", "r"]}
    future = {"a": {"y", "w"}, "b": {"s"}}
    figures = _figures(ranked, future, k=2)
    assert figures["hr_at_10"] == 0.5  # a finds y in its top 2, b finds nothing
    assert figures["recall_at_10"] == 0.25  # a: 1 of min(2, 2); b: 0
    # a: y at rank 2 → 1/log2(3), ideal 1 + 1/log2(3)
    ideal = 1 + 1 / np.log2(3)
    assert figures["ndcg_at_10"] == pytest.approx((1 / np.log2(3)) / ideal / 2)


def test_an_ablation_runs_beside_the_default_with_its_prior_alone_and_popularity(
    run: StreamRun,
) -> None:
    import argparse

    from benchmarks.quality import contenders_for

    out, _ = contenders_for(argparse.Namespace(ablations="knn_recent=20"), run)
    names = [c.name for c in out]
    assert names[:3] == ["lorastream", "lorastream [prior only]", "lorastream [personal only]"]
    assert names[-2:] == ["lorastream (knn_recent=20)", "lorastream (knn_recent=20) [prior only]"]
    assert out[-2].learner.config.knn_recent == 20  # type: ignore[attr-defined]
    assert out[0].learner.config.knn_recent != 20  # type: ignore[attr-defined]
    assert sum(isinstance(c, DecayedPopularity) for c in out) >= 2, "the decayed-popularity bar"


def test_batch_retraining_gives_each_item_the_bias_its_retrain_learned_for_it() -> None:
    """The retrain's catalog holds only its window's items, in other slots than the live
    learner's: a learned per-item bias must follow the item, not the slot."""
    import torch

    from benchmarks.contenders import BatchRetrained, _positions
    from learners.llm import LLMLearner
    from schemas.learner_config import LLMConfig

    config = LLMConfig(popularity_prior="learned", sampled_negatives=8, history_len=4)
    retrained = BatchRetrained(config, every=10_000, window=40)
    early = _stream([(f"u{k % 3}", f"old-{k}") for k in range(24)])
    window = _stream([(f"u{k % 5}", f"new-{k % 12}") for k in range(40)])
    for batch in (early, window[:20], window[20:]):
        retrained.observe(batch)
        retrained.learn(batch)
    fresh = LLMLearner(config)
    fresh.learn_many(window, _positions(window, 0))
    ids = [f"new-{k}" for k in range(12)]
    theirs = fresh.heads.item_bias.weight[fresh.items.catalog.index.slots_of(ids)]
    assert theirs.abs().sum() > 0, "the retrain learned biases"
    mine = retrained.live.items.catalog.index.slots_of(ids)
    assert (mine != fresh.items.catalog.index.slots_of(ids)).all(), "the slots differ"
    moved = retrained._heads_by_item(fresh)["item_bias.weight"]
    assert torch.equal(moved[mine], theirs)
