"""The decoder: interactions take the one-model fast path, everything else the union, and
a rejection's reason names the model the record claimed to be."""

from __future__ import annotations

import json

import pytest

from schemas import RejectCode
from schemas.events import InteractionEvent, UserDeletion
from stream.decode import Accepted, Decoder, RawRecord, Rejection

_TS = "2026-01-01T00:00:00Z"


def _decode(doc: dict[str, object], key: bytes | None = None) -> Accepted | Rejection:
    return Decoder(max_bytes=10_000)(RawRecord("events", 0, 3, 0, key, json.dumps(doc).encode()))


def test_interactions_and_deletions_decode_as_their_own_models() -> None:
    click = {"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "click"}
    deletion = {"event_id": "d", "user_id": "u", "event_type": "delete_user"}
    got = [_decode({**doc, "timestamp": _TS}, key=b"u") for doc in (click, deletion)]
    assert all(isinstance(g, Accepted) for g in got)
    assert [type(g.event) for g in got if isinstance(g, Accepted)] == [
        InteractionEvent,
        UserDeletion,
    ]


@pytest.mark.parametrize(
    ("doc", "code", "names"),
    [
        # a deletion with an interaction's field: the deletion model's error, not the event's
        (
            {"event_id": "d", "user_id": "u", "event_type": "delete_user", "item_id": "i"},
            RejectCode.SCHEMA_VIOLATION,
            "item_id: Extra inputs are not permitted",
        ),
        (
            {"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "rating"},
            RejectCode.SCHEMA_VIOLATION,
            "a rating event needs a value",
        ),
        (
            {"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "warp"},
            RejectCode.UNKNOWN_EVENT_TYPE,
            "event_type",
        ),
    ],
)
def test_a_rejection_names_the_field_of_the_model_the_record_claims(
    doc: dict[str, object], code: RejectCode, names: str
) -> None:
    got = _decode({**doc, "timestamp": _TS})
    assert isinstance(got, Rejection)
    assert got.code is code
    assert names in got.reason
