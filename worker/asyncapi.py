"""An AsyncAPI 3.0 document of an App: what it consumes, what it publishes, and where.

``worker asyncapi MODULE`` prints it. Every route is a channel (its topic filter as an address,
each ``+`` a parameter such as ``{deviceType}``) with a ``receive`` operation and one message,
whose payload schema is the route's ``payload=`` model when it has one; every declaration of
``app.publishes_command`` / ``app.publishes_event`` is a channel with a ``send`` operation.
The one server is the broker the settings point at: the same host, port, TLS, MQTT version
and client ID as ``worker run`` with these settings would use.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from typing import Any, Final

from worker import __version__, topics
from worker.app import App
from worker.config import Settings
from worker.metrics import Kind
from worker.payloads import PayloadModel
from worker.publications import Publication
from worker.routes import Route

VERSION: Final = "3.0.0"
MQTT_BINDING: Final = "0.2.0"
#: topic component → the address parameter that stands for it when it varies
PARAMETERS: Final = {
    "device_type": ("deviceType", "the device type"),
    "device_id": ("deviceId", "the device ID"),
    "event": ("eventId", "the event ID"),
    "command": ("commandId", "the command ID"),
    "fmt": ("format", "the payload format (json, txt, xml, bin, ...)"),
    "app_id": ("appId", "the application ID"),
}
#: the media type of each payload format the worker decodes
CONTENT_TYPES: Final = {
    "json": "application/json",
    "txt": "text/plain",
    "text": "text/plain",
    "xml": "application/xml",
    "csv": "text/csv",
    "bin": "application/octet-stream",
}
_KIND_SUMMARY: Final = {
    Kind.EVENT: "device events",
    Kind.COMMAND: "device commands",
    Kind.DEVICE_STATUS: "the platform's connect and disconnect messages of devices",
    Kind.APP_STATUS: "the platform's connect and disconnect messages of applications",
}


def document(app: App, settings: Settings, module: str) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``app`` served with ``settings`` (``module`` names it)."""
    doc: dict[str, Any] = {
        "asyncapi": VERSION,
        "info": _info(module, settings),
        "servers": {settings.profile.value: _server(settings)},
        "channels": {},
        "operations": {},
        "components": {"messages": {}, "schemas": {}},
    }
    for route in app.routes:
        _add(doc, route.name, _route_parts(route, settings), "receive")
    for publication in app.publications:
        _add(doc, f"{publication.kind}.{publication.name}", _publication_parts(publication), "send")
    if not doc["components"]["schemas"]:
        del doc["components"]["schemas"]
    return doc


def _info(module: str, settings: Settings) -> dict[str, Any]:
    loaded = sys.modules.get(module.partition(":")[0])
    about = inspect.getdoc(loaded) if loaded is not None else None
    version = getattr(loaded, "__version__", None) if loaded is not None else None
    info: dict[str, Any] = {
        "title": f"{settings.app_id} ({module})",
        "version": str(version or "0.0.0"),
    }
    if about:
        info["description"] = about.split("\n\n")[0]
    return info


def _server(settings: Settings) -> dict[str, Any]:
    """The broker, as ``worker run`` with these settings would reach it."""
    websockets = settings.mqtt_transport == "websockets"
    protocol = ("wss" if settings.tls else "ws") if websockets else "mqtt"
    # The mqtt profile's client ID names the instance: {app}-{instance}.
    client = (
        settings.client_id if settings.client is not None else f"{settings.app_id}-{{instance}}"
    )
    server: dict[str, Any] = {
        "host": f"{settings.host}:{settings.port}",
        "protocol": "secure-mqtt" if settings.tls and not websockets else protocol,
        "protocolVersion": settings.mqtt_version,
        "description": (
            f"{settings.profile.value} profile; every instance connects as {client} "
            f"(worker {__version__})"
        ),
        "bindings": {
            "mqtt": {
                "clientId": settings.client_id,
                "cleanSession": True,
                "keepAlive": settings.keepalive,
                "bindingVersion": MQTT_BINDING,
            }
        },
    }
    return server


