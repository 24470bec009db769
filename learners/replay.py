"""The replay buffer: a bounded, recency-weighted, per-user-stratified reservoir of past
training examples, mixed into every update so the adapter does not forget.

Bounded by count (``capacity``) and by bytes (``max_bytes``). Reservoir sampling
with weights that grow with time (A-Res, in log space so keys never overflow):
an example ``recency_half_life`` events older than another is half as likely to
be kept. No user holds more than ``per_user_cap`` examples.

>>> buf = ReplayBuffer(ReplayConfig(capacity=3, per_user_cap=2), seed=0)
>>> for t in range(10):
...     buf.add(Example("u1" if t % 2 else "u2", f"i{t}", 1.0, (), t))
>>> len(buf), max(buf.users().values())
(3, 2)
>>> len(buf.sample(2))
2
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from typing import Any

import numpy as np

from schemas.learner_config import ReplayConfig

__all__ = ["Example", "ReplayBuffer"]

_OVERHEAD = 200  # bytes per example beyond its strings (object headers, tuples, key)


@dataclass(frozen=True, slots=True)
class Example:
    """One positive interaction to learn, with the history the user had then."""

    user_id: str
    item_id: str
    weight: float
    history: tuple[tuple[str, int], ...]  # (item id, history type code), newest first
    t: float  # event index when it happened
    rating: float | None = None

    def nbytes(self) -> int:
        return (
            _OVERHEAD
            + len(self.user_id)
            + len(self.item_id)
            + sum(len(i) + 60 for i, _ in self.history)
        )


class ReplayBuffer:
    """Keeps a recency-weighted sample of examples within count and byte limits."""

    def __init__(self, config: ReplayConfig, seed: int = 0) -> None:
        self.config = config
        self._rng = np.random.default_rng(seed)
        self._examples: list[Example | None] = []
        self._keys = np.zeros(0)  # smaller is better; inf marks a free slot
        self._by_user: dict[str, list[int]] = {}
        self._free: list[int] = []
        self.bytes = 0
        self.added = 0

    def __len__(self) -> int:
        return len(self._examples) - len(self._free)

    def users(self) -> dict[str, int]:
        return {u: len(s) for u, s in self._by_user.items()}

    def _key(self, t: float) -> float:
        # A-Res key u^(1/w) with w = 2^(t/H), as log(-log u) - log w: no overflow, ever.
        u = self._rng.random()
        return math.log(-math.log(max(u, 1e-300))) - t * math.log(2) / self.config.recency_half_life

    def add(self, example: Example) -> None:
        self.add_many([example])

    def add_many(self, examples: Iterable[Example]) -> None:
        for example in examples:
            self.added += 1
            self._offer(example, self._key(example.t))

    def _offer(self, example: Example, key: float) -> None:
        c = self.config
        mine = self._by_user.get(example.user_id, [])
        if len(mine) >= c.per_user_cap:
            worst = max(mine, key=lambda s: self._keys[s])
            if key >= self._keys[worst]:
                return
            self._remove(worst)
        elif len(self) >= c.capacity:
            worst = int(np.argmax(np.where(np.isinf(self._keys), -np.inf, self._keys)))
            if key >= self._keys[worst]:
                return
            self._remove(worst)
        self._insert(example, key)
        while self.bytes > c.max_bytes and len(self) > 1:
            self._remove(int(np.argmax(np.where(np.isinf(self._keys), -np.inf, self._keys))))

    def _insert(self, example: Example, key: float) -> None:
        if self._free:
            slot = self._free.pop()
            self._examples[slot] = example
            self._keys[slot] = key
        else:
            slot = len(self._examples)
            self._examples.append(example)
            self._keys = np.append(self._keys, key)
        self._by_user.setdefault(example.user_id, []).append(slot)
        self.bytes += example.nbytes()

    def _remove(self, slot: int) -> None:
        example = self._examples[slot]
        assert example is not None
        self._examples[slot] = None
        self._keys[slot] = np.inf
        self._free.append(slot)
        mine = self._by_user[example.user_id]
        mine.remove(slot)
        if not mine:
            del self._by_user[example.user_id]
        self.bytes -= example.nbytes()

    def remove_user(self, user_id: str) -> int:
        """Drop every example of ``user_id``; returns how many there were."""
        slots = list(self._by_user.get(user_id, []))
        for slot in slots:
            self._remove(slot)
        return len(slots)

    def sample(self, n: int) -> list[Example]:
        """Up to ``n`` distinct examples, uniformly from the buffer."""
        live = [e for e in self._examples if e is not None]
        if n <= 0 or not live:
            return []
        picked = self._rng.choice(len(live), size=min(n, len(live)), replace=False)
        return [live[int(i)] for i in picked]

    def to_json(self) -> dict[str, Any]:
        live = [
            (e, float(k)) for e, k in zip(self._examples, self._keys, strict=True) if e is not None
        ]
        return {
            "examples": [
                [*astuple(e)[:3], [list(h) for h in e.history], e.t, e.rating, k] for e, k in live
            ],
            "added": self.added,
            "rng": self._rng.bit_generator.state,
        }

    @classmethod
    def from_json(cls, config: ReplayConfig, data: dict[str, Any]) -> ReplayBuffer:
        buf = cls(config)
        for user, item, weight, history, t, rating, key in data["examples"]:
            buf._insert(
                Example(user, item, weight, tuple((i, c) for i, c in history), t, rating), key
            )
        buf.added = int(data["added"])
        buf._rng.bit_generator.state = data["rng"]
        return buf
