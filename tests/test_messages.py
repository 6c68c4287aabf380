"""Messages and codecs: lazy decoding by format, status payloads as the platform sends them."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from worker import messages
from worker.errors import CodecError, TopicError
from worker.messages import (
    AppStatus,
    Command,
    DeviceMessageBuilder,
    DeviceStatus,
    Event,
    MessageProperties,
    build_command,
    build_event,
    decode,
    encode,
    register_codec,
    status_fields,
)


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Codecs registered by a test stay in that test."""
    monkeypatch.setattr(messages, "_CODECS", dict(messages._CODECS))


def test_builtin_codecs_decode() -> None:
    assert decode("json", b'{"temp": 21.5, "ok": true}') == {"temp": 21.5, "ok": True}
    assert decode("text", "grüezi".encode()) == "grüezi"
    assert decode("bin", b"\x00\xff") == b"\x00\xff"


@pytest.mark.parametrize(
    ("fmt", "payload", "message"),
    [
        ("json", b"{nope", "not valid 'json'"),
        ("json", b"", "not valid 'json'"),
        ("text", b"\xff\xfe", "not valid 'text'"),
        ("csv", b"a,b", "no codec for format 'csv'"),
    ],
)
def test_decode_failures_are_codec_errors(fmt: str, payload: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode(fmt, payload)


def test_encode_by_format_and_bytes_as_they_are() -> None:
    assert encode("json", {"a": [1, 2]}) == b'{"a":[1,2]}'
    assert encode("text", "hé") == "hé".encode()
    assert encode("json", b"already encoded") == b"already encoded"
    assert encode("bin", bytearray(b"\x01")) == b"\x01"
    with pytest.raises(CodecError, match="text"):
        encode("text", 42)
    with pytest.raises(CodecError, match="as 'json'"):
        encode("json", {1j})
    with pytest.raises(CodecError, match="no codec"):
        encode("csv", ["a"])


def test_user_codecs_are_registered_by_format() -> None:
    register_codec("csv", lambda b: b.decode().split(","), lambda d: ",".join(d).encode())
    assert decode("csv", b"a,b") == ["a", "b"]
    assert encode("csv", ["x", "y"]) == b"x,y"

    def refuse(payload: bytes) -> object:
        raise ValueError("no header")

    register_codec("csv", refuse, lambda d: b"")
    with pytest.raises(CodecError, match="no header"):
        decode("csv", b"a")
    with pytest.raises(TopicError):
        register_codec("a/b", bytes, bytes)
    with pytest.raises(TopicError):
        register_codec("+", bytes, bytes)


def test_event_data_is_decoded_once_on_first_use() -> None:
    calls: list[bytes] = []

    def counting(payload: bytes) -> dict[str, int]:
        calls.append(payload)
        return {"n": len(calls)}

    register_codec("counted", counting, bytes)
    e = Event("sensor", "d1", "reading", "counted", b"x")
    assert calls == []
    assert e.data == {"n": 1}
    assert e.data == {"n": 1}
    assert calls == [b"x"]
    assert not e.decode_failed


def test_event_decode_failure_is_kept_and_raised_again() -> None:
    e = Event("sensor", "d1", "reading", "json", b"{bad")
    assert not e.decode_failed
    with pytest.raises(CodecError) as first:
        e.data  # noqa: B018
    with pytest.raises(CodecError) as second:
        e.data  # noqa: B018
    assert first.value is second.value
    assert e.decode_failed
    assert e.payload == b"{bad"


def test_messages_are_frozen_and_compare_by_their_fields() -> None:
    a = Command("sensor", "d1", "reboot", "json", b"{}", topic="t", qos=1)
    b = Command("sensor", "d1", "reboot", "json", b"{}", topic="t", qos=1)
    assert a.data == {}
    assert a == b and hash(a) == hash(b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.command = "other"  # type: ignore[misc]


REFERENCE_CONNECT = (
    b'{"Action":"Connect","Time":"2017-01-20T14:27:13.113Z","ClientAddr":"198.51.100.7",'
    b'"ClientID":"a:myorg1:myserver","Port":8883,"Secure":true,"Protocol":"mqtt4",'
    b'"User":"a-myorg1-jkdhgkjha","ConnectTime":"2017-01-20T14:27:13.112Z"}'
)
REFERENCE_DISCONNECT = (
    b'{"Action":"Disconnect","Time":"2017-01-20T14:27:13.113Z","ClientAddr":"198.51.100.7",'
    b'"ClientID":"d:myorg1:psutil:001","Port":8883,"Secure":true,"Protocol":"mqtt4",'
    b'"ConnectTime":"2017-01-20T14:27:00.096Z","ReadBytes":136507,"ReadMsg":872,'
    b'"WriteBytes":32,"WriteMsg":0}'
)


def test_reference_status_payloads() -> None:
    fields = status_fields(REFERENCE_CONNECT)
    connect = DeviceStatus(device_type="psutil", device_id="001", **fields)
    assert connect.connected and not connect.taken_over
    assert connect.time == datetime(2017, 1, 20, 14, 27, 13, 113000, tzinfo=UTC)
    assert (connect.client_id, connect.port, connect.secure) == ("a:myorg1:myserver", 8883, True)
    assert connect.user == "a-myorg1-jkdhgkjha"
    assert connect.close_code is None and connect.read_bytes is None
    gone = AppStatus(app_id="myserver", **status_fields(REFERENCE_DISCONNECT))
    assert gone.action == "Disconnect" and not gone.connected
    assert (gone.read_bytes, gone.read_msg, gone.write_bytes, gone.write_msg) == (
        136507,
        872,
        32,
        0,
    )


def test_status_tolerates_old_missing_extra_and_mistyped_keys() -> None:
    old = (
        b'{"Action":"Disconnect","Time":"2014-07-07T06:37:56.494-04:00","Durable":false,'
        b'"Protocol":"mqtt-tcp","User":"use-token-auth","Port":"8883","CloseCode":288,'
        b'"Reason":"The clientID was reused","Certname":"dev-cert"}'
    )
    s = DeviceStatus(device_type="t", device_id="d", **status_fields(old))
    assert s.taken_over
    assert s.time is not None and s.time.utcoffset() == timedelta(hours=-4)
    assert s.time.tzinfo == timezone(timedelta(hours=-4))
    assert s.port is None  # a string where a number belongs
    assert s.cert_name == "dev-cert"
    assert s.raw["Durable"] is False
    bare = DeviceStatus(device_type="t", device_id="d", **status_fields(b'{"Time": "garbage"}'))
    assert bare.action is None and bare.time is None


def test_an_empty_status_is_the_platform_clearing_the_retained_one() -> None:
    s = DeviceStatus(device_type="t", device_id="d", **status_fields(b""))
    assert s.cleared and s.action is None and s.raw == {}


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"Connect"', b"{not json"])
def test_a_status_that_is_not_a_json_object_is_a_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError):
        status_fields(payload)


def test_the_message_key_is_the_digest_of_topic_nul_payload_whatever_the_topics_seen() -> None:
    def expected(topic: str, payload: bytes) -> str:
        return hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=16).hexdigest()

    # More topics than are kept seeded: the cache empties and refills without changing a key.
    topics = [f"iot-2/type/t/id/d{n}/evt/e/fmt/json" for n in range(messages.SEEDED_TOPICS + 10)]
    for n, topic in enumerate(topics):
        payload = b'{"n":%d}' % n
        assert messages.message_key(topic, payload) == expected(topic, payload)
    assert messages.message_key(topics[0], b"again") == expected(topics[0], b"again")


@pytest.mark.parametrize(("cls", "build"), [(Event, build_event), (Command, build_command)])
def test_the_routers_builder_makes_what_the_constructor_makes(
    cls: type[Event] | type[Command], build: DeviceMessageBuilder
) -> None:
    props = MessageProperties(content_type="application/json", user_properties=(("k", "v"),))
    args = ("sensor", "d1", "reading", "json", b'{"t": 1}', "iot-2/x", 1, True, 2.5, props)
    built, made = build(*args), cls(*args)
    assert type(built) is cls
    assert built == made and repr(built) == repr(made)
    assert [getattr(built, f.name) for f in dataclasses.fields(cls)][:10] == list(args)
    assert built.data == {"t": 1} and built.key == made.key
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.qos = 0  # type: ignore[misc]
    # A new field would be left unset by the builder: it must be added there too.
    assert len(dataclasses.fields(cls)) == 11
