"""A local MQTT server that behaves like IBM Watson IoT Platform (docs/platform/rules.md).

Embedding (tests, fixtures, the ``worker platform`` command)::

    from worker.platform import Platform, PlatformConfig

    cfg = PlatformConfig(
        host="127.0.0.1",
        port=0,                                       # 0: a free port; None: no plain listener
        api_keys={"a-abc123-k1": "tok"},              # API key -> token (applications)
        device_tokens={"d:abc123:sensor:s1": "devtok"},  # d:/g: client ID -> token
        accept_any_key=False,                         # development: any token for a good key
        quickstart=False,                             # open the 'quickstart' org (W41)
        strategy="round-robin",                       # or "random" (with seed=...) (W28)
    )
    async with Platform(cfg) as p:
        p.port          # the bound TCP port; p.ready is set once listening
        p.kick("d:abc123:sensor:s1")                  # close code 94
    # leaving the block closes every connection and waits for the sockets

Plugging in the other layers:

* TLS: ``PlatformConfig(tls_port=0, ssl_context=...)`` (e.g. from
  :func:`worker.platform.tls.server_context`); status messages then say ``"Secure":true``.
* WebSocket: ``PlatformConfig(ws_port=0, websocket=wrapper)`` where ``wrapper(factory)``
  returns the protocol of one WebSocket connection; after the upgrade it calls ``factory()``
  and drives that MQTT protocol with its own transport. ``wss_port`` does both. An adapter
  that accepts connections itself uses :meth:`Platform.protocol_factory`.
* Metrics: ``PlatformConfig(metrics=PlatformMetrics(registry))``; the server reports per read
  and per write batch, never per message.
* Credentials: ``api_keys`` / ``device_tokens``, or ``credentials=`` any object with
  ``check(client_id, username, password) -> str | None`` (see :mod:`worker.platform.auth`).

Modules: :mod:`.rules` (who may do what, topic rewriting), :mod:`.router` (subscriptions,
shared groups, retained status), :mod:`.session` (per-client delivery state), :mod:`.status`
(close codes and status payloads), :mod:`.connection` (the read loop), :mod:`.hub` (takeover,
durable sessions, status publishing), :mod:`.server` (config, listeners, lifecycle).
"""

from worker.platform.router import Envelope, RandomChoice, RoundRobin, Strategy
from worker.platform.rules import Authenticator, Denied
from worker.platform.server import Platform, PlatformConfig, ProtocolFactory, WebSocketWrapper
from worker.platform.status import CloseCode

__all__ = [
    "Authenticator",
    "CloseCode",
    "Denied",
    "Envelope",
    "Platform",
    "PlatformConfig",
    "ProtocolFactory",
    "RandomChoice",
    "RoundRobin",
    "Strategy",
    "WebSocketWrapper",
]
