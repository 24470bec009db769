"""How a run ends: the exit status of ``lorastream run``, and what each failure means for it.

One rule for every place that must tell a refusal (a restart cannot cure it) from a failure:
the application object (:mod:`stream.app`), the ranks, whose others stop as rank 0 does
when it cannot restore (:mod:`stream.ranks`), and the launcher, which restarts a group
except after an exit in ``NOT_RESTARTED`` (:mod:`stream.launch`).

>>> from stream.checkpoint import CheckpointError, CheckpointWriteError
>>> status_of(CheckpointError("the checkpoint was made consuming 'clicks'"))
<ExitStatus.SETUP: 2>
>>> status_of(CheckpointWriteError("the disk is full")), status_of(ValueError("a bug"))
(<ExitStatus.FAILED: 4>, None)
"""

from __future__ import annotations

from enum import IntEnum
from functools import cache

__all__ = ["NOT_RESTARTED", "ExitStatus", "status_of"]


class ExitStatus(IntEnum):
    """How a run ended (the process exit status of ``lorastream run``)."""

    OK = 0  # stopped on request, checkpointed and committed
    INVALID_RECORD = 1  # worker.on_invalid=stop met a bad record
    SETUP = 2  # bad settings, unreachable or refusing broker, missing topics, unusable state
    SHUTDOWN_TIMEOUT = 3  # stopping took longer than worker.shutdown_timeout_s
    FAILED = 4  # failed while running; nothing past the newest checkpoint was committed


#: Exit statuses a restart cannot cure: an invalid record under on_invalid=stop, bad settings.
NOT_RESTARTED = frozenset({ExitStatus.INVALID_RECORD, ExitStatus.SETUP})


@cache
def _failures() -> list[tuple[tuple[type[BaseException], ...], ExitStatus]]:
    """What each failure means for the exit status (the first match wins). Imported when
    first asked, so that the launcher (:mod:`stream.launch`) reads the statuses without
    loading the worker and torch."""
    from kafka.errors import AuthorizationError

    from stream.checkpoint import CheckpointError, CheckpointWriteError
    from stream.clients import StreamSetupError
    from stream.poison import TooManyPoisonRecords
    from stream.publisher import DeliveryError
    from stream.worker import InvalidRecord, WorkerFailed

    return [
        (
            (CheckpointWriteError, WorkerFailed, TooManyPoisonRecords, DeliveryError),
            ExitStatus.FAILED,
        ),
        ((StreamSetupError, CheckpointError, AuthorizationError), ExitStatus.SETUP),
        ((InvalidRecord,), ExitStatus.INVALID_RECORD),
    ]


def status_of(exc: BaseException) -> ExitStatus | None:
    """The exit status a known failure means; None for an unforeseen one (a bug: FAILED,
    logged with its stack)."""
    for kinds, status in _failures():
        if isinstance(exc, kinds):
            return status
    return None
