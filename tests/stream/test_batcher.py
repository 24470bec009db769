"""The micro-batcher closes on count, bytes or wait; discarding keeps the rest in order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.dead_letter import RejectCode
from stream.batcher import MicroBatcher
from stream.decode import Decoded, RawRecord, Rejection


def rec(partition: int, offset: int, size: int = 10) -> Decoded:
    raw = RawRecord("t", partition, offset, 0, None, b"x" * size)
    return Rejection(raw, RejectCode.MALFORMED_JSON, "not JSON")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_closes_on_count_bytes_and_wait() -> None:
    clock = Clock()
    by_count = MicroBatcher(max_events=3, max_wait_s=10, max_bytes=10_000, clock=clock)
    by_count.add([rec(0, i) for i in range(3)])
    assert by_count.ready()
    by_bytes = MicroBatcher(max_events=100, max_wait_s=10, max_bytes=25, clock=clock)
    by_bytes.add([rec(0, 0), rec(0, 1)])
    assert not by_bytes.ready()
    by_bytes.add([rec(0, 2)])
    assert by_bytes.ready()
    by_wait = MicroBatcher(max_events=100, max_wait_s=1.0, max_bytes=10_000, clock=clock)
    by_wait.add([rec(0, 0)])
    clock.now = 0.99
    assert not by_wait.ready()
    clock.now = 1.0
    assert by_wait.ready()


@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(1, 50)), max_size=60),
    st.sets(st.integers(0, 3)),
)
def test_discard_drops_only_the_revoked_partitions(
    records: list[tuple[int, int]], revoked: set[int]
) -> None:
    b = MicroBatcher(max_events=1000, max_wait_s=1, max_bytes=10**9, clock=Clock())
    items = [rec(p, i, size) for i, (p, size) in enumerate(records)]
    b.add(items)
    b.discard({("t", p) for p in revoked})
    kept = [d for d in items if d.record.partition not in revoked]
    assert b.take().items == kept
    assert b.bytes == 0


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1000))))
def test_next_offsets_are_one_past_the_last_record(records: list[tuple[int, int]]) -> None:
    b = MicroBatcher(max_events=10**6, max_wait_s=1, max_bytes=10**9, clock=Clock())
    b.add([rec(p, o) for p, o in records])
    expected: dict[tuple[str, int], int] = {}
    for p, o in records:
        expected[("t", p)] = max(expected.get(("t", p), 0), o + 1)
    assert b.take().next_offsets() == expected
