"""Running the platform as a program: from flag values to listeners, a banner and a clean stop.

``worker platform`` (in :mod:`worker.cli.platform`) parses the flags into a :class:`Launch`, and
:func:`prepare` checks them together (every problem names its flag and what is accepted) and
builds the :class:`~worker.platform.PlatformConfig`. :func:`serve` runs it until SIGTERM or
SIGINT: listeners, the optional ``/metrics`` server, then a banner that ends with a line
starting ``ready`` (what scripts and tests wait for).

With no credentials at all the platform accepts any key, but only while it listens on a
loopback address, as Mosquitto 2 allows anonymous clients only in its local-only mode; on any
other address credentials are required.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from prometheus_client import CollectorRegistry

from worker.errors import ConfigError
from worker.platform import tls
from worker.platform.auth import Credentials, load_credentials
from worker.platform.limits import parse_limits
from worker.platform.metrics import MetricsServer, PlatformMetrics
from worker.platform.server import Platform, PlatformConfig
from worker.platform.websocket import WebSocketProtocol

STRATEGIES: Final = ("round-robin", "random")
EXAMPLE_APP: Final = "worker.examples.fleet"


@dataclass(frozen=True, slots=True)
class Launch:
    """The ``worker platform`` flags, as given."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls_port: int | None = None
    wss_port: int | None = None
    ws_port: int | None = None
    cert: str | None = None
    key: str | None = None
    dev_tls: str | None = None
    api_keys: tuple[str, ...] = ()
    keys_file: str | None = None
    accept_any_key: bool = False
    quickstart: bool = False
    strategy: str = "round-robin"
    seed: int | None = None
    metrics_port: int | None = None
    #: ``NAME=VALUE`` overrides of the limits (worker.platform.limits.Limits)
    limits: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Prepared:
    """A checked launch: the platform's config and what the banner needs to say."""

    launch: Launch
    config: PlatformConfig
    credentials: Credentials
    registry: CollectorRegistry | None
    #: the development CA to give clients (``--dev-tls``)
    ca_file: Path | None
    #: no credentials were given, so any key is accepted on this loopback address
    open_by_default: bool


def prepare(launch: Launch) -> Prepared:
    """Check the flags together and build the config; ConfigError lists every problem."""
    problems = _flag_problems(launch)
    given = launch.api_keys or launch.keys_file or launch.accept_any_key or launch.quickstart
    open_by_default = not given and _is_loopback(launch.host)
    if not given and not open_by_default:
        problems.append(
            f"--host {launch.host}: a platform reachable from other machines needs credentials; "
            "give --api-key KEY:TOKEN, --keys FILE, --accept-any-key or --quickstart"
        )
    credentials: Credentials | None = None
    try:
        credentials = load_credentials(
            api_keys=launch.api_keys,
            keys_file=launch.keys_file,
            accept_any_key=launch.accept_any_key or open_by_default,
            quickstart=launch.quickstart,
        )
    except ConfigError as exc:
        problems.extend(exc.problems)
    context, ca_file = _tls(launch, problems)
    limits, limit_problems = parse_limits(launch.limits)
    problems.extend(limit_problems)
    if problems or credentials is None:
        raise ConfigError(problems)
    registry = CollectorRegistry() if launch.metrics_port is not None else None
    config = PlatformConfig(
        host=launch.host,
        port=launch.port,
        tls_port=launch.tls_port,
        wss_port=launch.wss_port,
        ws_port=launch.ws_port,
        ssl_context=context,
        websocket=WebSocketProtocol,
        credentials=credentials,
        quickstart=launch.quickstart,
        strategy=launch.strategy,
        seed=launch.seed,
        metrics=PlatformMetrics(registry) if registry is not None else None,
        limits=limits,
    )
    config.check()
    return Prepared(launch, config, credentials, registry, ca_file, open_by_default)


def _flag_problems(launch: Launch) -> list[str]:
    problems = []
    if launch.strategy not in STRATEGIES:
        problems.append(f"--strategy {launch.strategy!r}: accepted are {', '.join(STRATEGIES)}")
    elif launch.seed is not None and launch.strategy != "random":
        problems.append("--seed: only --strategy random uses a seed")
    secure = launch.tls_port is not None or launch.wss_port is not None
    material = launch.cert is not None or launch.key is not None or launch.dev_tls is not None
    if (launch.cert is None) != (launch.key is None):
        problems.append("--cert and --key: give both, the certificate and its private key")
    if launch.dev_tls is not None and (launch.cert is not None or launch.key is not None):
        problems.append("--dev-tls and --cert/--key: give one or the other")
    if secure and not material:
        problems.append(
            "--tls-port/--wss-port: need --cert FILE --key FILE, or --dev-tls DIR for "
            "development certificates"
        )
    if material and not secure:
        problems.append(
            "--cert/--key/--dev-tls: serve a TLS listener; add --tls-port (IBM uses 8883) "
            "or --wss-port (IBM uses 443)"
        )
    return problems


