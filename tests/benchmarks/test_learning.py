"""Acceptance for the LLM learner's learning on the benchmarks' synthetic stream (users with
interests, an interest change): it improves on a seeded stream, and replay keeps it from
forgetting. Fixed seeds; each run takes tens of seconds on a CPU. It lives beside the quality
benchmark because it needs that stream's structure (``stream/sources/synthetic.py``), which
the learner tests, depending on ``learners`` and ``schemas`` alone, do not import."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import numpy as np
import pytest

from learners.llm import LLMLearner
from learners.prequential import rank_of_true
from schemas.events import InteractionEvent
from schemas.learner_config import LLMConfig, ReplayConfig
from schemas.vectors import SourcePosition
from stream.sources.synthetic import ChangePoint, SyntheticConfig, SyntheticStream

pytestmark = pytest.mark.slow


def catalog_events(stream: SyntheticStream) -> list[InteractionEvent]:
    """One impression per item, so the learner knows the whole catalog from the start."""
    t = datetime(2025, 12, 1, tzinfo=UTC)
    return [
        InteractionEvent(
            event_id=f"catalog-{i}",
            user_id="catalog",
            item_id=f"item-{i}",
            event_type="impression",
            timestamp=t,
            item=text,
        )
        for i, (_, text) in enumerate(stream.items)
    ]


def hit_rates(
    learner: LLMLearner, events: list[InteractionEvent], items: list[str], batch: int = 32
) -> list[tuple[int, float]]:
    """Test-then-train over ``events``: HR@10 of every click over the full catalog."""
    out = []
    for k in range(0, len(events), batch):
        chunk = events[k : k + batch]
        clicks = [(k + j, e) for j, e in enumerate(chunk) if e.event_type.value == "click"]
        if clicks:
            users = sorted({e.user_id for _, e in clicks})
            scores = learner.score_matrix(users, items)
            for at, e in clicks:
                greater, ties = rank_of_true(
                    scores[users.index(e.user_id)][None, :], items.index(e.item_id)
                )
                out.append((at, float(np.clip((10 - greater[0]) / (ties[0] + 1), 0, 1))))
        learner.learn_many(
            chunk, [SourcePosition(topic="t", partition=0, offset=k + j) for j in range(len(chunk))]
        )
    return out


def window(results: list[tuple[int, float]], lo: int, hi: int) -> float:
    return float(np.mean([h for at, h in results if lo <= at < hi]))


def test_prequential_hr_rises_within_a_few_hundred_events_and_beats_no_updates() -> None:
    config = SyntheticConfig(n_users=40, n_items=400, seed=4)
    events = list(SyntheticStream(config).events(1600))
    items = [f"item-{i}" for i in range(400)]
    results = {}
    for name, llm in (
        # the towers always in the score: this is about what updates teach the model
        ("trained", LLMConfig(exclude_consumed=False, mix_towers=(1.0,))),
        (
            "frozen",
            LLMConfig(exclude_consumed=False, mix_towers=(1.0,), lr=1e-12, embedding_lr=1e-12),
        ),
    ):
        learner = LLMLearner(llm)
        learner.observe_items(catalog_events(SyntheticStream(config)))
        results[name] = hit_rates(learner, events, items, batch=64)  # whole rates
    start, later = window(results["trained"], 0, 200), window(results["trained"], 400, 1600)
    frozen = window(results["frozen"], 400, 1600)
    print(
        f"\nclick HR@10 (400 items): first 200 events {start:.3f}, events 400-1600"
        f" {later:.3f}; without updates {frozen:.3f}"
    )
    assert later >= start + 0.08
    assert later >= frozen + 0.02


def test_replay_forgets_phase_a_markedly_less_than_no_replay() -> None:
    """Users switch interests from phase A to phase B. After B, held-out phase-A events are
    ranked by the trained towers with the users' phase-A histories: only the model's
    parameters differ (the count-based parts, kNN and the popularity prior, follow the
    stream by design and are not what replay protects). The prior is the learned one, so
    that the towers carry the popularity that phase B overwrites: over the fixed counts prior
    (the default) the towers hold less of it and replay's margin is 0.006 (docs/design.md).
    The id tables are on for the same reason: without them (the default) the towers keep
    almost nothing of phase A either way (HR@10 0.006 with replay, 0.021 without). Phase B
    is learned at the full rate (``lr_half_life = 0``): with the default annealing the
    updates overwrite less of phase A with or without replay, and replay's margin then
    depends on the seed (docs/design.md)."""
    n_a = n_b = 1500
    config = SyntheticConfig(n_users=40, n_items=320, seed=11)
    switching = SyntheticConfig(
        n_users=40, n_items=320, seed=11, change_points=(ChangePoint(n_a, share=1.0),)
    )
    stream = list(SyntheticStream(switching).events(n_a + n_b))
    held_out = [
        e
        for e in list(SyntheticStream(config).events(n_a + 600))[n_a:]
        if e.event_type.value in ("click", "add_to_cart", "purchase")
    ]
    items = [f"item-{i}" for i in range(320)]

    def phase_a_hr(learner: LLMLearner, history: object) -> float:
        live, learner.history = learner.history, history  # type: ignore[assignment]
        users = sorted({e.user_id for e in held_out})
        scores = learner.score_matrix(users, items, part="towers")
        learner.history = live
        hits = []
        for e in held_out:
            g, t = rank_of_true(scores[users.index(e.user_id)][None, :], items.index(e.item_id))
            hits.append(float(np.clip((10 - g[0]) / (t[0] + 1), 0, 1)))
        return float(np.mean(hits))

    def learn(learner: LLMLearner, lo: int, hi: int) -> None:
        for k in range(lo, hi, 64):
            chunk = stream[k : min(k + 64, hi)]
            learner.learn_many(
                chunk,
                [SourcePosition(topic="t", partition=0, offset=k + j) for j in range(len(chunk))],
            )

    drops, after = {}, {}
    for replay in (True, False):
        config = LLMConfig(
            replay=ReplayConfig(enabled=replay),
            mix_towers=(1.0,),
            popularity_prior="learned",
            id_embeddings=True,
            lr_half_life=0,
        )
        learner = LLMLearner(config)
        learn(learner, 0, n_a)
        snapshot = copy.deepcopy(learner.history)
        before = phase_a_hr(learner, snapshot)
        learn(learner, n_a, n_a + n_b)
        after[replay] = phase_a_hr(learner, snapshot)
        drops[replay] = before - after[replay]
    print(
        f"\nphase-A HR@10 drop after phase B: with replay {drops[True]:.3f},"
        f" without {drops[False]:.3f}"
    )
    # measured: drop 0.150 with replay, 0.194 without (seed 11; seeds 3 and 7: 0.155 and
    # 0.190, 0.117 and 0.164)
    assert drops[False] - drops[True] >= 0.02
    assert after[True] > after[False]
