"""The connection supervisor: connect, subscribe, feed the pipeline, reconnect, resubscribe.

One ``Connection`` keeps one worker on its platform for the life of the process:

- it connects with the client ID of the profile and identity (docs/guide/configuration.md),
  with a clean session (a durable one for the shared-durable identity), and subscribes every
  distinct filter at ``settings.qos`` in one SUBSCRIBE (``$share/{org}:{app}/...`` on the
  ``mqtt`` profile);
- it hands every batch the transport reads to the sink (the pipeline) together with that
  connection's acker, so an ack can never reach a later connection;
- a lost connection is retried forever with capped, jittered exponential backoff, and every
  filter is subscribed again: a refused SUBACK is an error that drops the connection and
  retries, never a silent connected-but-deaf worker;
- a refused CONNACK for credentials or client ID is raised at once (NotAuthorized), never
  retried: retrying cannot fix it, and the process should exit so that Kubernetes shows it;
- a unique client ID (standalone ``a:``, ``A:org:app:instance``, the ``mqtt`` profile's) that
  keeps being closed shortly after connecting is reported as what it almost always is:
  another process connecting with the same client ID.

``pause``/``resume`` unsubscribe and resubscribe while staying connected (SIGUSR1/SIGUSR2:
the "clients two and three unsubscribe" step of IBM's scalable-application example);
``stop_intake`` does the same for shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from worker.config import Settings
from worker.errors import ConfigError, ConnectError, NotAuthorized
from worker.identity import IdentityMode
from worker.messages import MessageProperties
from worker.metrics import Metrics
from worker.mqtt import MQTT_3_1_1, MQTT_5, SubackReturnCode, connack_meaning
from worker.options import Profile
from worker.transports import hints
from worker.transports.base import (
    ConnectOptions,
    Inbound,
    ProtocolViolation,
    ServerRefused,
    Transport,
    reason_name,
)

log = logging.getLogger(__name__)

Acker = Callable[[Sequence[int]], None]
TransportFactory = Callable[[], Transport]
#: MQTT 5 session expiry of a shared-durable instance: long enough for a pod to be rescheduled
#: and come back for the messages its share was sent meanwhile (the local platform's cap too)
DURABLE_SESSION_EXPIRY: Final = 3600


class BatchSink(Protocol):
    """Where batches go: ``Pipeline.put`` (may wait, which is the QoS 1 back-pressure)."""

    async def put(self, batch: Sequence[Inbound], ack: Acker) -> None:
        """Take a batch; ``ack`` releases QoS 1 packet IDs on the connection it came from."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter: attempt n waits in [d/2, d], d = min(cap, b*f^n).

    The jitter spreads the reconnects of many replicas after a platform restart, so they do
    not all knock at the same instant.
    """

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt`` (0-based) of a run of failures."""
        ceiling = min(self.cap, self.initial * self.factor ** min(attempt, 64))
        return rng.uniform(ceiling / 2, ceiling)


def connect_options(settings: Settings) -> ConnectOptions:
    """What to connect with: client ID by profile and identity; a clean session, but for
    the shared-durable identity, whose session outlives a restart (for DURABLE_SESSION_EXPIRY
    seconds on MQTT 5) so the messages sent to a killed instance come back to it."""
    username, password = settings.credentials()
    durable = settings.identity is IdentityMode.SHARED_DURABLE
    return ConnectOptions(
        host=settings.host,
        port=settings.port,
        client_id=settings.client_id,
        username=username,
        password=password,
        keepalive=settings.keepalive,
        clean_session=not durable,
        session_expiry=DURABLE_SESSION_EXPIRY if durable else 0,
        tls=settings.tls,
        cafile=settings.cafile,
        websockets=settings.mqtt_transport == "websockets",
        protocol_level=MQTT_5 if settings.mqtt_version == "5" else MQTT_3_1_1,
        receive_maximum=settings.receive_maximum,
        max_packet_size=settings.max_packet_size,
    )


