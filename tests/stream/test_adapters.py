"""Adapters for serving: each checkpoint's LoRA adapter on a compacted topic, read back whole."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers import (
    WorkerThread,
    all_committed,
    cli,
    create_topic,
    env_for,
    event_record,
    send_raw,
    wait_for,
)

from learners.backbone import resolve_model_path
from learners.llm import LLMLearner
from schemas.settings import Settings
from stream.adapters import AdapterIncomplete, adapter_records, read_adapter
from stream.metrics import WorkerMetrics
from stream.sources.synthetic import SyntheticConfig, SyntheticStream
from stream.worker import Worker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_the_published_adapter_loads_into_a_fresh_peft_model_with_the_same_outputs(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModel

    settings = make_settings(
        learner={"kind": "llm"},
        batch={"max_events": 64, "max_wait_s": 0.3},
        checkpoint={"every_events": 64, "idle_s": 0.5},
        topics={"adapters": f"{settings_prefix(make_settings)}.adapters"},
    )
    create_topic(settings, settings.topics.events)
    events = list(SyntheticStream(SyntheticConfig(n_users=10, n_items=60, seed=5)).events(256))
    learner = LLMLearner(settings.learner.llm)
    worker = Worker(settings, learner, WorkerMetrics(process=False))
    running = WorkerThread(worker)
    try:
        send_raw(settings, [event_record(e) for e in events])
        wait_for(lambda: all_committed(settings), 180, "the stream learned and checkpointed")
    finally:
        running.stop(60)

    env = {**env_for(settings), "LORASTREAM_TOPICS__ADAPTERS": str(settings.topics.adapters)}
    pulled = cli("adapter", str(tmp_path / "adapter"), env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert learner.version in pulled.stdout  # the final state's adapter, checkpointed on stop
    base = AutoModel.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))
    served = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    live = learner.backbone.model.eval()
    inputs = learner.backbone.tokenizer(
        ["a trail running shoe", "a mystery novel set in Oslo"], return_tensors="pt", padding=True
    )
    plain = AutoModel.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))
    with torch.no_grad():
        want = live(**inputs).last_hidden_state
        got = served(**inputs).last_hidden_state
        plain = plain(**inputs)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain.last_hidden_state, want), "the adapter changes the output"


def settings_prefix(make_settings: Callable[..., Settings]) -> str:
    return make_settings().topics.events.removesuffix(".events")


def test_a_reader_refuses_chunks_of_another_version(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """A newer adapter's chunks read before its manifest do not pass as the older one."""
    from stream.clients import make_producer

    settings = make_settings(topics={"adapters": f"{settings_prefix(make_settings)}.adapters"})
    assert settings.topics.adapters is not None
    create_topic(settings, settings.topics.adapters)
    old, new = tmp_path / "old", tmp_path / "new"
    for directory, weights in ((old, b"old weights"), (new, b"new weights!")):
        directory.mkdir()
        (directory / "adapter_config.json").write_text('{"base_model_name_or_path": "m"}')
        (directory / "adapter_model.safetensors").write_bytes(weights)
    producer = make_producer(settings)
    for key, value in adapter_records(old, "v1", "ckpt-1"):
        producer.send(settings.topics.adapters, key=key.encode(), value=value)
    producer.flush()
    assert read_adapter(settings, tmp_path / "read").model_version == "v1"
    assert (tmp_path / "read" / "adapter_model.safetensors").read_bytes() == b"old weights"
    for key, value in adapter_records(new, "v2", "ckpt-2")[:-1]:  # chunks, not the manifest
        producer.send(settings.topics.adapters, key=key.encode(), value=value)
    producer.flush()
    producer.close()
    with pytest.raises(AdapterIncomplete, match="not the manifest's version"):
        read_adapter(settings, tmp_path / "torn", attempts=1)
