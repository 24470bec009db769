"""The LLM learner: frozen backbone, LoRA through PEFT, learning, checkpoints, bounds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from learners.backbone import frozen_fingerprint, load_backbone, resolve_model_path
from learners.base import CatchUp, IncompatibleState
from learners.checks import small_stream
from learners.llm import LLMLearner
from learners.scoring import PARTS
from schemas.events import InteractionEvent
from schemas.learner_config import LLMConfig, ReplayConfig
from schemas.vectors import SourcePosition


def positions(start: int, n: int) -> list[SourcePosition]:
    return [SourcePosition(topic="t", partition=0, offset=start + k) for k in range(n)]


def stream(n: int, seed: int = 0, users: int = 40, items: int = 200) -> list[InteractionEvent]:
    return small_stream(n, users, items, seed)


def learn(
    learner: LLMLearner, events: list[InteractionEvent], batch: int = 64, start: int = 0
) -> list[float]:
    losses = []
    for k in range(0, len(events), batch):
        chunk = events[k : k + batch]
        report = learner.learn_many(chunk, positions(start + k, len(chunk)))
        if report.loss is not None:
            losses.append(report.loss)
    return losses


def test_the_backbone_is_bit_identical_after_updates_and_the_adapter_is_not() -> None:
    learner = LLMLearner(LLMConfig())
    before = frozen_fingerprint(learner.backbone.model)
    lora_before = [p.detach().clone() for p in learner.adapter]
    learn(learner, stream(192))
    assert frozen_fingerprint(learner.backbone.model) == before
    assert any(not torch.equal(a, p) for a, p in zip(lora_before, learner.adapter, strict=True))
    trainable = {n for n, p in learner.backbone.model.named_parameters() if p.requires_grad}
    assert trainable
    assert all("lora_" in n for n in trainable)


def test_only_the_top_layers_are_adapted_and_the_backward_stops_there() -> None:
    top = load_backbone(LLMConfig(lora_top_layers=2))  # MiniLM-L6: layers 0-5
    every = load_backbone(LLMConfig(lora_top_layers=None))
    adapted = {
        int(n.split(".layer.")[1].split(".")[0])
        for n, _ in top.model.named_parameters()
        if "lora_" in n
    }
    assert adapted == {4, 5}
    assert top.backward_parameters() * 3 == every.backward_parameters()
    assert every.backward_parameters() <= every.non_embedding_parameters()


def test_a_decoders_top_layers_are_adapted(tiny_decoder: Path) -> None:
    # a decoder loads as its base model, whose layer names have no prefix (layers.1.…)
    top = load_backbone(LLMConfig(model=str(tiny_decoder), lora_top_layers=1))
    adapted = {
        int(n.split("layers.")[1].split(".")[0])
        for n, _ in top.model.named_parameters()
        if "lora_" in n
    }
    assert adapted == {1}


def served_scores(learner: LLMLearner, users: list[str], item_ids: list[str]) -> np.ndarray:
    """[U, C] what a serving index computes from the vectors published for ``users`` in one
    batch: dense dot + sparse dot."""
    u = learner.user_vectors(users)
    assert u.ids == users
    items = learner.item_vectors(item_ids)
    out = []
    for vector, (keys, values) in zip(u.vectors, u.sparse, strict=True):
        mine = dict(zip(keys.tolist(), values.tolist(), strict=True))
        sparse = [
            sum(mine.get(int(k), 0.0) * v for k, v in zip(*s, strict=True)) for s in items.sparse
        ]
        out.append(items.vectors @ vector + np.asarray(sparse))
    return np.asarray(out)


def test_published_vectors_rank_exactly_as_the_learner_does() -> None:
    learner = LLMLearner(LLMConfig())
    events = stream(256)
    learn(learner, events)
    items = learner.item_vectors(learner.known_items())
    np.testing.assert_allclose(np.linalg.norm(items.vectors[:, :-1], axis=1), 1.0, atol=1e-5)
    users = ["user-0", "user-3", "user-7"]
    served = served_scores(learner, users, items.ids)  # one batch: rows must not mix up
    for row, user in enumerate(users):
        model = learner.score_matrix([user], items.ids)[0]
        np.testing.assert_allclose(served[row], model, rtol=1e-5, atol=1e-6)
        # the score is the sum of its parts, kNN scaled to the mix's weight at its top
        parts = {p: learner.score_matrix([user], items.ids, part=p)[0] for p in PARTS}
        np.testing.assert_allclose(parts["prior"] + parts["towers"] + parts["knn"], model)
        np.testing.assert_allclose(parts["towers"] + parts["knn"], parts["personal"])
        assert parts["knn"].max() == pytest.approx(learner.mix.knn, rel=1e-5)


def test_tiny_decoders_learn_with_last_token_pooling(tiny_decoder: Path) -> None:
    learner = LLMLearner(LLMConfig(model=str(tiny_decoder), max_item_tokens=24))
    assert learner.backbone.family == "decoder"
    assert learner.backbone.pooling == "last"
    before = frozen_fingerprint(learner.backbone.model)
    losses = learn(learner, stream(128))
    assert losses
    assert all(np.isfinite(losses))
    vectors = learner.user_vectors(["user-0", "user-1"]).vectors
    assert vectors.shape[1] == 64 + 1
    assert np.isfinite(vectors).all()
    assert frozen_fingerprint(learner.backbone.model) == before


def test_prompt_user_tower_reads_the_history() -> None:
    learner = LLMLearner(LLMConfig(user_tower="prompt", max_user_tokens=64))
    losses = learn(learner, stream(96))
    assert losses
    assert all(np.isfinite(losses))
    history = learner.users.snapshot(learner.history, "user-0")
    assert "Recent activity" in learner.users._prompt(history)


def test_a_non_finite_loss_skips_the_update_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    learner = LLMLearner(LLMConfig())
    events = stream(128)
    learner.observe_items(events)  # registering a new or renamed item resets its bias
    learn(learner, events[:64])
    params = {n: p.detach().clone() for n, p in learner.heads.named_parameters()}
    lora = [p.detach().clone() for p in learner.adapter]
    original = learner.objective.loss

    def poisoned(*args: object, **kwargs: object) -> object:
        loss, columns, rows = original(*args, **kwargs)  # type: ignore[arg-type]
        return loss * float("nan"), columns, rows

    monkeypatch.setattr(learner.objective, "loss", poisoned)
    report = learner.learn_many(events[64:], positions(64, 64))
    assert report.skipped_update
    assert learner.skipped_updates == 1
    for name, p in learner.heads.named_parameters():
        assert torch.equal(p, params[name]), name
    assert all(torch.equal(a, b) for a, b in zip(lora, learner.adapter, strict=True))


def test_state_stays_bounded() -> None:
    config = LLMConfig(
        max_users=10,
        max_items=50,
        history_len=5,
        replay=ReplayConfig(capacity=40, max_bytes=20_000),
    )
    learner = LLMLearner(config)
    learn(learner, stream(640, users=40, items=200))
    sizes = learner.state_sizes()
    assert sizes["users"][0] <= 10
    assert sizes["items"][0] <= 50
    assert sizes["replay_examples"][0] <= 40
    assert sizes["replay_bytes"][0] <= 20_000
    assert 0 < sizes["consumed_items"][0] <= sizes["consumed_items"][1]
    assert all(len(learner.history.recent(u)) <= 5 for u in learner.history.users())


def test_item_encoding_age_is_reported_and_the_cache_refresh_bounds_it() -> None:
    """Item vectors are built from cached encodings: an item not seen again keeps the one
    made under an older adapter unless the refresh after each step re-encodes it."""
    events = stream(320, users=40, items=200)
    ages = {}
    for per_step in (0, 512):  # 512: more than the catalog
        config = LLMConfig(cache_refresh_per_step=per_step, cache_refresh_per_event=8.0)
        learner = LLMLearner(config)
        for k in range(0, len(events), 64):
            report = learner.learn_many(events[k : k + 64], positions(k, 64))
        ages[per_step] = report.metrics["item_encoding_age_p99"]
    assert ages[512] == 0 < 3 <= ages[0]


@pytest.mark.parametrize(("per_event", "n", "redone"), [(1.0, 10, 10), (0.5, 10, 5), (2.0, 50, 64)])
def test_a_small_step_re_encodes_its_share_of_stale_items(
    per_event: float, n: int, redone: int
) -> None:
    """A step re-encodes ``cache_refresh_per_event`` stale cached items per event it learns,
    at most ``cache_refresh_per_step`` (64): light load pays no full batch's re-encoding."""
    events = stream(320, users=40, items=200)
    learner = LLMLearner(LLMConfig(cache_refresh_per_event=per_event))
    learn(learner, events[:256])
    items = learner.items
    with mock.patch.object(items, "refresh", wraps=items.refresh) as refresh:
        learner.learn_many(events[256 : 256 + n], positions(256, n))
    refresh.assert_called_once_with(learner.updates, redone)