def _tls(launch: Launch, problems: list[str]) -> tuple[ssl.SSLContext | None, Path | None]:
    try:
        if launch.dev_tls is not None and launch.cert is None:
            return tls.dev_server_context(launch.dev_tls)
        if launch.cert is not None and launch.key is not None:
            return tls.server_context(launch.cert, launch.key), None
    except ConfigError as exc:
        problems.extend(exc.problems)
    return None, None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- running -----------------------------------------------------------------------------------


async def serve(prepared: Prepared, announce: Callable[[str], None]) -> None:
    """Run until SIGTERM or SIGINT, then close every connection and return."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        # Signal handlers only flip state; this coroutine owns the shutdown.
        loop.add_signal_handler(sig, stop.set)
    metrics_server: MetricsServer | None = None
    try:
        async with Platform(prepared.config) as platform:
            if prepared.registry is not None:
                metrics_server = await _start_metrics(prepared)
            for line in banner(prepared, platform, metrics_server):
                announce(line)
            await stop.wait()
            announce("stopping: closing client connections")
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if metrics_server is not None:
            await metrics_server.close()


async def _start_metrics(prepared: Prepared) -> MetricsServer:
    assert prepared.registry is not None and prepared.launch.metrics_port is not None
    server = MetricsServer(prepared.registry)
    try:
        await server.start(prepared.launch.host, prepared.launch.metrics_port)
    except OSError as exc:
        raise ConfigError(
            f"--metrics-port {prepared.launch.metrics_port}: cannot listen on "
            f"{prepared.launch.host}: {exc.strerror or exc}"
        ) from exc
    return server


def banner(prepared: Prepared, platform: Platform, metrics: MetricsServer | None) -> list[str]:
    """What the platform serves, who may connect, and how: printed once it is listening."""
    host = _url_host(prepared.launch.host)
    ca = f"  (TLS 1.2; CA file {prepared.ca_file})" if prepared.ca_file else "  (TLS 1.2)"
    listeners = [
        ("mqtt", "mqtt", platform.port, "", ""),
        ("mqtt+tls", "mqtts", platform.tls_port, "", ca),
        ("websocket", "ws", platform.ws_port, "/mqtt", ""),
        ("websocket+tls", "wss", platform.wss_port, "/mqtt", ca),
        ("metrics", "http", metrics.port if metrics else None, "/metrics", ""),
    ]
    lines = ["worker platform: a local Watson IoT Platform for development", "listening:"]
    lines += [
        f"  {name:<14}{scheme}://{host}:{port}{path}{note}"
        for name, scheme, port, path, note in listeners
        if port is not None
    ]
    lines += ["credentials:", *(f"  {line}" for line in prepared.credentials.describe())]
    if prepared.open_by_default:
        lines.append("  (no credentials given: any key is accepted on this loopback address)")
    lines.append(f"shared groups: {prepared.config.strategy}")
    lines += ["connect a worker:", *(f"  {line}" for line in _examples(prepared, platform))]
    lines.append("ready: stop with Ctrl-C or SIGTERM")
    return lines


def _examples(prepared: Prepared, platform: Platform) -> list[str]:
    """Example ``worker run`` lines for the listeners that are open."""
    credentials = prepared.credentials
    if credentials.api_keys:
        key = sorted(credentials.api_keys)[0]
        env = f"WIOTP_AUTH_KEY={key} WIOTP_AUTH_TOKEN='<its token>'"
    elif credentials.accept_any_key:
        env = "WIOTP_AUTH_KEY=a-abc123-dev WIOTP_AUTH_TOKEN=any"
    else:
        env = "WORKER_ORG=quickstart WORKER_IDENTITY=standalone"
    host = prepared.launch.host
    examples = [f"{env} worker run {EXAMPLE_APP} --host {host} --port {platform.port}"]
    if platform.tls_port is not None:
        cafile = f" --cafile {prepared.ca_file}" if prepared.ca_file else ""
        examples.append(f"  over TLS: --port {platform.tls_port} --tls{cafile}")
    if platform.ws_port is not None:
        examples.append(f"  over WebSocket: --port {platform.ws_port} --mqtt-transport websockets")
    if platform.wss_port is not None:
        cafile = f" --cafile {prepared.ca_file}" if prepared.ca_file else ""
        examples.append(
            f"  over secure WebSocket: --port {platform.wss_port} --mqtt-transport websockets "
            f"--tls{cafile}"
        )
    return examples


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
