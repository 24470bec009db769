"""Served quality: the vectors as a consumer reads them from the compacted topics, against
the learner's own ranking at the same moment.

A MovieLens stream (the first ``--train-share`` of it by time) goes through the real
worker over a real broker with default settings; when the worker has caught up and gone
idle, it catches its item encodings up with the current model and re-publishes the
catalog and its users until it announces the version complete on
``topics.vector_versions`` (``catalog_republish_s`` is how long that took from the last
batch); then the vector topics are read from the beginning (what a serving index would
hold: each user's and item's newest vector) and the learner's own scores are computed for the same
users. Each returning user's future positives (the rest of the stream, rating ≥ 3.5, not
consumed before) are ranked against the whole catalog, leaving out what the user consumed:
HR@10 (a user hits when any of their future positives is in their top 10), recall@10 and
NDCG@10. ``lag`` figures say how many model updates behind the served vectors were. The
simple bars are ranked on the same split from the same training events: most popular over
the last tenth of them, decayed popularity, and the tuned item-kNN + popularity blend.

    python -m benchmarks served [--movielens DIR] [--movielens-events N] [--train-share 0.8]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.baselines import Blend, Counts, DecayedPopularity, is_positive
from benchmarks.harness import BenchmarkFailed, Row, bench_settings, write_results
from schemas.events import InteractionEvent

if TYPE_CHECKING:
    from benchmarks.running import RunningWorker

__all__ = ["ServedQuality", "bars", "main", "measure"]

log = logging.getLogger(__name__)


@dataclass
class ServedQuality:
    served: dict[str, float]
    learner: dict[str, float]
    users: int
    ranked: list[str]  # the users ranked (returning, with future positives)
    lag_p50: float
    lag_p99: float
    encoding_age_p50: float  # updates since the item encodings were made, after the last batch
    encoding_age_p99: float
    republish_s: float  # last batch → every vector on the topics of one model, announced
    catalog: int  # items the learner knows (each re-encoded and re-published at most once)
    seconds: float


def _figures(
    ranked: dict[str, list[str]], future: dict[str, set[str]], k: int = 10
) -> dict[str, float]:
    hits, recalls, ndcgs = [], [], []
    for user, items in ranked.items():
        truth = future[user]
        top = items[:k]
        found = [j for j, i in enumerate(top) if i in truth]
        hits.append(float(bool(found)))
        recalls.append(len(found) / min(k, len(truth)))
        ideal = sum(1 / np.log2(j + 2) for j in range(min(k, len(truth))))
        ndcgs.append(sum(1 / np.log2(j + 2) for j in found) / ideal)
    return {
        "hr_at_10": float(np.mean(hits)),
        "recall_at_10": float(np.mean(recalls)),
        "ndcg_at_10": float(np.mean(ndcgs)),
    }


def _future(
    events: list[InteractionEvent], split: int
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    consumed: dict[str, set[str]] = defaultdict(set)
    for e in events[:split]:
        consumed[e.user_id].add(e.item_id)
    future: dict[str, set[str]] = defaultdict(set)
    for e in events[split:]:
        if is_positive(e) and e.user_id in consumed and e.item_id not in consumed[e.user_id]:
            future[e.user_id].add(e.item_id)
    return dict(future), dict(consumed)


def measure(
    events: list[InteractionEvent], train_share: float, bootstrap: str | None, batch: int = 64
) -> ServedQuality:
    """Stream the first ``train_share`` of ``events`` through a worker; rank the rest."""
    from benchmarks.running import RunningWorker, send
    from deploy.kafka import LocalKafka
    from learners.llm import LLMLearner
    from schemas.learner_config import LLMConfig
    from stream.recommend import VectorIndex

    split = int(len(events) * train_share)
    future, _ = _future(events, split)
    started = time.perf_counter()
    with ExitStack() as stack:
        servers = bootstrap or stack.enter_context(LocalKafka()).bootstrap_servers
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        settings = bench_settings(
            servers,
            root,
            "served",
            batch={"max_events": batch, "max_wait_s": 0.5},
            checkpoint={"every_events": 10_000},
            learner={"kind": "llm"},
        )
        run = settings.topics.events.removesuffix(".events")
        topics = settings.topics.model_copy(update={"vector_versions": f"{run}.versions"})
        settings = settings.model_copy(update={"topics": topics})
        learner = LLMLearner(LLMConfig())
        with RunningWorker(settings, learner) as running:
            send(settings, events[:split])
            running.wait_for(split, 4 * 3600)
            ages = learner.items.catalog.ages(learner.updates)  # as the last batch left them
            republish_s = _until_complete(running, learner.version, 1800.0)
            index = VectorIndex.from_topics(settings, timeout_s=1800.0)
    users = [u for u in future if u in index.users and u in learner.history]
    served, own = {}, {}
    items = learner.known_items()
    for user in users:
        ids, scores = index.scores(user)
        seen = index.consumed(user)
        served[user] = [ids[j] for j in np.argsort(-scores, kind="stable") if ids[j] not in seen]
        mine = learner.score_matrix([user], items)[0]
        consumed = set(learner.consumed(user))
        own[user] = [items[j] for j in np.argsort(-mine, kind="stable") if items[j] not in consumed]
    docs = index.user_docs
    lag = [learner.updates - _update_of(docs[u].get("model_version", "")) for u in users]
    return ServedQuality(
        served=_figures(served, future),
        learner=_figures(own, future),
        users=len(users),
        ranked=users,
        lag_p50=float(np.percentile(lag, 50)) if lag else float("nan"),
        lag_p99=float(np.percentile(lag, 99)) if lag else float("nan"),
        encoding_age_p50=float(np.percentile(ages, 50)) if len(ages) else float("nan"),
        encoding_age_p99=float(np.percentile(ages, 99)) if len(ages) else float("nan"),
        republish_s=republish_s,
        catalog=len(items),
        seconds=time.perf_counter() - started,
    )


def _until_complete(running: RunningWorker, version: str, timeout_s: float) -> float:
    """Seconds from the last batch's acknowledgement until the worker announced ``version``
    complete (every vector on both topics of it, built from encodings of that model)."""
    deadline = time.monotonic() + timeout_s
    while running.worker.apply.announced != version:
        if not running.alive or time.monotonic() > deadline:
            raise BenchmarkFailed(f"version {version} not announced complete: {running.app.error}")
        time.sleep(0.1)
    return time.perf_counter() - running.marks[-1][0]


def _update_of(model_version: str) -> int:
    """The adapter update in a model version (``llm:<model>:a<update>``)."""
    tail = model_version.rsplit(":a", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def rows(result: ServedQuality, stream: str) -> list[Row]:
    served, own = "lorastream (vectors from the topics)", "lorastream (learner's own ranking)"
    out = [Row(served, stream, k, v, "") for k, v in result.served.items()]
    out += [Row(own, stream, k, v, "") for k, v in result.learner.items()]
    ratio = result.served["hr_at_10"] / max(result.learner["hr_at_10"], 1e-12)
    name = served
    out += [
        Row(name, stream, "served_over_learner_hr", ratio, "ratio"),
        Row(name, stream, "users_ranked", float(result.users), "count"),
        Row(name, stream, "update_lag_p50", result.lag_p50, "updates"),
        Row(name, stream, "update_lag_p99", result.lag_p99, "updates"),
        Row(name, stream, "item_encoding_age_p50", result.encoding_age_p50, "updates"),
        Row(name, stream, "item_encoding_age_p99", result.encoding_age_p99, "updates"),
        Row(name, stream, "catalog_republish_s", result.republish_s, "s"),
        Row(name, stream, "catalog_items", float(result.catalog), "count"),
    ]
    return out


def bars(
    events: list[InteractionEvent], split: int, users: list[str]
) -> dict[str, dict[str, float]]:
    """The simple recommenders' figures on the same split, learned from the same events."""
    future, consumed = _future(events, split)
    counts = Counts(half_lives=[4000.0])
    for start in range(0, split, 64):
        counts.update(events[start : min(start + 64, split)])
    recent = Counts(half_lives=[float("inf")])
    recent.update(events[split - split // 10 : split])
    contenders = {
        "most-popular (last 10% of training)": DecayedPopularity(recent, float("inf")),
        "most-popular (half-life 4000)": DecayedPopularity(counts, 4000.0),
        "item-kNN + popularity (w=0.7, half-life 4000, last 50)": Blend(counts, 4000.0, 0.7, 50),
    }
    items = list(counts.index)
    out = {}
    for name, contender in contenders.items():
        ranked = {}
        for user in users:
            scores = contender.scores([user], items)[0]
            seen = consumed.get(user, set())
            order = np.argsort(-scores, kind="stable")
            ranked[user] = [items[j] for j in order[: 10 + len(seen)] if items[j] not in seen]
        out[name] = _figures(ranked, future)
    return out


def main(argv: list[str]) -> int:
    from benchmarks.quality import DEFAULT_MOVIELENS
    from stream.sources.movielens import MovieLens

    parser = argparse.ArgumentParser(prog="python -m benchmarks served")
    parser.add_argument("--movielens", type=Path, default=DEFAULT_MOVIELENS)
    parser.add_argument("--movielens-events", type=int, default=None, help="default: all")
    parser.add_argument(
        "--synthetic-events",
        type=int,
        default=0,
        help="use this many events of the synthetic stream instead of MovieLens",
    )
    parser.add_argument("--train-share", type=float, default=0.8)
    parser.add_argument("--bootstrap", default=None, help="default: a local broker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.synthetic_events:
        from benchmarks.quality import synthetic_run

        stream, events = "synthetic", synthetic_run(args.synthetic_events).events
    else:
        stream, events = "movielens", list(MovieLens(args.movielens).events(args.movielens_events))
    result = measure(events, args.train_share, args.bootstrap)
    out = rows(result, stream)
    for name, figures in bars(events, int(len(events) * args.train_share), result.ranked).items():
        out += [Row(name, stream, k, v, "") for k, v in figures.items()]
    params = {
        "stream": stream,
        "events": len(events),
        "train_share": args.train_share,
        "protocol": "stream the first share through the worker; rank each returning user's"
        " future positives (rating >= 3.5) against the whole catalog, consumed items left out",
        "seconds": round(result.seconds, 1),
    }
    write_results("served", params, out)
    return 0
