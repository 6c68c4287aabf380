"""Settings: defaults < environment < flags, and clear errors (docs/guide/configuration.md)."""

from __future__ import annotations

import pytest

from tests.support.credentials import STRONG_TOKEN
from worker.config import Settings, load_settings
from worker.errors import ConfigError
from worker.identity import IdentityMode
from worker.options import OPTIONS, Profile

KEY = {"WIOTP_AUTH_KEY": "a-abc123-k1x", "WIOTP_AUTH_TOKEN": STRONG_TOKEN}


def problems(env: dict[str, str], **flags: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(env, flags)
    return list(info.value.problems)


def test_ibm_defaults_from_the_api_key() -> None:
    """The org comes from the key; IBM's host on 8883 with TLS; shared A:org:app."""
    s = load_settings({**KEY, "WIOTP_IDENTITY_APPID": "myApplication"})
    assert s.org == "abc123"
    assert s.client_id == "A:abc123:myApplication"
    assert (s.host, s.port, s.tls) == ("abc123.messaging.internetofthings.ibmcloud.com", 8883, True)
    assert s.credentials() == ("a-abc123-k1x", STRONG_TOKEN)


def test_fallback_key_names() -> None:
    s = load_settings({"WIOTP_API_KEY": "a-xyz789-k", "WIOTP_API_TOKEN": "t"})
    assert s.org == "xyz789"


def test_flags_override_environment() -> None:
    s = load_settings({**KEY, "WORKER_QOS": "0", "WORKER_HOST": "broker"}, {"qos": "1"})
    assert s.qos == 1
    assert (s.host, s.port, s.tls) == ("broker", 1883, False)


def test_ports_follow_transport_and_tls() -> None:
    """IBM's ports (W1): 1883 plain, 8883 TLS, 443 for WebSockets."""
    ws = load_settings({**KEY, "WIOTP_OPTIONS_MQTT_TRANSPORT": "websockets"})
    assert (ws.port, ws.tls) == (443, True)
    assert load_settings({**KEY, "WORKER_TLS": "false"}).port == 1883
    assert load_settings({**KEY}, {"port": "9999"}).port == 9999
    assert load_settings({**KEY, "WIOTP_OPTIONS_DOMAIN": "example.com"}).host == (
        "abc123.messaging.example.com"
    )


def test_instance_id_selects_shared_durable() -> None:
    """As in IBM's SDK, WIOTP_OPTIONS_MQTT_INSTANCEID selects A:org:app:instance."""
    s = load_settings({**KEY, "WIOTP_OPTIONS_MQTT_INSTANCEID": "pod-1"})
    assert s.identity is IdentityMode.SHARED_DURABLE
    assert s.client_id == "A:abc123:worker:pod-1"
    [problem] = problems({**KEY, "WIOTP_OPTIONS_MQTT_INSTANCEID": "p", "WORKER_IDENTITY": "shared"})
    assert "WIOTP_OPTIONS_MQTT_INSTANCEID" in problem and "WORKER_IDENTITY" in problem


def test_standalone_and_mqtt_profile() -> None:
    assert load_settings({**KEY, "WORKER_IDENTITY": "standalone"}).client_id == "a:abc123:worker"
    s = load_settings(
        {
            "WORKER_PROFILE": "mqtt",
            "WORKER_ORG": "abc123",
            "WIOTP_IDENTITY_APPID": "app",
            "WORKER_INSTANCE": "pod-2",
            "WORKER_USERNAME": "u",
            "WORKER_PASSWORD": "p",
        }
    )
    assert s.profile is Profile.MQTT
    assert s.client_id == "app-pod-2"
    assert (s.host, s.port, s.tls) == ("localhost", 1883, False)
    assert s.subscription("iot-2/type/+/id/+/evt/+/fmt/+") == (
        "$share/abc123:app/iot-2/type/+/id/+/evt/+/fmt/+"
    )
    assert s.credentials() == ("u", "p")


def test_no_key_means_quickstart_which_has_no_scalable_apps() -> None:
    [problem] = problems({})
    assert "quickstart does not support scalable applications" in problem
    assert "WIOTP_AUTH_KEY" in problem
    s = load_settings({"WORKER_IDENTITY": "standalone"})
    assert (s.client_id, s.host, s.tls) == (
        "a:quickstart:worker",
        "quickstart.messaging.internetofthings.ibmcloud.com",
        False,
    )
    [problem] = problems({"WORKER_IDENTITY": "standalone", "WORKER_TLS": "1"})
    assert "TLS" in problem


def test_every_problem_is_reported_with_name_value_and_accepted() -> None:
    found = problems(
        {**KEY, "WIOTP_IDENTITY_APPID": "my app", "WORKER_QOS": "2", "WORKER_LOOP": "trio"},
        port="0",
    )
    assert "WIOTP_IDENTITY_APPID='my app': allowed are 1-36 of letters, digits, '-', '_', '.'" in (
        found
    )
    assert "--port='0': accepted is a whole number from 1 to 65535" in found
    assert any(p.startswith("WORKER_QOS='2'") for p in found)
    assert "WORKER_LOOP='trio': accepted are auto, asyncio, uvloop" in found


def test_key_and_org_must_agree_and_key_needs_token() -> None:
    [problem] = problems({**KEY, "WORKER_ORG": "zzz999"})
    assert "disagrees" in problem
    [problem] = problems({"WIOTP_AUTH_KEY": "a-abc123-k"})
    assert "token" in problem
    [problem] = problems({"WIOTP_AUTH_KEY": "abc", "WIOTP_AUTH_TOKEN": "t"})
    assert problem.startswith("WIOTP_AUTH_KEY: API key not valid (3 characters, does not start")
    assert "expected a-{org}-{rest}" in problem


def test_a_token_in_the_key_variable_is_never_shown() -> None:
    for pasted in ("Xk2(pQ9!zR7_wT4&", "Xk2 pQ9 zR7"):  # a key error, a form error
        [problem] = problems({"WIOTP_AUTH_KEY": pasted, "WIOTP_AUTH_TOKEN": "t"})
        assert pasted not in problem and "Xk2" not in problem, problem
        assert problem.startswith("WIOTP_AUTH_KEY")


def test_secrets_never_show() -> None:
    token = KEY["WIOTP_AUTH_TOKEN"]
    s = load_settings({**KEY, "WORKER_PASSWORD": "hunter2"})
    assert token not in repr(s) and "hunter2" not in repr(s)
    assert token not in str(s.describe())
    found = problems({**KEY, "WORKER_PASSWORD": ""}, password="")
    assert all(token not in p for p in found)


def test_empty_variables_count_as_unset() -> None:
    assert load_settings({**KEY, "WORKER_QOS": ""}).qos == 1


def test_every_option_has_a_settings_field() -> None:
    fields = set(Settings.__dataclass_fields__)
    derived = {"instance_id", "domain"}  # folded into instance / host
    assert {o.field for o in OPTIONS} - derived <= fields
    assert len({o.flag for o in OPTIONS}) == len(OPTIONS)
