"""Backbones of a named architecture and size with random weights, built from a config.

For speed figures of realistic sizes (and tests of decoder support) on machines that
cannot download a model: :func:`build_random_backbone` writes a model directory that
``learner.llm.model`` can name, with the bundled MiniLM's tokenizer (its vocabulary sets
the embedding size; every other shape is the named model's). Random weights learn
nothing useful, but cost what the real ones cost per token.

>>> sorted(SHAPES)
['llama-tiny', 'qwen2-0.5b', 'qwen2-tiny']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from learners.backbone import resolve_model_path

__all__ = ["SHAPES", "build_random_backbone"]

_TINY: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}

#: name -> (architecture, config fields); qwen2-0.5b is Qwen2.5-0.5B's shape.
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-tiny": ("llama", _TINY),
    "qwen2-tiny": ("qwen2", _TINY),
    "qwen2-0.5b": (
        "qwen2",
        {
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "rope_theta": 1_000_000.0,
        },
    ),
}


def build_random_backbone(shape: str, path: Path, seed: int = 0) -> Path:
    """Write a randomly initialised ``shape`` (a key of :data:`SHAPES`) and the bundled
    tokenizer to ``path``; returns ``path``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel, Qwen2Config, Qwen2Model

    if shape not in SHAPES:
        raise ValueError(f"unknown backbone shape {shape!r}; known: {sorted(SHAPES)}")
    architecture, fields = SHAPES[shape]
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path("all-MiniLM-L6-v2"), local_files_only=True
    )
    torch.manual_seed(seed)
    config_cls, model_cls = {
        "llama": (LlamaConfig, LlamaModel),
        "qwen2": (Qwen2Config, Qwen2Model),
    }[architecture]
    model = model_cls(config_cls(vocab_size=tokenizer.vocab_size, **fields))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
