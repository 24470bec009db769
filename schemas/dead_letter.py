"""Dead letters: records the worker rejected, with everything needed to fix and replay them.

The record value is this model as JSON; the record key is the original key;
the error context is repeated as record headers under ``lorastream.errors.``
(``reason``, ``code``, ``topic``, ``partition``, ``offset``, ``first_seen``),
in the manner of Kafka Connect's ``__connect.errors.*`` headers, so tools can
route on it without parsing the body.

>>> from datetime import datetime, UTC
>>> letter = DeadLetter(
...     code=RejectCode.MALFORMED_JSON, reason="Expecting value: line 1 column 1",
...     original_value=b"{oops", source=SourcePosition(topic="events", partition=0, offset=7),
...     first_seen_at=datetime(2026, 1, 1, tzinfo=UTC))
>>> '"original_value":"e29vcHM="' in letter.model_dump_json()
True
>>> DeadLetter.model_validate_json(letter.model_dump_json()).original_value
b'{oops'
"""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from schemas.vectors import SourcePosition

__all__ = ["HEADER_PREFIX", "DeadLetter", "RejectCode"]

HEADER_PREFIX = "lorastream.errors."


class RejectCode(StrEnum):
    """Why a record was rejected; a small fixed set, so it can be a metric label."""

    OVERSIZE = "oversize"
    NOT_UTF8 = "not_utf8"
    MALFORMED_JSON = "malformed_json"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    SCHEMA_VIOLATION = "schema_violation"
    FUTURE_TIMESTAMP = "future_timestamp"
    KEY_MISMATCH = "key_mismatch"
    LEARNER_REJECTED = "learner_rejected"
    PUBLISH_FAILED = "publish_failed"


def _from_base64(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"not standard base64: {exc}") from exc
    return value


#: Bytes carried in JSON as standard base64 (RFC 4648, section 4, with padding).
Base64Bytes = Annotated[
    bytes,
    BeforeValidator(_from_base64),
    PlainSerializer(
        lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"
    ),
    WithJsonSchema({"type": "string", "contentEncoding": "base64"}),
]


class DeadLetter(BaseModel):
    """A rejected record: its original bytes, why, and where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: RejectCode
    reason: str = Field(max_length=8000, description="what was wrong, for people")
    original_value: Base64Bytes | None = Field(
        description="the record value as received (standard base64)"
    )
    original_key: Base64Bytes | None = Field(
        default=None, description="the record key (standard base64)"
    )
    source: SourcePosition
    first_seen_at: AwareDatetime
    worker: str | None = Field(default=None, description="client id of the worker that saw it")

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka record headers carrying the error context."""
        pairs = {
            "code": self.code.value,
            "reason": self.reason[:1000],
            "topic": self.source.topic,
            "partition": str(self.source.partition),
            "offset": str(self.source.offset),
            "first_seen": self.first_seen_at.isoformat(),
        }
        return [(HEADER_PREFIX + k, v.encode()) for k, v in pairs.items()]
