"""A SASRec-style sequential recommender (Kang & McAuley, 2018), trained test-then-train.

A small causal transformer reads a user's last ``max_len`` positives (item ids, learned
positions) and scores every item by the dot product of its last hidden state with the
item embeddings. After each batch it takes ``steps`` Adam steps, each on the sequences of
the batch's users plus ``replay`` sequences of other users, with a full softmax over the
catalog at every position (next-item prediction). Items share the columns of
:class:`benchmarks.baselines.Counts`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from benchmarks.baselines import Counts, unlearned_rest
from schemas.events import InteractionEvent

__all__ = ["SASRec"]


class _Net(nn.Module):
    def __init__(self, capacity: int, dim: int, layers: int, heads: int, max_len: int) -> None:
        super().__init__()
        self.items = nn.Embedding(capacity + 1, dim, padding_idx=0)  # row 0: padding
        self.positions = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=dim, dropout=0.2, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.heads = heads
        nn.init.normal_(self.items.weight, std=0.02)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """[B, L] item rows (0 = padding, left-padded) → [B, L, d] hidden states."""
        B, L = seq.shape
        x = self.items(seq) * self.items.embedding_dim**0.5 + self.positions.weight[:L]
        # causal, and never attend to padding — except a position to itself, so no row of
        # the attention is empty (an empty row would give NaN, and 0 × NaN spreads it)
        q = torch.arange(L)
        allowed = (q[None, :] <= q[:, None])[None] & (
            (seq != 0)[:, None, :] | torch.eye(L, dtype=torch.bool)[None]
        )  # [B, L, L]
        mask = torch.zeros(B, L, L).masked_fill(~allowed, float("-inf"))
        h = self.encoder(x, mask=mask.repeat_interleave(self.heads, dim=0))
        out: torch.Tensor = self.norm(h)
        return out


class SASRec:
    """Next-item prediction over item ids; see the module docstring."""

    def __init__(
        self,
        counts: Counts,
        dim: int = 64,
        layers: int = 2,
        heads: int = 2,
        max_len: int = 50,
        capacity: int = 20_000,
        steps: int = 2,
        replay: int = 16,
        lr: float = 1e-3,
        seed: int = 0,
    ) -> None:
        torch.manual_seed(seed)
        self.counts, self.max_len, self.capacity = counts, max_len, capacity
        self.steps, self.replay = steps, replay
        self.net = _Net(capacity, dim, layers, heads, max_len)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.rng = np.random.default_rng(seed)
        self.name = f"SASRec (d={dim}, {layers} layers, last {max_len})"
        self.learn_seconds = 0.0

    def observe(self, events: Sequence[InteractionEvent]) -> None:
        pass

    def ratings(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray | None:
        return None

    def _sequences(self, users: Sequence[str], length: int) -> torch.Tensor:
        """[U, length] the users' last positives as embedding rows, left-padded with 0."""
        out = np.zeros((len(users), length), dtype=np.int64)
        for row, user in enumerate(users):
            recent = self.counts.recent(user, length)
            if len(recent):
                out[row, -len(recent) :] = np.minimum(recent, self.capacity - 1) + 1
        return torch.as_tensor(out)

    def scores(self, users: Sequence[str], items: Sequence[str]) -> np.ndarray:
        cols = self.counts.columns(items)
        known = (cols >= 0) & (cols < self.capacity)
        out = unlearned_rest(len(users), known)
        if not users or not known.any():
            return out
        self.net.eval()
        with torch.no_grad():
            last = self.net(self._sequences(users, self.max_len))[:, -1]  # [U, d]
            rows = torch.as_tensor(cols[known] + 1)
            out[:, known] = (last @ self.net.items.weight[rows].T).numpy()
        has_history = np.array([bool(self.counts.history.get(u)) for u in users])
        out[np.ix_(~has_history, known)] = 0.0
        return out

    def learn(self, events: Sequence[InteractionEvent]) -> None:
        t0 = time.perf_counter()
        self.counts.update(events)
        mine = list(dict.fromkeys(e.user_id for e in events))
        others = list(self.counts.history)
        for _ in range(self.steps):
            extra = (
                [others[i] for i in self.rng.integers(0, len(others), self.replay)]
                if others
                else []
            )
            self._step(mine + extra)
        self.learn_seconds += time.perf_counter() - t0

    def _step(self, users: list[str]) -> None:
        seq = self._sequences(users, self.max_len + 1)  # [B, L+1]
        inputs, targets = seq[:, :-1], seq[:, 1:]
        valid = (inputs > 0) & (targets > 0)
        if not valid.any():
            return
        self.net.train()
        h = self.net(inputs)[valid]  # [P, d]
        n = min(self.counts.n, self.capacity)
        logits = h @ self.net.items.weight[1 : n + 1].T  # [P, n]
        loss = F.cross_entropy(logits, targets[valid] - 1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
