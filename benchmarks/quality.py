"""Suite ``quality``: prequential learning quality, every contender side by side.

All contenders see the same events in the same order, in mini-batches. Before a
batch is learned, each positive event in it is a test: every contender ranks the
*whole catalog seen so far* (plus the test's item, which may be new) for the
test's user, and the true item's rank gives HR@10 and NDCG@10 (ties broken
fairly). Items the user already interacted with are excluded on MovieLens (people
rarely rate a movie twice). Rating events also test rating predictions (MAE/RMSE).

Streams: ``synthetic`` (the seeded generator, half the users changing interests at
the middle) and ``movielens`` (any MovieLens folder, timestamp order). The default
run uses a slice of each (see ``--synthetic-events``/``--movielens-events``) so it
finishes in about 15 minutes on 2 CPU cores; ``--full`` uses the whole streams.

    python -m benchmarks quality [--movielens ../shared/datasets/ml-latest-small]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.contenders import (
    BatchRetrained,
    Contender,
    LoRAStream,
    Popularity,
    RiverMF,
    is_positive,
)
from benchmarks.harness import RESULTS_DIR, Row, write_results
from learners.prequential import rank_of_true
from schemas.events import InteractionEvent
from schemas.learner_config import LLMConfig, ReplayConfig

__all__ = ["StreamRun", "evaluate"]

log = logging.getLogger(__name__)
DEFAULT_MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ml-latest-small"
COLD = 5  # users/items with fewer past events than this are "cold"


@dataclass
class Tests:
    """Per-test outcomes of one contender."""

    at: list[int] = field(default_factory=list)  # event index
    hit: list[float] = field(default_factory=list)
    ndcg: list[float] = field(default_factory=list)
    user: list[str] = field(default_factory=list)
    cold_user: list[bool] = field(default_factory=list)
    cold_item: list[bool] = field(default_factory=list)
    rating_error: list[float] = field(default_factory=list)


@dataclass
class StreamRun:
    name: str
    events: list[InteractionEvent]
    exclude_seen: bool
    change_at: int | None = None
    changed_users: set[str] = field(default_factory=set)


def evaluate(
    run: StreamRun, contenders: Sequence[Contender], batch: int = 64, progress_every: int = 2000
) -> dict[str, Tests]:
    """Test-then-train every contender on ``run.events``; returns their test outcomes."""
    results = {c.name: Tests() for c in contenders}
    catalog: dict[str, None] = {}
    user_items: dict[str, set[str]] = {}
    user_count: dict[str, int] = {}
    item_count: dict[str, int] = {}
    started = time.perf_counter()
    for start in range(0, len(run.events), batch):
        chunk = run.events[start : start + batch]
        tests = [(start + k, e) for k, e in enumerate(chunk) if is_positive(e)]
        rated = [e for e in chunk if e.event_type.value == "rating" and e.value is not None]
        for c in contenders:
            c.observe(chunk)
        if tests:
            candidates = list(dict.fromkeys([*catalog, *(e.item_id for _, e in tests)]))
            column = {item: k for k, item in enumerate(candidates)}
            users = list(dict.fromkeys(e.user_id for _, e in tests))
            row = {u: k for k, u in enumerate(users)}
            for c in contenders:
                scores = np.asarray(c.scores(users, candidates), dtype=np.float64)
                _record(
                    results[c.name],
                    scores,
                    tests,
                    row,
                    column,
                    user_items,
                    user_count,
                    item_count,
                    run.exclude_seen,
                )
        for c in contenders:
            predicted = (
                c.ratings([e.user_id for e in rated], [e.item_id for e in rated]) if rated else None
            )
            if predicted is not None:
                results[c.name].rating_error.extend(
                    (predicted - np.array([e.value for e in rated])).tolist()
                )
        for c in contenders:
            c.learn(chunk)
        for e in chunk:
            catalog.setdefault(e.item_id)
            user_items.setdefault(e.user_id, set()).add(e.item_id)
            user_count[e.user_id] = user_count.get(e.user_id, 0) + 1
            item_count[e.item_id] = item_count.get(e.item_id, 0) + 1
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


def _record(
    out: Tests,
    scores: np.ndarray,
    tests: list[tuple[int, InteractionEvent]],
    row: dict[str, int],
    column: dict[str, int],
    user_items: dict[str, set[str]],
    user_count: dict[str, int],
    item_count: dict[str, int],
    exclude_seen: bool,
) -> None:
    for at, event in tests:
        s = scores[row[event.user_id]].copy()
        true = column[event.item_id]
        if exclude_seen:
            seen = [column[i] for i in user_items.get(event.user_id, ()) if i in column]
            s[seen] = -np.inf
            s[true] = scores[row[event.user_id], true]
        s = np.nan_to_num(s, nan=-np.inf)
        greater, ties = rank_of_true(s[None, :], true)
        if np.isneginf(s[true]):  # an item the contender cannot score ranks last
            greater = np.array([float(np.isfinite(s).sum())])
            ties = np.array([float(np.isneginf(s).sum() - 1)])
        hit = float(np.clip((10 - greater[0]) / (ties[0] + 1.0), 0.0, 1.0))
        rank = greater[0] + ties[0] / 2.0
        out.at.append(at)
        out.hit.append(hit)
        out.ndcg.append(1.0 / np.log2(rank + 2.0) if rank < 10 else 0.0)
        out.user.append(event.user_id)
        out.cold_user.append(user_count.get(event.user_id, 0) < COLD)
        out.cold_item.append(item_count.get(event.item_id, 0) < COLD)


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def rows_for(
    run: StreamRun, results: dict[str, Tests], contenders: Sequence[Contender]
) -> list[Row]:
    rows: list[Row] = []
    for c in contenders:
        t = results[c.name]
        hit, at = np.asarray(t.hit), np.asarray(t.at)
        rows += [
            Row(c.name, run.name, "hr_at_10", _mean(t.hit), ""),
            Row(c.name, run.name, "ndcg_at_10", _mean(t.ndcg), ""),
            Row(
                c.name,
                run.name,
                "hr_at_10_cold_users",
                _mean(hit[np.asarray(t.cold_user, bool)]) if len(hit) else float("nan"),
                "",
            ),
            Row(
                c.name,
                run.name,
                "hr_at_10_cold_items",
                _mean(hit[np.asarray(t.cold_item, bool)]) if len(hit) else float("nan"),
                "",
            ),
            Row(c.name, run.name, "tests", float(len(hit)), "count"),
            Row(
                c.name,
                run.name,
                "events_per_s",
                len(run.events) / max(c.learn_seconds, 1e-9),
                "events/s",
            ),
        ]
        if t.rating_error:
            err = np.asarray(t.rating_error)
            rows += [
                Row(c.name, run.name, "mae", float(np.abs(err).mean()), "stars"),
                Row(c.name, run.name, "rmse", float(np.sqrt((err**2).mean())), "stars"),
            ]
        if run.change_at is not None and len(hit):
            rows += _change_rows(run, c.name, t, hit, at)
    return rows


def _change_rows(run: StreamRun, name: str, t: Tests, hit: np.ndarray, at: np.ndarray) -> list[Row]:
    """Forgetting (unchanged users) and recovery (changed users) around the change point."""
    assert run.change_at is not None
    cp, window = run.change_at, max(500, len(run.events) // 10)
    changed = np.array([u in run.changed_users for u in t.user])
    before = (at >= cp - window) & (at < cp)
    after = (at >= cp) & (at < cp + window)
    drop = _mean(hit[before & ~changed]) - _mean(hit[after & ~changed])
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
        Row(name, run.name, "recovery_events", recovery, "events"),
    ]


def plot(runs: list[tuple[StreamRun, dict[str, Tests]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6.5 * len(runs), 4.2), squeeze=False)
    for ax, (run, results) in zip(axes[0], runs, strict=True):
        width = max(200, len(run.events) // 25)
        for name, t in results.items():
            at, hit = np.asarray(t.at), np.asarray(t.hit)
            edges = np.arange(0, len(run.events) + width, width)
            centers, values = [], []
            for lo, hi in itertools.pairwise(edges):
                sel = (at >= lo) & (at < hi)
                if sel.sum() >= 5:
                    centers.append((lo + hi) / 2)
                    values.append(hit[sel].mean())
            ax.plot(centers, values, label=name, lw=1.6)
        if run.change_at is not None:
            ax.axvline(run.change_at, color="k", ls="--", lw=1, label="interest change")
        ax.set(
            title=f"{run.name}: prequential HR@10 (full catalog)",
            xlabel="events",
            ylabel="HR@10",
        )
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def llm_config(**overrides: Any) -> LLMConfig:
    return LLMConfig(**overrides)


def parse_ablation(text: str) -> dict[str, Any]:
    """``"id_embeddings=false"`` → ``{"id_embeddings": False}``, validated by LLMConfig.

    >>> parse_ablation("lora_top_layers=2")
    {'lora_top_layers': 2}
    >>> parse_ablation("lora_top_layers=none")
    {'lora_top_layers': None}
    """
    key, _, raw = text.partition("=")
    value: Any = {"true": True, "false": False, "none": None}.get(raw.lower(), raw)
    if isinstance(value, str) and value.lstrip("-").isdigit():
        value = int(value)
    LLMConfig(**{key: value})  # fails with pydantic's message for an unknown or bad setting
    return {key: value}


def contenders_for(args: argparse.Namespace) -> list[Contender]:
    base = llm_config()
    out: list[Contender] = [Popularity(window=args.popularity_window), RiverMF()]
    out.append(LoRAStream(base, name="lorastream"))
    if args.ablations:  # an ablation run: the default against one change at a time
        for text in args.ablations.split(","):
            out.append(LoRAStream(llm_config(**parse_ablation(text)), name=f"lorastream ({text})"))
        return out
    out.append(
        LoRAStream(
            base.model_copy(update={"replay": ReplayConfig(enabled=False)}),
            name="lorastream (no replay)",
        )
    )
    if args.retrain_every:
        out.append(BatchRetrained(base, every=args.retrain_every))
    return out


def synthetic_run(n: int) -> StreamRun:
    from stream.sources.synthetic import ChangePoint, SyntheticConfig, SyntheticStream

    change = ChangePoint(at=n // 2, share=0.5)
    stream = SyntheticStream(
        SyntheticConfig(n_users=80, n_items=600, seed=7, change_points=(change,))
    )
    events = list(stream.events(n))
    changed = {f"user-{u}" for u in stream.truth.changed_users[0]}
    return StreamRun(
        "synthetic", events, exclude_seen=False, change_at=change.at, changed_users=changed
    )


def movielens_run(folder: Path, n: int | None) -> StreamRun:
    from stream.sources.movielens import MovieLens

    events = list(MovieLens(folder).events(limit=n))
    return StreamRun("movielens", events, exclude_seen=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks quality")
    parser.add_argument("--movielens", type=Path, default=DEFAULT_MOVIELENS)
    parser.add_argument("--synthetic-events", type=int, default=6000)
    parser.add_argument("--movielens-events", type=int, default=15000)
    parser.add_argument("--full", action="store_true", help="whole streams (use a GPU)")
    parser.add_argument("--streams", default="synthetic,movielens")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--popularity-window", type=int, default=2000)
    parser.add_argument("--retrain-every", type=int, default=3000)
    parser.add_argument(
        "--ablations",
        default="",
        help="comma-separated LLMConfig changes, e.g. id_embeddings=false,lora_top_layers=2;"
        " each runs beside the default (instead of the replay and retrain contenders) and"
        " the results go to quality-ablations.json",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    runs = []
    for name in args.streams.split(","):
        if name == "synthetic":
            run = synthetic_run(40_000 if args.full else args.synthetic_events)
        else:
            run = movielens_run(args.movielens, None if args.full else args.movielens_events)
        contenders = contenders_for(args)
        runs.append((run, evaluate(run, contenders, args.batch), contenders))
    rows = [r for run, results, contenders in runs for r in rows_for(run, results, contenders)]
    suite = "quality-ablations" if args.ablations else "quality"
    plot([(run, results) for run, results, _ in runs], RESULTS_DIR / f"{suite}.png")
    write_results(
        suite,
        {
            "batch": args.batch,
            "synthetic_events": args.synthetic_events,
            "movielens_events": "all" if args.full else args.movielens_events,
            "popularity_window": args.popularity_window,
            "retrain_every": args.retrain_every,
            **({"ablations": args.ablations} if args.ablations else {}),
            "protocol": "prequential, full catalog, ties broken fairly",
        },
        rows,
    )
    return 0
