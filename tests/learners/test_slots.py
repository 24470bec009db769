"""The slot index's handles: valid exactly while the id that gave them keeps its slot."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from learners.slots import SlotIndex

OPS = st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 9)), max_size=120)


@given(OPS, st.integers(1, 5))
def test_a_handle_resolves_while_its_id_holds_the_slot_and_never_after(
    ops: list[tuple[str, int]], capacity: int
) -> None:
    index = SlotIndex(capacity)
    tenure: dict[str, int] = {}  # id → which of its stays in the index it is on
    stays = 0
    taken: list[tuple[int, str, int]] = []  # (handle, id, stay)
    for op, n in ops:
        item = f"i{n}"
        if op == "add":
            if item not in index:
                stays += 1
                tenure[item] = stays
            slot, evicted = index.add(item)
            tenure.pop(evicted or "", None)
            taken.append((int(index.handles(np.array([slot]))[0]), item, tenure[item]))
        else:
            index.remove(item)
            tenure.pop(item, None)
        every = np.arange(capacity + 1)
        held = np.array([s in set(index.live_slots().tolist()) for s in every.tolist()])
        assert (index.handles(every)[~held] == -1).all(), "a slot without an id has no handle"
        for restored in (index, SlotIndex.from_json(index.to_json())):
            slots = restored.resolve(np.array([h for h, _, _ in taken], dtype=np.int64))
            for (_, item_id, stay), slot in zip(taken, slots.tolist(), strict=True):
                held = tenure.get(item_id) == stay
                assert slot == (restored.get(item_id) if held else -1)
