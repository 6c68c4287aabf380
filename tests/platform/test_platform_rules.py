"""Who may publish and subscribe to what, and how topics are rewritten (no sockets).

Rule IDs are those of docs/platform/rules.md: W8-W13 topics, W4-W6 and W25 connect, W17 size,
W41 quickstart.
"""

from __future__ import annotations

import pytest

from worker.identity import parse_client_id
from worker.platform.auth import Credentials
from worker.platform.rules import (
    Denied,
    Principal,
    authorize_connect,
    check_size,
    parse_identity,
    principal_for,
    publish_target,
    subscribe_target,
)
from worker.platform.status import CloseCode

APP = principal_for(parse_client_id("a:abc123:app1"))
SCALABLE = principal_for(parse_client_id("A:abc123:app1"))
DEVICE = principal_for(parse_client_id("d:abc123:sensor:s1"))
GATEWAY = principal_for(parse_client_id("g:abc123:gw:g1"))
QS_APP = principal_for(parse_client_id("a:quickstart:viewer"))
QS_DEVICE = principal_for(parse_client_id("d:quickstart:sensor:s1"))
CREDS = Credentials(
    api_keys={"a-abc123-k1": b"tok"},
    device_tokens={"d:abc123:sensor:s1": b"devtok"},
    quickstart=True,
)


def denied(code: CloseCode, func: object, *args: object) -> Denied:
    assert callable(func)
    with pytest.raises(Denied) as info:
        func(*args)
    assert info.value.close_code == code, info.value
    return info.value


def out(p: Principal, internal_filter_and_rewrite: tuple[str, object], topic: str) -> str:
    rewrite = internal_filter_and_rewrite[1]
    return rewrite.outbound(topic)  # type: ignore[attr-defined,no-any-return]


# --- W11: rewriting device <-> application, orgs isolated ----------------------------------------


def test_w11_device_event_gets_type_and_id_of_its_client_id() -> None:
    internal = publish_target(DEVICE, "iot-2/evt/reading/fmt/json")
    assert internal == "abc123/type/sensor/id/s1/evt/reading/fmt/json"
    route = subscribe_target(APP, "iot-2/type/+/id/+/evt/+/fmt/+")
    assert route[0] == "abc123/type/+/id/+/evt/+/fmt/+"
    assert out(APP, route, internal) == "iot-2/type/sensor/id/s1/evt/reading/fmt/json"


def test_w11_app_command_reaches_the_device_as_its_own_topic() -> None:
    internal = publish_target(APP, "iot-2/type/sensor/id/s1/cmd/reboot/fmt/json")
    route = subscribe_target(DEVICE, "iot-2/cmd/+/fmt/+")
    assert route[0] == "abc123/type/sensor/id/s1/cmd/+/fmt/+"
    assert internal == "abc123/type/sensor/id/s1/cmd/reboot/fmt/json"
    assert out(DEVICE, route, internal) == "iot-2/cmd/reboot/fmt/json"


def test_w11_orgs_are_isolated_by_the_internal_prefix() -> None:
    other = principal_for(parse_client_id("a:xyz789:app1"))
    assert subscribe_target(other, "iot-2/type/+/id/+/evt/+/fmt/+")[0].startswith("xyz789/")
    assert publish_target(DEVICE, "iot-2/evt/e/fmt/f").startswith("abc123/")


# --- W8, W9: application topics ------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic_filter",
    [
        "iot-2/type/+/id/+/evt/+/fmt/+",
        "iot-2/type/t/id/d/cmd/+/fmt/json",
        "iot-2/type/+/id/+/mon",
        "iot-2/app/+/mon",
    ],
)
def test_w8_application_may_subscribe(topic_filter: str) -> None:
    assert subscribe_target(APP, topic_filter)[0] == "abc123" + topic_filter[5:]
    assert subscribe_target(SCALABLE, topic_filter)[0] == "abc123" + topic_filter[5:]


def test_w9_hash_is_refused_for_applications_as_a_bad_topic() -> None:
    exc = denied(CloseCode.TOPIC_NOT_VALID, subscribe_target, APP, "iot-2/type/+/id/+/evt/#")
    assert "#" in str(exc)
    denied(CloseCode.TOPIC_NOT_VALID, subscribe_target, APP, "#")


def test_w8_application_may_publish_events_and_commands_but_not_status() -> None:
    assert publish_target(APP, "iot-2/type/t/id/d/evt/e/fmt/json")
    assert publish_target(APP, "iot-2/type/t/id/d/cmd/c/fmt/json")
    denied(CloseCode.NOT_AUTHORIZED, publish_target, APP, "iot-2/type/t/id/d/mon")
    denied(CloseCode.NOT_AUTHORIZED, publish_target, APP, "iot-2/app/x/mon")
    denied(CloseCode.TOPIC_NOT_VALID, publish_target, APP, "some/other/topic")


# --- W10, W12: devices and gateways --------------------------------------------------------------


def test_w10_device_publishes_own_events_and_subscribes_own_commands_only() -> None:
    denied(CloseCode.NOT_AUTHORIZED, publish_target, DEVICE, "iot-2/cmd/c/fmt/json")
    denied(CloseCode.NOT_AUTHORIZED, subscribe_target, DEVICE, "iot-2/evt/+/fmt/+")
    denied(CloseCode.NOT_AUTHORIZED, subscribe_target, DEVICE, "iot-2/type/+/id/+/evt/+/fmt/+")
    denied(CloseCode.NOT_AUTHORIZED, publish_target, DEVICE, "iot-2/type/t/id/d/evt/e/fmt/f")
    denied(CloseCode.TOPIC_NOT_VALID, publish_target, DEVICE, "iot-2/evt/e")


