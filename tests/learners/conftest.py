"""Models for the learner tests: the real pretrained MiniLM, and tiny decoders built from a
``transformers`` config (no model hub), saved once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from learners.backbone import resolve_model_path


def build_tiny_decoder(kind: str, path: Path) -> Path:
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))
    shape = {
        "vocab_size": tokenizer.vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
    }
    model = (
        LlamaForCausalLM(LlamaConfig(**shape))
        if kind == "llama"
        else Qwen2ForCausalLM(Qwen2Config(**shape))
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def tiny_decoder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_decoder(request.param, tmp_path_factory.mktemp(request.param))
