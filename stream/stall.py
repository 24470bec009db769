"""Stalled partitions: assigned, behind the broker (or without a position), and silent.

kafka-python 3.0 was seen, rarely and under load, to keep an assigned partition from ever
being fetched: the worker polled for minutes and nothing came, with no error anywhere. A
client bug is not ours to fix, but a worker that silently reads nothing is: the watch names
such a partition with the client's own view of it, counts it, and the worker seeks it
again where it stands — a seek clears a validation the client waits on, and a resume a
pause — so the run goes on after ``after_s`` instead of never.

A partition's silence is the polling time since a poll last returned a record from it —
time spent learning or checkpointing between polls does not count, so a slow learner step
is never mistaken for a stall. It is *stalled* when it has been silent ``after_s`` and still
has something to read (or no position at all); an idle partition, at the broker's high
watermark, never is. Each partition is checked once per ``after_s`` of silence.

>>> watch = StallWatch(after_s=30.0)
>>> both = {("ev", 0), ("ev", 1)}
>>> watch.polled(both, heard={("ev", 0)}, seconds=20.0)
>>> watch.polled(both, heard=set(), seconds=10.0)  # ev[1] silent 30 s of polling, ev[0] 10 s
>>> watch.stalled(behind=set)  # every partition asked about has something to read
[('ev', 1)]
>>> watch.stalled(behind=set)  # its clock restarted: named again after another 30 s
[]
>>> watch.polled(both, heard=set(), seconds=30.0)
>>> watch.stalled(behind=lambda keys: set())  # both at the high watermark: idle
[]
"""

from __future__ import annotations

import faulthandler
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from stream.offsets import PartitionKey

__all__ = ["CallWatch", "StallWatch"]

log = logging.getLogger(__name__)


class StallWatch:
    """Polling time since each assigned partition last returned a record."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._silent: dict[PartitionKey, float] = {}  # bounded by the assignment

    def polled(
        self, assigned: Iterable[PartitionKey], heard: set[PartitionKey], seconds: float
    ) -> None:
        """A poll of ``seconds`` returned records from ``heard``; partitions no longer
        assigned are forgotten."""
        silent = self._silent
        self._silent = {k: 0.0 if k in heard else silent.get(k, 0.0) + seconds for k in assigned}

    def stalled(
        self, behind: Callable[[list[PartitionKey]], set[PartitionKey]]
    ) -> list[PartitionKey]:
        """Partitions silent ``after_s`` that have something to read: ``behind`` is asked
        once, with all of them, and returns those. Every partition checked restarts its
        clock, so each is checked once per ``after_s``."""
        due = sorted(k for k, t in self._silent.items() if t >= self.after_s)
        if not due:
            return []
        for key in due:
            self._silent[key] = 0.0
        found = behind(due)
        return [k for k in due if k in found]


class CallWatch:
    """Watches, from a thread of its own, how long the work thread has been inside one call
    into the Kafka client, and wakes the client's I/O loop when that call overstays.

    kafka-python 3 runs each blocking call (``poll`` included, whatever its timeout) as a
    task on its I/O thread and waits for it with no bound of its own. A worker was caught
    with its work thread in such a wait for minutes, the I/O thread asleep in ``select``
    with nothing due: a task queued without the loop being woken. ``poke`` (the client's
    own thread-safe wakeup) makes the loop look at its queue again; it is harmless when
    nothing was lost. The call is named in the log when poked, and again when it returns,
    so the log says whether the poke was what it needed; after ``dump_after_s`` every
    thread's stack is printed once.

    >>> import threading
    >>> released = threading.Event()
    >>> watch = CallWatch(poke=released.set, poke_after_s=0.05, every_s=0.01)
    >>> watch.start()
    >>> with watch.call("poll"):
    ...     released.wait(5.0)  # a call that only returns once poked
    True
    >>> watch.stop()
    >>> watch.pokes >= 1
    True
    """

    def __init__(
        self,
        poke: Callable[[], None],
        poke_after_s: float = 5.0,
        dump_after_s: float = 60.0,
        every_s: float = 1.0,
    ) -> None:
        self._poke, self.poke_after_s, self.dump_after_s = poke, poke_after_s, dump_after_s
        self._every_s = every_s
        self._call: tuple[str, float] | None = None  # what the work thread is inside, since
        self._poked_call: tuple[str, float] | None = None
        self._dumped_call: tuple[str, float] | None = None
        self.pokes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lorastream-call-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    @contextmanager
    def call(self, what: str) -> Iterator[None]:
        """The work thread is inside the client's ``what`` for the duration."""
        entered = (what, time.monotonic())
        with self._lock:
            self._call = entered
        try:
            yield
        finally:
            with self._lock:
                self._call, woken = None, self._poked_call is entered
            if woken:
                log.warning(
                    "the Kafka client's %s returned %.1fs after it was entered (woken after %.0fs)",
                    what,
                    time.monotonic() - entered[1],
                    self.poke_after_s,
                )

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            with self._lock:  # marked before the poke, so its return is always named
                call = self._call
                inside = 0.0 if call is None else time.monotonic() - call[1]
                first = call is not None and inside >= self.poke_after_s
                first = first and self._poked_call is not call
                if first:
                    self._poked_call = call
            if call is None or inside < self.poke_after_s:
                continue
            if first:
                log.warning(
                    "the Kafka client's %s has not returned for %.0fs: waking its I/O loop",
                    call[0],
                    inside,
                )
            self.pokes += 1
            self._poke()
            if inside >= self.dump_after_s and self._dumped_call is not call:
                self._dumped_call = call
                log.error("the Kafka client's %s has not returned for %.0fs", call[0], inside)
                try:
                    faulthandler.dump_traceback(all_threads=True)
                except (AttributeError, ValueError, OSError):  # stderr without a file behind it
                    log.error("no stack dump: stderr is not a file")
