"""Validation rules of the wire models."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import DeadLetter, EventType, InteractionEvent, RejectCode, SourcePosition, UserVector

GOOD: dict[str, Any] = {
    "event_id": "e1",
    "user_id": "u1",
    "item_id": "i1",
    "event_type": "click",
    "timestamp": "2026-03-01T12:00:00+01:00",
}


def parse(**changes: Any) -> InteractionEvent:
    return InteractionEvent.model_validate_json(json.dumps({**GOOD, **changes}))


def test_a_minimal_event_parses() -> None:
    event = parse()
    assert event.event_type is EventType.CLICK
    assert event.timestamp.utcoffset() == timedelta(hours=1)
    assert event.item_text == "i1"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"surprise": 1}, "Extra inputs are not permitted"),
        ({"event_type": "teleport"}, "Input should be"),
        ({"event_type": "rating", "value": 6}, "between 1 and 5"),
        ({"event_type": "rating"}, "needs a value"),
        ({"event_type": "review"}, "needs review_text"),
        ({"value": -3}, "must not be negative"),
        ({"timestamp": "2026-03-01T12:00:00"}, "timezone"),
        ({"user_id": ""}, "at least 1 character"),
        ({"user_id": "x" * 300}, "at most 256"),
        ({"review_text": "x" * 5000}, "at most 4000"),
        ({"item": {"title": "t", "colour": "red"}}, "Extra inputs"),
        ({"context": {f"k{i}": i for i in range(20)}}, "at most 16"),
        ({"user_id": "tab\there"}, "should match pattern"),
    ],
)
def test_invalid_events_are_rejected_with_a_precise_message(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        parse(**changes)


def test_far_future_timestamps_are_rejected_but_small_clock_skew_is_not() -> None:
    soon = datetime.now(UTC) + timedelta(minutes=2)
    assert parse(timestamp=soon.isoformat()).timestamp == soon
    with pytest.raises(ValidationError, match="in the future"):
        parse(timestamp=(datetime.now(UTC) + timedelta(days=1)).isoformat())


def test_nan_and_infinity_are_rejected() -> None:
    raw = json.dumps(GOOD)[:-1] + ', "value": NaN}'
    with pytest.raises(ValidationError):
        InteractionEvent.model_validate_json(raw)
    with pytest.raises(ValidationError):
        InteractionEvent.model_validate({**GOOD, "value": math.inf})


@given(st.floats(min_value=1.0, max_value=5.0))
def test_every_rating_in_range_is_accepted(value: float) -> None:
    assert parse(event_type="rating", value=value).value == value


@given(st.floats(allow_nan=False).filter(lambda v: not 1.0 <= v <= 5.0))
def test_every_rating_out_of_range_is_rejected(value: float) -> None:
    with pytest.raises(ValidationError):
        InteractionEvent.model_validate({**GOOD, "event_type": "rating", "value": value})


def test_user_vector_checks_its_dimension_and_values() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValidationError, match="dim is 3"):
        UserVector(user_id="u", vector=[1.0, 2.0], dim=3, model_version="m", produced_at=now)
    with pytest.raises(ValidationError):
        UserVector(user_id="u", vector=[1.0, math.nan], model_version="m", produced_at=now)


def test_dead_letter_round_trips_arbitrary_bytes_as_standard_base64() -> None:
    raw = bytes(range(256))
    letter = DeadLetter(
        code=RejectCode.NOT_UTF8,
        reason="r",
        original_value=raw,
        original_key=b"k",
        source=SourcePosition(topic="t", partition=1, offset=2),
        first_seen_at=datetime.now(UTC),
    )
    doc = json.loads(letter.model_dump_json())
    assert "-" not in doc["original_value"]
    assert "_" not in doc["original_value"]
    assert DeadLetter.model_validate_json(letter.model_dump_json()).original_value == raw