def test_catching_up_encodes_every_item_with_the_current_adapter() -> None:
    """After ``catch_up`` every cached encoding is what the current adapter makes of the
    item's text, so item vectors (and users composed from them) are of one model."""
    learner = LLMLearner(LLMConfig(cache_refresh_per_step=0))
    learn(learner, stream(320, users=40, items=200))
    cat = learner.items.catalog
    live = cat.live_slots()

    def fresh() -> torch.Tensor:
        with torch.no_grad():
            return learner.backbone.encode([cat.tokens[int(s)] or [] for s in live])

    assert not torch.allclose(cat.vectors[live], fresh(), atol=1e-5), "the steps moved it"
    behind = learner.catch_up(0).behind
    assert behind > 20
    assert learner.catch_up(20) == CatchUp(redone=20, behind=behind - 20)
    assert learner.catch_up(10**6).behind == 0
    torch.testing.assert_close(cat.vectors[live], fresh(), atol=1e-5, rtol=1e-5)
    assert learner.learn_many(stream(64, seed=3), positions(320, 64)).events == 64
    assert learner.catch_up(0).behind > 0, "an update makes the cache stale again"


def test_a_forgotten_user_is_gone_from_every_state_and_the_next_checkpoint(
    tmp_path: Path,
) -> None:
    from learners.towers import bucket_of

    learner = LLMLearner(LLMConfig(id_embeddings=True))  # a user's id row is state too
    learn(learner, stream(320, users=8, items=60))
    gone = "user-3"
    assert gone in learner.history
    assert learner.replay.users().get(gone)
    assert learner.forget_users([gone, "nobody"]) == [gone]
    assert gone not in learner.history
    assert gone not in learner.replay.users()
    row = bucket_of(gone, learner.config.id_buckets)
    assert learner.heads.user_ids is not None
    assert not learner.heads.user_ids.weight[row].any()
    assert learner.user_vectors([gone]).ids == []
    learner.save(tmp_path)
    saved = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.json"))
    assert f'"{gone}"' not in saved
    assert '"user-4"' in saved


