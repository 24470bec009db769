"""The adapter manifest: what a serving fleet reads to load the newest LoRA adapter.

The worker publishes each checkpoint's adapter (PEFT's own files) to the compacted
adapters topic in chunks keyed ``<file>#<n>``, then this manifest under the key
``manifest``. A reader takes the newest manifest, gathers each file's chunks and checks
its SHA-256; a mismatch means a newer version's chunks arrived before its manifest, and
reading again gets a complete one.

>>> m = AdapterManifest(model_version="llm:all-MiniLM-L6-v2:a40", model="all-MiniLM-L6-v2",
...     checkpoint="ckpt-000000000003", produced_at="2026-11-25T12:00:00Z",
...     files={"adapter_model.safetensors": AdapterFile(size=5, chunks=1, sha256="0" * 64)})
>>> m.files["adapter_model.safetensors"].chunks
1
"""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = ["ADAPTER_CHUNK_BYTES", "MANIFEST_KEY", "AdapterFile", "AdapterManifest", "chunk_key"]

_WIRE = ConfigDict(extra="forbid", frozen=True)

MANIFEST_KEY = "manifest"
ADAPTER_CHUNK_BYTES = 512 * 1024  # below the broker's default 1 MiB record limit


def chunk_key(file: str, index: int) -> str:
    """The record key of one chunk of one adapter file.

    >>> chunk_key("adapter_model.safetensors", 2)
    'adapter_model.safetensors#2'
    """
    return f"{file}#{index}"


class AdapterFile(BaseModel):
    """One file of the adapter directory."""

    model_config = _WIRE

    size: int = Field(ge=0, description="bytes")
    chunks: int = Field(ge=0, description="records keyed <file>#0 … <file>#<chunks-1>")
    sha256: str = Field(pattern="^[0-9a-f]{64}$", description="of the whole file")


class AdapterManifest(BaseModel):
    """The newest published adapter: its version and files (PEFT format)."""

    model_config = _WIRE

    model_version: str = Field(min_length=1, description="as stamped on the vectors it made")
    model: str = Field(description="the base model the adapter applies to")
    checkpoint: str = Field(description="the worker checkpoint it was taken from")
    produced_at: AwareDatetime
    files: dict[str, AdapterFile] = Field(min_length=1)
