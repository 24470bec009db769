"""The quality benchmark's protocol: every contender is scored before it learns, by the
same fair ranking, and the result file has the published shape."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from benchmarks import harness
from benchmarks.contenders import Popularity, RiverMF, is_positive
from benchmarks.quality import StreamRun, evaluate, rows_for, synthetic_run
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


def test_popularity_and_river_are_scored_and_reported_with_change_metrics(
    run: StreamRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contenders = [Popularity(window=500), RiverMF()]
    results = evaluate(run, contenders, batch=64, progress_every=0)
    rows = rows_for(run, results, contenders)
    metrics = {(r.contender, r.metric) for r in rows}
    for c in contenders:
        for metric in ("hr_at_10", "ndcg_at_10", "forgetting_hr_at_10_drop", "recovery_events"):
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