def test_the_adapter_is_saved_in_peft_format(tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModel

    learner = LLMLearner(LLMConfig())
    learn(learner, stream(64))
    learner.save(tmp_path)
    config = json.loads((tmp_path / "adapter" / "learner_config.json").read_text())
    assert config["model"] == "all-MiniLM-L6-v2"
    base = AutoModel.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))
    loaded = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    ours = dict(learner.backbone.model.named_parameters())
    for name, p in loaded.named_parameters():
        if "lora_" in name:
            torch.testing.assert_close(p, ours[name])


RESTORE_SCRIPT = """
import sys, json, numpy as np
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_llm import positions, stream
from learners.llm import LLMLearner
from learners.scoring import PARTS
from schemas.learner_config import LLMConfig
learner = LLMLearner(LLMConfig())
learner.load(Path({ckpt!r}))
users = [f"user-{{i}}" for i in range(60)]
before = learner.user_vectors(users)
events = stream(384, seed=5)[320:384]
learner.learn_many(events, positions(320, 64))
after = learner.user_vectors(users)
items = learner.item_vectors([f"item-{{i}}" for i in range(400)])
np.savez({out!r}, before=before.vectors, after=after.vectors, items=items.vectors)
"""


@pytest.mark.slow
def test_a_checkpoint_restores_in_a_fresh_process_to_the_same_vectors_and_next_update(
    tmp_path: Path,
) -> None:
    events = stream(384, seed=5)
    learner = LLMLearner(LLMConfig())
    learn(learner, events[:320])
    learner.save(tmp_path / "ckpt")
    users = [f"user-{i}" for i in range(60)]
    before = learner.user_vectors(users).vectors
    learner.learn_many(events[320:384], positions(320, 64))
    after = learner.user_vectors(users).vectors
    items = learner.item_vectors([f"item-{i}" for i in range(400)]).vectors
    script = RESTORE_SCRIPT.format(
        tests=str(Path(__file__).parent), ckpt=str(tmp_path / "ckpt"), out=str(tmp_path / "out.npz")
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    other = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(other["before"], before, atol=1e-6)
    np.testing.assert_allclose(other["after"], after, atol=1e-6)
    np.testing.assert_allclose(other["items"], items, atol=1e-6)


def test_the_adapters_rate_anneals_with_events_learned_and_the_drift_boost_scales_it() -> None:
    learner = LLMLearner(LLMConfig(lr=1e-3, lr_floor=0.25, lr_half_life=128))
    slow, fast = learner.dense_optimizer.param_groups
    learn(learner, stream(128))  # two steps, the second after 64 events
    assert slow["lr"] == pytest.approx(1e-3 * (0.25 + 0.75 * 0.5**0.5))
    assert learner.lr_annealing == pytest.approx(0.25 + 0.75 * 0.5)  # what the next step gets
    learner.set_boost(lr_factor=3.0)
    assert slow["lr"] == pytest.approx(1e-3 * 0.625 * 3.0)
    assert fast["lr"] == pytest.approx(learner.config.embedding_lr * 3.0)  # ids never anneal
    learner.set_boost()
    learn(learner, stream(64 * 20, seed=1))
    assert learner.lr_annealing == pytest.approx(0.25, abs=1e-3)
    constant = LLMLearner(LLMConfig(lr_half_life=0))
    learn(constant, stream(128))
    assert constant.dense_optimizer.param_groups[0]["lr"] == constant.config.lr


def test_a_batch_smaller_than_lr_batch_events_learns_at_its_share_of_the_rates() -> None:
    learner = LLMLearner(LLMConfig(lr=1e-3, lr_half_life=0, lr_batch_events=64))
    slow, fast = learner.dense_optimizer.param_groups
    learn(learner, stream(16), batch=16)
    assert (slow["lr"], fast["lr"]) == pytest.approx((1e-3 / 4, learner.config.embedding_lr / 4))
    sparse = learner.sparse_optimizer.param_groups[0]
    assert sparse["lr"] == pytest.approx(learner.config.embedding_lr / 4)
    learner.set_boost(lr_factor=2.0)  # the boost keeps the step's share
    assert slow["lr"] == pytest.approx(1e-3 / 2)
    learner.set_boost()
    learn(learner, stream(128, seed=1), batch=128, start=16)  # a larger batch: whole rates
    assert slow["lr"] == pytest.approx(1e-3)


def test_eight_small_steps_move_the_adapter_about_as_far_as_one_full_one() -> None:
    """Cut into batches of 8, 64 events move the adapter about as far as in one batch;
    at whole rates (``lr_batch_events = 0``) eight Adam steps move it several times as far."""
    events = stream(64)

    def moved(batch: int, lr_batch_events: int) -> float:
        learner = LLMLearner(LLMConfig(lr_half_life=0, lr_batch_events=lr_batch_events))
        start = [p.detach().clone() for p in learner.adapter]
        learn(learner, events, batch=batch)
        pairs = zip(learner.adapter, start, strict=True)
        return float(sum((p.detach() - s).norm() ** 2 for p, s in pairs))

    # squared distances; measured: scaled 0.99 × full, whole 48 × full
    full, scaled, whole = moved(64, 64), moved(8, 64), moved(8, 0)
    assert 0.3 * full < scaled < 2 * full
    assert whole > 4 * full


def test_a_checkpoint_of_other_settings_is_refused(tmp_path: Path) -> None:
    learner = LLMLearner(LLMConfig())
    learn(learner, stream(64))
    learner.save(tmp_path)
    with pytest.raises(
        IncompatibleState, match=r"different learner settings: history_len=20 \(now 7\)"
    ):
        LLMLearner(LLMConfig(history_len=7)).load(tmp_path)


def saved_without(config: LLMConfig, directory: Path, *settings: str) -> LLMLearner:
    """A learner of ``config`` after one batch, saved as a checkpoint made before
    ``settings`` existed (its state names none of them)."""
    learner = LLMLearner(config)
    learn(learner, stream(64))
    learner.save(directory)
    state = json.loads((directory / "state.json").read_text())
    for name in settings:
        del state["config"][name]
    (directory / "state.json").write_text(json.dumps(state))
    return learner


def test_a_checkpoint_from_before_the_rate_annealed_resumes_only_at_a_constant_rate(
    tmp_path: Path,
) -> None:
    learner = saved_without(LLMConfig(lr_half_life=0), tmp_path, "lr_half_life", "lr_floor")
    with pytest.raises(IncompatibleState, match=r"lr_half_life=0 \(now 750\)"):
        LLMLearner(LLMConfig()).load(tmp_path)
    resumed = LLMLearner(LLMConfig(lr_half_life=0))
    resumed.load(tmp_path)
    assert resumed.updates == learner.updates
    LLMLearner(LLMConfig(lr_half_life=0, lr_floor=0.5)).load(tmp_path)  # no effect at 0


def test_a_checkpoint_from_before_rates_followed_the_batch_resumes_only_at_whole_rates(
    tmp_path: Path,
) -> None:
    saved_without(LLMConfig(lr_batch_events=0), tmp_path, "lr_batch_events")
    with pytest.raises(IncompatibleState, match=r"lr_batch_events=0 \(now 64\)"):
        LLMLearner(LLMConfig()).load(tmp_path)
    LLMLearner(LLMConfig(lr_batch_events=0)).load(tmp_path)


def test_a_checkpoint_resumes_under_a_new_serving_setting(tmp_path: Path) -> None:
    learner = LLMLearner(LLMConfig(publish_consumed=500))
    learn(learner, stream(64))
    learner.save(tmp_path)
    resumed = LLMLearner(LLMConfig())  # publish_consumed 1000
    resumed.load(tmp_path)
    assert resumed.updates == learner.updates
    assert resumed.config.publish_consumed == 1000


def test_a_checkpoint_loads_wherever_it_was_saved(tiny_decoder: Path, tmp_path: Path) -> None:
    saved = LLMLearner(LLMConfig(model=str(tiny_decoder), device="cpu"))
    learn(saved, stream(64))
    saved.save(tmp_path)
    moved = LLMLearner(LLMConfig(model=str(tiny_decoder), device="auto"))
    moved.load(tmp_path)  # the device is a placement, not a learner setting
    assert moved.updates == saved.updates


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_runs_the_backbone_in_bfloat16_and_learns() -> None:
    learner = LLMLearner(LLMConfig(device="cuda"))
    assert learner.backbone.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in learner.adapter)
    before = frozen_fingerprint(learner.backbone.model)
    losses = learn(learner, stream(256))
    assert losses
    assert all(np.isfinite(losses))
    assert learner.tester.overall.tests > 0
    assert frozen_fingerprint(learner.backbone.model) == before
    vectors = learner.user_vectors(["user-0"]).vectors
    assert np.isfinite(vectors).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_checkpoint_moves_between_a_gpu_and_a_cpu_worker(
    tiny_decoder: Path, tmp_path: Path
) -> None:
    def learner(device: str) -> LLMLearner:
        config = LLMConfig(model=str(tiny_decoder), device=device)  # type: ignore[arg-type]
        return LLMLearner(config)

    gpu = learner("cuda")
    assert gpu.dense_optimizer.param_groups[0]["fused"]  # one kernel per step on CUDA
    assert all(np.isfinite(learn(gpu, stream(128))))
    gpu.save(tmp_path / "gpu")
    cpu = learner("cpu")
    cpu.load(tmp_path / "gpu")
    assert not cpu.dense_optimizer.param_groups[0]["fused"]
    for a, b in zip(gpu.adapter, cpu.adapter, strict=True):
        assert torch.equal(a.detach().cpu(), b.detach())
    assert all(np.isfinite(learn(cpu, stream(64, seed=1), start=128)))
    cpu.save(tmp_path / "cpu")
    back = learner("cuda")
    back.load(tmp_path / "cpu")
    assert back.dense_optimizer.param_groups[0]["fused"]
    assert back.updates == cpu.updates
    assert all(np.isfinite(learn(back, stream(64, seed=2), start=192)))


