"""Models for the learner tests: the real pretrained MiniLM, and tiny decoders built from a
``transformers`` config (no model hub), saved once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from learners.random_backbone import build_random_backbone


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def tiny_decoder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_backbone(f"{request.param}-tiny", tmp_path_factory.mktemp(request.param))
