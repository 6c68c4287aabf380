"""``Worker``: startup, serve, drain, shutdown. The sole owner of the worker's tasks.

::

    startup   HTTP (/livez answers while connecting), connect, bind the app's publisher,
              startup hooks, subscribe, then /readyz is 200
    serve     until SIGTERM or SIGINT; SIGUSR1 pauses (unsubscribe, stay connected),
              SIGUSR2 resumes
    shutdown  /readyz 503, UNSUBSCRIBE (the platform gives this share to the peers at once),
              finish what the platform had already sent within drain_timeout and ack it,
              shutdown hooks, DISCONNECT, return

Signal handlers only flip state and wake the one coroutine that acts on it. A second SIGINT
gives up the drain (what was not finished stays unacknowledged) and returns at once.
Library code never exits: failures are raised (NotAuthorized, ConnectError, ConfigError) for
the CLI to map to exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any, Final

from prometheus_client import CollectorRegistry

from worker import __version__, loops
from worker.app import App
from worker.config import Settings
from worker.connection import Connection, TransportFactory, transport_factory
from worker.errors import ConnectError, WorkerError
from worker.handling import Observer
from worker.http import HttpServer
from worker.loops import loop_name
from worker.metrics import Metrics
from worker.pipeline import Pipeline
from worker.saturation import Saturation
from worker.watchdog import LoopWatchdog

log = logging.getLogger("worker")

#: how often the drain looks whether the pipeline has gone idle
_SIGNALS: Final = ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2")


class Worker:
    """Serves one App on one platform connection; ``await worker.serve()`` until stopped."""

    def __init__(
        self,
        app: App,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        transport: TransportFactory | None = None,
        startup_timeout: float | None = None,
        on_ready: Callable[[Worker], None] | None = None,
        handle_signals: bool = True,
        observer: Observer | None = None,
    ) -> None:
        """``on_ready`` is called once subscribed, in place of logging the ready line."""
        self.app = app
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = worker_metrics(self.registry, settings)
        #: the scaling signal: worker_concurrency and worker_handler_saturation
        self.saturation = Saturation(self.metrics, settings.concurrency)
        self.registry.register(self.saturation)
        self.pipeline = Pipeline(app, settings, self.metrics, observer=observer)
        self.filters = app.filters()
        websockets = settings.mqtt_transport == "websockets"
        factory = transport or transport_factory(settings.transport, websockets=websockets)
        self.connection = Connection(
            settings, self.filters, self.pipeline, self.metrics, transport_factory=factory
        )
        host, port = settings.metrics_host, settings.metrics_port
        #: reports a blocked event loop (a blocked loop cannot answer /livez, so it logs why)
        self.watchdog = LoopWatchdog()
        self.http = HttpServer(
            host,
            port,
            registry=self.registry,
            readiness=self.readiness,
            watchdog=self.watchdog,
            details=self.readiness_details,
        )
        self._startup_timeout = startup_timeout
        self._on_ready = on_ready
        self._handle_signals = handle_signals
        self._wake = asyncio.Event()  # set on every request; the serving loop reads the state
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._want_paused = False
        self._draining = False
        #: set once the worker is subscribed and serving
        self.started = asyncio.Event()
        #: True when a second SIGINT cut the drain short
        self.forced = False
        #: work left unfinished by the drain (never acknowledged)
        self.abandoned = 0

    # --- state the signal handlers flip -------------------------------------------------

    def request_stop(self) -> None:
        """Begin the graceful shutdown (SIGTERM, first SIGINT)."""
        self._stopping.set()
        self._wake.set()

    def request_force(self) -> None:
        """Give up the drain and return (second SIGINT)."""
        self._force.set()
        self._wake.set()

    def request_pause(self, paused: bool) -> None:
        """Pause (SIGUSR1) or resume (SIGUSR2) taking a share of the messages."""
        self._want_paused = paused
        self._wake.set()

    def _on_sigint(self) -> None:
        if self._stopping.is_set():
            log.warning("second interrupt: giving up the drain")
            self.request_force()
        else:
            self.request_stop()

    def readiness(self) -> str | None:
        """None when connected, subscribed, not paused, not draining and no route keeps
        failing (``Pipeline.degraded``); else why not."""
        conn = self.connection
        if self._draining or self._stopping.is_set():
            return "draining"
        if not conn.connected:
            return conn.problem or "not connected"
        if conn.paused:
            return "paused"
        if not conn.subscribed:
            return conn.problem or "not subscribed"
        return self.pipeline.degraded()

    def readiness_details(self) -> dict[str, object]:
        """What /readyz adds to its answer: how far behind the handlers are."""
        return {"handling_lag_seconds": round(self.pipeline.handling_lag(), 3)}

    @property
    def metrics_url(self) -> str:
        """Where /metrics is served (the bound port once started)."""
        return f"{self.http.url}/metrics"

    def describe(self) -> str:
        """The startup line: who, where, what, and where to look."""
        s = self.settings
        loop = loop_name(asyncio.get_running_loop())
        return (
            f"worker ready: client ID {s.client_id} on {s.host}:{s.port} "
            f"({s.profile.value} profile, {s.transport} transport, {loop}); "
            f"filters {', '.join(s.subscription(f) for f in self.filters)}; "
            f"metrics {self.metrics_url}"
        )

    # --- the lifecycle ---------------------------------------------------------------------

    async def serve(self) -> None:
        """Run until stopped; raises NotAuthorized, ConnectError or ConfigError on failure."""
        await self.http.start()
        self.watchdog.start()
        self._install_signals()
        # Outside the TaskGroup: it never ends on its own, the group would wait for it.
        sampler = asyncio.ensure_future(self.saturation.run())
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.pipeline.run(), name="worker-pipeline")
                link = tg.create_task(self.connection.run(), name="worker-connection")
                await self._lifecycle(link)
        except BaseExceptionGroup as group:
            raise _single(group) from None
        finally:
            sampler.cancel()
            self.watchdog.stop()
            self._remove_signals()
            self.app.bind_publisher(None)
            await self.http.close()

    async def _lifecycle(self, link: asyncio.Task[None]) -> None:
        hooks_ran = False
        try:
            if await self._startup():
                hooks_ran = True
                await self._open()
                await self._serve()
        finally:
            await self._shutdown(hooks_ran, link)

    async def _startup(self) -> bool:
        """Connect and run the startup hooks; False when stopped first."""
        if not await self._until(self.connection.wait_online(), "connect"):
            return False
        self.app.bind_publisher(self.connection.publish)
        await self.app.startup()
        return True

    async def _open(self) -> None:
        # Both steps give way to a stop request: a platform that never answers the SUBSCRIBE
        # must not hold a SIGTERM until the connection times out.
        if not await self._until(self.connection.open_intake(), "subscribe"):
            return
        if not await self._until(self.connection.ready.wait(), "subscribe"):
            return
        self.started.set()
        # One ready line: the caller's (``worker run`` prints it on stdout) or the log's, not
        # both, which a shared stdout and stderr would show twice.
        if self._on_ready is None:
            log.info("%s", self.describe())
        else:
            self._on_ready(self)

    async def _until(self, ready: Coroutine[Any, Any, object], what: str) -> bool:
        """Wait for ``ready`` or a stop request; ConnectError past the startup deadline."""
        waiter = asyncio.ensure_future(ready)
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, stopper}, timeout=self._startup_timeout, return_when="FIRST_COMPLETED"
            )
        finally:
            waiter.cancel()
            stopper.cancel()
        if waiter in done:
            return True
        if stopper in done:
            return False
        raise ConnectError(
            f"could not {what} to {self.connection.address} within {self._startup_timeout:g}s"
            f" ({self.connection.problem or 'no answer'})"
        )

    async def _serve(self) -> None:
        """Act on pause/resume (also those asked for during startup) until a stop request."""
        while True:
            self._wake.clear()  # before reading the state: a later request wakes the wait
            if self._stopping.is_set():
                return
            if self._want_paused and not self.connection.paused:
                log.info("pausing: unsubscribing, staying connected")
                await self.connection.pause()
            elif not self._want_paused and self.connection.paused:
                log.info("resuming: subscribing again")
                await self.connection.resume()
            else:
                await self._wake.wait()

    async def _shutdown(self, hooks_ran: bool, link: asyncio.Task[None]) -> None:
        """Unsubscribe, drain, hooks, DISCONNECT; a second SIGINT cuts the drain short."""
        self._draining = True
        if link.done():  # the connection failed for good; the TaskGroup raises its error
            self.pipeline.stop()
            return
        drain = asyncio.ensure_future(self._drain())
        forced = asyncio.ensure_future(self._force.wait())
        await asyncio.wait({drain, forced}, return_when="FIRST_COMPLETED")
        forced.cancel()
        if not drain.done():
            self.forced = True
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
            self.abandoned += await self.pipeline.drain(0)
        else:
            drain.result()
        if hooks_ran:
            await self.app.shutdown()
        await self.connection.close()
        noun = "message" if self.abandoned == 1 else "messages"
        log.info("stopped (%d %s abandoned)", self.abandoned, noun)

    async def _drain(self) -> None:
        if not self.started.is_set():
            # Never subscribed, so nothing reached a handler: no drain. The connection may be
            # mid-handshake or waiting for a SUBACK, which ``Connection.close`` abandons.
            self.abandoned += await self.pipeline.drain(0)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_timeout
        log.info("stopping: unsubscribing, then draining for up to %gs", deadline - loop.time())
        # partial batches are handled now, not after their max_wait
        self.pipeline.hurry()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self.connection.stop_intake()
                await self._settle()
        self.abandoned += await self.pipeline.drain(max(0.0, deadline - loop.time()))

    async def _settle(self) -> None:
        """Handle and acknowledge what the platform sent until it sends no more.

        After UNSUBSCRIBE a broker still delivers what it had queued for this client (Mosquitto
        releases its queue as acks free the in-flight window), and with a clean session
        whatever is left at DISCONNECT is lost. So: wait for the pipeline to go idle, let its
        acks leave, make a round trip, and repeat until the round trip brought nothing new.
        """
        pipeline, connection = self.pipeline, self.connection
        while True:
            await pipeline.idle()  # nothing queued or running, and the acks have left
            before = connection.received
            await connection.barrier()
            if connection.received == before and not (pipeline.intake_depth or pipeline.in_flight):
                return

    # --- signals ---------------------------------------------------------------------------

    def _install_signals(self) -> None:
        if not self._handle_signals:
            return
        loop = asyncio.get_running_loop()
        actions: dict[str, Callable[[], None]] = {
            "SIGTERM": self.request_stop,
            "SIGINT": self._on_sigint,
            "SIGUSR1": lambda: self.request_pause(True),
            "SIGUSR2": lambda: self.request_pause(False),
        }
        for name, action in actions.items():
            sig = getattr(signal, name, None)
            if sig is not None:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, action)

    def _remove_signals(self) -> None:
        if not self._handle_signals:
            return
        loop = asyncio.get_running_loop()
        for name in _SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)


def worker_metrics(registry: CollectorRegistry, settings: Settings) -> Metrics:
    """The worker's metrics on ``registry``, with ``worker_info`` naming this instance."""
    return Metrics(
        registry,
        app=settings.app_id,
        client_id=settings.client_id,
        instance=settings.instance,
        profile=settings.profile.value,
        version=__version__,
    )


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error a failed TaskGroup carries (the CLI maps WorkerErrors), else the group."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    if len(leaves) == 1:
        return leaves[0]
    errors = [e for e in leaves if isinstance(e, WorkerError)]
    return errors[0] if errors else group


def run_worker(app: App, settings: Settings, **options: Any) -> Worker:
    """Serve ``app`` on a new loop of ``settings.loop`` until stopped; the finished Worker.

    ``options`` go to ``Worker``. Raises what ``Worker.serve`` raises.
    """

    async def main() -> Worker:
        worker = Worker(app, settings, **options)
        await worker.serve()
        return worker

    return loops.run(main(), settings.loop)
