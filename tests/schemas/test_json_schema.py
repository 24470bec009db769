"""The checked-in JSON Schemas match the models, and validate what the models accept."""

from __future__ import annotations

import json

import jsonschema

from schemas.export import SCHEMA_DIR, WIRE_MODELS, stale_files


def test_checked_in_schemas_match_the_models() -> None:
    assert stale_files() == [], "run `python -m schemas.export` and commit schemas/json"


def test_schemas_are_valid_draft_2020_12() -> None:
    for name in WIRE_MODELS:
        schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_and_model_agree_on_examples() -> None:
    schema = json.loads((SCHEMA_DIR / "interaction_event.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    good = {
        "event_id": "e",
        "user_id": "u",
        "item_id": "i",
        "event_type": "purchase",
        "timestamp": "2026-01-01T00:00:00Z",
        "item": {"title": "T", "categories": ["c"]},
    }
    assert not list(validator.iter_errors(good))
    for bad in (
        {**good, "extra": 1},
        {**good, "event_type": "nope"},
        {k: v for k, v in good.items() if k != "item_id"},
    ):
        assert list(validator.iter_errors(bad))
