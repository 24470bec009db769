"""A rank of a data-parallel learner, as the tests spawn it (``torch.multiprocessing``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from learners.base import LearnReport
from learners.data_parallel import Shard
from learners.llm import LLMLearner
from schemas.events import InteractionEvent
from schemas.learner_config import LLMConfig
from schemas.vectors import SourcePosition


def positions_of(batch: int, rank: int, n: int) -> list[SourcePosition]:
    """Where each event of rank ``rank``'s share of batch ``batch`` came from."""
    return [SourcePosition(topic="t", partition=rank, offset=batch * 1000 + k) for k in range(n)]


def learn_as_rank(
    rank: int,
    world: int,
    port: int,
    config: LLMConfig,
    shares: list[list[InteractionEvent]],
    out: Path,
) -> None:
    """Learn this rank's share of each batch in a gloo group; save the learned tensors."""
    dist.init_process_group("gloo", f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        shard = Shard.current()
        learner = LLMLearner(config, shard=shard)
        for k, share in enumerate(shares):
            batch = shard.gather_batch(share, positions_of(k, rank, len(share)))
            learner.learn_many(batch.events, batch.positions)
        agreed = shard.in_step()
        if rank == 1:  # a rank whose model parted is noticed by every rank
            with torch.no_grad():
                learner.adapter[0].add_(1e-3)
        checks = torch.tensor([agreed, shard.in_step()])
        save_file(
            {**learned_tensors(learner), "checks": checks}, str(out / f"rank{rank}.safetensors")
        )
    finally:
        dist.destroy_process_group()


def learned_tensors(learner: LLMLearner) -> dict[str, torch.Tensor]:
    """The adapter, the heads and the cached item encodings, by name."""
    out = {f"adapter.{k}": p.detach().clone() for k, p in enumerate(learner.adapter)}
    out.update({f"heads.{k}": v.detach().clone() for k, v in learner.heads.state_dict().items()})
    n = len(learner.items.catalog)
    out["catalog"] = learner.items.catalog.vectors[:n].detach().clone()
    return out


class PoisonedLearner(LLMLearner):
    """The LLM learner with a bug one item triggers: a batch holding it raises. With
    ``damage``, rank 0 first damages the newest of two or more checkpoints there, once, so
    the roll-back that follows must move it aside."""

    def __init__(
        self, config: LLMConfig, shard: Shard, poison: str, damage: Path | None = None
    ) -> None:
        super().__init__(config, shard)
        self.poison, self.damage, self.shard = poison, damage, shard

    def learn_many(
        self, events: Sequence[InteractionEvent], positions: Sequence[SourcePosition]
    ) -> LearnReport:
        if any(e.item_id == self.poison for e in events):
            if self.damage is not None and self.shard.rank == 0:
                checkpoints = sorted(self.damage.glob("ckpt-*"))
                if len(checkpoints) >= 2:
                    (checkpoints[-1] / "manifest.json").write_text("{")
                self.damage = None
            raise ValueError(f"cannot learn item {self.poison}")
        return super().learn_many(events, positions)


def run_poisoned_rank(config: str, poison: str, damage: str = "") -> int:
    """One rank of ``lorastream run`` whose learner fails on ``poison`` (and damages the
    newest checkpoint first with ``damage="yes"``): a process started with ``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set."""
    import logging

    from schemas.settings import Settings
    from stream.app import App
    from stream.ranks import join_group

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings.load(Path(config), environ={})
    damaged = settings.checkpoint.dir if damage == "yes" else None
    learner = PoisonedLearner(settings.learner.llm, join_group(settings), poison, damaged)
    return int(App(settings, learner=learner).run())
