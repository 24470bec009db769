"""Prequential metrics: a tie is ordered at random, so no metric rewards scoring alike."""

from __future__ import annotations

import numpy as np
import pytest

from learners.prequential import Prequential, reciprocal_rank


@pytest.mark.parametrize(("greater", "ties"), [(0, 0), (0, 99), (4, 7), (120, 3000)])
def test_the_reciprocal_rank_of_a_tie_is_its_mean_over_every_place_in_it(
    greater: int, ties: int
) -> None:
    places = np.arange(greater + 1, greater + ties + 2)  # the ranks the tie can give the truth
    expected = float(np.mean(1.0 / places))
    got = reciprocal_rank(np.array([float(greater)]), np.array([float(ties)]))
    assert got[0] == pytest.approx(expected, rel=1e-12)


def test_a_constant_scorer_gets_the_mrr_of_a_random_ranking() -> None:
    ev = Prequential(window=10)
    ev.record_ranks(np.zeros(4), np.full(4, 999.0))  # 1000 candidates, all tied
    chance = float(np.mean(1.0 / np.arange(1, 1001)))  # about 0.0075
    assert ev.summary()["mrr"] == pytest.approx(chance)