def transport_factory(name: str, *, websockets: bool = False) -> TransportFactory:
    """The transport implementation named by ``--transport``.

    WebSockets always go through aiomqtt: the native transport speaks MQTT over TCP and TLS
    only, and a default should not turn a working WebSocket deployment into a config error.
    """
    if name == "aiomqtt" or (name == "native" and websockets):
        from worker.transports.aiomqtt_transport import AiomqttTransport

        return AiomqttTransport
    if name == "native":
        from worker.transports.native import NativeTransport

        return NativeTransport
    raise ConfigError(f"--transport={name!r}: accepted are aiomqtt and native")


def has_unique_client_id(settings: Settings) -> bool:
    """True when one connection at a time may use the client ID (all but shared ``A:``)."""
    return settings.profile is Profile.MQTT or settings.identity is not IdentityMode.SHARED


class Connection:
    """Keeps one worker connected and subscribed; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        filters: Sequence[str],
        sink: BatchSink,
        metrics: Metrics,
        *,
        transport_factory: TransportFactory,
        backoff: Backoff | None = None,
        stable_after: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self._options = connect_options(settings)
        self._subscriptions = [(settings.subscription(f), settings.qos) for f in filters]
        self._sink = sink
        self._metrics = metrics
        self._factory = transport_factory
        self._backoff = backoff or Backoff()
        #: a connection that lasted this long resets the backoff; a shorter one is suspect
        self._stable_after = stable_after
        self._rng = rng or random.Random()
        self._unique_id = has_unique_client_id(settings)
        self._transport: Transport | None = None
        #: the connection being served; ``_transport`` is set only once its SUBSCRIBE is answered
        self._current: Transport | None = None
        self._lock = asyncio.Lock()  # one SUBSCRIBE/UNSUBSCRIBE exchange at a time
        self._online = asyncio.Event()
        self._closed = asyncio.Event()
        self._intake_open = False
        self._paused = False
        self._stopping = False
        self.subscribed = False
        #: set once intake is open and a connection is subscribed (or paused) for the first time
        self.ready = asyncio.Event()
        #: messages handed to the sink, over all connections
        self.received = 0
        #: why the worker is not connected and subscribed, for /readyz
        self.problem: str | None = "connecting"
        #: messages of the current connection handed to the sink; set on every change
        self._handed = 0
        self._progress = asyncio.Event()

    @property
    def client_id(self) -> str:
        """The MQTT client ID this worker connects with."""
        return self._options.client_id

    @property
    def address(self) -> str:
        """host:port of the platform."""
        return f"{self._options.host}:{self._options.port}"

    @property
    def connected(self) -> bool:
        """True while a connection is up."""
        return self._transport is not None

    @property
    def paused(self) -> bool:
        """True between ``pause`` and ``resume``."""
        return self._paused

    def _wanted(self) -> bool:
        return self._intake_open and not (self._paused or self._stopping)

    async def wait_online(self) -> None:
        """Until a connection is up (the runner runs the startup hooks then)."""
        await self._online.wait()

    async def open_intake(self) -> None:
        """Subscribe now and on every reconnect: after the startup hooks, so that no message
        arrives before the app is ready for it."""
        self._intake_open = True
        await self._change_subscription(None)

    async def run(self) -> None:
        """Connect and serve until ``close``; reconnects forever. Raises NotAuthorized."""
        failures = 0  # consecutive failed or short-lived connections: the backoff exponent
        short_lived = 0
        first = True
        while not self._closed.is_set():
            transport = self._factory()
            try:
                if not await self._connect_unless_closed(transport, first):
                    return
            except NotAuthorized as exc:
                # Retrying cannot fix it: the caller reports it once (the CLI exits 4).
                self.problem = connack_meaning(exc.return_code)
                raise
            except ConnectError as exc:
                reason = hints.explain(exc, self._options)
                self.problem = f"not connected: {reason}"
                await self._wait_before_retry(failures, reason)
                failures += 1
                continue
            first = False
            started = asyncio.get_running_loop().time()
            self._current = transport
            try:
                reason, subscribed = await self._serve(transport)
            finally:
                self._current = None
            lived = asyncio.get_running_loop().time() - started
            if self._closed.is_set():
                return
            if lived >= self._stable_after:
                failures, short_lived = 0, 0
            elif subscribed:
                short_lived += 1
            await self._wait_before_retry(failures, self._loss(reason, lived, short_lived))
            failures += 1

    async def _connect_unless_closed(self, transport: Transport, first: bool) -> bool:
        """Connect; False (and the attempt abandoned) as soon as ``close`` is called.

        A handshake can take up to the connect timeout against a silent host: a SIGTERM in
        the middle of it must not wait for it.
        """
        attempt = asyncio.ensure_future(self._connect(transport, first))
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({attempt, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            finished = attempt.done()
            if not finished:
                attempt.cancel()
        if finished:
            attempt.result()  # raises what the attempt raised
            if not self._closed.is_set():
                return True
        # Closed mid-handshake, or just after it: leave without a word to the platform.
        with contextlib.suppress(asyncio.CancelledError, ConnectError, OSError):
            await attempt
        await transport.disconnect()
        self._metrics.set_connected(False)
        return False

    async def _connect(self, transport: Transport, first: bool) -> None:
        await transport.connect(self._options)
        if not first:
            self._metrics.reconnected()
        self._metrics.set_connected(True)
        log.info("connected to %s as %s", self.address, self.client_id)

    async def _serve(self, transport: Transport) -> tuple[str, bool]:
        """Subscribe and feed until the connection ends: (why it ended, whether subscribed)."""
        subscribed = False
        try:
            async with self._lock:
                if self._wanted():
                    await self._subscribe(transport)
                    subscribed = True
                self._transport = transport
                self._online.set()
            if subscribed:
                self.problem = None
            if self._intake_open:
                self.ready.set()
            async for batch in transport.batches():
                self.received += len(batch)
                await self._sink.put(batch, transport.ack)
                self._handed += len(batch)
                self._progress.set()
            return f"the connection to {self.address} was closed", subscribed or self.subscribed
        except ConnectError as exc:
            # The first connection subscribes later, when the intake opens (open_intake).
            subscribed = subscribed or self.subscribed
            if isinstance(exc, ProtocolViolation):
                self._metrics.protocol_error(exc.reason)
                if exc.reason != "server_disconnect":
                    log.error("protocol error, reconnecting: %s", exc)
            elif not subscribed and self._wanted():
                log.error("%s", exc)  # refused or lost while subscribing: say so loudly
            return str(exc), subscribed
        finally:
            await self._lost(transport)

    async def _lost(self, transport: Transport) -> None:
        self._online.clear()
        self._transport = None
        self._handed = 0
        self._progress.set()  # wakes a barrier waiting on this connection
        self._set_subscribed(False)
        self._metrics.set_connected(False)
        if not self._closed.is_set():
            self.problem = "reconnecting"
        await transport.disconnect()

    def _loss(self, reason: str, lived: float, short_lived: int) -> str:
        """What to say about a lost connection (an error when it looks like a takeover)."""
        if self._unique_id and short_lived >= 2:
            log.error(
                "the connection as %s was closed %d times in a row within %.0fs of connecting: "
                "another process uses the same client ID (the platform allows one connection "
                "per client ID and closes the older one). Give each process its own ID "
                "(--app-id or --instance) or scale out with the shared identity (A:org:app)",
                self.client_id,
                short_lived,
                self._stable_after,
            )
            self.problem = f"another process uses the same client ID {self.client_id}"
        return f"{reason} (connected for {lived:.1f}s)"

    async def _wait_before_retry(self, failures: int, reason: str) -> None:
        delay = self._backoff.delay(failures, self._rng)
        log.warning("%s; retrying in %.1fs", reason, delay)
        with contextlib.suppress(TimeoutError):  # the backoff is over: try again
            await asyncio.wait_for(self._closed.wait(), delay)

    async def _subscribe(self, transport: Transport) -> None:
        """SUBSCRIBE every filter; ConnectError when any is refused (never deaf in silence)."""
        granted = await transport.subscribe(self._subscriptions)
        failure = SubackReturnCode.FAILURE  # and every 5.0 failure code above it
        refused = [
            (f, g) for (f, _), g in zip(self._subscriptions, granted, strict=True) if g >= failure
        ]
        if refused:
            for _, code in refused:
                self._metrics.refused("SUBACK", code)
            self.problem = f"subscription refused: {', '.join(f for f, _ in refused)}"
            codes = ", ".join(reason_name(g) for _, g in refused)
            raise ServerRefused(
                f"{self.address} refused the subscription to {', '.join(f for f, _ in refused)} "
                f"(SUBACK {codes}): check the broker's ACL and that it supports shared "
                "subscriptions",
                "SUBACK",
                refused[0][1],
            )
        for (topic_filter, qos), got in zip(self._subscriptions, granted, strict=True):
            if got < qos:
                log.warning(
                    "%s granted QoS %d for %s (asked %d)", self.address, got, topic_filter, qos
                )
        self._set_subscribed(True)
        log.info("subscribed to %s", ", ".join(f for f, _ in self._subscriptions))

    async def _unsubscribe(self, transport: Transport) -> None:
        try:
            await transport.unsubscribe([f for f, _ in self._subscriptions])
        except ServerRefused as exc:
            self._metrics.refused(exc.packet, exc.reason_code)
            raise
        self._set_subscribed(False)

    def _set_subscribed(self, subscribed: bool) -> None:
        self.subscribed = subscribed
        self._metrics.set_subscribed(subscribed)

    async def pause(self) -> None:
        """Unsubscribe and stay connected: the platform gives this share to the peers."""
        self._paused = True
        await self._change_subscription("paused")

    async def resume(self) -> None:
        """Subscribe again after ``pause``."""
        self._paused = False
        await self._change_subscription(None)

    async def stop_intake(self) -> None:
        """Shutdown's first step: unsubscribe for good (a reconnect does not resubscribe)."""
        self._stopping = True
        current = self._current
        if current is not None and self._transport is None:
            # A new connection still waiting for its SUBACK has received nothing: drop it
            # rather than wait for an answer that may never come (SIGTERM stays prompt).
            await current.disconnect()
        await self._change_subscription("draining")

    async def _change_subscription(self, problem: str | None) -> None:
        async with self._lock:
            transport = self._transport
            if transport is None:
                return
            try:
                if self._wanted() and not self.subscribed:
                    await self._subscribe(transport)
                elif not self._wanted() and self.subscribed:
                    await self._unsubscribe(transport)
                    log.info("unsubscribed (%s)", problem)
            except ConnectError as exc:
                # Drop the connection rather than stay connected in the wrong state: the
                # supervisor reconnects and subscribes (or not) as wanted.
                log.error("%s; reconnecting", exc)
                await transport.disconnect()
                return
            self.problem = problem
            if self._intake_open:
                self.ready.set()

    async def barrier(self) -> None:
        """A round trip to the server, then until everything read before it reached the sink.

        The server sends packets in order, so once its UNSUBACK is back every PUBLISH it sent
        earlier has been read; the shutdown uses this to know when nothing more is on its way.
        Only while unsubscribed (paused or stopping): the round trip is an UNSUBSCRIBE.
        """
        if self.subscribed:
            raise RuntimeError("barrier() would unsubscribe; pause or stop intake first")
        async with self._lock:
            transport = self._transport
            if transport is None:
                return
            try:
                await transport.unsubscribe([f for f, _ in self._subscriptions])
            except ConnectError:
                return
        target = transport.received
        while True:
            self._progress.clear()  # before the check: a change after it wakes the wait
            if self._handed >= target or self._transport is not transport:
                return
            await self._progress.wait()

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: MessageProperties | None = None,
    ) -> None:
        """Publish on the current connection, waiting up to the connect timeout for one.

        ``properties`` go out on MQTT 5; ServerRefused (counted) when an MQTT 5 server refuses.
        """
        try:
            await asyncio.wait_for(self._online.wait(), self._options.connect_timeout)
        except TimeoutError:
            raise ConnectError(
                f"cannot publish to {topic}: not connected to {self.address}"
            ) from None
        transport = self._transport
        if transport is None:
            raise ConnectError(f"cannot publish to {topic}: the connection was just lost")
        try:
            await transport.publish(topic, payload, qos, retain, properties)
        except ServerRefused as exc:
            self._metrics.refused(exc.packet, exc.reason_code)
            raise

    async def close(self) -> None:
        """DISCONNECT and make ``run`` return, also from the middle of a SUBSCRIBE."""
        self._closed.set()
        self.problem = "closed"
        transport = self._transport or self._current
        if transport is not None:
            await transport.disconnect()
