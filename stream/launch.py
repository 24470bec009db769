"""``lorastream run --world-size N``: N ranks of one model on this machine, restarted together.

Each rank is ``lorastream run`` with the variables ``torchrun`` would set (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), so the same worker runs
under ``torchrun`` or a Kubernetes job unchanged. When a rank exits with a failure the
others are stopped and the whole group starts again (it resumes from the newest
checkpoint), up to ``max_restarts`` times — except after an exit a restart cannot cure
(1: an invalid record under ``worker.on_invalid = "stop"``; 2: settings or setup). Each
rank gets an equal share of the cores (``OMP_NUM_THREADS``, unless set). SIGTERM/SIGINT
reach the launcher alone (the ranks run in sessions of their own), which forwards SIGTERM
to every rank; they stop together (a last checkpoint, then their commits), and the
launcher's exit status is the ranks' worst.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from stream.exits import NOT_RESTARTED

__all__ = ["launch"]

log = logging.getLogger(__name__)

STOP_GRACE_S = 120.0  # after a failure, how long the other ranks may take to stop


def launch(args: Sequence[str], world_size: int, max_restarts: int) -> int:
    """Run ``lorastream run *args`` as ``world_size`` ranks; the exit status."""
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for rank in ranks:
            if rank.poll() is None:
                rank.send_signal(signal.SIGTERM)

    ranks: list[subprocess.Popen[bytes]] = []
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    for attempt in range(max_restarts + 1):
        ranks[:] = _start(args, world_size)
        if stopping:  # asked to stop while these were starting
            request_stop(signal.SIGTERM, None)
        failed = _wait_for_a_failure(ranks)
        if failed is None or stopping:
            return max((abs(r.wait()) for r in ranks), default=0)
        code = ranks[failed].returncode
        _stop(ranks)
        if stopping or code in NOT_RESTARTED:
            return code
        if attempt == max_restarts:
            log.error("rank %d exited with %s; no restarts left", failed, code)
            return code or 1
        log.warning(
            "rank %d exited with %s: restarting the group (restart %d of %d)",
            failed,
            code,
            attempt + 1,
            max_restarts,
        )
    return 1


def _start(args: Sequence[str], world_size: int) -> list[subprocess.Popen[bytes]]:
    base = {**os.environ, "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1"}
    base["MASTER_PORT"] = str(_free_port())
    # the ranks share the machine's cores (as torchrun does, unless told otherwise)
    base.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // world_size)))
    command = [sys.executable, "-m", "stream.cli", "run", *args]
    return [  # sessions of their own: a terminal's Ctrl-C reaches the launcher, which forwards
        subprocess.Popen(
            command, env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}, start_new_session=True
        )
        for r in range(world_size)
    ]


def _wait_for_a_failure(ranks: list[subprocess.Popen[bytes]]) -> int | None:
    """The first rank to exit with a failure; None once every rank exited cleanly."""
    while True:
        codes = [r.poll() for r in ranks]
        for rank, code in enumerate(codes):
            if code not in (None, 0):
                return rank
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.2)


def _stop(ranks: list[subprocess.Popen[bytes]]) -> None:
    for rank in ranks:
        if rank.poll() is None:
            rank.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for rank in ranks:
        try:
            rank.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            rank.kill()
            rank.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
