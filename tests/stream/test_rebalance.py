"""The rebalance listener's commit on revocation is bounded by the client's own timer."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from schemas.settings import Settings
from stream.clients import make_consumer
from stream.offsets import OffsetBook
from stream.rebalance import Rebalance

pytestmark = pytest.mark.kafka


class Owner:
    def __init__(self) -> None:
        self.book = OffsetBook(checkpoints=True)

    def show_assignment(self) -> None:
        pass


def listener_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "stream.rebalance" and r.levelno >= logging.WARNING
    ]


def test_the_pinned_client_has_the_timer_the_revocation_commit_is_bounded_by(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """A kafka-python without it would let a stop wait out the 30 s request timeout: the
    listener says so when it is made, and this test fails on such a client."""
    consumer = make_consumer(make_settings())
    try:
        with caplog.at_level(logging.WARNING, logger="stream.rebalance"):
            Rebalance(Owner(), consumer, commit_timeout_ms=4000)
            assert listener_warnings(caplog) == []
            Rebalance(Owner(), object(), commit_timeout_ms=4000)  # type: ignore[arg-type]
            assert any("no _manager.wait_for" in w for w in listener_warnings(caplog))
    finally:
        consumer.close(autocommit=False)
