"""The application object: everything one lorastream run needs, wired from one ``Settings``.

The CLI, the demo, the benchmarks and the tests all start workers here, and embedding
services can too::

    from schemas.settings import Settings
    from stream.app import App

    status = App(Settings.load()).run()      # blocks until SIGTERM/SIGINT; an exit status

or, in the background::

    running = App(settings, observers=[print]).start()
    ...
    status = running.stop()

:class:`App` builds the learner (unless given one), the metrics and the health endpoint,
the worker and its observers; :meth:`App.run` maps every way a run ends to an
:class:`ExitStatus`, so a failure is never mistaken for a clean stop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path

from kafka.errors import AuthorizationError

from learners.base import Learner
from learners.data_parallel import Shard
from schemas.settings import Settings
from stream.clients import StreamSetupError, not_authorized
from stream.exits import ExitStatus, status_of
from stream.http import Health, MetricsServer, serve
from stream.metrics import WorkerMetrics
from stream.observers import BatchObserver
from stream.ranks import RankWorker, join_group
from stream.worker import Worker

__all__ = ["App", "ExitStatus", "Running"]

log = logging.getLogger(__name__)


class App:
    """One worker run: learner, metrics, health endpoint, worker, observers, stop handling.

    ``learner`` defaults to the one ``settings.learner`` names; ``observers`` see every
    batch after the drift watch and the metrics; ``history`` appends a JSON line per batch
    (``lorastream report`` reads it); ``metrics`` defaults to a fresh registry.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        learner: Learner | None = None,
        observers: Iterable[BatchObserver] = (),
        history: Path | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.health = Health(settings.metrics.stall_after_s)
        self._learner = learner
        self._observers = list(observers)
        self._history = history
        self.worker: Worker | None = None
        self._shard: Shard | None = None
        self.error: BaseException | None = None

    @property
    def learner(self) -> Learner:
        if self._learner is None:
            from learners.registry import build_learner

            self._learner = build_learner(self.settings.learner, self.shard)
        return self._learner

    @property
    def shard(self) -> Shard | None:
        """This process's rank, when a launcher started several (``stream/ranks.py``)."""
        if self._shard is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            self._shard = join_group(self.settings)
        return self._shard

    def build(self) -> Worker:
        """The worker, with its learner and observers (builds the learner when needed)."""
        if self.worker is None:
            self.metrics.build_info.info(self._build_info())
            if (warning := partial_rate_warning(self.settings)) is not None:
                log.warning(warning)
            learner, shard = self.learner, self.shard
            if shard is None:
                self.worker = Worker(
                    self.settings,
                    learner,
                    self.metrics,
                    health=self.health,
                    observers=self._observers,
                )
            else:
                self.worker = RankWorker(
                    self.settings,
                    learner,
                    shard,
                    metrics=self.metrics,
                    health=self.health,
                    observers=self._observers,
                )
        return self.worker

    def run(self, handle_signals: bool = True) -> ExitStatus:
        """Run until stopped; the exit status (failures are logged, never raised)."""
        with ExitStack() as stack:
            try:
                self._serve_metrics(stack)
                if self._history is not None:
                    from stream.history import RunHistory

                    history = RunHistory(path=self._history)
                    stack.callback(history.close)
                    self._observers.append(history)
                worker = self.build()
                if handle_signals:
                    _install_signals(worker.request_stop)
                worker.run()
            except BaseException as exc:
                return self._failed(exc)
        log.info(
            "stopped cleanly after %d records (%d events learned)",
            worker.records_seen,
            worker.events_learned,
        )
        return ExitStatus.OK

    def start(self) -> Running:
        """Run in a background thread (no signal handling); returns its handle."""
        return Running(self)

    def _failed(self, exc: BaseException) -> ExitStatus:
        self.error = exc
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise exc
        status = status_of(exc)
        if status is None:
            log.exception("the worker failed: %s", exc)
            return ExitStatus.FAILED
        message = not_authorized(exc, self.settings) if isinstance(exc, AuthorizationError) else exc
        log.error("%s: %s", status.name.lower().replace("_", " "), message)
        return status

    def _serve_metrics(self, stack: ExitStack) -> MetricsServer | None:
        m = self.settings.metrics
        if not m.enabled:
            return None
        tls = (m.tls_certfile, m.tls_keyfile) if m.tls_certfile and m.tls_keyfile else None
        port = m.port + int(os.environ.get("LOCAL_RANK", "0")) if m.port else 0  # ranks
        try:
            server = serve(self.metrics.registry, self.health, m.host, port, tls)
        except OSError as exc:
            raise StreamSetupError(
                f"cannot serve metrics on {m.host}:{port} ({exc}); choose another port with"
                " --metrics-port or LORASTREAM_METRICS__PORT"
            ) from exc
        stack.callback(server.close)
        scheme = "https" if tls else "http"
        log.info("metrics on %s://%s:%d/metrics", scheme, m.host, server.port)
        return server

    def _build_info(self) -> dict[str, str]:
        learner = self.learner
        return {
            "version": version("lorastream"),
            "learner": learner.kind,
            "model": learner.info.model,
            "device": learner.info.device,
        }


class Running:
    """An :class:`App` running in a background thread."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.status: ExitStatus | None = None
        app.build()  # learner loading and settings errors surface here, in the caller
        self._thread = threading.Thread(target=self._run, name="lorastream-worker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.status = self.app.run(handle_signals=False)

    @property
    def worker(self) -> Worker:
        assert self.app.worker is not None
        return self.app.worker

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        return self.app.error

    def wait(self, timeout: float | None = None) -> ExitStatus | None:
        """The exit status once the run ended (None if still running after ``timeout``)."""
        self._thread.join(timeout)
        return self.status

    def stop(self, timeout: float | None = None) -> ExitStatus:
        """Finish the batch in hand, checkpoint, commit; the exit status."""
        self.worker.request_stop()
        limit = timeout if timeout is not None else self.app.settings.worker.shutdown_timeout_s + 30
        status = self.wait(limit)
        if status is None:
            raise TimeoutError(f"the worker did not stop within {limit:.0f}s")
        return status


def partial_rate_warning(settings: Settings) -> str | None:
    """What to tell an operator whose batches can never reach the LLM learner's whole rates.

    >>> from schemas.settings import Settings
    >>> partial_rate_warning(Settings(learner={"kind": "llm"})) is None
    True
    >>> small = Settings(learner={"kind": "llm"}, batch={"max_events": 16})
    >>> print(partial_rate_warning(small).split(": ")[1])  # doctest: +ELLIPSIS
    every step learns at 16/64 of the learner's rates; set ... = 16 for whole rates
    """
    full, most = settings.learner.llm.lr_batch_events, settings.batch.max_events
    if settings.learner.kind != "llm" or not full or most >= full:
        return None
    return (
        f"batch.max_events ({most}) is under learner.llm.lr_batch_events ({full}): every step"
        f" learns at {most}/{full} of the learner's rates; set learner.llm.lr_batch_events ="
        f" {most} for whole rates"
    )


def _install_signals(stop: Callable[[], None]) -> None:
    state = {"signals": 0}

    def handler(signum: int, _frame: object) -> None:
        state["signals"] += 1
        if state["signals"] > 1:
            os._exit(130)  # a second signal: the operator insists
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
