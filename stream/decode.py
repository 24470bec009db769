"""Turning Kafka records into validated events, or into rejections with a precise reason.

>>> from schemas import RejectCode
>>> decode = Decoder(max_bytes=1024)
>>> r = RawRecord(topic="events", partition=0, offset=5, timestamp_ms=0, key=None,
...               value=b'{"event_id": "e", "user_id": "u", "item_id": "i",'
...                     b' "event_type": "teleport", "timestamp": "2026-01-01T00:00:00Z"}')
>>> out = decode(r)
>>> out.code is RejectCode.UNKNOWN_EVENT_TYPE, out.reason.split(":")[0]
(True, 'event_type')
>>> decode(RawRecord("events", 0, 6, 0, None, b"{nope")).code
<RejectCode.MALFORMED_JSON: 'malformed_json'>
>>> ok = decode(RawRecord("events", 0, 7, 0, b"u", r.value.replace(b"teleport", b"click")))
>>> ok.event.user_id, ok.record.offset
('u', 7)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import ValidationError

from schemas.dead_letter import DeadLetter, RejectCode
from schemas.events import STREAM_RECORD, InteractionEvent, UserDeletion
from schemas.vectors import SourcePosition
from stream.privacy import Pseudonymizer

__all__ = ["Accepted", "Decoded", "Decoder", "RawRecord", "Rejection"]

_MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class RawRecord:
    """The parts of a consumed Kafka record the worker uses."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None

    @property
    def size(self) -> int:
        return len(self.value or b"") + len(self.key or b"")

    def position(self) -> SourcePosition:
        return SourcePosition(
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            timestamp_ms=self.timestamp_ms,
        )


@dataclass(frozen=True, slots=True)
class Accepted:
    """A record that decoded into an interaction or a user deletion."""

    record: RawRecord
    event: InteractionEvent | UserDeletion


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that will not be learned, and why."""

    record: RawRecord
    code: RejectCode
    reason: str

    def dead_letter(self, worker: str | None = None) -> DeadLetter:
        return DeadLetter(
            code=self.code,
            reason=self.reason[:8000],
            original_value=self.record.value,
            original_key=self.record.key,
            source=self.record.position(),
            first_seen_at=datetime.now(UTC),
            worker=worker,
        )


Decoded = Accepted | Rejection


class Decoder:
    """Validates records as :data:`schemas.events.StreamRecord`; checks keys; pseudonymises.

    ``key_policy="user_id"``: a key, when present, must be the user id (UTF-8), since
    the key is what keeps a user's events in order on one partition.
    """

    def __init__(
        self,
        max_bytes: int,
        key_policy: Literal["user_id", "any"] = "user_id",
        pseudonymizer: Pseudonymizer | None = None,
    ) -> None:
        self.max_bytes, self.key_policy, self.pseudonymizer = max_bytes, key_policy, pseudonymizer

    def __call__(self, record: RawRecord) -> Decoded:
        value = record.value
        if value is None:
            return Rejection(
                record,
                RejectCode.MALFORMED_JSON,
                "the record has no value (a tombstone); events must be JSON objects",
            )
        if len(value) > self.max_bytes:
            return Rejection(
                record,
                RejectCode.OVERSIZE,
                f"the record value is {len(value)} bytes; the limit is {self.max_bytes}"
                " (batch.max_record_bytes). Send item text once per item, not whole"
                " documents, or raise the limit.",
            )
        try:
            event = _validate(value)
        except ValidationError as exc:
            return _rejection(record, exc)
        key = record.key
        if self.key_policy == "user_id" and key is not None and key != event.user_id.encode():
            return Rejection(
                record,
                RejectCode.KEY_MISMATCH,
                f"the record key {key[:80]!r} is not the event's user id"
                f" {event.user_id[:80]!r}: key events by user id (it keeps a user's events"
                " in order on one partition), or set worker.key_policy=any",
            )
        if self.pseudonymizer is not None:
            event = event.model_copy(update={"user_id": self.pseudonymizer(event.user_id)})
        return Accepted(record, event)


def _validate(value: bytes) -> InteractionEvent | UserDeletion:
    """The record as an interaction or a deletion. Interactions, nearly every record, are
    validated as one model first: the union's callable discriminator costs a quarter of the
    validation. Anything else goes through the union, whose errors name the right model."""
    try:
        return InteractionEvent.model_validate_json(value)
    except ValidationError:
        return STREAM_RECORD.validate_json(value)


def _rejection(record: RawRecord, exc: ValidationError) -> Rejection:
    errors = exc.errors(include_url=False)
    for e in errors:  # the union's tag ("event"/"deletion") is not part of the field's path
        if e["loc"] and e["loc"][0] in ("event", "deletion"):
            e["loc"] = e["loc"][1:]
    kinds = {e["type"] for e in errors}
    if "json_invalid" in kinds or "json_type" in kinds:
        try:
            (record.value or b"").decode("utf-8")
        except UnicodeDecodeError as bad:
            return Rejection(record, RejectCode.NOT_UTF8, f"the record value is not UTF-8: {bad}")
        return Rejection(
            record,
            RejectCode.MALFORMED_JSON,
            f"the record value is not valid JSON: {errors[0]['msg']}",
        )
    reason = "; ".join(_describe(e) for e in errors)[:_MAX_REASON]
    locations = {e["loc"][0] if e["loc"] else "" for e in errors}
    if any(e["type"] == "enum" and e["loc"] == ("event_type",) for e in errors):
        return Rejection(record, RejectCode.UNKNOWN_EVENT_TYPE, reason)
    if locations == {"timestamp"} and "in the future" in reason:
        return Rejection(record, RejectCode.FUTURE_TIMESTAMP, reason)
    return Rejection(record, RejectCode.SCHEMA_VIOLATION, reason)


def _describe(error: object) -> str:
    assert isinstance(error, dict)
    loc = ".".join(str(x) for x in error["loc"]) or "(event)"
    shown = repr(error.get("input"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{loc}: {error['msg']} (got {shown})"
