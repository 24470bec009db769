"""Bounded per-user history and its JSON round trip."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from learners.history import Consumed, EventMarker, Interaction, UserHistory


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


@given(st.lists(st.integers(0, 5), max_size=400), st.integers(1, 4), st.integers(1, 40))
def test_consumed_items_stay_bounded_counted_and_in_order(
    users: list[int], max_users: int, consumed_len: int
) -> None:
    h = UserHistory(max_users=max_users, max_len=2, consumed_len=consumed_len)
    truth: dict[str, list[int]] = {}
    for k, u in enumerate(users):
        for gone in h.add(f"u{u}", None, EventMarker(f"e{k}", k), Consumed.of(k, k % 3 == 0)):
            truth.pop(gone)
        truth.setdefault(f"u{u}", []).append(k)
        assert h.consumed_items <= h.capacity
    restored = UserHistory.from_json(h.to_json(), h.consumed_arrays())
    for history in (h, restored):
        for user, handles in truth.items():
            kept = handles[-consumed_len:]
            assert history.consumed(user).handles.tolist() == kept
            assert history.consumed(user).positive.tolist() == [k % 3 == 0 for k in kept]
            assert history.positives(user, 2).tolist() == [k for k in kept if k % 3 == 0][-2:]
    held = sum(len(r.consumed) for r in (h.get(u) for u in h.users()) if r is not None)
    assert h.consumed_items == held
    assert restored.consumed_arrays()["codes"].tolist() == h.consumed_arrays()["codes"].tolist()