def consumption(user: str, items: list[str], start: int) -> list[InteractionEvent]:
    return [
        InteractionEvent.model_validate(
            {
                "event_id": f"{user}-{start + k}",
                "user_id": user,
                "item_id": item,
                "event_type": "click",
                "timestamp": 1_700_000_000 + start + k,
            }
        )
        for k, item in enumerate(items)
    ]


def test_a_user_vector_carries_every_consumed_item_the_learner_leaves_out() -> None:
    """By default the published consumed items are the learner's whole list: an index that
    leaves them out ranks a long-standing user as the learner does (with 500 of 1000 it
    recommended what the user had consumed long before)."""
    config = LLMConfig(consumed_len=40, publish_consumed=40)
    defaults = LLMConfig()
    assert defaults.publish_consumed >= defaults.consumed_len
    learner = LLMLearner(config)
    items = [f"film-{k}" for k in range(60)]
    for k in range(0, 60, 20):
        learner.learn_many(consumption("a", items[k : k + 20], k), positions(k, 20))
    published = learner.user_vectors(["a"]).consumed
    assert published is not None
    assert published[0] == learner.consumed("a") == items[20:][::-1]


def test_an_evicted_item_leaves_consumed_items_and_its_slots_next_item_does_not_join() -> None:
    learner = LLMLearner(LLMConfig(max_items=16))
    first = [f"old-{k}" for k in range(4)]
    learner.learn_many(consumption("a", first, 0), positions(0, 4))
    assert learner.consumed("a") == first[::-1]
    others = [f"new-{k}" for k in range(16)]  # take every slot, the four of "a"'s items too
    learner.learn_many(consumption("b", others, 4), positions(4, 16))
    assert learner.consumed("a") == []
    learner.learn_many(consumption("a", ["old-0"], 20), positions(20, 1))
    assert learner.consumed("a") == ["old-0"]


