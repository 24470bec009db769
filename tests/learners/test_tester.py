"""The LLM learner's prequential tests: what each test's ranking leaves out."""

from __future__ import annotations

import numpy as np

from learners.tester import Tester


def test_a_tests_ranking_leaves_out_its_users_consumed_items_among_the_candidates() -> None:
    candidates = np.array([1, 2, 5, 7])  # sorted slots, a sample that lacks slot 9
    consumed = [np.array([5, 9, 1]), np.zeros(0, np.int64), np.array([2])]
    excluded = Tester._excluded(consumed, candidates)
    pairs = sorted(zip(excluded.tests.tolist(), excluded.columns.tolist(), strict=True))
    assert pairs == [(0, 0), (0, 2), (2, 1)]  # (test, column of the slot it leaves out)
    nothing = Tester._excluded([], candidates)
    assert nothing.tests.shape == nothing.columns.shape == (0,)
