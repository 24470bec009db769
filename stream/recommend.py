"""Using the vectors: a user's current top-k items, from the vector topics or a checkpoint.

The vector topics are compacted and keyed by id, so reading them from the beginning gives
the newest vector of every user and item; :class:`VectorIndex` holds them (bounded) and
ranks items for a user with the plain dot product the vectors are built for.

>>> index = VectorIndex()
>>> index.put_item("a", np.array([1.0, 0.0]), "Apples")
>>> index.put_item("b", np.array([0.0, 1.0]), "Bananas")
>>> index.put_user("u", np.array([0.2, 0.9]))
>>> [(r.item_id, r.text) for r in index.top_k("u", 2)]
[('b', 'Bananas'), ('a', 'Apples')]
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaConsumer, TopicPartition

from schemas.settings import Settings

__all__ = ["Recommendation", "VectorIndex"]


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float
    text: str | None


class VectorIndex:
    """The newest vector per user and per item (at most ``max_entries`` of each, LRU)."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.max_entries = max_entries
        self.users: OrderedDict[str, np.ndarray] = OrderedDict()
        self.user_docs: dict[str, dict[str, Any]] = {}
        self.items: OrderedDict[str, np.ndarray] = OrderedDict()
        self.texts: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def put_user(self, user_id: str, vector: np.ndarray, doc: dict[str, Any] | None = None) -> None:
        with self._lock:
            self.users[user_id] = vector
            self.users.move_to_end(user_id)
            self.user_docs[user_id] = doc or {}
            while len(self.users) > self.max_entries:
                gone, _ = self.users.popitem(last=False)
                self.user_docs.pop(gone, None)

    def put_item(self, item_id: str, vector: np.ndarray, text: str | None = None) -> None:
        with self._lock:
            self.items[item_id] = vector
            self.items.move_to_end(item_id)
            if text is not None or item_id not in self.texts:
                self.texts[item_id] = text
            while len(self.items) > self.max_entries:
                gone, _ = self.items.popitem(last=False)
                self.texts.pop(gone, None)

    def top_k(self, user_id: str, k: int = 10, exclude: Iterable[str] = ()) -> list[Recommendation]:
        """The ``k`` items with the highest dot product with the user's vector."""
        with self._lock:
            user = self.users.get(user_id)
            if user is None or not self.items:
                return []
            ids = [i for i in self.items if len(self.items[i]) == len(user)]
            if not ids:
                return []
            matrix = np.stack([self.items[i] for i in ids])  # [n, dim]
            texts = [self.texts.get(i) for i in ids]
        scores = matrix @ user
        skip = set(exclude)
        order = [j for j in np.argsort(-scores, kind="stable") if ids[j] not in skip][:k]
        return [Recommendation(ids[j], float(scores[j]), texts[j]) for j in order]

    # -- filling it ------------------------------------------------------------------------

    def apply(self, topic_kind: str, value: bytes | None) -> None:
        """One record of a vector topic (user or item)."""
        if value is None:
            return
        doc = json.loads(value)
        vector = np.asarray(doc["vector"], dtype=np.float32)
        if topic_kind == "user":
            self.put_user(doc["user_id"], vector, doc)
        else:
            self.put_item(doc["item_id"], vector, doc.get("text"))

    @classmethod
    def from_topics(cls, settings: Settings, timeout_s: float = 30.0) -> VectorIndex:
        """Read both vector topics from the beginning to their current end."""
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
                        index.apply(kinds[tp.topic], r.value)
        finally:
            consumer.close()
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
                            self.apply(kinds[tp.topic], r.value)
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
        users = learner.user_vectors([user_id])
        for uid, vector in zip(users.ids, users.vectors, strict=True):
            index.put_user(uid, vector)
        items = learner.item_vectors(learner.known_items())
        texts = learner.item_texts(items.ids)
        for iid, vector in zip(items.ids, items.vectors, strict=True):
            index.put_item(iid, vector, texts.get(iid))
        return index
