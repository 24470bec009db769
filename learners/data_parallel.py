"""One LLM learner over N ranks of ``torch.distributed``: each rank reads its own partitions,
all hold one identical model.

The contract: every rank calls ``learn_many`` (and anything else that runs the backbone) in
the same order with the same global batch — the ranks' batches gathered, in rank order
(:meth:`Shard.gather_batch`; the stream worker gathers its own records the same way). Then:

1. the host-side state (catalog, popularity, co-occurrence, histories, replay, tests, the
   mix) follows identically on every rank from the same events: exact, with no protocol of
   its own, and cheap beside the backbone;
2. the backbone's work, where the compute is, is split: each ``Backbone.encode`` deals its
   rows round-robin, each rank encodes its share, and the pooled rows are all-gathered
   (:class:`GatherRows`; the backward keeps each rank's own rows' gradient, since every
   rank computes the same loss from the same gathered rows);
3. the adapter's gradients, partial on each rank, are summed (and the heads' dense ones,
   whole on each rank, averaged) in one all-reduce before the optimiser step, which then
   runs identically everywhere.

So after every step all ranks hold the same learner, equal to what one process computes on
the same global batches (up to the order of floating-point sums; with ``lora_dropout`` > 0
each rank draws its own rows' masks). Process group: ``gloo`` on the CPU; on GPUs ``nccl``
for the CUDA tensors and ``gloo`` for the host-side exchange.

>>> Shard.deal(5, rank=1, world=2)
[1, 3]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from pydantic import TypeAdapter

from schemas.events import InteractionEvent
from schemas.vectors import SourcePosition

__all__ = ["GatherRows", "GlobalBatch", "Shard"]

_EVENTS = TypeAdapter(list[InteractionEvent])
_POSITIONS = TypeAdapter(list[SourcePosition])


@dataclass(frozen=True)
class GlobalBatch:
    """Every rank's batch, in rank order."""

    events: list[InteractionEvent]
    positions: list[SourcePosition]


