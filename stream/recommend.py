"""Using the vectors: a user's current top-k items, from the vector topics or a checkpoint.

The vector topics are compacted and keyed by id, so reading them from the beginning gives
the newest vector of every user and item; :class:`VectorIndex` holds them (bounded) and
ranks items for a user with the dot product the vectors are built for: dense parts, plus
the sparse parts where they carry them (a user's top items by co-occurrence, each item
its own key). Items the user consumed are left out unless asked for; a tombstone (a
deleted user) removes the user.

>>> index = VectorIndex()
>>> index.put_item("a", np.array([1.0, 0.0]), "Apples")
>>> index.put_item("b", np.array([0.0, 1.0]), "Bananas")
>>> index.put_user("u", np.array([0.2, 0.9]))
>>> [(r.item_id, r.text) for r in index.top_k("u", 2)]
[('b', 'Bananas'), ('a', 'Apples')]
>>> index.put_user("u", np.array([0.2, 0.9]), consumed=["b"])
>>> [r.item_id for r in index.top_k("u", 2)], [r.item_id for r in index.top_k("u", 2, True)]
(['a'], ['b', 'a'])
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaConsumer, TopicPartition

from learners.base import VectorBatch
from schemas.settings import Settings
from schemas.vector_wire import read_vector
from schemas.vectors import item_key

__all__ = ["Recommendation", "VectorIndex"]


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    text: str | None


@dataclass
class _User:
    vector: np.ndarray
    sparse: dict[int, float] = field(default_factory=dict)
    consumed: frozenset[str] = frozenset()
    doc: dict[str, Any] = field(default_factory=dict)


class VectorIndex:
    """The newest vector per user and per item (at most ``max_entries`` of each, LRU)."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.max_entries = max_entries
        self.users: OrderedDict[str, _User] = OrderedDict()
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()
        self.texts: dict[str, str | None] = {}
        self._lock = threading.Lock()

    @property
    def user_docs(self) -> dict[str, dict[str, Any]]:
        return {u: record.doc for u, record in self.users.items()}

    def put_user(
        self,
        user_id: str,
        vector: np.ndarray,
        doc: dict[str, Any] | None = None,
        sparse: dict[int, float] | None = None,
        consumed: list[str] | None = None,
    ) -> None:
        with self._lock:
            self.users[user_id] = _User(vector, sparse or {}, frozenset(consumed or ()), doc or {})
            self.users.move_to_end(user_id)
            while len(self.users) > self.max_entries:
                self.users.popitem(last=False)

    def drop_user(self, user_id: str) -> None:
        with self._lock:
            self.users.pop(user_id, None)

    def put_item(self, item_id: str, vector: np.ndarray, text: str | None = None) -> None:
        with self._lock:
            self.items[item_id] = vector
            self.items.move_to_end(item_id)
            if text is not None or item_id not in self.texts:
                self.texts[item_id] = text
            while len(self.items) > self.max_entries:
                gone, _ = self.items.popitem(last=False)
                self.texts.pop(gone, None)

    def scores(self, user_id: str) -> tuple[list[str], np.ndarray]:
        """Every indexed item (of the user's vector size) and its score for the user."""
        with self._lock:
            user = self.users.get(user_id)
            if user is None:
                return [], np.zeros(0)
            ids = [i for i, v in self.items.items() if len(v) == len(user.vector)]
            if not ids:
                return [], np.zeros(0)
            matrix = np.stack([self.items[i] for i in ids])  # [n, dim]
        scores = matrix @ user.vector
        if user.sparse:
            scores = scores + np.fromiter(
                (user.sparse.get(item_key(i), 0.0) for i in ids), np.float64, len(ids)
            )
        return ids, scores

    def consumed(self, user_id: str) -> frozenset[str]:
        user = self.users.get(user_id)
        return user.consumed if user is not None else frozenset()

    def top_k(self, user_id: str, k: int = 10, include_seen: bool = False) -> list[Recommendation]:
        """The ``k`` best-scoring items for the user, leaving out those they consumed."""
        ids, scores = self.scores(user_id)
        skip = frozenset() if include_seen else self.consumed(user_id)
        order = [j for j in np.argsort(-scores, kind="stable") if ids[j] not in skip][:k]
        return [Recommendation(ids[j], float(scores[j]), self.texts.get(ids[j])) for j in order]

    # -- filling it ------------------------------------------------------------------------

    def apply(self, topic_kind: str, key: bytes | None, value: bytes | None) -> None:
        """One record of a vector topic (user or item); a user tombstone drops the user."""
        if value is None:
            if topic_kind == "user" and key is not None:
                self.drop_user(key.decode(errors="replace"))
            return
        wire = read_vector(value)  # JSON or a binary frame, whichever the worker wrote
        doc = wire.document
        if topic_kind == "user":
            self.put_user(
                doc["user_id"],
                wire.vector,
                doc,
                dict(zip(wire.indices.tolist(), wire.values.tolist(), strict=True)),
                doc.get("consumed"),
            )
        else:
            self.put_item(doc["item_id"], wire.vector, doc.get("text"))

    def put_users(self, batch: VectorBatch) -> None:
        """Users straight from a learner (its vectors, sparse parts, consumed items)."""
        for k, user_id in enumerate(batch.ids):
            sparse = batch.sparse[k] if batch.sparse else None
            self.put_user(
                user_id,
                batch.vectors[k],
                sparse=dict(zip(sparse[0].tolist(), sparse[1].tolist(), strict=True))
                if sparse is not None
                else None,
                consumed=batch.consumed[k] if batch.consumed else None,
            )

    @classmethod
    def from_topics(cls, settings: Settings, timeout_s: float = 300.0) -> VectorIndex:
        """Read both vector topics from the beginning to their current end; a read that
        cannot reach the end within ``timeout_s`` raises :class:`TimeoutError` rather than
        answer from older vectors."""
        index = cls()
        consumer = KafkaConsumer(**settings.kafka.client_kwargs(), enable_auto_commit=False)
        try:
            kinds = {settings.topics.user_vectors: "user", settings.topics.item_vectors: "item"}
            parts = [
                TopicPartition(t, p)
                for t in kinds
                for p in (consumer.partitions_for_topic(t) or ())
            ]
            if not parts:
                return index
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            ends = consumer.end_offsets(parts)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and any(
                consumer.position(tp) < end for tp, end in ends.items()
            ):
                for tp, records in consumer.poll(timeout_ms=500).items():
                    for r in records:
                        index.apply(kinds[tp.topic], r.key, r.value)
            behind = {
                f"{tp.topic}[{tp.partition}]": end - consumer.position(tp)
                for tp, end in ends.items()
                if consumer.position(tp) < end
            }
        finally:
            consumer.close()
        if behind:
            raise TimeoutError(
                f"the vector topics were not read to their end in {timeout_s:.0f}s (records"
                f" left: {behind}); the answer would come from older vectors"
            )
        return index

    def follow(self, settings: Settings, stop: threading.Event) -> threading.Thread:
        """Keep the index current from the vector topics in a background thread."""

        def run() -> None:
            consumer = KafkaConsumer(**settings.kafka.client_kwargs(), enable_auto_commit=False)
            kinds = {settings.topics.user_vectors: "user", settings.topics.item_vectors: "item"}
            try:
                parts: list[TopicPartition] = []
                while not parts and not stop.is_set():
                    parts = [
                        TopicPartition(t, p)
                        for t in kinds
                        for p in (consumer.partitions_for_topic(t) or ())
                    ]
                    if not parts:
                        stop.wait(0.5)
                consumer.assign(parts)
                consumer.seek_to_beginning(*parts)
                while not stop.is_set():
                    for tp, records in consumer.poll(timeout_ms=300).items():
                        for r in records:
                            self.apply(kinds[tp.topic], r.key, r.value)
            finally:
                consumer.close()

        thread = threading.Thread(target=run, name="vector-follower", daemon=True)
        thread.start()
        return thread

    @classmethod
    def from_checkpoint(cls, directory: Path, settings: Settings, user_id: str) -> VectorIndex:
        """Load the newest checkpoint under ``directory`` and index one user and every item
        the learner knows."""
        from learners.registry import build_learner
        from stream.checkpoint import CheckpointStore

        store = CheckpointStore(directory)
        checkpoint = store.latest()
        if checkpoint is None:
            raise FileNotFoundError(f"no intact checkpoint in {directory}")
        kind = checkpoint.manifest.learner_kind
        learner = build_learner(settings.learner.model_copy(update={"kind": kind}))
        learner.load(checkpoint.learner_dir)
        index = cls()
        index.put_users(learner.user_vectors([user_id]))
        items = learner.item_vectors(learner.known_items())
        texts = learner.item_texts(items.ids)
        for iid, vector in zip(items.ids, items.vectors, strict=True):
            index.put_item(iid, vector, texts.get(iid))
        return index
