"""Interaction events: what users did, as producers put it on the wire.

One JSON object per Kafka record, UTF-8, validated strictly: unknown fields,
oversize strings, NaN/inf, impossible ratings and timestamps far in the future
are rejected with a message that says which field and why.

>>> event = InteractionEvent.model_validate_json(
...     '{"event_id": "e-1", "user_id": "u-7", "item_id": "i-3", "event_type": "rating",'
...     ' "value": 4.5, "timestamp": "2026-01-02T03:04:05Z",'
...     ' "item": {"title": "Alien (1979)", "categories": ["Horror", "Sci-Fi"]}}'
... )
>>> event.event_type, event.value, event.item.text()
(<EventType.RATING: 'rating'>, 4.5, 'Alien (1979) | Horror, Sci-Fi')
>>> InteractionEvent.model_validate_json(
...     '{"event_id": "e-2", "user_id": "u", "item_id": "i", "event_type": "rating",'
...     ' "value": 9, "timestamp": "2026-01-02T03:04:05Z"}'
... )  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for InteractionEvent
  Value error, a rating must be between 1 and 5, got 9.0 ...
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "EARLIEST_TIMESTAMP",
    "FUTURE_TOLERANCE",
    "MAX_CONTEXT_ENTRIES",
    "MAX_VALUE",
    "STREAM_RECORD",
    "EventType",
    "InteractionEvent",
    "ItemText",
    "StreamRecord",
    "UserDeletion",
]

#: How far past the consumer's clock an event's timestamp may lie. Clocks drift;
#: a day ahead is a bug in the producer, not drift.
FUTURE_TOLERANCE: Final = timedelta(minutes=10)
#: Nothing a user did online predates the Unix epoch; older timestamps are a
#: producer's bug (a zero date, a missing field filled with year 1).
EARLIEST_TIMESTAMP: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: The largest magnitude of ``value`` (ratings, dwell seconds, amounts): far above any
#: real one, far below where float arithmetic in a learner overflows.
MAX_VALUE: Final = 1e9
MAX_CONTEXT_ENTRIES: Final = 16
_MAX_CONTEXT_INT: Final = 2**53  # what every JSON reader holds exactly

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
]
# Text may hold tabs and line breaks, never other control characters: they break
# tokenizers, terminals and log lines downstream.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_controls(text: str) -> str:
    found = _CONTROL.search(text)
    if found is not None:
        raise ValueError(
            f"contains the control character U+{ord(found.group()):04X} at position"
            f" {found.start()}; text may hold tabs and line breaks, no other control characters"
        )
    return text


_NO_CONTROLS = AfterValidator(_no_controls)
_TEXT_SCHEMA = Field(
    json_schema_extra={"pattern": "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f]*$"}
)

ShortText = Annotated[str, StringConstraints(max_length=300), _NO_CONTROLS, _TEXT_SCHEMA]
LongText = Annotated[str, StringConstraints(max_length=4000), _NO_CONTROLS, _TEXT_SCHEMA]
Description = Annotated[str, StringConstraints(max_length=2000), _NO_CONTROLS, _TEXT_SCHEMA]
Category = Annotated[
    str, StringConstraints(min_length=1, max_length=64), _NO_CONTROLS, _TEXT_SCHEMA
]
ContextKey = Annotated[
    str, StringConstraints(min_length=1, max_length=64), _NO_CONTROLS, _TEXT_SCHEMA
]
ContextValue = (
    Annotated[str, StringConstraints(max_length=256), _NO_CONTROLS, _TEXT_SCHEMA]
    | Annotated[int, Field(ge=-_MAX_CONTEXT_INT, le=_MAX_CONTEXT_INT)]
    | Annotated[float, Field(ge=-MAX_VALUE, le=MAX_VALUE)]
    | bool
)

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_strip_whitespace=False)


class EventType(StrEnum):
    """What the user did. Order of strength for implicit feedback:
    purchase > add_to_cart > click > view > impression."""

    IMPRESSION = "impression"
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RATING = "rating"
    REVIEW = "review"
    SKIP = "skip"
    DISLIKE = "dislike"
    #: Forget the user (see :class:`UserDeletion`); never learned.
    DELETE_USER = "delete_user"

    @property
    def is_negative(self) -> bool:
        """Explicit negative feedback (a skip or a dislike)."""
        return self in (EventType.SKIP, EventType.DISLIKE)


class ItemText(BaseModel):
    """The text a producer knows about the item: what the item tower reads."""

    model_config = _STRICT

    title: ShortText | None = None
    description: Description | None = None
    categories: list[Category] = Field(default_factory=list, max_length=16)

    def text(self) -> str:
        """One line: title | categories | description (the parts that are present)."""
        parts = [self.title or "", ", ".join(self.categories), self.description or ""]
        return " | ".join(p for p in parts if p)


class InteractionEvent(BaseModel):
    """One thing one user did to one item, at one time.

    ``event_id`` is unique per event; the worker drops an id it has already
    learned (within a bounded window), so producers may retry safely.
    ``value`` is the rating (1-5) for ``rating`` events, dwell seconds for
    ``view``, and optional otherwise. ``review`` events carry ``review_text``;
    a ``rating`` may carry one too.
    """

    model_config = _STRICT

    event_id: Identifier
    user_id: Identifier
    item_id: Identifier
    event_type: EventType
    timestamp: AwareDatetime
    value: float | None = None
    review_text: LongText | None = None
    item: ItemText | None = None
    context: dict[ContextKey, ContextValue] = Field(
        default_factory=dict, max_length=MAX_CONTEXT_ENTRIES
    )

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        # allow_inf_nan covers JSON's NaN/Infinity literals; this covers huge numbers.
        if value is not None and not (math.isfinite(value) and abs(value) <= MAX_VALUE):
            raise ValueError(f"value must be a finite number of magnitude at most {MAX_VALUE:g}")
        return value

    @field_validator("timestamp")
    @classmethod
    def _sane_time(cls, timestamp: datetime, info: ValidationInfo) -> datetime:
        return check_timestamp(timestamp, info)

    @model_validator(mode="after")
    def _value_fits_type(self) -> InteractionEvent:
        kind, value = self.event_type, self.value
        if kind is EventType.DELETE_USER:
            raise ValueError(
                "a delete_user record has only event_id, user_id, event_type and timestamp"
                " (see UserDeletion)"
            )
        if kind is EventType.RATING:
            if value is None:
                raise ValueError("a rating event needs a value between 1 and 5")
            if not 1.0 <= value <= 5.0:
                raise ValueError(f"a rating must be between 1 and 5, got {value}")
        elif value is not None and value < 0:
            raise ValueError(f"value must not be negative for {kind.value} events, got {value}")
        if kind is EventType.REVIEW and not self.review_text:
            raise ValueError("a review event needs review_text")
        return self

    @property
    def item_text(self) -> str:
        """The item's text, or its id when the producer sent none."""
        return self.item.text() if self.item is not None else self.item_id