@dataclass
class Shard:
    """This process's place among the ranks that share one model."""

    rank: int
    world: int
    group: Any = None  # a torch.distributed process group (None: the default one)
    collective_s: float = 0.0  # time in collectives, waiting for the other ranks included
    watched: list[torch.nn.Parameter] = field(default_factory=list, repr=False)

    @contextmanager
    def collective(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.collective_s += time.perf_counter() - started

    @classmethod
    def current(cls) -> Shard:
        """The initialised default process group's rank and size."""
        if not dist.is_initialized():
            raise RuntimeError(
                "data parallelism needs an initialised torch.distributed process group"
                " (torch.distributed.init_process_group, or run under torchrun)"
            )
        return cls(dist.get_rank(), dist.get_world_size())

    @staticmethod
    def deal(n: int, rank: int, world: int) -> list[int]:
        """The rows of ``n`` this rank encodes: every ``world``-th from ``rank``."""
        return list(range(rank, n, world))

    def gather_batch(
        self, events: Sequence[InteractionEvent], positions: Sequence[SourcePosition]
    ) -> GlobalBatch:
        """All ranks' batches, in rank order, on every rank."""
        payloads = self.gather_bytes(
            _EVENTS.dump_json(list(events)) + b"\n" + _POSITIONS.dump_json(list(positions))
        )
        out = GlobalBatch([], [])
        for payload in payloads:
            head, tail = payload.split(b"\n", 1)
            out.events.extend(_EVENTS.validate_json(head))
            out.positions.extend(_POSITIONS.validate_json(tail))
        return out

    def gather_bytes(self, payload: bytes) -> list[bytes]:
        """Every rank's ``payload``, in rank order (two collectives: sizes, then bytes)."""
        size = torch.tensor([len(payload)], dtype=torch.int64)
        sizes = [torch.zeros_like(size) for _ in range(self.world)]
        with self.collective():
            dist.all_gather(sizes, size, group=self.group)
        width = int(max(s.item() for s in sizes))
        mine = torch.zeros(width, dtype=torch.uint8)
        mine[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        parts = [torch.zeros_like(mine) for _ in range(self.world)]
        with self.collective():
            dist.all_gather(parts, mine, group=self.group)
        return [p[: int(s.item())].numpy().tobytes() for p, s in zip(parts, sizes, strict=True)]

    def encode(
        self,
        rows: Sequence[Sequence[int]],
        encode_rows: Callable[[Sequence[Sequence[int]]], torch.Tensor],
        hidden: int,
        device: torch.device,
    ) -> torch.Tensor:
        """[n, hidden] pooled rows, each encoded by one rank and gathered to all."""
        mine = self.deal(len(rows), self.rank, self.world)
        if mine:
            local = encode_rows([rows[k] for k in mine])
        else:  # fewer rows than ranks
            local = torch.zeros((0, hidden), device=device)
        return GatherRows.apply(local, len(rows), self)  # type: ignore[no-any-return]

    def watch(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """The parameters every rank must hold identically (:meth:`in_step` compares them)."""
        self.watched = list(parameters)

    def in_step(self) -> bool:
        """Whether every rank holds the same watched parameters: one checksum per rank,
        gathered, so every rank gets the same answer. (They part only if the ranks compute
        differently: another thread count, another kind of device.)"""
        total = sum(float(p.detach().double().sum()) for p in self.watched)
        mine = torch.tensor([total], dtype=torch.float64)
        everyone = [torch.zeros_like(mine) for _ in range(self.world)]
        with self.collective():
            dist.all_gather(everyone, mine, group=self.group)
        return all(torch.equal(e, everyone[0]) for e in everyone)

    def all_reduce_grads(
        self,
        summed: Sequence[torch.nn.Parameter],
        averaged: Sequence[torch.nn.Parameter] = (),
    ) -> None:
        """One all-reduce: ``summed`` gradients (partial on each rank: the adapter's) are
        added up; ``averaged`` ones (whole on each rank: the heads') are averaged, so every
        rank steps with the same numbers even where the ranks' kernels round differently."""
        params = [*summed, *averaged]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        # [sizes..., one "has a gradient" count per parameter]
        present = torch.tensor([float(p.grad is not None) for p in params]).to(grads[0])
        flat = torch.cat([*(g.reshape(-1) for g in grads), present])
        with self.collective():
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        *chunks, present = torch.split(flat, [*(g.numel() for g in grads), len(params)])
        for k, (p, chunk) in enumerate(zip(params, chunks, strict=True)):
            if present[k] == 0:  # no rank used it: no gradient, as in one process
                p.grad = None
                continue
            scale = 1.0 if k < len(summed) else 1.0 / self.world
            p.grad = (chunk * scale).view_as(p).clone()


class GatherRows(torch.autograd.Function):
    """Forward: every rank's rows of a round-robin deal, reassembled in order on every rank.
    Backward: this rank's rows' gradient only (every rank computes the same loss from the
    same rows, so each already holds the whole gradient of its own rows)."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, n: int, shard: Shard) -> torch.Tensor:
        w = shard.world
        m = -(-n // w)  # rows per rank, padded
        padded = torch.zeros((m, local.shape[1]), dtype=local.dtype, device=local.device)
        padded[: len(local)] = local
        parts = [torch.empty_like(padded) for _ in range(w)]
        with shard.collective():
            dist.all_gather(parts, padded.contiguous(), group=shard.group)
        ctx.n, ctx.local, ctx.shard = n, len(local), shard
        # parts[r][j] is row j·w + r: interleave back to [n, h]
        return torch.stack(parts, 1).reshape(m * w, -1)[:n]

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (grad,) = grads  # [n, h]
        w, rank = ctx.shard.world, ctx.shard.rank
        return grad[rank::w][: ctx.local], None, None
