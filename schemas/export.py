"""Export the wire models' JSON Schemas to ``schemas/json/``.

``python -m schemas.export`` writes them; ``python -m schemas.export --check``
exits 1 when a checked-in file differs from its model (the tests run it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.adapters import AdapterManifest
from schemas.dead_letter import DeadLetter
from schemas.events import InteractionEvent, UserDeletion
from schemas.vectors import ItemVector, UserVector, VectorVersion

__all__ = ["SCHEMA_DIR", "WIRE_MODELS", "render", "stale_files", "write"]

SCHEMA_DIR = Path(__file__).resolve().parent / "json"
WIRE_MODELS: dict[str, type[BaseModel]] = {
    "interaction_event": InteractionEvent,
    "user_deletion": UserDeletion,
    "user_vector": UserVector,
    "item_vector": ItemVector,
    "dead_letter": DeadLetter,
    "adapter_manifest": AdapterManifest,
    "vector_version": VectorVersion,
}


def render(model: type[BaseModel]) -> str:
    """The model's JSON Schema (validation mode), as stable, pretty JSON."""
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://lorastream.dev/schemas/{model.__name__}.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every wire model's schema; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, model in WIRE_MODELS.items():
        path = directory / f"{name}.schema.json"
        path.write_text(render(model), encoding="utf-8")
        paths.append(path)
    return paths


def stale_files(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Checked-in schema files that are missing or differ from their model."""
    stale = []
    for name, model in WIRE_MODELS.items():
        path = directory / f"{name}.schema.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != render(model):
            stale.append(path)
    return stale


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = stale_files()
        for path in stale:
            print(f"{path} is out of date: run `python -m schemas.export`", file=sys.stderr)
        return 1 if stale else 0
    for path in write():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