def check_timestamp(timestamp: datetime, info: ValidationInfo | None = None) -> datetime:
    """``timestamp`` if it lies between the Unix epoch and a little past now; else ValueError.
    Validated with the context ``{"accepted": True}`` (a record another process already
    accepted, by its own clock) only the lower bound is checked.

    >>> soon = datetime.now(UTC) + 2 * FUTURE_TOLERANCE
    >>> event = {"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "click"}
    >>> event["timestamp"] = soon
    >>> _ = InteractionEvent.model_validate(event, context={"accepted": True})
    >>> InteractionEvent.model_validate(event)
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for InteractionEvent
    ...
    """
    accepted = info is not None and bool((info.context or {}).get("accepted"))
    latest = datetime.now(UTC) + FUTURE_TOLERANCE
    if timestamp > latest and not accepted:
        raise ValueError(
            f"timestamp {timestamp.isoformat()} is more than {FUTURE_TOLERANCE} in the future;"
            " check the producer's clock and time zone"
        )
    if timestamp < EARLIEST_TIMESTAMP:
        raise ValueError(
            f"timestamp {timestamp.isoformat()} is before {EARLIEST_TIMESTAMP.date()}; a zero or"
            " default date is a producer bug: send when the user acted"
        )
    return timestamp


class UserDeletion(BaseModel):
    """Forget a user: the worker drops them from every state it holds (history, replay,
    user tables) and publishes a tombstone (a null value) under their key on the
    user-vectors topic. Sent to the events topic, keyed by the user id like their events,
    so it lands after them on the same partition.

    >>> d = UserDeletion.model_validate_json(
    ...     '{"event_id": "d-1", "user_id": "u-7", "event_type": "delete_user",'
    ...     ' "timestamp": "2026-01-02T03:04:05Z"}')
    >>> d.user_id, d.event_type.value
    ('u-7', 'delete_user')
    """

    model_config = _STRICT

    event_id: Identifier
    user_id: Identifier
    event_type: Literal[EventType.DELETE_USER]
    timestamp: AwareDatetime

    @field_validator("timestamp")
    @classmethod
    def _sane_time(cls, timestamp: datetime, info: ValidationInfo) -> datetime:
        return check_timestamp(timestamp, info)


def _record_kind(value: Any) -> str:
    kind = value.get("event_type") if isinstance(value, dict) else getattr(value, "event_type", "")
    return "deletion" if kind == EventType.DELETE_USER.value else "event"


#: One record of the events topic: an interaction, or a user deletion.
StreamRecord = Annotated[
    Annotated[InteractionEvent, Tag("event")] | Annotated[UserDeletion, Tag("deletion")],
    Discriminator(_record_kind),
]
STREAM_RECORD: TypeAdapter[InteractionEvent | UserDeletion] = TypeAdapter(StreamRecord)
