"""What an App declares it publishes: device commands and events it sends (``worker asyncapi``).

::

    app.publishes_command("alert", payload=Alert, description="a device ran hot")

A declaration only describes: sending is still ``app.publish_command`` or
``app.publish_event``. It is checked when made (legal topic components, a payload model
``worker.payloads`` accepts), like the handler decorators, so a bad one fails at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from worker import topics
from worker.errors import RegistrationError, TopicError
from worker.payloads import PayloadModel, compile_model

PublicationKind = Literal["event", "command"]


@dataclass(frozen=True, slots=True)
class Publication:
    """One kind of message the App sends."""

    kind: PublicationKind
    #: the event or command ID
    name: str
    #: the topic, with ``+`` for each component that varies
    topic: str
    payload: PayloadModel | None
    description: str


def declare(
    kind: PublicationKind,
    name: str,
    *,
    device_type: str,
    device_id: str,
    format: str,
    payload: type | None,
    description: str,
) -> Publication:
    """A checked declaration; RegistrationError saying what is wrong."""
    build = topics.device_command if kind == "command" else topics.device_event
    try:
        topic = str(build(device_type, device_id, name, format, wildcard=True))
    except TopicError as exc:
        raise RegistrationError(f"app.publishes_{kind}({name!r}): {exc}") from exc
    if name == topics.SINGLE:
        raise RegistrationError(f"app.publishes_{kind}: name the {kind}; '+' is not one")
    try:
        model = None if payload is None else compile_model(payload)
    except TypeError as exc:
        raise RegistrationError(f"app.publishes_{kind}({name!r}): {exc}") from None
    return Publication(kind, name, topic, model, description)