@dataclasses.dataclass
class _Parts:
    """What one channel, its operation and its message are made of."""

    address: str
    parameters: dict[str, dict[str, str]]
    summary: str
    description: str
    content_type: str | None
    payload: dict[str, Any]
    qos: int


def _route_parts(route: Route, settings: Settings) -> _Parts:
    address, parameters = _address(route.topic_filter)
    doc = inspect.getdoc(route.handler) or ""
    description = f"Received through the subscription {settings.subscription(route.topic_filter)}."
    if route.batch is not None:
        description += (
            f" Handled in batches of up to {route.batch.max_size} messages"
            f" (or after {route.batch.max_wait:g} s)."
        )
    return _Parts(
        address,
        parameters,
        doc.split("\n")[0] or f"{route.name}: {_KIND_SUMMARY[route.kind]}",
        description,
        _content_type(route.topic_filter, route.kind),
        _payload(route.payload, route.kind),
        settings.qos,
    )


def _publication_parts(publication: Publication) -> _Parts:
    address, parameters = _address(publication.topic)
    kind = Kind.COMMAND if publication.kind == "command" else Kind.EVENT
    return _Parts(
        address,
        parameters,
        publication.description or f"the {publication.kind} {publication.name}",
        f"Published by the app on {publication.topic}.",
        _content_type(publication.topic, kind),
        _payload(publication.payload, kind),
        1 if publication.kind == "command" else 0,
    )


def _address(topic_filter: str) -> tuple[str, dict[str, dict[str, str]]]:
    """The channel address (each ``+`` a ``{parameter}``) and the parameters it has."""
    parsed = topics.parse_filter(topic_filter)
    replaced: dict[str, str] = {}
    parameters: dict[str, dict[str, str]] = {}
    for field in dataclasses.fields(parsed):
        if getattr(parsed, field.name) == topics.SINGLE:
            name, description = PARAMETERS[field.name]
            replaced[field.name] = "{" + name + "}"
            parameters[name] = {"description": description}
    # (replace() on the union of topic classes: each has the fields just read from it)
    return str(dataclasses.replace(parsed, **replaced)), parameters  # type: ignore[arg-type]


def _content_type(topic_filter: str, kind: Kind) -> str | None:
    if kind in (Kind.DEVICE_STATUS, Kind.APP_STATUS):
        return "application/json"
    fmt = getattr(topics.parse_filter(topic_filter), "fmt", topics.SINGLE)
    return CONTENT_TYPES.get(fmt)


def _payload(model: PayloadModel | None, kind: Kind) -> dict[str, Any]:
    if model is not None:
        return model.json_schema()
    if kind in (Kind.DEVICE_STATUS, Kind.APP_STATUS):
        return {"type": "object", "description": "a status message: Action, Time, ClientID, ..."}
    return {"description": "any payload of the topic's format (the route has no payload model)"}


def _add(doc: dict[str, Any], key: str, parts: _Parts, action: str) -> None:
    """The channel ``key``, its operation and its message."""
    schemas = doc["components"]["schemas"]
    message: dict[str, Any] = {
        "name": key,
        "summary": parts.summary,
        "payload": _hoist(parts.payload, schemas),
    }
    if parts.content_type:
        message["contentType"] = parts.content_type
    doc["components"]["messages"][key] = message
    channel: dict[str, Any] = {
        "address": parts.address,
        "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        "description": parts.description,
    }
    if parts.parameters:
        channel["parameters"] = parts.parameters
    doc["channels"][key] = channel
    doc["operations"][key] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{key}"},
        "summary": parts.summary,
        "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
        "bindings": {"mqtt": {"qos": parts.qos, "bindingVersion": MQTT_BINDING}},
    }


def _hoist(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` moved to ``components.schemas`` and its references to them
    rewritten: inside the document, ``#/$defs/X`` would point at the document's root."""
    schema = dict(schema)
    for name, definition in schema.pop("$defs", {}).items():
        schemas[name] = _rewrite(definition)
    return dict(_rewrite(schema))


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _rewrite(v) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            out["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
        return out
    if isinstance(node, list):
        return [_rewrite(item) for item in node]
    return node
