"""The LLM learner's state on disk, its erasure of a user, and its rating head's readout.

A checkpoint directory holds the adapter in PEFT's own format with
``learner_config.json`` beside it, tensors as safetensors (heads, optimiser moments,
catalog, co-occurrence, users' consumed items) and everything else as JSON — never a
pickle. Saving changes nothing in the learner, so how often a worker checkpoints never
changes what it learns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from learners.backbone import Backbone, load_adapter_weights, save_adapter
from learners.base import IncompatibleState
from learners.cooccurrence import Cooccurrence
from learners.history import UserHistory
from learners.item_tower import ItemTower
from learners.ledger import EventLedger
from learners.prequential import Prequential
from learners.replay import ReplayBuffer
from learners.scorer import Scorer
from learners.scoring import MixSelector
from learners.state_io import load_json, rng_from_json, rng_to_json, save_json
from learners.tester import Tester
from learners.towers import Heads, bucket_of
from learners.user_tower import UserTower
from schemas.learner_config import LLMConfig

__all__ = ["NOT_STATE", "Parts", "Restored", "forget_users", "load", "predict_ratings", "save"]


class Parts(Protocol):
    """The parts of an LLM learner its state is made of (``learners/llm.py``)."""

    @property
    def config(self) -> LLMConfig: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def backbone(self) -> Backbone: ...
    @property
    def heads(self) -> Heads: ...
    @property
    def items(self) -> ItemTower: ...
    @property
    def users(self) -> UserTower: ...
    @property
    def cooccurrence(self) -> Cooccurrence: ...
    @property
    def scorer(self) -> Scorer: ...
    @property
    def selector(self) -> MixSelector: ...
    @property
    def tester(self) -> Tester: ...
    @property
    def dense_optimizer(self) -> torch.optim.Optimizer: ...
    @property
    def sparse_optimizer(self) -> torch.optim.Optimizer: ...
    @property
    def anchor(self) -> list[torch.Tensor] | None: ...
    @property
    def history(self) -> UserHistory: ...
    @property
    def replay(self) -> ReplayBuffer: ...
    @property
    def ledger(self) -> EventLedger: ...
    @property
    def rng(self) -> np.random.Generator: ...
    @property
    def updates(self) -> int: ...
    @property
    def skipped_updates(self) -> int: ...


@dataclass
class Restored:
    """What :func:`load` read that replaces objects of the learner (the rest it loads into
    the parts in place)."""

    history: UserHistory
    rng: np.random.Generator
    replay: ReplayBuffer
    ledger: EventLedger
    anchor: list[torch.Tensor] | None
    updates: int
    skipped_updates: int


#: Settings that change neither the saved state nor how it moves on (the random draws
#: included, which ranks must make alike), so a checkpoint resumes under new values of
#: them: where it runs (checkpoints move), how much of the item cache a step re-encodes (a
#: budget) and how many consumed items a user vector carries (read only when publishing).
NOT_STATE: set[str] = {
    "device",
    "cache_refresh_per_step",
    "cache_refresh_per_event",
    "publish_consumed",
}


def save(learner: Parts, directory: Path) -> None:
    save_adapter(learner.backbone, directory / "adapter")
    (directory / "adapter" / "learner_config.json").write_text(
        learner.config.model_dump_json(indent=1)
    )
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in learner.heads.state_dict().items()},
        str(directory / "heads.safetensors"),
    )
    dense, dense_meta = _optimizer_state(learner.dense_optimizer, "dense")
    sparse, sparse_meta = _optimizer_state(learner.sparse_optimizer, "sparse")
    anchor = {f"anchor.{k}": a.cpu().contiguous() for k, a in enumerate(learner.anchor or [])}
    save_file({**dense, **sparse, **anchor}, str(directory / "optimizers.safetensors"))
    arrays, catalog_meta = learner.items.catalog.state()
    save_file(
        {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in arrays.items()}
        | {"item_bucket": torch.as_tensor(learner.items.bucket)},
        str(directory / "catalog.safetensors"),
    )
    save_file(
        {
            k: torch.as_tensor(np.ascontiguousarray(v))
            for k, v in learner.cooccurrence.state().items()
        },
        str(directory / "cooccurrence.safetensors"),
    )
    save_file(
        {
            k: torch.as_tensor(np.ascontiguousarray(v))
            for k, v in learner.history.consumed_arrays().items()
        },
        str(directory / "consumed.safetensors"),
    )
    save_json(
        directory / "state.json",
        {
            "config": learner.config.model_dump(mode="json"),
            "optimizers": {"dense": dense_meta, "sparse": sparse_meta},
            "catalog": catalog_meta,
            "history": learner.history.to_json(),
            "replay": learner.replay.to_json(),
            "ledger": learner.ledger.to_json(),
            "tests": {name: ev.to_json() for name, ev in _evaluators(learner).items()},
            "selector": learner.selector.to_json(),
            "rng": rng_to_json(learner.rng),
            "t": learner.scorer.t,
            "updates": learner.updates,
            "skipped": learner.skipped_updates,
            "anchored": learner.anchor is not None,
        },
    )


def load(learner: Parts, directory: Path) -> Restored:
    state = load_json(directory / "state.json")
    # a setting a checkpoint does not name did not exist when it was made: read it as what
    # the learner did then (before the rate annealed it learned at lr throughout, whatever
    # lr_floor says now; before rates followed the batch's size every step had them whole)
    earlier = {"lr_half_life": 0, "lr_floor": learner.config.lr_floor, "lr_batch_events": 0}
    saved = LLMConfig.model_validate({**earlier, **state["config"]})
    was, now = saved.model_dump(exclude=NOT_STATE), learner.config.model_dump(exclude=NOT_STATE)
    if was != now:
        differ = ", ".join(
            f"{k}={was[k]!r} (now {now.get(k)!r})" for k in was if was[k] != now.get(k)
        )
        raise IncompatibleState(
            f"the checkpoint in {directory} was made with different learner settings: {differ};"
            " start with the checkpoint's learner.llm settings or use another checkpoint"
            " directory"
        )
    device = str(learner.device)
    load_adapter_weights(learner.backbone, directory / "adapter")
    learner.heads.load_state_dict(load_file(str(directory / "heads.safetensors"), device=device))
    tensors = load_file(str(directory / "optimizers.safetensors"), device=device)
    _load_optimizer_state(learner.dense_optimizer, "dense", tensors, state["optimizers"]["dense"])
    _load_optimizer_state(
        learner.sparse_optimizer, "sparse", tensors, state["optimizers"]["sparse"]
    )
    anchor = sorted((k for k in tensors if k.startswith("anchor.")), key=lambda k: int(k[7:]))
    arrays = {
        k: v.cpu().numpy() for k, v in load_file(str(directory / "catalog.safetensors")).items()
    }
    learner.items.bucket[:] = arrays.pop("item_bucket")
    learner.items.catalog.load(arrays, state["catalog"])
    learner.items.rekey()
    co = load_file(str(directory / "cooccurrence.safetensors"))
    learner.cooccurrence.load({k: v.numpy() for k, v in co.items()})
    tester = learner.tester
    tester.overall = Prequential.from_json(state["tests"]["overall"])
    for name in tester.parts:
        tester.parts[name] = Prequential.from_json(state["tests"][name])
    learner.selector.load_json(state["selector"])
    learner.scorer.t = float(state["t"])
    return Restored(
        history=_load_history(learner, directory, state["history"]),
        rng=rng_from_json(state["rng"]),
        replay=ReplayBuffer.from_json(learner.config.replay, state["replay"]),
        ledger=EventLedger.from_json(state["ledger"]),
        anchor=[tensors[k] for k in anchor] if state["anchored"] else None,
        updates=int(state["updates"]),
        skipped_updates=int(state["skipped"]),
    )


def _load_history(learner: Parts, directory: Path, data: dict[str, Any]) -> UserHistory:
    """The history beside the loaded catalog; a checkpoint from before consumed items were
    handles lists them by id and takes the handles of those the catalog still holds."""
    path = directory / "consumed.safetensors"
    if not path.exists():
        items = learner.items
        return UserHistory.from_json(data, handles_of=lambda ids: _handles_of(items, ids))
    consumed = {k: v.numpy() for k, v in load_file(str(path)).items()}
    return UserHistory.from_json(data, consumed)


def _handles_of(items: ItemTower, item_ids: list[str]) -> np.ndarray:
    return items.handles(items.slots(item_ids))  # an unknown id's slot -1 has handle -1


def _evaluators(learner: Parts) -> dict[str, Prequential]:
    return {"overall": learner.tester.overall, **learner.tester.parts}


def forget_users(learner: Parts, user_ids: Sequence[str]) -> list[str]:
    replayed = learner.replay.users()
    known = [u for u in user_ids if u in learner.history or u in replayed]
    for user in known:
        learner.history.remove(user)
        learner.replay.remove_user(user)
    rows = torch.as_tensor(
        [bucket_of(u, learner.config.id_buckets) for u in user_ids],
        dtype=torch.long,
        device=learner.device,
    )
    with torch.no_grad():
        tables = [learner.heads.user_rating_bias, learner.heads.user_ids]
        for table in (t.weight for t in tables if t is not None):
            table[rows] = 0.0
            for moment in learner.sparse_optimizer.state.get(table, {}).values():
                if isinstance(moment, torch.Tensor) and moment.dim() > 0:
                    moment[rows] = 0.0
    return known


def predict_ratings(learner: Parts, user_ids: Sequence[str], item_ids: Sequence[str]) -> np.ndarray:
    heads, device = learner.heads, learner.device
    slots = learner.items.slots(item_ids)
    out = np.full(len(user_ids), float(heads.rating_mean.detach()))
    ok = np.flatnonzero(slots >= 0).tolist()
    if ok:
        users = [user_ids[k] for k in ok]
        with torch.no_grad():
            heads.eval()
            u = learner.users.reps(
                users, [learner.users.snapshot(learner.history, x) for x in users]
            )
            i = learner.items.reps(slots[ok])
            prior = learner.scorer.prior(slots[ok])
            buckets = torch.as_tensor(
                [bucket_of(x, learner.config.id_buckets) for x in users], device=device
            )
            out[ok] = heads.rating((u * i).sum(-1), prior, buckets).cpu().numpy()
    clipped: np.ndarray = np.clip(out, 1.0, 5.0)
    return clipped


def _optimizer_state(
    optimizer: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser's state as tensors (safetensors) and JSON (no pickle)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    groups = [dict(g.items()) for g in sd["param_groups"]]
    return tensors, {"groups": groups, "scalars": scalars}


_RUNTIME_KEYS = ("fused", "foreach", "capturable")


def _load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    prefix: str,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    # how the step runs (fused kernels on CUDA) is this machine's choice, not the checkpoint's
    groups = [
        {**saved, **{k: live[k] for k in _RUNTIME_KEYS if k in live}}
        for saved, live in zip(meta["groups"], optimizer.param_groups, strict=True)
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
