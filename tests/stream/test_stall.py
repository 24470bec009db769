"""Stalled partitions and overstaying client calls (stream/stall.py), without a broker."""

from __future__ import annotations

import threading
import time

import pytest

from stream.stall import CallWatch, StallWatch


def test_only_a_silent_partition_with_records_to_read_is_stalled() -> None:
    watch = StallWatch(after_s=1.0)
    watch.polled({("ev", 0), ("ev", 1)}, heard=set(), seconds=1.0)
    assert watch.stalled(behind=lambda keys: {("ev", 1)}) == [("ev", 1)]
    watch.polled({("ev", 0)}, heard=set(), seconds=5.0)  # ev[1] revoked meanwhile
    assert watch.stalled(behind=set) == [("ev", 0)], "a revoked one is forgotten"


def test_time_between_polls_is_not_silence() -> None:
    watch = StallWatch(after_s=1.0)
    for _ in range(9):  # nine polls of 0.1 s, however long the learner took between them
        watch.polled({("ev", 0)}, heard=set(), seconds=0.1)
    assert watch.stalled(behind=set) == []


def test_a_call_that_returns_in_time_is_never_poked() -> None:
    pokes: list[float] = []
    watch = CallWatch(poke=lambda: pokes.append(time.monotonic()), poke_after_s=0.5, every_s=0.01)
    watch.start()
    try:
        for _ in range(20):
            with watch.call("poll"):
                time.sleep(0.02)
    finally:
        watch.stop()
    assert pokes == []


def test_an_overstaying_call_is_woken_and_its_return_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    woken = threading.Event()
    watch = CallWatch(poke=woken.set, poke_after_s=0.1, dump_after_s=60.0, every_s=0.01)
    watch.start()
    try:
        with watch.call("poll"):
            assert woken.wait(5.0), "the watch wakes the client's loop"
    finally:
        watch.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert any("poll has not returned" in line for line in lines), "the poke is named"
    assert any("poll returned" in line for line in lines), "so is the return after it"