def test_w10_device_management_topics() -> None:
    internal, rewrite = subscribe_target(DEVICE, "iotdm-1/#")
    assert internal == "abc123/type/sensor/id/s1/iotdm-1/#"
    assert rewrite.outbound("abc123/type/sensor/id/s1/iotdm-1/response") == "iotdm-1/response"
    assert publish_target(DEVICE, "iotdevice-1/mgmt/manage").endswith("/iotdevice-1/mgmt/manage")


def test_w12_gateway_publishes_for_any_device_and_gets_commands_and_notify() -> None:
    assert publish_target(GATEWAY, "iot-2/type/t/id/d/evt/e/fmt/json") == (
        "abc123/type/t/id/d/evt/e/fmt/json"
    )
    assert subscribe_target(GATEWAY, "iot-2/type/+/id/+/cmd/+/fmt/+")[0] == (
        "abc123/type/+/id/+/cmd/+/fmt/+"
    )
    assert subscribe_target(GATEWAY, "iot-2/type/gw/id/g1/notify")[0] == (
        "abc123/type/gw/id/g1/notify"
    )
    denied(CloseCode.NOT_AUTHORIZED, subscribe_target, GATEWAY, "iot-2/type/x/id/y/notify")
    denied(CloseCode.NOT_AUTHORIZED, subscribe_target, GATEWAY, "iot-2/type/+/id/+/evt/+/fmt/+")
    denied(CloseCode.NOT_AUTHORIZED, publish_target, GATEWAY, "iot-2/type/t/id/d/cmd/c/fmt/j")


@pytest.mark.parametrize(
    ("app_topic", "device_topic"),
    [
        ("iot-2/type/+/id/d/evt/e/fmt/f", "iot-2/evt/+/fmt/json"),
        ("iot-2/type/t/id/d/evt/#", "iot-2/evt/e/fmt/#"),
        ("iot-2/type//id/d/evt/e/fmt/f", "iot-2/evt//fmt/json"),
    ],
)
def test_w13_publish_topics_must_be_concrete(app_topic: str, device_topic: str) -> None:
    with pytest.raises(Denied):
        publish_target(APP, app_topic)
    with pytest.raises(Denied):
        publish_target(DEVICE, device_topic)


# --- W17: the size rule --------------------------------------------------------------------------


def test_w17_payload_limit_counts_topic_bytes_above_200() -> None:
    check_size("t" * 200, 131072)
    denied(CloseCode.MESSAGE_TOO_LARGE, check_size, "t" * 200, 131073)
    check_size("t" * 210, 131062)
    denied(CloseCode.MESSAGE_TOO_LARGE, check_size, "t" * 210, 131063)


# --- W2-W6, W25: connecting ----------------------------------------------------------------------


@pytest.mark.parametrize("client_id", ["", "x:abc123:a", "a:abc123", "d:abc123:t", "a:ABC123:a"])
def test_w4_client_id_outside_every_class_is_166(client_id: str) -> None:
    denied(CloseCode.CLIENT_ID_NOT_VALID, parse_identity, client_id)


def connect(client_id: str, user: str | None, password: str | None, clean: bool = True) -> None:
    secret = password.encode() if password is not None else None
    authorize_connect(
        parse_client_id(client_id), user, secret, clean=clean, secure=False, authenticator=CREDS
    )


def test_w5_w6_credentials() -> None:
    connect("a:abc123:app", "a-abc123-k1", "tok")
    connect("d:abc123:sensor:s1", "use-token-auth", "devtok")
    denied(CloseCode.NOT_AUTHORIZED, connect, "a:abc123:app", "a-abc123-k1", "bad")
    denied(CloseCode.NOT_AUTHORIZED, connect, "a:xyz789:app", "a-abc123-k1", "tok")
    denied(CloseCode.NOT_AUTHORIZED, connect, "d:abc123:sensor:s1", "a-abc123-k1", "devtok")
    denied(CloseCode.NOT_AUTHORIZED, connect, "d:abc123:sensor:s2", "use-token-auth", "devtok")


def test_w25_scalable_app_without_instance_needs_clean_session() -> None:
    exc = denied(CloseCode.NOT_AUTHORIZED, connect, "A:abc123:app", "a-abc123-k1", "tok", False)
    assert "clean session" in str(exc)
    connect("A:abc123:app:i1", "a-abc123-k1", "tok", False)


# --- W41: quickstart -----------------------------------------------------------------------------


def test_w41_quickstart_restrictions() -> None:
    connect("d:quickstart:sensor:s1", None, None)
    denied(CloseCode.NOT_AUTHORIZED, connect, "A:quickstart:app", None, None)
    denied(CloseCode.NOT_AUTHORIZED, connect, "d:quickstart:sensor:s1", None, None, False)
    assert publish_target(QS_DEVICE, "iot-2/evt/e/fmt/json")
    denied(CloseCode.NOT_AUTHORIZED, publish_target, QS_DEVICE, "iot-2/evt/e/fmt/text")
    denied(CloseCode.NOT_AUTHORIZED, subscribe_target, QS_DEVICE, "iot-2/cmd/+/fmt/+")
    assert subscribe_target(QS_APP, "iot-2/type/sensor/id/s1/evt/+/fmt/+")
    denied(CloseCode.NOT_AUTHORIZED, subscribe_target, QS_APP, "iot-2/type/sensor/id/+/mon")
    denied(CloseCode.NOT_AUTHORIZED, subscribe_target, QS_APP, "iot-2/type/t/id/d/cmd/+/fmt/+")
    denied(CloseCode.NOT_AUTHORIZED, publish_target, QS_APP, "iot-2/type/t/id/d/cmd/c/fmt/json")
