"""The worker's own history of a run: one point per batch, bounded in memory, optionally
appended to a JSON-lines file (``lorastream run --history run.jsonl``) for
``lorastream report`` and the demo's plot.

>>> import numpy as np
>>> from stream.observers import BatchSummary
>>> h = RunHistory(max_points=2)
>>> for _ in range(3):
...     h(BatchSummary(records=4, learned=4, duplicates=0, rejected={}, report=None,
...                    learn_seconds=0.1, batch_seconds=0.2, latencies=np.array([1.0, 2.0])))
>>> len(h.points), h.points[-1]["events"]
(2, 12)
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from stream.observers import BatchSummary

__all__ = ["RunHistory", "load_history"]

_FROM_REPORT = ("hr_at_10", "ndcg_at_10", "mrr", "auc", "replay_fill", "replay_ratio")


class RunHistory:
    """A batch observer keeping the last ``max_points`` points (and writing them all)."""

    def __init__(self, max_points: int = 10_000, path: Path | None = None) -> None:
        self.points: deque[dict[str, Any]] = deque(maxlen=max_points)
        self._events = 0
        self._file: IO[str] | None = path.open("a", encoding="utf-8") if path else None

    def __call__(self, summary: BatchSummary) -> None:
        self._events += summary.learned
        point: dict[str, Any] = {
            "t": time.time(),
            "events": self._events,
            "records": summary.records,
            "learned": summary.learned,
            "learn_s": summary.learn_seconds,
            "batch_s": summary.batch_seconds,
            "drift": summary.drift,
        }
        if len(summary.latencies):
            p50, p99 = np.percentile(summary.latencies, [50, 99])
            point |= {"latency_p50_s": float(p50), "latency_p99_s": float(p99)}
        report = summary.report
        if report is not None:
            point["loss"] = report.loss
            point |= {
                k: report.metrics[k]
                for k in _FROM_REPORT
                if k in report.metrics and np.isfinite(report.metrics[k])
            }
        self.points.append(point)
        if self._file is not None:
            self._file.write(json.dumps(point) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load_history(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
