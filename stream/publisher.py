"""Publishing the worker's output (user vectors, item vectors, dead letters) and
waiting until the broker has acknowledged every record.

Vectors are keyed by user (item) id on compacted topics; dead letters keep the
original record key. Nothing counts as published until :meth:`Publisher.deliver`
returns: it flushes, checks every send, and re-sends failures until they are
acknowledged or its deadline passes (then it raises; offsets stay uncommitted).

Sends are grouped in *epochs* (a worker closes one per batch, :meth:`Publisher.close_epoch`)
so that one batch's output can be confirmed while the next batch's is still in flight:
``deliver(through=n)`` waits for epochs up to ``n`` only, without flushing later ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from kafka import KafkaProducer
from kafka.errors import AuthorizationError, KafkaError, KafkaTimeoutError

from learners.base import VectorBatch
from schemas.settings import TopicSettings
from schemas.vector_wire import VectorEncoding, encode_frame, encode_json
from schemas.vectors import VectorVersion
from stream.decode import Rejection

__all__ = ["DeliveryError", "Publisher", "item_vector_values", "user_vector_values"]

log = logging.getLogger(__name__)

WAIT_SLICE_S = 2.0  # how often a late delivery tells its owner it is still waiting


class DeliveryError(RuntimeError):
    """Records could not be acknowledged by the broker in time."""


@dataclass
class _Send:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    future: Any = None
    epoch: int = -1  # set when first sent (-1: not yet); a re-send keeps it
    seq: int = 0  # order of first sending: what marks (:meth:`Publisher.mark`) compare


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat()
    except (ValueError, OverflowError, OSError):  # validation keeps these out; never crash here
        return None


def user_vector_values(
    batch: VectorBatch, produced_at: str, encoding: VectorEncoding = VectorEncoding.JSON
) -> list[bytes]:
    """The :class:`schemas.UserVector` record of every user in ``batch``, in ``encoding``."""
    docs = []
    for k, user_id in enumerate(batch.ids):
        marker = batch.markers[k] if batch.markers else None
        doc: dict[str, Any] = {
            "user_id": user_id,
            "dim": batch.vectors.shape[1],
            "model_version": batch.version,
            "produced_at": produced_at,
            "events_seen": batch.events_seen[k] if batch.events_seen else 0,
        }
        if batch.consumed:
            doc["consumed"] = batch.consumed[k]
        if marker is not None:
            doc["last_event_id"] = marker.event_id
            doc["last_event_at"] = _iso(marker.timestamp)
            if marker.topic is not None:
                doc["last_position"] = {
                    "topic": marker.topic,
                    "partition": marker.partition,
                    "offset": marker.offset,
                }
        docs.append(doc)
    return _encode(docs, batch, encoding)


def item_vector_values(
    batch: VectorBatch,
    produced_at: str,
    texts: dict[str, str],
    encoding: VectorEncoding = VectorEncoding.JSON,
) -> list[bytes]:
    """The :class:`schemas.ItemVector` record of every item in ``batch``, in ``encoding``."""
    docs = [
        {
            "item_id": item_id,
            "dim": batch.vectors.shape[1],
            "model_version": batch.version,
            "produced_at": produced_at,
            "text": texts.get(item_id),
        }
        for item_id in batch.ids
    ]
    return _encode(docs, batch, encoding)


def _encode(
    docs: list[dict[str, Any]], batch: VectorBatch, encoding: VectorEncoding
) -> list[bytes]:
    """The documents with their numbers: as JSON lists, or packed in a binary frame."""
    if not (
        np.isfinite(batch.vectors).all() and all(np.isfinite(v).all() for _, v in batch.sparse)
    ):
        raise ValueError("the learner produced non-finite vectors")
    dtype = np.dtype(np.float32) if encoding is VectorEncoding.JSON else encoding.dtype
    dense = _saturated(batch.vectors, dtype)  # [n, dim], converted once
    rows: list[tuple[np.ndarray, np.ndarray] | None] = [
        (i, _saturated(v, dtype)) for i, v in batch.sparse
    ] or [None] * len(docs)
    if encoding is VectorEncoding.JSON:
        return [encode_json(doc, dense[k], rows[k]) for k, doc in enumerate(docs)]
    return [encode_frame(doc, dense[k], rows[k], encoding) for k, doc in enumerate(docs)]


def _saturated(x: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """``x`` as ``dtype``, entries past its range held at its largest finite value (float16
    ends at ±65504), so the wire never carries ``inf`` for a finite number."""
    big = float(np.finfo(dtype).max)
    return np.ascontiguousarray(np.clip(x, -big, big), dtype=dtype)


class Publisher:
    """Sends output records and confirms their delivery."""

    def __init__(
        self,
        producer: KafkaProducer,
        topics: TopicSettings,
        worker_id: str | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._worker_id = worker_id
        self._on_wait = on_wait  # called every WAIT_SLICE_S while acknowledgements are late
        self._pending: list[_Send] = []
        self._epoch = 0  # the epoch new sends belong to
        self._seq = 0  # sends so far
        self._acked: dict[int, float] = {}  # epoch -> wall time of its latest acknowledgement
        # per epoch: sends (counted on this thread) and settled ones (on the I/O thread), so
        # "is batch n settled?" is a comparison, not a pass over every send
        self._sent: dict[int, int] = {}
        self._settled: dict[int, int] = {}
        # topics where a newer record of a key replaces an older one
        self._compacted = {
            t
            for t in (topics.user_vectors, topics.item_vectors, topics.vector_versions)
            if t is not None
        }

    def _send(self, send: _Send) -> None:
        send.future = self._producer.send(
            send.topic, value=send.value, key=send.key, headers=send.headers or None
        )
        if send.epoch < 0:
            send.epoch, send.seq = self._epoch, self._seq
            self._seq += 1
        self._sent[send.epoch] = self._sent.get(send.epoch, 0) + 1
        send.future.add_both(self._on_settled, send.epoch)
        self._pending.append(send)

    def _not_superseded(self, failed: list[_Send], others: list[_Send]) -> list[_Send]:
        """The failed sends to send again: not those of a compacted topic whose key a later
        batch already sent anew (sending the older value again would put it last; the newer
        one, if it fails, is re-sent when its own batch is delivered). Dead letters: all."""
        newest: dict[tuple[str, bytes | None], int] = {}
        for o in others:
            if o.topic in self._compacted:
                key = (o.topic, o.key)
                newest[key] = max(newest.get(key, o.epoch), o.epoch)
        return [s for s in failed if newest.get((s.topic, s.key), s.epoch) <= s.epoch]

    def _on_settled(self, epoch: int, outcome: Any) -> None:
        # on the producer's I/O thread (the only writer of these two): a record's outcome
        self._settled[epoch] = self._settled.get(epoch, 0) + 1
        if not isinstance(outcome, BaseException):
            self._acked[epoch] = time.time()

    def close_epoch(self) -> int:
        """End the current epoch (its sends are what :meth:`deliver` ``through`` it waits
        for); later sends belong to the next. Returns the closed epoch."""
        self._epoch += 1
        return self._epoch - 1

    def acked_at(self, epoch: int) -> float:
        """Wall time the broker acknowledged the last record of ``epoch`` (now, if it had
        none), once :meth:`deliver` through it returned."""
        at = self._acked.pop(epoch, None)
        for old in [e for e in list(self._acked) if e < epoch]:  # (the I/O thread adds keys)
            self._acked.pop(old, None)
        for old in [e for e in self._sent if e <= epoch]:  # settled: forget the counts
            del self._sent[old]
            self._settled.pop(old, None)
        return at if at is not None else time.time()

    def user_vectors(self, batch: VectorBatch) -> int:
        """Send every user's vector; all payloads are built before the first is sent."""
        produced_at = datetime.now(UTC).isoformat()
        values = user_vector_values(batch, produced_at, self._topics.vector_encoding)
        for user_id, value in zip(batch.ids, values, strict=True):
            self._send(_Send(self._topics.user_vectors, user_id.encode(), value, []))
        return len(batch)

    def item_vectors(self, batch: VectorBatch, texts: dict[str, str] | None = None) -> int:
        """Send every item's vector; all payloads are built before the first is sent."""
        produced_at = datetime.now(UTC).isoformat()
        encoding = self._topics.vector_encoding
        values = item_vector_values(batch, produced_at, texts or {}, encoding)
        for item_id, value in zip(batch.ids, values, strict=True):
            self._send(_Send(self._topics.item_vectors, item_id.encode(), value, []))
        return len(batch)

    def adapter(self, records: list[tuple[str, bytes]]) -> int:
        """Send an adapter's chunks and manifest (``stream/adapters.py``), in order."""
        assert self._topics.adapters is not None
        for key, value in records:
            self._send(_Send(self._topics.adapters, key.encode(), value, []))
        return len(records)

    def vector_version(self, version: VectorVersion) -> None:
        """Announce that every published vector is of ``version.model_version``."""
        assert self._topics.vector_versions is not None
        value = version.model_dump_json().encode()
        self._send(_Send(self._topics.vector_versions, b"current", value, []))

    def tombstones(self, user_ids: list[str]) -> int:
        """A null value under each user's key: compaction then drops the user's vector."""
        for user_id in user_ids:
            self._send(_Send(self._topics.user_vectors, user_id.encode(), None, []))
        return len(user_ids)

    @property
    def pending(self) -> int:
        """Records sent and not yet acknowledged."""
        return len(self._pending)

    def mark(self) -> int:
        """A mark for :meth:`abandon`: what is sent from now on comes after it."""
        return self._seq

    def abandon(self, since: int = 0) -> None:
        """Stop tracking what was first sent after mark ``since`` (a failed attempt's output,
        which the broker may still store: a later vector of the same key supersedes it)."""
        self._pending = [s for s in self._pending if s.seq < since]

    def dead_letter(self, rejection: Rejection) -> None:
        letter = rejection.dead_letter(self._worker_id)
        self._send(
            _Send(
                self._topics.dead_letters,
                rejection.record.key,
                letter.model_dump_json().encode(),
                letter.headers(),
            )
        )

    def deliver(self, timeout_s: float = 120.0, through: int | None = None) -> int:
        """Wait until every record (of epochs up to ``through``, when given) is acknowledged,
        re-sending those the broker refused; :class:`DeliveryError` once ``timeout_s`` has
        passed with records still unacknowledged (in flight ones are waited for, never sent
        twice). Returns the re-send rounds."""
        deadline = time.monotonic() + timeout_s
        retries = 0
        while due := [s for s in self._pending if through is None or s.epoch <= through]:
            flushed = self._flush(deadline) if through is None else self._await(due, deadline)
            failed = [s for s in due if s.future.is_done and s.future.failed()]
            settled = {id(s) for s in due if s.future.is_done}  # later epochs stay tracked
            self._pending = [s for s in self._pending if id(s) not in settled]
            refused = [s for s in failed if isinstance(s.future.exception, AuthorizationError)]
            if refused:  # re-sending cannot help: the broker's ACLs say no
                raise refused[0].future.exception
            if failed:
                retries += 1
                errors = sorted({type(s.future.exception).__name__ for s in failed})
                log.warning("re-sending %d refused records (%s)", len(failed), ", ".join(errors))
                for s in self._not_superseded(failed, due + self._pending):
                    self._send(s)
            left = deadline - time.monotonic()
            late = [s for s in self._pending if through is None or s.epoch <= through]
            if late and left <= 0:
                raise DeliveryError(
                    f"{len(late)} records were not acknowledged within {timeout_s:.0f}s"
                    " (is the broker reachable? are the output topics writable?)"
                )
            if late and (failed or not flushed):  # back off before trying again
                time.sleep(max(0.0, min(1.0, 0.1 * max(retries, 1), left)))
        return retries

    def deliver_optional(self, mark: int, timeout_s: float, what: str) -> bool:
        """Deliver output nothing else depends on (adapters, version announcements): on
        failure, drop what was sent since ``mark``, log, and go on; False."""
        try:
            self.deliver(timeout_s)
        except (DeliveryError, KafkaError) as exc:
            self.abandon(mark)
            log.warning("%s not published: %s", what, exc)
            return False
        return True

    def all_acknowledged(self, through: int) -> bool:
        """Whether every record of epochs up to ``through`` is settled (without waiting)."""
        settled = self._settled
        return all(settled.get(e, 0) >= n for e, n in self._sent.items() if e <= through)

    def _await(self, sends: list[_Send], deadline: float) -> bool:
        """Wait for these sends only (later ones stay in the producer's hands, unflushed)
        until each completed (True) or ``deadline``, telling the owner while it is late."""
        for s in sends:
            while not s.future.is_done:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                try:
                    s.future.get(timeout=min(WAIT_SLICE_S, left))
                except KafkaTimeoutError:
                    if self._on_wait is not None and not s.future.is_done:
                        self._on_wait()
                except Exception:  # a failed send: the caller re-sends it
                    break
        return True

    def _flush(self, deadline: float) -> bool:
        """Flush until every send completed (True) or ``deadline``, in slices: between them
        the owner hears that the broker is late (the worker reports readiness meanwhile)."""
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._producer.flush(timeout=min(WAIT_SLICE_S, left))
                return True
            except KafkaTimeoutError:
                if self._on_wait is not None:
                    self._on_wait()
            except KafkaError as exc:
                log.warning("flush did not complete: %s", exc)
                return False
        return False
