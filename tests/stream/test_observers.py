"""What the batch observers record."""

from __future__ import annotations

from pathlib import Path

import pytest

from learners.checks import small_stream
from learners.llm import LLMLearner
from schemas.learner_config import LLMConfig
from schemas.vectors import SourcePosition
from stream.metrics import WorkerMetrics
from stream.observers import MetricsRecorder


def test_a_resumed_learners_rate_and_version_are_on_the_gauges_before_its_first_batch(
    tmp_path: Path,
) -> None:
    config = LLMConfig(lr_floor=0.25, lr_half_life=64)
    learner = LLMLearner(config)
    at = [SourcePosition(topic="t", partition=0, offset=k) for k in range(64)]
    learner.learn_many(small_stream(64, 8, 40, 0), at)
    learner.save(tmp_path)
    resumed = LLMLearner(config)
    resumed.load(tmp_path)
    metrics = WorkerMetrics(process=False)
    MetricsRecorder(metrics, resumed)
    gauge = metrics.registry.get_sample_value("lorastream_learning_rate_annealing")
    assert gauge == pytest.approx(0.25 + 0.75 * 0.5)
    assert metrics.registry.get_sample_value("lorastream_adapter_version") == resumed.updates == 1
