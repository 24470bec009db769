"""lorastream recommend: a user's top-k from the vector topics, or from a checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    WorkerThread,
    all_committed,
    announced_versions,
    cli,
    create_topic,
    env_for,
    event_record,
    send_raw,
    wait_for,
)

from learners.llm import LLMLearner
from schemas.settings import Settings
from stream.metrics import WorkerMetrics
from stream.recommend import VectorIndex
from stream.sources.synthetic import SyntheticConfig, SyntheticStream
from stream.worker import Worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.mark.parametrize("encoding", ["json", "binary-f32"])
def test_recommendations_come_from_the_published_vectors_and_the_checkpoint(
    make_settings: Callable[..., Settings], tmp_path: Path, encoding: str
) -> None:
    prefix = make_settings().topics.events.removesuffix(".events")
    settings = make_settings(
        learner={"kind": "llm"},
        batch={"max_events": 64, "max_wait_s": 0.3},
        checkpoint={"idle_s": 0.5},
        topics={"vector_encoding": encoding, "vector_versions": f"{prefix}.vector-versions"},
    )
    create_topic(settings, settings.topics.events)
    stream = SyntheticStream(SyntheticConfig(n_users=10, n_items=60, seed=3))
    events = list(stream.events(300))
    others = [e for e in events if e.user_id != "user-1"]
    last = [e for e in events if e.user_id == "user-1"][-20:]
    learner = LLMLearner(settings.learner.llm)
    worker = Worker(settings, learner, WorkerMetrics(process=False))
    running = WorkerThread(worker)
    try:
        send_raw(settings, [event_record(e) for e in others])
        wait_for(lambda: all_committed(settings), 180, "the stream to be learned")
        send_raw(settings, [event_record(e) for e in last])
        wait_for(lambda: all_committed(settings), 180, "user-1's events to be learned")
        # what a reader waits for: every vector on the topics is of the final model (the
        # idle catch-up re-encodes the items and the catalog goes out again before that)
        wait_for(
            lambda: learner.version in announced_versions(settings),
            90,
            "the final version announced",
        )
    finally:
        running.stop(60)

    index = VectorIndex.from_topics(settings)
    top = index.top_k("user-1", 5)
    assert len(top) == 5
    assert all(r.text for r in top)  # item vectors carry their text
    # the published vectors rank exactly as the learner does, leaving out what user-1 had
    items = learner.known_items()
    scores = dict(zip(items, learner.score_matrix(["user-1"], items)[0], strict=True))
    consumed = set(learner.consumed("user-1"))
    assert consumed, "user-1 consumed items"
    assert index.consumed("user-1") == frozenset(consumed)
    ranked = [i for i in sorted(items, key=lambda i: -scores[i]) if i not in consumed]
    assert [r.item_id for r in top] == ranked[:5]
    seen_too = [r.item_id for r in index.top_k("user-1", 5, include_seen=True)]
    assert seen_too == sorted(items, key=lambda i: -scores[i])[:5]

    shown = cli("recommend", "--user", "user-1", "-k", "3", env=env_for(settings))
    assert shown.returncode == 0, shown.stderr
    assert top[0].item_id in shown.stdout
    assert "top 3 for user-1" in shown.stdout
    with_seen = cli(
        "recommend", "--user", "user-1", "-k", "3", "--include-seen", env=env_for(settings)
    )
    assert seen_too[0] in with_seen.stdout

    from_checkpoint = cli(
        "recommend",
        "--user",
        "user-1",
        "-k",
        "3",
        "--checkpoint",
        str(settings.checkpoint.dir),
        env=env_for(settings),
    )
    assert from_checkpoint.returncode == 0, from_checkpoint.stderr
    assert top[0].item_id in from_checkpoint.stdout

    missing = cli("recommend", "--user", "nobody", env=env_for(settings))
    assert missing.returncode == 1
    assert "no vector for user 'nobody'" in missing.stderr
