"""Client IDs, API keys and quickstart rules (W2-W6, W41)."""

from __future__ import annotations

import pytest

from worker import identity
from worker.errors import IdentityError, QuickstartError
from worker.identity import ClientClass, ClientId, IdentityMode


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a:abc123:myApp", ClientId(ClientClass.APP, "abc123", "myApp")),
        ("A:abc123:myApplication", ClientId(ClientClass.SCALABLE_APP, "abc123", "myApplication")),
        ("A:abc123:app:pod-7", ClientId(ClientClass.SCALABLE_APP, "abc123", "app", "pod-7")),
        ("d:abc123:sensor:s1", ClientId(ClientClass.DEVICE, "abc123", "sensor", "s1")),
        ("g:abc123:gw:g.1", ClientId(ClientClass.GATEWAY, "abc123", "gw", "g.1")),
        ("a:quickstart:viewer", ClientId(ClientClass.APP, "quickstart", "viewer")),
    ],
)
def test_client_ids_parse_and_rebuild(raw: str, expected: ClientId) -> None:
    """W2: the four client classes."""
    assert identity.parse_client_id(raw) == expected
    assert str(expected) == raw


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("x:abc123:app", "accepted are a:{org}:{app}"),
        ("a:abc123", "accepted are"),
        ("a:abc123:app:inst", "no instance part"),
        ("d:abc123:sensor", "accepted are"),
        ("a:ABC123:app", "org 'ABC123'"),
        ("a:abc12:app", "org 'abc12'"),
        ("a:abc123:my app", "app ID 'my app'"),
        ("a:abc123:" + "x" * 37, "app ID"),
        ("A:abc123:app:bad/inst", "instance ID"),
        ("d:abc123:t:" + "y" * 37, "device ID"),
        ("", "accepted are"),
    ],
)
def test_bad_client_ids_say_what_is_wrong(raw: str, says: str) -> None:
    """W3/W4: a bad client ID is refused with its reason."""
    with pytest.raises(IdentityError, match=".*".join(map(_escape, says.split()))):
        identity.parse_client_id(raw)


def _escape(word: str) -> str:
    import re

    return re.escape(word)


def test_org_from_api_key() -> None:
    """W5: the SDKs take the org from the key (a-{org}-{rest})."""
    assert identity.org_from_api_key("a-abc123-a84ps90Ajs") == "abc123"
    for bad in ("abc123-x", "a-abc12-x", "a-abc123-", "d-abc123-x", "a-abc123-x y"):
        with pytest.raises(IdentityError, match="expected a-"):
            identity.org_from_api_key(bad)


def test_app_client_ids_by_mode() -> None:
    """One client ID per identity mode (docs/guide/configuration.md)."""
    ids = identity.app_client_id
    assert str(ids("abc123", "app", IdentityMode.SHARED)) == "A:abc123:app"
    assert str(ids("abc123", "app", IdentityMode.STANDALONE)) == "a:abc123:app"
    assert str(ids("abc123", "app", IdentityMode.SHARED_DURABLE, "p1")) == "A:abc123:app:p1"
    with pytest.raises(IdentityError, match="instance"):
        ids("abc123", "app", IdentityMode.SHARED_DURABLE)


def test_quickstart_connection_rules() -> None:
    """Quickstart restrictions (W41): no scalable apps, no TLS, no durable sessions."""
    app = identity.parse_client_id("a:quickstart:viewer")
    identity.check_quickstart_connection(app, tls=False, clean_session=True)
    with pytest.raises(QuickstartError, match="scalable"):
        identity.check_quickstart_connection(
            identity.parse_client_id("A:quickstart:viewer"), tls=False, clean_session=True
        )
    with pytest.raises(QuickstartError, match="TLS"):
        identity.check_quickstart_connection(app, tls=True, clean_session=True)
    with pytest.raises(QuickstartError, match="durable"):
        identity.check_quickstart_connection(app, tls=False, clean_session=False)


@pytest.mark.parametrize(
    ("topic_filter", "says"),
    [
        ("iot-2/type/t/id/d/cmd/+/fmt/+", "commands"),
        ("iot-2/type/+/id/d/evt/+/fmt/+", "device type"),
        ("iot-2/type/t/id/+/mon", "device ID"),
        ("iot-2/app/+/mon", "app ID"),
    ],
)
def test_quickstart_filters(topic_filter: str, says: str) -> None:
    """Quickstart (W41): no commands, no '+' in device type, device ID or app ID."""
    with pytest.raises(QuickstartError, match=says):
        identity.check_quickstart_filter(topic_filter)


def test_quickstart_allows_concrete_devices() -> None:
    identity.check_quickstart_filter("iot-2/type/t/id/d/evt/+/fmt/+")
    identity.check_quickstart_filter("iot-2/type/t/id/d/mon")
    identity.check_quickstart_publish("iot-2/type/t/id/d/evt/e/fmt/json")
    with pytest.raises(QuickstartError, match="device events only"):
        identity.check_quickstart_publish("iot-2/type/t/id/d/cmd/c/fmt/json")
