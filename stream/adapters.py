"""The learner's LoRA adapter for serving fleets: published per checkpoint, read back whole.

A checkpoint of a learner with an adapter holds it in PEFT's own format
(``learner/adapter``: ``adapter_config.json``, ``adapter_model.safetensors``). With
``topics.adapters`` set, the worker sends those files to that compacted topic after each
checkpoint — chunks keyed ``<file>#<n>``, then an :class:`~schemas.adapters.AdapterManifest`
keyed ``manifest`` — so a serving fleet can hot-swap the newest adapter
(``PeftModel.load_adapter``, vLLM's LoRA loading) from :func:`read_adapter`'s directory.
Only checkpointed adapters are published: what serves is what a restart resumes from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from schemas.adapters import (
    ADAPTER_CHUNK_BYTES,
    MANIFEST_KEY,
    AdapterFile,
    AdapterManifest,
    chunk_key,
)
from schemas.settings import Settings
from stream.checkpoint import Checkpoint
from stream.publisher import Publisher

__all__ = ["AdapterIncomplete", "adapter_records", "publish_adapter", "read_adapter"]

log = logging.getLogger(__name__)


class AdapterIncomplete(RuntimeError):
    """The topic holds no manifest, or chunks that do not match the newest one."""


def adapter_records(
    directory: Path, model_version: str, checkpoint: str
) -> list[tuple[str, bytes]]:
    """(key, value) of every chunk of every file in ``directory``, the manifest last."""

    records: list[tuple[str, bytes]] = []
    files: dict[str, AdapterFile] = {}
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        data = path.read_bytes()
        chunks = [
            data[k : k + ADAPTER_CHUNK_BYTES] for k in range(0, len(data), ADAPTER_CHUNK_BYTES)
        ]
        records += [(chunk_key(path.name, n), chunk) for n, chunk in enumerate(chunks)]
        sha = hashlib.sha256(data).hexdigest()
        files[path.name] = AdapterFile(size=len(data), chunks=len(chunks), sha256=sha)
    config = json.loads((directory / "adapter_config.json").read_text())
    manifest = AdapterManifest(
        model_version=model_version,
        model=str(config.get("base_model_name_or_path") or ""),
        checkpoint=checkpoint,
        produced_at=datetime.now(UTC),
        files=files,
    )
    return [*records, (MANIFEST_KEY, manifest.model_dump_json().encode())]


def publish_adapter(
    publisher: Publisher, checkpoint: Checkpoint, model_version: str, timeout_s: float = 30.0
) -> bool:
    """Send the checkpoint's adapter, if it has one, and wait for the broker. Optional
    output: a failure is logged and the next checkpoint sends a newer adapter."""
    directory = checkpoint.learner_dir / "adapter"
    if not directory.is_dir():
        return False
    what = f"the adapter of {checkpoint.path.name}"
    try:
        records = adapter_records(directory, model_version, checkpoint.path.name)
    except OSError as exc:
        log.warning("%s not published: %s", what, exc)
        return False
    mark = publisher.mark()
    publisher.adapter(records)
    return publisher.deliver_optional(mark, timeout_s, what)


def _read_to_end(settings: Settings, topic: str, timeout_s: float) -> dict[str, bytes]:
    """The newest value of every key on ``topic``."""
    consumer = KafkaConsumer(**settings.kafka.client_kwargs(), enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            raise AdapterIncomplete(f"topic {topic!r} does not exist")
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        latest: dict[str, bytes] = {}
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic!r} to its end in {timeout_s:.0f}s")
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.key is not None and r.value is not None:
                        latest[r.key.decode()] = r.value
        return latest
    finally:
        consumer.close()


def read_adapter(
    settings: Settings, out: Path, timeout_s: float = 60.0, attempts: int = 5
) -> AdapterManifest:
    """Write the newest complete adapter on ``topics.adapters`` to ``out``; its manifest."""
    topic = settings.topics.adapters
    if topic is None:
        raise AdapterIncomplete("topics.adapters is not set: no adapter is published")
    problem = ""
    for attempt in range(attempts):
        latest = _read_to_end(settings, topic, timeout_s)
        if MANIFEST_KEY not in latest:
            raise AdapterIncomplete(f"no adapter manifest on {topic!r} yet")
        manifest = AdapterManifest.model_validate_json(latest[MANIFEST_KEY])
        files, problem = _assemble(manifest, latest)
        if not problem:
            out.mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                (out / name).write_bytes(data)
            return manifest
        time.sleep(min(5.0, 0.5 * 2**attempt))  # a newer version is being written
    raise AdapterIncomplete(f"the adapter on {topic!r} stayed incomplete: {problem}")


def _assemble(manifest: AdapterManifest, latest: dict[str, bytes]) -> tuple[dict[str, bytes], str]:
    files: dict[str, bytes] = {}
    for name, entry in manifest.files.items():
        keys = [chunk_key(name, n) for n in range(entry.chunks)]
        if any(k not in latest for k in keys):
            return {}, f"{name}: chunks missing"
        data = b"".join(latest[k] for k in keys)
        if len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            return {}, f"{name}: its chunks are not the manifest's version"
        files[name] = data
    return files, ""
