"""pytest fixtures: the local platform, an App served in-process on it, and an MQTT client.

Enabled with ``-p worker.testing`` (or see :mod:`worker.testing`); they need pytest-asyncio.

``platform``      a :class:`LocalPlatform`: the emulator on a free port of 127.0.0.1, org
                  ``test01``, one API key, and a token every device of the org may use
``running_app``   ``await running_app(app, **settings)`` serves ``app`` as a ``worker run``
                  replica would (profile ``wiotp``, ``A:test01:APP``) and returns a
                  :class:`RunningApp` once it is subscribed; stopped (drained) at teardown
``mqtt_client``   a connected ``aiomqtt.Client``, the application ``a:test01:tester``; it may
                  publish any device's events and subscribe to commands

Every start and stop has a deadline (:data:`DEADLINE` seconds); teardown stops what was
started in reverse order, also when the test failed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Final

import aiomqtt
import pytest_asyncio

from worker import messages, topics
from worker.app import App
from worker.config import Settings, load_settings
from worker.handling import Handled
from worker.identity import ClientId
from worker.platform import Platform, PlatformConfig
from worker.platform.auth import USE_TOKEN_AUTH, Credentials
from worker.runner import Worker
from worker.testing.client import raise_handler_error

#: seconds any start, stop or wait of these fixtures may take
DEADLINE: Final = 15.0
ORG: Final = "test01"
API_KEY: Final = f"a-{ORG}-testkey"
API_TOKEN: Final = "test-token"
DEVICE_TOKEN: Final = "device-token"


@dataclass(frozen=True, slots=True)
class _FixtureCredentials:
    """The one API key, and :data:`DEVICE_TOKEN` for any device or gateway of the org."""

    apps: Credentials
    org: str
    device_token: bytes

    def check(
        self, client_id: ClientId, username: str | None, password: bytes | None
    ) -> str | None:
        """None when admitted, else why not (never containing a token)."""
        if client_id.is_application:
            return self.apps.check(client_id, username, password)
        if client_id.org != self.org:
            return f"org {client_id.org!r} is not {self.org!r}"
        if username != USE_TOKEN_AUTH or password != self.device_token:
            return f"devices log in as {USE_TOKEN_AUTH!r} with the fixture's device token"
        return None


@dataclass(frozen=True, slots=True)
class LocalPlatform:
    """A running local platform and the credentials that get into it."""

    server: Platform
    host: str
    port: int
    org: str = ORG
    api_key: str = API_KEY
    api_token: str = API_TOKEN
    device_token: str = DEVICE_TOKEN

    def settings(self, app_id: str = "test-app", **flags: Any) -> Settings:
        """Worker settings for this platform; ``flags`` by field name override them.

        The environment is not read, so a developer's ``WIOTP_*`` variables do not leak in.
        """
        base: dict[str, Any] = {
            "host": self.host, "port": self.port, "api_key": self.api_key,
            "api_token": self.api_token, "app_id": app_id, "instance": "test",
            "metrics_host": "127.0.0.1", "metrics_port": 0, "drain_timeout": 5,
        }  # fmt: skip
        return load_settings({}, {k: str(v) for k, v in (base | flags).items()})

    def app_client(self, app_id: str = "tester", **options: Any) -> aiomqtt.Client:
        """A not yet connected application client ``a:ORG:app_id`` (``async with`` it)."""
        options.setdefault("timeout", DEADLINE)
        return aiomqtt.Client(
            self.host, self.port, identifier=f"a:{self.org}:{app_id}",
            username=self.api_key, password=self.api_token, **options,
        )  # fmt: skip

    def device_client(self, device_type: str, device_id: str, **options: Any) -> aiomqtt.Client:
        """A not yet connected device client ``d:ORG:type:id`` (it publishes to ``iot-2/evt/``)."""
        options.setdefault("timeout", DEADLINE)
        return aiomqtt.Client(
            self.host, self.port, identifier=f"d:{self.org}:{device_type}:{device_id}",
            username=USE_TOKEN_AUTH, password=self.device_token, **options,
        )  # fmt: skip


async def publish_event(
    client: aiomqtt.Client,
    device_type: str,
    device_id: str,
    event: str,
    data: Any,
    format: str = "json",
    qos: int = 1,
) -> None:
    """Publish a device event from an application client (``mqtt_client``)."""
    topic = str(topics.device_event(device_type, device_id, event, format))
    await client.publish(topic, messages.encode(format, data), qos=qos)


class RunningApp:
    """An App served by a :class:`~worker.runner.Worker` in this process.

    ``outcomes`` collects what every (message, route) came to; :meth:`handled` waits for the
    next ones and raises a handler's exception, so a bug fails the test with its traceback.
    """

    def __init__(self, app: App, settings: Settings, *, raise_errors: bool = True) -> None:
        self.app = app
        self.settings = settings
        self.raise_errors = raise_errors
        self.outcomes: list[Handled] = []
        #: outcomes ``handled`` returned already (by identity: each is returned once)
        self._taken: set[int] = set()
        self._changed = asyncio.Event()
        self.worker = Worker(
            app, settings, handle_signals=False, startup_timeout=DEADLINE, observer=self._observe
        )
        self._task: asyncio.Task[None] | None = None

    def _observe(self, handled: Handled) -> None:
        self.outcomes.append(handled)
        self._changed.set()

    async def start(self) -> None:
        """Serve, and return once subscribed; raise what stopped the worker first."""
        self._task = task = asyncio.create_task(self.worker.serve(), name="worker-testing-app")
        started = asyncio.ensure_future(self.worker.started.wait())
        try:
            await asyncio.wait({started, task}, timeout=DEADLINE, return_when="FIRST_COMPLETED")
        finally:
            started.cancel()
        if task.done():
            task.result()
            raise RuntimeError("the worker stopped before it was subscribed")
        if not self.worker.started.is_set():
            await self.stop()
            raise TimeoutError(f"the worker was not subscribed within {DEADLINE:g} s")

    async def handled(
        self, count: int, within: float = DEADLINE, *, route: str | None = None
    ) -> list[Handled]:
        """Wait for the next ``count`` finished (message, route) pairs; exactly those.

        Each call takes outcomes that no earlier call returned, in the order they finished,
        so ``[first] = await serving.handled(1)`` then ``[second] = ...`` step through them.
        With ``route`` (a route's name: the handler's, or its ``name=``) only that route's
        outcomes count, whatever else (status messages, other routes) finished meanwhile.
        Raises the first handler exception among them (unless ``raise_errors=False``), and
        TimeoutError saying how many arrived when fewer than ``count`` did within ``within``.
        """
        __tracebackhide__ = True  # in pytest reports: the test, then the handler; not this
        picked = self._next(count, route)
        try:
            async with asyncio.timeout(within):
                while len(picked) < count:
                    self._changed.clear()
                    await self._changed.wait()
                    picked = self._next(count, route)
        except TimeoutError:
            which = f" of route {route!r}" if route else ""
            seen = sorted({h.route for h in self.outcomes})
            raise TimeoutError(
                f"{len(picked)} of {count} outcomes{which} within {within:g} s "
                f"(routes that finished so far: {', '.join(seen) or 'none'})"
            ) from None
        self._taken.update(id(h) for h in picked)
        if self.raise_errors:
            raise_handler_error(picked)
        return picked

    def _next(self, count: int, route: str | None) -> list[Handled]:
        """Up to ``count`` outcomes not yet returned (of ``route``), oldest first."""
        fresh = (h for h in self.outcomes if id(h) not in self._taken)
        return [h for h in fresh if route is None or h.route == route][:count]

    async def stop(self) -> None:
        """Unsubscribe, drain and disconnect, as on SIGTERM; cancel past the deadline."""
        task = self._task
        if task is None or task.done():
            return
        self.worker.request_stop()
        done, _ = await asyncio.wait({task}, timeout=DEADLINE)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=DEADLINE)
            raise TimeoutError(f"the worker did not stop within {DEADLINE:g} s")
        task.result()


RunApp = Callable[..., Awaitable[RunningApp]]


@pytest_asyncio.fixture(name="platform")
async def platform_fixture() -> AsyncIterator[LocalPlatform]:
    """The local platform on a free port of 127.0.0.1, with org ``test01`` and one API key."""
    credentials = _FixtureCredentials(
        Credentials(api_keys={API_KEY: API_TOKEN.encode()}), ORG, DEVICE_TOKEN.encode()
    )
    config = PlatformConfig(host="127.0.0.1", port=0, credentials=credentials)
    async with AsyncExitStack() as stack:
        async with asyncio.timeout(DEADLINE):
            server = await stack.enter_async_context(Platform(config))
        yield LocalPlatform(server, "127.0.0.1", server.port)
        async with asyncio.timeout(DEADLINE):
            await stack.aclose()


_app_ids = itertools.count(1)


@pytest_asyncio.fixture(name="running_app")
async def running_app_fixture(platform: LocalPlatform) -> AsyncIterator[RunApp]:
    """``await running_app(app, app_id=..., raise_errors=True, **flags)``: serve ``app``.

    ``flags`` are worker settings by field name (``concurrency=4``, ``identity="standalone"``).
    """
    started: list[RunningApp] = []

    async def start(app: App, app_id: str | None = None, **flags: Any) -> RunningApp:
        raise_errors = flags.pop("raise_errors", True)
        name = app_id or f"test-app-{next(_app_ids)}"
        running = RunningApp(app, platform.settings(name, **flags), raise_errors=raise_errors)
        started.append(running)
        await running.start()
        return running

    yield start
    errors: list[BaseException] = []
    for running in reversed(started):
        try:
            await running.stop()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest_asyncio.fixture(name="mqtt_client")
async def mqtt_client_fixture(platform: LocalPlatform) -> AsyncIterator[aiomqtt.Client]:
    """A connected application client ``a:test01:tester``; disconnected at teardown."""
    async with AsyncExitStack() as stack:
        client = platform.app_client()
        async with asyncio.timeout(DEADLINE):
            await stack.enter_async_context(client)
        yield client
        async with asyncio.timeout(DEADLINE):
            await stack.aclose()
