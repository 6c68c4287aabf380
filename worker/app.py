"""``App``: the handler registry, lifespan hooks and publish helpers (docs/guide/handlers.md).

::

    app = App()

    @app.event(device_type="sensor", event="reading", ordered=True, timeout=5, retries=2)
    async def on_reading(event: Event) -> None: ...

Omitted topic components mean ``+``. Every check happens when the decorator runs (a coroutine
function taking the message, legal components, no ``#``, sane options, no duplicate route,
a unique route name), raising RegistrationError; the function is returned unchanged, so
handlers stay plain coroutines that tests call directly.

Options of every decorator (keyword-only):

``ordered``        one device's (or app's) messages run one at a time, in arrival order
``timeout``        seconds one run may take; past it the run is cancelled (outcome ``timeout``)
``retries``        further runs after an ``error`` or ``timeout``; not after ``decode_error``
``retry_backoff``  seconds before the first retry, doubling each time (capped at a minute)
``dead_letter``    this route's sink: ``"log"``, ``"file:PATH"``, ``"mqtt:TYPE/ID/EVENT"``,
                   ``"none"`` or a sink object; None (default) means ``WORKER_DEAD_LETTER``
``name``           the route's name in metrics and logs; default the function's ``__name__``
                   (names must be unique per app)
``batch``          ``Batch(max_size=..., max_wait=...)``: the handler gets a list of messages
                   (``worker.batching``); every message still has its own outcome and ack

The runner, in this order: ``app.compile()`` (or let the pipeline compile), connect,
``app.bind_publisher(fn)``, ``await app.startup()``, subscribe to ``app.filters()``, serve;
then unsubscribe, drain, ``await app.shutdown()``, disconnect.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from worker import messages, topics, tracing
from worker.deadletter import SinkChoice
from worker.errors import (
    AppLoadError,
    ConnectError,
    PayloadTooLarge,
    RegistrationError,
    TopicError,
    WorkerError,
)
from worker.messages import MessageProperties
from worker.metrics import Kind
from worker.publications import Publication, declare
from worker.registration import (
    Hook,
    RetryOn,
    check_handler,
    check_hook,
    check_options,
    explained,
    payload_model,
)
from worker.routes import (
    Batch,
    Route,
    RouteTable,
    partial_overlaps,
    subscription_filters,
)

log = logging.getLogger("worker.app")

H = TypeVar("H", bound=Callable[..., Any])
#: ``publisher(topic, payload, qos, retain)``, and with a fifth argument, the message's
#: ``MessageProperties``, only when it has any (MQTT 5; a 4-argument fake serves the rest)
Publisher = Callable[..., Awaitable[None]]

#: the platform's payload limit (W17); it counts topic bytes beyond 200 as payload too
MAX_PAYLOAD: Final = 131_072
_TOPIC_ALLOWANCE: Final = 200
#: a scalable application may hold this many shared subscriptions on MAS Monitor (W29)
SHARED_SUBSCRIPTION_QUOTA: Final = 10


class App:
    """A set of routes and hooks; ``worker run module`` finds it and serves it."""

    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._names: dict[str, Callable[..., Any]] = {}
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._publisher: Publisher | None = None
        self._router: RouteTable | None = None
        self._publications: list[Publication] = []

    # --- registration ----------------------------------------------------------------

    @explained
    def event(
        self,
        *,
        device_type: str = topics.SINGLE,
        device_id: str = topics.SINGLE,
        event: str = topics.SINGLE,
        format: str = topics.SINGLE,
        payload: type | None = None,
        ordered: bool = False,
        timeout: float | None = None,
        retries: int = 0,
        retry_backoff: float = 0.1,
        dead_letter: SinkChoice = None,
        name: str | None = None,
        batch: Batch | None = None,
        retry_on: RetryOn = None,
    ) -> Callable[[H], H]:
        """Handle device events ``iot-2/type/T/id/D/evt/E/fmt/F``; the handler gets an Event."""
        options = check_options(
            ordered, timeout, retries, retry_backoff, dead_letter, batch, retry_on
        )
        options["payload"] = payload_model(payload)
        parts = {"device_type": device_type, "device_id": device_id, "event": event}
        return self._decorator(
            Kind.EVENT,
            lambda: topics.device_event(device_type, device_id, event, format, wildcard=True),
            {**parts, "format": format},
            options,
            name,
        )

    @explained
    def command(
        self,
        *,
        device_type: str = topics.SINGLE,
        device_id: str = topics.SINGLE,
        command: str = topics.SINGLE,
        format: str = topics.SINGLE,
        payload: type | None = None,
        ordered: bool = False,
        timeout: float | None = None,
        retries: int = 0,
        retry_backoff: float = 0.1,
        dead_letter: SinkChoice = None,
        name: str | None = None,
        batch: Batch | None = None,
        retry_on: RetryOn = None,
    ) -> Callable[[H], H]:
        """Handle device commands ``iot-2/type/T/id/D/cmd/C/fmt/F``; the handler gets a Command."""
        options = check_options(
            ordered, timeout, retries, retry_backoff, dead_letter, batch, retry_on
        )
        options["payload"] = payload_model(payload)
        parts = {"device_type": device_type, "device_id": device_id, "command": command}
        return self._decorator(
            Kind.COMMAND,
            lambda: topics.device_command(device_type, device_id, command, format, wildcard=True),
            {**parts, "format": format},
            options,
            name,
        )

    @explained
    def device_status(
        self,
        *,
        device_type: str = topics.SINGLE,
        device_id: str = topics.SINGLE,
        ordered: bool = False,
        timeout: float | None = None,
        retries: int = 0,
        retry_backoff: float = 0.1,
        dead_letter: SinkChoice = None,
        name: str | None = None,
        batch: Batch | None = None,
        retry_on: RetryOn = None,
    ) -> Callable[[H], H]:
        """Handle device status ``iot-2/type/T/id/D/mon``; the handler gets a DeviceStatus."""
        options = check_options(
            ordered, timeout, retries, retry_backoff, dead_letter, batch, retry_on
        )
        return self._decorator(
            Kind.DEVICE_STATUS,
            lambda: topics.device_status(device_type, device_id, wildcard=True),
            {"device_type": device_type, "device_id": device_id},
            options,
            name,
        )

    @explained
    def app_status(
        self,
        *,
        app_id: str = topics.SINGLE,
        ordered: bool = False,
        timeout: float | None = None,
        retries: int = 0,
        retry_backoff: float = 0.1,
        dead_letter: SinkChoice = None,
        name: str | None = None,
        batch: Batch | None = None,
        retry_on: RetryOn = None,
    ) -> Callable[[H], H]:
        """Handle application status ``iot-2/app/A/mon``; the handler gets an AppStatus."""
        options = check_options(
            ordered, timeout, retries, retry_backoff, dead_letter, batch, retry_on
        )
        return self._decorator(
            Kind.APP_STATUS,
            lambda: topics.app_status(app_id, wildcard=True),
            {"app_id": app_id},
            options,
            name,
        )

    def _decorator(
        self,
        kind: Kind,
        build_filter: Callable[[], topics.AppTopic],
        parts: dict[str, str],
        options: dict[str, Any],
        name: str | None,
    ) -> Callable[[H], H]:
        # Bad components fail at the decorator call, before any function is involved.
        for what, value in parts.items():
            if isinstance(value, str) and topics.MULTI in value:
                raise RegistrationError(
                    f"{what}={value!r}: '#' is not allowed for applications; "
                    "use '+' (or leave it out) for any"
                )
        try:
            topic_filter = str(build_filter())
        except TopicError as exc:
            raise RegistrationError(f"@app.{kind.value}(...): {exc}") from exc

        def register(func: H) -> H:
            self._add(kind, topic_filter, func, options, name)
            return func

        return register

    def _add(
        self, kind: Kind, topic_filter: str, func: Any, options: dict[str, Any], name: str | None
    ) -> None:
        route_name, wants_context = check_handler(func, name)
        where = f"{route_name} ({topic_filter})"
        if self._router is not None:
            raise RegistrationError(f"{where}: register handlers before the worker starts")
        owner = self._names.get(route_name)
        if owner is not None and owner is not func:
            raise RegistrationError(
                f"{where}: the route name {route_name!r} is taken by another handler; route "
                "names label metrics and logs, so rename one or pass name=..."
            )
        for route in self._routes:
            if route.name == route_name and route.topic_filter == topic_filter:
                raise RegistrationError(f"{where}: this route is already registered")
        self._names[route_name] = func
        self._routes.append(
            Route(
                len(self._routes), route_name, kind, topic_filter, func, **options,
                wants_context=wants_context,
            )
        )  # fmt: skip

    def on_startup(self, func: H) -> H:
        """Run ``async func()`` after connecting and before subscribing, in registration order."""
        self._startup.append(check_hook(func, "on_startup"))
        return func

    def on_shutdown(self, func: H) -> H:
        """Run ``async func()`` after draining, in reverse registration order."""
        self._shutdown.append(check_hook(func, "on_shutdown"))
        return func

    # --- what the runner uses ----------------------------------------------------------

    @property
    def routes(self) -> tuple[Route, ...]:
        """The registered routes, in registration order."""
        return tuple(self._routes)

    def filters(self) -> list[str]:
        """The distinct filters to subscribe to (one SUBSCRIBE entry each).

        A filter that another route's filter covers is left out: the broader subscription
        brings its messages, and the router gives each message to every matching route.
        """
        return subscription_filters(self._routes)

    def compile(self) -> RouteTable:
        """Build the router (once; later calls return it). No registration after this."""
        if self._router is None:
            for a, b in partial_overlaps(self._routes):
                log.warning(
                    "filters %s and %s overlap; a broker may deliver a message matching "
                    "both once per subscription, so its handlers may run twice", a, b,
                )  # fmt: skip
            count = len(self.filters())
            if count > SHARED_SUBSCRIPTION_QUOTA:
                log.warning(
                    "%d subscriptions; Watson IoT allows a scalable application %d shared "
                    "subscriptions (merge routes with '+')", count, SHARED_SUBSCRIPTION_QUOTA,
                )  # fmt: skip
            self._router = RouteTable(self._routes)
        return self._router

    @property
    def router(self) -> RouteTable:
        """The compiled router (compiled on first use)."""
        return self._router or self.compile()

    def bind_publisher(self, publisher: Publisher | None) -> None:
        """Send publishes through ``async publisher(topic, payload, qos, retain)``; None unbinds."""
        self._publisher = publisher

    async def startup(self) -> None:
        """Run the startup hooks in order; the first failure is an AppLoadError.

        An unexpected exception's traceback is logged: it is the user's code, and the place
        to look. A hook that raises one of the framework's errors (``ConfigError("STORAGE_DSN
        is not set")``) has said what is wrong in words: that message alone is the error.
        """
        for hook in self._startup:
            name = getattr(hook, "__qualname__", repr(hook))
            try:
                await hook()
            except WorkerError as exc:
                raise AppLoadError(f"startup hook {name}: {exc}") from exc
            except Exception as exc:
                log.exception("startup hook %s failed", name)
                raise AppLoadError(f"startup hook {name} failed: {exc!r}") from exc

    async def shutdown(self) -> None:
        """Run every shutdown hook, last registered first; failures are logged, not raised."""
        for hook in reversed(self._shutdown):
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook %s failed", getattr(hook, "__name__", hook))

    def publishes_command(
        self,
        command: str,
        *,
        device_type: str = topics.SINGLE,
        device_id: str = topics.SINGLE,
        format: str = "json",
        payload: type | None = None,
        description: str = "",
    ) -> None:
        """Declare a command this app sends (``worker asyncapi`` lists it; see publications)."""
        self._publications.append(
            declare("command", command, device_type=device_type, device_id=device_id,
                    format=format, payload=payload, description=description)
        )  # fmt: skip

    def publishes_event(
        self,
        event: str,
        *,
        device_type: str = topics.SINGLE,
        device_id: str = topics.SINGLE,
        format: str = "json",
        payload: type | None = None,
        description: str = "",
    ) -> None:
        """Declare a device event this app publishes (``worker asyncapi`` lists it)."""
        self._publications.append(
            declare("event", event, device_type=device_type, device_id=device_id,
                    format=format, payload=payload, description=description)
        )  # fmt: skip

    @property
    def publications(self) -> tuple[Publication, ...]:
        """What the app declared it publishes, in declaration order."""
        return tuple(self._publications)

    # --- publishing --------------------------------------------------------------------

    async def publish_event(
        self,
        device_type: str,
        device_id: str,
        event: str,
        data: Any,
        format: str = "json",
        qos: int = 0,
        *,
        properties: MessageProperties | None = None,
    ) -> None:
        """Publish a device event as if ``device_type/device_id`` had sent it.

        ``data`` is encoded by ``format``'s codec (bytes go as they are). TopicError for a bad
        component, CodecError when it cannot be encoded, PayloadTooLarge above the limit,
        ConnectError when no publisher is bound. ``properties`` (user properties, content
        type, correlation data, response topic, expiry) go out on MQTT 5 and are left out on
        3.1.1; with tracing on, the current trace context is added as ``traceparent``.
        """
        topic = str(topics.device_event(device_type, device_id, event, format))
        await self._publish(topic, format, data, qos, properties)

    async def publish_command(
        self,
        device_type: str,
        device_id: str,
        command: str,
        data: Any,
        format: str = "json",
        qos: int = 1,
        *,
        properties: MessageProperties | None = None,
    ) -> None:
        """Send a command to one device; the same rules as :meth:`publish_event`.

        QoS 1 by default, as the worker's own subscriptions: a command is an action the
        device must get (QoS 0 is lost silently when the device is offline a moment).
        """
        topic = str(topics.device_command(device_type, device_id, command, format))
        await self._publish(topic, format, data, qos, properties)

    async def _publish(
        self, topic: str, fmt: str, data: Any, qos: int, properties: MessageProperties | None
    ) -> None:
        if qos not in (0, 1, 2):
            raise ValueError(f"qos {qos!r}: accepted are 0, 1 and 2")
        if properties is not None and not isinstance(properties, MessageProperties):
            raise TypeError(
                f"properties={properties!r}: accepted is None or worker.MessageProperties"
            )
        properties = tracing.inject(properties)
        payload = messages.encode(fmt, data)
        counted = len(payload) + max(0, len(topic.encode()) - _TOPIC_ALLOWANCE)
        if counted > MAX_PAYLOAD:
            raise PayloadTooLarge(
                f"{topic}: {len(payload)} bytes; the platform accepts at most {MAX_PAYLOAD} "
                "(and closes the connection of a client that sends more)"
            )
        publisher = self._publisher
        if publisher is None:
            raise ConnectError(
                f"cannot publish to {topic}: no publisher is bound; the worker binds one when it "
                "connects (in tests, call app.bind_publisher(fake))"
            )
        if properties is None:
            await publisher(topic, payload, qos, False)
        else:
            await publisher(topic, payload, qos, False, properties)
