"""Suite ``quality``: prequential learning quality, every contender side by side.

The protocol is in ``benchmarks/protocol.py``. Contenders: lorastream (and its score's
parts alone: the popularity prior, the personal part), lorastream's weights retrained in
batch, River MF, and the simple recommenders the field uses as bars
(``benchmarks/baselines.py``, ``benchmarks/sasrec.py``). Where a simple recommender has
parameters, a grid of them runs and the best on the whole stream — chosen in hindsight,
deliberately strong — is reported (the grid is in the notes).

Streams: ``synthetic`` (the seeded generator, half the users changing interests at the
middle) and ``movielens`` (a MovieLens folder, timestamp order, the whole stream).

    python -m benchmarks quality [--movielens DIR] [--streams synthetic,movielens]
    python -m benchmarks quality --ablations knn_recent=20,mix_knn=0.0/0.5
"""

from __future__ import annotations

import argparse
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.baselines import (
    EASE,
    Blend,
    CategoryAffinity,
    Counts,
    DecayedPopularity,
    ItemKNN,
    SessionKNN,
    half_life_grid,
)
from benchmarks.contenders import BatchRetrained, LoRAStream, Part, RiverMF
from benchmarks.harness import RESULTS_DIR, write_results
from benchmarks.protocol import Contender, Outcomes, StreamRun, evaluate, rows_for
from benchmarks.sasrec import SASRec
from schemas.learner_config import LLMConfig

__all__ = ["main", "movielens_run", "synthetic_run"]

log = logging.getLogger(__name__)
DEFAULT_MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ml-latest-small"


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


def parse_ablation(text: str) -> dict[str, Any]:
    """``"knn_recent=20"`` → ``{"knn_recent": 20}``, validated by LLMConfig; a tuple
    setting takes ``/``-separated values.

    >>> parse_ablation("lora_top_layers=none"), parse_ablation("mix_knn=0.0/0.5")
    ({'lora_top_layers': None}, {'mix_knn': (0.0, 0.5)})
    """
    key, _, raw = text.partition("=")
    value: Any = {"true": True, "false": False, "none": None}.get(raw.lower(), raw)
    if isinstance(value, str):
        value = _number(value)
    if isinstance(LLMConfig.model_fields[key].default, tuple) and not isinstance(value, tuple):
        value = tuple(_number(v) for v in str(raw).split("/"))
    LLMConfig(**{key: value})  # pydantic's message for an unknown or bad setting
    return {key: value}


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


class Families:
    """Grids of a simple recommender's parameters: only the best of each is reported."""

    def __init__(self) -> None:
        self.members: dict[str, list[Contender]] = {}

    def add(self, family: str, contenders: Sequence[Contender]) -> list[Contender]:
        self.members[family] = list(contenders)
        return list(contenders)

    def best(self, results: dict[str, Outcomes]) -> tuple[set[str], list[str]]:
        """Names of the grid members not chosen (to drop), and notes on the choice."""
        dropped, notes = set(), []
        for family, members in self.members.items():
            hr = {c.name: float(np.mean(results[c.name].hit)) for c in members}
            chosen = max(hr, key=lambda n: hr[n])
            dropped |= {n for n in hr if n != chosen}
            grid = ", ".join(f"{n.split('(', 1)[-1].rstrip(')')}: {v:.4f}" for n, v in hr.items())
            notes.append(f"{family}: best of {len(hr)} in hindsight is {chosen}; HR@10 {grid}")
        return dropped, notes


def retrain_every(args: argparse.Namespace, run: StreamRun) -> int:
    """Events between batch retrains: ``--retrain-every``, or a quarter of the stream, so
    that every stream sees three retrains (a bar that never retrains is a frozen model)."""
    if args.retrain_every is not None:
        return int(args.retrain_every)
    return len(run.events) // 4


def contenders_for(args: argparse.Namespace, run: StreamRun) -> tuple[list[Contender], Families]:
    counts = Counts(half_life_grid())
    families = Families()
    llm = LLMConfig(exclude_consumed=run.exclude_seen)
    lorastream = LoRAStream(llm, name="lorastream")
    out: list[Contender] = [lorastream, Part(lorastream, "prior"), Part(lorastream, "personal")]
    out += families.add("most-popular", [DecayedPopularity(counts, h) for h in half_life_grid()])
    if args.ablations:  # the default against one change at a time, each with its prior
        for text in args.ablations.split(","):
            config = llm.model_copy(update=parse_ablation(text))
            ablated = LoRAStream(config, name=f"lorastream ({text})")
            out += [ablated, Part(ablated, "prior")]
        return out, families
    out += families.add("item-kNN", [ItemKNN(counts, h, d) for h, d in ((20, 0.9), (50, 0.95))])
    out += families.add(
        "item-kNN + popularity",
        [Blend(counts, h, w, 50, 0.9) for h in (1000.0, 4000.0, 16000.0) for w in (0.5, 0.7)],
    )
    out += families.add("EASE", [EASE(counts, lam, args.ease_every) for lam in (100.0, 500.0)])
    out += families.add(
        "category affinity × popularity",
        [
            CategoryAffinity(counts, h, 50, 0.9, a)
            for h in (2000.0, 4000.0, 16000.0)
            for a in (0.1, 1.0)
        ],
    )
    out += [SessionKNN(counts), SASRec(counts), RiverMF()]
    every = retrain_every(args, run)
    if every:
        out.append(BatchRetrained(llm, every, args.retrain_window))
    return out, families


