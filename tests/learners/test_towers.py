"""The id tables and the popularity prior's per-item correction (``learners/towers.py``)."""

from __future__ import annotations

import pytest
import torch

from learners.towers import Heads
from schemas.learner_config import LLMConfig


def prior_with_learned_biases(bound: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(prior, counts part) for 4 items whose learned biases are -30, -1, 0.5 and 30."""
    config = LLMConfig(
        popularity_prior="learned", item_bias_bound=bound, max_items=16, id_buckets=16
    )
    heads = Heads(8, config)
    with torch.no_grad():
        heads.item_bias.weight[:4, 0] = torch.tensor([-30.0, -1.0, 0.5, 30.0])
    slots = torch.arange(4)
    log_counts = torch.log1p(torch.tensor([[5.0, 0.0, 2.0, 1.0]] * 3))  # [H=3, 4]
    counts = heads.pop_weight.detach() @ log_counts
    return heads.item_bias_of(slots, log_counts).detach(), counts


def test_unbounded_the_learned_bias_is_added_as_it_is() -> None:
    prior, counts = prior_with_learned_biases(None)
    torch.testing.assert_close(prior - counts, torch.tensor([-30.0, -1.0, 0.5, 30.0]))


def test_a_bound_of_zero_leaves_the_counts_alone() -> None:
    prior, counts = prior_with_learned_biases(0.0)
    torch.testing.assert_close(prior, counts)


@pytest.mark.parametrize("bound", [0.5, 2.0])
def test_a_bound_caps_the_correction_and_keeps_small_ones_nearly_as_learned(bound: float) -> None:
    prior, counts = prior_with_learned_biases(bound)
    correction = prior - counts
    assert correction.abs().max() <= bound
    assert correction[3] > 0.99 * bound
    assert correction[0] < -0.99 * bound
    assert torch.all(torch.diff(correction) > 0), "the order of the learned biases is kept"
    assert correction[2] == pytest.approx(bound * torch.tanh(torch.tensor(0.5 / bound)).item())


def test_the_counts_prior_is_the_mean_log_count_and_nothing_in_it_learns() -> None:
    heads = Heads(
        8, LLMConfig(popularity_prior="counts", max_items=16, id_buckets=16, id_embeddings=True)
    )
    with torch.no_grad():
        heads.item_bias.weight[:4, 0] = torch.tensor([-30.0, -1.0, 0.5, 30.0])
    counts = torch.tensor([[5.0, 0.0, 2.0, 1.0], [1.0, 0.0, 2.0, 3.0], [9.0, 1.0, 0.0, 0.0]])
    log_counts = torch.log1p(counts)
    prior = heads.item_bias_of(torch.arange(4), log_counts)  # [H=3, 4] → [4]
    torch.testing.assert_close(prior.detach(), log_counts.mean(0))
    assert not prior.requires_grad, "no parameter of the prior may learn"
    trained = {id(p) for p in [*heads.fast_parameters(), *heads.slow_parameters()]}
    trained |= {id(p) for p in heads.sparse_parameters()}
    assert id(heads.pop_weight) not in trained
    assert id(heads.item_bias.weight) not in trained
    assert heads.item_ids is not None
    assert id(heads.item_ids.weight) in trained, "the towers still learn"


def test_a_bound_on_a_prior_that_does_not_learn_is_refused() -> None:
    with pytest.raises(ValueError, match="popularity_prior='learned'"):
        LLMConfig(popularity_prior="counts", item_bias_bound=1.0)


def test_without_id_tables_a_user_is_their_history_and_with_them_their_id_too() -> None:
    history = torch.nn.functional.normalize(torch.randn(1, 3, 8), dim=-1).expand(2, 3, 8)
    types = torch.ones(2, 3, dtype=torch.long)  # [E=2, L=3]: two users, one history
    buckets = torch.tensor([1, 2])
    plain = Heads(8, LLMConfig(id_buckets=16))
    assert plain.item_ids is None
    assert plain.user_ids is None
    sparse_widths = {p.shape[1] for p in plain.sparse_parameters()}
    assert sparse_widths == {1}, "only the one-column bias tables stay sparse"
    users = plain.compose_users(history, types, buckets)
    torch.testing.assert_close(users[0], users[1])
    with_ids = Heads(8, LLMConfig(id_buckets=16, id_embeddings=True))
    assert with_ids.user_ids is not None
    with torch.no_grad():
        with_ids.user_ids.weight[2] = 1.0
    users = with_ids.compose_users(history, types, buckets)
    assert not torch.allclose(users[0], users[1]), "the id row moves its own user only"
