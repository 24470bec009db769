"""Hostile records: every way a producer can get a record wrong, and the reason it earns.

Each kind builds (key, value, headers) from a valid event and names the dead-letter code
the worker must give it. Headers are garbage on every third record of any kind: the
worker ignores headers, so they must change nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.events import InteractionEvent

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class Kind:
    name: str
    code: str
    build: Callable[[dict[str, Any], int], tuple[bytes | None, bytes | None]]


def _json(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _key(doc: dict[str, Any]) -> bytes:
    return str(doc["user_id"]).encode()


def _with(**changes: Any) -> Callable[[dict[str, Any], int], tuple[bytes | None, bytes]]:
    return lambda doc, _: (_key(doc), _json({**doc, **changes}))


def _without(field: str) -> Callable[[dict[str, Any], int], tuple[bytes | None, bytes]]:
    return lambda doc, _: (_key(doc), _json({k: v for k, v in doc.items() if k != field}))


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def _oversize(doc: dict[str, Any], i: int) -> tuple[bytes, bytes]:
    # a few really big ones (900 KB), the rest just over the 64 KiB limit
    size = 900_000 if i % 2000 == 0 else 70_000
    return _key(doc), _json({**doc, "review_text": "x" * size})


KINDS: list[Kind] = [
    Kind("invalid-json", "malformed_json", lambda d, _: (_key(d), b'{"event_id": "broken')),
    Kind("invalid-utf8", "not_utf8", lambda d, _: (_key(d), b'{"event_id": "\xff\xfe"}')),
    Kind("truncated", "malformed_json", lambda d, _: (_key(d), _json(d)[: len(_json(d)) // 2])),
    Kind("nul-in-id", "schema_violation", _with(user_id="u\x00ser")),
    Kind(
        "raw-control-byte",
        "malformed_json",
        lambda d, _: (_key(d), _json(d).replace(b'"event_id": "', b'"event_id": "\x01', 1)),
    ),
    Kind("control-char-in-text", "schema_violation", _with(review_text="bell \u0007 here")),
    Kind("oversize", "oversize", _oversize),
    Kind("deep-nesting", "malformed_json", lambda d, _: (_key(d), _nested(10_000))),
    Kind("nan", "schema_violation", lambda d, _: (_key(d), _json(d)[:-1] + b', "value": NaN}')),
    Kind(
        "infinity",
        "schema_violation",
        lambda d, _: (_key(d), _json(d)[:-1] + b', "value": Infinity}'),
    ),
    Kind("huge-number", "schema_violation", _with(value=1e308)),
    Kind("huge-int-context", "schema_violation", _with(context={"n": 10**30})),
    Kind("wrong-type", "schema_violation", lambda d, _: (None, _json({**d, "user_id": 123}))),
    Kind("missing-field", "schema_violation", _without("item_id")),
    Kind("extra-field", "schema_violation", _with(surprise=True)),
    Kind("year-one", "schema_violation", _with(timestamp="0001-01-01T00:00:00+23:59")),
    Kind("far-future", "future_timestamp", _with(timestamp="9999-12-31T23:59:59Z")),
    Kind("tombstone", "malformed_json", lambda d, _: (_key(d), None)),
    Kind("empty-value", "malformed_json", lambda d, _: (_key(d), b"")),
    Kind("mismatched-key", "key_mismatch", lambda d, _: (b"someone-else", _json(d))),
    Kind("unknown-type", "unknown_event_type", _with(event_type="teleport")),
    Kind("bad-rating", "schema_violation", _with(event_type="rating", value=9)),
    Kind("not-an-object", "schema_violation", lambda d, _: (_key(d), b"[1, 2, 3]")),
    Kind("deletion-with-item", "schema_violation", _with(event_type="delete_user")),
]

GARBAGE_HEADERS = [("\x00weird", b"\xff" * 300), ("lorastream.errors.code", b"forged")]


def hostile_record(kind: Kind, event: InteractionEvent, i: int) -> Record:
    doc = json.loads(event.model_dump_json(exclude_none=True))
    key, value = kind.build(doc, i)
    return key, value, GARBAGE_HEADERS if i % 3 == 0 else []
