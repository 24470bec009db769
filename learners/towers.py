"""The trainable parts besides the LoRA matrices: projections, the user composer, id
embeddings and the rating head.

Shapes: ``h`` is the backbone's hidden size, ``d`` the vector size, ``L`` the history
length, ``E`` examples in a step.

Both towers end L2-normalised in one ``d``-space. A user's vector can be composed from
the vectors of the items in their recent history (attention weights from event type,
recency and content, then a learned transform — the default, cheap), or read by the
backbone from a prompt describing that history.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from learners.feedback import HISTORY_KINDS
from learners.ledger import event_hash as stable_hash
from schemas.learner_config import LLMConfig

__all__ = ["Heads", "bucket_of"]


def bucket_of(key: str, buckets: int) -> int:
    """A stable bucket for an id (Python's own hash() changes between processes)."""
    return stable_hash(key) % buckets


def _projection(hidden: int, dim: int) -> nn.Linear:
    proj = nn.Linear(hidden, dim)
    with torch.no_grad():
        if dim == hidden:
            proj.weight.copy_(torch.eye(dim))
        else:  # semi-orthogonal: keeps the pretrained geometry as far as d allows
            nn.init.orthogonal_(proj.weight)
        proj.bias.zero_()
    return proj


def _id_table(config: LLMConfig, dim: int) -> nn.Embedding:
    table = nn.Embedding(config.id_buckets, dim, sparse=True)
    nn.init.zeros_(table.weight)
    return table


def _with_ids(z: torch.Tensor, table: nn.Embedding | None, buckets: torch.Tensor) -> torch.Tensor:
    """[n, d] vectors plus their id rows, where the learner keeps id tables."""
    if table is None:
        return z
    ids: torch.Tensor = table(buckets)
    return z + ids


class Heads(nn.Module):
    """Projections, composer, id tables, item bias and rating head."""

    def __init__(self, hidden: int, config: LLMConfig) -> None:
        super().__init__()
        d = config.out_dim or hidden
        self.dim, self.config = d, config
        self.item_proj = _projection(hidden, d)
        self.user_proj = _projection(hidden, d)
        # composer: attention over the history, then a transform that starts as the identity
        self.type_logit = nn.Parameter(torch.zeros(len(HISTORY_KINDS) + 1))  # 0: padding
        self.recency_logit = nn.Parameter(torch.zeros(config.history_len))
        self.content_logit = nn.Linear(d, 1, bias=False)
        nn.init.zeros_(self.content_logit.weight)
        self.user_transform = nn.Linear(d, d)
        with torch.no_grad():
            self.user_transform.weight.copy_(torch.eye(d))
            self.user_transform.bias.zero_()
        # id embeddings (hashed, bounded; only with config.id_embeddings) start at zero: text
        # alone speaks first
        self.item_ids = _id_table(config, d) if config.id_embeddings else None
        self.user_ids = _id_table(config, d) if config.id_embeddings else None
        # popularity prior: a weight per half-life on log(1 + decayed count), plus a per-slot
        # bias; the short half-lives let a rising item (a trend) count early. Fixed at the
        # mean unless config.popularity_prior == "learned": a learned prior shares the work
        # of popularity with the id embeddings, so alone it drifts from the counts
        halves = len(config.popularity_half_lives)
        learned = config.popularity_prior == "learned"
        self.pop_weight = nn.Parameter(torch.full((halves,), 1.0 / halves), requires_grad=learned)
        self.item_bias = nn.Embedding(config.max_items, 1, sparse=True)
        nn.init.zeros_(self.item_bias.weight)
        self.item_bias.weight.requires_grad_(learned)
        # rating head: mean + user bias + how much the pair's score says about satisfaction
        self.rating_mean = nn.Parameter(torch.tensor(3.5))
        self.rating_coef = nn.Parameter(torch.tensor([1.0, 0.0]))
        self.user_rating_bias = nn.Embedding(config.id_buckets, 1, sparse=True)
        nn.init.zeros_(self.user_rating_bias.weight)
        self.review = nn.Linear(hidden, 1)
        nn.init.zeros_(self.review.weight)
        nn.init.zeros_(self.review.bias)

    # -- items ---------------------------------------------------------------------------

    def item_vectors(self, pooled: torch.Tensor, id_buckets: torch.Tensor) -> torch.Tensor:
        """[n, h] pooled text, [n] id buckets → [n, d] unit item vectors."""
        z = self.item_proj(pooled)
        return F.normalize(_with_ids(z, self.item_ids, id_buckets), dim=-1)

    def item_bias_of(self, slots: torch.Tensor, log_counts: torch.Tensor) -> torch.Tensor:
        """[n] slots and [H, n] log(1 + decayed count) per half-life → [n] score prior."""
        bias: torch.Tensor = self.pop_weight @ log_counts
        bound = self.config.item_bias_bound
        if bound == 0 or self.config.popularity_prior == "counts":
            return bias
        learned: torch.Tensor = self.item_bias(slots).squeeze(-1)
        if bound is None:
            return bias + learned
        # a correction to the counts, never a replacement: an item whose counts decayed
        # cannot keep the lead its bias gathered while it was popular
        return bias + bound * torch.tanh(learned / bound)

    # -- users ---------------------------------------------------------------------------

    def compose_users(
        self, history: torch.Tensor, types: torch.Tensor, user_buckets: torch.Tensor
    ) -> torch.Tensor:
        """[E, L, d] history item vectors (newest first, zeros = padding), [E, L] type codes,
        [E] user id buckets → [E, d] unit user vectors."""
        valid = types > 0  # [E, L]
        logits = (
            self.type_logit[types]
            + self.recency_logit[: history.shape[1]]
            + self.content_logit(history).squeeze(-1)
        )  # [E, L]
        logits = logits.masked_fill(~valid, float("-inf"))
        weights = torch.softmax(logits, dim=-1)
        weights = torch.nan_to_num(weights, nan=0.0)  # users with no history
        pooled = torch.einsum("el,eld->ed", weights, history)  # [E, d]
        z = self.user_transform(pooled)
        z = torch.where(valid.any(-1, keepdim=True), z, torch.zeros_like(z))
        return F.normalize(_with_ids(z, self.user_ids, user_buckets), dim=-1)

    def prompt_users(self, pooled: torch.Tensor, user_buckets: torch.Tensor) -> torch.Tensor:
        """[E, h] pooled prompt encodings → [E, d] unit user vectors."""
        z = self.user_proj(pooled)
        return F.normalize(_with_ids(z, self.user_ids, user_buckets), dim=-1)

    # -- ratings -------------------------------------------------------------------------

    def rating(
        self, affinity: torch.Tensor, bias: torch.Tensor, user_buckets: torch.Tensor
    ) -> torch.Tensor:
        """Predicted rating [E] from the pair's cosine affinity [E] and the item's
        popularity prior [E]."""
        a, b = self.rating_coef
        rating: torch.Tensor = (
            self.rating_mean
            + self.user_rating_bias(user_buckets).squeeze(-1)
            + a * affinity
            + b * bias
        )
        return rating

    def _embedding_ids(self) -> set[int]:
        return {
            id(p) for m in self.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
        }

    def dense_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters outside the id tables (a fixed prior's weights are not)."""
        sparse = self._embedding_ids()
        return [p for p in self.parameters() if id(p) not in sparse and p.requires_grad]

    def fast_parameters(self) -> list[nn.Parameter]:
        """Scalars that set the balance of the score (popularity weights, attention priors,
        rating calibration): they must move in tens of steps, not thousands."""
        scalars = [
            self.pop_weight,
            self.type_logit,
            self.recency_logit,
            self.rating_mean,
            self.rating_coef,
        ]
        return [p for p in scalars if p.requires_grad]

    def slow_parameters(self) -> list[nn.Parameter]:
        fast = {id(p) for p in self.fast_parameters()}
        return [p for p in self.dense_parameters() if id(p) not in fast]

    def sparse_parameters(self) -> list[nn.Parameter]:
        sparse = self._embedding_ids()
        return [p for p in self.parameters() if id(p) in sparse and p.requires_grad]
