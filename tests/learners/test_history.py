"""Bounded per-user history and its JSON round trip."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from learners.history import EventMarker, Interaction, UserHistory


@given(st.lists(st.integers(0, 30), max_size=300), st.integers(1, 8), st.integers(1, 5))
def test_history_never_exceeds_its_bounds(users: list[int], max_users: int, max_len: int) -> None:
    h = UserHistory(max_users=max_users, max_len=max_len)
    for i, u in enumerate(users):
        h.add(f"u{u}", Interaction(f"i{i}", "click", None, float(i)), EventMarker(f"e{i}", i))
        assert len(h) <= max_users
        assert all(len(h.recent(x)) <= max_len for x in h.users())
    if users:
        last = users[-1]
        assert h.get(f"u{last}") is not None
        assert h.recent(f"u{last}")[0].item_id == f"i{len(users) - 1}"
    assert UserHistory.from_json(h.to_json()).to_json() == h.to_json()