def test_a_checkpoint_listing_consumed_items_by_id_loads_them(tmp_path: Path) -> None:
    """Checkpoints written before consumed items were catalog handles list them by id."""
    learner = LLMLearner(LLMConfig())
    learn(learner, stream(320, users=8, items=60))
    learner.save(tmp_path)
    users = learner.known_users()
    fresh = LLMLearner(LLMConfig())
    fresh.load(tmp_path)
    assert [fresh.consumed(u) for u in users] == [learner.consumed(u) for u in users]
    state = json.loads((tmp_path / "state.json").read_text())
    for row in state["history"]["users"]:
        by_id = learner.consumed(row[0])[::-1]
        positive = learner.history.consumed(row[0]).positive.tolist()
        row.append([[i, int(p)] for i, p in zip(by_id, positive, strict=True)])
    (tmp_path / "state.json").write_text(json.dumps(state))
    (tmp_path / "consumed.safetensors").unlink()
    old = LLMLearner(LLMConfig())
    old.load(tmp_path)
    assert [old.consumed(u) for u in users] == [learner.consumed(u) for u in users]
    assert all(learner.consumed(u) for u in users)
    for u in users:
        assert old.history.positives(u).tolist() == learner.history.positives(u).tolist()


@pytest.mark.parametrize("exclude", [True, False])
def test_a_positive_on_a_consumed_item_is_no_test_where_consumed_items_are_left_out(
    exclude: bool,
) -> None:
    learner = LLMLearner(LLMConfig(exclude_consumed=exclude))
    learner.learn_many(consumption("a", ["x", "y", "z"], 0), positions(0, 3))
    before = learner.tester.overall.tests
    # "a" clicks "x" again (never recommended to them again) and "w" for the first time
    learner.learn_many(consumption("a", ["x", "w"], 3), positions(3, 2))
    assert learner.tester.overall.tests - before == (1 if exclude else 2)
    before = learner.tester.overall.tests
    # "a" takes "v" twice within one batch: the second is a repeat of the first
    learner.learn_many(consumption("a", ["v", "v"], 5), positions(5, 2))
    assert learner.tester.overall.tests - before == (1 if exclude else 2)


def test_the_user_tower_reads_histories_as_known_slots_with_unknown_items_as_padding() -> None:
    learner = LLMLearner(LLMConfig(history_len=3))
    events = stream(64)
    learn(learner, events)
    a, b, c = list(dict.fromkeys(e.item_id for e in events))[:3]
    slot = {i: learner.items.catalog.index.get(i) for i in (a, b, c)}
    histories = [
        ((a, 1), ("never-seen", 2), (b, 3), (c, 4)),  # longer than history_len: newest 3
        (),
        ((c, 2),),
    ]
    slots, codes = learner.users._tensors(histories)
    assert slots.tolist() == [[slot[a], 0, slot[b]], [0, 0, 0], [slot[c], 0, 0]]
    assert codes.tolist() == [[1, 0, 3], [0, 0, 0], [2, 0, 0]]
