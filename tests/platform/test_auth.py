"""The platform's credentials table (W5, W6, W41)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.credentials import STRONG_TOKEN
from worker.errors import ConfigError
from worker.identity import ClientId, parse_client_id
from worker.platform import auth

KEY = "a-abc123-a84ps90Ajs"
TOKEN = STRONG_TOKEN
APP = parse_client_id("a:abc123:myserver")
SCALABLE = parse_client_id("A:abc123:myserver")
DEVICE = parse_client_id("d:abc123:sensor:s-001")
GATEWAY = parse_client_id("g:abc123:gw:gw-1")


def write_keys(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def table(tmp_path: Path) -> auth.Credentials:
    keys = write_keys(
        tmp_path,
        {
            "api_keys": {"a-xyz789-other": "tok-other"},
            "device_tokens": {str(DEVICE): "tok-s-001", str(GATEWAY): "tok-gw-1"},
        },
    )
    return auth.load_credentials(api_keys=[f"{KEY}:{TOKEN}"], keys_file=keys)


# --- applications (W5) -------------------------------------------------------------------


def test_w5_an_app_logs_in_with_its_api_key_and_token(table: auth.Credentials) -> None:
    assert table.authenticate(APP, KEY, TOKEN.encode())
    assert table.authenticate(SCALABLE, KEY, TOKEN.encode())


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        (KEY, b"MP$08VKz!8rXwnR-Q", "wrong token for this API key"),
        (KEY, None, "must send its API token as the password"),
        ("a-abc123-unknown", TOKEN.encode(), "unknown API key"),
        (None, TOKEN.encode(), "must send its API key as the username"),
        ("use-token-auth", TOKEN.encode(), "is not an API key"),
        (
            "a-xyz789-other",
            b"tok-other",
            "API key of org 'xyz789' used by a client of org 'abc123'",
        ),
    ],
)
def test_w5_bad_app_credentials_are_refused(
    table: auth.Credentials, username: str | None, password: bytes | None, reason: str
) -> None:
    assert not table.authenticate(APP, username, password)
    assert reason in (table.check(APP, username, password) or "")


def test_w5_the_org_comes_from_the_key(table: auth.Credentials) -> None:
    assert table.orgs == {"abc123", "xyz789"}
    other_app = parse_client_id("a:xyz789:tool")
    assert table.authenticate(other_app, "a-xyz789-other", b"tok-other")


# --- devices and gateways (W6) -----------------------------------------------------------


def test_w6_devices_and_gateways_use_token_auth(table: auth.Credentials) -> None:
    assert table.authenticate(DEVICE, "use-token-auth", b"tok-s-001")
    assert table.authenticate(GATEWAY, "use-token-auth", b"tok-gw-1")


@pytest.mark.parametrize(
    ("client", "username", "password", "reason"),
    [
        (DEVICE, "use-token-auth", b"tok-gw-1", "wrong token for this device"),
        (DEVICE, "sensor", b"tok-s-001", "must send the username 'use-token-auth'"),
        (DEVICE, "use-token-auth", None, "must send its token"),
        (GATEWAY, "use-token-auth", b"nope", "wrong token for this gateway"),
        (parse_client_id("d:abc123:sensor:s-002"), "use-token-auth", b"x", "unregistered device"),
    ],
)
def test_w6_bad_device_credentials_are_refused(
    table: auth.Credentials, client: ClientId, username: str, password: bytes | None, reason: str
) -> None:
    assert not table.authenticate(client, username, password)
    assert reason in (table.check(client, username, password) or "")


# --- development modes -------------------------------------------------------------------


def test_accept_any_key_accepts_any_token_but_keeps_the_shape() -> None:
    table = auth.load_credentials(accept_any_key=True)
    assert table.authenticate(APP, "a-abc123-whatever", b"anything")
    assert table.authenticate(DEVICE, "use-token-auth", b"anything")
    # What the real platform would refuse whatever the token is, is refused here too.
    assert not table.authenticate(APP, "a-zzz999-whatever", b"anything")
    assert not table.authenticate(APP, "not-a-key", b"anything")
    assert not table.authenticate(DEVICE, "sensor", b"anything")
    assert not table.authenticate(APP, "a-abc123-whatever", None)


def test_w41_quickstart_needs_no_credentials_when_enabled() -> None:
    client = parse_client_id("d:quickstart:sensor:s-001")
    app = parse_client_id("a:quickstart:viewer")
    assert auth.load_credentials(quickstart=True).authenticate(client, None, None)
    assert auth.load_credentials(quickstart=True).authenticate(app, None, None)
    off = auth.load_credentials(accept_any_key=True)
    assert off.check(client, None, None) == "quickstart is not enabled (--quickstart)"
    assert "quickstart" in auth.load_credentials(quickstart=True).orgs


# --- secrets stay secret -------------------------------------------------------------------


def test_tokens_never_appear_in_repr_or_the_banner(table: auth.Credentials) -> None:
    shown = repr(table) + "\n".join(table.describe())
    for secret in (TOKEN, "tok-other", "tok-s-001", "tok-gw-1"):
        assert secret not in shown
    assert KEY in shown
    assert f"api key {KEY}  token MP******" in table.describe()
    assert auth.mask("short") == "********"


def test_refusal_reasons_never_contain_the_password(table: auth.Credentials) -> None:
    reason = table.check(APP, KEY, b"a-guess-of-the-token") or ""
    assert "guess" not in reason


# --- bad entries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a-abc123-key", "--api-key 'a-abc123-key': expected KEY:TOKEN, with KEY a-{org}-{rest}"),
        ("a-abc123-key:", "--api-key 'a-abc123-key': the token must be a non-empty string"),
        ("a-abc123-key:has space", "the token must be a non-empty string without whitespace"),
        ("b-abc123-key:tok", "--api-key 'b-abc123-key': API key not valid (12 characters"),
        ("a-ABC123-key:tok", "--api-key 'a-ABC123-key': API key"),
    ],
)
def test_a_bad_api_key_flag_names_the_flag_and_the_rule(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        auth.load_credentials(api_keys=[value])
    assert message in str(raised.value)


def test_a_bad_flag_never_echoes_the_token() -> None:
    with pytest.raises(ConfigError) as raised:
        auth.load_credentials(api_keys=["a-bad-key:s3cr3t-token"])
    assert "s3cr3t" not in str(raised.value)


def test_the_same_key_twice_with_different_tokens_is_an_error(tmp_path: Path) -> None:
    keys = write_keys(tmp_path, {"api_keys": {KEY: "other-token"}})
    with pytest.raises(ConfigError, match="given twice with different tokens"):
        auth.load_credentials(api_keys=[f"{KEY}:{TOKEN}"], keys_file=keys)
    same = auth.load_credentials(api_keys=[f"{KEY}:{TOKEN}", f"{KEY}:{TOKEN}"])
    assert list(same.api_keys) == [KEY]


def test_every_problem_of_a_keys_file_is_listed(tmp_path: Path) -> None:
    keys = write_keys(
        tmp_path,
        {
            "apikeys": {},
            "api_keys": {"a-abc123-ok": "fine", "nope": "tok", "a-abc123-x": 5},
            "device_tokens": {"a:abc123:app": "tok", "d:abc123:t": "tok", str(DEVICE): ""},
        },
    )
    with pytest.raises(ConfigError) as raised:
        auth.load_credentials(keys_file=keys)
    problems = raised.value.problems
    where = f"--keys {keys}"
    assert f"{where}: unknown member 'apikeys'; accepted are 'api_keys' and 'device_tokens'" in (
        problems
    )
    assert any(p.startswith(f"{where}: api_keys['nope']: API key not valid") for p in problems)
    assert f"{where}: api_keys['a-abc123-x']: the token must be {auth.TOKEN_RULE}" in problems
    assert any("device_tokens['a:abc123:app']: expected a device or gateway" in p for p in problems)
    assert any("device_tokens['d:abc123:t']: client ID 'd:abc123:t'" in p for p in problems)
    assert any(f"device_tokens['{DEVICE}']: the token must be" in p for p in problems)
    assert len(problems) == 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "expected a JSON object with 'api_keys' and 'device_tokens'"),
        ('{"api_keys": []}', "api_keys: expected a JSON object mapping names to token strings"),
        ("{nope", "not valid JSON: Expecting property name enclosed in double quotes (line 1"),
        ('{"api_keys": {"a-abc123-k": "t1", "a-abc123-k": "t2"}}', "'a-abc123-k' appears twice"),
    ],
)
def test_a_malformed_keys_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"--keys {path}: .*") as raised:
        auth.load_credentials(keys_file=path)
    assert message in str(raised.value)


def test_a_missing_keys_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--keys .*missing\.json: cannot read the file"):
        auth.load_credentials(keys_file=tmp_path / "missing.json")