def plot(runs: list[tuple[StreamRun, dict[str, Outcomes]]], path: Path) -> None:
    """HR@10 and NDCG@10 over the stream, one column per stream, in one chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(runs), figsize=(7 * len(runs), 8), squeeze=False)
    for col, (run, results) in enumerate(runs):
        width = max(200, len(run.events) // 25)
        edges = np.arange(0, len(run.events) + width, width)
        for row, metric in enumerate(("hit", "ndcg")):
            ax = axes[row][col]
            for name, t in results.items():
                if "[" in name:  # parts are in the tables, not the chart
                    continue
                at, value = np.asarray(t.at), np.asarray(getattr(t, metric))
                centers, values = [], []
                for lo, hi in itertools.pairwise(edges):
                    sel = (at >= lo) & (at < hi)
                    if sel.sum() >= 5:
                        centers.append((lo + hi) / 2)
                        values.append(value[sel].mean())
                style = "-" if name.startswith("lorastream") else "--"
                ax.plot(centers, values, style, label=name, lw=1.6 if style == "-" else 1.0)
            if run.change_at is not None:
                ax.axvline(run.change_at, color="k", ls=":", lw=1, label="interest change")
            label = "HR@10" if metric == "hit" else "NDCG@10"
            ax.set(title=f"{run.name}: prequential {label} (full catalog)", xlabel="events")
            ax.set_ylim(bottom=0)
        axes[0][col].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks quality")
    parser.add_argument(
        "--movielens",
        type=Path,
        default=DEFAULT_MOVIELENS,
        help="a MovieLens folder (ratings.csv, movies.csv, tags.csv if any);"
        " default: ../shared/datasets/ml-latest-small",
    )
    parser.add_argument(
        "--synthetic-events", type=int, default=6000, help="length of the synthetic stream"
    )
    parser.add_argument(
        "--movielens-events",
        type=int,
        default=None,
        help="the first N events (ratings and tags) by time; default: all",
    )
    parser.add_argument(
        "--full", action="store_true", help="40 000 synthetic events (overrides --synthetic-events)"
    )
    parser.add_argument(
        "--streams", default="synthetic,movielens", help="comma-separated: synthetic, movielens"
    )
    parser.add_argument("--batch", type=int, default=64, help="events per mini-batch")
    parser.add_argument(
        "--ease-every", type=int, default=5000, help="events between EASE's closed-form refits"
    )
    parser.add_argument(
        "--retrain-every", type=int, default=None, help="default: a quarter of each stream; 0: off"
    )
    parser.add_argument(
        "--retrain-window",
        type=int,
        default=20_000,
        help="batch retraining learns the last N events from scratch",
    )
    parser.add_argument(
        "--ablations",
        default="",
        help="comma-separated LLMConfig changes, e.g. knn_recent=20,mix_knn=0.0/0.5; each runs,"
        " with its prior alone, beside the default and decayed popularity (instead of the"
        " other contenders) into quality-ablations.json",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    runs, rows, notes = [], [], []
    for name in args.streams.split(","):
        if name == "synthetic":
            run = synthetic_run(40_000 if args.full else args.synthetic_events)
        else:
            run = movielens_run(args.movielens, args.movielens_events)
        contenders, families = contenders_for(args, run)
        results = evaluate(run, contenders, args.batch)
        dropped, chosen = families.best(results)
        kept = [c for c in contenders if c.name not in dropped]
        rows += rows_for(run, results, kept)
        notes += [f"{run.name}: {n}" for n in chosen]
        notes.append(f"{run.name}: lorastream's final mix: {_mix_note(contenders[0])}")
        runs.append((run, {c.name: results[c.name] for c in kept}))
    suite = "quality-ablations" if args.ablations else "quality"
    plot(runs, RESULTS_DIR / f"{suite}.png")
    write_results(
        suite,
        {
            "batch": args.batch,
            "synthetic_events": 40_000 if args.full else args.synthetic_events,
            "movielens_events": args.movielens_events or "all",
            "ease_every": args.ease_every,
            "retrain": "off"
            if args.retrain_every == 0
            else f"every {args.retrain_every or 'quarter'}, last {args.retrain_window}",
            **({"ablations": args.ablations} if args.ablations else {}),
            "protocol": "prequential, full catalog with every item of the batch, on MovieLens"
            " seen items excluded and positives on them no test, ties fair",
        },
        rows,
        notes,
    )
    return 0


def _mix_note(contender: Contender) -> str:
    learner = getattr(contender, "learner", None)
    if learner is None:
        return "n/a"
    mix = learner.mix
    return f"kNN weight {mix.knn:.2f}, model {1 - mix.knn:.2f} (towers weight {mix.towers:.2f})"
